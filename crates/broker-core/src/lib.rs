//! raftmq's MQTT engine: MQTT 3.1.1 and 5.0 over TCP, with no knowledge of Raft.
//!
//! - `packet`: the one internal packet model, shared by both protocol versions.
//! - `codec`: mqttbytes `v4`/`v5` <-> `packet`, with the checks mqttbytes leaves out.
//! - `topic`: topic name / filter validation and matching rules (pure functions).
//! - `arena`: index-linked node storage shared by the two tries.
//! - `subscriptions`: the subscription trie (`+`, `#`, `$`-topics, shared groups); no I/O.
//! - `config`: every engine setting and its default.
//! - `acl`: publish / subscribe access rules.
//! - `auth`: client authentication at CONNECT (password file, JWT, failed-login throttle).
//! - `cluster_api`: the narrow interface to the cluster layer (commit, forward, attach).
//! - `replicated`: the state every node holds alike and the events that change it.
//! - `mirror`: what each applied event means for this node's engine.
//! - `broker`: shared state (session registry, subscriptions, retained) and the listener.
//! - `session`: per-client session state: queues, in-flight window, packet ids.
//! - `connection`: one task per socket: CONNECT, the packet loop, keep-alive, will.
//! - `retained`: the retained-message store.
//! - `wire`: a message's PUBLISH header, encoded once and shared by its subscribers.
//! - `metrics`: counters the server exposes.

pub mod acl;
mod arena;
pub mod auth;
pub mod broker;
pub mod cluster_api;
pub mod codec;
pub mod config;
mod connection;
pub mod metrics;
mod mirror;
pub mod packet;
pub mod replicated;
pub mod retained;
mod session;
pub mod subscriptions;
pub mod topic;
pub mod wire;

pub use auth::Auth;
pub use broker::Broker;
pub use cluster_api::{ClusterApi, Engine};
pub use config::{AclAction, AclRule, Config, JwtAlgorithm, Permission, QueuePolicy};
