//! Malformed and hostile input over raw TCP. Each case checks that the offending
//! connection is closed (5.0: with DISCONNECT 0x81 Malformed Packet or 0x82 Protocol
//! Error if one is sent first) and that the broker keeps serving other clients.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::codec::{self, Connect, Props, Publish, Version};
use crate::support::raw::Raw;
use crate::support::{Broker, RECV_TIMEOUT};

both!(
    truncated_packet_then_close,
    remaining_length_of_five_bytes,
    subscribe_with_flags_0000,
    publish_qos3,
    qos1_publish_with_packet_id_0,
    second_connect,
    invalid_utf8_in_topic,
);

/// A fresh publisher and subscriber can still connect and exchange a QoS 1 message.
async fn assert_serves(broker: &Broker) {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut sub = Raw::client(broker.addr, Version::V5, &format!("probe-sub-{n}")).await;
    sub.subscribe("probe/t", 1).await;
    let mut publisher = Raw::client(broker.addr, Version::V4, &format!("probe-pub-{n}")).await;
    publisher.pub_msg("probe/t", 1, b"still here").await;
    assert_eq!(sub.recv_acked().await.payload, b"still here");
}

/// Connects, sends `bad`, expects the close (and an error DISCONNECT on 5.0 if any),
/// then checks the broker still serves.
async fn rejects_after_connect(v: Version, bad: &[u8]) {
    let broker = Broker::start().await;
    let mut raw = Raw::client(broker.addr, v, "bad").await;
    raw.send(bad).await;
    let reason = raw.expect_closed_reason(RECV_TIMEOUT).await;
    if let Some(reason) = reason {
        assert!(
            v == Version::V5 && (reason == 0x81 || reason == 0x82),
            "DISCONNECT reason {reason:#04x} for malformed input"
        );
    }
    assert_serves(&broker).await;
}

async fn truncated_packet_then_close(v: Version) {
    let broker = Broker::start().await;
    let mut raw = Raw::client(broker.addr, v, "truncated").await;
    let publish = Publish::new("trunc/t", 1, b"payload that never ends").encode(v);
    raw.send(&publish[..publish.len() / 2]).await;
    drop(raw);
    assert_serves(&broker).await;
}

async fn remaining_length_of_five_bytes(v: Version) {
    rejects_after_connect(v, &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).await;
}

/// SUBSCRIBE's fixed-header flags must be 0010 [MQTT-3.8.1-1].
async fn subscribe_with_flags_0000(v: Version) {
    let mut bytes = codec::subscribe(v, 1, &[("a/b", 1)], &Props::new());
    bytes[0] = 0x80;
    rejects_after_connect(v, &bytes).await;
}

async fn publish_qos3(v: Version) {
    let mut bytes = Publish::new("q3/t", 1, b"x").encode(v);
    bytes[0] |= 0x06;
    rejects_after_connect(v, &bytes).await;
}

/// QoS > 0 requires a non-zero packet id [MQTT-2.3.1-1].
async fn qos1_publish_with_packet_id_0(v: Version) {
    let p = Publish::new("pk0/t", 1, b"x");
    assert_eq!(p.pkid, 0);
    rejects_after_connect(v, &p.encode(v)).await;
}

/// A second CONNECT on a connection is a protocol violation [MQTT-3.1.0-2].
async fn second_connect(v: Version) {
    rejects_after_connect(v, &Connect::new(v, "again").encode()).await;
}

/// Topic names must be valid UTF-8 [MQTT-1.5.3-1].
async fn invalid_utf8_in_topic(v: Version) {
    let mut p = Publish::new("", 0, b"x");
    p.topic = vec![b'a', b'/', 0xC3, 0x28];
    rejects_after_connect(v, &p.encode(v)).await;
}

/// Garbage instead of CONNECT closes the connection.
#[tokio::test]
async fn garbage_before_connect() {
    let broker = Broker::start().await;
    let mut raw = Raw::tcp(broker.addr, Version::V4).await;
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    raw.expect_closed(RECV_TIMEOUT).await;
    assert_serves(&broker).await;
}

/// 50 connections each send a burst of pseudo-random bytes (half of them after a valid
/// CONNECT); the broker process survives and keeps serving.
#[tokio::test]
async fn random_garbage_on_50_connections() {
    let mut broker = Broker::start().await;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        let mut bytes = Vec::new();
        if i % 2 == 0 {
            let v = if i % 4 == 0 { Version::V4 } else { Version::V5 };
            bytes.extend(Connect::new(v, &format!("noise-{i}")).encode());
        }
        for _ in 0..(64 + i * 37) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bytes.push(seed as u8);
        }
        let addr = broker.addr;
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("TCP connect");
            let _ = stream.write_all(&bytes).await;
            // Either the broker closes the connection or it waits for more bytes;
            // both are fine, it only must not die.
            let mut sink = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut sink)).await;
        }));
    }
    for t in tasks {
        t.await.expect("noise task");
    }
    assert!(broker.is_alive(), "broker died:\n{}", broker.stderr());
    assert_serves(&broker).await;
}
