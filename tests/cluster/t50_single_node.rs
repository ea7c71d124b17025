//! A single node (no `--join`) is durable too: SIGKILL loses no acknowledged message.

use crate::support::client::v4;
use crate::support::cluster::Cluster;

/// A persistent subscriber (QoS 1) is offline while 100 QoS 1 messages are published,
/// each PUBACKed; the broker is SIGKILLed and restarted on the same data dir; the
/// subscriber resumes its session and gets all 100, in order. A retained message
/// survives as well.
#[tokio::test]
async fn single_node_survives_kill_9() {
    let mut c = Cluster::start(1).await;
    let addr = c.node(1).mqtt;
    let mut s = v4("keeper").persistent().connect(addr).await;
    assert_eq!(s.subscribe("dur/#", 1).await, [1]);
    s.disconnect().await;
    let mut p = v4("pub").connect(addr).await;
    p.publish("kept/r", 1, true, b"retained").await;
    for i in 0..100 {
        p.publish("dur/t", 1, false, format!("m{i}").as_bytes())
            .await;
    }
    drop(p);

    c.kill(1);
    c.restart(1).await;

    let mut s = v4("keeper").persistent().connect(addr).await;
    assert!(s.session_present, "the session survived the kill");
    for i in 0..100 {
        let m = s.recv().await;
        assert_eq!(
            (m.payload, m.qos),
            (format!("m{i}").into_bytes(), 1),
            "message {i}"
        );
    }
    let mut late = v4("late").connect(addr).await;
    late.subscribe("kept/#", 1).await;
    let m = late.recv().await;
    assert_eq!((m.payload.as_slice(), m.retain), (&b"retained"[..], true));
}
