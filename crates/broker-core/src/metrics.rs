//! Counters the server exposes (and tests and benchmarks read). Relaxed atomics: each
//! is an independent tally, never used to order other memory. The binary turns them
//! into Prometheus metrics when scraped; nothing here knows of Prometheus.
//!
//! Besides [`Metrics`]: the label values of the counters kept per kind
//! ([`ListenerKind`], [`Refusal`], QoS as an index 0..=2), a lock-free [`Histogram`]
//! (the cluster layer times its commits with it), and [`Gauges`], what the engine holds
//! at the time of asking.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::packet::reason;

#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections accepted since start.
    pub connections_accepted: AtomicU64,
    /// Connections open now (accepted, not yet closed).
    pub connections_open: AtomicU64,
    /// CONNECTs accepted (CONNACK success) since start.
    pub clients_accepted: AtomicU64,
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
    /// `connections_accepted` by listener (index: [`ListenerKind`] as usize).
    pub accepted_by_listener: [AtomicU64; ListenerKind::ALL.len()],
    /// `connections_open` by listener.
    pub open_by_listener: [AtomicU64; ListenerKind::ALL.len()],
    /// `publish_received` by the publisher's QoS (index 0, 1, 2).
    pub received_by_qos: [AtomicU64; 3],
    /// `publish_sent` by the QoS each subscriber gets.
    pub sent_by_qos: [AtomicU64; 3],
    /// MQTT bytes read from clients (inside TLS and WebSocket framing).
    pub bytes_received: AtomicU64,
    /// MQTT bytes written to clients.
    pub bytes_sent: AtomicU64,
    /// CONNECTs refused with a CONNACK, by [`Refusal`] (as usize).
    pub connects_refused: [AtomicU64; Refusal::ALL.len()],
    /// MQTT packets of every type read from and written to clients ($SYS's
    /// `messages/received` and `messages/sent`).
    pub packets_received: AtomicU64,
    pub packets_sent: AtomicU64,
    /// The most clients connected at once, as sampled (`sys::figures`).
    pub clients_maximum: AtomicU64,
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

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The listener a connection came through: the `listener` label of the
/// per-listener counters, and their index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl ListenerKind {
    pub const ALL: [ListenerKind; 4] = [Self::Tcp, Self::Tls, Self::Ws, Self::Wss];

    pub fn label(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }
}

/// Why a CONNECT was refused, from its CONNACK code: the `reason` label of
/// `connects_refused`, and its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong or unknown username or password (0x86).
    BadCredentials,
    /// No credentials where they are needed, or a certificate without a name (0x87).
    NotAuthorized,
    /// A quota: `max_persistent_sessions`, will topic length or levels (0x97).
    Quota,
    /// Cut off from the cluster, or the session's claim was not committed (0x88, 0x9C).
    Unavailable,
    /// `max_connections` reached (0x89).
    Busy,
    /// Invalid CONNECT: protocol version, client id, keep-alive, will topic,
    /// authentication method, zero maxima.
    Protocol,
    /// Another connection claimed the client id meanwhile (0x8E).
    TakenOver,
}

impl Refusal {
    pub const ALL: [Refusal; 7] = [
        Self::BadCredentials,
        Self::NotAuthorized,
        Self::Quota,
        Self::Unavailable,
        Self::Busy,
        Self::Protocol,
        Self::TakenOver,
    ];

    pub fn of_code(code: u8) -> Refusal {
        match code {
            reason::BAD_USERNAME_OR_PASSWORD => Self::BadCredentials,
            reason::NOT_AUTHORIZED => Self::NotAuthorized,
            reason::QUOTA_EXCEEDED => Self::Quota,
            reason::SERVER_UNAVAILABLE | reason::USE_ANOTHER_SERVER => Self::Unavailable,
            reason::SERVER_BUSY => Self::Busy,
            reason::SESSION_TAKEN_OVER => Self::TakenOver,
            _ => Self::Protocol,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::BadCredentials => "bad_credentials",
            Self::NotAuthorized => "not_authorized",
            Self::Quota => "quota",
            Self::Unavailable => "unavailable",
            Self::Busy => "busy",
            Self::Protocol => "protocol",
            Self::TakenOver => "taken_over",
        }
    }
}

/// What the engine holds now, counted when asked (a scrape), not on the hot path.
/// Sessions and subscriptions are cluster-wide (every node holds the replicated
/// registry, so every node reports the same); the rest is this node's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Sessions whose client is connected (to any node).
    pub sessions_online: u64,
    /// Persistent sessions whose client is away.
    pub sessions_offline: u64,
    /// Clients connected to this node (their session attached here).
    pub clients_connected: u64,
    /// Messages waiting in this node's session queues, not yet sent.
    pub queued_messages: u64,
    /// QoS 1/2 messages sent by this node and not yet acknowledged.
    pub inflight_messages: u64,
    pub retained_messages: u64,
    /// Topic and payload bytes of the retained messages (what `max_retained_bytes`
    /// counts).
    pub retained_bytes: u64,
    /// Subscriptions (filter, session) pairs.
    pub subscriptions: u64,
}

/// A histogram with fixed bucket bounds, counted with relaxed atomics: observing takes
/// no lock. Read with [`Histogram::snapshot`].
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then one for what is above the last.
    counts: Box<[AtomicU64]>,
    /// The sum of the observed values, as `f64` bits.
    sum: AtomicU64,
}

/// A [`Histogram`] as read: `buckets[i]` counts the values in (bound[i-1], bound[i]]
/// (not cumulative), `count` all of them, those above the last bound included.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    /// `bounds`: the buckets' upper bounds, increasing.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, value: f64) {
        let i = self.bounds.partition_point(|&b| b < value);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let mut old = self.sum.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(old) + value).to_bits();
            match self
                .sum
                .compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => old = now,
            }
        }
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let counts: Vec<u64> = self.counts.iter().map(Metrics::get).collect();
        HistogramSnapshot {
            buckets: self
                .bounds
                .iter()
                .copied()
                .zip(counts.iter().copied())
                .collect(),
            count: counts.iter().sum(),
            sum: f64::from_bits(self.sum.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_include_their_upper_bound() {
        static BOUNDS: [f64; 3] = [1.0, 2.0, 4.0];
        let h = Histogram::new(&BOUNDS);
        for v in [0.5, 1.0, 1.5, 4.0, 9.0] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(1.0, 2), (2.0, 1), (4.0, 1)]);
        assert_eq!(s.count, 5, "the value above the last bound counts too");
        assert_eq!(s.sum, 16.0);
    }

    #[test]
    fn every_connack_refusal_has_a_reason() {
        assert_eq!(Refusal::of_code(0x86), Refusal::BadCredentials);
        assert_eq!(
            Refusal::of_code(reason::USE_ANOTHER_SERVER),
            Refusal::Unavailable
        );
        assert_eq!(
            Refusal::of_code(reason::UNSUPPORTED_PROTOCOL_VERSION),
            Refusal::Protocol
        );
        let labels: std::collections::HashSet<_> = Refusal::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Refusal::ALL.len());
    }
}
