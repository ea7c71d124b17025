//! Multi-node cluster tests: each test starts its own `raftmq` processes, each node on
//! its own loopback IP (see tests/support/cluster.rs), and talks to them over real
//! sockets: MQTT with rumqttc (or the byte-level client), the HTTP API, and the
//! `raftmq cluster` CLI.
//!
//! Files are numbered by kind (STYLE.md 15): t10 forming a cluster (and its metrics),
//! t15 who may talk to it (cluster secret, cluster TLS, admin token), t20 routing across
//! nodes, t30 sessions across nodes, t40 membership, t50 failures and restarts (t57:
//! watching them through the status page, `/events` and `$SYS`), t60 bad flags, t70
//! failover under load, partitions included (tests/support/checker.rs),
//! t72-t78 partial partitions, pauses, power loss, damaged data dirs and clock jumps,
//! t80 elections (a node back from a partition does not depose the leader), t90 the
//! soak: a seeded random schedule of all those faults. Raft timing (heartbeat 100 ms,
//! election after 0.5–0.8 s without a leader) gets generous bounds
//! ([`support::cluster::CLUSTER_TIMEOUT`]); nothing sleeps without a condition, but
//! the soak holding a fault.

#[path = "../support/mod.rs"]
mod support;

mod t10_form;
mod t10_metrics;
mod t15_cluster_security;
mod t15_cluster_tls;
mod t20_pubsub;
mod t20_retained;
mod t30_takeover;
mod t40_membership;
mod t50_restart;
mod t50_single_node;
mod t55_dead_node;
mod t57_monitoring;
mod t60_flags;
mod t70_failover;
mod t70_qos2_handoff;
mod t72_partitions;
mod t74_pauses;
mod t75_power_loss;
mod t76_damaged_data_dir;
mod t78_clock_jumps;
mod t80_prevote;
mod t90_soak;
