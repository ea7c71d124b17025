//! Failures: a node killed with SIGKILL comes back from its data dir into the same
//! cluster; a whole cluster killed and restarted is one cluster again, with its state.

use crate::support::client::v4;
use crate::support::cluster::{members_of, recv_data, wait_route, Cluster, CLUSTER_TIMEOUT};

/// Asserts that every node lists the same three voters.
async fn assert_three_voters(c: &Cluster) {
    for id in 1..=3 {
        let s = c.status(id).await;
        assert_eq!(
            members_of(&s),
            (vec![1, 2, 3], vec![1, 2, 3]),
            "node {id}: {s}"
        );
    }
}

/// The leader is killed; the other two elect a new one and take a retained message
/// meanwhile; the old leader restarts from its data dir, is ready again in the same
/// cluster, has caught up (the retained message) and serves pub/sub.
#[tokio::test]
async fn killed_node_rejoins_from_its_data_dir() {
    let mut c = Cluster::start(3).await;
    let victim = c.wait_leader().await;
    c.kill(victim);
    let survivor = c.wait_leader().await;
    assert_ne!(survivor, victim, "a new leader among the survivors");
    let mut p = v4("pub").connect(c.node(survivor).mqtt).await;
    p.publish("kr/while-down", 1, true, b"missed").await;

    c.restart(victim).await;
    c.wait_leader().await;
    assert_three_voters(&c).await;

    // Ready means caught up: the retained message is there at once.
    let mut sub = v4("back").connect(c.node(victim).mqtt).await;
    sub.subscribe("kr/#", 1).await;
    let m = sub.recv().await;
    assert_eq!((m.payload.as_slice(), m.retain), (&b"missed"[..], true));
    wait_route(&mut p, &mut sub, "kr/probe").await;
    p.publish("kr/live", 1, false, b"live").await;
    assert_eq!(recv_data(&mut sub).await.payload, b"live");
}

/// All three nodes are killed and restarted in reverse order: one cluster again (all
/// name the same leader and list the same three voters, never three clusters of one),
/// and the retained message, the persistent session, its subscription and the message
/// queued for it while offline are all still there.
#[tokio::test]
async fn cold_restart_is_one_cluster_with_its_state() {
    let mut c = Cluster::start(3).await;
    let mut p = v4("pub").connect(c.node(1).mqtt).await;
    p.publish("cr/retained", 1, true, b"kept").await;
    let mut s = v4("durable").persistent().connect(c.node(2).mqtt).await;
    s.subscribe("cr/q/#", 1).await;
    s.disconnect().await;
    c.wait_applied().await;
    p.publish("cr/q/1", 1, false, b"queued").await;
    drop(p);

    for id in 1..=3 {
        c.kill(id);
    }
    // Each one up (without a quorum at first) before the next; node 1, which
    // bootstrapped the cluster, comes last.
    for id in [3, 2, 1] {
        c.relaunch(id);
        c.wait_answering(id).await;
    }
    c.wait_leader().await;
    assert_three_voters(&c).await;

    let mut s = v4("durable").persistent().connect(c.node(2).mqtt).await;
    assert!(s.session_present, "the persistent session survived");
    assert_eq!(recv_data(&mut s).await.payload, b"queued");
    let mut p = v4("pub").connect(c.node(3).mqtt).await;
    wait_route(&mut p, &mut s, "cr/q/probe").await;
    p.publish("cr/q/2", 1, false, b"after").await;
    assert_eq!(recv_data(&mut s).await.payload, b"after");

    let mut late = v4("late").connect(c.node(3).mqtt).await;
    late.subscribe("cr/retained", 1).await;
    let m = late.recv().await;
    assert_eq!((m.payload.as_slice(), m.retain), (&b"kept"[..], true));
}

/// A follower is down while the others commit more than a snapshot interval (nodes run
/// with `RAFTMQ_SNAPSHOT_LOGS=100`) and purge their logs behind the snapshot: restarted,
/// it can only catch up by installing the leader's snapshot, and does, state included.
#[tokio::test]
async fn node_behind_a_purged_log_catches_up_by_snapshot() {
    let mut c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    let follower = (1..=3).find(|&i| i != leader).expect("a follower");
    let had = c.status(follower).await["last_log_index"]
        .as_u64()
        .unwrap_or(0);
    c.kill(follower);
    let mut p = v4("pub").connect(c.node(leader).mqtt).await;
    // Each retained QoS 1 publish is one committed entry, acknowledged after commit.
    for i in 0..250u32 {
        p.publish(&format!("sn/{i}"), 1, true, i.to_string().as_bytes())
            .await;
    }
    // openraft purges only while no replication to the dead follower has those
    // entries in flight, so the purge may come a little after the snapshot.
    c.wait_until(
        "the leader purged its log past the follower's last entry",
        CLUSTER_TIMEOUT,
        |c| async move {
            let purged = c.status(leader).await["purged_index"].as_u64();
            purged.is_some_and(|p| p > had)
        },
    )
    .await;
    let purged = c.status(leader).await["purged_index"].as_u64();
    c.restart(follower).await;
    c.wait_applied().await;
    let status = c.status(follower).await;
    let snapshot = status["snapshot_index"].as_u64();
    assert!(
        snapshot.is_some_and(|s| s >= purged.unwrap_or(0)),
        "the restarted node holds a snapshot covering the purged entries: {status}"
    );
    let mut sub = v4("snap-reader").connect(c.node(follower).mqtt).await;
    sub.subscribe("sn/#", 0).await;
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 250 {
        let m = sub.recv().await;
        assert!(m.retain);
        seen.insert(m.topic);
    }
}
