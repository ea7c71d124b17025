//! Routing across nodes: a subscriber on one node receives what is published on the
//! others, at every QoS and through wildcards; a shared subscription whose members sit
//! on different nodes delivers each message to exactly one member.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::support::client::{v4, v5, Client};
use crate::support::cluster::{recv_data, try_recv_data, wait_route, Cluster, PROBE};
use crate::support::QUIET;

/// Subscriber on node 1 (`+` at QoS 2, `#` at QoS 1); publishers on nodes 2 (3.1.1) and
/// 3 (5.0) at QoS 0, 1 and 2: each message arrives once, at the lower of the two QoS.
#[tokio::test]
async fn cross_node_qos_and_wildcards() {
    let c = Cluster::start(3).await;
    let mut sub = v5("sub").connect(c.node(1).mqtt).await;
    assert_eq!(sub.subscribe("xq/+/data", 2).await, [2]);
    assert_eq!(sub.subscribe("xw/#", 1).await, [1]);
    let mut publishers = [
        v4("pub-2").connect(c.node(2).mqtt).await,
        v5("pub-3").connect(c.node(3).mqtt).await,
    ];
    for p in &mut publishers {
        wait_route(p, &mut sub, "xq/probe/data").await;
        wait_route(p, &mut sub, "xw/probe").await;
    }

    for (p, node) in publishers.iter_mut().zip([2, 3]) {
        for qos in 0..=2u8 {
            let topic = format!("xq/n{node}/data");
            let payload = format!("plus q{qos} from {node}");
            p.publish(&topic, qos, false, payload.as_bytes()).await;
            let m = recv_data(&mut sub).await;
            assert_eq!(
                (m.topic.as_str(), m.payload, m.qos),
                (topic.as_str(), payload.into_bytes(), qos)
            );

            let topic = format!("xw/n{node}/deep/{qos}");
            let payload = format!("hash q{qos} from {node}");
            p.publish(&topic, qos, false, payload.as_bytes()).await;
            let m = recv_data(&mut sub).await;
            assert_eq!(
                (m.topic.as_str(), m.payload, m.qos),
                (topic.as_str(), payload.into_bytes(), qos.min(1))
            );
        }
    }

    // Topics that match neither filter are not delivered; the barrier takes the same
    // (QoS 1) path as the non-matching messages.
    let p = &mut publishers[0];
    p.publish("xq/a/b/data", 1, false, b"no: two levels").await;
    p.publish("xz/data", 1, false, b"no: other root").await;
    p.publish("xw/end", 1, false, b"end").await;
    assert_eq!(recv_data(&mut sub).await.payload, b"end");
    assert!(
        try_recv_data(&mut sub, QUIET).await.is_none(),
        "a message was delivered twice or matched wrongly"
    );
}

/// `$share/g/sh/#` with one member on node 1 and one on node 2, publisher on node 3:
/// every message reaches exactly one member.
#[tokio::test]
async fn shared_subscription_across_nodes() {
    const N: usize = 20;
    let c = Cluster::start(3).await;
    let mut members = [
        v5("member-1").connect(c.node(1).mqtt).await,
        v5("member-2").connect(c.node(2).mqtt).await,
    ];
    for m in &mut members {
        assert_eq!(m.subscribe("$share/g/sh/#", 1).await, [1]);
    }
    c.wait_applied().await;
    let mut publisher = v5("pub").connect(c.node(3).mqtt).await;
    probe_group(&mut publisher, &mut members, "sh/probe").await;

    for i in 0..N {
        let ack = publisher
            .publish(&format!("sh/t/{i}"), 1, false, format!("m{i}").as_bytes())
            .await;
        assert!(ack < 0x80, "PUBACK reason {ack:#x}");
    }
    let mut seen: BTreeMap<Vec<u8>, Vec<usize>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.values().map(Vec::len).sum::<usize>() < N && Instant::now() < deadline {
        for (k, m) in members.iter_mut().enumerate() {
            if let Some(msg) = try_recv_data(m, Duration::from_millis(50)).await {
                seen.entry(msg.payload).or_default().push(k + 1);
            }
        }
    }
    for (k, m) in members.iter_mut().enumerate() {
        if let Some(msg) = try_recv_data(m, QUIET).await {
            seen.entry(msg.payload).or_default().push(k + 1);
        }
    }
    let expected: BTreeMap<Vec<u8>, usize> =
        (0..N).map(|i| (format!("m{i}").into_bytes(), 1)).collect();
    let got: BTreeMap<Vec<u8>, usize> = seen.iter().map(|(p, v)| (p.clone(), v.len())).collect();
    assert_eq!(
        got, expected,
        "deliveries per message (member ids: {seen:?})"
    );
}

/// Probes `topic` until some member of the group gets a probe.
async fn probe_group(publisher: &mut Client, members: &mut [Client], topic: &str) {
    let deadline = Instant::now() + crate::support::cluster::CLUSTER_TIMEOUT;
    loop {
        publisher.publish(topic, 0, false, PROBE).await;
        for m in members.iter_mut() {
            if m.try_recv(Duration::from_millis(100)).await.is_some() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no member got a probe on {topic}"
        );
    }
}
