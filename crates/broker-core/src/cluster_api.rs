//! The engine's narrow interface to the cluster layer (ARCHITECTURE.md, "One node, three
//! layers"). broker-core knows nothing of Raft: it asks the cluster to claim a session,
//! to commit durable events before it acknowledges them, which other nodes want a topic,
//! and to forward a publish there. `SingleNode` is the in-process implementation for a
//! node that is alone; the Raft-backed one lives in `crates/cluster`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::broker::Message;

/// A node of the cluster.
pub type NodeId = u64;

pub type ClusterFuture<T> = Pin<Box<dyn Future<Output = Result<T, ClusterError>> + Send>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The cluster cannot commit right now (no quorum, no leader, timeout): the caller
    /// must not acknowledge and answers "server unavailable".
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
}

/// Events that must be durable before the client that caused them is acknowledged.
#[derive(Debug, Clone)]
pub enum DurableEvent {
    /// A QoS 1/2 publish (or a retained one) accepted from a client: committed before the
    /// PUBACK / PUBREC goes out.
    Publish(Arc<Message>),
}

pub trait ClusterApi: Send + Sync + 'static {
    /// Makes this node the owner of `client_id`'s session; resolves once every node
    /// agrees, so that any previous owner closes its connection. Returns the connection
    /// epoch (strictly increasing per client id).
    fn claim_session(&self, client_id: &str) -> ClusterFuture<u64>;

    /// Resolves once `event` is durable (on a majority of nodes' disks, in a cluster).
    fn commit(&self, event: DurableEvent) -> ClusterFuture<()>;

    /// The other nodes with at least one subscriber whose filter matches `topic`.
    fn remote_routes(&self, topic: &str, out: &mut Vec<NodeId>);

    /// Sends one copy of `message` to `node` for delivery to its local subscribers only.
    fn forward(&self, node: NodeId, message: Arc<Message>);
}

/// A node that is the whole cluster: every claim and commit succeeds at once (there is
/// nobody to agree with), and there are no remote routes. State lives in this process's
/// memory until the Raft layer (crates/cluster) replaces this implementation.
#[derive(Debug, Default)]
pub struct SingleNode {
    epoch: std::sync::atomic::AtomicU64,
}

impl ClusterApi for SingleNode {
    fn claim_session(&self, _client_id: &str) -> ClusterFuture<u64> {
        let epoch = self
            .epoch
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::pin(std::future::ready(Ok(epoch + 1)))
    }

    fn commit(&self, _event: DurableEvent) -> ClusterFuture<()> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn remote_routes(&self, _topic: &str, _out: &mut Vec<NodeId>) {}

    fn forward(&self, _node: NodeId, _message: Arc<Message>) {}
}
