//! Partitions that are not clean splits (issue 11): one link cut while a third node
//! still sees both ends, one-way partitions, and a ring where each node sees a
//! different majority. The checker verifies safety (nothing acknowledged lost, QoS 2
//! once, order) and the scenarios liveness: the load keeps being acknowledged, and
//! no subscriber waits long on a node that the cluster has stopped serving.

use std::time::Duration;

use crate::support::checker::{Checker, Load};
use crate::support::cluster::{Cluster, CLUSTER_TIMEOUT};
use crate::support::codec::{prop, Connect, Packet, PropVal, Version};
use crate::support::raw::Raw;
use crate::t70_failover::{bounded, others};

/// Acknowledgements that show the load goes on.
const PROGRESS: usize = 30;
/// How long a fault is held: several node-down times (3 s).
const HOLD: Duration = Duration::from_secs(12);
/// Bound on a subscriber's wait between two new messages while a node is cut off
/// from the leader (node-down time 3 s, then a reconnect elsewhere).
const MAX_GAP: Duration = Duration::from_secs(5);

/// Holds a fault for [`HOLD`] while checking that the load goes on.
async fn hold(checker: &Checker) {
    let until = tokio::time::Instant::now() + HOLD;
    while tokio::time::Instant::now() < until {
        checker.wait_acked(5, CLUSTER_TIMEOUT).await;
    }
}

/// The link between the leader and a follower is cut both ways; the third node sees
/// both. The follower hears no leader, so after the node-down time it closes its
/// clients' connections (5.0: DISCONNECT 0x9C with a Server Reference to a node it
/// still hears) and its subscriber resumes elsewhere: no subscriber starves.
#[tokio::test]
async fn a_cut_link_starves_no_subscriber() {
    let name = "partitions: leader-follower link cut";
    bounded(name, async {
        let c = Cluster::start(3).await;
        let leader = c.wait_leader().await;
        let victim = others(&c, leader)[0];
        let third = others(&c, leader)[1];
        let load = Load::spread(&c.ids());
        let checker = Checker::start(&c, name, load).await;
        let (mut watcher, _) = Raw::connect(
            c.node(victim).mqtt,
            &Connect::persistent(Version::V5, "cut-watcher"),
        )
        .await;
        c.wait_applied().await;
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        c.cut(&[(leader, victim), (victim, leader)]);
        let cut_at = tokio::time::Instant::now();
        let seen = watcher.expect_closed(Duration::from_secs(10)).await;
        let took = cut_at.elapsed().as_secs_f32();
        let disconnect = seen.iter().find_map(|p| match p {
            Packet::Disconnect { reason, props } => Some((*reason, props.clone())),
            _ => None,
        });
        let (reason, props) = disconnect.expect("a DISCONNECT before the close");
        assert_eq!(reason, 0x9C, "use another server");
        let third_addr = c.node(third).mqtt.to_string();
        assert_eq!(
            props.get(prop::SERVER_REFERENCE),
            Some(&PropVal::Str(third_addr.clone())),
            "the Server Reference names the node that still hears both"
        );
        println!("[{name}] node {victim} closed its clients {took:.1}s after the cut, sent to {third_addr}");
        // A new client is turned away at once, to the same node.
        match Raw::try_connect(
            c.node(victim).mqtt,
            &Connect::new(Version::V5, "cut-newcomer"),
            Duration::from_secs(2),
        )
        .await
        {
            Ok((_, Packet::Connack { code, props, .. })) => {
                assert_eq!(code, 0x9C, "CONNACK use another server");
                assert_eq!(
                    props.get(prop::SERVER_REFERENCE),
                    Some(&PropVal::Str(third_addr))
                );
            }
            other => panic!("CONNECT to a cut-off node: {:?}", other.map(|(_, p)| p)),
        }
        hold(&checker).await;
        c.heal();
        c.wait_ready(victim).await;
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        let report = checker.finish().await;
        assert!(
            report.worst_gap < MAX_GAP,
            "a subscriber waited {:.1}s for a message (bound {MAX_GAP:?})",
            report.worst_gap.as_secs_f32()
        );
    })
    .await
}

/// One-way partitions: a follower's messages to the leader are lost while the
/// leader's reach it, and then the other way round.
#[tokio::test]
async fn one_way_partitions() {
    let name = "partitions: one way";
    bounded(name, async {
        let c = Cluster::start(3).await;
        let leader = c.wait_leader().await;
        let victim = others(&c, leader)[0];
        let load = Load::spread(&c.ids());
        let checker = Checker::start(&c, name, load).await;
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        // The leader hears the follower, the follower does not hear the leader.
        c.cut(&[(leader, victim)]);
        hold(&checker).await;
        c.heal();
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        // The follower hears the leader, the leader does not hear the follower.
        let leader = c.wait_leader().await;
        let victim = others(&c, leader)[0];
        c.cut(&[(victim, leader)]);
        hold(&checker).await;
        c.heal();
        c.wait_leader().await;
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        checker.finish().await;
    })
    .await
}

/// Five nodes in a ring: each keeps the links to its two neighbours only, so each
/// sees a majority (itself and two), a different one for each.
#[tokio::test]
async fn majorities_ring() {
    let name = "partitions: majorities ring";
    bounded(name, async {
        let c = Cluster::start(5).await;
        let load = Load::spread(&c.ids());
        let checker = Checker::start(&c, name, load).await;
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        let mut cut = Vec::new();
        for a in 1..=5u64 {
            for b in 1..=5u64 {
                let adjacent = (a % 5) + 1 == b || (b % 5) + 1 == a;
                if a != b && !adjacent {
                    cut.push((a, b));
                }
            }
        }
        c.cut(&cut);
        hold(&checker).await;
        c.heal();
        c.wait_leader().await;
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        checker.finish().await;
    })
    .await
}
