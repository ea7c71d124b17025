//! Power loss (issue 11): the nodes' data dirs are on tests/powerfs, a filesystem that
//! keeps every write in memory until it is fsynced and drops the rest on a power cut,
//! as a machine losing power drops its page cache. A SIGKILL cannot show a missing
//! fsync (the kernel keeps the pages); these scenarios can. The checker then verifies
//! what every client saw: every acknowledged QoS 1 message at least once, QoS 2
//! exactly once, per-publisher order, sessions present after the restart.
//!
//! Skipped ("skipped: no FUSE") where FUSE cannot be mounted. Each scenario prints its
//! counts: `cargo test -p raftmq --test cluster -- t75 --nocapture`.

use std::time::Duration;

use crate::support::checker::{Checker, Load};
use crate::support::cluster::{Cluster, CLUSTER_TIMEOUT};
use crate::t70_failover::{bounded, others};

/// Acknowledgements before the cut: a few seconds of load.
const PROGRESS: usize = 30;
/// Faster than the failover load, so that the last half second before a cut (sled's
/// own fsync interval) holds several acknowledged messages.
const PACE: Duration = Duration::from_millis(20);
/// With an offline subscriber every message is queued for it (the queue cap allows
/// 900 in all); a slower pace keeps the load going for the whole scenario.
const OFFLINE_PACE: Duration = Duration::from_millis(60);

fn online(nodes: &[u64]) -> Load {
    let mut load = Load::spread(nodes);
    load.pace = PACE;
    load
}

fn offline(nodes: &[u64], home: u64) -> Load {
    let mut load = Load::spread(nodes).offline_subscriber(home);
    load.pace = OFFLINE_PACE;
    load
}

/// Cuts the power of `victims` under load, starts them again, and checks.
async fn power_cut(mut c: Cluster, name: &str, load: Load, victims: &[u64]) {
    let checker = Checker::start(&c, name, load).await;
    checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
    // Right after an acknowledgement: what it promised must be on disk already.
    checker.wait_next_ack(CLUSTER_TIMEOUT).await;
    let acked = checker.acked();
    c.power_loss(victims);
    println!("[{name}] power cut of nodes {victims:?} after {acked} acknowledged messages");
    let survivors: Vec<u64> = c
        .ids()
        .into_iter()
        .filter(|id| !victims.contains(id))
        .collect();
    if survivors.len() * 2 > c.ids().len() {
        // The majority carries on while the victims are dark.
        c.wait_leader_of(&survivors).await;
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
    }
    for &id in victims {
        c.relaunch(id);
    }
    for &id in victims {
        c.wait_answering(id).await;
    }
    c.wait_leader().await;
    checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
    checker.finish().await;
}

#[tokio::test]
async fn every_node_loses_power_subscribers_online() {
    let name = "power: every node, subscribers online";
    bounded(name, async {
        let Some(c) = Cluster::start_on_powerfs(3).await else {
            return;
        };
        let load = online(&c.ids());
        let all = c.ids();
        power_cut(c, name, load, &all).await;
    })
    .await
}

#[tokio::test]
async fn every_node_loses_power_subscribers_offline() {
    let name = "power: every node, subscribers offline";
    bounded(name, async {
        let Some(c) = Cluster::start_on_powerfs(3).await else {
            return;
        };
        let load = offline(&c.ids(), 2).offline_subscriber(3);
        let all = c.ids();
        power_cut(c, name, load, &all).await;
    })
    .await
}

#[tokio::test]
async fn the_leader_loses_power() {
    let name = "power: the leader";
    bounded(name, async {
        let Some(c) = Cluster::start_on_powerfs(3).await else {
            return;
        };
        let leader = c.wait_leader().await;
        let load = offline(&c.ids(), others(&c, leader)[0]);
        power_cut(c, name, load, &[leader]).await;
    })
    .await
}

#[tokio::test]
async fn a_follower_loses_power() {
    let name = "power: a follower";
    bounded(name, async {
        let Some(c) = Cluster::start_on_powerfs(3).await else {
            return;
        };
        let leader = c.wait_leader().await;
        let follower = others(&c, leader)[0];
        let load = offline(&c.ids(), leader);
        power_cut(c, name, load, &[follower]).await;
    })
    .await
}

#[tokio::test]
async fn a_single_node_loses_power_subscriber_online() {
    let name = "power: single node, subscriber online";
    bounded(name, async {
        let Some(c) = Cluster::start_on_powerfs(1).await else {
            return;
        };
        let load = online(&c.ids());
        power_cut(c, name, load, &[1]).await;
    })
    .await
}

#[tokio::test]
async fn a_single_node_loses_power_subscriber_offline() {
    let name = "power: single node, subscriber offline";
    bounded(name, async {
        let Some(c) = Cluster::start_on_powerfs(1).await else {
            return;
        };
        let load = offline(&c.ids(), 1);
        power_cut(c, name, load, &[1]).await;
    })
    .await
}
