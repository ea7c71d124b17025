//! Pauses (issue 11): a node stopped with SIGSTOP keeps its sockets open but answers
//! nothing, as a stalled VM or a long GC pause does; its clients give up on it and
//! take their sessions over on other nodes. When it resumes (SIGCONT) it must act for
//! none of the sessions it lost: the checker fails the run on anything it sends on a
//! connection its client has left (a PUBLISH, an acknowledgement), besides the usual
//! checks (nothing acknowledged lost, QoS 2 once, order, sessions present).

use std::time::Duration;

use crate::support::checker::{Checker, Load};
use crate::support::cluster::{Cluster, CLUSTER_TIMEOUT};
use crate::t70_failover::{bounded, others};

const PROGRESS: usize = 30;
/// Longer than the election timeout and than the node-down time (3 s).
const PAUSE: Duration = Duration::from_secs(6);

/// Pauses `victim` under load for [`PAUSE`] while its clients move away, then resumes
/// it and checks.
async fn pause_scenario(name: &str, c: Cluster, victim: u64, load: Load) {
    let checker = Checker::start(&c, name, load).await;
    checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
    // Right after an acknowledgement: the next messages are on their way.
    checker.wait_next_ack(CLUSTER_TIMEOUT).await;
    c.pause(victim);
    checker.avoid(Some(c.node(victim).mqtt));
    let paused_at = tokio::time::Instant::now();
    let survivors = others(&c, victim);
    let leader = c.wait_leader_of(&survivors).await;
    println!(
        "[{name}] node {victim} paused; node {leader} leads after {:.1}s",
        paused_at.elapsed().as_secs_f32()
    );
    // The load goes on without it for the rest of the pause.
    while paused_at.elapsed() < PAUSE {
        checker.wait_acked(5, CLUSTER_TIMEOUT).await;
    }
    // Silence is checked from the resume on. A stopped process writes nothing, so
    // whatever its old connections yield during the pause was written before it: bytes
    // still in the sockets' buffers, which a client busy leaving reads late. (Timed from
    // the pause, a loaded machine failed the run on such a PUBLISH, written before the
    // SIGSTOP and read 1 packet late.)
    checker.silent_superseded_from_now();
    c.resume(victim);
    c.wait_ready(victim).await;
    checker.avoid(None);
    checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
    checker.finish().await;
}

/// The leader is paused for longer than the election timeout: the others elect a new
/// one; resumed, the old leader acknowledges and delivers nothing for the sessions its
/// clients took elsewhere.
#[tokio::test]
async fn pause_the_leader() {
    let name = "pause: the leader";
    bounded(name, async {
        let c = Cluster::start(3).await;
        let leader = c.wait_leader().await;
        let load = Load::spread(&c.ids()).wills_on(&[leader]);
        pause_scenario(name, c, leader, load).await;
    })
    .await
}

/// A follower that serves persistent subscribers and a publisher is paused; they take
/// their sessions over on the other nodes meanwhile.
#[tokio::test]
async fn pause_a_session_owner() {
    let name = "pause: a session owner";
    bounded(name, async {
        let c = Cluster::start(3).await;
        let leader = c.wait_leader().await;
        let victim = others(&c, leader)[0];
        let mut load = Load::spread(&c.ids());
        // Every publisher starts on the victim, and publishes fast: some of their
        // messages are in flight when it stops.
        for p in &mut load.publishers {
            p.home = victim;
        }
        load.pace = Duration::from_millis(10);
        pause_scenario(name, c, victim, load).await;
    })
    .await
}
