//! `$SYS`: the node's own figures, published every `--sys-interval-secs` to its own
//! subscribers and kept as their latest values for new ones; never matched by a filter
//! starting with a wildcard, readable only where the access rules allow, and never
//! published by clients.

use std::time::Duration;

use tokio::time::Instant;

use crate::support::client::{Client, Msg, Opts};
use crate::support::codec::Version;
use crate::support::{Broker, RECV_TIMEOUT};

both!(
    uptime_arrives_within_the_interval,
    load_averages_move_with_traffic,
    hash_subscribers_get_no_sys_topics,
    acl_can_deny_sys,
    clients_cannot_publish_to_sys,
);

/// The interval of these tests.
const INTERVAL_SECS: u64 = 1;

async fn broker() -> Broker {
    Broker::opts()
        .set("sys-interval-secs", INTERVAL_SECS)
        .start()
        .await
}

/// The next message on `topic` (live ones with `retain` false, the kept value sent on
/// subscribing with it true), within a few intervals; others are skipped.
async fn recv_topic(c: &mut Client, topic: &str, retain: bool) -> Msg {
    let deadline = Instant::now() + RECV_TIMEOUT + Duration::from_secs(2 * INTERVAL_SECS);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.try_recv(left).await {
            Some(m) if m.topic == topic && m.retain == retain => return m,
            Some(_) => {}
            None => panic!("no {topic} (retain {retain}) within the bound"),
        }
    }
}

fn text(m: &Msg) -> String {
    String::from_utf8_lossy(&m.payload).into_owned()
}

/// A `$SYS/#` subscriber gets the latest values at once (retained), then the uptime
/// again within the interval; the single node says it leads a cluster of one.
async fn uptime_arrives_within_the_interval(v: Version) {
    let broker = broker().await;
    let mut c = Opts::new(v, "sys-reader").connect(broker.addr).await;
    assert_eq!(c.subscribe("$SYS/#", 0).await, [0]);
    let kept = recv_topic(&mut c, "$SYS/broker/uptime", true).await;
    assert!(text(&kept).ends_with(" seconds"), "{kept:?}");
    let live = recv_topic(&mut c, "$SYS/broker/uptime", false).await;
    let secs = |m: &Msg| -> u64 { text(m).trim_end_matches(" seconds").parse().unwrap() };
    assert!(secs(&live) >= secs(&kept), "{live:?} after {kept:?}");

    let mut c = Opts::new(v, "sys-late").connect(broker.addr).await;
    assert_eq!(c.subscribe("$SYS/broker/+", 0).await, [0]);
    let version = recv_topic(&mut c, "$SYS/broker/version", true).await;
    assert!(text(&version).starts_with("raftmq "), "{version:?}");
    assert_eq!(c.subscribe("$SYS/cluster/role", 0).await, [0]);
    assert_eq!(
        text(&recv_topic(&mut c, "$SYS/cluster/role", true).await),
        "leader"
    );
    assert_eq!(c.subscribe("$SYS/cluster/members", 0).await, [0]);
    let members = recv_topic(&mut c, "$SYS/cluster/members", true).await;
    let members: serde_json::Value = serde_json::from_slice(&members.payload).unwrap();
    assert_eq!(members[0]["state"], "up", "{members}");
    assert_eq!(members[0]["voter"], true, "{members}");
}

/// `$SYS/broker/load/...`: after messages are published, the moving average of publishes
/// received per minute turns positive, and the one of bytes received with it.
async fn load_averages_move_with_traffic(v: Version) {
    let broker = broker().await;
    let mut c = Opts::new(v, "load-reader").connect(broker.addr).await;
    assert_eq!(
        c.subscribe("$SYS/broker/load/+/received/1min", 0).await,
        [0]
    );
    let mut publisher = Opts::new(v, "load-pub").connect(broker.addr).await;
    for i in 0..50u32 {
        publisher
            .publish("load/x", 1, false, &i.to_be_bytes())
            .await;
    }
    let value = |m: &Msg| -> f64 { text(m).parse().unwrap_or_else(|_| panic!("{m:?}")) };
    // Values are published when they change; one from before the burst may come first
    // (0.00), then the interval that holds the burst: bounded by recv_topic's deadline.
    let mut seen = Vec::new();
    let publishes = loop {
        let m = recv_topic(&mut c, "$SYS/broker/load/publish/received/1min", false).await;
        if value(&m) > 0.0 {
            break m;
        }
        seen.push(m);
        assert!(seen.len() < 5, "the load never rose: {seen:?}");
    };
    // Published in the same tick, after the publishes' average.
    let bytes = recv_topic(&mut c, "$SYS/broker/load/bytes/received/1min", false).await;
    assert!(
        value(&bytes) > value(&publishes),
        "{bytes:?} vs {publishes:?}"
    );
}

/// `#` and `+/…` do not match `$SYS` topics (MQTT §4.7.2), while `$SYS/#` does.
async fn hash_subscribers_get_no_sys_topics(v: Version) {
    let broker = broker().await;
    let mut all = Opts::new(v, "everything").connect(broker.addr).await;
    assert_eq!(all.subscribe("#", 0).await, [0]);
    assert_eq!(all.subscribe("+/broker/uptime", 0).await, [0]);
    let mut sys = Opts::new(v, "sys-reader").connect(broker.addr).await;
    assert_eq!(sys.subscribe("$SYS/#", 0).await, [0]);
    // A live publication after both subscribed: `all` would have it queued by now.
    recv_topic(&mut sys, "$SYS/broker/uptime", false).await;
    let mut publisher = Opts::new(v, "pub").connect(broker.addr).await;
    publisher.publish("x/end", 1, false, b"end").await;
    let before = all.recv_until(b"end").await;
    assert!(
        before.iter().all(|m| !m.topic.starts_with('$')),
        "a wildcard filter matched $ topics: {before:?}"
    );
}

/// A deny-subscribe rule on `$SYS/#` refuses the filter (SUBACK failure) and keeps the
/// topics from a `#` subscriber too; a client the rule does not name reads them.
async fn acl_can_deny_sys(v: Version) {
    let broker = Broker::opts()
        .set("sys-interval-secs", INTERVAL_SECS)
        .config(
            r##"
[[acl]]
permission = "deny"
action = "subscribe"
topic = "$SYS/#"
client_id = "nosy"
"##,
        )
        .start()
        .await;
    let mut nosy = Opts::new(v, "nosy").connect(broker.addr).await;
    assert_eq!(nosy.subscribe("$SYS/#", 0).await, [0x80]);
    assert_eq!(nosy.subscribe("$SYS/broker/uptime", 0).await, [0x80]);
    assert_eq!(nosy.subscribe("x/#", 0).await, [0]);
    let mut watcher = Opts::new(v, "watcher").connect(broker.addr).await;
    assert_eq!(watcher.subscribe("$SYS/#", 0).await, [0]);
    recv_topic(&mut watcher, "$SYS/broker/uptime", false).await;
    let mut publisher = Opts::new(v, "pub").connect(broker.addr).await;
    publisher.publish("x/end", 1, false, b"end").await;
    let before = nosy.recv_until(b"end").await;
    assert!(before.is_empty(), "denied $SYS delivered: {before:?}");
}

/// A client's PUBLISH to `$SYS/…` is refused (5.0: 0x87), reaches no subscriber and is
/// not kept as retained, while the node's own values carry on.
async fn clients_cannot_publish_to_sys(v: Version) {
    let broker = broker().await;
    let mut watcher = Opts::new(v, "watcher").connect(broker.addr).await;
    assert_eq!(watcher.subscribe("$SYS/#", 0).await, [0]);
    let mut forger = Opts::new(v, "forger").connect(broker.addr).await;
    let reason = forger
        .publish("$SYS/broker/uptime", 1, true, b"forged")
        .await;
    if v == Version::V5 {
        assert_eq!(reason, 0x87, "PUBACK reason for a publish to $SYS");
    }
    forger.publish("$SYS/forged", 0, true, b"forged").await;
    // Up to the node's next publication, nothing forged.
    loop {
        let m = watcher.recv().await;
        assert_ne!(
            m.payload, b"forged",
            "a client's $SYS publish was delivered"
        );
        if m.topic == "$SYS/broker/uptime" && !m.retain {
            break;
        }
    }

    let mut late = Opts::new(v, "late").connect(broker.addr).await;
    assert_eq!(late.subscribe("$SYS/#", 0).await, [0]);
    assert_eq!(late.subscribe("x/end", 0).await, [0]);
    forger.publish("x/end", 1, false, b"end").await;
    let kept = late.recv_until(b"end").await;
    assert!(
        kept.iter().any(|m| m.topic == "$SYS/broker/uptime"),
        "{kept:?}"
    );
    assert!(
        kept.iter().all(|m| m.payload != b"forged"),
        "a client's $SYS publish was kept: {kept:?}"
    );
}

/// With a long interval, the values published at start-up are what a subscriber gets
/// (at once, as retained); with 0, there are none.
#[tokio::test]
async fn latest_values_at_once_and_none_when_off() {
    let broker = Broker::opts().set("sys-interval-secs", 3600).start().await;
    let mut c = Opts::new(Version::V5, "sys-reader")
        .connect(broker.addr)
        .await;
    assert_eq!(c.subscribe("$SYS/broker/clients/+", 0).await, [0]);
    let connected = recv_topic(&mut c, "$SYS/broker/clients/connected", true).await;
    let n: u64 = text(&connected).parse().unwrap();
    assert!(n <= 1, "published at start-up: {connected:?}");

    let off = Broker::opts().set("sys-interval-secs", 0).start().await;
    let mut c = Opts::new(Version::V5, "sys-reader").connect(off.addr).await;
    assert_eq!(c.subscribe("$SYS/#", 0).await, [0]);
    assert_eq!(c.subscribe("x/end", 0).await, [0]);
    c.publish("x/end", 1, false, b"end").await;
    let before = c.recv_until(b"end").await;
    assert!(before.is_empty(), "$SYS while off: {before:?}");
}
