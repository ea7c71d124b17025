//! MQTT 5.0 features: subscription options and identifiers, topic aliases, message
//! expiry, forwarded properties, packet size limits, flow control, server keep-alive.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Filter, PublishProperties, RetainForwardRule};
use rumqttc::v5::mqttbytes::QoS;
use tokio::time::Instant;

use crate::support::client::Opts;
use crate::support::codec::{prop, Connect, Packet, PropVal, Props, Publish, Version};
use crate::support::raw::{Raw, Recv};
use crate::support::{Broker, QUIET, RECV_TIMEOUT};

const V5: Version = Version::V5;

fn filter(path: &str, qos: QoS) -> Filter {
    Filter::new(path, qos)
}

fn connack_props(connack: &Packet) -> &Props {
    match connack {
        Packet::Connack { props, .. } => props,
        other => panic!("not a CONNACK: {other:?}"),
    }
}

/// No Local: a client does not receive its own publications on that subscription.
#[tokio::test]
async fn no_local() {
    let broker = Broker::start().await;
    let mut me = Opts::new(V5, "me").connect(broker.addr).await;
    let mut f = filter("nl/t", QoS::AtLeastOnce);
    f.nolocal = true;
    assert_eq!(me.subscribe_v5(f, None).await, vec![1]);
    me.publish("nl/t", 1, false, b"mine").await;
    let mut other = Opts::new(V5, "other").connect(broker.addr).await;
    other.publish("nl/t", 1, false, b"theirs").await;
    let before = me.recv_until(b"theirs").await;
    assert!(
        before.is_empty(),
        "own message delivered despite No Local: {before:?}"
    );
}

/// Retain As Published: a live retained message keeps retain 1 on an RAP subscription
/// and has retain 0 on a normal one.
#[tokio::test]
async fn retain_as_published() {
    let broker = Broker::start().await;
    let mut rap = Opts::new(V5, "rap").connect(broker.addr).await;
    let mut f = filter("rap/t", QoS::AtLeastOnce);
    f.preserve_retain = true;
    rap.subscribe_v5(f, None).await;
    let mut plain = Opts::new(V5, "plain").connect(broker.addr).await;
    plain.subscribe("rap/t", 1).await;
    let mut publisher = Opts::new(V5, "pub").connect(broker.addr).await;
    publisher.publish("rap/t", 1, true, b"r").await;
    assert!(
        rap.recv().await.retain,
        "Retain As Published keeps the flag"
    );
    assert!(!plain.recv().await.retain);
}

/// Retain Handling 0 sends retained messages on every SUBSCRIBE, 1 only when the
/// subscription is new, 2 never.
#[tokio::test]
async fn retain_handling() {
    let broker = Broker::start().await;
    let mut publisher = Opts::new(V5, "pub").connect(broker.addr).await;
    publisher.publish("rh/t", 1, true, b"stored").await;

    let mut c = Opts::new(V5, "rh").connect(broker.addr).await;
    for (rule, resubscribe_gets_it) in [
        (RetainForwardRule::OnEverySubscribe, true),
        (RetainForwardRule::OnNewSubscribe, false),
    ] {
        let mut f = filter("rh/t", QoS::AtLeastOnce);
        f.retain_forward_rule = rule.clone();
        c.subscribe_v5(f.clone(), None).await;
        assert_eq!(
            c.recv().await.payload,
            b"stored",
            "{rule:?} on a new subscription"
        );
        c.subscribe_v5(f, None).await;
        // Barrier: a live message on the same subscription comes after any retained one.
        publisher.publish("rh/t", 1, false, b"end").await;
        let before = c.recv_until(b"end").await;
        assert_eq!(
            before.len(),
            usize::from(resubscribe_gets_it),
            "{rule:?} on an existing subscription: {before:?}"
        );
        c.unsubscribe("rh/t").await;
    }

    let mut f = filter("rh/t", QoS::AtLeastOnce);
    f.retain_forward_rule = RetainForwardRule::Never;
    c.subscribe_v5(f, None).await;
    publisher.publish("rh/t", 1, false, b"end").await;
    let before = c.recv_until(b"end").await;
    assert!(before.is_empty(), "Retain Handling 2 sent {before:?}");
}

/// Subscription identifiers come back on matching messages; overlapping subscriptions
/// give one copy carrying both identifiers.
#[tokio::test]
async fn subscription_identifiers() {
    let broker = Broker::start().await;
    let mut c = Opts::new(V5, "ids").connect(broker.addr).await;
    c.subscribe_v5(filter("si/#", QoS::AtLeastOnce), Some(7))
        .await;
    c.subscribe_v5(filter("si/a", QoS::AtLeastOnce), Some(9))
        .await;
    let mut publisher = Opts::new(V5, "pub").connect(broker.addr).await;
    publisher.publish("si/a", 1, false, b"both").await;
    publisher.publish("si/b", 1, false, b"one").await;

    let m = c.recv().await;
    assert_eq!(m.payload, b"both");
    let mut ids = m.props.expect("properties").subscription_identifiers;
    ids.sort_unstable();
    assert_eq!(ids, [7, 9]);
    let m = c.recv().await;
    assert_eq!(
        m.payload, b"one",
        "overlapping subscriptions gave a second copy"
    );
    assert_eq!(m.props.expect("properties").subscription_identifiers, [7]);
}

/// A client may publish with topic + alias, then with an empty topic and the alias
/// alone; subscribers always see the full topic.
#[tokio::test]
async fn topic_alias_from_client() {
    let broker = Broker::start().await;
    let mut sub = Raw::client(broker.addr, V5, "sub").await;
    sub.subscribe("alias/#", 1).await;
    let (mut raw, connack) = Raw::connect(broker.addr, &Connect::new(V5, "aliaser")).await;
    let max = connack_props(&connack)
        .int(prop::TOPIC_ALIAS_MAXIMUM)
        .unwrap_or(0);
    assert!(max >= 1, "CONNACK Topic Alias Maximum {max}");

    let mut first = Publish::new("alias/long/topic", 1, b"first");
    first.props = Props::new().with(prop::TOPIC_ALIAS, PropVal::U16(1));
    raw.publish(first).await;
    let mut second = Publish::new("", 1, b"second");
    second.props = Props::new().with(prop::TOPIC_ALIAS, PropVal::U16(1));
    raw.publish(second).await;

    for payload in [&b"first"[..], b"second"] {
        let m = sub.recv_acked().await;
        assert_eq!(
            (m.topic_str().as_str(), m.payload.as_slice()),
            ("alias/long/topic", payload)
        );
    }
}

/// An alias above the CONNACK's Topic Alias Maximum (or 0) is a protocol error:
/// DISCONNECT 0x94.
#[tokio::test]
async fn topic_alias_above_maximum_disconnects_0x94() {
    let broker = Broker::opts().set("topic-alias-maximum", 2).start().await;
    for alias in [3u16, 0] {
        let (mut raw, connack) = Raw::connect(broker.addr, &Connect::new(V5, "over")).await;
        assert_eq!(
            connack_props(&connack).int(prop::TOPIC_ALIAS_MAXIMUM),
            Some(2)
        );
        let mut p = Publish::new("alias/t", 0, b"x");
        p.props = Props::new().with(prop::TOPIC_ALIAS, PropVal::U16(alias));
        raw.send(&p.encode(V5)).await;
        let reason = raw.expect_closed_reason(RECV_TIMEOUT).await;
        if alias == 0 {
            // The spec forbids alias 0 without naming a code: 0x94, 0x82 or 0x81.
            assert!(
                matches!(reason, Some(0x94 | 0x82 | 0x81)),
                "alias 0: {reason:?}"
            );
        } else {
            assert_eq!(reason, Some(0x94), "alias {alias}");
        }
    }
}

/// A queued message whose expiry passes while the session is offline is dropped;
/// one that has not expired is delivered with the remaining interval.
#[tokio::test]
async fn message_expiry_while_offline() {
    let broker = Broker::start().await;
    let c = Opts::new(V5, "offline")
        .persistent()
        .connect(broker.addr)
        .await;
    let mut c = c;
    c.subscribe("me/t", 1).await;
    c.disconnect().await;

    let mut publisher = Opts::new(V5, "pub").connect(broker.addr).await;
    let expiring = PublishProperties {
        message_expiry_interval: Some(1),
        ..PublishProperties::default()
    };
    publisher
        .publish_v5("me/t", 1, false, b"short", expiring)
        .await;
    let lasting = PublishProperties {
        message_expiry_interval: Some(60),
        ..PublishProperties::default()
    };
    publisher
        .publish_v5("me/t", 1, false, b"long", lasting)
        .await;
    // The scenario is the passage of time itself.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut c = Opts::new(V5, "offline")
        .persistent()
        .connect(broker.addr)
        .await;
    assert!(c.session_present);
    let m = c.recv().await;
    assert_eq!(m.payload, b"long", "the expired message was delivered");
    let left = m.props.and_then(|p| p.message_expiry_interval);
    assert!(
        left.is_some_and(|s| (1..=59).contains(&s)),
        "remaining expiry after 2 s of 60 s: {left:?}"
    );
}

/// Payload format, content type, response topic, correlation data and user properties
/// reach the subscriber unchanged (user properties in order).
#[tokio::test]
async fn publish_properties_forwarded() {
    let broker = Broker::start().await;
    let mut sub = Opts::new(V5, "sub").connect(broker.addr).await;
    sub.subscribe("props/t", 1).await;
    let mut publisher = Opts::new(V5, "pub").connect(broker.addr).await;
    let sent = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("props/reply".into()),
        correlation_data: Some(Bytes::from_static(b"\x00corr\xff")),
        user_properties: vec![
            ("k".into(), "v1".into()),
            ("a".into(), "b".into()),
            ("k".into(), "v2".into()),
        ],
        ..PublishProperties::default()
    };
    publisher
        .publish_v5("props/t", 1, false, b"{}", sent.clone())
        .await;
    let got = sub.recv().await.props.expect("properties");
    assert_eq!(got.payload_format_indicator, sent.payload_format_indicator);
    assert_eq!(got.content_type, sent.content_type);
    assert_eq!(got.response_topic, sent.response_topic);
    assert_eq!(got.correlation_data, sent.correlation_data);
    assert_eq!(got.user_properties, sent.user_properties);
}

/// A client with Maximum Packet Size 100 never receives a larger PUBLISH: it is
/// dropped for that client, and later small ones still arrive.
#[tokio::test]
async fn client_maximum_packet_size_respected() {
    let broker = Broker::start().await;
    let mut connect = Connect::new(V5, "small");
    connect.props = Props::new().with(prop::MAXIMUM_PACKET_SIZE, PropVal::U32(100));
    let (mut small, _) = Raw::connect(broker.addr, &connect).await;
    small.subscribe("mps/t", 1).await;
    let mut big = Raw::client(broker.addr, V5, "big").await;
    big.subscribe("mps/t", 1).await;
    let mut publisher = Raw::client(broker.addr, V5, "pub").await;
    publisher.pub_msg("mps/t", 1, &[b'x'; 500]).await;
    publisher.pub_msg("mps/t", 1, b"small").await;

    assert_eq!(
        big.recv_acked().await.payload.len(),
        500,
        "control: others get it"
    );
    let m = small.recv_acked().await;
    assert_eq!(
        m.payload, b"small",
        "oversize PUBLISH sent to a client with max 100"
    );
    small.expect_no_publish(QUIET).await;
}

/// A client sending a packet above `--max-packet-size` is disconnected with 0x95.
#[tokio::test]
async fn oversize_packet_from_client_disconnects_0x95() {
    let broker = Broker::opts().set("max-packet-size", 1024).start().await;
    let (mut raw, connack) = Raw::connect(broker.addr, &Connect::new(V5, "big")).await;
    assert_eq!(
        connack_props(&connack).int(prop::MAXIMUM_PACKET_SIZE),
        Some(1024),
        "CONNACK advertises Maximum Packet Size"
    );
    raw.send(&Publish::new("big/t", 0, &[0u8; 2000]).encode(V5))
        .await;
    assert_eq!(raw.expect_closed_reason(RECV_TIMEOUT).await, Some(0x95));
}

/// CONNACK carries `--receive-maximum`; a client with more unacknowledged QoS 2
/// PUBLISHes than that gets DISCONNECT 0x93.
#[tokio::test]
async fn receive_maximum_exceeded_disconnects_0x93() {
    let broker = Broker::opts().set("receive-maximum", 2).start().await;
    let (mut raw, connack) = Raw::connect(broker.addr, &Connect::new(V5, "flood")).await;
    assert_eq!(connack_props(&connack).int(prop::RECEIVE_MAXIMUM), Some(2));
    for pkid in 1..=3u16 {
        let mut p = Publish::new("flood/t", 2, b"x");
        p.pkid = pkid;
        raw.send(&p.encode(V5)).await;
    }
    let seen = raw.expect_closed(RECV_TIMEOUT).await;
    let reason = seen.iter().find_map(|p| match p {
        Packet::Disconnect { reason, .. } => Some(*reason),
        _ => None,
    });
    assert_eq!(reason, Some(0x93), "packets before close: {seen:?}");
}

/// `--max-keep-alive-secs` caps the keep-alive: 5.0 CONNACK carries Server Keep Alive and
/// a silent client is dropped at the capped interval. A 3.1.1 client cannot be told the
/// cap, so one asking for more is refused (CONNACK 0x02), and one within it is held to
/// its own keep-alive.
#[tokio::test]
async fn server_keep_alive_caps_keep_alive() {
    let broker = Broker::opts().set("max-keep-alive-secs", 1).start().await;
    let (mut v5, connack) = Raw::connect(broker.addr, &Connect::new(V5, "asks-60")).await;
    assert_eq!(
        connack_props(&connack).int(prop::SERVER_KEEP_ALIVE),
        Some(1)
    );
    let (mut refused, first) =
        Raw::connect_with(broker.addr, &Connect::new(Version::V4, "asks-60-v4")).await;
    assert!(
        matches!(first, Recv::Packet(Packet::Connack { code: 0x02, .. })),
        "3.1.1 keep-alive above the cap: expected CONNACK 0x02, got {first:?}"
    );
    refused.expect_closed(Duration::from_secs(5)).await;
    let mut within = Connect::new(Version::V4, "asks-1-v4");
    within.keep_alive = 1;
    let (mut v4, _) = Raw::connect(broker.addr, &within).await;
    let start = Instant::now();
    v5.expect_closed(Duration::from_secs(5)).await;
    v4.expect_closed(Duration::from_secs(5)).await;
    assert!(
        start.elapsed() <= Duration::from_secs(4),
        "capped keep-alive not enforced in time: {:?}",
        start.elapsed()
    );
}

/// A QoS 1 PUBLISH with no subscribers gets PUBACK 0x00 or 0x10, never an error.
#[tokio::test]
async fn puback_reason_without_subscribers() {
    let broker = Broker::start().await;
    let mut raw = Raw::client(broker.addr, V5, "lonely").await;
    let reason = raw.pub_msg("nobody/listens", 1, b"x").await;
    assert!(
        reason == 0x00 || reason == 0x10,
        "PUBACK reason {reason:#04x}"
    );
}

/// CONNECT property Request Problem Information (the codec has no name for it).
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;

/// A DISCONNECT the server sends for a protocol violation carries the reason code and a
/// Reason String saying what was wrong: a PUBLISH to a wildcard topic (0x90), and one
/// naming a topic alias that was never set (a protocol error, 0x82).
#[tokio::test]
async fn server_disconnect_carries_reason_string() {
    let broker = Broker::start().await;
    let wildcard = Publish::new("rs/+", 0, b"x");
    let mut unknown_alias = Publish::new("", 0, b"x");
    unknown_alias.props = Props::new().with(prop::TOPIC_ALIAS, PropVal::U16(1));
    for (what, publish, code) in [
        ("wildcard topic", wildcard, 0x90),
        ("unknown topic alias", unknown_alias, 0x82),
    ] {
        let mut raw = Raw::client(broker.addr, V5, "violator").await;
        raw.send(&publish.encode(V5)).await;
        let seen = raw.expect_closed(RECV_TIMEOUT).await;
        let (reason, props) = seen
            .iter()
            .find_map(|p| match p {
                Packet::Disconnect { reason, props } => Some((*reason, props)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{what}: closed without DISCONNECT: {seen:?}"));
        assert_eq!(reason, code, "{what}: DISCONNECT reason code");
        assert!(
            props
                .str(prop::REASON_STRING)
                .is_some_and(|s| !s.is_empty()),
            "{what}: DISCONNECT {reason:#04x} without a Reason String: {props:?}"
        );
    }
}

/// A failure PUBACK (0x87, publish denied by an access rule) carries a Reason String,
/// unless the client's CONNECT set Request Problem Information to 0: then it carries
/// neither a Reason String nor User Properties [MQTT-3.1.2-29].
#[tokio::test]
async fn failure_ack_carries_reason_string_unless_problem_info_off() {
    let broker = Broker::opts()
        .config(
            r##"
[[acl]]
permission = "deny"
action = "publish"
topic = "denied/#"
"##,
        )
        .start()
        .await;
    for (problem_info, wants_text) in [(None, true), (Some(1), true), (Some(0), false)] {
        let mut connect = Connect::new(V5, "denied");
        if let Some(v) = problem_info {
            connect.props = Props::new().with(REQUEST_PROBLEM_INFORMATION, PropVal::Byte(v));
        }
        let (mut raw, _) = Raw::connect(broker.addr, &connect).await;
        let mut publish = Publish::new("denied/t", 1, b"x");
        publish.pkid = 7;
        raw.send(&publish.encode(V5)).await;
        let ack = raw
            .recv_where("PUBACK", |p| match p {
                Packet::Puback(a) if a.pkid == 7 => Some(a.clone()),
                _ => None,
            })
            .await;
        let case = format!("Request Problem Information {problem_info:?}");
        assert_eq!(ack.reason, 0x87, "{case}: PUBACK reason");
        let text = ack.props.str(prop::REASON_STRING);
        if wants_text {
            assert!(
                text.is_some_and(|s| !s.is_empty()),
                "{case}: failure PUBACK without a Reason String: {:?}",
                ack.props
            );
        } else {
            assert_eq!(text, None, "{case}: Reason String sent anyway");
            assert!(
                ack.props.user_properties().is_empty(),
                "{case}: User Properties sent anyway: {:?}",
                ack.props
            );
        }
        raw.disconnect().await;
    }
}
