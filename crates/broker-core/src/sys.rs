//! `$SYS`: this node's own figures, published to its own subscribers.
//!
//! Every `sys_interval_secs` the node publishes what changed since the last time among
//! Mosquitto's `$SYS/broker/...` topics (version, uptime, clients, messages, bytes,
//! subscriptions, retained and queued messages, and the `load/...` moving averages per
//! minute over 1, 5 and 15 minutes) and the cluster's view under
//! `$SYS/cluster/...` ([`crate::ClusterApi::sys_topics`]). These are one node's
//! figures: they go to the subscribers connected to this node only, at QoS 0, never
//! through Raft nor to another node. The latest value of each topic is kept here, in
//! memory ([`Shared::sys`]), never in the replicated retained store: a new `$SYS`
//! subscriber gets them at once, as retained messages.
//!
//! A filter starting with a wildcard (`#`, `+/…`) does not match `$SYS` topics (MQTT
//! §4.7.2, the trie's rule); subscribing needs the access rules' subscribe permission
//! like any filter; clients may not publish to `$SYS/…` (refused as not authorized,
//! which a 3.1.1 client cannot be told: its message is dropped).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::watch;

use crate::broker::Shared;
use crate::message::Message;
use crate::metrics::Metrics;
use crate::packet::QoS;
use crate::topic;

/// The root of this node's own topics.
pub const SYS: &str = "$SYS";

/// This node's figures at one moment: `$SYS/broker/...` and the HTTP API's `GET /node`.
/// Counters count since the node started; "here" is this node, whereas retained
/// messages are the cluster's (every node holds them all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Figures {
    pub uptime_secs: u64,
    /// Clients connected here (CONNECT accepted, not yet gone).
    pub clients_connected: u64,
    /// Sessions owned here whose client is not connected (persistent sessions).
    pub clients_disconnected: u64,
    /// The most clients connected here at once, as sampled by `$SYS` and `/node`.
    pub clients_maximum: u64,
    /// Sockets open here (TCP, TLS, WebSocket), CONNECT or not.
    pub connections_open: u64,
    /// Sockets accepted here since start, and CONNECTs accepted among them.
    pub connections_accepted: u64,
    pub clients_accepted: u64,
    /// Subscriptions of the sessions owned here.
    pub subscriptions: u64,
    /// Retained messages (the cluster's).
    pub retained: u64,
    /// Messages waiting in the queues of the sessions owned here: not yet sent, or sent
    /// and not yet acknowledged.
    pub queued: u64,
    /// MQTT packets of every type, and the PUBLISH packets among them.
    pub packets_received: u64,
    pub packets_sent: u64,
    pub publish_received: u64,
    pub publish_sent: u64,
    /// MQTT bytes (inside TLS and WebSocket framing).
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Messages dropped for any reason (full queues, expired, too large for the client).
    pub dropped: u64,
}

impl Figures {
    /// The `$SYS/broker/...` topics (below `$SYS/`) and their payloads, Mosquitto's
    /// names.
    pub fn sys_topics(&self) -> Vec<(String, String)> {
        let n = |v: u64| v.to_string();
        [
            (
                "broker/version",
                format!("raftmq {}", env!("CARGO_PKG_VERSION")),
            ),
            ("broker/uptime", format!("{} seconds", self.uptime_secs)),
            ("broker/clients/connected", n(self.clients_connected)),
            ("broker/clients/disconnected", n(self.clients_disconnected)),
            (
                "broker/clients/total",
                n(self.clients_connected + self.clients_disconnected),
            ),
            ("broker/clients/maximum", n(self.clients_maximum)),
            ("broker/messages/received", n(self.packets_received)),
            ("broker/messages/sent", n(self.packets_sent)),
            ("broker/publish/messages/received", n(self.publish_received)),
            ("broker/publish/messages/sent", n(self.publish_sent)),
            ("broker/bytes/received", n(self.bytes_received)),
            ("broker/bytes/sent", n(self.bytes_sent)),
            ("broker/subscriptions/count", n(self.subscriptions)),
            ("broker/retained messages/count", n(self.retained)),
            ("broker/store/messages/count", n(self.queued)),
        ]
        .into_iter()
        .map(|(t, v)| (t.to_string(), v))
        .collect()
    }
}

pub(crate) fn figures(shared: &Shared) -> Figures {
    let sessions: Vec<_> = shared
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter(|s| s.owner() == shared.node)
        .cloned()
        .collect();
    let mut s = Figures::default();
    for session in sessions {
        let st = session.lock();
        match st.attached.is_some() {
            true => s.clients_connected += 1,
            false => s.clients_disconnected += 1,
        }
        s.subscriptions += st.subscriptions.len() as u64;
        s.queued += (st.pending.len() + st.inflight.len()) as u64;
    }
    let m = &shared.metrics;
    let get = Metrics::get;
    m.clients_maximum
        .fetch_max(s.clients_connected, Ordering::Relaxed);
    Figures {
        uptime_secs: shared.started.elapsed().as_secs(),
        clients_maximum: get(&m.clients_maximum),
        connections_open: get(&m.connections_open),
        connections_accepted: get(&m.connections_accepted),
        clients_accepted: get(&m.clients_accepted),
        retained: shared
            .retained
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len() as u64,
        packets_received: get(&m.packets_received),
        packets_sent: get(&m.packets_sent),
        publish_received: get(&m.publish_received),
        publish_sent: get(&m.publish_sent),
        bytes_received: get(&m.bytes_received),
        bytes_sent: get(&m.bytes_sent),
        dropped: get(&m.dropped_qos0)
            + get(&m.dropped_queue_full)
            + get(&m.dropped_expired)
            + get(&m.dropped_too_large),
        ..s
    }
}

/// The moving averages of `$SYS/broker/load/...`: for each counter, its rate per minute
/// averaged over the last 1, 5 and 15 minutes (exponentially, as Mosquitto and Unix load
/// averages do), fed one interval at a time.
#[derive(Debug, Default)]
pub(crate) struct Load {
    /// Per counter: its value at the last tick and the three averages.
    last: Vec<(u64, [f64; 3])>,
}

/// The averaging windows of [`Load`], in seconds, with their topic names.
const WINDOWS: [(f64, &str); 3] = [(60.0, "1min"), (300.0, "5min"), (900.0, "15min")];

impl Load {
    /// Takes in the counters' values `interval_secs` after the last call and returns the
    /// `load/...` topics. The first call only records the counters (there is no
    /// interval to average yet), so it returns nothing.
    pub(crate) fn tick(&mut self, f: &Figures, interval_secs: f64) -> Vec<(String, String)> {
        let counters = [
            ("messages/received", f.packets_received),
            ("messages/sent", f.packets_sent),
            ("publish/received", f.publish_received),
            ("publish/sent", f.publish_sent),
            ("bytes/received", f.bytes_received),
            ("bytes/sent", f.bytes_sent),
            ("sockets", f.connections_accepted),
            ("connections", f.clients_accepted),
        ];
        let first = self.last.is_empty();
        if first {
            self.last = counters.iter().map(|(_, v)| (*v, [0.0; 3])).collect();
            return Vec::new();
        }
        let mut topics = Vec::new();
        for ((name, value), (last, avg)) in counters.iter().zip(self.last.iter_mut()) {
            let per_minute = value.saturating_sub(*last) as f64 * 60.0 / interval_secs;
            *last = *value;
            for ((window, label), a) in WINDOWS.iter().zip(avg.iter_mut()) {
                let keep = (-interval_secs / window).exp();
                *a = *a * keep + per_minute * (1.0 - keep);
                topics.push((format!("broker/load/{name}/{label}"), format!("{a:.2}")));
            }
        }
        topics
    }
}

/// Publishes the `$SYS` topics every `sys_interval_secs` (from now) until `stop`
/// changes; nothing when the interval is 0.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let secs = shared.config.sys_interval_secs;
    if secs == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut load = Load::default();
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let figures = figures(&shared);
        let mut values = figures.sys_topics();
        // Measured, not assumed: a late tick covers a longer interval.
        let interval = last.elapsed().as_secs_f64().max(0.001);
        last = tokio::time::Instant::now();
        values.extend(load.tick(&figures, interval));
        values.extend(shared.cluster.sys_topics());
        publish(&shared, values);
    }
}

/// Keeps each `(topic below $SYS/, payload)` as its topic's latest value and delivers
/// those that changed to this node's subscribers.
pub(crate) fn publish(shared: &Shared, values: Vec<(String, String)>) {
    let mut changed = Vec::new();
    {
        let mut latest = shared.sys.write().unwrap_or_else(|e| e.into_inner());
        for (topic, payload) in values {
            let topic = format!("{SYS}/{topic}");
            if latest
                .get(&topic)
                .is_some_and(|m| m.payload == payload.as_bytes())
            {
                continue;
            }
            let msg = Arc::new(Message::new(
                topic.clone(),
                Bytes::from(payload),
                QoS::AtMostOnce,
                true,
                Default::default(),
                None,
            ));
            latest.insert(topic, msg.clone());
            changed.push(msg);
        }
    }
    for msg in changed {
        shared.deliver_local(&msg);
    }
}

/// The latest `$SYS` values that `filter` (not a shared one) matches, for a new
/// subscription.
pub(crate) fn latest_matching(shared: &Shared, filter: &str) -> Vec<Arc<Message>> {
    // Only a filter starting with "$SYS" can match (§4.7.2): skip the map otherwise.
    if !filter.starts_with(SYS) {
        return Vec::new();
    }
    let latest = shared.sys.read().unwrap_or_else(|e| e.into_inner());
    latest
        .iter()
        .filter(|(topic, _)| topic::matches(filter, topic))
        .map(|(_, m)| m.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_topics_use_mosquittos_names() {
        let s = Figures {
            uptime_secs: 42,
            clients_connected: 3,
            clients_disconnected: 2,
            queued: 7,
            ..Figures::default()
        };
        let topics = s.sys_topics();
        let get = |t: &str| {
            topics
                .iter()
                .find(|(k, _)| k == t)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("no {t}"))
        };
        assert_eq!(get("broker/uptime"), "42 seconds");
        assert_eq!(get("broker/clients/total"), "5");
        assert_eq!(get("broker/store/messages/count"), "7");
        assert!(get("broker/version").starts_with("raftmq "));
        for (topic, _) in &topics {
            let full = format!("{SYS}/{topic}");
            assert!(topic::valid_topic_name(&full), "{full}");
            assert!(!topic::matches("#", &full), "'#' must not match {full}");
            assert!(topic::matches("$SYS/#", &full));
            assert!(topic::is_sys(&full));
        }
    }

    #[test]
    fn load_averages_follow_the_rate_per_minute() {
        let mut load = Load::default();
        let at = |received: u64| Figures {
            packets_received: received,
            ..Figures::default()
        };
        assert!(load.tick(&at(0), 10.0).is_empty(), "nothing to average yet");
        // 100 messages every 10 s is 600 a minute; after two hours of it every average
        // has converged there.
        let mut topics = Vec::new();
        for i in 1..=720 {
            topics = load.tick(&at(100 * i), 10.0);
        }
        fn get(topics: &[(String, String)], t: &str) -> f64 {
            topics
                .iter()
                .find(|(k, _)| k == t)
                .unwrap_or_else(|| panic!("no {t}"))
                .1
                .parse()
                .unwrap()
        }
        for w in ["1min", "5min", "15min"] {
            let v = get(&topics, &format!("broker/load/messages/received/{w}"));
            assert!((v - 600.0).abs() < 1.0, "{w}: {v}");
            assert_eq!(get(&topics, &format!("broker/load/bytes/sent/{w}")), 0.0);
        }
        // Then silence for a minute: the 1-minute average falls faster than the others.
        for _ in 0..6 {
            topics = load.tick(&at(72_000), 10.0);
        }
        let (one, five, fifteen) = (
            get(&topics, "broker/load/messages/received/1min"),
            get(&topics, "broker/load/messages/received/5min"),
            get(&topics, "broker/load/messages/received/15min"),
        );
        assert!(one < five && five < fifteen, "{one} {five} {fifteen}");
        assert!(
            (one - 600.0 * (-1.0f64).exp()).abs() < 1.0,
            "1min after 60 s idle: {one}"
        );
    }
}
