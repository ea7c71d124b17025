//! Membership changes: a node joins a running cluster and becomes a voter; the CLI
//! removes it again.

use std::time::Duration;

use crate::support::client::v4;
use crate::support::cluster::{recv_data, wait_route, Cluster};

#[tokio::test]
async fn fourth_node_joins_then_is_removed() {
    let mut c = Cluster::start(3).await;
    let id = c.add_node().await;
    assert_eq!(id, 4);
    c.wait_voters(&[1, 2, 3, 4], &[1, 2, 3, 4]).await;
    let s = c.status(1).await;
    let four = s["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["id"] == 4))
        .unwrap_or_else(|| panic!("node 4 not listed: {s}"));
    assert_eq!(four["cluster_addr"], c.node(4).cluster.to_string(), "{s}");
    assert_eq!(four["mqtt_addr"], c.node(4).mqtt.to_string(), "{s}");

    // The new node routes like the others.
    let mut sub = v4("sub-4").connect(c.node(4).mqtt).await;
    sub.subscribe("mb/#", 1).await;
    let mut p = v4("pub-1").connect(c.node(1).mqtt).await;
    wait_route(&mut p, &mut sub, "mb/probe").await;
    p.publish("mb/x", 1, false, b"to four").await;
    assert_eq!(recv_data(&mut sub).await.payload, b"to four");
    drop(sub);

    let http = c.node(1).http.to_string();
    let token = c.token_file().display().to_string();
    let out = c.run(
        &[
            "cluster",
            "remove",
            "4",
            "--http",
            &http,
            "--admin-token-file",
            &token,
        ],
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "cluster remove 4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait_voters(&[1, 2, 3], &[1, 2, 3]).await;
    c.kill(4);
    c.wait_leader().await;
    let mut sub = v4("sub-2").connect(c.node(2).mqtt).await;
    sub.subscribe("mb/#", 1).await;
    wait_route(&mut p, &mut sub, "mb/probe").await;
    p.publish("mb/y", 1, false, b"to two").await;
    assert_eq!(recv_data(&mut sub).await.payload, b"to two");
}
