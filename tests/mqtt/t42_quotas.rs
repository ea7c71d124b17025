//! Quotas (issue 12): a client past a quota gets the protocol's refusal (5.0: 0x97;
//! 3.1.1: SUBACK 0x80, CONNACK 0x03, or the connection closed for a PUBLISH), the
//! broker logs it once per client, and other clients carry on.

use std::time::Duration;

use crate::support::client::Opts;
use crate::support::codec::{Connect, Packet, Props, Publish, Version, Will};
use crate::support::raw::{Raw, Recv};
use crate::support::{needs_raftmq, wait_until, Broker, QUIET, RECV_TIMEOUT};

both!(
    subscriptions_per_session,
    topic_length_and_levels,
    retained_messages,
    persistent_sessions,
    inflight_qos2,
);

/// What a refused SUBSCRIBE filter gets.
fn filter_refused(v: Version) -> u8 {
    match v {
        Version::V5 => 0x97,
        Version::V4 => 0x80,
    }
}

/// Waits until the broker has logged `setting` as exceeded, then checks it did so once.
async fn logged_once(broker: &Broker, setting: &str) {
    let count = || {
        broker
            .stderr()
            .lines()
            .filter(|l| l.contains("quota exceeded") && l.contains(setting))
            .count()
    };
    let what = format!("the {setting} log line");
    wait_until(&what, RECV_TIMEOUT, Duration::from_millis(50), || async {
        count() > 0
    })
    .await;
    assert_eq!(count(), 1, "{setting} logged more than once");
}

/// Sends a PUBLISH that the broker must refuse: 5.0 QoS 1/2 gets the ack with 0x97;
/// 3.1.1 (no negative ack) and QoS 0 get the connection closed.
async fn refused_publish(c: &mut Raw, mut p: Publish) {
    let v = c.version;
    if v == Version::V5 && p.qos > 0 {
        assert_eq!(c.publish(p).await, 0x97, "ack of a PUBLISH over quota");
        return;
    }
    p.pkid = if p.qos > 0 { c.pkid() } else { 0 };
    c.send(&p.encode(v)).await;
    let reason = c.expect_closed_reason(RECV_TIMEOUT).await;
    if v == Version::V5 {
        assert_eq!(reason, Some(0x97), "DISCONNECT reason");
    }
}

fn retained(topic: &str, qos: u8, payload: &[u8]) -> Publish {
    let mut p = Publish::new(topic, qos, payload);
    p.retain = true;
    p
}

/// Filters past `max_subscriptions_per_session` are refused; replacing one held is not,
/// and an unsubscribe makes room. Another client has its own quota.
async fn subscriptions_per_session(v: Version) {
    needs_raftmq("quotas");
    let broker = Broker::opts()
        .set("max-subscriptions-per-session", 3)
        .start()
        .await;
    let refused = filter_refused(v);
    let mut hog = Raw::client(broker.addr, v, "hog").await;
    let four = [("a/1", 1), ("a/2", 1), ("a/3", 1), ("a/4", 1)];
    let codes = hog.subscribe_with(&four, &Props::new()).await;
    assert_eq!(codes, [1, 1, 1, refused]);
    let codes = hog
        .subscribe_with(&[("a/1", 0), ("a/5", 0)], &Props::new())
        .await;
    assert_eq!(
        codes,
        [0, refused],
        "a replacement is granted, a new one is not"
    );
    hog.unsubscribe(&["a/2"]).await;
    assert_eq!(hog.subscribe("a/6", 1).await, [1], "room after UNSUBSCRIBE");
    logged_once(&broker, "max_subscriptions_per_session").await;

    let mut other = Opts::new(v, "other").connect(broker.addr).await;
    for f in ["b/1", "b/2", "b/3"] {
        assert_eq!(other.subscribe(f, 1).await, [1]);
    }
    other.publish("a/6", 1, false, b"to hog").await;
    assert_eq!(hog.recv_publish().await.payload, b"to hog");
}

/// Topic names and filters past `max_topic_length` or `max_topic_levels` are refused,
/// and nothing of them is delivered.
async fn topic_length_and_levels(v: Version) {
    needs_raftmq("quotas");
    let broker = Broker::opts()
        .set("max-topic-length", 32)
        .set("max-topic-levels", 4)
        .start()
        .await;
    let long = format!("t/{}", "x".repeat(31));
    let deep = "t/a/b/c/d";
    let mut watcher = Opts::new(v, "watcher").connect(broker.addr).await;
    assert_eq!(watcher.subscribe("#", 1).await, [1]);

    let mut c = Raw::client(broker.addr, v, "deep").await;
    let filters = [
        (long.as_str(), 1),
        (deep, 1),
        ("t/+/b/#", 1),
        ("t/a/b/c", 1),
    ];
    let codes = c.subscribe_with(&filters, &Props::new()).await;
    let refused = filter_refused(v);
    assert_eq!(codes, [refused, refused, 1, 1]);
    refused_publish(&mut c, Publish::new(&long, 1, b"long")).await;
    if v == Version::V5 {
        refused_publish(&mut c, Publish::new(deep, 2, b"deep")).await;
        refused_publish(&mut c, Publish::new(deep, 0, b"deep qos 0")).await;
    }
    let mut other = Opts::new(v, "other").connect(broker.addr).await;
    other.publish("t/a/b/c", 1, false, b"end").await;
    let before = watcher.recv_until(b"end").await;
    assert!(before.is_empty(), "refused topics delivered: {before:?}");
    logged_once(&broker, "max_topic_length").await;
    logged_once(&broker, "max_topic_levels").await;

    // A will's topic likewise, checked at CONNECT (5.0: 0x97, 3.1.1: 0x03).
    let mut connect = Connect::new(v, "deep-will");
    connect.will = Some(Will {
        topic: deep.into(),
        payload: b"gone".to_vec(),
        ..Will::default()
    });
    match Raw::connect_with(broker.addr, &connect).await.1 {
        Recv::Packet(Packet::Connack { code, .. }) => {
            assert_eq!(code, if v == Version::V5 { 0x97 } else { 0x03 });
        }
        other => panic!("{other:?} instead of a refusing CONNACK"),
    }
}

/// New retained topics past `max_retained_per_client`, `max_retained_messages` or
/// `max_retained_bytes` are refused; replacing and clearing never are, and a clear
/// makes room.
async fn retained_messages(v: Version) {
    needs_raftmq("quotas");
    let broker = Broker::opts()
        .set("max-retained-per-client", 2)
        .set("max-retained-messages", 3)
        .start()
        .await;
    let addr = broker.addr;
    let mut a = Raw::client(addr, v, "a").await;
    assert!(a.publish(retained("t/1", 1, b"1")).await < 0x80);
    assert!(a.publish(retained("t/2", 1, b"2")).await < 0x80);
    refused_publish(&mut a, retained("t/3", 1, b"3")).await;
    if v == Version::V4 {
        a = Raw::client(addr, v, "a").await;
    }
    assert!(a.publish(retained("t/1", 1, b"1b")).await < 0x80, "replace");
    assert!(a.publish(retained("t/2", 1, b"")).await < 0x80, "clear");
    assert!(
        a.publish(retained("t/3", 1, b"3")).await < 0x80,
        "room after a clear"
    );
    logged_once(&broker, "max_retained_per_client").await;

    let mut b = Raw::client(addr, v, "b").await;
    assert!(b.publish(retained("u/1", 1, b"u1")).await < 0x80);
    refused_publish(&mut b, retained("u/2", 2, b"u2")).await;
    logged_once(&broker, "max_retained_messages").await;

    let mut late = Raw::client(addr, v, "late").await;
    late.subscribe("#", 1).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let p = late.recv_publish().await;
        got.push((p.topic_str(), p.payload));
    }
    got.sort();
    let want = [("t/1", &b"1b"[..]), ("t/3", b"3"), ("u/1", b"u1")];
    let want: Vec<(String, Vec<u8>)> = want
        .iter()
        .map(|(t, p)| (t.to_string(), p.to_vec()))
        .collect();
    assert_eq!(got, want);
    late.expect_no_publish(QUIET).await;

    let broker = Broker::opts().set("max-retained-bytes", 64).start().await;
    let mut c = Raw::client(broker.addr, v, "c").await;
    assert!(c.publish(retained("s/1", 1, &[1; 40])).await < 0x80);
    refused_publish(&mut c, retained("s/2", 1, &[2; 40])).await;
    logged_once(&broker, "max_retained_bytes").await;
}

/// A CONNECT that would create a persistent session past `max_persistent_sessions` is
/// refused (5.0: 0x97, 3.1.1: 0x03); clean sessions and resumed ones are not.
async fn persistent_sessions(v: Version) {
    needs_raftmq("quotas");
    let broker = Broker::opts()
        .set("max-persistent-sessions", 2)
        .start()
        .await;
    let addr = broker.addr;
    let (p1, _) = Raw::connect(addr, &Connect::persistent(v, "p1")).await;
    let _p2 = Raw::connect(addr, &Connect::persistent(v, "p2")).await;
    for _ in 0..2 {
        match Raw::connect_with(addr, &Connect::persistent(v, "p3"))
            .await
            .1
        {
            Recv::Packet(Packet::Connack { code, .. }) => {
                let want = if v == Version::V5 { 0x97 } else { 0x03 };
                assert_eq!(code, want, "CONNACK code past the quota");
            }
            other => panic!("p3: {other:?} instead of a refusing CONNACK"),
        }
    }
    logged_once(&broker, "max_persistent_sessions").await;
    let _clean = Raw::client(addr, v, "clean").await;
    drop(p1);
    match Raw::connect(addr, &Connect::persistent(v, "p1")).await.1 {
        Packet::Connack {
            session_present, ..
        } => assert!(session_present, "p1 resumed"),
        other => panic!("{other:?}"),
    }
    // p2 ends its session (a clean start replaces it): room for p3.
    let _p2 = Raw::client(addr, v, "p2").await;
    Raw::connect(addr, &Connect::persistent(v, "p3")).await;
}

/// Inbound QoS 2 awaiting PUBREL: 3.1.1 clients are held to `max_inflight_qos2` (the
/// connection closes), 5.0 clients to the Receive Maximum they are told (0x93).
async fn inflight_qos2(v: Version) {
    needs_raftmq("quotas");
    let broker = Broker::opts()
        .set("max-inflight-qos2", 2)
        .set("receive-maximum", 2)
        .start()
        .await;
    let mut c = Raw::client(broker.addr, v, "q2").await;
    for pkid in 1..=3 {
        let mut p = Publish::new("q/t", 2, b"held");
        p.pkid = pkid;
        c.send(&p.encode(v)).await;
        if pkid < 3 {
            assert!(c.recv_pubrec(pkid).await < 0x80);
        }
    }
    let reason = c.expect_closed_reason(RECV_TIMEOUT).await;
    match v {
        Version::V5 => assert_eq!(reason, Some(0x93), "Receive Maximum exceeded"),
        Version::V4 => logged_once(&broker, "max_inflight_qos2").await,
    }
    // A client that completes its flows is never limited.
    let mut other = Raw::client(broker.addr, v, "other").await;
    for _ in 0..5 {
        assert!(other.pub_msg("q/t", 2, b"done").await < 0x80);
    }
}

/// The attack, scaled down: one client sends 200 SUBSCRIBEs of 100 filters of
/// about 210 bytes. It keeps 1000 (the default quota), the rest are refused, and the
/// broker's RSS grows by about 12 MB, not the 53 MB that 20,000 subscriptions took
/// with the quota disabled (measured; the bound sits between the two).
#[tokio::test]
async fn subscribe_flood_is_bounded() {
    needs_raftmq("quotas");
    let v = Version::V5;
    let broker = Broker::start().await;
    let mut hog = Raw::client(broker.addr, v, "flood").await;
    let before = broker.rss_kib();
    let (mut granted, mut refused) = (0, 0);
    for packet in 0..200 {
        let filters: Vec<String> = (0..100)
            .map(|i| format!("flood/{packet}/{i}/{}", "x".repeat(195)))
            .collect();
        let filters: Vec<(&str, u8)> = filters.iter().map(|f| (f.as_str(), 1)).collect();
        for code in hog.subscribe_with(&filters, &Props::new()).await {
            match code {
                1 => granted += 1,
                0x97 => refused += 1,
                other => panic!("SUBACK code {other:#04x}"),
            }
        }
    }
    let grown = broker.rss_kib().saturating_sub(before);
    assert_eq!((granted, refused), (1000, 19_000));
    assert!(grown < 24 * 1024, "broker RSS grew by {grown} KiB");
    logged_once(&broker, "max_subscriptions_per_session").await;

    let mut other = Opts::new(v, "bystander").connect(broker.addr).await;
    assert_eq!(other.subscribe("news/#", 1).await, [1]);
    let mut publisher = Opts::new(v, "publisher").connect(broker.addr).await;
    publisher.publish("news/x", 1, false, b"still served").await;
    assert_eq!(other.recv().await.payload, b"still served");
}
