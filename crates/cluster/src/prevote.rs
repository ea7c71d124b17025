//! Elections with a pre-vote. openraft 0.9 has none: a follower that hears no leader
//! raises its term and stands, again every election timeout, so a follower cut off
//! from the others comes back with a term above the leader's, and its first answer to
//! the leader deposes it. Here openraft's election timer is off (`enable_elect =
//! false`) and [`run`] decides when to stand:
//!
//! - a voter that has heard no leader for its election timeout (randomized in
//!   [`ELECTION`]) first asks the other voters whether they would vote for it
//!   ([`Request::PreVote`]), which changes nothing on either side;
//! - a voter says no ([`ballot`]) while it hears from a live leader (within [`LEASE`]),
//!   while it leads with a quorum, or when the candidate's log is behind its own;
//! - only with a majority of yeses, itself included (in each half of a joint
//!   membership), does it call an election (`raft.trigger().elect()`).
//!
//! The real vote then passes the same tests in openraft: its leader lease
//! (`election_timeout_max`, set to [`LEASE`]) refuses votes that long after the
//! leader's last message, and it compares logs. The lease is shorter than any
//! election timeout, so the voters that said yes do not refuse the vote.
//!
//! When a leader last reached this node is `Node::leader_heard` (kept by the transport
//! server, and by the failover watch while this node leads a quorum); the quorum watch
//! and readiness use it too.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker_core::cluster_api::NodeId;
use openraft::error::RaftError;
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::{LogId, Membership, ServerState};
use tokio::task::JoinSet;

use crate::failover;
use crate::network::{Ballot, Peer, Request, Response};
use crate::node::{Node, ELECTION, HEARTBEAT, LEASE};
use crate::types::NodeInfo;

/// Bound on one round of pre-vote requests: an unreachable peer counts as a no. Well
/// under an election timeout, so a round ends before the next one is due.
const ROUND_TIMEOUT: Duration = Duration::from_millis(200);

/// What the election timeout runs from, besides a leader's last word: this node's
/// start, a vote it granted (the candidate may be about to win), and its own leadership
/// (once deposed, it does not cut into the election that deposed it).
pub struct ElectionClock {
    /// openraft too counts its leader lease from start-up: a restarted node gives a live
    /// leader the time to reach it before it votes.
    started: Instant,
    reset: Mutex<Instant>,
}

impl Default for ElectionClock {
    fn default() -> Self {
        let now = Instant::now();
        ElectionClock {
            started: now,
            reset: Mutex::new(now),
        }
    }
}

impl ElectionClock {
    fn reset(&self, at: Instant) {
        let mut reset = self.reset.lock().unwrap_or_else(|e| e.into_inner());
        *reset = (*reset).max(at);
    }

    fn last_reset(&self) -> Instant {
        *self.reset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// When a leader last reached this node, or when it started if none has.
fn leader_heard(node: &Node) -> Instant {
    node.leader_heard().unwrap_or(node.election.started)
}

/// `raft.vote`; a vote granted restarts the election timeout, as in Raft, so that this
/// node does not stand against the candidate it just voted for.
pub async fn vote(node: &Node, req: VoteRequest<u64>) -> Result<VoteResponse<u64>, RaftError<u64>> {
    let at = Instant::now();
    let resp = node.raft.vote(req).await;
    if matches!(&resp, Ok(r) if r.vote_granted) {
        node.election.reset(at);
    }
    resp
}

/// This node's answer to a pre-vote of a candidate whose last log entry is `last_log_id`.
pub fn ballot(node: &Node, candidate: NodeId, last_log_id: Option<LogId<u64>>) -> Ballot {
    let m = node.metrics();
    // A leader asks its own contact times, now: the failover watch notes its quorum
    // only every tick.
    let heard = match m.state {
        ServerState::Leader => failover::quorum_contact(node, &m),
        _ => Some(leader_heard(node)),
    };
    let answer = match heard {
        Some(at) if at.elapsed() < LEASE => Ballot::LeaderAlive(m.current_leader),
        _ => match last_log_id >= last_log(node) {
            // openraft's vote compares the logs the same way.
            true => Ballot::Yes,
            false => Ballot::LogBehind,
        },
    };
    tracing::debug!(candidate, ?answer, "pre-vote");
    answer
}

fn last_log(node: &Node) -> Option<LogId<u64>> {
    node.raft.data_metrics().borrow().last_log
}

/// The election task: stands for election, after a pre-vote, when this voter has heard
/// no leader for its election timeout. Runs until the node shuts down.
pub async fn run(node: Arc<Node>) {
    let mut timeout = election_timeout();
    let mut stood: Option<Instant> = None;
    // The silence last reported as lost pre-votes (by when the leader was last heard),
    // so that a node cut off for long says so once, not every election timeout.
    let mut reported = None;
    loop {
        let m = node.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        match m.state {
            ServerState::Shutdown => return,
            ServerState::Leader => {
                node.election.reset(Instant::now());
                tokio::time::sleep(HEARTBEAT).await;
                continue;
            }
            _ if !voters.contains(&node.id) => {
                tokio::time::sleep(HEARTBEAT).await;
                continue;
            }
            _ => {}
        }
        let heard = leader_heard(&node);
        let since = heard.max(node.election.last_reset());
        let due = match stood {
            // Alone, no one else can lead: stand at once, as openraft does.
            None if voters.len() == 1 => since,
            None => since + timeout,
            Some(stood) => since.max(stood) + timeout,
        };
        if Instant::now() < due {
            tokio::time::sleep_until(due.into()).await;
            continue;
        }
        stood = Some(Instant::now());
        timeout = election_timeout();
        let silent = heard.elapsed().as_millis() as u64;
        if !canvass(&node, membership).await {
            if reported != Some(heard) {
                reported = Some(heard);
                tracing::info!(
                    node_id = node.id,
                    silent_ms = silent,
                    "no leader heard, but no majority would vote for us (they still hear \
                     a leader, or cannot be reached): not standing"
                );
            }
            continue;
        }
        tracing::info!(
            node_id = node.id,
            term = m.current_term,
            silent_ms = silent,
            "no leader heard and a majority would vote for us: standing for election"
        );
        if node.raft.trigger().elect().await.is_err() {
            return;
        }
    }
}

/// Asks the other voters for a pre-vote; whether a majority of each configuration
/// (counting this node) would vote for it.
async fn canvass(node: &Node, membership: &Membership<NodeId, NodeInfo>) -> bool {
    let configs = membership.get_joint_config();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let mut yes = BTreeSet::from([node.id]);
    let mut no = BTreeSet::new();
    if majority(configs, &yes) {
        return true;
    }
    let last_log_id = last_log(node);
    let mut calls = JoinSet::new();
    for &id in voters.iter().filter(|&&id| id != node.id) {
        let Some(info) = membership.get_node(&id) else {
            continue;
        };
        let mut peer = Peer::new(info.cluster_addr.clone());
        let req = Request::PreVote {
            candidate: node.id,
            last_log_id,
        };
        calls.spawn(async move {
            let answer = tokio::time::timeout(ROUND_TIMEOUT, peer.call(&req)).await;
            (id, answer)
        });
    }
    while let Some(joined) = calls.join_next().await {
        let Ok((id, answer)) = joined else { continue };
        if matches!(answer, Ok(Ok(_))) {
            node.contacts.seen(id);
        }
        match answer {
            Ok(Ok(Response::PreVote(Ballot::Yes))) => yes.insert(id),
            Ok(Ok(Response::PreVote(refused))) => {
                tracing::debug!(node = id, ?refused, "pre-vote refused");
                no.insert(id)
            }
            Ok(Ok(_)) => no.insert(id),
            Ok(Err(e)) => {
                tracing::debug!(node = id, "pre-vote request failed: {e}");
                no.insert(id)
            }
            Err(_) => no.insert(id),
        };
        if majority(configs, &yes) {
            return true;
        }
        let open: BTreeSet<NodeId> = voters.difference(&no).copied().collect();
        if !majority(configs, &open) {
            return false;
        }
    }
    false
}

/// Whether `nodes` hold a majority of every configuration (two during a joint change).
fn majority(configs: &[BTreeSet<NodeId>], nodes: &BTreeSet<NodeId>) -> bool {
    configs
        .iter()
        .all(|c| c.intersection(nodes).count() * 2 > c.len())
}

/// A fresh random election timeout in [`ELECTION`], so that two followers that lost
/// their leader together rarely stand together. `RandomState` is seeded randomly per
/// instance; it saves a dependency for one number.
fn election_timeout() -> Duration {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let span = (ELECTION.end - ELECTION.start).as_millis() as u64;
    ELECTION.start + Duration::from_millis(random % span.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn majority_of_each_configuration() {
        let three = [set(&[1, 2, 3])];
        assert!(!majority(&three, &set(&[1])));
        assert!(majority(&three, &set(&[1, 3])));
        assert!(majority(&[set(&[1])], &set(&[1])));
        // Joint: {1,2,3} and {3,4,5} both need a majority.
        let joint = [set(&[1, 2, 3]), set(&[3, 4, 5])];
        assert!(!majority(&joint, &set(&[1, 2])));
        assert!(majority(&joint, &set(&[1, 3, 4])));
    }

    #[test]
    fn election_timeouts_are_spread_over_the_range() {
        let draws: BTreeSet<Duration> = (0..50).map(|_| election_timeout()).collect();
        assert!(draws.iter().all(|d| ELECTION.contains(d)), "{draws:?}");
        assert!(draws.len() > 10, "{draws:?}");
    }
}
