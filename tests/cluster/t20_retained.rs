//! Retained messages are cluster state: set on one node, served by every node.

use std::time::Duration;

use tokio::time::Instant;

use crate::support::client::{v4, v5, Msg};
use crate::support::cluster::{Cluster, CLUSTER_TIMEOUT};

/// A retained message published on node 1 reaches a new subscriber on node 3; replacing
/// it on node 2 replaces it there too.
#[tokio::test]
async fn retained_across_nodes() {
    let c = Cluster::start(3).await;
    let mut p = v4("pub-1").connect(c.node(1).mqtt).await;
    assert_eq!(p.publish("rt/a", 1, true, b"first").await, 0);
    let m = retained_on(&c, 3, "rt/#", b"first").await;
    assert_eq!((m.topic.as_str(), m.retain), ("rt/a", true));

    let mut p = v5("pub-2").connect(c.node(2).mqtt).await;
    assert!(p.publish("rt/a", 1, true, b"second").await < 0x80);
    retained_on(&c, 3, "rt/#", b"second").await;
}

/// Subscribes a new client on `node` until the retained message it gets is `payload`
/// (bounded: the retained message is applied there a moment after the PUBACK).
async fn retained_on(c: &Cluster, node: u64, filter: &str, payload: &[u8]) -> Msg {
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    let mut last = None;
    loop {
        let mut s = v5("late").connect(c.node(node).mqtt).await;
        s.subscribe(filter, 1).await;
        if let Some(m) = s.try_recv(Duration::from_millis(500)).await {
            if m.payload == payload {
                return m;
            }
            last = Some(m);
        }
        s.disconnect().await;
        assert!(
            Instant::now() < deadline,
            "node {node} never served retained {payload:?} on {filter}; last seen {last:?}"
        );
    }
}
