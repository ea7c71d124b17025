//! Sessions across nodes: a client id is one session cluster-wide.

use crate::support::client::v5;
use crate::support::cluster::{recv_data, wait_route, Cluster};
use crate::support::codec::{prop, Connect, PropVal, Props, Version};
use crate::support::raw::Raw;
use crate::support::RECV_TIMEOUT;

/// 5.0 client `roamer` with a persistent session on node 1 connects again on node 2:
/// node 1 closes the old connection with DISCONNECT 0x8E (session taken over), the new
/// connection resumes the session, and its subscription from node 1 now receives what
/// node 3 publishes, without subscribing again.
#[tokio::test]
async fn takeover_across_nodes_moves_the_session() {
    let c = Cluster::start(3).await;
    let mut connect = Connect::new(Version::V5, "roamer");
    connect.clean = false;
    connect.props = Props::new().with(prop::SESSION_EXPIRY, PropVal::U32(3600));
    // Raw, so that any legal DISCONNECT form is decoded.
    let (mut first, _) = Raw::connect(c.node(1).mqtt, &connect).await;
    assert_eq!(first.subscribe("tk/t", 1).await, [1]);
    // The subject is the takeover, not how soon other nodes see the SUBSCRIBE.
    c.wait_applied().await;

    let mut second = v5("roamer").persistent().connect(c.node(2).mqtt).await;
    assert!(second.session_present, "the session moved to node 2");
    let reason = first.expect_closed_reason(RECV_TIMEOUT).await;
    assert_eq!(
        reason,
        Some(0x8E),
        "DISCONNECT reason to the old connection"
    );

    let mut publisher = v5("pub").connect(c.node(3).mqtt).await;
    wait_route(&mut publisher, &mut second, "tk/t").await;
    assert!(publisher.publish("tk/t", 1, false, b"moved").await < 0x80);
    let m = recv_data(&mut second).await;
    assert_eq!((m.payload.as_slice(), m.qos), (&b"moved"[..], 1));
}
