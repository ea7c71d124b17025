//! QoS 2 exactly once when a publisher carries on at another node (MQTT 4.3.3, the
//! receiver's "method B" on the cluster side): a PUBLISH sent again with DUP and the
//! same packet id must not be delivered a second time, whichever node gets it. Two
//! precise cases the load of t70_failover can only hit by chance.

use std::time::Duration;

use crate::support::cluster::{Cluster, CLUSTER_TIMEOUT};
use crate::support::codec::{self, Connect, Packet, Publish, Version};
use crate::support::raw::{Raw, Recv};
use crate::support::roaming::Qos2Receiver;
use crate::support::RECV_TIMEOUT;
use crate::t70_failover::{bounded, others};

/// A QoS 2 PUBLISH acknowledged (PUBREC) by a node that then dies is sent again, DUP
/// with the same packet id, to another node, as a publisher that lost the PUBREC in
/// the crash would: the cluster knows the packet id awaits PUBREL (MQTT 4.3.3), so it
/// answers PUBREC and does not deliver the message a second time.
#[tokio::test]
async fn qos2_resent_to_another_node_is_delivered_once() {
    bounded("qos 2 resent after failover", async {
        let mut c = Cluster::start(3).await;
        let leader = c.wait_leader().await;
        let [victim, other] = [others(&c, leader)[0], others(&c, leader)[1]];
        let (mut sub, _) = Raw::connect(
            c.node(other).mqtt,
            &Connect::persistent(Version::V5, "ho-sub"),
        )
        .await;
        sub.subscribe("ho/#", 2).await;
        c.wait_applied().await;

        let (mut publisher, _) = Raw::connect(
            c.node(victim).mqtt,
            &Connect::persistent(Version::V5, "ho-pub"),
        )
        .await;
        let mut once = Publish::new("ho/x", 2, b"once");
        once.pkid = 7;
        publisher.send(&once.encode(Version::V5)).await;
        assert!(
            publisher.recv_pubrec(7).await < 0x80,
            "PUBREC before the crash"
        );
        c.kill(victim);

        let (mut publisher, connack) = Raw::connect(
            c.node(other).mqtt,
            &Connect::persistent(Version::V5, "ho-pub"),
        )
        .await;
        assert!(
            session_present(&connack),
            "the publisher's session on another node: {connack:?}"
        );
        once.dup = true;
        publisher.send(&once.encode(Version::V5)).await;
        assert!(
            publisher.recv_pubrec(7).await < 0x80,
            "PUBREC to the resend"
        );
        publisher.send(&codec::pubrel(Version::V5, 7)).await;
        let comp = publisher.recv_pubcomp(7).await;
        assert_eq!(comp, 0, "PUBCOMP reason");
        // Order per publisher holds: a second copy would arrive before this one.
        assert!(publisher.pub_msg("ho/end", 2, b"end").await < 0x80);

        let got = receive_qos2(&mut sub, "end", tokio::time::Instant::now()).await;
        assert_eq!(got, ["once", "end"], "deliveries to the subscriber");
    })
    .await
}

/// A QoS 2 PUBLISH sent to a follower that has just been cut off cannot be committed
/// there; the majority declares the follower dead, the cut heals, and the publisher,
/// without an answer, carries on at another node and sends the PUBLISH again (DUP,
/// same packet id). Whatever becomes of the copy the follower held, the subscriber gets
/// the message once. Heal comes right after the declaration (about 3 s), before the
/// follower's commit timeout (5 s) would refuse its copy.
#[tokio::test]
async fn qos2_held_by_a_cut_off_node_then_resent_is_delivered_once() {
    bounded("qos 2 held by a cut-off node", async {
        let c = Cluster::start(3).await;
        let leader = c.wait_leader().await;
        let [victim, other] = [others(&c, leader)[0], others(&c, leader)[1]];
        let (mut sub, _) = Raw::connect(
            c.node(other).mqtt,
            &Connect::persistent(Version::V5, "hd-sub"),
        )
        .await;
        sub.subscribe("hd/#", 2).await;
        let (mut publisher, _) = Raw::connect(
            c.node(victim).mqtt,
            &Connect::persistent(Version::V5, "hd-pub"),
        )
        .await;
        c.wait_applied().await;

        c.isolate(victim);
        let mut held = Publish::new("hd/x", 2, b"held");
        held.pkid = 9;
        publisher.send(&held.encode(Version::V5)).await;
        let sent = tokio::time::Instant::now();
        let what = format!("the leader to declare node {victim} dead");
        c.wait_until(&what, CLUSTER_TIMEOUT, |c| async move {
            let down = c.status(leader).await["down"].clone();
            down.as_array().is_some_and(|d| d.contains(&victim.into()))
        })
        .await;
        c.heal();
        println!(
            "held QoS 2: healed {:.1}s after the PUBLISH",
            sent.elapsed().as_secs_f32()
        );

        let (mut publisher, connack) = Raw::connect(
            c.node(other).mqtt,
            &Connect::persistent(Version::V5, "hd-pub"),
        )
        .await;
        assert!(
            session_present(&connack),
            "the publisher's session on another node: {connack:?}"
        );
        held.dup = true;
        publisher.send(&held.encode(Version::V5)).await;
        assert!(
            publisher.recv_pubrec(9).await < 0x80,
            "PUBREC to the resend"
        );
        publisher.send(&codec::pubrel(Version::V5, 9)).await;
        publisher.recv_pubcomp(9).await;
        assert!(publisher.pub_msg("hd/end", 2, b"end").await < 0x80);

        // Until "end", and at least until the follower's copy is settled one way or the
        // other (its commit timeout, with a margin).
        let settled = sent + Duration::from_secs(8);
        let got = receive_qos2(&mut sub, "end", settled).await;
        assert_eq!(got, ["held", "end"], "deliveries to the subscriber");
    })
    .await
}

/// Receives QoS 2 messages (MQTT 4.3.3 method B) until one has payload `last` and
/// `until` has passed; returns their payloads.
async fn receive_qos2(sub: &mut Raw, last: &str, until: tokio::time::Instant) -> Vec<String> {
    let mut qos2 = Qos2Receiver::default();
    let mut got: Vec<String> = Vec::new();
    loop {
        let done = got.iter().any(|p| p == last);
        let wait = match done {
            true => until.saturating_duration_since(tokio::time::Instant::now()),
            false => RECV_TIMEOUT,
        };
        match sub.try_recv(wait).await {
            Recv::Packet(Packet::Publish(p)) => {
                if qos2.on_publish(p.pkid) {
                    got.push(String::from_utf8_lossy(&p.payload).into_owned());
                }
                sub.send(&codec::pubrec(Version::V5, p.pkid)).await;
            }
            Recv::Packet(Packet::Pubrel(a)) => {
                qos2.on_pubrel(a.pkid);
                sub.send(&codec::pubcomp(Version::V5, a.pkid)).await;
            }
            Recv::Packet(_) => {}
            Recv::Timeout if done => return got,
            other => panic!("subscriber: {other:?} after {got:?}"),
        }
    }
}

fn session_present(connack: &Packet) -> bool {
    matches!(connack, Packet::Connack { session_present, .. } if *session_present)
}
