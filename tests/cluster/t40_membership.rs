//! Membership changes: a node joins a running cluster and becomes a voter; the CLI
//! removes it again.

use std::time::Duration;

use crate::support::client::v4;
use crate::support::cluster::{members_of, recv_data, wait_route, Cluster, CLUSTER_TIMEOUT};

#[tokio::test]
async fn fourth_node_joins_then_is_removed() {
    let mut c = Cluster::start(3).await;
    let id = c.add_node().await;
    assert_eq!(id, 4);
    c.wait_voters(&[1, 2, 3, 4], &[1, 2, 3, 4]).await;
    let s = c.status(1).await;
    let four = s["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["id"] == 4))
        .unwrap_or_else(|| panic!("node 4 not listed: {s}"));
    assert_eq!(four["cluster_addr"], c.node(4).cluster.to_string(), "{s}");
    assert_eq!(four["mqtt_addr"], c.node(4).mqtt.to_string(), "{s}");

    // The new node routes like the others.
    let mut sub = v4("sub-4").connect(c.node(4).mqtt).await;
    sub.subscribe("mb/#", 1).await;
    let mut p = v4("pub-1").connect(c.node(1).mqtt).await;
    wait_route(&mut p, &mut sub, "mb/probe").await;
    p.publish("mb/x", 1, false, b"to four").await;
    assert_eq!(recv_data(&mut sub).await.payload, b"to four");
    drop(sub);

    let http = c.node(1).http.to_string();
    let token = c.token_file().display().to_string();
    let out = c.run(
        &[
            "cluster",
            "remove",
            "4",
            "--http",
            &http,
            "--admin-token-file",
            &token,
        ],
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "cluster remove 4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait_voters(&[1, 2, 3], &[1, 2, 3]).await;
    c.kill(4);
    c.wait_leader().await;
    let mut sub = v4("sub-2").connect(c.node(2).mqtt).await;
    sub.subscribe("mb/#", 1).await;
    wait_route(&mut p, &mut sub, "mb/probe").await;
    p.publish("mb/y", 1, false, b"to two").await;
    assert_eq!(recv_data(&mut sub).await.payload, b"to two");
}

/// Three fresh nodes started at the same moment join a 3-node cluster: their
/// membership changes reach the leader together, one at a time. All of them end up
/// voters, listed by every node.
#[tokio::test]
async fn concurrent_joiners_all_become_members() {
    let mut c = Cluster::start(3).await;
    let joiners = c.spawn_joiners(3);
    assert_eq!(joiners, [4, 5, 6]);
    c.wait_joined(&joiners).await;
    let all = c.ids();
    c.wait_voters(&all, &all).await;
    c.wait_leader().await;
}

/// Three fresh nodes start joining while the leader is cut off from the other voters
/// (the joiners still reach it): it begins adding one, cannot commit, and the majority
/// elects another leader. Once the cut heals, the old leader learns it was deposed and
/// its change is undone (openraft answers `ForwardToLeader` with the new leader), and
/// the joiners find the new leader busy with their colleagues' changes. Each must
/// follow, wait and ask again until it is a member, not give up ("has to forward
/// request to: Some(2)" was a fatal error).
#[tokio::test]
async fn joiners_follow_a_leader_that_moves_mid_join() {
    let mut c = Cluster::start(3).await;
    let old = c.wait_leader().await;
    let majority: Vec<u64> = c.ids().into_iter().filter(|&id| id != old).collect();
    c.isolate(old);
    let joiners = c.spawn_joiners(3);
    // The old leader has begun adding a joiner (an uncommitted learner in its
    // membership), and the majority has a new leader.
    c.wait_until(
        "the cut-off leader to begin adding a joiner",
        CLUSTER_TIMEOUT,
        |c| {
            let joiners = joiners.clone();
            async move {
                let Ok(s) = c.try_status(old).await else {
                    return false;
                };
                let (members, _) = members_of(&s);
                members.iter().any(|m| joiners.contains(m))
            }
        },
    )
    .await;
    let new = c.wait_leader_of(&majority).await;
    assert_ne!(new, old);
    c.heal();
    c.wait_joined(&joiners).await;
    let all = c.ids();
    c.wait_voters(&all, &all).await;
    c.wait_leader().await;
}
