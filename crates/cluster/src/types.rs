//! The Raft type configuration and the replicated application state.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use broker_core::replicated::{Affects, Event, Outcome, State};
use broker_core::Engine;
use serde::{Deserialize, Serialize};

/// One Raft log entry's command: the events one proposer batch gathered (group commit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cmd {
    /// Which proposer run sent it, and its place in that run: a batch that a proposer
    /// resends (its leader died after committing it, before answering) is applied
    /// once. `seq` 0: written by the leader itself, never resent.
    pub node: u64,
    pub boot: u64,
    pub seq: u64,
    /// Shared: the log keeps its newest entries decoded and hands out clones of them (for
    /// replication and apply), which should not copy every event. Encoded as the list.
    pub events: Arc<Vec<Event>>,
}
/// One outcome per event of the batch.
pub type Resp = Vec<Outcome>;

/// What membership records about a node: where to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node-to-node transport, as peers should dial it.
    pub cluster_addr: String,
    pub mqtt_addr: String,
    pub http_addr: String,
}

impl std::fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.cluster_addr)
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Cmd,
        R = Resp,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogStore = persistence::LogStore<TypeConfig>;
pub type StateMachineStore = persistence::StateMachineStore<TypeConfig, App>;

/// The replicated state plus the engine that mirrors it (not part of the data).
/// A clone (for a snapshot) is cheap: the sessions are a persistent map.
#[derive(Default, Clone, Serialize, Deserialize)]
pub struct App {
    pub state: State,
    /// Per proposing node: the last batch applied (boot, seq) and its outcomes, which
    /// a resent copy of it gets instead of a second application.
    pub last_batch: BTreeMap<u64, (u64, u64, Resp)>,
    #[serde(skip)]
    pub engine: Option<Arc<dyn Engine>>,
    /// This node's id and run ([`Cmd::boot`]), once the engine is attached.
    #[serde(skip)]
    pub run: Option<(u64, u64)>,
    /// Sessions whose offline state changed since the failover watch last looked.
    #[serde(skip)]
    pub touched: Touched,
}

/// The sessions whose offline state (see `Event::affects`) applied events changed since
/// the failover watch took the last list, so that it looks at those only and not at
/// every session each tick. `all` (at start, after a snapshot is installed, after a
/// node-down, or when the list grew past [`Touched::MAX`]) says: look at every session.
#[derive(Debug, Clone)]
pub struct Touched {
    pub ids: Vec<String>,
    pub all: bool,
}

impl Default for Touched {
    fn default() -> Self {
        Touched {
            ids: Vec::new(),
            all: true,
        }
    }
}

impl Touched {
    /// Past this many ids a walk of every session is as cheap, and memory stays bounded
    /// if the watch falls behind.
    pub const MAX: usize = 65_536;

    fn note(&mut self, affects: Affects<'_>) {
        match affects {
            Affects::Nothing => {}
            _ if self.all => {}
            Affects::One(id) if self.ids.len() < Self::MAX => self.ids.push(id.to_string()),
            Affects::One(_) | Affects::Every => {
                self.all = true;
                self.ids = Vec::new();
            }
        }
    }

    /// The list so far, leaving an empty one.
    pub fn take(&mut self) -> Touched {
        std::mem::replace(
            self,
            Touched {
                ids: Vec::new(),
                all: false,
            },
        )
    }
}

impl persistence::Apply<TypeConfig> for App {
    fn apply(&mut self, cmd: &Cmd) -> Resp {
        let resent = cmd.seq != 0;
        if let Some((boot, seq, resp)) = self.last_batch.get(&cmd.node).filter(|_| resent) {
            if (cmd.boot, cmd.seq) == (*boot, *seq) {
                return resp.clone();
            }
            if (cmd.boot, cmd.seq) < (*boot, *seq) {
                return vec![Outcome::Stale; cmd.events.len()];
            }
        }
        let resp: Resp = cmd
            .events
            .iter()
            .map(|event| {
                let outcome = self.state.apply(event);
                self.touched.note(event.affects());
                if let Some(engine) = &self.engine {
                    engine.applied(event, &outcome, &self.state);
                    // A claim this node proposed in an earlier run, applied only now
                    // (it was committed after what this node had recorded as
                    // committed when it crashed): its connection is gone.
                    if let (Event::Claim { client_id, .. }, Outcome::Claimed { .. }) =
                        (event, &outcome)
                    {
                        if self.run.is_some_and(|(me, boot)| {
                            cmd.node == me && cmd.boot != 0 && cmd.boot != boot
                        }) {
                            engine.claimed_by_earlier_run(client_id, &self.state);
                        }
                    }
                }
                outcome
            })
            .collect();
        if resent {
            self.last_batch
                .insert(cmd.node, (cmd.boot, cmd.seq, resp.clone()));
        }
        resp
    }

    fn installed(&mut self, previous: &mut Self) {
        self.engine = previous.engine.take();
        self.run = previous.run;
        if let Some(engine) = &self.engine {
            engine.reset(&self.state);
        }
    }
}
