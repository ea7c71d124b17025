//! Wall-clock jumps (issue 11): the nodes run under libfaketime, and their wall
//! clocks jump an hour forward, then an hour back, while a session's expiry and a
//! dead node's client's will delay run. Neither may happen early (nor hours late):
//! the leader measures how long a session has been offline on its monotonic clock.
//! Skipped ("skipped: no libfaketime") where Debian's libfaketime is not installed.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::support::cluster::{Cluster, CLUSTER_TIMEOUT};
use crate::support::codec::{self, prop, Connect, Packet, PropVal, Props, Version};
use crate::support::raw::{Raw, Recv};
use crate::support::roaming;
use crate::t70_failover::{bounded, others};

/// The session's expiry and the will's delay, in seconds.
const EXPIRY: u32 = 12;
const WILL_DELAY: u32 = 8;

fn event(status: &Value, name: &str) -> u64 {
    status["events"][name].as_u64().unwrap_or(0)
}

/// Reads what `watcher` gets for `wait`; panics on anything but silence.
async fn expect_no_will(watcher: &mut Raw, wait: Duration, when: &str) {
    match watcher.try_recv(wait).await {
        Recv::Timeout => {}
        other => panic!("{when}: the will came early: {other:?}"),
    }
}

#[tokio::test]
async fn wall_clock_jumps_expire_nothing_early() {
    bounded("clock jumps", async {
        let Some(mut c) = Cluster::start_with_faketime(3).await else {
            return;
        };
        let leader = c.wait_leader().await;
        let [home, doomed] = others(&c, leader)[..] else {
            panic!("three nodes")
        };
        let (mut watcher, _) =
            Raw::connect(c.node(leader).mqtt, &Connect::new(Version::V5, "watcher")).await;
        watcher.subscribe("will/#", 1).await;

        // A client with a delayed will on the node that will die.
        let mut willer = Connect::new(Version::V5, "willer");
        willer.keep_alive = 0;
        willer.props = Props::new().with(prop::SESSION_EXPIRY, PropVal::U32(3600));
        let mut will = roaming::will("will/willer", b"gone");
        will.props = Props::new().with(prop::WILL_DELAY, PropVal::U32(WILL_DELAY));
        willer.will = Some(will);
        let (_willer, _) = Raw::connect(c.node(doomed).mqtt, &willer).await;
        // A persistent session that ends cleanly: its expiry runs from now.
        let mut expiring = Connect::persistent(Version::V5, "expiring");
        expiring.props = Props::new().with(prop::SESSION_EXPIRY, PropVal::U32(EXPIRY));
        let (mut session, _) = Raw::connect(c.node(home).mqtt, &expiring).await;
        session.subscribe("x/#", 1).await;
        c.wait_applied().await;
        session
            .send(&codec::disconnect(Version::V5, 0, &Props::new()))
            .await;
        let released = Instant::now();
        c.kill(doomed);
        let killed = Instant::now();
        c.wait_until(
            "the leader declares the dead node",
            CLUSTER_TIMEOUT,
            |c| async move {
                c.try_status(leader)
                    .await
                    .is_ok_and(|s| event(&s, "nodes_down") >= 1)
            },
        )
        .await;
        let expired_before = event(&c.status(leader).await, "sessions_expired");

        // An hour forward on every live node, the leader included.
        for id in c.running() {
            c.set_clock(id, "+1h");
        }
        expect_no_will(&mut watcher, Duration::from_secs(3), "an hour forward").await;
        let status = c.status(leader).await;
        assert_eq!(
            event(&status, "sessions_expired"),
            expired_before,
            "expired early"
        );
        assert_eq!(event(&status, "wills_published"), 0, "will published early");
        // And an hour back.
        for id in c.running() {
            c.set_clock(id, "-1h");
        }
        expect_no_will(&mut watcher, Duration::from_secs(2), "an hour back").await;
        assert_eq!(
            event(&c.status(leader).await, "sessions_expired"),
            expired_before,
            "expired early"
        );

        // Both happen in their time all the same: not early, not an hour late.
        let will_at = loop {
            match watcher.try_recv(CLUSTER_TIMEOUT).await {
                Recv::Packet(Packet::Publish(p)) if p.topic_str() == "will/willer" => {
                    break killed.elapsed();
                }
                Recv::Packet(_) => {}
                other => panic!("no will within {CLUSTER_TIMEOUT:?}: {other:?}"),
            }
        };
        c.wait_until("the session expires", CLUSTER_TIMEOUT, |c| async move {
            c.try_status(leader)
                .await
                .is_ok_and(|s| event(&s, "sessions_expired") > expired_before)
        })
        .await;
        let expired_at = released.elapsed();
        println!(
            "[clock jumps] will published {:.1}s after its node died (delay {WILL_DELAY}s, \
             node-down 3s); session expired {:.1}s after it ended (expiry {EXPIRY}s)",
            will_at.as_secs_f32(),
            expired_at.as_secs_f32()
        );
        assert!(will_at >= Duration::from_secs(u64::from(WILL_DELAY)));
        assert!(expired_at >= Duration::from_secs(u64::from(EXPIRY)));
    })
    .await
}

/// A node restarted with its wall clock a day behind (a device without a real-time clock
/// boots before NTP answers) still gets its clients' claims committed: its run number,
/// which orders its proposer's batches, stays above its last run's.
#[tokio::test]
async fn a_node_restarted_with_its_clock_behind_serves() {
    bounded("clock behind after a restart", async {
        let Some(mut c) = Cluster::start_with_faketime(3).await else {
            return;
        };
        let leader = c.wait_leader().await;
        let node = others(&c, leader)[0];
        // Batches from this node's first run, committed.
        let (_before, _) = Raw::connect(
            c.node(node).mqtt,
            &Connect::persistent(Version::V5, "before"),
        )
        .await;
        c.wait_applied().await;
        c.kill(node);
        c.set_clock(node, "-1d");
        c.restart(node).await;
        let (_raw, first) = Raw::connect_with(
            c.node(node).mqtt,
            &Connect::persistent(Version::V5, "after"),
        )
        .await;
        assert!(
            matches!(first, Recv::Packet(Packet::Connack { code: 0, .. })),
            "a client of the node whose clock went back: {first:?}"
        );
    })
    .await
}
