//! Sessions: clean/persistent, session present, offline queues, redelivery with DUP,
//! queue bounds, 5.0 session expiry and session takeover.

use std::time::Duration;

use crate::support::client::Opts;
use crate::support::codec::{self, Connect, Packet, Publish, Version};
use crate::support::raw::Raw;
use crate::support::{Broker, QUIET, RECV_TIMEOUT};

both!(
    session_present_flag,
    clean_session_discards_subscriptions,
    persistent_session_receives_offline_messages,
    inflight_resent_with_dup_in_order,
    qos2_pubrel_resent_after_reconnect,
    qos2_inbound_exactly_once_across_reconnect,
    offline_queue_is_bounded,
    takeover_closes_old_connection,
);

fn session_present(connack: &Packet) -> bool {
    match connack {
        Packet::Connack {
            session_present, ..
        } => *session_present,
        other => panic!("not a CONNACK: {other:?}"),
    }
}

/// Session present is 0 for a new session, 1 when resuming one, and 0 again after a
/// clean connect discarded it.
async fn session_present_flag(v: Version) {
    let broker = Broker::start().await;
    let c = Opts::new(v, "sp").persistent().connect(broker.addr).await;
    assert!(!c.session_present, "first connect");
    c.disconnect().await;
    let c = Opts::new(v, "sp").persistent().connect(broker.addr).await;
    assert!(c.session_present, "resumed persistent session");
    c.disconnect().await;
    let c = Opts::new(v, "sp").connect(broker.addr).await;
    assert!(!c.session_present, "clean connect");
    c.disconnect().await;
    let c = Opts::new(v, "sp").persistent().connect(broker.addr).await;
    assert!(
        !c.session_present,
        "the clean connect discarded the session"
    );
}

/// A clean connect starts without the old session's subscriptions.
async fn clean_session_discards_subscriptions(v: Version) {
    let broker = Broker::start().await;
    let mut c = Opts::new(v, "cs").persistent().connect(broker.addr).await;
    c.subscribe("cs/old", 1).await;
    c.disconnect().await;
    let mut c = Opts::new(v, "cs").connect(broker.addr).await;
    assert!(!c.session_present);
    c.subscribe("cs/barrier", 1).await;
    let mut publisher = Opts::new(v, "pub").connect(broker.addr).await;
    publisher.publish("cs/old", 1, false, b"old").await;
    publisher.publish("cs/barrier", 1, false, b"end").await;
    let before = c.recv_until(b"end").await;
    assert!(
        before.is_empty(),
        "old subscription survived a clean connect: {before:?}"
    );
}

/// A persistent session keeps its subscriptions while offline and receives the QoS 1
/// and 2 messages published meanwhile, in order, at their QoS.
async fn persistent_session_receives_offline_messages(v: Version) {
    let broker = Broker::start().await;
    let mut c = Opts::new(v, "ps").persistent().connect(broker.addr).await;
    c.subscribe("ps/#", 2).await;
    c.disconnect().await;

    let mut publisher = Opts::new(v, "pub").connect(broker.addr).await;
    publisher.publish("ps/a", 1, false, b"one").await;
    publisher.publish("ps/b", 2, false, b"two").await;
    publisher.publish("ps/c", 1, false, b"three").await;

    let mut c = Opts::new(v, "ps").persistent().connect(broker.addr).await;
    assert!(c.session_present);
    let got: Vec<(Vec<u8>, u8)> = [c.recv().await, c.recv().await, c.recv().await]
        .into_iter()
        .map(|m| (m.payload, m.qos))
        .collect();
    assert_eq!(
        got,
        [
            (b"one".to_vec(), 1),
            (b"two".to_vec(), 2),
            (b"three".to_vec(), 1)
        ]
    );

    publisher.publish("ps/live", 1, false, b"live").await;
    assert_eq!(c.recv().await.payload, b"live", "subscription still active");
}

/// Unacknowledged QoS 1 messages are sent again, with DUP set and in their original
/// order, when the session resumes [MQTT-4.4.0-1].
async fn inflight_resent_with_dup_in_order(v: Version) {
    let broker = Broker::start().await;
    let (mut sub, _) = Raw::connect(broker.addr, &Connect::persistent(v, "redeliver")).await;
    sub.subscribe("rd/t", 1).await;
    let mut publisher = Raw::client(broker.addr, v, "pub").await;
    for p in [b"a", b"b", b"c"] {
        publisher.pub_msg("rd/t", 1, p).await;
    }
    let first: Vec<_> = [
        sub.recv_publish().await,
        sub.recv_publish().await,
        sub.recv_publish().await,
    ]
    .to_vec();
    assert!(first.iter().all(|p| !p.dup), "first delivery has DUP 0");
    drop(sub);

    let (mut sub, connack) = Raw::connect(broker.addr, &Connect::persistent(v, "redeliver")).await;
    assert!(session_present(&connack));
    let again = [
        sub.recv_acked().await,
        sub.recv_acked().await,
        sub.recv_acked().await,
    ];
    let payloads: Vec<&[u8]> = again.iter().map(|p| p.payload.as_slice()).collect();
    assert_eq!(payloads, [b"a", b"b", b"c"], "order of redelivery");
    assert!(
        again.iter().all(|p| p.dup && p.qos == 1),
        "redelivered with DUP 1: {again:?}"
    );
    sub.expect_no_publish(QUIET).await;
}

/// An outbound QoS 2 message whose PUBREC was received but PUBCOMP not is completed
/// on reconnect with PUBREL (same packet id), not by sending the PUBLISH again.
async fn qos2_pubrel_resent_after_reconnect(v: Version) {
    let broker = Broker::start().await;
    let (mut sub, _) = Raw::connect(broker.addr, &Connect::persistent(v, "q2sub")).await;
    sub.subscribe("q2/t", 2).await;
    let mut publisher = Raw::client(broker.addr, v, "pub").await;
    publisher.pub_msg("q2/t", 2, b"once").await;
    let p = sub.recv_publish().await;
    assert_eq!(p.qos, 2);
    sub.send(&codec::pubrec(v, p.pkid)).await;
    let rel = sub
        .recv_where("PUBREL", |pk| match pk {
            Packet::Pubrel(a) => Some(a.pkid),
            _ => None,
        })
        .await;
    assert_eq!(rel, p.pkid);
    drop(sub);

    let (mut sub, connack) = Raw::connect(broker.addr, &Connect::persistent(v, "q2sub")).await;
    assert!(session_present(&connack));
    match sub.recv().await {
        Packet::Pubrel(a) => assert_eq!(a.pkid, p.pkid, "PUBREL packet id"),
        other => panic!("expected the PUBREL again, got {other:?}"),
    }
    sub.send(&codec::pubcomp(v, p.pkid)).await;
    publisher.pub_msg("q2/t", 2, b"end").await;
    let next = sub.recv_acked().await;
    assert_eq!(next.payload, b"end", "the completed message was sent again");
}

/// Inbound QoS 2 across a reconnect: the publisher loses its connection after PUBREC,
/// resends the PUBLISH with DUP on the resumed session, then PUBREL; subscribers get
/// the message exactly once.
async fn qos2_inbound_exactly_once_across_reconnect(v: Version) {
    let broker = Broker::start().await;
    let mut sub = Raw::client(broker.addr, v, "sub").await;
    sub.subscribe("q2in/t", 2).await;
    let (mut publisher, _) = Raw::connect(broker.addr, &Connect::persistent(v, "q2pub")).await;
    let mut publish = Publish::new("q2in/t", 2, b"once");
    publish.pkid = 9;
    publisher.send(&publish.encode(v)).await;
    assert!(matches!(publisher.recv().await, Packet::Pubrec(a) if a.pkid == 9));
    drop(publisher);

    let (mut publisher, connack) =
        Raw::connect(broker.addr, &Connect::persistent(v, "q2pub")).await;
    assert!(session_present(&connack));
    publish.dup = true;
    publisher.send(&publish.encode(v)).await;
    assert!(matches!(publisher.recv().await, Packet::Pubrec(a) if a.pkid == 9));
    publisher.send(&codec::pubrel(v, 9)).await;
    assert!(matches!(publisher.recv().await, Packet::Pubcomp(a) if a.pkid == 9));
    publisher.pub_msg("q2in/t", 2, b"end").await;

    assert_eq!(sub.recv_acked().await.payload, b"once");
    assert_eq!(sub.recv_acked().await.payload, b"end", "delivered twice");
}

/// With `--max-queued-messages 10 --max-inflight 5`, an offline session keeps at most
/// 15 of 30 messages, and drops the newest (policy `drop`).
async fn offline_queue_is_bounded(v: Version) {
    let broker = Broker::opts()
        .set("max-queued-messages", 10)
        .set("max-inflight", 5)
        .start()
        .await;
    let mut c = Opts::new(v, "bounded")
        .persistent()
        .connect(broker.addr)
        .await;
    c.subscribe("q/t", 1).await;
    c.subscribe("q/barrier", 1).await;
    c.disconnect().await;
    let mut publisher = Opts::new(v, "pub").connect(broker.addr).await;
    for i in 0..30u8 {
        publisher.publish("q/t", 1, false, &[i]).await;
    }

    let mut c = Opts::new(v, "bounded")
        .persistent()
        .connect(broker.addr)
        .await;
    assert!(c.session_present);
    publisher.publish("q/barrier", 1, false, b"end").await;
    let got: Vec<u8> = c
        .recv_until(b"end")
        .await
        .iter()
        .map(|m| m.payload[0])
        .collect();
    assert!(
        (10..=15).contains(&got.len()),
        "offline session kept {} messages: {got:?}",
        got.len()
    );
    let expected: Vec<u8> = (0..got.len() as u8).collect();
    assert_eq!(got, expected, "the oldest messages are kept, in order");
}

/// A second CONNECT with the same client id closes the first connection (5.0: with
/// DISCONNECT 0x8E Session taken over) and takes over its session.
async fn takeover_closes_old_connection(v: Version) {
    let broker = Broker::start().await;
    // Raw, so that any legal DISCONNECT form (even `E0 01 8E`) is decoded.
    let (mut first, _) = Raw::connect(broker.addr, &Connect::persistent(v, "same")).await;
    first.subscribe("to/t", 1).await;
    let mut second = Opts::new(v, "same").persistent().connect(broker.addr).await;
    assert!(
        second.session_present,
        "the new connection resumes the session"
    );
    let reason = first.expect_closed_reason(RECV_TIMEOUT).await;
    if v == Version::V5 {
        assert_eq!(
            reason,
            Some(0x8E),
            "DISCONNECT reason to the old connection"
        );
    }
    let mut publisher = Opts::new(v, "pub").connect(broker.addr).await;
    publisher.publish("to/t", 1, false, b"moved").await;
    assert_eq!(second.recv().await.payload, b"moved");
}

/// 5.0: a session with expiry 1 s is gone 2 s after the disconnect: session present 0
/// and none of the messages published meanwhile.
#[tokio::test]
async fn session_expiry_v5() {
    let broker = Broker::start().await;
    let mut c = Opts::new(Version::V5, "expiring")
        .clean(false)
        .session_expiry(1)
        .connect(broker.addr)
        .await;
    c.subscribe("exp/t", 1).await;
    c.disconnect().await;
    let mut publisher = Opts::new(Version::V5, "pub").connect(broker.addr).await;
    publisher.publish("exp/t", 1, false, b"queued").await;
    // The scenario is the passage of time itself.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut c = Opts::new(Version::V5, "expiring")
        .clean(false)
        .session_expiry(60)
        .connect(broker.addr)
        .await;
    assert!(!c.session_present, "session should have expired");
    c.subscribe("exp/barrier", 1).await;
    publisher.publish("exp/barrier", 1, false, b"end").await;
    let before = c.recv_until(b"end").await;
    assert!(before.is_empty(), "expired session delivered {before:?}");
}

/// 5.0: session expiry 0 (the default) ends the session with the connection even when
/// clean start is 0.
#[tokio::test]
async fn session_expiry_zero_v5_ends_with_connection() {
    let broker = Broker::start().await;
    let c = Opts::new(Version::V5, "zero")
        .clean(false)
        .connect(broker.addr)
        .await;
    c.disconnect().await;
    let c = Opts::new(Version::V5, "zero")
        .clean(false)
        .connect(broker.addr)
        .await;
    assert!(!c.session_present);
}
