//! CONNECT handling and keep-alive.

use std::time::Duration;

use tokio::time::Instant;

use crate::support::client::Opts;
use crate::support::codec::{self, prop, Connect, Packet, Version, Will};
use crate::support::raw::{Raw, Recv};
use crate::support::{Broker, RECV_TIMEOUT};

both!(
    connect_accepted,
    first_packet_must_be_connect,
    reserved_connect_flag_closes,
    keep_alive_timeout_closes_and_publishes_will,
    pingreq_gets_pingresp,
);

/// A plain CONNECT from rumqttc is accepted with session present 0.
async fn connect_accepted(v: Version) {
    let broker = Broker::start().await;
    let client = Opts::new(v, "plain").connect(broker.addr).await;
    assert!(
        !client.session_present,
        "a new clean session is never present"
    );
}

/// A PINGREQ before CONNECT is a protocol violation: the connection is closed and no
/// PINGRESP is sent.
async fn first_packet_must_be_connect(v: Version) {
    let broker = Broker::start().await;
    let mut raw = Raw::tcp(broker.addr, v).await;
    raw.send(&codec::pingreq()).await;
    let seen = raw.expect_closed(RECV_TIMEOUT).await;
    assert!(
        !seen.contains(&Packet::Pingresp),
        "PINGREQ before CONNECT was answered: {seen:?}"
    );
}

/// The reserved bit of the CONNECT flags must be 0 [MQTT-3.1.2-3]: the connection is
/// closed without a successful CONNACK.
async fn reserved_connect_flag_closes(v: Version) {
    let broker = Broker::start().await;
    let mut bytes = Connect::new(v, "reserved").encode();
    // Fixed header (2 bytes), "MQTT" string (6), level (1): the flags byte is at 9.
    bytes[9] |= 0x01;
    let mut raw = Raw::tcp(broker.addr, v).await;
    raw.send(&bytes).await;
    let seen = raw.expect_closed(RECV_TIMEOUT).await;
    assert!(
        !seen
            .iter()
            .any(|p| matches!(p, Packet::Connack { code: 0, .. })),
        "CONNECT with the reserved flag set was accepted: {seen:?}"
    );
}

/// A client with keep-alive 1 s that goes silent is dropped after about 1.5 s, and its
/// will is published.
async fn keep_alive_timeout_closes_and_publishes_will(v: Version) {
    let broker = Broker::start().await;
    let mut watcher = Raw::client(broker.addr, v, "watcher").await;
    assert_eq!(watcher.subscribe("will/ka", 1).await, vec![1]);

    let mut connect = Connect::new(v, "silent");
    connect.keep_alive = 1;
    connect.will = Some(Will {
        topic: "will/ka".into(),
        payload: b"silent is gone".to_vec(),
        qos: 1,
        ..Will::default()
    });
    let (mut silent, _) = Raw::connect(broker.addr, &connect).await;
    let start = Instant::now();
    silent.expect_closed(Duration::from_secs(5)).await;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed <= Duration::from_secs(3),
        "silent client with keep-alive 1 s dropped after {elapsed:?} (expected ~1.5 s)"
    );

    let will = watcher.recv_publish().await;
    assert_eq!(will.topic_str(), "will/ka");
    assert_eq!(will.payload, b"silent is gone");
}

async fn pingreq_gets_pingresp(v: Version) {
    let broker = Broker::start().await;
    let mut raw = Raw::client(broker.addr, v, "pinger").await;
    raw.send(&codec::pingreq()).await;
    assert_eq!(raw.recv().await, Packet::Pingresp);
}

/// With `--connect-timeout-secs 1`, a connection that sends nothing is closed after
/// about a second.
#[tokio::test]
async fn connect_timeout_closes_idle_socket() {
    let broker = Broker::opts().set("connect-timeout-secs", 1).start().await;
    let mut raw = Raw::tcp(broker.addr, Version::V4).await;
    let start = Instant::now();
    raw.expect_closed(Duration::from_secs(4)).await;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(800),
        "idle socket closed after only {elapsed:?}"
    );
}

/// The 3.1 protocol name "MQIsdp" with level 3 is refused with CONNACK 0x01
/// (unacceptable protocol version) and the connection is closed [MQTT-3.1.2-2].
#[tokio::test]
async fn mqisdp_level3_refused_with_0x01() {
    let broker = Broker::start().await;
    let mut body = Vec::new();
    codec::put_bytes(&mut body, b"MQIsdp");
    body.extend_from_slice(&[3, 0x02, 0, 60]);
    codec::put_bytes(&mut body, b"old-client");
    let mut raw = Raw::tcp(broker.addr, Version::V4).await;
    raw.send(&codec::frame(0x10, &body)).await;
    let seen = raw.expect_closed(RECV_TIMEOUT).await;
    assert!(
        matches!(seen.first(), Some(Packet::Connack { code: 0x01, .. })),
        "expected CONNACK 0x01 then close, got {seen:?}"
    );
}

/// Level 6 does not exist: CONNACK 0x01 (3.1.1 form) or 0x84 (5.0 form), then close.
#[tokio::test]
async fn protocol_level6_refused() {
    let broker = Broker::start().await;
    let mut bytes = Connect::new(Version::V4, "future").encode();
    bytes[8] = 6;
    let mut raw = Raw::tcp(broker.addr, Version::V4).await;
    raw.send(&bytes).await;
    let seen = raw.expect_closed(RECV_TIMEOUT).await;
    let code = match seen.first() {
        Some(Packet::Connack { code, .. }) => *code,
        // A 5.0-form CONNACK has properties the 3.1.1 decoder leaves in place; the
        // reason code is still the second byte.
        other => panic!("expected a refusing CONNACK then close, got {other:?}"),
    };
    assert!(
        code == 0x01 || code == 0x84,
        "CONNACK code {code:#04x}, expected 0x01 or 0x84"
    );
}

/// 5.0: an empty client id is accepted and the broker assigns one in CONNACK.
#[tokio::test]
async fn empty_client_id_v5_gets_assigned_id() {
    let broker = Broker::start().await;
    let (_raw, connack) = Raw::connect(broker.addr, &Connect::new(Version::V5, "")).await;
    let Packet::Connack { props, .. } = connack else {
        unreachable!()
    };
    let assigned = props.str(prop::ASSIGNED_CLIENT_ID);
    assert!(
        assigned.is_some_and(|id| !id.is_empty()),
        "no Assigned Client Identifier in CONNACK: {props:?}"
    );
}

/// 3.1.1: an empty client id with clean session 1 is accepted [MQTT-3.1.3-6].
#[tokio::test]
async fn empty_client_id_v4_clean_accepted() {
    let broker = Broker::start().await;
    let (mut raw, _) = Raw::connect(broker.addr, &Connect::new(Version::V4, "")).await;
    raw.ping().await;
}

/// 3.1.1: an empty client id with clean session 0 gets CONNACK 0x02 (identifier
/// rejected) and the connection is closed [MQTT-3.1.3-8].
#[tokio::test]
async fn empty_client_id_v4_persistent_rejected_0x02() {
    let broker = Broker::start().await;
    let mut connect = Connect::new(Version::V4, "");
    connect.clean = false;
    let (mut raw, first) = Raw::connect_with(broker.addr, &connect).await;
    assert!(
        matches!(first, Recv::Packet(Packet::Connack { code: 0x02, .. })),
        "expected CONNACK 0x02, got {first:?}"
    );
    raw.expect_closed(RECV_TIMEOUT).await;
}
