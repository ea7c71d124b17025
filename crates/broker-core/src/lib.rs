//! raftmq's MQTT engine: MQTT 3.1.1 and 5.0 over TCP, TLS and WebSocket, with no
//! knowledge of Raft. Modules by layer, each importing only from layers below it:
//!
//! 1. Data and rules, no I/O:
//!    - `packet`: the one internal packet model, shared by both protocol versions.
//!    - `codec`: mqttbytes `v4`/`v5` <-> `packet`, with the checks mqttbytes leaves out.
//!    - `topic`: topic name / filter validation and matching rules (pure functions).
//!    - `arena`: index-linked node storage shared by the two tries.
//!    - `subscriptions`: the subscription trie (`+`, `#`, `$`-topics, shared groups).
//!    - `retained`: the retained-message store.
//!    - `message`: an application message as routed, with its PUBLISH header encoded
//!      once and shared by its subscribers.
//!    - `config`: every engine setting and its default; `acl`: access rules;
//!      `metrics`: counters the server exposes; `quota`: the limits on what one client
//!      may make the cluster hold, and the usage they are checked against.
//!    - `rate`: token buckets and pacers (admission, inbound rates, push pacing).
//!    - `replicated`: the state every node holds alike and the events that change it.
//!    - `transport`: TLS and WebSocket as byte streams (I/O adapters, no MQTT).
//! 2. The engine:
//!    - `auth`: client authentication at CONNECT (password file, JWT, failed-login
//!      throttle).
//!    - `cluster_api`: the narrow interface to the cluster layer (commit, forward, attach).
//!    - `session`: per-client session state: queues, in-flight window, packet ids.
//!    - `broker`: shared state (session registry, subscriptions, retained) and routing.
//!    - `mirror`: what each applied event means for this node's engine.
//!    - `sys`: this node's figures, published under `$SYS` to its own subscribers.
//! 3. Clients:
//!    - `connection`: one task per client byte stream: CONNECT, the packet loop,
//!      keep-alive, will.
//! 4. The server:
//!    - `server`: the listeners; each accepts sockets, unwraps its transport and starts
//!      a connection.

pub mod acl;
mod arena;
pub mod auth;
pub mod broker;
pub mod cluster_api;
pub mod codec;
pub mod config;
mod connection;
pub mod message;
pub mod metrics;
mod mirror;
pub mod packet;
mod quota;
pub mod rate;
pub mod replicated;
pub mod retained;
pub mod server;
mod session;
pub mod subscriptions;
pub mod sys;
pub mod topic;
pub mod transport;

pub use auth::Auth;
pub use cluster_api::{ClusterApi, Engine};
pub use config::{AclAction, AclRule, Config, JwtAlgorithm, PacingRule, Permission, QueuePolicy};
pub use server::{Broker, Listener, Stats, Transport};
pub use sys::Figures;
