//! What the two ends of a membership change make of its outcomes: the leader turns
//! openraft's refusals into [`LeaderError`]s, a joiner turns answers into a [`Step`].
//!
//! Most refusals pass: openraft changes membership one change at a time (`InProgress`
//! while the previous one is not committed, e.g. another node joining), and a leader
//! that loses its office mid-change answers `ForwardToLeader` (with the new leader when
//! it knows it). A joiner asks again, after a short pause, until its join timeout; it
//! gives up at once only on a refusal that asking again cannot change: another node
//! holds its id, or the peer refused the connection (another cluster secret or CA).

use std::fmt;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};

use crate::network::{LeaderError, Response};
use crate::types::NodeInfo;

/// A membership change openraft did not make.
pub(crate) type ChangeError = RaftError<u64, ClientWriteError<u64, NodeInfo>>;

/// The leader's answer for a membership change (`what`: "adding node 4") that openraft
/// refused or failed with `e`.
pub(crate) fn change_refused(what: &str, e: ChangeError) -> LeaderError {
    match e {
        // Deposed mid-change: the new leader, when known, is where to ask.
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            LeaderError::NotLeader(f.leader_id.zip(f.leader_node))
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => match c {
            // Another change not committed yet; or the learner this change promotes
            // was lost with a leader change: asking again adds it anew.
            ChangeMembershipError::InProgress(_) | ChangeMembershipError::LearnerNotFound(_) => {
                LeaderError::Transient(format!("{what}: {c}"))
            }
            ChangeMembershipError::EmptyMembership(_) => {
                LeaderError::Failed(format!("{what}: {c}"))
            }
        },
        // This node's Raft stopped (shutting down, storage failed): another node will
        // lead.
        RaftError::Fatal(f) => LeaderError::Transient(format!("{what}: {f}")),
    }
}

/// Why a call to the (supposed) leader got no answer.
#[derive(Debug)]
pub(crate) enum CallFailure {
    /// The peer refused the connection: another cluster secret, or another CA.
    Refused(String),
    /// Not reached, or the connection lost before the answer: a node down or
    /// restarting, the leader moving.
    Lost(String),
    /// Sent on from one "not the leader" to the next more times than that.
    NoStableLeader(String),
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallFailure::Refused(e) | CallFailure::Lost(e) | CallFailure::NoStableLeader(e) => {
                f.write_str(e)
            }
        }
    }
}

/// Why a joiner asks again (it logs each reason once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Reason {
    /// No node knows a leader (an election under way).
    NoLeader,
    /// The leader changed under the request.
    LeaderChanging,
    /// The leader cannot make the change now (another one in progress, ...).
    Busy,
    /// No answer from that node.
    Unreachable,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::NoLeader => "no leader known",
            Reason::LeaderChanging => "the leader is changing",
            Reason::Busy => "the leader cannot change membership now",
            Reason::Unreachable => "no answer",
        })
    }
}

/// What a joiner does after one attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Joined,
    /// Ask again after a short pause (the detail is for the log).
    Retry(Reason, String),
    /// Give up: asking again would get the same refusal.
    Refused(String),
}

/// A joiner's reading of one `Join` call (through `call_leader`, which follows
/// "not the leader" answers that name the leader).
pub(crate) fn classify(answer: Result<Response, CallFailure>) -> Step {
    match answer {
        Ok(Response::Done(Ok(()))) => Step::Joined,
        Ok(Response::Done(Err(e @ LeaderError::NotLeader(None)))) => {
            Step::Retry(Reason::NoLeader, e.to_string())
        }
        Ok(Response::Done(Err(e @ LeaderError::NotLeader(Some(_))))) => {
            Step::Retry(Reason::LeaderChanging, e.to_string())
        }
        Ok(Response::Done(Err(LeaderError::Transient(e)))) => Step::Retry(Reason::Busy, e),
        Ok(Response::Done(Err(LeaderError::Failed(e)))) => Step::Refused(e),
        Ok(_) => Step::Refused("unexpected response to a join (another raftmq version?)".into()),
        Err(CallFailure::Refused(e)) => Step::Refused(e),
        Err(CallFailure::Lost(e)) => Step::Retry(Reason::Unreachable, e),
        Err(CallFailure::NoStableLeader(e)) => Step::Retry(Reason::LeaderChanging, e),
    }
}

#[cfg(test)]
mod tests {
    use openraft::error::{EmptyMembership, Fatal, ForwardToLeader, InProgress, LearnerNotFound};
    use openraft::{CommittedLeaderId, LogId};

    use super::*;

    fn info(port: u16) -> NodeInfo {
        NodeInfo {
            cluster_addr: format!("127.0.0.6:{port}"),
            ..NodeInfo::default()
        }
    }

    fn api(e: impl Into<ClientWriteError<u64, NodeInfo>>) -> ChangeError {
        RaftError::APIError(e.into())
    }

    fn forward(id: Option<u64>, node: Option<NodeInfo>) -> ChangeError {
        api(ForwardToLeader {
            leader_id: id,
            leader_node: node,
        })
    }

    fn in_progress() -> ChangeError {
        let log = |i| Some(LogId::new(CommittedLeaderId::new(2, 1), i));
        api(ChangeMembershipError::InProgress(InProgress {
            committed: log(7),
            membership_log_id: log(9),
        }))
    }

    /// What a joiner does with a leader's answer to its join.
    fn joiner(answer: Result<(), LeaderError>) -> Step {
        classify(Ok(Response::Done(answer)))
    }

    fn retried(step: &Step) -> Option<Reason> {
        match step {
            Step::Retry(reason, _) => Some(*reason),
            _ => None,
        }
    }

    /// The flake of t70 `kill_two_of_five`: the leader, deposed while adding a node,
    /// got `ForwardToLeader(Some(5))` from openraft and answered it as a refusal, and
    /// the joiner exited with "has to forward request to: Some(5)".
    #[test]
    fn a_leader_deposed_mid_change_sends_the_joiner_on() {
        let new = info(9005);
        let answer = change_refused("adding node 6", forward(Some(5), Some(new.clone())));
        assert!(
            matches!(&answer, LeaderError::NotLeader(Some((5, n))) if *n == new),
            "{answer:?}"
        );
        assert_eq!(retried(&joiner(Err(answer))), Some(Reason::LeaderChanging));
        // No leader named (an election under way): wait and ask again.
        for f in [forward(None, None), forward(Some(5), None)] {
            let answer = change_refused("adding node 6", f);
            assert!(matches!(answer, LeaderError::NotLeader(None)), "{answer:?}");
            assert_eq!(retried(&joiner(Err(answer))), Some(Reason::NoLeader));
        }
    }

    #[test]
    fn a_change_in_progress_is_waited_out() {
        for e in [
            in_progress(),
            api(ChangeMembershipError::LearnerNotFound(LearnerNotFound {
                node_id: 6,
            })),
            RaftError::Fatal(Fatal::Stopped),
        ] {
            let answer = change_refused("adding node 6", e);
            assert!(
                matches!(&answer, LeaderError::Transient(m) if m.starts_with("adding node 6: "))
            );
            assert_eq!(retried(&joiner(Err(answer))), Some(Reason::Busy));
        }
    }

    #[test]
    fn an_impossible_change_is_refused() {
        let answer = change_refused(
            "removing node 1",
            api(ChangeMembershipError::EmptyMembership(EmptyMembership {})),
        );
        assert!(matches!(answer, LeaderError::Failed(_)), "{answer:?}");
    }

    #[test]
    fn joiner_steps() {
        assert_eq!(joiner(Ok(())), Step::Joined);
        let taken = "node id 2 is already a member (at 127.0.0.3:1)";
        assert_eq!(
            joiner(Err(LeaderError::Failed(taken.into()))),
            Step::Refused(taken.into())
        );
        let lost = |e: &str| classify(Err(CallFailure::Lost(e.into())));
        for e in [
            "connection refused",
            "connection reset by peer",
            "early eof",
        ] {
            assert_eq!(retried(&lost(e)), Some(Reason::Unreachable), "{e}");
        }
        let hops = classify(Err(CallFailure::NoStableLeader(
            "x: no stable leader".into(),
        )));
        assert_eq!(retried(&hops), Some(Reason::LeaderChanging));
        let secret = "peer did not prove the cluster secret";
        assert_eq!(
            classify(Err(CallFailure::Refused(secret.into()))),
            Step::Refused(secret.into())
        );
        assert!(matches!(
            classify(Ok(Response::PreVote(crate::network::Ballot::Yes))),
            Step::Refused(_)
        ));
    }
}
