//! `raftmq cluster status|leave|remove|snapshot`: asks a running node through its HTTP API (see
//! `http`) and prints the answer for a person, or one error line and exit status 1.

use std::process::ExitCode;
use std::time::Duration;

use cluster::{NodeStatus, Status};

use crate::cli::ClusterAction;
use crate::config::{read_secret, TOKEN_ENV};

/// Runs a subcommand: its output on stdout, or `raftmq: error: …` on stderr and status 1.
pub fn run(action: &ClusterAction) -> ExitCode {
    match execute(action) {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("raftmq: error: {}", e.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// The text to print, newline-terminated.
fn execute(action: &ClusterAction) -> Result<String, String> {
    let node = &action.node().http;
    // Read for the requests that need it only: `status` works without one.
    let token = || {
        let file = action.node().admin_token_file.as_deref();
        let env = std::env::var(TOKEN_ENV).ok();
        read_secret("admin_token_file", file, TOKEN_ENV, env)
    };
    match action {
        ClusterAction::Status { json, .. } => {
            let body = request(node, "GET", "/cluster", None)?;
            if *json {
                return Ok(format!("{}\n", body.trim_end()));
            }
            let status: Status = serde_json::from_str(&body)
                .map_err(|e| format!("node at {node} sent an unreadable status: {e}"))?;
            Ok(status_table(&status))
        }
        ClusterAction::Leave { .. } => {
            request(node, "POST", "/cluster/leave", token()?)?;
            Ok(format!("node at {node} left the cluster\n"))
        }
        ClusterAction::Snapshot { .. } => {
            let body = request(node, "POST", "/cluster/snapshot", token()?)?;
            let f: cluster::SnapshotFigures = serde_json::from_str(&body)
                .map_err(|e| format!("node at {node} sent an unreadable answer: {e}"))?;
            Ok(format!(
                "node at {node} stored a snapshot of {} bytes in {:.0} ms (applies held {:.0} ms)\n",
                f.last_bytes, f.last_build_ms, f.last_hold_ms
            ))
        }
        ClusterAction::Remove { id, .. } => {
            let path = format!("/cluster/remove/{id}");
            request(node, "POST", &path, token()?)?;
            Ok(format!(
                "node {id} removed from the cluster (asked {node})\n"
            ))
        }
    }
}

/// Long enough for a membership change, which waits for a Raft commit (and, on leave,
/// for leadership to move); short enough that a hung node does not hang a script.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The body of a 2xx answer. Anything else becomes one line saying which node failed
/// and why, using the `{"error": …}` the API sends when there is one. `token` goes as
/// `Authorization: Bearer`.
fn request(
    node: &str,
    method: &str,
    path: &str,
    token: Option<cluster::Secret>,
) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_global(Some(TIMEOUT))
        // Nodes are dialled directly: an HTTP(S)_PROXY meant for the internet must not
        // capture a cluster-internal address.
        .proxy(None)
        .build()
        .into();
    let url = format!("http://{node}{path}");
    let sent = match method {
        "POST" => {
            let mut post = agent.post(&url);
            if let Some(token) = &token {
                post = post.header("Authorization", format!("Bearer {}", token.expose()));
            }
            post.send_empty()
        }
        _ => agent.get(&url).call(),
    };
    let mut response = sent.map_err(|e| unreachable_node(node, e))?;
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("node at {node}: reading its answer: {e}"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(body);
    }
    let reason = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    Err(format!("node at {node} answered {status}: {reason}"))
}

fn unreachable_node(node: &str, error: ureq::Error) -> String {
    match error {
        ureq::Error::Io(e) => format!("cannot reach node at {node}: {e}"),
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
            format!("cannot reach node at {node}: {error}")
        }
        ureq::Error::Timeout(_) => format!("node at {node} did not answer in time"),
        other => format!("node at {node}: {other}"),
    }
}

/// `node N: <role>, leader L, …`, then one aligned row per member, by id.
fn status_table(status: &Status) -> String {
    let opt = |v: Option<u64>| v.map_or_else(|| "none".to_string(), |v| v.to_string());
    let mut out = format!(
        "node {}: {}, leader {}, term {}, commit {}, applied {}\n",
        status.node_id,
        status.role,
        opt(status.leader),
        status.term,
        opt(status.commit_index),
        opt(status.applied_index),
    );
    let mut nodes: Vec<&NodeStatus> = status.nodes.iter().collect();
    nodes.sort_by_key(|n| n.id);
    let mut rows = vec![["id", "role", "cluster_addr", "mqtt_addr", "http_addr"].map(String::from)];
    for node in nodes {
        let role = match (Some(node.id) == status.leader, node.voter) {
            (true, _) => "leader",
            (false, true) => "voter",
            (false, false) => "learner",
        };
        let addr = |a: &Option<String>| a.clone().unwrap_or_else(|| "-".to_string());
        rows.push([
            node.id.to_string(),
            role.to_string(),
            node.cluster_addr.clone(),
            addr(&node.mqtt_addr),
            addr(&node.http_addr),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::http::fake::{Server, TOKEN};
    use clap::Parser;

    /// A file holding `token`, removed on drop.
    fn token_file(token: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes()).unwrap();
        file
    }

    fn action(args: &[&str]) -> ClusterAction {
        let cli = Cli::try_parse_from(["raftmq", "cluster"].iter().chain(args)).unwrap();
        let Some(Command::Cluster { action }) = cli.command else {
            panic!("no subcommand in {args:?}")
        };
        action
    }

    #[test]
    fn status_prints_a_table() {
        let server = Server::start();
        let http = server.addr.to_string();
        let output = execute(&action(&["status", "--http", &http])).unwrap();
        let expected = "\
node 1: leader, leader 1, term 3, commit 10, applied 10
id  role     cluster_addr    mqtt_addr       http_addr
1   leader   127.0.0.1:7000  127.0.0.1:1883  127.0.0.1:8080
2   learner  127.0.0.2:7000  127.0.0.2:1883  127.0.0.2:8080
";
        assert_eq!(output, expected);
    }

    #[test]
    fn status_json_is_the_nodes_answer() {
        let server = Server::start();
        let http = server.addr.to_string();
        let output = execute(&action(&["status", "--json", "--http", &http])).unwrap();
        let status: Status = serde_json::from_str(&output).unwrap();
        assert_eq!(status.nodes.len(), 2);
        assert!(output.ends_with("}\n"));
    }

    #[test]
    fn status_reads_nulls_and_unknown_roles() {
        let status: Status = serde_json::from_value(serde_json::json!({
            "node_id": 4, "role": "learner", "leader": null, "term": 0,
            "commit_index": null, "applied_index": null, "last_log_index": null,
            "ready": false, "future_field": 1,
            "nodes": [{"id": 4, "voter": false, "cluster_addr": "h:7000"}],
        }))
        .unwrap();
        assert_eq!(
            status_table(&status),
            "node 4: learner, leader none, term 0, commit none, applied none\n\
             id  role     cluster_addr  mqtt_addr  http_addr\n\
             4   learner  h:7000        -          -\n"
        );
    }

    #[test]
    fn leave_and_remove_confirm_on_one_line() {
        let server = Server::start();
        let http = server.addr.to_string();
        let file = token_file(TOKEN);
        let token = file.path().to_str().unwrap();
        let left = execute(&action(&[
            "leave",
            "--http",
            &http,
            "--admin-token-file",
            token,
        ]));
        assert_eq!(left.unwrap(), format!("node at {http} left the cluster\n"));
        let removed = execute(&action(&[
            "remove",
            "2",
            "--http",
            &http,
            "--admin-token-file",
            token,
        ]))
        .unwrap();
        assert!(removed.starts_with("node 2 removed"), "{removed}");
        let snapshot = execute(&action(&[
            "snapshot",
            "--http",
            &http,
            "--admin-token-file",
            token,
        ]))
        .unwrap();
        assert_eq!(
            snapshot,
            format!(
                "node at {http} stored a snapshot of 4096 bytes in 12 ms (applies held 3 ms)\n"
            )
        );
        assert_eq!(
            *server.control.calls.lock().unwrap(),
            ["leave", "remove 2", "snapshot"]
        );
    }

    #[test]
    fn failures_say_which_node_and_why() {
        let server = Server::start();
        let http = server.addr.to_string();
        let file = token_file(TOKEN);
        let token = file.path().to_str().unwrap();
        let remove_9 = ["remove", "9", "--http", &http, "--admin-token-file", token];
        let err = execute(&action(&remove_9)).unwrap_err();
        assert_eq!(
            err,
            format!("node at {http} answered 500 Internal Server Error: node 9 is not a member")
        );
        server.stop().unwrap();
        let err = execute(&action(&["leave", "--http", &http])).unwrap_err();
        assert!(
            err.starts_with(&format!("cannot reach node at {http}: ")),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }

    #[test]
    fn a_wrong_or_missing_token_is_reported() {
        let server = Server::start();
        let http = server.addr.to_string();
        let file = token_file("another-token-0123456789");
        let wrong = ["remove", "2", "--http", &http, "--admin-token-file"];
        let err = execute(&action(
            &[&wrong[..], &[file.path().to_str().unwrap()]].concat(),
        ));
        assert!(err.unwrap_err().contains("401 Unauthorized"));
        let short = token_file("short");
        let err = execute(&action(
            &[&wrong[..], &[short.path().to_str().unwrap()]].concat(),
        ));
        assert!(
            err.unwrap_err().starts_with("admin_token_file "),
            "read before sending"
        );
        assert!(server.control.calls.lock().unwrap().is_empty());
    }

    #[test]
    fn http_defaults_to_the_local_node_and_must_be_host_port() {
        assert_eq!(action(&["status"]).node().http, "127.0.0.1:8080");
        assert!(Cli::try_parse_from(["raftmq", "cluster", "leave", "--http", "nope"]).is_err());
    }

    #[test]
    fn subcommands_take_no_server_flags() {
        let mixed = Cli::try_parse_from(["raftmq", "--node-id", "2", "cluster", "status"]);
        assert!(mixed.is_err());
        assert!(Cli::try_parse_from(["raftmq", "cluster", "remove"]).is_err());
    }
}
