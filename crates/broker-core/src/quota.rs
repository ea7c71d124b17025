//! Quotas: the limits that keep one client from exhausting a node or the cluster
//! (subscriptions per session, topic size, retained messages, persistent sessions, the
//! inbound QoS 2 window of 3.1.1 clients). The checks here are plain functions of the
//! settings and of the usage this module keeps; the connection turns a refusal into the
//! protocol's answer. Every refusal is counted in [`Metrics`] and logged once per client
//! and quota, never once per packet.
//!
//! Retained messages and persistent sessions are cluster-wide state, replicated to
//! every node. They are checked on the node that accepts the PUBLISH or CONNECT, before
//! it proposes anything, against its applied copy of the replicated state plus, for
//! retained messages, what it has proposed and not yet seen applied. So one client, on
//! one connection, cannot pass a limit; nodes accepting new retained topics or new
//! persistent sessions at the same moment may together pass it by the number of such
//! requests in flight: the limits bound resources, they are not exact counts. Replacing
//! or clearing a retained topic, and resuming a session, are never refused, so that a
//! client at its quota can still update and clean up.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::Config;
use crate::message::Message;
use crate::metrics::Metrics;
use crate::replicated::{Event, SessionRecord, State};
use crate::topic;

/// (quota, client id) pairs logged at most; past it the set starts again (a client may
/// then be logged a second time).
const LOGGED_MAX: usize = 10_000;

/// Which limit a request would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Quota {
    Subscriptions,
    TopicLength,
    TopicLevels,
    RetainedMessages,
    RetainedBytes,
    RetainedPerClient,
    PersistentSessions,
    InflightQos2,
}

impl Quota {
    /// The setting that sets it, as the config file names it.
    pub fn setting(self) -> &'static str {
        match self {
            Quota::Subscriptions => "max_subscriptions_per_session",
            Quota::TopicLength => "max_topic_length",
            Quota::TopicLevels => "max_topic_levels",
            Quota::RetainedMessages => "max_retained_messages",
            Quota::RetainedBytes => "max_retained_bytes",
            Quota::RetainedPerClient => "max_retained_per_client",
            Quota::PersistentSessions => "max_persistent_sessions",
            Quota::InflightQos2 => "max_inflight_qos2",
        }
    }

    fn counter(self, m: &Metrics) -> &AtomicU64 {
        match self {
            Quota::Subscriptions => &m.quota_subscriptions,
            Quota::TopicLength | Quota::TopicLevels => &m.quota_topic,
            Quota::RetainedMessages | Quota::RetainedBytes | Quota::RetainedPerClient => {
                &m.quota_retained
            }
            Quota::PersistentSessions => &m.quota_persistent_sessions,
            Quota::InflightQos2 => &m.quota_inflight_qos2,
        }
    }
}

/// Checks a topic name (already valid) against `max_topic_length` and
/// `max_topic_levels`.
pub(crate) fn check_topic(cfg: &Config, name: &str) -> Result<(), Quota> {
    if name.len() > cfg.max_topic_length {
        return Err(Quota::TopicLength);
    }
    if levels(name) > cfg.max_topic_levels {
        return Err(Quota::TopicLevels);
    }
    Ok(())
}

/// Checks a topic filter (already valid) likewise: its whole length, and the levels of
/// the filter a shared subscription (`$share/group/filter`) wraps.
pub(crate) fn check_filter(cfg: &Config, filter: &str) -> Result<(), Quota> {
    if filter.len() > cfg.max_topic_length {
        return Err(Quota::TopicLength);
    }
    let inner = topic::split_shared(filter).map_or(filter, |(_, inner)| inner);
    if levels(inner) > cfg.max_topic_levels {
        return Err(Quota::TopicLevels);
    }
    Ok(())
}

fn levels(topic: &str) -> usize {
    topic.bytes().filter(|&b| b == b'/').count() + 1
}

/// What a retained message costs against `max_retained_bytes`.
pub(crate) fn retained_size(topic: &str, payload_len: usize) -> u64 {
    (topic.len() + payload_len) as u64
}

/// Retained messages counted: how many, their bytes, and how many each client set.
#[derive(Debug, Default)]
struct Usage {
    count: usize,
    bytes: u64,
    per_client: HashMap<Arc<str>, usize>,
}

impl Usage {
    fn add(&mut self, client: Option<&str>, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
        if let Some(c) = client {
            match self.per_client.get_mut(c) {
                Some(n) => *n += 1,
                None => {
                    self.per_client.insert(c.into(), 1);
                }
            }
        }
    }

    fn sub(&mut self, client: Option<&str>, bytes: u64) {
        self.count = self.count.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
        if let Some(n) = client.and_then(|c| self.per_client.get_mut(c)) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(client.unwrap_or_default());
            }
        }
    }

    fn of(&self, client: &str) -> usize {
        self.per_client.get(client).copied().unwrap_or(0)
    }
}

/// The retained messages this node has applied, and those it has proposed since.
#[derive(Debug, Default)]
struct Retained {
    applied: Usage,
    pending: Usage,
}

impl Retained {
    /// Whether one more retained topic of `bytes`, set by `client`, fits.
    fn admits(&self, cfg: &Config, client: &str, bytes: u64) -> Result<(), Quota> {
        let (a, p) = (&self.applied, &self.pending);
        if a.count + p.count >= cfg.max_retained_messages {
            return Err(Quota::RetainedMessages);
        }
        if a.bytes + p.bytes + bytes > cfg.max_retained_bytes {
            return Err(Quota::RetainedBytes);
        }
        if a.of(client) + p.of(client) >= cfg.max_retained_per_client {
            return Err(Quota::RetainedPerClient);
        }
        Ok(())
    }
}

/// A new retained topic proposed and not yet applied: counted as pending until this is
/// dropped, once its commit has resolved (applied here, or failed).
pub(crate) struct Reservation {
    retained: Arc<Mutex<Retained>>,
    client: Arc<str>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        lock(&self.retained)
            .pending
            .sub(Some(&self.client), self.bytes);
    }
}

/// The usage the quotas are checked against, and which refusals were logged.
/// Lock order: each lock here is taken alone, never with another of this module or
/// of `broker::Shared`.
#[derive(Default)]
pub(crate) struct Quotas {
    retained: Arc<Mutex<Retained>>,
    /// Client ids of the persistent sessions, as this node has applied them.
    persistent: Mutex<HashSet<Arc<str>>>,
    logged: Mutex<HashSet<(Quota, Arc<str>)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Quotas {
    /// Counts a refusal by `quota` and logs it, once per client and quota.
    pub fn exceeded(&self, metrics: &Metrics, quota: Quota, client_id: &str, what: impl Display) {
        let total = quota.counter(metrics).fetch_add(1, Ordering::Relaxed) + 1;
        let first = {
            let mut logged = lock(&self.logged);
            if logged.len() >= LOGGED_MAX {
                logged.clear();
            }
            logged.insert((quota, client_id.into()))
        };
        if first {
            tracing::warn!(
                client_id,
                setting = quota.setting(),
                refused_total = total,
                "quota exceeded: {what} (further refusals of this client are counted, not logged)"
            );
        }
    }

    /// Room for a retained message of `bytes` that `client` sets on a topic with no
    /// retained message yet (a replacement or a clear needs none), or the quota it
    /// would pass. The reservation goes with the proposal and is dropped once that is
    /// applied.
    pub fn reserve_retained(
        &self,
        cfg: &Config,
        client: &Arc<str>,
        bytes: u64,
    ) -> Result<Reservation, Quota> {
        let mut retained = lock(&self.retained);
        retained.admits(cfg, client, bytes)?;
        retained.pending.add(Some(client), bytes);
        Ok(Reservation {
            retained: self.retained.clone(),
            client: client.clone(),
            bytes,
        })
    }

    /// The retained messages applied here: how many, and their bytes as counted
    /// against `max_retained_bytes`.
    pub fn retained_usage(&self) -> (u64, u64) {
        let retained = lock(&self.retained);
        (retained.applied.count as u64, retained.applied.bytes)
    }

    /// An applied retained message `new` replaced `old` (either may be none).
    pub fn retained_applied(&self, old: Option<&Message>, new: Option<&Message>) {
        let mut retained = lock(&self.retained);
        if let Some(m) = old {
            let bytes = retained_size(&m.topic, m.payload.len());
            retained.applied.sub(m.publisher.as_deref(), bytes);
        }
        if let Some(m) = new {
            let bytes = retained_size(&m.topic, m.payload.len());
            retained.applied.add(m.publisher.as_deref(), bytes);
        }
    }

    /// Whether `client_id` may connect with a session `expiry_secs`: a session that
    /// would be a new persistent one must fit under `max_persistent_sessions`.
    pub fn admit_session(
        &self,
        cfg: &Config,
        client_id: &str,
        expiry_secs: u32,
    ) -> Result<(), Quota> {
        let persistent = lock(&self.persistent);
        if expiry_secs == 0
            || persistent.contains(client_id)
            || persistent.len() < cfg.max_persistent_sessions
        {
            return Ok(());
        }
        Err(Quota::PersistentSessions)
    }

    /// Follows an applied event that may make a session persistent or end one.
    pub fn applied(&self, event: &Event, state: &State) {
        let client_id = match event {
            Event::Claim { client_id, .. }
            | Event::Release { client_id, .. }
            | Event::Expire { client_id, .. }
            | Event::ReleaseWithWill { client_id, .. } => client_id.as_str(),
            _ => return,
        };
        let persistent = state
            .sessions
            .get(client_id)
            .is_some_and(SessionRecord::is_persistent);
        let mut set = lock(&self.persistent);
        if !persistent {
            set.remove(client_id);
        } else if !set.contains(client_id) {
            set.insert(client_id.into());
        }
    }

    /// Counts everything again from a state that replaces the one applied so far.
    pub fn reset(&self, state: &State) {
        *lock(&self.persistent) = state
            .sessions
            .iter()
            .filter(|(_, r)| r.is_persistent())
            .map(|(id, _)| id.as_str().into())
            .collect();
        let mut applied = Usage::default();
        for (topic, m) in &state.retained {
            applied.add(
                m.publisher.as_deref(),
                retained_size(topic, m.payload.len()),
            );
        }
        lock(&self.retained).applied = applied;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicated::StoredMessage;
    use bytes::Bytes;

    fn cfg() -> Config {
        Config {
            max_topic_length: 10,
            max_topic_levels: 3,
            max_retained_messages: 3,
            max_retained_bytes: 100,
            max_retained_per_client: 2,
            max_persistent_sessions: 1,
            ..Config::default()
        }
    }

    #[test]
    fn topics_and_filters_are_held_to_length_and_levels() {
        let cfg = cfg();
        assert_eq!(check_topic(&cfg, "a/b/c"), Ok(()));
        assert_eq!(check_topic(&cfg, "0123456789"), Ok(()));
        assert_eq!(check_topic(&cfg, "0123456789a"), Err(Quota::TopicLength));
        assert_eq!(check_topic(&cfg, "a/b/c/d"), Err(Quota::TopicLevels));
        assert_eq!(check_topic(&cfg, "///"), Err(Quota::TopicLevels));
        assert_eq!(check_filter(&cfg, "a/+/#"), Ok(()));
        assert_eq!(check_filter(&cfg, "a/+/#/x"), Err(Quota::TopicLevels));
        // The share prefix counts towards the length, not the levels.
        let cfg = Config {
            max_topic_length: 20,
            ..cfg
        };
        assert_eq!(check_filter(&cfg, "$share/g/a/b/c"), Ok(()));
        assert_eq!(
            check_filter(&cfg, "$share/g/a/b/c/d"),
            Err(Quota::TopicLevels)
        );
    }

    fn message(topic: &str, payload: &'static [u8], publisher: &str) -> Message {
        StoredMessage {
            topic: topic.into(),
            payload: Bytes::from_static(payload),
            qos: 0,
            retain: true,
            properties: Default::default(),
            expires_at_ms: None,
            publisher: Some(publisher.into()),
        }
        .to_message()
    }

    #[test]
    fn retained_quotas_count_applied_and_pending_messages() {
        let (cfg, q) = (cfg(), Quotas::default());
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        let r1 = q.reserve_retained(&cfg, &a, 10).unwrap();
        let _r2 = q.reserve_retained(&cfg, &a, 10).unwrap();
        assert_eq!(
            q.reserve_retained(&cfg, &a, 10).err(),
            Some(Quota::RetainedPerClient),
            "pending ones count"
        );
        // Applied, then the reservation released: still counted once.
        let m1 = message("t/1", b"1234567", "a");
        q.retained_applied(None, Some(&m1));
        drop(r1);
        assert_eq!(
            q.reserve_retained(&cfg, &a, 10).err(),
            Some(Quota::RetainedPerClient)
        );
        assert_eq!(
            q.reserve_retained(&cfg, &b, 81).err(),
            Some(Quota::RetainedBytes),
            "10 + 10 + 81 > 100"
        );
        let _r3 = q.reserve_retained(&cfg, &b, 80).unwrap();
        assert_eq!(
            q.reserve_retained(&cfg, &b, 0).err(),
            Some(Quota::RetainedMessages)
        );
        // A clear gives the room back.
        q.retained_applied(Some(&m1), None);
        assert!(q.reserve_retained(&cfg, &a, 10).is_ok());
    }

    #[test]
    fn a_reset_recounts_from_the_state() {
        let (cfg, q) = (cfg(), Quotas::default());
        let mut state = State::default();
        for (topic, who) in [("x", "a"), ("y", "a")] {
            let m = message(topic, b"p", who);
            state
                .retained
                .insert(topic.into(), StoredMessage::from_message(&m));
        }
        q.reset(&state);
        let a: Arc<str> = "a".into();
        assert_eq!(
            q.reserve_retained(&cfg, &a, 1).err(),
            Some(Quota::RetainedPerClient)
        );
    }

    #[test]
    fn persistent_sessions_are_counted_and_resumed_ones_admitted() {
        let (cfg, q) = (cfg(), Quotas::default());
        let mut state = State::default();
        let claim = |id: &str, expiry| Event::Claim {
            node: 1,
            client_id: id.into(),
            clean_start: false,
            expiry_secs: expiry,
            username: None,
            will: None,
        };
        assert_eq!(q.admit_session(&cfg, "p", 60), Ok(()));
        let c = claim("p", 60);
        state.apply(&c);
        q.applied(&c, &state);
        assert_eq!(q.admit_session(&cfg, "p", 60), Ok(()), "resumed");
        assert_eq!(q.admit_session(&cfg, "clean", 0), Ok(()), "not persistent");
        assert_eq!(
            q.admit_session(&cfg, "other", 60),
            Err(Quota::PersistentSessions)
        );
        // Once the session ends, there is room again.
        let end = Event::Release {
            client_id: "p".into(),
            epoch: 1,
            expiry_secs: 0,
            at_ms: 0,
        };
        state.apply(&end);
        q.applied(&end, &state);
        assert_eq!(q.admit_session(&cfg, "other", 60), Ok(()));
    }

    #[test]
    fn a_refusal_is_counted_each_time() {
        let (m, q) = (Metrics::default(), Quotas::default());
        for _ in 0..3 {
            q.exceeded(&m, Quota::TopicLevels, "c", "deep");
        }
        q.exceeded(&m, Quota::TopicLength, "c", "long");
        assert_eq!(Metrics::get(&m.quota_topic), 4);
        assert_eq!(lock(&q.logged).len(), 2, "logged once per client and quota");
    }
}
