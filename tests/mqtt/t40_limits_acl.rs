//! Access rules from the config file, and connection / packet size limits.

use std::time::Duration;

use crate::support::client::{Ev, Opts};
use crate::support::codec::{Publish, Version};
use crate::support::raw::Raw;
use crate::support::{wait_until, Broker, RECV_TIMEOUT};

both!(
    acl_deny_subscribe,
    acl_deny_publish_for_client,
    max_connections_refuses_extra_client,
    oversize_packet_closes,
);

const DENY_SECRET: &str = r#"
[[acl]]
permission = "deny"
action = "subscribe"
topic = "secret/#"
"#;

/// Subscribing inside a denied filter gets 0x80; a `#` subscriber is granted but does
/// not receive messages on the denied topics.
async fn acl_deny_subscribe(v: Version) {
    let broker = Broker::opts().config(DENY_SECRET).start().await;
    let mut c = Opts::new(v, "curious").connect(broker.addr).await;
    assert_eq!(c.subscribe("secret/x", 1).await, vec![0x80]);
    assert_eq!(c.subscribe("secret/#", 1).await, vec![0x80]);
    assert_eq!(c.subscribe("#", 1).await, vec![1]);

    let mut publisher = Opts::new(v, "pub").connect(broker.addr).await;
    publisher.publish("secret/x", 1, false, b"classified").await;
    publisher.publish("public/x", 1, false, b"end").await;
    let before = c.recv_until(b"end").await;
    assert!(before.is_empty(), "`#` received denied topics: {before:?}");
}

/// Publishing denied for one client id: nothing is delivered and 5.0 PUBACK says 0x87;
/// other clients are unaffected.
async fn acl_deny_publish_for_client(v: Version) {
    let broker = Broker::opts()
        .config(
            r##"
[[acl]]
permission = "deny"
action = "publish"
topic = "#"
client_id = "muted"
"##,
        )
        .start()
        .await;
    let mut sub = Opts::new(v, "sub").connect(broker.addr).await;
    sub.subscribe("talk/#", 1).await;
    let mut muted = Opts::new(v, "muted").connect(broker.addr).await;
    let reason = muted.publish("talk/a", 1, false, b"muted says").await;
    if v == Version::V5 {
        assert_eq!(reason, 0x87, "PUBACK reason for a denied publish");
    }
    let mut other = Opts::new(v, "other").connect(broker.addr).await;
    other.publish("talk/b", 1, false, b"end").await;
    let before = sub.recv_until(b"end").await;
    assert!(before.is_empty(), "denied publish delivered: {before:?}");
}

/// With `--max-connections 2` a third client is refused (CONNACK 0x89 on 5.0, 0x03 on
/// 3.1.1, or a close); once a slot frees, clients are accepted again.
async fn max_connections_refuses_extra_client(v: Version) {
    let broker = Broker::opts().set("max-connections", 2).start().await;
    let first = Opts::new(v, "one").connect(broker.addr).await;
    let _second = Opts::new(v, "two").connect(broker.addr).await;
    match Opts::new(v, "three").try_connect(broker.addr).await {
        Ok(_) => panic!("a third connection was accepted"),
        Err(Ev::ConnAck { code, .. }) => {
            let busy = if v == Version::V5 { 0x89 } else { 0x03 };
            assert_eq!(code, busy, "CONNACK code for a refused connection");
        }
        Err(_closed) => {}
    }
    first.disconnect().await;
    let addr = broker.addr;
    wait_until(
        "a freed connection slot",
        RECV_TIMEOUT,
        Duration::from_millis(100),
        || async move { Opts::new(v, "four").try_connect(addr).await.is_ok() },
    )
    .await;
}

/// A packet above `--max-packet-size` closes the connection.
async fn oversize_packet_closes(v: Version) {
    let broker = Broker::opts().set("max-packet-size", 512).start().await;
    let mut raw = Raw::client(broker.addr, v, "big").await;
    raw.send(&Publish::new("big/t", 0, &[7u8; 1000]).encode(v))
        .await;
    raw.expect_closed(RECV_TIMEOUT).await;
}
