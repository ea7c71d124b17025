//! Overload protection (issue 13), over real sockets: connection admission
//! (`max_connect_rate`), a client's inbound rates (`max_publish_rate`,
//! `max_inbound_bytes_rate`), push pacing (`[[pacing]]`) and the memory high-water mark
//! (`max_memory_mb`). Each is shown doing its job: what is slowed takes at least the
//! time its rate implies and loses nothing; what is refused gets the protocol's code.

use std::time::{Duration, Instant};

use crate::support::codec::{Connect, Packet, Publish, Version};
use crate::support::raw::{Raw, Recv};
use crate::support::{needs_raftmq, wait_until, Broker, RECV_TIMEOUT};

both!(publish_rate, inbound_bytes_rate, pacing, memory_high_water);

/// Sends `n` QoS 1 publishes without waiting, then collects their PUBACK codes in
/// packet-id order.
async fn pipelined_qos1(c: &mut Raw, topic: &str, payload: &[u8], n: usize) -> Vec<u8> {
    let mut pkids = Vec::new();
    for _ in 0..n {
        let mut p = Publish::new(topic, 1, payload);
        p.pkid = c.pkid();
        pkids.push(p.pkid);
        c.send(&p.encode(c.version)).await;
    }
    let mut codes = Vec::new();
    for pkid in pkids {
        let code = c
            .recv_where("PUBACK", |p| match p {
                Packet::Puback(a) if a.pkid == pkid => Some(a.reason),
                _ => None,
            })
            .await;
        codes.push(code);
    }
    codes
}

/// Receives publishes until `n` arrived or nothing came for `quiet`.
async fn collect(c: &mut Raw, n: usize, quiet: Duration) -> Vec<Publish> {
    let mut got = Vec::new();
    while got.len() < n {
        match c.try_recv(quiet).await {
            Recv::Packet(Packet::Publish(p)) => {
                c.ack(&p).await;
                got.push(p);
            }
            Recv::Packet(_) => {}
            Recv::Closed | Recv::Timeout => break,
        }
    }
    got
}

/// `max_publish_rate` 20/s, 60 QoS 1 publishes at once. A 3.1.1 client, which has no
/// code for it, is slowed: every publish is acknowledged and delivered, over at least
/// the 2 s the rate implies (60 - a burst of 20, at 20/s). A 5.0 client is disconnected
/// with 0x96 once past its burst, and what was acknowledged was delivered.
async fn publish_rate(v: Version) {
    needs_raftmq("max_publish_rate");
    let broker = Broker::opts().set("max-publish-rate", 20).start().await;
    let mut sub = Raw::client(broker.addr, v, "rate-sub").await;
    sub.subscribe("rate/t", 1).await;
    let mut fast = Raw::client(broker.addr, v, "rate-pub").await;
    match v {
        Version::V4 => {
            let started = Instant::now();
            let codes = pipelined_qos1(&mut fast, "rate/t", b"x", 60).await;
            let took = started.elapsed();
            assert_eq!(codes, vec![0; 60], "3.1.1 is slowed, never refused");
            assert!(
                took >= Duration::from_millis(1500),
                "60 at 20/s took {took:?}"
            );
            let got = collect(&mut sub, 60, RECV_TIMEOUT).await;
            assert_eq!(got.len(), 60);
        }
        Version::V5 => {
            // In one write, so that the broker has read them all when it closes (a
            // close with unread input resets the connection, losing what it sent).
            let mut burst = Vec::new();
            for _ in 0..60 {
                let mut p = Publish::new("rate/t", 1, b"x");
                p.pkid = fast.pkid();
                burst.extend(p.encode(v));
            }
            fast.send(&burst).await;
            let packets = fast.expect_closed(RECV_TIMEOUT).await;
            let acked = packets
                .iter()
                .filter(|p| matches!(p, Packet::Puback(a) if a.reason == 0))
                .count();
            let last = packets.last();
            assert!(
                matches!(last, Some(Packet::Disconnect { reason: 0x96, .. })),
                "the last packet is DISCONNECT 0x96: {last:?}"
            );
            assert!(
                (15..60).contains(&acked),
                "{acked} acknowledged of 60: {packets:?}"
            );
            let got = collect(&mut sub, 60, Duration::from_millis(500)).await;
            assert!(
                got.len() >= acked && got.len() < 60,
                "{} delivered, {acked} acked",
                got.len()
            );
        }
    }
    // Another client has its own allowance.
    let mut other = Raw::client(broker.addr, v, "rate-other").await;
    assert!(other.pub_msg("rate/t", 1, b"y").await < 0x80);
    let log = broker.stderr();
    let lines = log.matches("over max_publish_rate").count();
    assert_eq!(
        lines, 1,
        "one log line for the one client over its rate:\n{log}"
    );
}

/// `max_inbound_bytes_rate` 50 kB/s: 150 kB of publishes take at least the 2 s the rate
/// implies (150 kB - a burst of 50 kB, at 50 kB/s), and all are acknowledged and
/// delivered.
async fn inbound_bytes_rate(v: Version) {
    needs_raftmq("max_inbound_bytes_rate");
    let broker = Broker::opts()
        .set("max-inbound-bytes-rate", 50_000)
        .start()
        .await;
    let mut sub = Raw::client(broker.addr, v, "bytes-sub").await;
    sub.subscribe("bytes/t", 1).await;
    let mut fast = Raw::client(broker.addr, v, "bytes-pub").await;
    let payload = vec![7u8; 10_000];
    let started = Instant::now();
    let codes = pipelined_qos1(&mut fast, "bytes/t", &payload, 15).await;
    let took = started.elapsed();
    assert_eq!(codes, vec![0; 15]);
    assert!(
        took >= Duration::from_millis(1500),
        "150 kB at 50 kB/s took {took:?}"
    );
    let got = collect(&mut sub, 15, RECV_TIMEOUT).await;
    assert_eq!(got.len(), 15);
    assert!(got.iter().all(|p| p.payload == payload));
}

/// A `[[pacing]]` rule of 20 deliveries/s: one QoS 1 broadcast to 30 subscribers
/// reaches all of them, once each, over at least (30 - 1) / 20 s; a topic no rule
/// matches is delivered at once meanwhile.
async fn pacing(v: Version) {
    needs_raftmq("push pacing");
    let broker = Broker::opts()
        .config("[[pacing]]\ntopic = \"fleet/#\"\nrate = 20\n")
        .start()
        .await;
    let mut subs = Vec::new();
    for i in 0..30 {
        let mut s = Raw::client(broker.addr, v, &format!("paced-{i}")).await;
        s.subscribe("fleet/cmd", 1).await;
        s.subscribe("other/x", 1).await;
        subs.push(s);
    }
    let mut publisher = Raw::client(broker.addr, v, "pacer").await;
    let started = Instant::now();
    assert_eq!(publisher.pub_msg("fleet/cmd", 1, b"update").await, 0);
    let mut last = Duration::ZERO;
    for s in subs.iter_mut() {
        let p = s.recv_publish().await;
        s.ack(&p).await;
        assert_eq!(
            (&p.topic[..], &p.payload[..]),
            (&b"fleet/cmd"[..], &b"update"[..])
        );
        last = last.max(started.elapsed());
    }
    assert!(
        last >= Duration::from_millis(1300),
        "30 deliveries at 20/s were all done after {last:?}"
    );
    // Paced, not dropped: nobody got it twice, and the unpaced topic flows at once.
    let started = Instant::now();
    assert_eq!(publisher.pub_msg("other/x", 1, b"now").await, 0);
    for s in subs.iter_mut() {
        let p = s.recv_publish().await;
        s.ack(&p).await;
        assert_eq!(p.topic, b"other/x", "no second copy of the paced message");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1000), "unpaced took {took:?}");
}

/// Above `max_memory_mb`, a new CONNECT is refused as server busy (5.0 0x89, 3.1.1
/// 0x03) and QoS 0 deliveries are shed while QoS 1 still flows. The broker is pushed
/// over the mark by 40 MB of retained messages, the mark set 15 MB above its resident
/// size at start (measured on a first broker).
async fn memory_high_water(v: Version) {
    needs_raftmq("max_memory_mb");
    let probe = Broker::start().await;
    let idle_mib = probe.rss_kib() / 1024;
    drop(probe);
    let limit = idle_mib + 15;
    let broker = Broker::opts()
        .set("max-memory-mb", limit)
        .set("max-retained-bytes", 512 * 1024 * 1024)
        .start()
        .await;
    let mut sub = Raw::client(broker.addr, v, "mem-sub").await;
    sub.subscribe("mem/+", 1).await;
    let mut hog = Raw::client(broker.addr, v, "mem-hog").await;
    let big = vec![1u8; 900_000];
    for i in 0..45 {
        let mut p = Publish::new(&format!("hog/{i}"), 1, &big);
        p.retain = true;
        assert!(hog.publish(p).await < 0x80);
        if broker.rss_kib() / 1024 > limit + 5 {
            break;
        }
    }
    let busy = match v {
        Version::V5 => 0x89,
        Version::V4 => 0x03,
    };
    let addr = broker.addr;
    wait_until(
        "a CONNECT refused as busy",
        RECV_TIMEOUT,
        Duration::from_millis(100),
        || async move {
            let (_, first) = Raw::connect_with(addr, &Connect::new(v, "late")).await;
            matches!(first, Recv::Packet(Packet::Connack { code, .. }) if code == busy)
        },
    )
    .await;
    // QoS 0 is shed, QoS 1 still delivered (the subscription is at QoS 1; the
    // delivery's QoS is the publish's).
    hog.pub_msg("mem/q0", 0, b"shed").await;
    assert!(hog.pub_msg("mem/q1", 1, b"kept").await < 0x80);
    let p = sub.recv_publish().await;
    sub.ack(&p).await;
    assert_eq!(
        (&p.topic[..], p.qos),
        (&b"mem/q1"[..], 1),
        "QoS 0 went first"
    );
    assert!(broker.stderr().contains("memory high-water mark"));
    assert!(broker.stderr().contains("server busy"));
}

/// `max_connect_rate` 20/s: 40 clients connecting at once are all accepted, none
/// refused, over at least the 1.9 s the rate implies ((40 - a burst of 2) / 20).
#[tokio::test]
async fn connect_rate() {
    needs_raftmq("max_connect_rate");
    let broker = Broker::opts().set("max-connect-rate", 20).start().await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let addr = broker.addr;
            tokio::spawn(async move {
                let connect = Connect::new(Version::V5, &format!("storm-{i}"));
                let (raw, first) = Raw::connect_with(addr, &connect).await;
                (raw, first)
            })
        })
        .collect();
    let mut clients = Vec::new();
    for t in tasks {
        let (raw, first) = t.await.expect("client task");
        match first {
            Recv::Packet(Packet::Connack { code: 0, .. }) => clients.push(raw),
            other => panic!("a client over the connect rate got {other:?}"),
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "40 connects at 20/s took {took:?}"
    );
    // All of them are served.
    for c in clients.iter_mut() {
        c.ping().await;
    }
}
