//! Failures: a node killed with SIGKILL comes back from its data dir into the same
//! cluster; a whole cluster killed and restarted is one cluster again, with its state.

use std::time::Duration;

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

/// An operator's `raftmq cluster snapshot` on a follower: the node stores a snapshot of
/// what it has applied and reports its cost (`/cluster`'s `snapshot` too). Killed and
/// restarted once its log is purged behind its snapshots (every 30 entries here), the
/// node starts from a snapshot plus the log after it, and an offline persistent
/// session's messages, queued before and after the operator's snapshot, all arrive.
#[tokio::test]
async fn operator_snapshot_is_stored_and_the_node_restarts_from_it() {
    let mut c = Cluster::start_with(3, Cluster::empty().with_env("RAFTMQ_SNAPSHOT_LOGS", 30)).await;
    let leader = c.wait_leader().await;
    let follower = (1..=3).find(|&i| i != leader).expect("a follower");
    let mut keeper = v4("snap-keeper")
        .persistent()
        .connect(c.node(follower).mqtt)
        .await;
    keeper.subscribe("keep/#", 1).await;
    keeper.disconnect().await;
    let mut p = v4("snap-pub").connect(c.node(leader).mqtt).await;
    for i in 0..20u32 {
        p.publish("keep/a", 1, false, format!("before-{i}").as_bytes())
            .await;
    }
    c.wait_applied().await;
    let applied = c.status(follower).await["applied_index"]
        .as_u64()
        .expect("an applied index");

    let builds = c.status(follower).await["snapshot"]["builds"]
        .as_u64()
        .expect("snapshot figures");
    let http = c.node(follower).http.to_string();
    let token = c.token_file().display().to_string();
    let args = [
        "cluster",
        "snapshot",
        "--http",
        &http,
        "--admin-token-file",
        &token,
    ];
    let out = c.run(&args, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("stored a snapshot of"),
        "cluster snapshot: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = c.status(follower).await;
    let figures = &status["snapshot"];
    assert!(figures["builds"].as_u64() > Some(builds), "{status}");
    assert!(figures["last_bytes"].as_u64() > Some(100), "{status}");
    assert!(
        status["snapshot_index"].as_u64() >= Some(applied),
        "the snapshot covers what was applied before it: {status}"
    );

    for i in 0..60u32 {
        p.publish("keep/a", 1, false, format!("after-{i}").as_bytes())
            .await;
    }
    c.wait_applied().await;
    c.wait_until(
        "the follower purged its log",
        CLUSTER_TIMEOUT,
        |c| async move { c.status(follower).await["purged_index"].as_u64() > Some(applied) },
    )
    .await;
    c.kill(follower);
    c.restart(follower).await;
    c.wait_applied().await;
    let mut keeper = v4("snap-keeper")
        .persistent()
        .connect(c.node(follower).mqtt)
        .await;
    let mut got = Vec::new();
    while got.len() < 80 {
        got.push(String::from_utf8_lossy(&recv_data(&mut keeper).await.payload).into_owned());
    }
    let want: Vec<String> = (0..20)
        .map(|i| format!("before-{i}"))
        .chain((0..60).map(|i| format!("after-{i}")))
        .collect();
    assert_eq!(got, want);
}
