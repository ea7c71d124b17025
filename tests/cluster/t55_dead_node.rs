//! What the cluster does for the clients of a node that dies (SIGKILL): their wills
//! are published once, by the cluster, and QoS 2 stays exactly once in both directions
//! when the client carries on at another node.

use std::time::Duration;

use crate::support::client::v5;
use crate::support::cluster::{recv_data, try_recv_data, wait_route, Cluster, CLUSTER_TIMEOUT};
use crate::support::codec::{self, prop, Connect, Packet, PropVal, Props, Publish, Version, Will};
use crate::support::raw::Raw;

/// How long we watch for a second copy of something that must come once.
const NO_SECOND: Duration = Duration::from_secs(2);

/// One of the followers.
async fn a_follower(c: &Cluster) -> u64 {
    let leader = c.wait_leader().await;
    (1..=3).find(|&i| i != leader).expect("a follower")
}

/// The persistent QoS 2 publisher `client_id` connects to `addr` (session present),
/// resends `first` (DUP, same packet id) as MQTT requires after a lost connection, and
/// completes the flow; the PUBCOMP reason.
async fn resend_elsewhere(
    addr: std::net::SocketAddr,
    version: Version,
    client_id: &str,
    first: &Publish,
) -> u8 {
    let (mut publisher, ack) = Raw::connect(addr, &Connect::persistent(version, client_id)).await;
    assert!(
        matches!(
            ack,
            Packet::Connack {
                session_present: true,
                ..
            }
        ),
        "{ack:?}"
    );
    let mut again = first.clone();
    again.dup = true;
    publisher.send(&again.encode(version)).await;
    let rec = publisher.recv_pubrec(first.pkid).await;
    assert!(rec < 0x80, "PUBREC for the resent PUBLISH: {rec:#x}");
    publisher.send(&codec::pubrel(version, first.pkid)).await;
    publisher.recv_pubcomp(first.pkid).await
}

/// A client with a will (no delay) and one with a 2 s will delay are connected to a
/// node that is killed: once the leader declares the node dead, each will reaches a
/// subscriber on another node exactly once, the delayed one not before its delay. The
/// node is declared back after a restart, and no will comes a second time.
#[tokio::test]
async fn wills_of_a_dead_nodes_clients_are_published_once() {
    let mut c = Cluster::start(3).await;
    let victim = a_follower(&c).await;
    let other = (1..=3).find(|&i| i != victim).expect("a survivor");

    let mut watcher = v5("watcher").connect(c.node(other).mqtt).await;
    watcher.subscribe("wl/#", 1).await;
    let will = |topic: &str, payload: &[u8], props| Will {
        topic: topic.into(),
        payload: payload.to_vec(),
        qos: 1,
        retain: false,
        props,
    };
    let mut mortal = Connect::new(Version::V5, "mortal");
    mortal.will = Some(will("wl/mortal", b"gone", Props::new()));
    let mut delayed = Connect::persistent(Version::V5, "delayed");
    let delay = Props::new().with(prop::WILL_DELAY, PropVal::U32(2));
    delayed.will = Some(will("wl/delayed", b"later", delay));
    let (_m, _) = Raw::connect(c.node(victim).mqtt, &mortal).await;
    let (_d, _) = Raw::connect(c.node(victim).mqtt, &delayed).await;
    c.wait_applied().await;

    c.kill(victim);
    let killed = tokio::time::Instant::now();
    let first = tokio::time::timeout(CLUSTER_TIMEOUT, recv_data(&mut watcher))
        .await
        .expect("the will of the dead node's client, within the bound");
    assert_eq!(
        (first.topic.as_str(), first.payload.as_slice()),
        ("wl/mortal", &b"gone"[..])
    );
    let second = tokio::time::timeout(CLUSTER_TIMEOUT, recv_data(&mut watcher))
        .await
        .expect("the delayed will");
    assert_eq!(second.topic, "wl/delayed");
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "the will delay was kept: {:?}",
        killed.elapsed()
    );
    let leader = c.wait_leader().await;
    let status = c.status(leader).await;
    assert_eq!(status["down"], serde_json::json!([victim]), "{status}");
    assert!(
        status["events"]["nodes_down"].as_u64() >= Some(1),
        "{status}"
    );

    c.restart(victim).await;
    c.wait_until(
        "the restarted node is declared back",
        CLUSTER_TIMEOUT,
        |c| async move {
            let leader = c.wait_leader().await;
            c.status(leader).await["down"] == serde_json::json!([])
        },
    )
    .await;
    assert!(
        try_recv_data(&mut watcher, NO_SECOND).await.is_none(),
        "a will is published once"
    );
}

/// The leader dies with a will client connected and is restarted before anyone declares
/// it dead (here the node-down time is far longer than the test). Back, it takes
/// itself for the leader of its old term for a moment, so the first proposal ending
/// its former clients' connections cannot commit; it is proposed again until it does:
/// the will reaches a subscriber on another node, once. Nobody else would publish it:
/// the node answered again before the node-down time.
#[tokio::test]
async fn wills_of_a_leader_restarted_before_declared_dead_are_published_once() {
    let mut c =
        Cluster::start_with(3, Cluster::empty().with_env("RAFTMQ_NODE_DOWN_MS", 600_000)).await;
    let victim = c.wait_leader().await;
    let other = (1..=3).find(|&i| i != victim).expect("a survivor");
    let mut watcher = v5("watcher").connect(c.node(other).mqtt).await;
    watcher.subscribe("wl/#", 1).await;
    let mut mortal = Connect::new(Version::V5, "mortal");
    mortal.will = Some(Will {
        topic: "wl/mortal".into(),
        payload: b"gone".to_vec(),
        qos: 1,
        retain: false,
        props: Props::new(),
    });
    let (_m, _) = Raw::connect(c.node(victim).mqtt, &mortal).await;
    c.wait_applied().await;

    c.kill(victim);
    let rest: Vec<u64> = (1..=3).filter(|&i| i != victim).collect();
    c.wait_leader_of(&rest).await;
    c.restart(victim).await;
    let restarted = tokio::time::Instant::now();
    let will = try_recv_data(&mut watcher, CLUSTER_TIMEOUT)
        .await
        .expect("the will of the restarted node's former client, within the bound");
    assert_eq!(
        (will.topic.as_str(), will.payload.as_slice()),
        ("wl/mortal", &b"gone"[..])
    );
    println!(
        "will published {:.1}s after the restart",
        restarted.elapsed().as_secs_f32()
    );
    assert!(
        try_recv_data(&mut watcher, NO_SECOND).await.is_none(),
        "a will is published once"
    );
}

/// A persistent 5.0 publisher sends a QoS 2 message to a node (PUBREC received) that
/// dies before its PUBREL. At another node it resends the PUBLISH (DUP, same packet
/// id), as MQTT requires: the message is not delivered twice, and PUBREL completes.
#[tokio::test]
async fn inbound_qos2_is_exactly_once_across_failover() {
    let mut c = Cluster::start(3).await;
    let victim = a_follower(&c).await;
    let other = (1..=3).find(|&i| i != victim).expect("a survivor");

    let mut sub = v5("q2-sub").persistent().connect(c.node(other).mqtt).await;
    sub.subscribe("q2/in", 2).await;
    let (mut publisher, _) = Raw::connect(
        c.node(victim).mqtt,
        &Connect::persistent(Version::V5, "q2-pub"),
    )
    .await;
    let mut probe = v5("q2-probe").connect(c.node(victim).mqtt).await;
    wait_route(&mut probe, &mut sub, "q2/in").await;

    let mut first = Publish::new("q2/in", 2, b"once");
    first.pkid = 7;
    publisher.send(&first.encode(Version::V5)).await;
    let rec = publisher.recv_pubrec(7).await;
    assert!(rec < 0x80, "PUBREC reason {rec:#x}");
    c.kill(victim);

    let comp = resend_elsewhere(c.node(other).mqtt, Version::V5, "q2-pub", &first).await;
    assert_eq!(comp, 0, "the packet id was known to the new node");

    assert_eq!(recv_data(&mut sub).await.payload, b"once");
    assert!(
        try_recv_data(&mut sub, NO_SECOND).await.is_none(),
        "the resent QoS 2 message is not delivered again"
    );
}

/// A persistent subscriber receives a QoS 2 message at a node, answers PUBREC, gets
/// PUBREL, and that node dies before PUBCOMP. Resuming at another node, it gets the
/// PUBREL again (same packet id), never the message a second time.
#[tokio::test]
async fn outbound_qos2_is_exactly_once_across_failover() {
    let mut c = Cluster::start(3).await;
    let victim = a_follower(&c).await;
    let other = (1..=3).find(|&i| i != victim).expect("a survivor");

    let (mut sub, _) = Raw::connect(
        c.node(victim).mqtt,
        &Connect::persistent(Version::V5, "q2-out"),
    )
    .await;
    assert_eq!(sub.subscribe("q2/out", 2).await, [2]);
    c.wait_applied().await;
    let mut publisher = v5("q2-src").connect(c.node(other).mqtt).await;
    assert!(publisher.publish("q2/out", 2, false, b"one").await < 0x80);

    let msg = sub.recv_publish().await;
    assert_eq!((msg.payload.as_slice(), msg.qos), (&b"one"[..], 2));
    sub.send(&codec::pubrec(Version::V5, msg.pkid)).await;
    sub.recv_where("PUBREL", |p| match p {
        Packet::Pubrel(a) if a.pkid == msg.pkid => Some(()),
        _ => None,
    })
    .await;
    c.kill(victim);

    let (mut sub, ack) = Raw::connect(
        c.node(other).mqtt,
        &Connect::persistent(Version::V5, "q2-out"),
    )
    .await;
    assert!(
        matches!(
            ack,
            Packet::Connack {
                session_present: true,
                ..
            }
        ),
        "{ack:?}"
    );
    let rel = sub
        .recv_where("PUBREL or PUBLISH", |p| match p {
            Packet::Pubrel(a) => Some(Ok(a.pkid)),
            Packet::Publish(p) => Some(Err(p.clone())),
            _ => None,
        })
        .await;
    assert_eq!(rel, Ok(msg.pkid), "PUBREL again, not the message");
    sub.send(&codec::pubcomp(Version::V5, msg.pkid)).await;
    sub.expect_no_publish(NO_SECOND).await;
}

/// A client with a 4 s will delay loses its connection; its node dies during the
/// delay. The will is the cluster's to publish: it comes once, from a survivor, not
/// before the delay.
#[tokio::test]
async fn a_will_outlives_its_node_dying_during_the_delay() {
    let mut c = Cluster::start(3).await;
    let victim = a_follower(&c).await;
    let other = (1..=3).find(|&i| i != victim).expect("a survivor");
    let mut watcher = v5("watcher").connect(c.node(other).mqtt).await;
    watcher.subscribe("wd/#", 1).await;
    let mut client = Connect::persistent(Version::V5, "delayed");
    client.will = Some(Will {
        topic: "wd/delayed".into(),
        payload: b"later".to_vec(),
        qos: 1,
        retain: false,
        props: Props::new().with(prop::WILL_DELAY, PropVal::U32(4)),
    });
    let (conn, _) = Raw::connect(c.node(victim).mqtt, &client).await;
    c.wait_applied().await;
    // The connection drops without DISCONNECT: the will is due in 4 s.
    drop(conn);
    let dropped = tokio::time::Instant::now();
    c.wait_applied().await;
    c.kill(victim);
    let will = tokio::time::timeout(CLUSTER_TIMEOUT, recv_data(&mut watcher))
        .await
        .expect("the will, although its node died during the delay");
    assert_eq!(will.topic, "wd/delayed");
    let took = dropped.elapsed();
    assert!(took >= Duration::from_secs(4), "published after {took:?}");
    println!(
        "delayed will published {:.1}s after the connection dropped",
        took.as_secs_f32()
    );
    assert!(
        try_recv_data(&mut watcher, NO_SECOND).await.is_none(),
        "the will came twice"
    );
}

/// A client's connection to a follower ends while the cluster cannot commit (the
/// leader and the other follower are down, so the end of the connection reaches no
/// log): it is committed once they are back, so the session still goes offline and
/// expires, without the client ever coming back.
#[tokio::test]
async fn a_connection_ending_without_quorum_still_ends_its_session() {
    let mut c = Cluster::start(3).await;
    let survivor = a_follower(&c).await;
    let others: Vec<u64> = (1..=3).filter(|&i| i != survivor).collect();
    let mut client = Connect::new(Version::V5, "brief");
    client.clean = false;
    client.props = Props::new().with(prop::SESSION_EXPIRY, PropVal::U32(2));
    client.will = Some(Will {
        topic: "wq/brief".into(),
        payload: b"gone".to_vec(),
        qos: 1,
        retain: false,
        props: Props::new(),
    });
    let (conn, _) = Raw::connect(c.node(survivor).mqtt, &client).await;
    c.wait_applied().await;
    let expired_before = c.status(survivor).await["events"]["sessions_expired"]
        .as_u64()
        .unwrap_or(0);
    for &id in &others {
        c.kill(id);
    }
    // Gone while nothing can be committed (the survivor cannot even tell the cluster).
    drop(conn);
    c.wait_until(
        "the end of the connection fails to commit",
        CLUSTER_TIMEOUT,
        |c| {
            let failed = c
                .node(survivor)
                .log()
                .contains("end of a connection not committed");
            async move { failed }
        },
    )
    .await;
    for &id in &others {
        c.relaunch(id);
    }
    let leader = c.wait_leader().await;
    let mut watcher = v5("watcher").connect(c.node(leader).mqtt).await;
    watcher.subscribe("wq/#", 1).await;
    // The will may have gone out before the watcher subscribed; the expiry shows the
    // session went offline and ended either way.
    c.wait_until("the session expires", CLUSTER_TIMEOUT, |c| async move {
        let mut expired = 0;
        for id in c.running() {
            if let Ok(s) = c.try_status(id).await {
                expired += s["events"]["sessions_expired"].as_u64().unwrap_or(0);
            }
        }
        expired > expired_before
    })
    .await;
    let (mut back, ack) = Raw::connect(
        c.node(leader).mqtt,
        &Connect::persistent(Version::V5, "brief"),
    )
    .await;
    assert!(
        matches!(
            ack,
            Packet::Connack {
                session_present: false,
                ..
            }
        ),
        "the session ended: {ack:?}"
    );
    back.send(&codec::disconnect(Version::V5, 0, &Props::new()))
        .await;
}

/// QoS 2 exactly once on the direct path too: a persistent 3.1.1 publisher at node A
/// sends a QoS 2 message for a clean-session subscriber at node B while A cannot reach
/// the leader (A's messages to it are lost; A still hears it and reaches B). The
/// commit fails, so the publisher loses its connection without a PUBREC and resends
/// the PUBLISH (DUP, same packet id) at B. The subscriber gets it once.
#[tokio::test]
async fn qos2_to_a_clean_session_is_exactly_once_when_resent_elsewhere() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    let others: Vec<u64> = (1..=3).filter(|&i| i != leader).collect();
    let (a, b) = (others[0], others[1]);
    let mut sub = v5("clean-sub").connect(c.node(b).mqtt).await;
    sub.subscribe("q2/clean", 2).await;
    let mut probe = v5("q2c-probe").connect(c.node(a).mqtt).await;
    wait_route(&mut probe, &mut sub, "q2/clean").await;
    let (mut publisher, _) =
        Raw::connect(c.node(a).mqtt, &Connect::persistent(Version::V4, "q2c-pub")).await;
    c.wait_applied().await;

    c.cut(&[(a, leader)]);
    let mut first = Publish::new("q2/clean", 2, b"once");
    first.pkid = 9;
    publisher.send(&first.encode(Version::V4)).await;
    // No PUBREC without a commit: 3.1.1 has no failure code, the connection closes.
    let seen = publisher.expect_closed(CLUSTER_TIMEOUT).await;
    assert!(
        !seen.iter().any(|p| matches!(p, Packet::Pubrec(_))),
        "PUBREC without a commit: {seen:?}"
    );

    resend_elsewhere(c.node(b).mqtt, Version::V4, "q2c-pub", &first).await;

    assert_eq!(recv_data(&mut sub).await.payload, b"once");
    c.heal();
    assert!(
        try_recv_data(&mut sub, Duration::from_secs(5))
            .await
            .is_none(),
        "the QoS 2 message came twice"
    );
}
