//! `GET /metrics` across a three-node cluster: every node reports the same term and
//! leader, exactly one reports itself leader, and a client connecting to a follower
//! shows in that follower's commit latency and batch size histograms (its proposer
//! forwards the claim to the leader and times it).

use crate::support::client::Opts;
use crate::support::cluster::{Cluster, CLUSTER_TIMEOUT};
use crate::support::codec::Version;
use crate::support::metrics::Scrape;

#[tokio::test]
async fn raft_metrics_agree_across_nodes() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    // A term or leader still settling is waited out; one leader, agreed, is the end.
    c.wait_until(
        "the nodes' metrics to agree on one leader",
        CLUSTER_TIMEOUT,
        |c| async move {
            let mut scrapes = Vec::new();
            for id in c.ids() {
                scrapes.push(Scrape::of(c.node(id).http).await);
            }
            let leaders = scrapes
                .iter()
                .filter(|s| s.value("raftmq_raft_is_leader", &[]) == 1.0)
                .count();
            let term = scrapes[0].value("raftmq_raft_term", &[]);
            leaders == 1
                && scrapes.iter().all(|s| {
                    s.value("raftmq_raft_term", &[]) == term
                        && s.get("raftmq_raft_leader_id", &[]) == Some(leader as f64)
                })
        },
    )
    .await;
    for id in c.ids() {
        let s = Scrape::of(c.node(id).http).await;
        assert_eq!(s.value("raftmq_node_id", &[]), id as f64);
        assert_eq!(
            s.value("raftmq_raft_is_leader", &[]),
            f64::from(u8::from(id == leader)),
            "node {id}"
        );
        assert_eq!(s.value("raftmq_cluster_voters", &[]), 3.0, "node {id}");
        assert_eq!(s.value("raftmq_cluster_nodes_down", &[]), 0.0, "node {id}");
        assert_eq!(s.value("raftmq_raft_can_commit", &[]), 1.0, "node {id}");
        assert!(s.value("raftmq_raft_commit_index", &[]) >= 1.0, "node {id}");
        assert!(s.value("raftmq_cluster_leader_changes_total", &[]) >= 1.0);
    }

    let follower = c
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    let http = c.node(follower).http;
    let before = Scrape::of(http).await;
    let _client = Opts::new(Version::V4, "m1")
        .connect(c.node(follower).mqtt)
        .await;
    let after = Scrape::of(http).await;
    let count = |s: &Scrape, name: &str| s.get(name, &[]).unwrap_or(0.0);
    for name in [
        "raftmq_raft_commit_latency_seconds_count",
        "raftmq_raft_batch_size_count",
    ] {
        assert!(
            count(&after, name) > count(&before, name),
            "node {follower}'s {name} did not grow with a client's claim"
        );
    }
    assert!(
        after.value("raftmq_raft_commit_latency_seconds_sum", &[])
            > before.value("raftmq_raft_commit_latency_seconds_sum", &[])
    );
    assert_eq!(after.value("raftmq_clients_connected", &[]), 1.0);
}
