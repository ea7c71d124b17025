//! Forming a cluster from `--join` flags: every node ready, one leader, and every node
//! listing the same three voters with their addresses, over HTTP and through the CLI.

use std::time::Duration;

use crate::support::cluster::{http_get, members_of, Cluster};

#[tokio::test]
async fn three_nodes_form_a_cluster() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    let mut roles = Vec::new();
    for id in 1..=3 {
        let health = http_get(c.node(id).http, "/health").await;
        assert!(
            matches!(health, Ok((200, _))),
            "node {id} /health: {health:?}"
        );
        let s = c.status(id).await;
        assert_eq!(s["node_id"], id, "node {id}: {s}");
        assert_eq!(s["leader"], leader, "node {id}: {s}");
        assert_eq!(s["ready"], true, "node {id}: {s}");
        roles.push(s["role"].as_str().unwrap_or_default().to_string());
        assert_eq!(
            members_of(&s),
            (vec![1, 2, 3], vec![1, 2, 3]),
            "members and voters seen by node {id}: {s}"
        );
        for n in s["nodes"].as_array().expect("nodes") {
            let node = c.node(n["id"].as_u64().expect("id"));
            assert_eq!(n["cluster_addr"], node.cluster.to_string(), "{n}");
            assert_eq!(n["mqtt_addr"], node.mqtt.to_string(), "{n}");
            assert_eq!(n["http_addr"], node.http.to_string(), "{n}");
        }
    }
    roles.sort();
    assert_eq!(roles, ["follower", "follower", "leader"]);

    let http = c.node(2).http.to_string();
    let out = c.run(
        &["cluster", "status", "--http", &http],
        Duration::from_secs(10),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cluster status: {stderr}");
    for id in 1..=3 {
        let addr = c.node(id).cluster.to_string();
        assert!(
            stdout.contains(&addr),
            "node {id} ({addr}) missing:\n{stdout}"
        );
    }

    let out = c.run(
        &["cluster", "status", "--http", &http, "--json"],
        Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json output");
    assert_eq!(members_of(&json), (vec![1, 2, 3], vec![1, 2, 3]), "{json}");
}
