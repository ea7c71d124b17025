//! Slow consumers and the per-session queue policy: a subscriber that stops reading its
//! socket, or stops acknowledging, must not stall anyone else, and `--queue-policy`
//! decides whether what it cannot take is dropped or slows the publisher down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::support::client::Opts;
use crate::support::codec::{Packet, Publish, Version};
use crate::support::raw::{Raw, Recv};
use crate::support::{wait_until, Broker, QUIET, RECV_TIMEOUT};

const V4: Version = Version::V4;

/// A payload of `len` bytes that starts with `seq` (big endian).
fn seq_payload(seq: u32, len: usize) -> Vec<u8> {
    let mut p = seq.to_be_bytes().to_vec();
    p.resize(len.max(4), b'.');
    p
}

fn seq_of(payload: &[u8]) -> u32 {
    let head: [u8; 4] = payload
        .get(..4)
        .and_then(|h| h.try_into().ok())
        .unwrap_or_else(|| panic!("not a sequence payload: {payload:?}"));
    u32::from_be_bytes(head)
}

/// Sends one QoS 1 PUBLISH per sequence number without waiting, then waits for every
/// PUBACK (each within [`RECV_TIMEOUT`]).
async fn publish_batch(publisher: &mut Raw, topic: &str, seqs: std::ops::Range<u32>, len: usize) {
    let mut pkids = Vec::with_capacity(seqs.len());
    for seq in seqs {
        let mut p = Publish::new(topic, 1, &seq_payload(seq, len));
        p.pkid = publisher.pkid();
        pkids.push(p.pkid);
        publisher.send(&p.encode(V4)).await;
    }
    for pkid in pkids {
        publisher
            .recv_where("PUBACK", |p| {
                matches!(p, Packet::Puback(a) if a.pkid == pkid).then_some(())
            })
            .await;
    }
}

/// A QoS 0 subscriber that never reads its socket does not hold up a QoS 1 subscriber
/// on the same topic, nor the publisher: the broker drops what the slow one cannot
/// take, and what the slow one does get is in order.
#[tokio::test]
async fn slow_qos0_subscriber_does_not_stall_others() {
    // 20 000 × 1 KiB: well beyond its queue of 100 and the broker's write buffer for it,
    // and beyond what the kernel's socket buffers absorb on loopback (about 4 MB with
    // Linux defaults; 5000 messages would leave too little margin to be sure of drops).
    const N: u32 = 20_000;
    const LEN: usize = 1024;
    const BATCH: u32 = 50;
    let broker = Broker::opts().set("max-queued-messages", 100).start().await;
    let mut slow = Raw::client(broker.addr, V4, "slow").await;
    assert_eq!(slow.subscribe("slow/t", 0).await, vec![0]);
    // From here on `slow` reads nothing until every message is published.
    let mut fast = Opts::new(V4, "fast").connect(broker.addr).await;
    assert_eq!(fast.subscribe("slow/t", 1).await, vec![1]);
    let mut publisher = Raw::client(broker.addr, V4, "pub").await;

    let start = Instant::now();
    for first in (0..N).step_by(BATCH as usize) {
        let seqs = first..(first + BATCH).min(N);
        publish_batch(&mut publisher, "slow/t", seqs.clone(), LEN).await;
        // The fast subscriber takes each batch before the next is published, so that
        // its own queue bound (100) never comes into play: any loss or stall here is
        // the slow subscriber's doing.
        for seq in seqs {
            let m = fast.recv().await;
            assert_eq!(
                seq_of(&m.payload),
                seq,
                "fast subscriber: message {seq} lost or out of order"
            );
        }
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "{N} messages took {elapsed:?} with a stalled subscriber"
    );

    // Now the slow subscriber reads. Barrier: markers, published until one reaches it
    // (the first ones may find its queue still full and be dropped). The broker keeps
    // per-session order, so once a marker arrives, every message it still held for
    // the slow subscriber has arrived before it.
    let mut got: Vec<u32> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    'markers: loop {
        assert!(
            Instant::now() < deadline,
            "no marker reached the slow subscriber; it got {} messages",
            got.len()
        );
        publisher.pub_msg("slow/t", 1, b"end").await;
        loop {
            match slow.try_recv(QUIET).await {
                Recv::Packet(Packet::Publish(p)) if p.payload == b"end" => break 'markers,
                Recv::Packet(Packet::Publish(p)) => got.push(seq_of(&p.payload)),
                Recv::Packet(other) => panic!("slow subscriber got {other:?}"),
                Recv::Timeout => break,
                Recv::Closed => panic!("slow subscriber disconnected after {}", got.len()),
            }
        }
    }
    assert_eq!(
        got.first(),
        Some(&0),
        "the first message, sent before anything filled up, did not reach the slow subscriber"
    );
    assert!(
        got.len() < N as usize,
        "the slow subscriber got all {N} messages: nothing was dropped for it"
    );
    if let Some(w) = got.windows(2).find(|w| w[0] >= w[1]) {
        panic!("slow subscriber: {} came after {}", w[1], w[0]);
    }
}

const INFLIGHT: usize = 2;
const QUEUE: usize = 10;
const TOTAL: u32 = 30;

/// A subscriber that reads but never acknowledges QoS 1 (raw client), with a publisher.
async fn stalled_subscriber(broker: &Broker) -> (Raw, Raw) {
    let mut sub = Raw::client(broker.addr, V4, "stalled").await;
    assert_eq!(sub.subscribe("stall/t", 1).await, vec![1]);
    let publisher = Raw::client(broker.addr, V4, "pub").await;
    (sub, publisher)
}

/// Drop policy (the default), `--max-queued-messages 10 --max-inflight 2`: a subscriber
/// that stops acknowledging gets its window, then at most the 10 queued messages after
/// it, the oldest ones and in order; the rest are dropped and the publisher is never
/// slowed down.
#[tokio::test]
async fn queue_policy_drop_bounds_a_stalled_qos1_subscriber() {
    let broker = Broker::opts()
        .set("max-queued-messages", QUEUE)
        .set("max-inflight", INFLIGHT)
        .start()
        .await;
    let (mut sub, mut publisher) = stalled_subscriber(&broker).await;

    // The window first, so that what is in flight and what is queued is known exactly.
    let mut window = Vec::new();
    for seq in 0..INFLIGHT as u32 {
        publisher.pub_msg("stall/t", 1, &seq_payload(seq, 8)).await;
        window.push(sub.recv_publish().await);
    }
    let start = Instant::now();
    for seq in INFLIGHT as u32..TOTAL {
        assert_eq!(
            publisher.pub_msg("stall/t", 1, &seq_payload(seq, 8)).await,
            0
        );
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed < RECV_TIMEOUT,
        "the publisher was slowed down: {TOTAL} PUBACKs took {elapsed:?}"
    );
    // Every message is routed (PUBACKs above), yet nothing beyond the window is sent.
    sub.expect_no_publish(QUIET).await;

    for p in &window {
        sub.ack(p).await;
    }
    // One more arriving proves the broker moved it from the queue into flight: the
    // queue now has room, so a marker published now is kept, behind whatever is left.
    let next = sub.recv_acked().await;
    publisher.pub_msg("stall/t", 1, b"end").await;
    let mut seqs: Vec<u32> = window
        .iter()
        .chain([&next])
        .map(|p| seq_of(&p.payload))
        .collect();
    loop {
        let p = sub.recv_acked().await;
        if p.payload == b"end" {
            break;
        }
        seqs.push(seq_of(&p.payload));
    }
    let expected: Vec<u32> = (0..(INFLIGHT + QUEUE) as u32).collect();
    assert_eq!(
        seqs, expected,
        "a stalled subscriber keeps its window and the {QUEUE} oldest queued messages"
    );
}

/// Backpressure policy: while a subscriber does not acknowledge, the publisher's
/// messages stop being accepted once the subscriber's queue is full; once it catches
/// up, the publisher gets every PUBACK and the subscriber every message, in order.
#[tokio::test]
async fn queue_policy_backpressure_slows_publisher_and_loses_nothing() {
    let broker = Broker::opts()
        .set("max-queued-messages", QUEUE)
        .set("max-inflight", INFLIGHT)
        .set("queue-policy", "backpressure")
        .start()
        .await;
    let (mut sub, mut publisher) = stalled_subscriber(&broker).await;

    // The publisher sends one message at a time and waits for its PUBACK, so `acked`
    // counts exactly the messages the broker accepted.
    let acked = Arc::new(AtomicUsize::new(0));
    let count = acked.clone();
    let publishing = tokio::spawn(async move {
        let deadline = Instant::now() + 3 * RECV_TIMEOUT;
        for seq in 0..TOTAL {
            let mut p = Publish::new("stall/t", 1, &seq_payload(seq, 8));
            p.pkid = publisher.pkid();
            publisher.send(&p.encode(V4)).await;
            match publisher
                .try_recv(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Recv::Packet(Packet::Puback(a)) if a.pkid == p.pkid => {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                other => panic!("publisher: waiting for PUBACK {}: {other:?}", p.pkid),
            }
        }
    });

    // Barrier: the subscriber has its window in flight and the publisher has got at
    // least as far as filling the queue behind it.
    let window = [sub.recv_publish().await, sub.recv_publish().await];
    let n = acked.clone();
    wait_until(
        "the publisher to fill the stalled subscriber's queue",
        RECV_TIMEOUT,
        Duration::from_millis(20),
        || {
            let n = n.clone();
            async move { n.load(Ordering::SeqCst) >= QUEUE }
        },
    )
    .await;
    // The window: for a second the subscriber gets nothing more and the publisher
    // stays stuck at the bound.
    sub.expect_no_publish(Duration::from_secs(1)).await;
    let stuck = acked.load(Ordering::SeqCst);
    assert!(
        stuck <= INFLIGHT + QUEUE + 1,
        "{stuck} of {TOTAL} PUBACKs while the subscriber acknowledged nothing \
         (in flight {INFLIGHT}, queue {QUEUE})"
    );

    for p in &window {
        sub.ack(p).await;
    }
    let mut seqs: Vec<u32> = window.iter().map(|p| seq_of(&p.payload)).collect();
    while seqs.len() < TOTAL as usize {
        seqs.push(seq_of(&sub.recv_acked().await.payload));
    }
    assert_eq!(seqs, (0..TOTAL).collect::<Vec<_>>(), "lost or reordered");
    tokio::time::timeout(RECV_TIMEOUT, publishing)
        .await
        .expect("publisher still waiting for PUBACKs")
        .expect("publisher task");
    assert_eq!(acked.load(Ordering::SeqCst), TOTAL as usize);
    sub.expect_no_publish(QUIET).await;
}
