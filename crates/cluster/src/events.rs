//! What happened to the cluster, as this node saw it: a bounded ring of the last
//! [`CAPACITY`] events with their wall-clock time, for `GET /events` and the status
//! page. Recorded where `failover` and `node` count the same things (`Counters`):
//! leader changes and quorum on every node; nodes declared down or back, wills
//! published and sessions expired on the leader that committed them. Kept in memory
//! only: a restarted node starts a new ring (its first event is `node_started`, and its
//! sequence numbers start again at 1).

use std::collections::VecDeque;
use std::sync::Mutex;

use broker_core::cluster_api::NodeId;
use broker_core::replicated::now_ms;
use serde::{Deserialize, Serialize};

/// Events kept; older ones are dropped.
pub const CAPACITY: usize = 200;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterEvent {
    /// 1, 2, 3… in the order this node recorded them (since it started).
    pub seq: u64,
    /// Wall-clock time, in ms since the Unix epoch and as RFC 3339 (UTC).
    pub at_ms: u64,
    pub time: String,
    /// The node that recorded it.
    pub seen_by: NodeId,
    /// The same, in words.
    pub text: String,
    #[serde(flatten)]
    pub kind: Kind,
}

/// What happened; `"kind"` in the JSON, with the fields of each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    /// This node started (or restarted).
    NodeStarted,
    /// A new leader, `from` the one known before (if any).
    LeaderChanged {
        from: Option<NodeId>,
        to: NodeId,
        term: u64,
    },
    /// The leader declared `node` dead (unreachable for the node-down time), or back.
    NodeDown {
        node: NodeId,
    },
    NodeUp {
        node: NodeId,
    },
    /// This node could no longer commit (no leader heard, or leading no majority), or
    /// could again.
    QuorumLost,
    QuorumRegained,
    /// The leader published the will of a dead node's (or delayed-will) client.
    WillPublished {
        client_id: String,
    },
    /// The leader ended a session whose expiry interval ran out.
    SessionExpired {
        client_id: String,
    },
}

impl Kind {
    fn text(&self) -> String {
        match self {
            Kind::NodeStarted => "node started".into(),
            Kind::LeaderChanged {
                from: Some(from),
                to,
                term,
            } if from != to => format!("leader changed: {from} → {to} (term {term})"),
            Kind::LeaderChanged { to, term, .. } => format!("leader: {to} (term {term})"),
            Kind::NodeDown { node } => format!("node {node} declared down"),
            Kind::NodeUp { node } => format!("node {node} back up"),
            Kind::QuorumLost => "quorum lost: cannot commit".into(),
            Kind::QuorumRegained => "quorum regained".into(),
            Kind::WillPublished { client_id } => format!("will of {client_id} published"),
            Kind::SessionExpired { client_id } => format!("session {client_id} expired"),
        }
    }
}

/// The ring. A short lock per record or read, never held across an `.await`.
#[derive(Debug, Default)]
pub struct EventLog {
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    last_seq: u64,
    events: VecDeque<ClusterEvent>,
}

impl EventLog {
    /// Records `kind`, seen by node `seen_by`, now.
    pub fn record(&self, seen_by: NodeId, kind: Kind) {
        self.record_at(seen_by, kind, now_ms());
    }

    fn record_at(&self, seen_by: NodeId, kind: Kind, at_ms: u64) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.last_seq += 1;
        let event = ClusterEvent {
            seq: ring.last_seq,
            at_ms,
            time: rfc3339(at_ms),
            seen_by,
            text: kind.text(),
            kind,
        };
        if ring.events.len() == CAPACITY {
            ring.events.pop_front();
        }
        ring.events.push_back(event);
    }

    /// The kept events whose `seq` is above `since` (all with `None`), oldest first.
    pub fn since(&self, since: Option<u64>) -> Vec<ClusterEvent> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let after = since.unwrap_or(0);
        ring.events
            .iter()
            .filter(|e| e.seq > after)
            .cloned()
            .collect()
    }
}

/// `ms` since the Unix epoch as RFC 3339 in UTC with milliseconds:
/// `2024-05-01T12:34:56.789Z`.
pub fn rfc3339(ms: u64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn the_ring_keeps_the_last_events_in_order() {
        let log = EventLog::default();
        for i in 0..CAPACITY as u64 + 5 {
            log.record_at(1, Kind::NodeDown { node: i }, 1000 + i);
        }
        let all = log.since(None);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].seq, 6, "the oldest five are gone");
        assert_eq!(all.last().unwrap().seq, CAPACITY as u64 + 5);
        assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        let tail = log.since(Some(CAPACITY as u64 + 3));
        assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), [204, 205]);
        assert!(log.since(Some(999)).is_empty());
    }

    #[test]
    fn events_serialize_flat_with_their_kind() {
        let log = EventLog::default();
        let change = Kind::LeaderChanged {
            from: Some(1),
            to: 2,
            term: 3,
        };
        log.record_at(2, change.clone(), 1_700_000_000_000);
        let e = &log.since(None)[0];
        let json = serde_json::to_value(e).unwrap();
        assert_eq!(json["kind"], "leader_changed");
        assert_eq!(json["from"], 1);
        assert_eq!(json["to"], 2);
        assert_eq!(json["term"], 3);
        assert_eq!(json["seen_by"], 2);
        assert_eq!(json["text"], "leader changed: 1 → 2 (term 3)");
        assert_eq!(json["time"], "2023-11-14T22:13:20.000Z");
        let back: ClusterEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back.kind, change);
        let down = serde_json::to_value(Kind::NodeDown { node: 3 }).unwrap();
        assert_eq!(down, serde_json::json!({"kind": "node_down", "node": 3}));
    }
}
