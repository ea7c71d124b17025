//! `GET /metrics`: the node in the Prometheus text format (0.0.4), encoded by
//! prometheus-client when scraped. Nothing is counted here: the engine keeps its
//! counters as relaxed atomics ([`broker_core::metrics::Metrics`]), the cluster its
//! failover counters and histograms, and two [`Collector`]s read them at each scrape,
//! with a [`NodeStats`] gathered then for what must be counted or read from the system.
//!
//! Names follow the Prometheus conventions: `raftmq_` first, `_total` on counters, base
//! units (seconds, bytes) in the name; the process metrics take the standard
//! `process_` names, which dashboards and alerts expect. README.md ("Monitoring")
//! lists them all.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use broker_core::metrics::{Gauges, HistogramSnapshot, ListenerKind, Metrics, Refusal};
use broker_core::{ClusterApi, Stats};
use cluster::{Node, Status};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeGaugeValue, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::host::{Disk, Process};

/// The `Content-Type` of what [`Exporter::encode`] returns.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The node's metrics registry: one collector for the node, one for the process.
pub struct Exporter {
    registry: Registry,
}

impl Exporter {
    pub fn new(node: Arc<Node>, engine: Stats, data_dir: PathBuf) -> Exporter {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(NodeCollector {
            node,
            engine,
            data_dir,
        }));
        registry.register_collector(Box::new(ProcessCollector));
        Exporter { registry }
    }

    /// Every metric, as of now. Reads `/proc` and walks the data directory: call it
    /// off the async runtime's threads.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_text::encode(&mut text, &self.registry) {
            tracing::warn!("encoding metrics: {e}");
        }
        text
    }
}

/// What `/metrics` reports besides live counters, gathered at one moment: the engine's
/// gauges, the cluster's status and histograms, the data directory.
#[derive(Debug, Clone)]
pub struct NodeStats {
    pub engine: Gauges,
    /// Raft state, membership and the failover counters (`events`), as `/cluster`
    /// shows them.
    pub raft: Status,
    /// Whether this node can commit, as the failover watch last saw it.
    pub can_commit: bool,
    pub commit_latency: HistogramSnapshot,
    pub batch_size: HistogramSnapshot,
    pub disk: Disk,
}

impl NodeStats {
    pub fn gather(node: &Node, engine: &Stats, data_dir: &std::path::Path) -> NodeStats {
        NodeStats {
            engine: engine.gauges(),
            raft: node.status(),
            can_commit: node.can_commit(),
            commit_latency: node.commit_latency.snapshot(),
            batch_size: node.batch_size.snapshot(),
            disk: Disk::read(data_dir),
        }
    }
}

struct NodeCollector {
    node: Arc<Node>,
    engine: Stats,
    data_dir: PathBuf,
}

impl fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCollector")
            .field("node", &self.node.id)
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl Collector for NodeCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let stats = NodeStats::gather(&self.node, &self.engine, &self.data_dir);
        encode_engine(&mut e, self.engine.counters(), &stats.engine)?;
        encode_raft(&mut e, &stats)?;
        encode_disk(&mut e, &stats.disk)?;
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        let mut m = e.encode_descriptor(
            "raftmq_build_info",
            "Always 1; the label tells the raftmq version.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1).encode(m.encode_family(&version)?)
    }
}

fn encode_engine(e: &mut DescriptorEncoder, m: &Metrics, g: &Gauges) -> fmt::Result {
    let get = Metrics::get;
    let by_listener = |counters: &[std::sync::atomic::AtomicU64]| {
        ListenerKind::ALL.map(|l| (l.label(), get(&counters[l as usize])))
    };
    counters(
        e,
        "raftmq_connections_accepted",
        "Client connections accepted, by listener.",
        "listener",
        &by_listener(&m.accepted_by_listener),
    )?;
    gauges(
        e,
        "raftmq_connections_open",
        "Client connections open now (handshaking ones included), by listener.",
        "listener",
        &by_listener(&m.open_by_listener),
    )?;
    counter(
        e,
        "raftmq_connects_accepted",
        "CONNECTs accepted (CONNACK success).",
        None,
        get(&m.clients_accepted),
    )?;
    let refused = Refusal::ALL.map(|r| (r.label(), get(&m.connects_refused[r as usize])));
    counters(
        e,
        "raftmq_connects_refused",
        "CONNECTs refused with a CONNACK, by reason.",
        "reason",
        &refused,
    )?;
    let qos = |c: &[std::sync::atomic::AtomicU64]| {
        [("0", get(&c[0])), ("1", get(&c[1])), ("2", get(&c[2]))]
    };
    counters(
        e,
        "raftmq_messages_received",
        "PUBLISH packets received from clients, by their QoS.",
        "qos",
        &qos(&m.received_by_qos),
    )?;
    counters(
        e,
        "raftmq_messages_sent",
        "PUBLISH packets sent to clients, by the QoS each subscriber gets.",
        "qos",
        &qos(&m.sent_by_qos),
    )?;
    let dropped = [
        ("queue_full", get(&m.dropped_queue_full)),
        ("qos0_outbox_full", get(&m.dropped_qos0)),
        ("expired", get(&m.dropped_expired)),
        ("too_large", get(&m.dropped_too_large)),
        ("rate_limited", get(&m.dropped_rate_limited)),
        ("memory", get(&m.dropped_memory)),
    ];
    counters(
        e,
        "raftmq_messages_dropped",
        "Messages dropped, by reason.",
        "reason",
        &dropped,
    )?;
    let quotas = [
        ("subscriptions", get(&m.quota_subscriptions)),
        ("topic", get(&m.quota_topic)),
        ("retained", get(&m.quota_retained)),
        ("persistent_sessions", get(&m.quota_persistent_sessions)),
        ("inflight_qos2", get(&m.quota_inflight_qos2)),
    ];
    counters(
        e,
        "raftmq_quota_exceeded",
        "Requests refused by a quota, by quota.",
        "quota",
        &quotas,
    )?;
    counter(
        e,
        "raftmq_received",
        "MQTT bytes read from clients (inside TLS and WebSocket).",
        Some(&Unit::Bytes),
        get(&m.bytes_received),
    )?;
    counter(
        e,
        "raftmq_sent",
        "MQTT bytes written to clients (inside TLS and WebSocket).",
        Some(&Unit::Bytes),
        get(&m.bytes_sent),
    )?;
    counter(
        e,
        "raftmq_rate_limit_pauses",
        "Times a client's socket was left unread by max_publish_rate (3.1.1) or \
         max_inbound_bytes_rate.",
        None,
        get(&m.rate_limit_pauses),
    )?;
    counter(
        e,
        "raftmq_connect_rate_waits",
        "Accepts held back by max_connect_rate.",
        None,
        get(&m.connect_rate_waits),
    )?;
    counter(
        e,
        "raftmq_protocol_errors",
        "Client connections closed for a protocol violation or a malformed packet.",
        None,
        get(&m.protocol_errors),
    )?;
    gauges(
        e,
        "raftmq_sessions",
        "Sessions in the cluster: online (client connected to any node) and offline \
         (persistent, client away).",
        "state",
        &[
            ("online", g.sessions_online),
            ("offline", g.sessions_offline),
        ],
    )?;
    let gauge_list: [(&str, &str, Option<&Unit>, u64); 6] = [
        (
            "raftmq_clients_connected",
            "Clients connected to this node (session attached here).",
            None,
            g.clients_connected,
        ),
        (
            "raftmq_queued_messages",
            "Messages waiting in this node's session queues, not yet sent.",
            None,
            g.queued_messages,
        ),
        (
            "raftmq_inflight_messages",
            "QoS 1/2 messages sent by this node, not yet acknowledged.",
            None,
            g.inflight_messages,
        ),
        (
            "raftmq_retained_messages",
            "Retained messages in the cluster.",
            None,
            g.retained_messages,
        ),
        (
            "raftmq_retained",
            "Topic and payload bytes of the retained messages (max_retained_bytes).",
            Some(&Unit::Bytes),
            g.retained_bytes,
        ),
        (
            "raftmq_subscriptions",
            "Subscriptions in the cluster (filter, session pairs).",
            None,
            g.subscriptions,
        ),
    ];
    for (name, help, unit, value) in gauge_list {
        gauge(e, name, help, unit, value)?;
    }
    Ok(())
}

fn encode_raft(e: &mut DescriptorEncoder, s: &NodeStats) -> fmt::Result {
    let r = &s.raft;
    let flag = |b: bool| u64::from(b);
    gauge(e, "raftmq_node_id", "This node's id.", None, r.node_id)?;
    gauge(e, "raftmq_raft_term", "The Raft term.", None, r.term)?;
    gauge(
        e,
        "raftmq_raft_is_leader",
        "1 if this node is the Raft leader.",
        None,
        flag(r.role == "leader"),
    )?;
    gauge(
        e,
        "raftmq_raft_has_leader",
        "1 if this node knows a leader.",
        None,
        flag(r.leader.is_some()),
    )?;
    if let Some(leader) = r.leader {
        gauge(
            e,
            "raftmq_raft_leader_id",
            "The leader's node id, as this node knows it.",
            None,
            leader,
        )?;
    }
    gauge(
        e,
        "raftmq_raft_can_commit",
        "1 if this node can commit (hears a leader, or leads a majority).",
        None,
        flag(s.can_commit),
    )?;
    gauge(
        e,
        "raftmq_ready",
        "1 if GET /ready answers 200: a caught-up member with a leader.",
        None,
        flag(r.ready),
    )?;
    let indexes = [
        (
            "raftmq_raft_commit_index",
            "Last committed log index.",
            r.commit_index,
        ),
        (
            "raftmq_raft_applied_index",
            "Last log index applied here.",
            r.applied_index,
        ),
        (
            "raftmq_raft_last_log_index",
            "Last log index in this node's log.",
            r.last_log_index,
        ),
        (
            "raftmq_raft_snapshot_index",
            "Last log index in this node's snapshot.",
            r.snapshot_index,
        ),
    ];
    for (name, help, index) in indexes {
        if let Some(index) = index {
            gauge(e, name, help, None, index)?;
        }
    }
    let voters = r.nodes.iter().filter(|n| n.voter).count() as u64;
    gauge(
        e,
        "raftmq_cluster_members",
        "Members of the cluster (voters and learners).",
        None,
        r.nodes.len() as u64,
    )?;
    gauge(e, "raftmq_cluster_voters", "Voters.", None, voters)?;
    gauge(
        e,
        "raftmq_cluster_nodes_down",
        "Nodes the cluster has declared dead and that are not back.",
        None,
        r.down.len() as u64,
    )?;
    histogram(
        e,
        "raftmq_raft_commit_latency",
        "Time from an event's proposal on this node to its commit and apply here.",
        Some(&Unit::Seconds),
        &s.commit_latency,
    )?;
    histogram(
        e,
        "raftmq_raft_batch_size",
        "Events per Raft log entry written by this node's proposer (group commit).",
        None,
        &s.batch_size,
    )?;
    let ev = &r.events;
    let events = [
        (
            "raftmq_cluster_leader_changes",
            "Times this node saw a new leader.",
            ev.leader_changes,
        ),
        (
            "raftmq_cluster_nodes_declared_down",
            "Nodes this node, leading, declared dead.",
            ev.nodes_down,
        ),
        (
            "raftmq_cluster_nodes_declared_up",
            "Nodes this node, leading, declared back.",
            ev.nodes_up,
        ),
        (
            "raftmq_cluster_quorum_lost",
            "Times this node lost the ability to commit.",
            ev.quorum_lost,
        ),
        (
            "raftmq_cluster_quorum_regained",
            "Times this node regained the ability to commit.",
            ev.quorum_regained,
        ),
        (
            "raftmq_cluster_wills_published",
            "Wills of dead nodes' clients this node published.",
            ev.wills_published,
        ),
        (
            "raftmq_cluster_sessions_expired",
            "Sessions this node, leading, expired.",
            ev.sessions_expired,
        ),
    ];
    for (name, help, value) in events {
        counter(e, name, help, None, value)?;
    }
    Ok(())
}

fn encode_disk(e: &mut DescriptorEncoder, d: &Disk) -> fmt::Result {
    let readings = [
        (
            "raftmq_data_dir",
            "Bytes of the files in the data directory.",
            d.dir_bytes,
        ),
        (
            "raftmq_data_filesystem_size",
            "Size of the data directory's file system.",
            d.fs_size_bytes,
        ),
        (
            "raftmq_data_filesystem_free",
            "Bytes free for raftmq on the data directory's file system.",
            d.fs_free_bytes,
        ),
    ];
    for (name, help, value) in readings {
        if let Some(value) = value {
            gauge(e, name, help, Some(&Unit::Bytes), value)?;
        }
    }
    Ok(())
}

/// The standard process metrics, from `/proc/self` (prometheus-client has no process
/// collector).
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let Some(p) = Process::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(p.cpu_seconds);
        cpu.encode(e.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent.",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let bytes = Some(&Unit::Bytes);
        gauge(
            &mut e,
            "process_resident_memory",
            "Resident memory size.",
            bytes,
            p.resident_bytes,
        )?;
        gauge(
            &mut e,
            "process_virtual_memory",
            "Virtual memory size.",
            bytes,
            p.virtual_bytes,
        )?;
        gauge(
            &mut e,
            "process_start_time",
            "Start time of the process since the Unix epoch.",
            Some(&Unit::Seconds),
            p.start_time_seconds,
        )?;
        gauge(
            &mut e,
            "process_open_fds",
            "Open file descriptors.",
            None,
            p.open_fds,
        )?;
        gauge(
            &mut e,
            "process_max_fds",
            "Limit on open file descriptors.",
            None,
            p.max_fds,
        )
    }
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(e.encode_descriptor(name, help, unit, c.metric_type())?)
}

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: impl EncodeGaugeValue,
) -> fmt::Result {
    let g = ConstGauge::new(value);
    g.encode(e.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

/// A counter with one sample per value of `label`.
fn counters(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for &(value, n) in values {
        ConstCounter::new(n).encode(m.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

/// A gauge with one sample per value of `label`.
fn gauges(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for &(value, n) in values {
        ConstGauge::new(n).encode(m.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

fn histogram(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    h: &HistogramSnapshot,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, unit, MetricType::Histogram)?;
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(h.sum, h.count, &h.buckets, None)
}
