//! Retained messages and wills (including 5.0 DISCONNECT 0x04 and will delay).

use std::time::Duration;

use tokio::time::Instant;

use crate::support::client::Opts;
use crate::support::codec::{self, Props, Version};
use crate::support::raw::Raw;
use crate::support::{Broker, QUIET};

both!(
    retained_store_replace_delete,
    retained_live_delivery_has_retain_0,
    will_on_socket_close,
    no_will_after_normal_disconnect,
    will_qos_and_retain_honoured,
);

/// A retained message is stored, replaced by the next one, deleted by an empty
/// payload, and delivered to new subscribers with the retain flag set.
async fn retained_store_replace_delete(v: Version) {
    let broker = Broker::start().await;
    let mut publisher = Opts::new(v, "pub").connect(broker.addr).await;
    publisher.publish("ret/a", 1, true, b"one").await;

    let mut s1 = Opts::new(v, "s1").connect(broker.addr).await;
    s1.subscribe("ret/a", 1).await;
    let m = s1.recv().await;
    assert_eq!((m.payload.as_slice(), m.retain), (&b"one"[..], true));

    publisher.publish("ret/a", 1, true, b"two").await;
    let mut s2 = Opts::new(v, "s2").connect(broker.addr).await;
    s2.subscribe("ret/a", 1).await;
    let m = s2.recv().await;
    assert_eq!((m.payload.as_slice(), m.retain), (&b"two"[..], true));
    s2.expect_nothing(QUIET).await;

    publisher.publish("ret/a", 1, true, b"").await;
    publisher.publish("ret/b", 1, true, b"kept").await;
    let mut s3 = Opts::new(v, "s3").connect(broker.addr).await;
    s3.subscribe("ret/#", 1).await;
    let m = s3.recv().await;
    assert_eq!((m.topic.as_str(), m.retain), ("ret/b", true));
    s3.expect_nothing(QUIET).await;
}

/// A retained PUBLISH delivered to an existing subscription carries retain 0
/// (3.1.1 [MQTT-3.3.1-9]; 5.0 with Retain As Published 0).
async fn retained_live_delivery_has_retain_0(v: Version) {
    let broker = Broker::start().await;
    let mut sub = Opts::new(v, "sub").connect(broker.addr).await;
    sub.subscribe("live/t", 1).await;
    let mut publisher = Opts::new(v, "pub").connect(broker.addr).await;
    publisher.publish("live/t", 1, true, b"r").await;
    let m = sub.recv().await;
    assert!(
        !m.retain,
        "live delivery of a retained message has retain 0"
    );
}

/// A client whose socket closes without DISCONNECT has its will published.
async fn will_on_socket_close(v: Version) {
    let broker = Broker::start().await;
    let mut watcher = Opts::new(v, "watcher").connect(broker.addr).await;
    watcher.subscribe("will/#", 1).await;
    let dying = Opts::new(v, "dying")
        .will("will/dying", b"gone", 1, false)
        .connect(broker.addr)
        .await;
    dying.kill();
    let m = watcher.recv().await;
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        ("will/dying", &b"gone"[..])
    );
}

/// After a normal DISCONNECT the will is discarded.
async fn no_will_after_normal_disconnect(v: Version) {
    let broker = Broker::start().await;
    let mut watcher = Opts::new(v, "watcher").connect(broker.addr).await;
    watcher.subscribe("will/#", 1).await;
    let polite = Opts::new(v, "polite")
        .will("will/polite", b"gone", 1, false)
        .connect(broker.addr)
        .await;
    polite.disconnect().await;
    let mut publisher = Opts::new(v, "pub").connect(broker.addr).await;
    publisher.publish("will/barrier", 1, false, b"end").await;
    let before = watcher.recv_until(b"end").await;
    assert!(
        before.is_empty(),
        "will published after DISCONNECT: {before:?}"
    );
    watcher.expect_nothing(QUIET).await;
}

/// The will's QoS and retain flag are honoured: QoS 1 to a QoS 1 subscriber, and
/// stored as a retained message.
async fn will_qos_and_retain_honoured(v: Version) {
    let broker = Broker::start().await;
    let mut watcher = Opts::new(v, "watcher").connect(broker.addr).await;
    watcher.subscribe("will/#", 2).await;
    let dying = Opts::new(v, "dying")
        .will("will/r", b"last words", 1, true)
        .connect(broker.addr)
        .await;
    dying.kill();
    let m = watcher.recv().await;
    assert_eq!((m.payload.as_slice(), m.qos), (&b"last words"[..], 1));

    let mut late = Opts::new(v, "late").connect(broker.addr).await;
    late.subscribe("will/r", 1).await;
    let m = late.recv().await;
    assert_eq!((m.payload.as_slice(), m.retain), (&b"last words"[..], true));
}

/// 5.0: DISCONNECT with reason 0x04 (Disconnect with Will Message) publishes the will.
#[tokio::test]
async fn will_on_disconnect_0x04_v5() {
    let broker = Broker::start().await;
    let mut watcher = Opts::new(Version::V5, "watcher").connect(broker.addr).await;
    watcher.subscribe("will/#", 1).await;
    let mut connect = codec::Connect::new(Version::V5, "leaver");
    connect.will = Some(codec::Will {
        topic: "will/leaver".into(),
        payload: b"asked for it".to_vec(),
        qos: 1,
        ..codec::Will::default()
    });
    let (mut raw, _) = Raw::connect(broker.addr, &connect).await;
    raw.send(&codec::disconnect(Version::V5, 0x04, &Props::new()))
        .await;
    raw.expect_closed(Duration::from_secs(5)).await;
    assert_eq!(watcher.recv().await.payload, b"asked for it");
}

/// 5.0: a will with delay 1 s is published after the delay, not at the close.
#[tokio::test]
async fn will_delay_publishes_after_delay_v5() {
    let broker = Broker::start().await;
    let mut watcher = Opts::new(Version::V5, "watcher").connect(broker.addr).await;
    watcher.subscribe("will/#", 1).await;
    let dying = Opts::new(Version::V5, "delayed")
        .session_expiry(60)
        .will("will/delayed", b"late", 1, false)
        .will_delay(1)
        .connect(broker.addr)
        .await;
    let closed = Instant::now();
    dying.kill();
    let m = watcher.recv().await;
    let after = closed.elapsed();
    assert_eq!(m.payload, b"late");
    assert!(
        after >= Duration::from_millis(800),
        "will with delay 1 s published after {after:?}"
    );
}

/// 5.0: reconnecting within the will delay cancels the will.
#[tokio::test]
async fn will_delay_cancelled_by_reconnect_v5() {
    let broker = Broker::start().await;
    let mut watcher = Opts::new(Version::V5, "watcher").connect(broker.addr).await;
    watcher.subscribe("will/#", 1).await;
    let opts = Opts::new(Version::V5, "returning")
        .clean(false)
        .session_expiry(60)
        .will("will/returning", b"should not appear", 1, false)
        .will_delay(1);
    let dying = opts.clone().connect(broker.addr).await;
    dying.kill();
    let back = opts.connect(broker.addr).await;
    assert!(back.session_present);
    // Let the will delay pass: the cancelled will must not appear.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut publisher = Opts::new(Version::V5, "pub").connect(broker.addr).await;
    publisher.publish("will/barrier", 1, false, b"end").await;
    let before = watcher.recv_until(b"end").await;
    assert!(
        before.is_empty(),
        "will published despite reconnect: {before:?}"
    );
}
