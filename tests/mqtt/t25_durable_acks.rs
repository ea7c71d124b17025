//! The durable path as a publisher sees it: acks held for commits come back in PUBLISH
//! order, mixed with acks that need no commit, while the connection keeps reading.

use crate::support::codec::{Connect, Packet, Publish, Version};
use crate::support::raw::Raw;
use crate::support::Broker;

both!(acks_keep_publish_order_across_commits);

/// A publisher sends, without waiting, a run of QoS 1 and QoS 2 messages: to a topic
/// with a persistent subscriber (each acked after its commit), to a topic nobody
/// wants (acked at once), and retained ones (a commit each). Every PUBACK/PUBREC
/// comes back, in the order of the PUBLISHes, and the subscriber gets its messages in
/// order.
async fn acks_keep_publish_order_across_commits(v: Version) {
    let broker = Broker::start().await;
    let (mut sub, _) = Raw::connect(broker.addr, &Connect::persistent(v, "durable-sub")).await;
    assert_eq!(sub.subscribe("da/kept", 2).await, [2]);
    let (mut publisher, _) = Raw::connect(broker.addr, &Connect::new(v, "da-pub")).await;

    // One in four at QoS 2: their packet ids stay taken (no PUBREL here), and stay
    // under the broker's Receive Maximum of 64.
    const N: u16 = 200;
    let mut sent = Vec::new();
    let mut expected = Vec::new();
    let mut bytes = Vec::new();
    for pkid in 1..=N {
        let qos = if pkid % 4 == 0 { 2 } else { 1 };
        let (topic, retain) = match pkid % 5 {
            0 => ("da/nobody", false),
            1 => ("da/retained", true),
            _ => ("da/kept", false),
        };
        let payload = pkid.to_string();
        let mut p = Publish::new(topic, qos, payload.as_bytes());
        p.pkid = pkid;
        p.retain = retain;
        bytes.extend(p.encode(v));
        sent.push((pkid, qos));
        if topic == "da/kept" {
            expected.push(payload);
        }
    }
    publisher.send(&bytes).await;

    let mut acked = Vec::new();
    while acked.len() < sent.len() {
        let ack = publisher
            .recv_where("PUBACK or PUBREC", |p| match p {
                Packet::Puback(a) => Some((a.pkid, 1, a.reason)),
                Packet::Pubrec(a) => Some((a.pkid, 2, a.reason)),
                _ => None,
            })
            .await;
        assert!(ack.2 < 0x80, "ack {ack:?} is a failure");
        acked.push((ack.0, ack.1));
    }
    assert_eq!(
        acked, sent,
        "acks in PUBLISH order, each of its message's QoS"
    );

    let mut got = Vec::new();
    while got.len() < expected.len() {
        let p = sub.recv_acked().await;
        got.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    assert_eq!(got, expected, "the subscriber gets the messages in order");
}
