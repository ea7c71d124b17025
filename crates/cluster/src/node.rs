//! One cluster member: its Raft instance on sled storage, the transport server, the
//! proposer (group commit), membership (bootstrap, join, remove) and status.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use broker_core::cluster_api::{ClusterError, ClusterFuture, NodeId};
use broker_core::message::Message;
use broker_core::metrics::Histogram;
use broker_core::replicated::{Event, Outcome, StoredMessage, Target};
use broker_core::{ClusterApi, Engine};
use openraft::raft::AppendEntriesResponse;
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use crate::events::{ClusterEvent, EventLog, Kind};
use crate::failover;
use crate::failover::{Counters, Events};
use crate::handshake::{Quiet, Secret};
use crate::join::{self, CallFailure, Step};
use crate::network::{self, Contacts, LeaderError, Network, Peer, Request, Response};
use crate::prevote::{self, ElectionClock};
use crate::tls::Tls;
use crate::types::{App, Cmd, LogStore, NodeInfo, Raft, Resp, StateMachineStore};

/// How long a proposal may wait for a leader and a quorum before it fails.
pub(crate) const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most events in one log entry.
const MAX_BATCH: usize = 1024;
/// Forwarded publishes queued per peer before new ones are dropped.
const FORWARD_QUEUE: usize = 65_536;
/// Bound on one join attempt (a leader's answer can wait for a learner to catch up,
/// [`CATCH_UP`], then for a commit); the join as a whole is bounded by its timeout.
const JOIN_ATTEMPT: Duration = Duration::from_secs(15);
/// A joiner's pause before it asks again after an answer that passes.
const JOIN_PAUSE: Duration = Duration::from_millis(250);
/// How long a leader waits for a new learner to catch up before it answers that the
/// join is not done yet (the joiner asks again; the learner keeps catching up).
const CATCH_UP: Duration = Duration::from_secs(10);

/// Bucket bounds of [`Node::commit_latency`], in seconds: from an fsync on a fast SSD to
/// the commit timeout.
const LATENCY_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bucket bounds of [`Node::batch_size`]: powers of two up to [`MAX_BATCH`].
const BATCH_BOUNDS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

// Raft timing. openraft's defaults (heartbeat 50 ms, election 150-300 ms) are LAN-test
// values.
/// The leader's heartbeat interval; openraft ticks every 1.5 of them, so an idle
/// follower hears from the leader every 150 ms. It is also the timeout of an
/// AppendEntries round trip, the follower's fsync included: far above an fsync (a few
/// ms on an SSD), so that a slow disk does not starve the heartbeats.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(100);
/// A voter that heard from a live leader within this long refuses to vote, in the
/// pre-vote and in openraft's own vote (its leader lease): over two idle heartbeats, so
/// that one late heartbeat opens no election.
pub(crate) const LEASE: Duration = Duration::from_millis(400);
/// A voter that heard no leader for a timeout drawn from this range stands for election
/// if a majority would vote for it (`prevote`). It starts above the lease, so that the
/// others' leases have run out too when it asks. From a leader's death to a new leader:
/// 0.5 to 0.8 s, plus a few round trips and a vote's fsync; its clients are served again
/// by another node 0.6 to 0.85 s after the crash (benches/failover.sh). With openraft's
/// own elections a follower waited out a lease of 1 s, then an election timeout of 0.5
/// to 1 s (1.5 to 2 s): only the pre-vote makes shorter timeouts safe, as a follower
/// that alone misses heartbeats cannot depose a leader the others still hear.
pub(crate) const ELECTION: Range<Duration> = Duration::from_millis(500)..Duration::from_millis(800);

/// What a node needs to start.
pub struct Settings {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// The bound transport listener.
    pub listener: TcpListener,
    /// How peers and clients reach this node.
    pub advertise: NodeInfo,
    /// Members to ask to let us in, when we have no state yet.
    pub join: Vec<String>,
    pub join_timeout: Duration,
    /// What peers must prove they know (`handshake`). Without one (and without `tls`),
    /// the transport accepts only loopback peers.
    pub secret: Option<Secret>,
    /// Mutual TLS with the cluster CA on every cluster connection, under the secret
    /// handshake (`tls`); it authenticates peers by itself, so a node with it needs
    /// no secret to accept remote peers.
    pub tls: Option<Arc<Tls>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data dir: {0}")]
    Storage(persistence::OpenError),
    #[error("cannot join: {0}")]
    Join(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("data dir: cannot record this run: {0}")]
    Run(String),
}

/// An event to commit, when it was proposed (its deadline runs from then, not from
/// when its batch starts), and where its outcome goes.
type Proposal = (
    Event,
    Instant,
    oneshot::Sender<Result<Outcome, ClusterError>>,
);

pub struct Node {
    pub id: NodeId,
    pub(crate) raft: Raft,
    log: LogStore,
    pub(crate) sm: StateMachineStore,
    pub(crate) contacts: Arc<Contacts>,
    /// What the election timeout runs from, besides the leader's last word.
    pub(crate) election: ElectionClock,
    pub(crate) counters: Counters,
    /// The last events, with their time (`GET /events`).
    pub(crate) events: EventLog,
    /// Whether we can commit, as the failover watch last saw it.
    pub(crate) quorum: std::sync::atomic::AtomicBool,
    /// When a leader last reached us (AppendEntries or a snapshot it sent, accepted
    /// as from the current leader): a follower's measure of being cut off.
    pub(crate) leader_heard: Mutex<Option<std::time::Instant>>,
    /// The highest commit index a leader has told us of (AppendEntries).
    pub(crate) leader_commit: std::sync::atomic::AtomicU64,
    /// Nodes declared dead, as last read from the state (for `status`).
    pub(crate) down: Mutex<Vec<NodeId>>,
    proposals: mpsc::UnboundedSender<Proposal>,
    forwards: Mutex<HashMap<NodeId, mpsc::Sender<Request>>>,
    /// Membership changes one at a time (openraft refuses concurrent ones).
    membership: tokio::sync::Mutex<()>,
    engine: OnceLock<Arc<dyn Engine>>,
    /// Notified once this node has left the cluster: the server stops.
    pub left: Notify,
    /// Seconds from an event's proposal to its commit and apply here, as this node's
    /// proposer sees it (committed events only).
    pub commit_latency: Histogram,
    /// Events per log entry this node's proposer wrote (group commit).
    pub batch_size: Histogram,
    /// This run's batches carry it ([`Cmd::boot`]): the proposer's start in ms, above
    /// every earlier run's ([`persistence::LogStore::next_run`]).
    boot: u64,
}

/// A node's view of the cluster: `/cluster` serves it, `raftmq cluster status` reads
/// it. Unknown fields are ignored and absent optional ones are `None`, so that one
/// version of raftmq can read another's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node_id: NodeId,
    /// leader, follower, candidate, learner or shutdown.
    pub role: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub last_log_index: Option<u64>,
    /// Last log index covered by this node's snapshot, and purged from its log.
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub ready: bool,
    pub nodes: Vec<NodeStatus>,
    /// Nodes the cluster has declared dead (unreachable), not back yet.
    #[serde(default)]
    pub down: Vec<NodeId>,
    /// Failovers and recoveries seen by this node since it started.
    #[serde(default)]
    pub events: Events,
    /// The snapshots this node built since it started: how many, and what the last cost.
    #[serde(default)]
    pub snapshot: persistence::SnapshotFigures,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub voter: bool,
    pub cluster_addr: String,
    #[serde(default)]
    pub mqtt_addr: Option<String>,
    #[serde(default)]
    pub http_addr: Option<String>,
}

/// Log entries between snapshots; `RAFTMQ_SNAPSHOT_LOGS` overrides it (tests use a
/// small value so that lagging nodes catch up by snapshot).
fn snapshot_logs() -> u64 {
    std::env::var("RAFTMQ_SNAPSHOT_LOGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(5000)
}

fn raft_config() -> Result<openraft::Config, StartError> {
    let every = snapshot_logs();
    let ms = |d: Duration| d.as_millis() as u64;
    // openraft's election timer is off: `prevote` stands for election. What is left of
    // its election timeout: the maximum is its leader lease, the minimum bounds a vote
    // round trip (the voter's fsync of its vote included).
    openraft::Config {
        cluster_name: "raftmq".into(),
        heartbeat_interval: ms(HEARTBEAT),
        election_timeout_min: ms(LEASE) / 2,
        election_timeout_max: ms(LEASE),
        enable_elect: false,
        install_snapshot_timeout: 10_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(every),
        max_in_snapshot_log_to_keep: every.min(1000),
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::Raft(e.to_string()))
}

impl Node {
    /// Opens the storage, starts Raft and the transport, and bootstraps or joins if this
    /// node has no state yet. Returns once the stored log is re-applied.
    pub async fn start(s: Settings) -> Result<Arc<Node>, StartError> {
        if let Ok(local) = s.listener.local_addr() {
            network::set_source_ip(local.ip());
        }
        network::set_secret(s.secret);
        network::set_tls(s.tls);
        let (log, sm) = persistence::open::<_, App>(&s.data_dir).map_err(StartError::Storage)?;
        let committed = log.committed_index();
        let boot = log
            .next_run(broker_core::replicated::now_ms())
            .map_err(StartError::Run)?;
        let contacts = Arc::new(Contacts::default());
        let network = Network {
            contacts: contacts.clone(),
        };
        let raft = Raft::new(
            s.node_id,
            Arc::new(raft_config()?),
            network,
            log.clone(),
            sm.clone(),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let node = Arc::new(Node {
            id: s.node_id,
            raft,
            log,
            sm,
            contacts,
            election: ElectionClock::default(),
            counters: Counters::default(),
            events: EventLog::default(),
            down: Mutex::new(Vec::new()),
            // Until the watch has looked: a node starts as if it could, so that its
            // first publishes are not held for nothing.
            quorum: std::sync::atomic::AtomicBool::new(true),
            leader_heard: Mutex::new(None),
            leader_commit: std::sync::atomic::AtomicU64::new(0),
            proposals: tx,
            forwards: Mutex::new(HashMap::new()),
            membership: tokio::sync::Mutex::new(()),
            engine: OnceLock::new(),
            left: Notify::new(),
            commit_latency: Histogram::new(&LATENCY_BOUNDS),
            batch_size: Histogram::new(&BATCH_BOUNDS),
            boot,
        });
        node.record(Kind::NodeStarted);
        tokio::spawn(serve(node.clone(), s.listener));
        tokio::spawn(propose(node.clone(), rx));
        tokio::spawn(watch(node.clone()));
        tokio::spawn(failover::run(node.clone()));
        tokio::spawn(prevote::run(node.clone()));
        let initialized = node
            .raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized {
            if s.join.is_empty() {
                tracing::info!(node_id = s.node_id, "no state: starting a new cluster");
                let members = BTreeMap::from([(s.node_id, s.advertise)]);
                if let Err(e) = node.raft.initialize(members).await {
                    tracing::debug!("initialize: {e}");
                }
            } else {
                node.join(&s.join, s.advertise, s.join_timeout).await?;
            }
        } else if !s.join.is_empty() {
            tracing::info!("data dir holds cluster state: rejoining it, --join is not used");
        }
        if let Some(c) = committed {
            let _ = node
                .raft
                .wait(Some(Duration::from_secs(30)))
                .applied_index_at_least(Some(c), "re-apply the stored log")
                .await;
        }
        Ok(node)
    }

    /// Asks `seeds` (following them to the leader) to let this node in, until that is
    /// done or `timeout` runs out. Answers that pass (a membership change in progress,
    /// the leader changing or unreachable for a while) are asked again after a short
    /// pause, each reason logged once; a refusal ends the join at once (`join`).
    async fn join(
        &self,
        seeds: &[String],
        me: NodeInfo,
        timeout: Duration,
    ) -> Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        let req = Request::Join {
            id: self.id,
            node: me.clone(),
        };
        let node_id = self.id;
        tracing::info!(seeds = %seeds.join(","), node_id, "asking to join the cluster");
        let mut logged = HashSet::new();
        let mut last = String::from("no attempt");
        // Whether a leader may have begun adding us (an attempt that did not end in
        // a plain yes or no): a later "already a member" may be our own join, done.
        let mut begun = false;
        loop {
            for seed in seeds {
                let left = deadline.saturating_duration_since(Instant::now());
                let attempt = call_leader(seed.clone(), &req);
                let answer = match tokio::time::timeout(left.min(JOIN_ATTEMPT), attempt).await {
                    Ok(answer) => answer,
                    Err(_) => Err(CallFailure::Lost(format!("{seed}: no answer in time"))),
                };
                match join::classify(answer) {
                    Step::Joined => {
                        tracing::info!(node_id, "joined the cluster");
                        return Ok(());
                    }
                    Step::Refused(e) => {
                        if begun && self.member_here(&me, deadline).await {
                            tracing::info!(node_id, "joined the cluster (by an earlier attempt)");
                            return Ok(());
                        }
                        return Err(StartError::Join(e));
                    }
                    Step::Retry(reason, e) => {
                        // One line per reason; the same reason again is for debug.
                        if logged.insert(reason) {
                            let why = "not let in yet, asking again";
                            tracing::info!(%seed, node_id, detail = %e, "{why}: {reason}");
                        } else {
                            tracing::debug!(%seed, node_id, detail = %e, "not let in yet: {reason}");
                        }
                        begun = true;
                        last = e;
                    }
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StartError::Join(format!(
                    "not let in through {} within {}s (last answer: {last})",
                    seeds.join(","),
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(JOIN_PAUSE.min(left)).await;
        }
    }

    /// Whether this node's own log (replicated to it by the leader) lists it as a voter
    /// at `me`, waiting a little for it (bounded by `deadline`): a join whose answer was
    /// lost (the leader changed after committing it) is done all the same.
    async fn member_here(&self, me: &NodeInfo, deadline: Instant) -> bool {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(2));
        let id = self.id;
        self.raft
            .wait(Some(wait))
            .metrics(
                |m| {
                    let membership = m.membership_config.membership();
                    settled_voter(membership, id) && membership.get_node(&id) == Some(me)
                },
                "this node a voter in its own log",
            )
            .await
            .is_ok()
    }

    /// When a leader last reached us, if ever.
    pub(crate) fn leader_heard(&self) -> Option<std::time::Instant> {
        *self.leader_heard.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn heard_leader(&self) {
        self.heard_leader_at(std::time::Instant::now());
    }

    /// A leader (this node itself, leading a quorum) was heard at `at`.
    pub(crate) fn heard_leader_at(&self, at: std::time::Instant) {
        let mut heard = self.leader_heard.lock().unwrap_or_else(|e| e.into_inner());
        *heard = (*heard).max(Some(at));
    }

    /// Records an event in this node's ring.
    pub(crate) fn record(&self, kind: Kind) {
        self.events.record(self.id, kind);
    }

    /// The events this node recorded after sequence number `since` (all of the kept
    /// ones with `None`), oldest first.
    pub fn events(&self, since: Option<u64>) -> Vec<ClusterEvent> {
        self.events.since(since)
    }

    pub(crate) fn engine(&self) -> Option<&Arc<dyn Engine>> {
        self.engine.get()
    }

    pub(crate) fn metrics(&self) -> openraft::RaftMetrics<NodeId, NodeInfo> {
        self.raft.metrics().borrow().clone()
    }

    fn not_leader(&self) -> LeaderError {
        let m = self.metrics();
        let leader = m.current_leader.and_then(|id| {
            let node = m.membership_config.membership().get_node(&id)?.clone();
            Some((id, node))
        });
        LeaderError::NotLeader(leader)
    }

    fn is_leader(&self) -> bool {
        self.metrics().current_leader == Some(self.id)
    }

    /// Leader side of a join: learner first, voter once caught up. The same node
    /// asking again (its earlier answer lost to a leader change, or a refusal that
    /// passes) resumes where the earlier attempt stopped: a learner is promoted, a
    /// joint membership completed.
    async fn add_member(&self, id: NodeId, info: NodeInfo) -> Result<(), LeaderError> {
        let _one = self.membership.lock().await;
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voter = membership.voter_ids().any(|v| v == id);
        match membership.get_node(&id) {
            Some(existing) if *existing != info || settled_voter(membership, id) => {
                return Err(LeaderError::Failed(format!(
                    "node id {id} is already a member (at {existing}): remove it first \
                     (raftmq cluster remove {id}) or start this node with another --node-id"
                )));
            }
            Some(_) => tracing::info!(node_id = id, addr = %info, "a node resumes joining"),
            None => {
                tracing::info!(node_id = id, addr = %info, "adding a node: learner, then voter")
            }
        }
        let what = format!("adding node {id}");
        if !voter {
            let added = self
                .raft
                .add_learner(id, info, false)
                .await
                .map_err(|e| join::change_refused(&what, e))?;
            self.caught_up(id, added.log_id.index).await?;
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| join::change_refused(&what, e))?;
        Ok(())
    }

    /// Waits (at most [`CATCH_UP`]) until learner `id` holds the log up to `index`, the
    /// entry that made it a learner; openraft's own wait (`add_learner` blocking) has
    /// no bound, and would hold the membership lock for as long as the learner is
    /// down. A learner still behind is a passing refusal: its node asks again.
    async fn caught_up(&self, id: NodeId, index: u64) -> Result<(), LeaderError> {
        let me = self.id;
        let waited = self
            .raft
            .wait(Some(CATCH_UP))
            .metrics(
                |m| {
                    m.current_leader != Some(me)
                        || m.replication
                            .as_ref()
                            .and_then(|r| r.get(&id))
                            .is_some_and(|matched| matched.is_some_and(|l| l.index >= index))
                },
                "a new learner to catch up",
            )
            .await;
        match waited {
            Ok(m) if m.current_leader != Some(me) => Err(self.not_leader()),
            Ok(_) => Ok(()),
            Err(_) => Err(LeaderError::Transient(format!(
                "node {id} is still catching up (log index {index} not reached within {}s)",
                CATCH_UP.as_secs()
            ))),
        }
    }

    /// Leader side of `cluster remove` / `cluster leave`.
    async fn remove_member(&self, id: NodeId) -> Result<(), LeaderError> {
        let _one = self.membership.lock().await;
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let m = self.metrics();
        let membership = m.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(LeaderError::Failed(format!("node {id} is not a member")));
        }
        tracing::info!(node_id = id, "removing a node from the cluster");
        let what = format!("removing node {id}");
        let change = if membership.voter_ids().any(|v| v == id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| join::change_refused(&what, e))?;
        Ok(())
    }

    /// Leader side of a follower's proposal.
    pub(crate) async fn leader_write(&self, cmd: Cmd) -> Result<(u64, Resp), LeaderError> {
        match self.raft.client_write(cmd).await {
            Ok(r) => Ok((r.log_id.index, r.data)),
            Err(e) if e.forward_to_leader::<NodeInfo>().is_some() => Err(self.not_leader()),
            Err(e) => Err(LeaderError::Failed(e.to_string())),
        }
    }

    /// Removes node `id` from the cluster (asked of any node): here if we lead, else
    /// at the leader, waiting out an election.
    pub async fn remove(&self, id: NodeId) -> Result<(), String> {
        let deadline = Instant::now() + COMMIT_TIMEOUT * 4;
        loop {
            let done = if self.is_leader() {
                self.remove_member(id).await
            } else {
                match self.not_leader() {
                    LeaderError::NotLeader(Some((_, n))) => {
                        match call_leader(n.cluster_addr, &Request::Remove { id }).await {
                            Ok(Response::Done(r)) => r,
                            Ok(_) => Err(LeaderError::Failed("unexpected response".into())),
                            Err(e) => Err(LeaderError::Failed(e.to_string())),
                        }
                    }
                    other => Err(other),
                }
            };
            match done {
                Ok(()) => return Ok(()),
                Err(LeaderError::Failed(e)) => return Err(e),
                Err(e @ LeaderError::NotLeader(_)) if Instant::now() >= deadline => {
                    return Err(format!("no leader: {e}"))
                }
                Err(LeaderError::Transient(e)) if Instant::now() >= deadline => return Err(e),
                Err(LeaderError::NotLeader(_) | LeaderError::Transient(_)) => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
            }
        }
    }

    /// Takes this node out of the cluster, then tells the server to stop.
    pub async fn leave(&self) -> Result<(), String> {
        self.remove(self.id).await?;
        tracing::info!(node_id = self.id, "left the cluster");
        self.left.notify_waiters();
        Ok(())
    }

    pub fn status(&self) -> Status {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let nodes = membership
            .nodes()
            .map(|(id, n)| NodeStatus {
                id: *id,
                voter: voters.contains(id),
                cluster_addr: n.cluster_addr.clone(),
                mqtt_addr: Some(n.mqtt_addr.clone()),
                http_addr: Some(n.http_addr.clone()),
            })
            .collect();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        Status {
            node_id: self.id,
            role: role.to_string(),
            leader: m.current_leader,
            term: m.current_term,
            commit_index: self.log.committed_index(),
            applied_index: m.last_applied.map(|l| l.index),
            last_log_index: m.last_log_index,
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            ready: self.ready(&m),
            nodes,
            down: self.down.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            events: self.counters.snapshot(),
            snapshot: self.sm.snapshot_figures(),
        }
    }

    /// Builds a snapshot of this node's state now and waits until it is stored (or
    /// `timeout` passes); the log up to it can then be purged. An operator's tool (before
    /// a backup) and the benches'.
    pub async fn snapshot_now(
        &self,
        timeout: Duration,
    ) -> Result<persistence::SnapshotFigures, String> {
        let before = self.sm.snapshot_figures().builds;
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + timeout;
        loop {
            let figures = self.sm.snapshot_figures();
            if figures.builds > before {
                return Ok(figures);
            }
            if Instant::now() >= deadline {
                return Err(format!("no snapshot stored within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Member of a cluster with a known leader, and caught up with what it knows is
    /// committed: what a load balancer should check.
    pub fn is_ready(&self) -> bool {
        self.ready(&self.metrics())
    }

    fn ready(&self, m: &openraft::RaftMetrics<NodeId, NodeInfo>) -> bool {
        let member = m
            .membership_config
            .membership()
            .get_node(&self.id)
            .is_some();
        let applied = m.last_applied.map(|l| l.index);
        // A leader cut off from its majority still names itself leader, and a follower
        // the leader it last heard from: the failover watch's quorum flag tells.
        member
            && m.current_leader.is_some()
            && matches!(m.state, ServerState::Leader | ServerState::Follower)
            && applied >= self.log.committed_index()
            && self.can_commit()
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }

    fn forward_to(&self, node: NodeId) -> Option<mpsc::Sender<Request>> {
        let mut forwards = self.forwards.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = forwards.get(&node) {
            return Some(tx.clone());
        }
        let addr = self
            .metrics()
            .membership_config
            .membership()
            .get_node(&node)?
            .cluster_addr
            .clone();
        let (tx, rx) = mpsc::channel(FORWARD_QUEUE);
        tokio::spawn(forwarder(node, addr, rx));
        forwards.insert(node, tx.clone());
        Some(tx)
    }
}

impl ClusterApi for Node {
    fn node_id(&self) -> NodeId {
        self.id
    }

    fn commit(&self, event: Event) -> ClusterFuture<Outcome> {
        let (tx, rx) = oneshot::channel();
        let sent = self.proposals.send((event, Instant::now(), tx)).is_ok();
        Box::pin(async move {
            if !sent {
                return Err(ClusterError::Unavailable("node stopping".into()));
            }
            rx.await
                .unwrap_or_else(|_| Err(ClusterError::Unavailable("node stopping".into())))
        })
    }

    fn can_commit(&self) -> bool {
        self.quorum.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn forward(&self, node: NodeId, message: Arc<Message>, targets: Vec<Target>) {
        let Some(tx) = self.forward_to(node) else {
            tracing::debug!(node, "forward: unknown node");
            return;
        };
        let req = Request::Forward {
            message: StoredMessage::from_message(&message),
            targets,
        };
        if tx.try_send(req).is_err() {
            tracing::debug!(node, "forward queue full or closed: message dropped");
        }
    }

    fn sys_topics(&self) -> Vec<(String, String)> {
        let s = self.status();
        let members: Vec<serde_json::Value> = s
            .nodes
            .iter()
            .map(|n| {
                let state = match s.down.contains(&n.id) {
                    true => "down",
                    false => "up",
                };
                serde_json::json!({
                    "id": n.id,
                    "voter": n.voter,
                    "state": state,
                    "cluster_addr": n.cluster_addr,
                    "mqtt_addr": n.mqtt_addr,
                    "http_addr": n.http_addr,
                })
            })
            .collect();
        let leader = s
            .leader
            .map_or_else(|| "none".to_string(), |l| l.to_string());
        vec![
            ("cluster/leader".into(), leader),
            ("cluster/term".into(), s.term.to_string()),
            ("cluster/role".into(), s.role),
            (
                "cluster/members".into(),
                serde_json::Value::Array(members).to_string(),
            ),
        ]
    }

    fn attach(
        &self,
        engine: Arc<dyn Engine>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let _ = self.engine.set(engine.clone());
        let sm = self.sm.clone();
        let run = (self.id, self.boot);
        Box::pin(async move {
            sm.with_app_mut(|app| {
                engine.reset(&app.state);
                app.engine = Some(engine);
                app.run = Some(run);
            })
            .await;
        })
    }
}

/// Whether `id` is a voter of `membership` and no change is half done (not joint).
fn settled_voter(membership: &openraft::Membership<NodeId, NodeInfo>, id: NodeId) -> bool {
    membership.get_joint_config().len() == 1 && membership.voter_ids().any(|v| v == id)
}

/// Sends a membership request to `addr`, following "not the leader" answers to the
/// leader they name.
async fn call_leader(mut addr: String, req: &Request) -> Result<Response, CallFailure> {
    for _ in 0..5 {
        let resp = match Peer::new(addr.clone()).call(req).await {
            Ok(resp) => resp,
            Err(network::CallError::Connect(e))
                if e.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                return Err(CallFailure::Refused(format!("{addr} refused us: {e}")))
            }
            Err(e) => return Err(CallFailure::Lost(format!("{addr}: {e}"))),
        };
        match resp {
            Response::Done(Err(LeaderError::NotLeader(Some((_, n))))) => addr = n.cluster_addr,
            other => return Ok(other),
        }
    }
    Err(CallFailure::NoStableLeader(format!(
        "{addr}: no stable leader"
    )))
}

/// The proposer: drains queued events into one log entry per round (group commit: one
/// append and one fsync for the whole batch) and answers each event with its outcome.
async fn propose(node: Arc<Node>, mut rx: mpsc::UnboundedReceiver<Proposal>) {
    let mut leader: Option<(String, Peer)> = None;
    // This run's batches are numbered from 1; a restarted node starts a later run.
    let boot = node.boot;
    let mut seq = 0;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        // What waited out its whole deadline behind a batch that failed is refused now.
        let (expired, batch): (Vec<Proposal>, Vec<Proposal>) = batch
            .into_iter()
            .partition(|p| p.1.elapsed() >= COMMIT_TIMEOUT);
        for (_, _, reply) in expired {
            let _ = reply.send(Err(ClusterError::Unavailable(
                "no quorum within the commit timeout".into(),
            )));
        }
        let Some(oldest) = batch.iter().map(|p| p.1).min() else {
            continue;
        };
        node.batch_size.observe(batch.len() as f64);
        let proposed: Vec<Instant> = batch.iter().map(|p| p.1).collect();
        let (events, replies): (Vec<Event>, Vec<_>) =
            batch.into_iter().map(|(e, _, r)| (e, r)).unzip();
        seq += 1;
        let cmd = Cmd {
            node: node.id,
            boot,
            seq,
            events: Arc::new(events),
        };
        let started = Instant::now();
        let result = write(&node, cmd, oldest + COMMIT_TIMEOUT, &mut leader).await;
        node.counters.batched(replies.len(), started.elapsed());
        match result {
            Ok(outcomes) => {
                for at in proposed {
                    node.commit_latency.observe(at.elapsed().as_secs_f64());
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::warn!("proposal failed: {e}");
                for reply in replies {
                    let _ = reply.send(Err(ClusterError::Unavailable(e.clone())));
                }
            }
        }
    }
}

/// Commits `cmd` (here if we lead, else at the leader) and waits until it is applied
/// here too, so that the engine of this node reflects it when the proposer answers.
async fn write(
    node: &Node,
    cmd: Cmd,
    deadline: Instant,
    leader: &mut Option<(String, Peer)>,
) -> Result<Resp, String> {
    let (index, resp) = loop {
        let attempt = async {
            if node.is_leader() {
                return node
                    .leader_write(cmd.clone())
                    .await
                    .map_err(|e| e.to_string());
            }
            let addr = match node.not_leader() {
                LeaderError::NotLeader(Some((_, n))) => n.cluster_addr,
                _ => return Err("no leader".to_string()),
            };
            if leader.as_ref().map(|(a, _)| a != &addr).unwrap_or(true) {
                *leader = Some((addr.clone(), Peer::new(addr.clone())));
            }
            let (_, peer) = leader.as_mut().expect("set above");
            match peer.call(&Request::Write(cmd.clone())).await {
                Ok(Response::Write(r)) => r.map_err(|e| e.to_string()),
                Ok(_) => Err("unexpected response".into()),
                Err(e) => Err(format!("{addr}: {e}")),
            }
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(done)) => break done,
            Err(_) => return Err("no quorum within the commit timeout".into()),
            Ok(Err(e)) if Instant::now() >= deadline => return Err(e),
            Ok(Err(e)) => {
                tracing::debug!("proposal retried: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    node.raft
        .wait(Some(
            deadline.saturating_duration_since(Instant::now()) + COMMIT_TIMEOUT,
        ))
        .applied_index_at_least(Some(index), "apply a proposal")
        .await
        .map_err(|e| format!("committed but not applied here: {e}"))?;
    Ok(resp)
}

/// Cluster connections refused (TLS or handshake failed, or not loopback without a
/// secret or TLS).
static REFUSALS: Quiet = Quiet::new();

/// The transport server: one task per connection. Without a cluster secret or cluster
/// TLS, only loopback peers are let in (to the handshake, with the well-known key).
async fn serve(node: Arc<Node>, listener: TcpListener) {
    let loopback_only = network::secret().is_none() && network::tls().is_none();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if loopback_only && !peer.ip().to_canonical().is_loopback() {
                    REFUSALS.warn(format_args!(
                        "cluster connection from {peer} refused: no cluster secret or \
                         cluster TLS is set, so only loopback peers are accepted"
                    ));
                    continue;
                }
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(node.clone(), stream, peer));
            }
            Err(e) => {
                tracing::warn!("cluster accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(node: Arc<Node>, stream: TcpStream, peer: SocketAddr) {
    let mut stream = match network::accept(stream).await {
        Ok(conn) => conn,
        Err(e) => {
            use std::io::ErrorKind::{PermissionDenied, TimedOut};
            match e.kind() {
                PermissionDenied | TimedOut => {
                    REFUSALS.warn(format_args!("cluster connection from {peer} refused: {e}"))
                }
                // A peer (or a port scan) that hung up or reset mid-handshake.
                _ => tracing::debug!(%peer, "cluster handshake failed: {e}"),
            }
            return;
        }
    };
    loop {
        let req: Request = match network::read_frame(&mut stream).await {
            Ok(req) => req,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
            Err(e) => {
                tracing::warn!(%peer, "cluster connection closed: {e}");
                return;
            }
        };
        let resp = match req {
            Request::Append(r) => {
                if let Some(commit) = &r.leader_commit {
                    node.leader_commit
                        .fetch_max(commit.index, std::sync::atomic::Ordering::Relaxed);
                }
                let resp = node.raft.append_entries(r).await;
                if matches!(&resp, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                    node.heard_leader();
                }
                Response::Append(resp)
            }
            Request::Vote(r) => Response::Vote(prevote::vote(&node, r).await),
            Request::Snapshot(r) => {
                let resp = node.raft.install_snapshot(r).await;
                if resp.is_ok() {
                    node.heard_leader();
                }
                Response::Snapshot(resp)
            }
            Request::PreVote {
                candidate,
                last_log_id,
            } => Response::PreVote(prevote::ballot(&node, candidate, last_log_id)),
            Request::Write(cmd) => Response::Write(node.leader_write(cmd).await),
            Request::Join { id, node: info } => Response::Done(node.add_member(id, info).await),
            Request::Remove { id } => Response::Done(node.remove_member(id).await),
            Request::Forward { message, targets } => {
                if let Some(engine) = node.engine.get() {
                    engine.forwarded(message, targets);
                }
                continue;
            }
        };
        if let Err(e) = network::write_frame(&mut stream, &resp).await {
            tracing::debug!(%peer, "cluster connection lost: {e}");
            return;
        }
    }
}

/// Streams forwarded publishes to one peer over one connection, reconnecting with
/// backoff; what cannot be sent while the peer is away waits in the queue or is dropped.
async fn forwarder(node: NodeId, addr: String, mut rx: mpsc::Receiver<Request>) {
    let mut backoff = Duration::from_millis(100);
    let mut pending: Option<Request> = None;
    loop {
        let mut stream = match network::connect(&addr).await {
            Ok(s) => {
                backoff = Duration::from_millis(100);
                s
            }
            Err(e) => {
                tracing::debug!(node, %addr, "forward connection failed: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                // The direct path is at most once: drop what piled up while away.
                pending = None;
                while rx.try_recv().is_ok() {}
                continue;
            }
        };
        loop {
            let req = match pending.take() {
                Some(r) => r,
                None => match rx.recv().await {
                    Some(r) => r,
                    None => return,
                },
            };
            if let Err(e) = network::write_frame(&mut stream, &req).await {
                tracing::debug!(node, %addr, "forward connection lost: {e}");
                pending = Some(req);
                break;
            }
        }
    }
}

/// Logs leader changes and membership changes as they happen (and warns about a
/// two-voter cluster, which survives no failure).
async fn watch(node: Arc<Node>) {
    let mut rx = node.raft.metrics();
    let mut leader = None;
    // The last leader there was, for the event of the next change.
    let mut known = None;
    let mut voters = BTreeSet::new();
    loop {
        {
            let m = rx.borrow_and_update();
            if m.current_leader != leader {
                tracing::info!(
                    node_id = node.id,
                    term = m.current_term,
                    from = ?leader,
                    to = ?m.current_leader,
                    "cluster leader changed"
                );
                if let Some(to) = m.current_leader {
                    node.counters
                        .leader_changes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    node.record(Kind::LeaderChanged {
                        from: known,
                        to,
                        term: m.current_term,
                    });
                    known = Some(to);
                }
                leader = m.current_leader;
            }
            let now: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
            if now != voters && !now.is_empty() {
                tracing::info!(voters = ?now, "cluster membership changed");
                if now.len() == 2 {
                    tracing::warn!(
                        "a cluster of two voters survives no failure: losing either node \
                         stops commits; run three or five nodes"
                    );
                }
                voters = now;
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
