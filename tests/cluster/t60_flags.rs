//! Refused starts: each exits non-zero with a stderr line saying why, and leaves a
//! running cluster alone.

use std::process::Output;
use std::time::Duration;

use crate::support::cluster::{free_addrs, members_of, Cluster};
use crate::support::run_raftmq;

/// How long a refused start may take (the join attempt is bounded by the node).
const REFUSAL: Duration = Duration::from_secs(30);

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Flags for a process on the loopback ports 0 with its own data dir.
fn args<'a>(data_dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--mqtt-addr",
        "127.0.0.1:0",
        "--cluster-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--data-dir",
        data_dir,
    ];
    args.extend_from_slice(extra);
    args
}

/// A fresh node with `--node-id 2` joining a cluster where 2 is a member.
#[tokio::test]
async fn duplicate_node_id_is_refused() {
    let c = Cluster::start(2).await;
    let [mqtt, cluster, http] = free_addrs(c.ip(3)).map(|a| a.to_string());
    let data_dir = c.dir().join("impostor").display().to_string();
    let join = c.node(1).cluster.to_string();
    let secret = c.secret_file().display().to_string();
    let out = run_raftmq(
        &[
            "--node-id",
            "2",
            "--mqtt-addr",
            &mqtt,
            "--cluster-addr",
            &cluster,
            "--http-addr",
            &http,
            "--data-dir",
            &data_dir,
            "--join",
            &join,
            "--cluster-secret-file",
            &secret,
        ],
        REFUSAL,
    );
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already a member"),
        "{}",
        stderr(&out)
    );
    c.wait_leader().await;
    let s = c.status(1).await;
    assert_eq!(members_of(&s), (vec![1, 2], vec![1, 2]), "{s}");
    let two = s["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["id"] == 2));
    assert_eq!(
        two.map(|n| &n["cluster_addr"]),
        Some(&serde_json::json!(c.node(2).cluster.to_string())),
        "node 2 keeps its address: {s}"
    );
}

#[tokio::test]
async fn join_with_nothing_listening_gives_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data").display().to_string();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a cluster secret of 32 bytes....").expect("secret file");
    let extra = [
        "--node-id",
        "5",
        "--join",
        "127.0.0.1:1",
        "--join-timeout-secs",
        "3",
        "--cluster-secret-file",
        secret.to_str().expect("utf-8 path"),
    ];
    let out = run_raftmq(&args(&data_dir, &extra), REFUSAL);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot join"), "{}", stderr(&out));
}

#[tokio::test]
async fn data_dir_in_use_is_refused() {
    let c = Cluster::start(1).await;
    let data_dir = c.node(1).data_dir.display().to_string();
    let out = run_raftmq(&args(&data_dir, &["--node-id", "1"]), REFUSAL);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
    assert!(c.is_ready(1).await, "the running node is unharmed");
}

#[tokio::test]
async fn join_needs_node_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data").display().to_string();
    let out = run_raftmq(&args(&data_dir, &["--join", "127.0.0.1:1"]), REFUSAL);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("node_id") || err.contains("node-id"),
        "stderr does not name node_id: {err}"
    );
}
