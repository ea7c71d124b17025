//! raftmq's cluster layer: openraft 0.9 over sled storage (`persistence`), implementing
//! the engine's [`broker_core::ClusterApi`].
//!
//! - `types`: the Raft type configuration, node addresses, and the replicated app state
//!   (broker-core's `replicated::State`, plus the engine observing it).
//! - `handshake`: mutual authentication of a cluster connection (the cluster secret).
//! - `tls`: optional mutual TLS under it, with the cluster CA.
//! - `network`: the node-to-node transport (frames, requests, openraft's client side).
//! - `events`: the last cluster events this node saw, with their time (`/events`).
//! - `failover`: quorum watch, dead-node detection, wills of dead nodes' clients,
//!   session expiry (leader-driven, through Raft).
//! - `prevote`: elections (openraft's timer is off): a node stands only when a majority
//!   says it has no live leader, so a node back from a partition does not depose one.
//! - `node`: one member: start (bootstrap / join), the proposer (group commit, timed
//!   in `Node::commit_latency` and `Node::batch_size`), the transport server, membership
//!   changes and status.
//! - `join`: which outcomes of a membership change pass (a joiner asks again) and
//!   which are refusals.

mod events;
mod failover;
mod handshake;
mod join;
mod network;
mod node;
mod prevote;
mod tls;
mod types;

pub use events::{ClusterEvent, Kind as EventKind};
pub use failover::Events;
pub use handshake::Secret;
pub use node::{Node, NodeStatus, Settings, StartError, Status};
pub use persistence::SnapshotFigures;
pub use tls::{Tls, TlsFiles, SERVER_NAME as TLS_SERVER_NAME};
pub use types::NodeInfo;
