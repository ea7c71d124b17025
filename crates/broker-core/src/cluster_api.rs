//! The engine's narrow interface to the cluster layer (ARCHITECTURE.md, "One node, three
//! layers"). broker-core knows nothing of Raft: it asks the cluster to commit replicated
//! [`Event`]s and to forward a publish to another node; the cluster hands every applied
//! event back to the [`Engine`], on every node, in log order. The engine changes its own
//! view (registry, subscriptions, retained, durable queues) only from there, so that all
//! nodes agree. The implementation is `crates/cluster` (Raft); a single node is a
//! cluster of one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::message::Message;
use crate::replicated::{Event, Outcome, State, StoredMessage, Target};

pub use crate::replicated::NodeId;

pub type ClusterFuture<T> = Pin<Box<dyn Future<Output = Result<T, ClusterError>> + Send>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The cluster cannot commit right now (no quorum, no leader, timeout): the caller
    /// must not acknowledge and answers "server unavailable".
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
}

pub trait ClusterApi: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> NodeId;

    /// Proposes `event`. The proposal is queued when this is called (so events proposed
    /// one after another are applied in that order, even if the future is dropped); the
    /// future resolves once the event is committed and applied on this node.
    fn commit(&self, event: Event) -> ClusterFuture<Outcome>;

    /// Whether this node can commit, as far as it knows (it hears from a leader, or
    /// leads a majority). Cut off from the majority, it acknowledges no QoS 1/2
    /// message without a commit, even one that needs none otherwise.
    fn can_commit(&self) -> bool;

    /// Sends one copy of `message` to `node`, for the listed sessions there (the direct
    /// path: no consensus, lost if the node is unreachable).
    fn forward(&self, node: NodeId, message: Arc<Message>, targets: Vec<Target>);

    /// What this node publishes under `$SYS/` besides the engine's own values, as
    /// (topic below `$SYS/`, payload): the cluster as this node sees it. None unless
    /// the cluster layer says.
    fn sys_topics(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Connects the engine: `reset` with the state as it is, then `applied` for every
    /// event applied from then on, with no gap between the two.
    fn attach(&self, engine: Arc<dyn Engine>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// What the cluster calls back into.
pub trait Engine: Send + Sync + 'static {
    /// Rebuilds the engine's view from a whole state (start-up, snapshot installed).
    fn reset(&self, state: &State);
    /// `event` was applied with `outcome`; `state` is the state after it.
    fn applied(&self, event: &Event, outcome: &Outcome, state: &State);
    /// A claim of `client_id` that this node proposed before it last restarted was
    /// applied just now (after start-up): its connection is gone.
    fn claimed_by_earlier_run(&self, client_id: &str, state: &State);
    /// Another node forwarded a message for the listed local sessions.
    fn forwarded(&self, message: StoredMessage, targets: Vec<Target>);
    /// Publishes the due will of the offline session `(client_id, epoch)` (the leader
    /// does). Its commit takes the will from the session, so a will is published once
    /// even if it is tried again, or by another leader; resolves once committed (an
    /// error if it was taken already, or not committed).
    fn publish_will(
        &self,
        client_id: &str,
        epoch: u64,
        will: StoredMessage,
        username: Option<String>,
    ) -> ClusterFuture<()>;
    /// This node has heard from no leader (or, leading, from no majority) for longer
    /// than the node-down time: its clients' sessions are being served elsewhere, or
    /// will be, so it closes every client connection and refuses new ones until
    /// `cut_off` is None again. 5.0 clients get reason 0x9C "use another server", with
    /// `server_reference` when this node knows a peer that still hears the cluster.
    fn set_cut_off(&self, cut_off: Option<CutOff>);
    /// This node may serve its clients until `until`, unless renewed: the cluster
    /// renews it while it hears from a leader (or, leading, from a majority). Checked
    /// by every connection before it writes, so a node that was paused or cut off for
    /// longer than the lease sends nothing more for sessions that may have moved on,
    /// even before the cluster tells it so.
    fn renew_lease(&self, until: std::time::Instant);
}

/// See [`Engine::set_cut_off`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutOff {
    /// The MQTT address of a node that still hears the cluster, if known.
    pub server_reference: Option<String>,
}
