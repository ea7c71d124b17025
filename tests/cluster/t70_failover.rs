//! Failover under load (issue 5): nodes are killed, restarted and cut off while
//! publishers and persistent subscribers keep going, and the checker
//! (tests/support/checker.rs) then verifies no acknowledged message was lost, QoS 2 was
//! delivered exactly once, per-publisher order held, sessions followed their clients,
//! superseded connections were closed, and wills were published once.
//!
//! Each scenario is bounded by [`SCENARIO_TIMEOUT`] and prints one line of counts
//! (`cargo test -p raftmq --test cluster -- t70 --nocapture` shows them).

use std::future::Future;
use std::time::Duration;

use crate::support::checker::{Checker, Load, PubSpec};
use crate::support::cluster::{Cluster, CLUSTER_TIMEOUT};
use crate::support::codec::{Connect, Packet, Publish, Version};
use crate::support::raw::{Raw, Recv};

/// Bound on a whole scenario.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);
/// Acknowledgements that show the load goes on (a few seconds of load).
const PROGRESS: usize = 30;
/// Bound on the cluster publishing the wills of a dead node's clients.
const WILL_BOUND: Duration = Duration::from_secs(20);

/// Runs a scenario within [`SCENARIO_TIMEOUT`].
pub async fn bounded(name: &str, scenario: impl Future<Output = ()>) {
    if tokio::time::timeout(SCENARIO_TIMEOUT, scenario)
        .await
        .is_err()
    {
        panic!("{name}: not finished within {SCENARIO_TIMEOUT:?}");
    }
}

pub fn others(c: &Cluster, id: u64) -> Vec<u64> {
    c.ids().into_iter().filter(|&i| i != id).collect()
}

fn a_follower(c: &Cluster, leader: u64) -> u64 {
    others(c, leader)[0]
}

/// A follower dies under load and comes back: nothing acknowledged is lost, its
/// clients move to the other nodes with their sessions, its client's will is published.
#[tokio::test]
async fn kill_a_follower() {
    bounded("kill a follower", async {
        let mut c = Cluster::start(3).await;
        let victim = a_follower(&c, c.wait_leader().await);
        let load = Load::spread(&c.ids()).wills_on(&[victim]);
        let checker = Checker::start(&c, "kill a follower", load).await;
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        c.kill(victim);
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        checker.wait_wills(WILL_BOUND).await;
        c.restart(victim).await;
        c.wait_leader().await;
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        checker.finish().await;
    })
    .await
}

/// The leader dies under load: the others elect a leader and take over its clients.
#[tokio::test]
async fn kill_the_leader() {
    bounded("kill the leader", async {
        let mut c = Cluster::start(3).await;
        let victim = c.wait_leader().await;
        let load = Load::spread(&c.ids()).wills_on(&[victim]);
        let checker = Checker::start(&c, "kill the leader", load).await;
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        c.kill(victim);
        let leader = c.wait_leader_of(&others(&c, victim)).await;
        assert_ne!(leader, victim);
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        checker.wait_wills(WILL_BOUND).await;
        c.restart(victim).await;
        c.wait_leader().await;
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        checker.finish().await;
    })
    .await
}

/// Five nodes, the leader and a follower die: the three left are a majority and carry
/// the whole load, the clients of both dead nodes included.
#[tokio::test]
async fn kill_two_of_five() {
    bounded("kill two of five", async {
        let mut c = Cluster::start(5).await;
        let leader = c.wait_leader().await;
        let victims = [leader, a_follower(&c, leader)];
        let load = Load::spread(&c.ids()).wills_on(&victims);
        let checker = Checker::start(&c, "kill two of five", load).await;
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        for v in victims {
            c.kill(v);
        }
        let rest: Vec<u64> = c.running();
        c.wait_leader_of(&rest).await;
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        checker.wait_wills(WILL_BOUND).await;
        checker.finish().await;
    })
    .await
}

/// The leader is cut off from the others (its process and its clients' connections
/// stay up): the majority elects a leader and takes the load (publishers on the old
/// leader get refusals and move), publishes the wills of the cut-off node's clients;
/// after the heal the old leader follows, and closes the connections whose sessions
/// moved meanwhile.
#[tokio::test]
async fn partition_the_leader_away() {
    bounded("partition the leader away", async {
        let c = Cluster::start(3).await;
        let old = c.wait_leader().await;
        partition_scenario(c, old, "partition the leader away", false).await;
    })
    .await
}

/// A follower is cut off from the others, then the cut heals; as above.
#[tokio::test]
async fn partition_a_follower() {
    bounded("partition a follower", async {
        let c = Cluster::start(3).await;
        let victim = a_follower(&c, c.wait_leader().await);
        partition_scenario(c, victim, "partition a follower", false).await;
    })
    .await
}

/// A follower is cut off until the majority has purged its log past the follower's
/// last entry and past the entry declaring it dead (nodes snapshot every 100 entries
/// in the tests): after the heal it can only catch up by installing a snapshot, and
/// must still close the connections of its clients, whose sessions went offline when
/// it was declared dead, so that they reconnect and get their queued messages.
#[tokio::test]
async fn partition_outlasting_the_log() {
    bounded("partition outlasting the log", async {
        let c = Cluster::start(3).await;
        let victim = a_follower(&c, c.wait_leader().await);
        partition_scenario(c, victim, "partition outlasting the log", true).await;
    })
    .await
}

/// Cuts `victim` off under load, checks the majority carries on and publishes the
/// wills, optionally keeps the cut until the majority's log is purged past the
/// victim's, heals, and verifies.
async fn partition_scenario(c: Cluster, victim: u64, name: &str, outlast_log: bool) {
    let load = Load::spread(&c.ids()).wills_on(&[victim]);
    let checker = Checker::start(&c, name, load).await;
    checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
    c.isolate(victim);
    let majority = others(&c, victim);
    let leader = c.wait_leader_of(&majority).await;
    assert_ne!(leader, victim, "a leader on the majority side");
    checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
    checker.wait_wills(WILL_BOUND).await;
    if outlast_log {
        // Past the victim's last entry and past its being declared dead (the wills
        // came after that): the victim gets both from a snapshot only.
        let mark = c.status(leader).await["commit_index"].as_u64();
        let what = format!("the majority to purge its log past index {mark:?}");
        c.wait_until(&what, CLUSTER_TIMEOUT, |c| async move {
            let purged = c.status(leader).await["purged_index"].as_u64();
            purged > mark
        })
        .await;
    }
    c.heal();
    c.wait_leader().await;
    checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
    checker.finish().await;
}

/// Every node in turn is killed and restarted (ready before the next one goes), under
/// load; each node's will client has its will published once.
#[tokio::test]
async fn rolling_restart() {
    bounded("rolling restart", async {
        let mut c = Cluster::start(3).await;
        let load = Load::spread(&c.ids()).wills_on(&c.ids());
        let checker = Checker::start(&c, "rolling restart", load).await;
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        for id in c.ids() {
            c.kill(id);
            c.wait_leader_of(&others(&c, id)).await;
            checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
            c.restart(id).await;
            c.wait_leader().await;
        }
        checker.wait_wills(WILL_BOUND).await;
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        checker.finish().await;
    })
    .await
}

/// All nodes die at once under load and start again: the persistent sessions are
/// there (session present on every reconnect), the load resumes, and an offline
/// subscriber gets everything acknowledged, before and after, from its durable queue.
#[tokio::test]
async fn cold_restart() {
    bounded("cold restart", async {
        let mut c = Cluster::start(3).await;
        let load = Load::spread(&c.ids()).offline_subscriber(2);
        let checker = Checker::start(&c, "cold restart", load).await;
        // Enough for the offline subscriber's queue to matter.
        checker.wait_acked(5 * PROGRESS, CLUSTER_TIMEOUT).await;
        for id in c.ids() {
            c.kill(id);
        }
        for id in c.ids().into_iter().rev() {
            c.relaunch(id);
            c.wait_answering(id).await;
        }
        c.wait_leader().await;
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        checker.finish().await;
    })
    .await
}

/// Two of three nodes die: the survivor cannot commit, so it refuses new connections
/// and acknowledges nothing (5.0 publishers get 0x80, 3.1.1 ones are disconnected);
/// cut off for longer than the node-down time, it closes every client connection
/// (5.0: 0x9C) and turns new ones away at once; once the two are back the load
/// resumes and nothing acknowledged is lost. Node 1 survives; the 5.0 QoS 1 publisher
/// starts there, and a 3.1.1 one is added. A probe client connected to the survivor
/// publishes into the outage.
#[tokio::test]
async fn quorum_loss_then_recovery() {
    bounded("quorum loss", async {
        let mut c = Cluster::start(3).await;
        let leader = c.wait_leader().await;
        let survivor = 1;
        let victims = others(&c, survivor);
        let mut load = Load::spread(&c.ids());
        load.publishers.push(PubSpec {
            id: "p4-q1".into(),
            qos: 1,
            version: Version::V4,
            home: survivor,
        });
        let checker = Checker::start(&c, "quorum loss", load).await;
        // The probe's messages match a persistent session, so each needs a commit.
        let (mut probe_sub, _) = Raw::connect(
            c.node(survivor).mqtt,
            &Connect::persistent(Version::V5, "qp-sub"),
        )
        .await;
        probe_sub.subscribe("qp/#", 1).await;
        let (mut probe, _) = Raw::connect(
            c.node(survivor).mqtt,
            &Connect::persistent(Version::V5, "qp"),
        )
        .await;
        c.wait_applied().await;
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        for &v in &victims {
            c.kill(v);
        }
        println!("quorum loss: leader was {leader}, node {survivor} survives");
        assert_connect_refused(c.node(survivor).mqtt).await;
        // From here on the survivor is known to be unable to commit.
        let acked = checker.acked();
        match probe_publish(&mut probe, 1).await {
            Probe::Acked(reason) => {
                assert!(reason >= 0x80, "probe without quorum: PUBACK {reason:#x}");
                // The failure code ends the flow, and the connection (DISCONNECT
                // 0x80): its client goes on to a node that can commit.
                let reason = probe.expect_closed_reason(CLUSTER_TIMEOUT).await;
                assert_eq!(reason, Some(0x80), "the probe's connection is closed");
            }
            // Cut off past the node-down time: every client is sent away.
            Probe::Closed(reason) => assert_eq!(reason, Some(0x9C), "probe closed"),
            Probe::Unanswered => {}
        }
        // By now the survivor has been cut off for longer than the node-down time:
        // a newcomer is turned away at once (no peer to name: 0x88).
        let started = tokio::time::Instant::now();
        let refused = Raw::try_connect(
            c.node(survivor).mqtt,
            &Connect::new(Version::V5, "late-newcomer"),
            Duration::from_secs(2),
        )
        .await;
        assert!(
            matches!(refused, Ok((_, Packet::Connack { code: 0x88, .. }))),
            "CONNECT to a cut-off node: {:?}",
            refused.map(|(_, p)| p)
        );
        println!(
            "quorum loss: refused at once ({:.2}s) once cut off",
            started.elapsed().as_secs_f32()
        );
        assert_eq!(checker.acked(), acked, "load acknowledged without a quorum");
        for &v in &victims {
            c.relaunch(v);
        }
        c.wait_leader().await;
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        checker.finish().await;
    })
    .await
}

/// How the broker answered a probe's PUBLISH.
enum Probe {
    /// PUBACK with this reason.
    Acked(u8),
    /// The connection closed, after a DISCONNECT with this reason if one came.
    Closed(Option<u8>),
    /// Nothing within 10 s (twice the broker's commit timeout).
    Unanswered,
}

/// Publishes QoS 1 on `qp/probe` and waits for the broker's answer.
async fn probe_publish(c: &mut Raw, pkid: u16) -> Probe {
    let mut p = Publish::new("qp/probe", 1, b"probe");
    p.pkid = pkid;
    c.send(&p.encode(Version::V5)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut disconnect = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.try_recv(left).await {
            Recv::Packet(Packet::Puback(a)) if a.pkid == pkid => return Probe::Acked(a.reason),
            Recv::Packet(Packet::Disconnect { reason, .. }) => disconnect = Some(reason),
            Recv::Packet(_) => {}
            Recv::Timeout => return Probe::Unanswered,
            Recv::Closed => return Probe::Closed(disconnect),
        }
    }
}

/// A fresh client's CONNECT to `addr` is refused (CONNACK >= 0x80). The claim may
/// queue behind a batch of proposals that is itself waiting out the commit timeout
/// (5 s), so the refusal can take two of them; three are allowed.
async fn assert_connect_refused(addr: std::net::SocketAddr) {
    let connect = Connect::new(Version::V5, "newcomer");
    let started = tokio::time::Instant::now();
    match Raw::try_connect(addr, &connect, Duration::from_secs(15)).await {
        Ok((_, Packet::Connack { code, .. })) if code >= 0x80 => {
            let took = started.elapsed().as_secs_f32();
            println!("quorum loss: CONNECT refused with {code:#x} after {took:.1}s");
        }
        other => panic!("CONNECT without quorum: {:?}", other.map(|(_, p)| p)),
    }
}
