//! `GET /cluster/view`: the whole cluster as the status page shows it, from whichever
//! node serves the page. That node reads its own figures and asks every other member's
//! HTTP API (`NodeInfo.http_addr`, from the replicated membership) for theirs, `GET
//! /node` and `GET /events`, all at once and each within [`PEER_TIMEOUT`]: a member
//! that does not answer in time is shown down, with the reason. The events of the
//! nodes that answered are merged by time; a leader change that every node saw is
//! shown once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::http::Control;

/// How long a member has to answer, connection included.
pub const PEER_TIMEOUT: Duration = Duration::from_millis(500);
/// Events in the view: the newest.
const MAX_EVENTS: usize = 200;

/// What one member said: its `/node` and `/events`, or why it could not be asked.
type Answer = Result<(Value, Value), String>;

/// The view: this node's status (leader, term), every member with its figures or
/// `"state": "down"`, and the merged events, oldest first.
pub async fn gather(control: Arc<dyn Control>) -> Value {
    let status = control.status();
    let me = status["node_id"].as_u64();
    let members = status["nodes"].as_array().cloned().unwrap_or_default();
    let asks: Vec<_> = members
        .iter()
        .map(|m| {
            let (id, http) = (m["id"].as_u64(), m["http_addr"].as_str().map(String::from));
            let control = control.clone();
            tokio::spawn(async move {
                if id == me {
                    return Ok((control.node(), control.events(None)));
                }
                ask(http).await
            })
        })
        .collect();
    let declared_down = |id: &Value| {
        status["down"]
            .as_array()
            .is_some_and(|down| down.contains(id))
    };
    let mut nodes = Vec::with_capacity(members.len());
    let mut events = Vec::new();
    for (m, ask) in members.iter().zip(asks) {
        let answer = ask.await.unwrap_or_else(|e| Err(e.to_string()));
        let (state, node, error) = match answer {
            Ok((node, mut evs)) => {
                if let Some(evs) = evs.as_array_mut() {
                    events.append(evs);
                }
                ("up", node, Value::Null)
            }
            Err(e) => ("down", Value::Null, Value::String(e)),
        };
        nodes.push(json!({
            "id": m["id"],
            "voter": m["voter"],
            "cluster_addr": m["cluster_addr"],
            "mqtt_addr": m["mqtt_addr"],
            "http_addr": m["http_addr"],
            "state": state,
            "reachable": state == "up",
            "declared_down": declared_down(&m["id"]),
            "error": error,
            "node": node,
        }));
    }
    json!({
        "served_by": status["node_id"],
        "at_ms": broker_core::replicated::now_ms(),
        "leader": status["leader"],
        "term": status["term"],
        "nodes": nodes,
        "events": merge(events),
    })
}

/// A member's `/node` and `/events`; its events are optional (an older version).
async fn ask(http: Option<String>) -> Answer {
    let addr = http.ok_or("no HTTP address known")?;
    let (node, events) = tokio::join!(get_json(&addr, "/node"), get_json(&addr, "/events"));
    Ok((node?, events.unwrap_or_else(|_| json!([]))))
}

/// `GET http://addr/path` as JSON, within [`PEER_TIMEOUT`] (ureq, blocking, off the
/// runtime's workers).
async fn get_json(addr: &str, path: &str) -> Result<Value, String> {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(PEER_TIMEOUT))
            // Members are dialled directly, never through an HTTP(S)_PROXY.
            .proxy(None)
            .build()
            .into();
        let mut response = agent.get(&url).call().map_err(|e| e.to_string())?;
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        serde_json::from_str(&body).map_err(|e| format!("{url}: {e}"))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The newest [`MAX_EVENTS`] of all nodes' events, oldest first; a leader change is
/// kept once (the first node to see it), however many nodes saw it.
fn merge(mut events: Vec<Value>) -> Vec<Value> {
    let key = |e: &Value| {
        (
            e["at_ms"].as_u64(),
            e["seen_by"].as_u64(),
            e["seq"].as_u64(),
        )
    };
    events.sort_by_key(key);
    let mut leaders = HashSet::new();
    events.retain(|e| {
        e["kind"] != "leader_changed" || leaders.insert((e["to"].as_u64(), e["term"].as_u64()))
    });
    let from = events.len().saturating_sub(MAX_EVENTS);
    events.split_off(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_merged_by_time_and_leader_changes_kept_once() {
        let e = |at: u64, by: u64, kind: &str, to: u64| {
            json!({
                "at_ms": at, "seen_by": by, "seq": at,
                "kind": kind, "to": to, "term": 2,
            })
        };
        let merged = merge(vec![
            e(30, 2, "leader_changed", 1),
            e(10, 1, "node_started", 0),
            e(20, 1, "leader_changed", 1),
            e(40, 1, "node_down", 0),
            e(50, 2, "leader_changed", 3),
        ]);
        let got: Vec<(u64, u64)> = merged
            .iter()
            .map(|e| (e["at_ms"].as_u64().unwrap(), e["seen_by"].as_u64().unwrap()))
            .collect();
        assert_eq!(got, [(10, 1), (20, 1), (40, 1), (50, 2)]);

        let many = (0..MAX_EVENTS as u64 + 10)
            .map(|i| e(i, 1, "node_down", 0))
            .collect();
        let kept = merge(many);
        assert_eq!(kept.len(), MAX_EVENTS);
        assert_eq!(kept[0]["at_ms"], 10, "the newest are kept");
    }
}
