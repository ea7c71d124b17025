//! The broker's shared state and its listener: the session registry, the subscription
//! trie, retained messages, and the routing of one publish to every matching session.
//!
//! Lock order: `sessions` → `subs` → a session's own lock; `retained` is never held with
//! another. None is held across an `.await`, and a publish holds `subs` (read) only while
//! collecting its targets, never while delivering.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::acl::Acl;
use crate::cluster_api::{ClusterApi, SingleNode};
use crate::config::{Config, QueuePolicy};
use crate::metrics::Metrics;
use crate::packet::{MessageProperties, Protocol, QoS, Will};
use crate::retained::RetainedStore;
use crate::session::{Attachment, Delivery, Enqueued, Session, SubOptions};
use crate::subscriptions::{Match, SubscriptionTree};
use crate::wire::WireCache;

/// An application message as routed: built once per PUBLISH and shared, payload
/// included, by every session it goes to.
#[derive(Debug)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: MessageProperties,
    /// When the v5 message expiry interval runs out.
    pub expires_at: Option<Instant>,
    /// The publishing client, for v5 no-local.
    pub publisher: Option<Arc<str>>,
    /// Its encoded PUBLISH header, shared by the subscribers it goes to.
    pub wire: WireCache,
}

impl Message {
    pub fn new(
        topic: String,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        properties: MessageProperties,
        publisher: Option<Arc<str>>,
    ) -> Message {
        let expires_at = properties
            .message_expiry_interval
            .map(|s| Instant::now() + Duration::from_secs(u64::from(s)));
        Message {
            topic,
            payload,
            qos,
            retain,
            properties,
            expires_at,
            publisher,
            wire: WireCache::default(),
        }
    }

    /// Whether its message expiry interval has run out: such a message is dropped
    /// rather than sent.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// A subscription as the trie holds it: the session itself, so that a match needs no
/// registry lookup.
#[derive(Debug, Clone)]
pub(crate) struct SubEntry {
    pub session: Arc<Session>,
    pub opts: SubOptions,
    /// The subscriber's username, for access rules checked at delivery.
    pub username: Option<Arc<str>>,
}

/// What routing one message did.
#[derive(Debug, Default)]
pub(crate) struct Routed {
    /// Sessions the message was queued for.
    pub matched: usize,
    /// Sessions queued above their bound: the publisher waits for them (backpressure).
    pub full: Vec<Arc<Session>>,
}

/// Everything the connections share.
pub(crate) struct Shared {
    pub config: Config,
    pub cluster: Arc<dyn ClusterApi>,
    pub acl: Acl,
    pub metrics: Metrics,
    pub sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    pub subs: RwLock<SubscriptionTree<Arc<str>, SubEntry>>,
    pub retained: RwLock<RetainedStore<Arc<Message>>>,
    next_conn_id: AtomicU64,
    /// Set once when the broker stops; every session is then woken to see it.
    pub shutting_down: AtomicBool,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// One matched subscription on its way to becoming a delivery.
struct Target {
    session: Arc<Session>,
    qos: QoS,
    retain_as_published: bool,
    sub_id: Option<u32>,
    username: Option<Arc<str>>,
}

impl Shared {
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Delivers `msg` to every matching session, on this node and (through the cluster)
    /// on others, and stores it if retained.
    pub fn route(&self, msg: &Arc<Message>) -> Routed {
        if msg.retain {
            let mut retained = write(&self.retained);
            if msg.payload.is_empty() {
                retained.remove(&msg.topic);
            } else {
                retained.insert(&msg.topic, msg.clone());
            }
        }
        let mut nodes = Vec::new();
        self.cluster.remote_routes(&msg.topic, &mut nodes);
        for node in nodes {
            self.cluster.forward(node, msg.clone());
        }
        self.deliver_local(msg)
    }

    /// Delivers `msg` to this node's matching sessions only (also the entry point for a
    /// publish forwarded by another node).
    pub fn deliver_local(&self, msg: &Arc<Message>) -> Routed {
        let mut targets = self.collect_targets(msg);
        // Overlapping subscriptions of one session give one delivery, at the highest
        // QoS, carrying every subscription identifier (MQTT 5.0 §3.3.4).
        targets.sort_by_key(|t| Arc::as_ptr(&t.session) as usize);
        let mut routed = Routed::default();
        let mut i = 0;
        while i < targets.len() {
            let mut j = i + 1;
            while j < targets.len() && Arc::ptr_eq(&targets[i].session, &targets[j].session) {
                j += 1;
            }
            self.deliver_merged(msg, &targets[i..j], &mut routed);
            i = j;
        }
        routed
    }

    fn collect_targets(&self, msg: &Message) -> Vec<Target> {
        let mut targets = Vec::new();
        let subs = read(&self.subs);
        subs.for_each_match(&msg.topic, |m| match m {
            Match::Direct { key, value, .. } => {
                if value.opts.no_local && msg.publisher.as_deref() == Some(&**key) {
                    return;
                }
                targets.push(Target::from_entry(value));
            }
            Match::Shared {
                members, cursor, ..
            } => {
                // Round-robin over the group, skipping members whose client is away
                // unless every member is.
                let start = cursor.fetch_add(1, Ordering::Relaxed);
                let n = members.len();
                let pick = (0..n)
                    .map(|k| &members[(start + k) % n].1)
                    .find(|e| e.session.is_online())
                    .unwrap_or(&members[start % n].1);
                targets.push(Target::from_entry(pick));
            }
        });
        targets
    }

    fn deliver_merged(&self, msg: &Arc<Message>, group: &[Target], routed: &mut Routed) {
        let first = &group[0];
        if !self.acl.is_empty()
            && !self.acl.can_receive(
                &first.session.client_id,
                first.username.as_deref(),
                &msg.topic,
            )
        {
            return;
        }
        let qos = group.iter().map(|t| t.qos).max().unwrap_or(QoS::AtMostOnce);
        let delivery = Delivery {
            msg: msg.clone(),
            qos: qos.min(msg.qos),
            retain: msg.retain && group.iter().any(|t| t.retain_as_published),
            sub_ids: group.iter().filter_map(|t| t.sub_id).collect(),
        };
        self.enqueue(&first.session, delivery, routed);
    }

    /// Queues one delivery and counts what happened to it.
    pub fn enqueue(&self, session: &Arc<Session>, d: Delivery, routed: &mut Routed) {
        let qos = d.qos;
        let overflow = self.config.queue_policy == QueuePolicy::Backpressure;
        match session.enqueue(d, self.config.max_queued_messages, overflow) {
            Enqueued::Queued => routed.matched += 1,
            Enqueued::QueuedOverBound => {
                routed.matched += 1;
                routed.full.push(session.clone());
            }
            Enqueued::Dropped if qos == QoS::AtMostOnce => {
                Metrics::inc(&self.metrics.dropped_qos0);
            }
            Enqueued::Dropped => {
                let n = self
                    .metrics
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                // One line per power of two: visible, without flooding the log.
                if (n + 1).is_power_of_two() {
                    tracing::warn!(
                        client_id = %session.client_id,
                        dropped_total = n + 1,
                        "session queue full: QoS {} message dropped",
                        qos as u8
                    );
                }
            }
        }
    }

    /// Attaches a new connection to `client_id`'s session, taking it over from any
    /// connection that holds it (that one is woken, finds itself detached and closes).
    /// Returns the session and whether it was resumed (session present).
    pub fn attach(
        &self,
        client_id: &Arc<str>,
        clean_start: bool,
        conn_id: u64,
        protocol: Protocol,
        expiry_secs: u32,
        window: usize,
    ) -> (Arc<Session>, bool) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let existing = sessions.get(client_id).cloned();
        if let Some(old) = &existing {
            if old.lock().attached.take().is_some() {
                old.set_online(false);
                old.wake.notify_waiters();
            }
        }
        let (session, present) = match existing {
            Some(old) if !clean_start => (old, true),
            old => {
                if let Some(old) = old {
                    self.unsubscribe_all(&old);
                }
                let s = Session::new(client_id.clone());
                sessions.insert(client_id.clone(), s.clone());
                (s, false)
            }
        };
        drop(sessions);
        {
            let mut st = session.lock();
            st.attached = Some(Attachment { conn_id });
            st.generation += 1;
            st.protocol = Some(protocol);
            st.expiry_secs = expiry_secs;
            st.window = window;
        }
        session.set_online(true);
        (session, present)
    }

    /// Detaches connection `conn_id` from `session` (if it still holds it) and starts the
    /// session's expiry. Returns the generation the session had, for will timers.
    pub fn detach(self: &Arc<Self>, session: &Arc<Session>, conn_id: u64) -> Option<u64> {
        let (generation, expiry) = {
            let mut st = session.lock();
            if st.attached.as_ref().map(|a| a.conn_id) != Some(conn_id) {
                return None;
            }
            st.attached = None;
            session.set_online(false);
            // QoS 0 is not kept for an absent client.
            st.pending.retain(|d| d.qos != QoS::AtMostOnce);
            (st.generation, st.expiry_secs)
        };
        session.room.notify_waiters();
        match expiry {
            0 => self.remove_session(session),
            u32::MAX => {}
            secs => {
                let shared = self.clone();
                let session = session.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(u64::from(secs))).await;
                    if session.lock().generation == generation && !session.is_online() {
                        shared.remove_session(&session);
                    }
                });
            }
        }
        Some(generation)
    }

    /// Ends a session: forgets it and its subscriptions, if it is still the registered one.
    pub fn remove_session(&self, session: &Arc<Session>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions
            .get(&session.client_id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.remove(&session.client_id);
            drop(sessions);
            self.unsubscribe_all(session);
        }
    }

    fn unsubscribe_all(&self, session: &Arc<Session>) {
        let filters: Vec<String> = {
            let mut st = session.lock();
            st.pending.clear();
            st.inflight.clear();
            st.incoming_qos2.clear();
            st.subscriptions.drain().map(|(f, _)| f).collect()
        };
        let mut subs = write(&self.subs);
        for f in filters {
            subs.remove(&f, &session.client_id);
        }
    }

    /// Publishes a will now, or after its delay if the session is not resumed by then.
    pub fn schedule_will(
        self: &Arc<Self>,
        session: &Arc<Session>,
        generation: u64,
        will: Will,
        username: Option<Arc<str>>,
    ) {
        let expiry = session.lock().expiry_secs;
        let delay = will.delay_interval.min(expiry);
        if delay == 0 {
            self.publish_will(session, will, username.as_deref());
            return;
        }
        let shared = self.clone();
        let session = session.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
            if session.lock().generation == generation {
                shared.publish_will(&session, will, username.as_deref());
            }
        });
    }

    fn publish_will(&self, session: &Session, will: Will, username: Option<&str>) {
        if !self.acl.is_empty()
            && !self
                .acl
                .can_publish(&session.client_id, username, &will.topic)
        {
            return;
        }
        tracing::debug!(client_id = %session.client_id, topic = %will.topic, "publishing will");
        let msg = Arc::new(Message::new(
            will.topic,
            will.payload,
            will.qos,
            will.retain,
            will.properties,
            Some(session.client_id.clone()),
        ));
        self.route(&msg);
    }
}

impl Target {
    fn from_entry(e: &SubEntry) -> Target {
        Target {
            session: e.session.clone(),
            qos: e.opts.qos,
            retain_as_published: e.opts.retain_as_published,
            sub_id: e.opts.sub_id,
            username: e.username.clone(),
        }
    }
}

/// A handle on a running broker's state, for the server binary and for tests.
#[derive(Clone)]
pub struct BrokerHandle {
    shared: Arc<Shared>,
}

impl BrokerHandle {
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Number of sessions (connected or not) held.
    pub fn session_count(&self) -> usize {
        self.shared
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Delivers a message that another node forwarded, to this node's subscribers only.
    pub fn deliver_forwarded(&self, msg: Arc<Message>) {
        self.shared.deliver_local(&msg);
    }
}

/// A bound, not yet running, broker.
pub struct Broker {
    shared: Arc<Shared>,
    listener: TcpListener,
}

impl Broker {
    /// Binds the MQTT listener of a broker that is a cluster of one.
    pub async fn bind(config: Config) -> io::Result<Broker> {
        Broker::bind_with_cluster(config, Arc::new(SingleNode::default())).await
    }

    pub async fn bind_with_cluster(
        config: Config,
        cluster: Arc<dyn ClusterApi>,
    ) -> io::Result<Broker> {
        let listener = TcpListener::bind(config.mqtt_addr).await?;
        let shared = Arc::new(Shared {
            acl: Acl::new(config.acl.clone()),
            config,
            cluster,
            metrics: Metrics::default(),
            sessions: Mutex::new(HashMap::new()),
            subs: RwLock::new(SubscriptionTree::new()),
            retained: RwLock::new(RetainedStore::new()),
            next_conn_id: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
        });
        Ok(Broker { shared, listener })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn handle(&self) -> BrokerHandle {
        BrokerHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serves clients until `shutdown` resolves, then asks every connection to close
    /// and waits (bounded) for them.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        // Every connection task holds a clone of `done_tx`; when all are gone, `recv`
        // returns None (the drop-guard pattern of STYLE.md, convention 9).
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let shared = self.shared.clone();
                        let done = done_tx.clone();
                        tokio::spawn(async move {
                            crate::connection::serve(shared, stream, peer).await;
                            drop(done);
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of
                        // spinning, and keep serving the connections we have.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        tracing::info!("shutting down: closing client connections");
        self.shared.shutting_down.store(true, Ordering::Release);
        let sessions: Vec<Arc<Session>> = self
            .shared
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for s in sessions {
            s.wake.notify_waiters();
        }
        drop(done_tx);
        let _ = tokio::time::timeout(Duration::from_secs(5), done_rx.recv()).await;
        Ok(())
    }
}
