//! The broker's shared state: the session registry, the subscription
//! trie, retained messages, and the routing of one publish to every matching session.
//!
//! Lock order: `sessions` → `subs` → a session's own lock; `retained` and `sys` are
//! never held with another. None is held across an `.await`, and a publish holds `subs`
//! (read) only while collecting its targets, never while delivering.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::acl::Acl;
use crate::auth::Auth;
use crate::cluster_api::{ClusterApi, ClusterError, ClusterFuture, CutOff};
use crate::config::{Config, QueuePolicy};
use crate::message::Message;
use crate::metrics::{Gauges, Metrics};
use crate::packet::{Protocol, QoS, SubOptions, Will};
use crate::quota::{Quotas, Reservation};
use crate::rate::Pacing;
use crate::replicated::NodeId;
use crate::replicated::{
    now_ms, Event, Origin, Outcome, StoredMessage, Target as DurableTarget, WILL_SEQ,
};
use crate::retained::RetainedStore;
use crate::session::{Attachment, Delivery, Enqueued, Session};
use crate::subscriptions::{Match, SubscriptionTree};
use crate::topic;

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
    /// Sessions the message was queued for (here, on other nodes, or durably).
    pub matched: usize,
    /// Sessions queued above their bound: the publisher waits for them (backpressure).
    pub full: Vec<Arc<Session>>,
    /// Persistent sessions a QoS 1/2 message goes to through the durable queues.
    pub durable: Vec<DurableTarget>,
}

/// How long after a timed-out claim it is surely committed or dropped (a few commit
/// timeouts, the cluster layer's retry included).
const LATE_CLAIM: Duration = Duration::from_secs(30);

/// Pause between two attempts to commit the end of a connection.
const RELEASE_RETRY: Duration = Duration::from_secs(1);

/// Sessions owned by other nodes, by node: one forwarded copy per node.
type Remote = Vec<(NodeId, Vec<DurableTarget>)>;

/// The client connection a message comes from (none for a will): its durable
/// messages carry an [`Origin`], numbered by `proposed`.
pub(crate) struct Publisher<'a> {
    pub client_id: &'a str,
    pub epoch: u64,
    /// How many messages this connection has proposed.
    pub proposed: &'a mut u64,
    /// The packet id of a QoS 2 message from a persistent session, held until PUBREL.
    pub qos2_pkid: Option<u16>,
    /// The message is the will of the offline session `(client_id, epoch)`
    /// ([`crate::replicated::WILL_SEQ`]).
    pub will: bool,
    /// The room a new retained topic holds until its proposal is applied.
    pub retained: Option<Reservation>,
}

/// Everything the connections share.
pub(crate) struct Shared {
    pub config: Config,
    pub cluster: Arc<dyn ClusterApi>,
    /// This node's id (`cluster.node_id()`), the owner of sessions connected here.
    pub node: NodeId,
    pub acl: Acl,
    pub auth: Arc<Auth>,
    pub metrics: Metrics,
    pub quota: Quotas,
    /// The `[[pacing]]` rules' pacers, shared by every connection of this node.
    pub pacing: Pacing,
    /// Above `max_memory_mb` (sampled by the server): new connections are refused as
    /// busy and QoS 0 deliveries dropped.
    pub over_memory: AtomicBool,
    pub sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    pub subs: RwLock<SubscriptionTree<Arc<str>, SubEntry>>,
    pub retained: RwLock<RetainedStore<Arc<Message>>>,
    /// The latest value of each of this node's `$SYS` topics (`sys`), by topic.
    pub sys: RwLock<BTreeMap<String, Arc<Message>>>,
    next_conn_id: AtomicU64,
    /// Set once when the broker stops; every session is then woken to see it.
    pub shutting_down: AtomicBool,
    /// Cut off from the cluster ([`crate::cluster_api::Engine::set_cut_off`]): client
    /// connections close and new ones are refused while it is set.
    pub cut_off: RwLock<Option<CutOff>>,
    /// Mirrors `cut_off.is_some()` for the connections' lock-free check on each wake.
    pub is_cut_off: AtomicBool,
    /// The lease ([`crate::cluster_api::Engine::renew_lease`]): until when this node
    /// may serve, in ms since `started`; `u64::MAX` before the first renewal.
    pub lease_until_ms: AtomicU64,
    pub started: std::time::Instant,
    /// The sessions `(client_id, epoch, expiry_secs)` that the state, when last reset,
    /// counted as connected here: at start-up, those of a crashed run
    /// (`release_orphans`).
    pub orphans: Mutex<Vec<(String, u64, u32)>>,
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
    /// Wakes every connection, to see a change that concerns them all (shutdown, cut
    /// off).
    pub(crate) fn wake_all(&self) {
        let sessions: Vec<Arc<Session>> = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for s in sessions {
            s.wake.notify_waiters();
        }
    }

    /// Where a cut-off node sends its clients, if cut off (told so, or its lease ran
    /// out before the cluster could tell it).
    pub(crate) fn cut_off(&self) -> Option<CutOff> {
        if self.is_cut_off.load(Ordering::Acquire) {
            return Some(read(&self.cut_off).clone().unwrap_or_default());
        }
        let now = self.started.elapsed().as_millis() as u64;
        (now >= self.lease_until_ms.load(Ordering::Acquire)).then(CutOff::default)
    }

    /// What the engine holds now. Takes each session's lock in turn (never two at
    /// once, nor the registry's while doing so): for a scrape, not for the hot path.
    pub fn gauges(&self) -> Gauges {
        let sessions: Vec<Arc<Session>> = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut g = Gauges::default();
        for s in &sessions {
            let st = s.lock();
            match (s.is_online(), st.expiry_secs != 0) {
                (true, _) => g.sessions_online += 1,
                (false, true) => g.sessions_offline += 1,
                (false, false) => {}
            }
            if s.owner() == self.node {
                g.clients_connected += u64::from(st.attached.is_some());
                g.queued_messages += st.pending.len() as u64;
                g.inflight_messages += st.inflight.len() as u64;
            }
        }
        (g.retained_messages, g.retained_bytes) = self.quota.retained_usage();
        g.subscriptions = read(&self.subs).len() as u64;
        g
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Publishes an accepted message: delivers it to every session that takes it
    /// directly and proposes what must be committed first (a retained message, the
    /// durable deliveries, a persistent publisher's QoS 2 packet id `from`). The
    /// future, if any, resolves once all that is committed: only then may the
    /// publisher be acknowledged. The proposals are queued in call order, so one
    /// publisher's messages are committed, and delivered, in its order.
    pub fn publish(
        &self,
        msg: &Arc<Message>,
        mut publisher: Option<Publisher<'_>>,
    ) -> (Routed, Option<ClusterFuture<()>>) {
        let mut commits = Vec::new();
        if msg.retain {
            let message = (!msg.payload.is_empty()).then(|| StoredMessage::from_message(msg));
            let topic = msg.topic.clone();
            let committed = self.cluster.commit(Event::Retain { topic, message });
            commits.push(match publisher.as_mut().and_then(|p| p.retained.take()) {
                None => committed,
                // Counted as pending until applied here (the commit resolves then).
                Some(room) => Box::pin(async move {
                    let outcome = committed.await;
                    drop(room);
                    outcome
                }),
            });
        }
        // A persistent publisher's QoS 2 message is committed with its packet id, which
        // is what makes its resend (DUP, perhaps at another node) known: its QoS 2
        // deliveries, to clean sessions too, go out from that commit, never before it,
        // or a resend after a failed commit would deliver it again.
        // A will, likewise: its commit takes it, once, and only what that commit
        // carries is delivered at QoS 1/2.
        let is_will = publisher.as_ref().is_some_and(|p| p.will);
        let exactly_once = is_will
            || msg.qos == QoS::ExactlyOnce
                && publisher.as_ref().is_some_and(|p| p.qos2_pkid.is_some());
        let routed = self.route(msg, exactly_once);
        // Cut off from the majority, a QoS 1/2 ack waits for quorum (or fails), even
        // for a message that only clean sessions take.
        let cut_off = msg.qos != QoS::AtMostOnce && !self.cluster.can_commit();
        let qos2_held = publisher.as_ref().is_some_and(|p| p.qos2_pkid.is_some());
        if !routed.durable.is_empty() || qos2_held || cut_off || is_will {
            let from = publisher.map(|p| {
                let seq = match p.will {
                    true => WILL_SEQ,
                    false => {
                        *p.proposed += 1;
                        *p.proposed
                    }
                };
                Origin {
                    client_id: p.client_id.to_string(),
                    epoch: p.epoch,
                    seq,
                    qos2_pkid: p.qos2_pkid,
                }
            });
            let event = Event::Publish {
                message: StoredMessage::from_message(msg),
                targets: routed.durable.clone(),
                // The owner node applies the session's bound (`enqueue`) and commits
                // the drop; this cap only bounds a queue whose owner is gone. It holds
                // the in-flight window too, and twice both: acknowledgements still
                // being committed count in the replicated queue.
                cap: 2
                    * (self.config.max_queued_messages + usize::from(self.config.max_inflight))
                        as u64,
                from,
            };
            commits.push(self.cluster.commit(event));
        }
        if commits.is_empty() {
            return (routed, None);
        }
        let all: ClusterFuture<()> = Box::pin(async move {
            for c in commits {
                if c.await? == Outcome::Stale {
                    return Err(ClusterError::Unavailable(
                        "refused: an earlier message of this connection was not committed".into(),
                    ));
                }
            }
            Ok(())
        });
        (routed, Some(all))
    }

    /// Delivers `msg` to the matching sessions owned here, forwards one copy to each
    /// other node owning some, and lists the persistent sessions that must get it
    /// through the durable queues (QoS 1/2 only).
    /// With `exactly_once`, QoS 2 deliveries to clean sessions go through the durable
    /// queues too (see [`Shared::publish`]).
    fn route(&self, msg: &Arc<Message>, exactly_once: bool) -> Routed {
        let mut targets = self.collect_targets(msg);
        // Overlapping subscriptions of one session give one delivery, at the highest
        // QoS, carrying every subscription identifier (MQTT 5.0 §3.3.4).
        targets.sort_by_key(|t| Arc::as_ptr(&t.session) as usize);
        let mut routed = Routed::default();
        let mut remote = Remote::new();
        let mut i = 0;
        while i < targets.len() {
            let mut j = i + 1;
            while j < targets.len() && Arc::ptr_eq(&targets[i].session, &targets[j].session) {
                j += 1;
            }
            self.deliver_merged(msg, &targets[i..j], exactly_once, &mut routed, &mut remote);
            i = j;
        }
        for (node, targets) in remote {
            self.cluster.forward(node, msg.clone(), targets);
        }
        routed
    }

    /// Delivers `msg` at QoS 0 to the matching subscribers connected to this node, and
    /// to no other node: what this node says about itself (`sys`).
    pub(crate) fn deliver_local(&self, msg: &Arc<Message>) {
        let here = |e: &SubEntry| e.session.owner() == self.node && e.session.is_online();
        let mut targets = Vec::new();
        read(&self.subs).for_each_match(&msg.topic, |m| match m {
            Match::Direct { value, .. } if here(value) => targets.push(Target::from_entry(value)),
            Match::Direct { .. } => {}
            Match::Shared { members, .. } => {
                if let Some((_, e)) = members.iter().find(|(_, e)| here(e)) {
                    targets.push(Target::from_entry(e));
                }
            }
        });
        targets.sort_by_key(|t| Arc::as_ptr(&t.session) as usize);
        let mut routed = Routed::default();
        for group in targets.chunk_by(|a, b| Arc::ptr_eq(&a.session, &b.session)) {
            let first = &group[0];
            if !self.may_receive(first, &msg.topic) {
                continue;
            }
            let d = Delivery {
                msg: msg.clone(),
                qos: QoS::AtMostOnce,
                retain: false,
                sub_ids: group.iter().filter_map(|t| t.sub_id).collect(),
                seq: None,
                dup: false,
            };
            self.enqueue(&first.session, d, &mut routed);
        }
    }

    /// Whether a client may publish to `topic`: never to `$SYS` (the node's own), and
    /// elsewhere as the access rules say.
    pub(crate) fn may_publish(&self, client_id: &str, username: Option<&str>, topic: &str) -> bool {
        !topic::is_sys(topic)
            && (self.acl.is_empty() || self.acl.can_publish(client_id, username, topic))
    }

    /// Delivers a message another node forwarded to the listed sessions owned here.
    pub fn deliver_forwarded(&self, msg: &Arc<Message>, targets: Vec<DurableTarget>) {
        let mut routed = Routed::default();
        for t in targets {
            let session = self.session(&t.client_id);
            if let Some(session) = session.filter(|s| s.owner() == self.node) {
                let d = Delivery::replicated(msg, t.qos, t.retain, t.sub_ids, None);
                self.enqueue(&session, d, &mut routed);
            }
        }
    }

    pub fn session(&self, client_id: &str) -> Option<Arc<Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(client_id)
            .cloned()
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

    fn deliver_merged(
        &self,
        msg: &Arc<Message>,
        group: &[Target],
        exactly_once: bool,
        routed: &mut Routed,
        remote: &mut Remote,
    ) {
        let first = &group[0];
        if !self.may_receive(first, &msg.topic) {
            return;
        }
        let qos = group.iter().map(|t| t.qos).max().unwrap_or(QoS::AtMostOnce);
        let delivery = Delivery {
            msg: msg.clone(),
            qos: qos.min(msg.qos),
            retain: msg.retain && group.iter().any(|t| t.retain_as_published),
            sub_ids: group.iter().filter_map(|t| t.sub_id).collect(),
            seq: None,
            dup: false,
        };
        let session = &first.session;
        let owner = session.owner();
        let durable = match delivery.qos {
            QoS::AtMostOnce => false,
            _ if exactly_once => true,
            _ => session.lock().expiry_secs != 0,
        };
        if !durable && owner == self.node {
            self.enqueue(session, delivery, routed);
            return;
        }
        routed.matched += 1;
        let target = DurableTarget {
            client_id: session.client_id.to_string(),
            qos: delivery.qos as u8,
            retain: delivery.retain,
            sub_ids: delivery.sub_ids,
        };
        if durable {
            routed.durable.push(target);
        } else {
            match remote.iter_mut().find(|(n, _)| *n == owner) {
                Some((_, list)) => list.push(target),
                None => remote.push((owner, vec![target])),
            }
        }
    }

    /// Whether the access rules let `target`'s client receive a message on `topic`.
    fn may_receive(&self, target: &Target, topic: &str) -> bool {
        self.acl.is_empty()
            || self
                .acl
                .can_receive(&target.session.client_id, target.username.as_deref(), topic)
    }

    /// Queues one delivery and counts what happened to it.
    pub fn enqueue(&self, session: &Arc<Session>, d: Delivery, routed: &mut Routed) -> Enqueued {
        let qos = d.qos;
        if qos == QoS::AtMostOnce && self.over_memory.load(Ordering::Relaxed) {
            // Over the memory high-water mark QoS 0 goes first: it was never promised.
            Metrics::inc(&self.metrics.dropped_memory);
            return Enqueued::Dropped;
        }
        let overflow = self.config.queue_policy == QueuePolicy::Backpressure;
        let enqueued = session.enqueue(d, self.config.max_queued_messages, overflow);
        match enqueued {
            Enqueued::Queued => routed.matched += 1,
            Enqueued::QueuedOverBound => {
                routed.matched += 1;
                routed.full.push(session.clone());
            }
            Enqueued::Dropped if qos == QoS::AtMostOnce => {
                Metrics::inc(&self.metrics.dropped_qos0);
            }
            Enqueued::Dropped => self.count_queue_full(session, "session queue full"),
        }
        enqueued
    }

    /// Counts a QoS 1/2 message dropped for `session` because its queue was full.
    pub fn count_queue_full(&self, session: &Session, why: &str) {
        let n = self
            .metrics
            .dropped_queue_full
            .fetch_add(1, Ordering::Relaxed);
        // One line per power of two: visible, without flooding the log.
        if (n + 1).is_power_of_two() {
            tracing::warn!(
                client_id = %session.client_id,
                dropped_total = n + 1,
                "{why}: QoS 1/2 message dropped"
            );
        }
    }

    /// Attaches a new connection to `client_id`'s session, which the applied claim of
    /// `epoch` has just made ours (and whose previous connection, if any, it closed).
    /// None if a newer claim, from anywhere, has superseded that one meanwhile.
    pub fn attach(
        &self,
        client_id: &str,
        epoch: u64,
        conn_id: u64,
        protocol: Protocol,
        window: usize,
    ) -> Option<Arc<Session>> {
        let session = self.session(client_id)?;
        {
            let mut st = session.lock();
            if st.epoch != epoch || session.owner() != self.node {
                return None;
            }
            st.attached = Some(Attachment { conn_id });
            st.generation += 1;
            st.protocol = Some(protocol);
            st.window = window;
        }
        session.set_online(true);
        Some(session)
    }

    /// Detaches connection `conn_id` from `session` (if it still holds it) and starts the
    /// session's expiry. Returns the generation the session had, for will timers.
    /// `cluster_will`: the session's will (as the cluster has it) is left to the
    /// leader ([`Event::ReleaseWithWill`]).
    pub fn detach(
        self: &Arc<Self>,
        session: &Arc<Session>,
        conn_id: u64,
        cluster_will: bool,
    ) -> Option<u64> {
        let (generation, epoch, expiry) = {
            let mut st = session.lock();
            if st.attached.as_ref().map(|a| a.conn_id) != Some(conn_id) {
                return None;
            }
            st.attached = None;
            session.set_online(false);
            // QoS 0 is not kept for an absent client.
            st.pending.retain(|d| d.qos != QoS::AtMostOnce);
            (st.generation, st.epoch, st.expiry_secs)
        };
        session.room.notify_waiters();
        match cluster_will {
            false => self.release(session, epoch, expiry),
            true => self.commit_until_done(
                session,
                epoch,
                Event::ReleaseWithWill {
                    client_id: session.client_id.to_string(),
                    epoch,
                    expiry_secs: expiry,
                    at_ms: now_ms(),
                },
            ),
        }
        Some(generation)
    }

    /// Tells the cluster that the connection of `epoch` to `session` (owned here) is
    /// gone, which ends a clean session everywhere and starts a persistent one's
    /// expiry (the leader ends it when that runs out, unless its client came back).
    pub fn release(&self, session: &Arc<Session>, epoch: u64, expiry: u32) {
        let event = Event::Release {
            client_id: session.client_id.to_string(),
            epoch,
            expiry_secs: expiry,
            at_ms: now_ms(),
        };
        self.commit_until_done(session, epoch, event);
    }

    /// Commits the end of `session`'s connection of `epoch`, again and again while the
    /// cluster cannot commit (cut off, no leader), until it is committed or the session
    /// has moved on: a session must not stay "connected" to a connection that is gone,
    /// never to expire nor fire its will. The first proposal is queued now, not
    /// awaited: a reconnect's claim is proposed after it, so applied after.
    pub(crate) fn commit_until_done(&self, session: &Arc<Session>, epoch: u64, event: Event) {
        let first = self.cluster.commit(event.clone());
        let cluster = self.cluster.clone();
        let session = session.clone();
        tokio::spawn(async move {
            let mut attempt = first;
            loop {
                match attempt.await {
                    Ok(_) => return,
                    Err(e) => tracing::info!(
                        client_id = %session.client_id,
                        "end of a connection not committed ({e}): retrying"
                    ),
                }
                tokio::time::sleep(RELEASE_RETRY).await;
                let st = session.lock();
                // Claimed again (here or elsewhere): the newer connection decides.
                if st.epoch != epoch || st.attached.is_some() {
                    return;
                }
                drop(st);
                attempt = cluster.commit(event.clone());
            }
        });
    }

    /// A claim that timed out (its client was refused) may still be committed later,
    /// leaving the session registered as connected here with nobody attached: it would
    /// then never expire, and its will never fire. Once such a claim can no longer be
    /// pending, release it if that is what happened.
    pub fn release_if_claimed_late(self: &Arc<Self>, client_id: &str, epoch_before: Option<u64>) {
        let shared = self.clone();
        let client_id = client_id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(LATE_CLAIM).await;
            let Some(session) = shared.session(&client_id) else {
                return;
            };
            let (epoch, expiry, orphan) = {
                let st = session.lock();
                let orphan = st.attached.is_none()
                    && session.owner() == shared.node
                    && Some(st.epoch) != epoch_before;
                (st.epoch, st.expiry_secs, orphan)
            };
            if orphan {
                tracing::info!(%client_id, epoch, "releasing a claim committed after its client gave up");
                shared.release(&session, epoch, expiry);
            }
        });
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

    /// Puts one subscription of `session` into the session and the trie (replacing one
    /// with the same filter).
    pub fn insert_subscription(
        &self,
        session: &Arc<Session>,
        filter: &str,
        opts: SubOptions,
        username: Option<Arc<str>>,
    ) {
        let mut subs = write(&self.subs);
        session
            .lock()
            .subscriptions
            .insert(filter.to_string(), opts.clone());
        let entry = SubEntry {
            session: session.clone(),
            opts,
            username,
        };
        subs.insert(filter, session.client_id.clone(), entry);
    }

    /// Takes one subscription out of `session` and the trie.
    pub fn remove_subscription(&self, session: &Arc<Session>, filter: &str) {
        let mut subs = write(&self.subs);
        if session.lock().subscriptions.remove(filter).is_some() {
            subs.remove(filter, &session.client_id);
        }
    }

    pub fn unsubscribe_all(&self, session: &Arc<Session>) {
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
        let msg = Message::new(
            will.topic,
            will.payload,
            will.qos,
            will.retain,
            will.properties,
            Some(session.client_id.clone()),
        );
        self.publish_will_message(msg, username);
    }

    /// Publishes a will (its client's access rules permitting), not waiting for what
    /// must be committed.
    pub(crate) fn publish_will_message(&self, msg: Message, username: Option<&str>) {
        let client_id = msg.publisher.as_deref().unwrap_or_default();
        if !self.may_publish(client_id, username, &msg.topic) {
            return;
        }
        tracing::debug!(client_id, topic = %msg.topic, "publishing will");
        let msg = Arc::new(msg);
        if let (_, Some(committed)) = self.publish(&msg, None) {
            tokio::spawn(async move {
                if let Err(e) = committed.await {
                    tracing::warn!(topic = %msg.topic, "will not committed: {e}");
                }
            });
        }
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

impl Shared {
    /// The engine, attached to the cluster's state (which it replays first). `auth` was
    /// loaded from `config` ([`Auth::load`]) and is kept for reloads.
    pub(crate) async fn start(
        config: Config,
        auth: Arc<Auth>,
        cluster: Arc<dyn ClusterApi>,
    ) -> Arc<Shared> {
        let shared = Arc::new(Shared {
            acl: Acl::new(config.acl.clone()),
            pacing: Pacing::new(&config.pacing),
            over_memory: AtomicBool::new(false),
            auth,
            config,
            node: cluster.node_id(),
            cluster: cluster.clone(),
            metrics: Metrics::default(),
            quota: Quotas::default(),
            sessions: Mutex::new(HashMap::new()),
            subs: RwLock::new(SubscriptionTree::new()),
            retained: RwLock::new(RetainedStore::new()),
            sys: RwLock::new(BTreeMap::new()),
            next_conn_id: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            cut_off: RwLock::new(None),
            is_cut_off: AtomicBool::new(false),
            lease_until_ms: AtomicU64::new(u64::MAX),
            started: std::time::Instant::now(),
            orphans: Mutex::new(Vec::new()),
        });
        cluster.attach(shared.clone()).await;
        shared.release_orphans();
        shared
    }
}
