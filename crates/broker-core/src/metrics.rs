//! Counters the server exposes (and tests and benchmarks read). Relaxed atomics: each
//! is an independent tally, never used to order other memory.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections accepted since start.
    pub connections_accepted: AtomicU64,
    /// Connections open now (accepted, not yet closed).
    pub connections_open: AtomicU64,
    /// PUBLISH packets received from clients.
    pub publish_received: AtomicU64,
    /// PUBLISH packets written to clients.
    pub publish_sent: AtomicU64,
    /// QoS 0 messages dropped because a subscriber's outbox was full or it was offline.
    pub dropped_qos0: AtomicU64,
    /// QoS 1/2 messages dropped because a session's queue was full (policy `drop`).
    pub dropped_queue_full: AtomicU64,
    /// Messages dropped because their message expiry interval passed while queued.
    pub dropped_expired: AtomicU64,
    /// Messages not sent because they exceeded the client's Maximum Packet Size.
    pub dropped_too_large: AtomicU64,
    /// Connections closed for a protocol violation or malformed packet.
    pub protocol_errors: AtomicU64,
    /// CONNECTs refused for missing or wrong credentials.
    pub auth_failures: AtomicU64,
    /// Subscription filters refused by `max_subscriptions_per_session`.
    pub quota_subscriptions: AtomicU64,
    /// Publishes and filters refused by `max_topic_length` or `max_topic_levels`.
    pub quota_topic: AtomicU64,
    /// Retained publishes refused by `max_retained_messages`, `max_retained_bytes` or
    /// `max_retained_per_client`.
    pub quota_retained: AtomicU64,
    /// CONNECTs refused by `max_persistent_sessions`.
    pub quota_persistent_sessions: AtomicU64,
    /// 3.1.1 connections closed by `max_inflight_qos2`.
    pub quota_inflight_qos2: AtomicU64,
    /// 5.0 clients disconnected (0x96) by `max_publish_rate`; the publish that went
    /// over is dropped.
    pub dropped_rate_limited: AtomicU64,
    /// Times a client's socket was left unread for a while by `max_publish_rate`
    /// (3.1.1) or `max_inbound_bytes_rate`.
    pub rate_limit_pauses: AtomicU64,
    /// QoS 0 deliveries dropped above `max_memory_mb`.
    pub dropped_memory: AtomicU64,
    /// CONNECTs refused as server busy above `max_memory_mb`.
    pub refused_memory: AtomicU64,
    /// Accepts held back by `max_connect_rate`.
    pub connect_rate_waits: AtomicU64,
}

impl Metrics {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
