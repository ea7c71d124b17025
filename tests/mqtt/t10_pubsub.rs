//! PUBLISH / SUBSCRIBE / UNSUBSCRIBE basics, wildcards, shared subscriptions and the
//! outbound in-flight window.

use std::time::Duration;

use crate::support::client::Opts;
use crate::support::codec::{self, prop, Packet, Props, Publish, Version};
use crate::support::raw::Raw;
use crate::support::{Broker, QUIET, RECV_TIMEOUT};

both!(
    qos_roundtrip,
    qos_downgraded_to_subscription,
    granted_qos_is_requested,
    wildcards_plus_and_hash,
    dollar_topics_not_matched_by_wildcards,
    invalid_filters_refused_per_filter,
    unsubscribe_stops_delivery,
    shared_subscription_spreads_messages,
    shared_subscription_failover_and_no_retained,
    resubscribe_replaces_subscription,
    large_payload_roundtrip,
    publish_to_wildcard_topic_closes,
    qos1_puback_echoes_packet_id,
    qos2_exactly_once_with_dup_retransmit,
    outbound_inflight_window,
);

/// QoS 0, 1 and 2 messages arrive once, with the QoS they were published at, between
/// two rumqttc clients.
async fn qos_roundtrip(v: Version) {
    let broker = Broker::start().await;
    let mut sub = Opts::new(v, "sub").connect(broker.addr).await;
    assert_eq!(sub.subscribe("rt/#", 2).await, vec![2]);
    let mut publisher = Opts::new(v, "pub").connect(broker.addr).await;
    for qos in 0..=2u8 {
        let topic = format!("rt/q{qos}");
        let payload = format!("qos {qos}");
        assert_eq!(
            publisher
                .publish(&topic, qos, false, payload.as_bytes())
                .await,
            0
        );
        let m = sub.recv().await;
        assert_eq!(
            (m.topic.as_str(), m.payload.as_slice()),
            (topic.as_str(), payload.as_bytes())
        );
        assert_eq!(m.qos, qos, "delivered QoS");
        assert!(!m.retain && !m.dup);
    }
    sub.expect_nothing(QUIET).await;
}

/// A message is delivered at the lower of its QoS and the subscription's.
async fn qos_downgraded_to_subscription(v: Version) {
    let broker = Broker::start().await;
    let mut s0 = Opts::new(v, "s0").connect(broker.addr).await;
    let mut s1 = Opts::new(v, "s1").connect(broker.addr).await;
    assert_eq!(s0.subscribe("down", 0).await, vec![0]);
    assert_eq!(s1.subscribe("down", 1).await, vec![1]);
    let mut publisher = Opts::new(v, "pub").connect(broker.addr).await;
    publisher.publish("down", 2, false, b"two").await;
    assert_eq!(s0.recv().await.qos, 0);
    assert_eq!(s1.recv().await.qos, 1);
    publisher.publish("down", 0, false, b"zero").await;
    assert_eq!(s1.recv().await.qos, 0, "QoS 0 is never upgraded");
}

/// SUBACK grants each filter the QoS it asked for (the broker's maximum is 2).
async fn granted_qos_is_requested(v: Version) {
    let broker = Broker::start().await;
    let mut raw = Raw::client(broker.addr, v, "granted").await;
    let codes = raw
        .subscribe_with(&[("g/0", 0), ("g/1", 1), ("g/2", 2)], &Props::new())
        .await;
    assert_eq!(codes, vec![0, 1, 2]);
}

/// `+` matches exactly one level (an empty one too), `#` any number including the
/// parent; matching is case-sensitive.
async fn wildcards_plus_and_hash(v: Version) {
    let broker = Broker::start().await;
    let mut plus = Opts::new(v, "plus").connect(broker.addr).await;
    let mut hash = Opts::new(v, "hash").connect(broker.addr).await;
    plus.subscribe("sport/+/score", 1).await;
    hash.subscribe("sport/#", 1).await;
    let mut publisher = Opts::new(v, "pub").connect(broker.addr).await;
    for topic in [
        "sport/a/score",
        "sport/a/b/score",
        "sport/score",
        "sport",
        "sport//score",
        "Sport/a/score",
        "other/a/score",
    ] {
        publisher.publish(topic, 1, false, topic.as_bytes()).await;
    }
    publisher.publish("sport/z/score", 1, false, b"end").await;

    let got: Vec<String> = plus
        .recv_until(b"end")
        .await
        .into_iter()
        .map(|m| m.topic)
        .collect();
    assert_eq!(got, ["sport/a/score", "sport//score"]);
    let got: Vec<String> = hash
        .recv_until(b"end")
        .await
        .into_iter()
        .map(|m| m.topic)
        .collect();
    assert_eq!(
        got,
        [
            "sport/a/score",
            "sport/a/b/score",
            "sport/score",
            "sport",
            "sport//score"
        ]
    );
}

/// Topics starting with `$` are not matched by filters starting with `#` or `+`
/// [MQTT-4.7.2-1], but are by a filter naming the `$` level.
async fn dollar_topics_not_matched_by_wildcards(v: Version) {
    let broker = Broker::start().await;
    let mut hash = Opts::new(v, "hash").connect(broker.addr).await;
    let mut plus = Opts::new(v, "plus").connect(broker.addr).await;
    let mut dollar = Opts::new(v, "dollar").connect(broker.addr).await;
    hash.subscribe("#", 1).await;
    plus.subscribe("+/x", 1).await;
    dollar.subscribe("$test/#", 1).await;
    let mut publisher = Opts::new(v, "pub").connect(broker.addr).await;
    publisher.publish("$test/x", 1, false, b"dollar").await;
    publisher.publish("plain/x", 1, false, b"end").await;

    assert_eq!(
        dollar.recv().await.payload,
        b"dollar",
        "control: `$test/#` matches"
    );
    let before: Vec<String> = hash
        .recv_until(b"end")
        .await
        .into_iter()
        .map(|m| m.topic)
        .collect();
    assert!(before.is_empty(), "`#` matched {before:?}");
    let before: Vec<String> = plus
        .recv_until(b"end")
        .await
        .into_iter()
        .map(|m| m.topic)
        .collect();
    assert!(before.is_empty(), "`+/x` matched {before:?}");
}

/// Invalid filters are refused one by one in the SUBACK (5.0: 0x8F; 3.1.1: 0x80) while
/// a valid filter in the same SUBSCRIBE is granted.
async fn invalid_filters_refused_per_filter(v: Version) {
    let broker = Broker::start().await;
    let mut raw = Raw::client(broker.addr, v, "filters").await;
    let codes = raw
        .subscribe_with(
            &[("a/#/b", 1), ("a+", 1), ("", 1), ("ok/+", 1)],
            &Props::new(),
        )
        .await;
    let bad = if v == Version::V5 { 0x8F } else { 0x80 };
    assert_eq!(codes, vec![bad, bad, bad, 1]);
    raw.ping().await;
}

/// After UNSUBSCRIBE nothing more arrives; 5.0 UNSUBACK says 0x11 for a filter that
/// was not subscribed.
async fn unsubscribe_stops_delivery(v: Version) {
    let broker = Broker::start().await;
    let mut sub = Opts::new(v, "sub").connect(broker.addr).await;
    sub.subscribe("u/a", 1).await;
    sub.subscribe("u/barrier", 1).await;
    let mut publisher = Opts::new(v, "pub").connect(broker.addr).await;
    publisher.publish("u/a", 1, false, b"before").await;
    assert_eq!(sub.recv().await.payload, b"before");

    let codes = sub.unsubscribe("u/a").await;
    if v == Version::V5 {
        assert_eq!(codes, vec![0x00]);
    }
    publisher.publish("u/a", 1, false, b"after").await;
    publisher.publish("u/barrier", 1, false, b"end").await;
    let before = sub.recv_until(b"end").await;
    assert!(before.is_empty(), "delivered after UNSUBSCRIBE: {before:?}");

    let mut raw = Raw::client(broker.addr, v, "raw").await;
    let codes = raw.unsubscribe(&["never/subscribed"]).await;
    if v == Version::V5 {
        assert_eq!(codes, vec![0x11], "UNSUBACK for a filter not subscribed");
    }
}

/// `$share/g/t`: each message goes to exactly one member, and both members get some.
async fn shared_subscription_spreads_messages(v: Version) {
    let broker = Broker::start().await;
    let mut a = Opts::new(v, "member-a").connect(broker.addr).await;
    let mut b = Opts::new(v, "member-b").connect(broker.addr).await;
    assert_eq!(a.subscribe("$share/g/jobs", 1).await, vec![1]);
    assert_eq!(b.subscribe("$share/g/jobs", 1).await, vec![1]);
    let mut publisher = Opts::new(v, "pub").connect(broker.addr).await;
    for i in 0..100u32 {
        publisher.publish("jobs", 1, false, &i.to_be_bytes()).await;
    }

    let mut seen = vec![0u32; 100];
    let (mut got_a, mut got_b) = (0, 0);
    while got_a + got_b < 100 {
        tokio::select! {
            m = a.recv() => { got_a += 1; seen[index(&m.payload)] += 1; }
            m = b.recv() => { got_b += 1; seen[index(&m.payload)] += 1; }
        }
    }
    a.expect_nothing(QUIET).await;
    b.expect_nothing(Duration::from_millis(50)).await;
    assert!(
        seen.iter().all(|&n| n == 1),
        "each message exactly once: {seen:?}"
    );
    assert!(
        got_a > 0 && got_b > 0,
        "not spread: a got {got_a}, b got {got_b}"
    );
}

/// A new shared subscription gets no retained messages (5.0 section 4.8.2); when one
/// member leaves, the remaining one gets every message, in order.
async fn shared_subscription_failover_and_no_retained(v: Version) {
    let broker = Broker::start().await;
    let mut publisher = Opts::new(v, "pub").connect(broker.addr).await;
    publisher.publish("work", 1, true, b"retained").await;
    let mut a = Opts::new(v, "member-a").connect(broker.addr).await;
    a.subscribe("$share/g/work", 1).await;
    let mut b = Opts::new(v, "member-b").connect(broker.addr).await;
    b.subscribe("$share/g/work", 1).await;
    a.disconnect().await;
    // The broker handles a's DISCONNECT and the publisher's messages on different
    // connections, in no set order: until it has, round robin still gives every other
    // message to a. Probe until b gets two probes in a row (a is out of the group).
    let mut last = None;
    for k in 0..100u8 {
        publisher.publish("work", 1, false, &[b'p', k]).await;
        if let Some(m) = b.try_recv(Duration::from_millis(200)).await {
            let k = m.payload[1];
            if last.is_some_and(|l: u8| l + 1 == k) {
                break;
            }
            last = Some(k);
        }
        assert!(k < 99, "b never got every probe: a still takes a share");
    }
    for i in 0..10u8 {
        publisher.publish("work", 1, false, &[i]).await;
    }
    let mut got = Vec::new();
    while got.len() < 10 {
        let m = b.recv().await;
        // A slow probe may still come before them.
        if m.payload.first() != Some(&b'p') || m.payload.len() != 2 {
            got.push(m.payload);
        }
    }
    let expected: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i]).collect();
    assert_eq!(
        got, expected,
        "the remaining member gets every message, in order"
    );
    b.expect_nothing(QUIET).await;
}

/// Subscribing again to the same filter replaces the subscription (its QoS) instead of
/// adding a second one [MQTT-3.8.4-3].
async fn resubscribe_replaces_subscription(v: Version) {
    let broker = Broker::start().await;
    let mut sub = Opts::new(v, "sub").connect(broker.addr).await;
    assert_eq!(sub.subscribe("rs/t", 0).await, vec![0]);
    assert_eq!(sub.subscribe("rs/t", 2).await, vec![2]);
    let mut publisher = Opts::new(v, "pub").connect(broker.addr).await;
    publisher.publish("rs/t", 2, false, b"m").await;
    publisher.publish("rs/t", 2, false, b"end").await;
    let before = sub.recv_until(b"end").await;
    assert_eq!(before.len(), 1, "copies of the first message: {before:?}");
    assert_eq!(before[0].qos, 2, "the replacing subscription's QoS applies");
}

/// A 256 KiB payload passes through unchanged.
async fn large_payload_roundtrip(v: Version) {
    let broker = Broker::start().await;
    let mut sub = Opts::new(v, "sub").connect(broker.addr).await;
    sub.subscribe("big/t", 1).await;
    let mut publisher = Opts::new(v, "pub").connect(broker.addr).await;
    let payload: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
    publisher.publish("big/t", 1, false, &payload).await;
    let m = sub.recv().await;
    assert!(
        m.payload == payload,
        "payload changed ({} bytes)",
        m.payload.len()
    );
}

fn index(payload: &[u8]) -> usize {
    u32::from_be_bytes(payload.try_into().expect("4-byte payload")) as usize
}

/// A PUBLISH topic must not contain wildcards: the connection is closed (5.0: after
/// DISCONNECT 0x90 Topic Name invalid).
async fn publish_to_wildcard_topic_closes(v: Version) {
    let broker = Broker::start().await;
    let mut raw = Raw::client(broker.addr, v, "wild").await;
    raw.send(&Publish::new("a/+", 0, b"x").encode(v)).await;
    let reason = raw.expect_closed_reason(RECV_TIMEOUT).await;
    if v == Version::V5 {
        assert_eq!(reason, Some(0x90), "DISCONNECT reason");
    }
}

/// PUBACK carries the PUBLISH's packet id (and reason 0 on 5.0 when there is a
/// subscriber).
async fn qos1_puback_echoes_packet_id(v: Version) {
    let broker = Broker::start().await;
    let mut sub = Raw::client(broker.addr, v, "sub").await;
    sub.subscribe("ack/t", 1).await;
    let mut raw = Raw::client(broker.addr, v, "acker").await;
    let mut publish = Publish::new("ack/t", 1, b"x");
    publish.pkid = 4242;
    raw.send(&publish.encode(v)).await;
    match raw.recv().await {
        Packet::Puback(a) => assert_eq!((a.pkid, a.reason), (4242, 0)),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    assert_eq!(sub.recv_publish().await.payload, b"x");
}

/// QoS 2 inbound: a PUBLISH retransmitted with DUP and the same packet id before PUBREL
/// is delivered once; the full PUBREC / PUBREL / PUBCOMP flow completes.
async fn qos2_exactly_once_with_dup_retransmit(v: Version) {
    let broker = Broker::start().await;
    let mut sub = Raw::client(broker.addr, v, "sub").await;
    sub.subscribe("eo/t", 2).await;
    let mut raw = Raw::client(broker.addr, v, "pub").await;
    let mut publish = Publish::new("eo/t", 2, b"once");
    publish.pkid = 7;
    raw.send(&publish.encode(v)).await;
    assert!(matches!(raw.recv().await, Packet::Pubrec(a) if a.pkid == 7));
    publish.dup = true;
    raw.send(&publish.encode(v)).await;
    assert!(
        matches!(raw.recv().await, Packet::Pubrec(a) if a.pkid == 7),
        "a DUP retransmission is answered with PUBREC again"
    );
    raw.send(&codec::pubrel(v, 7)).await;
    assert!(matches!(raw.recv().await, Packet::Pubcomp(a) if a.pkid == 7));
    raw.pub_msg("eo/t", 2, b"end").await;

    let first = sub.recv_acked().await;
    assert_eq!(first.payload, b"once");
    assert_eq!(first.qos, 2);
    let second = sub.recv_acked().await;
    assert_eq!(
        second.payload, b"end",
        "the retransmission was delivered twice"
    );
}

/// The broker keeps at most the in-flight window of unacknowledged QoS 1 messages
/// outstanding to a client: `--max-inflight 2` on 3.1.1, Receive Maximum 2 on 5.0.
async fn outbound_inflight_window(v: Version) {
    let broker = match v {
        Version::V4 => Broker::opts().set("max-inflight", 2).start().await,
        Version::V5 => Broker::start().await,
    };
    let mut connect = codec::Connect::new(v, "slow");
    if v == Version::V5 {
        connect.props = Props::new().with(prop::RECEIVE_MAXIMUM, codec::PropVal::U16(2));
    }
    let (mut slow, _) = Raw::connect(broker.addr, &connect).await;
    slow.subscribe("win/t", 1).await;
    let mut publisher = Raw::client(broker.addr, v, "pub").await;
    for i in 0..6u8 {
        // Each PUBACK proves the broker has taken the message.
        publisher.pub_msg("win/t", 1, &[i]).await;
    }

    let first = slow.recv_publish().await;
    let second = slow.recv_publish().await;
    assert_eq!((first.payload[0], second.payload[0]), (0, 1));
    slow.expect_no_publish(QUIET).await;

    slow.ack(&first).await;
    let third = slow.recv_publish().await;
    assert_eq!(third.payload, [2]);
    slow.expect_no_publish(QUIET).await;

    for p in [second, third] {
        slow.ack(&p).await;
    }
    let rest: Vec<u8> = [
        slow.recv_acked().await,
        slow.recv_acked().await,
        slow.recv_acked().await,
    ]
    .iter()
    .map(|p| p.payload[0])
    .collect();
    assert_eq!(rest, [3, 4, 5]);
}

/// 3.1.1: overlapping subscriptions deliver one copy, at the highest granted QoS.
#[tokio::test]
async fn overlapping_subscriptions_v4_deliver_once_at_max_qos() {
    let broker = Broker::start().await;
    let mut sub = Raw::client(broker.addr, Version::V4, "overlap").await;
    sub.subscribe("ov/#", 0).await;
    sub.subscribe("ov/a", 2).await;
    let mut publisher = Raw::client(broker.addr, Version::V4, "pub").await;
    publisher.pub_msg("ov/a", 2, b"m").await;
    publisher.pub_msg("ov/a", 2, b"end").await;

    let first = sub.recv_acked().await;
    assert_eq!((first.payload.as_slice(), first.qos), (&b"m"[..], 2));
    let second = sub.recv_acked().await;
    assert_eq!(
        second.payload, b"end",
        "a second copy of the first message arrived"
    );
    sub.expect_no_publish(QUIET).await;
}
