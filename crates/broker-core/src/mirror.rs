//! The engine's view of the replicated state: what each applied [`Event`] means for this
//! node (ARCHITECTURE.md, "Sessions and failover"). Every node holds a `Session` for
//! every session of the cluster, with its subscriptions in the trie, so that one match
//! finds local and remote subscribers alike (and picks one member of a shared group
//! cluster-wide); only the owner node queues and sends a session's messages.

use std::sync::Arc;

use crate::broker::Publisher;
use crate::broker::{Routed, Shared};
use crate::cluster_api::{ClusterFuture, CutOff, Engine, NodeId};
use crate::message::Message;
use crate::packet::QoS;
use crate::replicated::{
    now_ms, pkid_for, Event, Outcome, SessionRecord, State, StoredMessage, Target,
};
use crate::session::{Delivery, Enqueued, Inflight, Session, Stage};

impl Engine for Shared {
    fn renew_lease(&self, until: std::time::Instant) {
        let ms = until.saturating_duration_since(self.started).as_millis() as u64;
        self.lease_until_ms
            .store(ms, std::sync::atomic::Ordering::Release);
    }

    fn set_cut_off(&self, cut_off: Option<CutOff>) {
        let now = cut_off.is_some();
        *self.cut_off.write().unwrap_or_else(|e| e.into_inner()) = cut_off;
        if self
            .is_cut_off
            .swap(now, std::sync::atomic::Ordering::AcqRel)
            != now
            && now
        {
            self.wake_all();
        }
    }

    fn reset(&self, state: &State) {
        let orphans = state
            .sessions
            .iter()
            .filter(|(_, r)| r.owner == self.node && r.connected)
            .map(|(id, r)| (id.clone(), r.epoch, r.expiry_secs))
            .collect();
        *self.orphans.lock().unwrap_or_else(|e| e.into_inner()) = orphans;
        let stale: Vec<Arc<Session>> = {
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            sessions
                .values()
                .filter(|s| !state.sessions.contains_key(&*s.client_id))
                .cloned()
                .collect()
        };
        for s in stale {
            // Ended cluster-wide while we were not following (cut off): its client's
            // will, if any, is not ours to publish any more.
            kick_without_will(&s);
            self.remove_session(&s);
        }
        for (client_id, rec) in &state.sessions {
            let session = self.session(client_id);
            let session = match session {
                Some(s) if s.owner() == self.node => {
                    // Ours, perhaps with a client attached: a snapshot replaced events
                    // we never applied one by one (we were cut off and fell behind), so
                    // our view of the session may be stale (declared dead, messages
                    // queued meanwhile). Close the connection: its client comes back
                    // and claims the session as the cluster has it. Its will is not
                    // ours to publish: the cluster did, or the client is alive.
                    if kick_without_will(&s) && rec.owner == self.node && rec.connected {
                        self.release(&s, rec.epoch, rec.expiry_secs);
                    }
                    s
                }
                Some(s) => s,
                None => {
                    let s = Session::new(client_id.as_str().into(), rec.owner);
                    self.sessions
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(s.client_id.clone(), s.clone());
                    s
                }
            };
            kick(&session);
            self.unsubscribe_all(&session);
            self.take_ownership(&session, rec, true);
            self.subscribe(&session, rec, rec.subscriptions.keys());
        }
        let mut retained = self.retained.write().unwrap_or_else(|e| e.into_inner());
        *retained = Default::default();
        for (topic, m) in &state.retained {
            retained.insert(topic, Arc::new(m.to_message()));
        }
        drop(retained);
        self.quota.reset(state);
    }

    fn applied(&self, event: &Event, outcome: &Outcome, state: &State) {
        self.quota.applied(event, state);
        match (event, outcome) {
            (Event::Claim { client_id, .. }, Outcome::Claimed { present, .. }) => {
                let Some(rec) = state.sessions.get(client_id) else {
                    return;
                };
                let existing = self.session(client_id);
                if let Some(old) = &existing {
                    kick(old);
                }
                let session = match existing {
                    Some(s) if *present => s,
                    old => {
                        if let Some(old) = old {
                            self.unsubscribe_all(&old);
                        }
                        let s = Session::new(client_id.as_str().into(), rec.owner);
                        self.sessions
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(s.client_id.clone(), s.clone());
                        s
                    }
                };
                // The node that serves the session now rebuilds its queue from the
                // record, also when it served it before: the record holds everything
                // committed before this claim, and this node's own view may not. After
                // a restart, the view was rebuilt from the state as far as this node
                // had recorded the commit index, and the rest of the crashed run's log
                // (its clients' PUBREC and PUBCOMP, its publishers' PUBREL) was applied
                // after it, and `Received`, `Ack` and `PubRel` change the record only:
                // the view would send a message its client has as a new PUBLISH again.
                let rebuild = session.owner() != rec.owner || rec.owner == self.node;
                self.take_ownership(&session, rec, rebuild);
            }
            (
                Event::Subscribe {
                    client_id, filters, ..
                },
                Outcome::Done,
            ) => {
                if let (Some(s), Some(rec)) =
                    (self.session(client_id), state.sessions.get(client_id))
                {
                    self.subscribe(&s, rec, filters.iter().map(|(f, _)| f));
                }
            }
            (
                Event::Unsubscribe {
                    client_id, filters, ..
                },
                Outcome::Done,
            ) => {
                if let Some(s) = self.session(client_id) {
                    for f in filters {
                        self.remove_subscription(&s, f);
                    }
                }
            }
            (
                Event::Release { client_id, .. } | Event::ReleaseWithWill { client_id, .. },
                Outcome::Done,
            ) => {
                let Some(s) = self.session(client_id) else {
                    return;
                };
                match state.sessions.get(client_id) {
                    None => self.remove_session(&s),
                    Some(rec) => {
                        s.lock().expiry_secs = rec.expiry_secs;
                        if s.owner() != self.node {
                            s.set_online(false);
                        }
                    }
                }
            }
            (Event::NodeDown { node, .. }, Outcome::Done) => self.node_down(*node, state),
            (Event::Expire { client_id, .. }, Outcome::Done) => {
                if let Some(s) = self.session(client_id) {
                    self.remove_session(&s);
                }
            }
            (Event::Retain { topic, message }, _) => {
                let new = message.as_ref().map(|m| Arc::new(m.to_message()));
                let mut retained = self.retained.write().unwrap_or_else(|e| e.into_inner());
                let old = match &new {
                    Some(m) => retained.insert(topic, m.clone()),
                    None => retained.remove(topic),
                };
                drop(retained);
                self.quota.retained_applied(old.as_deref(), new.as_deref());
            }
            (
                Event::Publish {
                    message, targets, ..
                },
                Outcome::Queued(seqs),
            ) => {
                let mut msg: Option<Arc<Message>> = None;
                for (t, seq) in targets.iter().zip(seqs) {
                    let Some(s) = self.session(&t.client_id) else {
                        continue;
                    };
                    if s.owner() != self.node {
                        continue;
                    }
                    let Some(seq) = seq else {
                        self.count_queue_full(&s, "durable queue full");
                        continue;
                    };
                    let msg = msg.get_or_insert_with(|| Arc::new(message.to_message()));
                    let mut routed = Routed::default();
                    let d =
                        Delivery::replicated(msg, t.qos, t.retain, t.sub_ids.clone(), Some(*seq));
                    if self.enqueue(&s, d, &mut routed) == Enqueued::Dropped {
                        // Over the session's bound: gone here, so gone everywhere.
                        drop(self.cluster.commit(Event::Ack {
                            client_id: t.client_id.clone(),
                            seqs: vec![*seq],
                        }));
                    }
                }
            }
            _ => {}
        }
    }

    fn claimed_by_earlier_run(&self, client_id: &str, state: &State) {
        let Some(rec) = state.sessions.get(client_id) else {
            return;
        };
        if rec.owner != self.node || !rec.connected {
            return;
        }
        let Some(session) = self.session(client_id) else {
            return;
        };
        tracing::warn!(
            client_id,
            epoch = rec.epoch,
            "a claim of ours from before the restart, applied only now: its session goes offline"
        );
        self.release_orphan(&session, rec.epoch, rec.expiry_secs);
    }

    fn forwarded(&self, message: StoredMessage, targets: Vec<Target>) {
        self.deliver_forwarded(&Arc::new(message.to_message()), targets);
    }

    /// Its expiry interval counts from now, when it is published.
    fn publish_will(
        &self,
        client_id: &str,
        epoch: u64,
        will: StoredMessage,
        username: Option<String>,
    ) -> ClusterFuture<()> {
        let msg = Arc::new(Message::new(
            will.topic,
            will.payload,
            QoS::from_u8(will.qos).unwrap_or(QoS::AtMostOnce),
            will.retain,
            will.properties,
            will.publisher.as_deref().map(Into::into),
        ));
        let allowed = self.may_publish(client_id, username.as_deref(), &msg.topic);
        if !allowed {
            // Not to be published: taken all the same, so that it is not tried again.
            let taken = self.cluster.commit(Event::FireWill {
                client_id: client_id.to_string(),
                epoch,
            });
            return Box::pin(async move { taken.await.map(|_| ()) });
        }
        tracing::info!(client_id, topic = %msg.topic, "publishing the will of an offline session");
        let mut proposed = 0;
        let publisher = Publisher {
            client_id,
            epoch,
            proposed: &mut proposed,
            qos2_pkid: None,
            will: true,
            retained: None,
        };
        match self.publish(&msg, Some(publisher)) {
            (_, Some(committed)) => committed,
            (_, None) => Box::pin(async { Ok(()) }),
        }
    }
}

impl Shared {
    /// Makes `rec`'s owner the owner of `session`; on the node that owns it, with
    /// `rebuild`, the session gets its durable queue and its inbound QoS 2 packet ids
    /// from the replicated state, whatever it held.
    fn take_ownership(&self, session: &Arc<Session>, rec: &SessionRecord, rebuild: bool) {
        session.set_owner(rec.owner);
        let mine = rec.owner == self.node;
        let mut st = session.lock();
        st.epoch = rec.epoch;
        st.expiry_secs = rec.expiry_secs;
        if !mine {
            st.pending.clear();
            st.inflight.clear();
            st.incoming_qos2.clear();
        } else if rebuild {
            // What was sent before (by this node or another) goes out again, as a
            // duplicate and under the same packet id; a QoS 2 message the client has
            // received only needs its PUBREL again.
            st.inflight.clear();
            st.pending.clear();
            for (seq, q) in &rec.queue {
                let msg = Arc::new(q.message.to_message());
                let mut d =
                    Delivery::replicated(&msg, q.qos, q.retain, q.sub_ids.clone(), Some(*seq));
                d.dup = true;
                if q.received {
                    st.inflight.push_back(Inflight {
                        pkid: pkid_for(*seq),
                        delivery: d,
                        stage: Stage::Released,
                    });
                } else {
                    st.pending.push_back(d);
                }
            }
            st.incoming_qos2 = rec.inbound_qos2.iter().copied().collect();
        }
        drop(st);
        if !mine {
            session.set_online(rec.connected);
        }
    }

    /// Puts `filters` of `rec` into `session` and the trie.
    fn subscribe<'a>(
        &self,
        session: &Arc<Session>,
        rec: &SessionRecord,
        filters: impl Iterator<Item = &'a String>,
    ) {
        let username: Option<Arc<str>> = rec.username.as_deref().map(Into::into);
        for f in filters {
            if let Some(stored) = rec.subscriptions.get(f) {
                self.insert_subscription(session, f, stored.to_opts(), username.clone());
            }
        }
    }

    /// `node` was declared dead: its sessions are offline. If that is us (we were cut
    /// off, and are back), the cluster has published our clients' wills and counts
    /// their sessions as disconnected: close those connections (their clients
    /// reconnect and claim again), without publishing their wills a second time.
    fn node_down(&self, node: NodeId, state: &State) {
        tracing::warn!(
            node,
            "cluster declared node {node} dead: its clients' sessions are offline"
        );
        let sessions: Vec<Arc<Session>> = {
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            sessions
                .values()
                .filter(|s| s.owner() == node)
                .cloned()
                .collect()
        };
        for s in sessions {
            let connected = matches!(state.sessions.get(&*s.client_id), Some(r) if r.connected);
            if connected {
                continue;
            }
            if node == self.node {
                kick_without_will(&s);
            } else {
                s.set_online(false);
            }
        }
    }

    /// After start-up: if the replicated state still counts clients as connected
    /// here, this node stopped without saying goodbye (a crash, a kill). It ends those
    /// connections as it would have, had they closed without DISCONNECT: each session
    /// goes offline, its will is published after its delay (by the leader), a clean one
    /// ends and a persistent one starts its expiry.
    ///
    /// One epoch-guarded release per session, committed again and again until it is
    /// (as any end of a connection): the first try can fail, e.g. when this node led
    /// before the crash, takes itself for the leader of its old term for a moment, and
    /// proposes there what can never commit. The leader does not publish those wills:
    /// the node answered again before it was declared dead. A retry lands after claims
    /// of this run's clients, so it must not touch their sessions: the epoch sees to
    /// that (a whole-node `NodeDown` would take them offline), and if the leader did
    /// declare this node dead meanwhile, the release is stale and the will is
    /// published once.
    pub(crate) fn release_orphans(&self) {
        let orphans = std::mem::take(&mut *self.orphans.lock().unwrap_or_else(|e| e.into_inner()));
        if orphans.is_empty() {
            return;
        }
        tracing::warn!(
            sessions = orphans.len(),
            "restarted after a crash: the sessions of our former clients go offline"
        );
        for (client_id, epoch, expiry_secs) in orphans {
            if let Some(session) = self.session(&client_id) {
                self.release_orphan(&session, epoch, expiry_secs);
            }
        }
    }

    /// Ends the connection of `epoch` to `session` that a crashed run of this node
    /// held, will included, until that is committed or the session has moved on.
    fn release_orphan(&self, session: &Arc<Session>, epoch: u64, expiry_secs: u32) {
        let event = Event::ReleaseWithWill {
            client_id: session.client_id.to_string(),
            epoch,
            expiry_secs,
            at_ms: now_ms(),
        };
        self.commit_until_done(session, epoch, event);
    }
}

/// Closes the connection attached to `session` here, if any, as [`kick`] does, and
/// marks it as one whose will the cluster has taken care of. Whether there was one.
fn kick_without_will(session: &Session) -> bool {
    let mut st = session.lock();
    st.will_taken = st.attached.as_ref().map(|a| a.conn_id);
    drop(st);
    kick(session)
}

/// Closes the connection attached to `session` here, if any: it wakes, finds itself
/// detached and leaves (v5: reason 0x8E, session taken over). Whether there was one.
fn kick(session: &Session) -> bool {
    if session.lock().attached.take().is_some() {
        session.set_online(false);
        session.wake.notify_waiters();
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::*;
    use crate::auth::Auth;
    use crate::cluster_api::ClusterApi;
    use crate::config::Config;
    use crate::packet::MessageProperties;
    use crate::replicated::{Origin, StoredSub};

    const ME: NodeId = 1;

    /// A cluster of one that applies nothing by itself: the test applies each event,
    /// in log order, as the state machine would ([`Replay::apply`]). What the engine
    /// proposes is recorded and answered at once.
    #[derive(Default)]
    struct Fake {
        proposed: Mutex<Vec<Event>>,
        state: Mutex<State>,
    }

    impl ClusterApi for Fake {
        fn node_id(&self) -> NodeId {
            ME
        }
        fn commit(&self, event: Event) -> ClusterFuture<Outcome> {
            self.proposed.lock().unwrap().push(event);
            Box::pin(async { Ok(Outcome::Done) })
        }
        fn can_commit(&self) -> bool {
            true
        }
        fn forward(&self, _: NodeId, _: Arc<Message>, _: Vec<Target>) {}
        fn attach(
            &self,
            engine: Arc<dyn Engine>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
            engine.reset(&self.state.lock().unwrap());
            Box::pin(async {})
        }
    }

    struct Replay {
        fake: Arc<Fake>,
        shared: Arc<Shared>,
    }

    impl Replay {
        /// Applies `event` to the replicated state and hands it to the engine.
        fn apply(&self, event: Event) -> Outcome {
            let mut state = self.fake.state.lock().unwrap();
            let outcome = state.apply(&event);
            self.shared.applied(&event, &outcome, &state);
            outcome
        }
    }

    fn claim(id: &str) -> Event {
        Event::Claim {
            node: ME,
            client_id: id.into(),
            clean_start: false,
            expiry_secs: 3600,
            username: None,
            will: None,
        }
    }

    /// The state a node restarts with (its snapshot plus the log up to the commit
    /// index it had recorded): subscriber `s`, connected here, has been sent one QoS
    /// 2 message (queue seq 1, packet id 1) from the persistent publisher `p`.
    async fn restarted() -> Replay {
        let mut state = State::default();
        state.apply(&claim("s"));
        state.apply(&Event::Subscribe {
            client_id: "s".into(),
            epoch: 1,
            filters: vec![(
                "t".into(),
                StoredSub {
                    qos: 2,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                    sub_id: None,
                },
            )],
        });
        state.apply(&claim("p"));
        let queued = state.apply(&Event::Publish {
            message: StoredMessage {
                topic: "t".into(),
                payload: Bytes::from_static(b"p:10"),
                qos: 2,
                retain: false,
                properties: MessageProperties::default(),
                expires_at_ms: None,
                publisher: Some("p".into()),
            },
            targets: vec![Target {
                client_id: "s".into(),
                qos: 2,
                retain: false,
                sub_ids: vec![],
            }],
            cap: 100,
            from: Some(Origin {
                client_id: "p".into(),
                epoch: 2,
                seq: 1,
                qos2_pkid: Some(10),
            }),
        });
        assert_eq!(queued, Outcome::Queued(vec![Some(1)]));
        let fake = Arc::new(Fake {
            proposed: Mutex::default(),
            state: Mutex::new(state),
        });
        let config = Config::default();
        let auth = Arc::new(Auth::load(&config).unwrap());
        let shared = Shared::start(config, auth, fake.clone()).await;
        Replay { fake, shared }
    }

    /// The crashed run's connections go offline: the releases the engine proposed at
    /// start-up are applied.
    fn release_orphans(r: &Replay) {
        let proposed = std::mem::take(&mut *r.fake.proposed.lock().unwrap());
        assert_eq!(proposed.len(), 2, "{proposed:?}");
        for e in proposed {
            assert_eq!(r.apply(e), Outcome::Done);
        }
    }

    /// What the session of `id` would send a connection attached now: (packet id,
    /// PUBREL only) in flight, then the pending deliveries' sequence numbers.
    fn outbound(r: &Replay, id: &str) -> (Vec<(u16, bool)>, Vec<Option<u64>>) {
        let s = r.shared.session(id).expect("session");
        let st = s.lock();
        let inflight = st
            .inflight
            .iter()
            .map(|f| (f.pkid, f.stage == Stage::Released))
            .collect();
        let pending = st.pending.iter().map(|d| d.seq).collect();
        (inflight, pending)
    }

    /// Regression (t75 every_node_loses_power_subscribers_online: "p2-q2:10 (Acked,
    /// 2x)"). The crashed run had committed the subscriber's PUBREC and PUBCOMP of the
    /// message (it got PUBREL, and forgot the packet id), but the commit index this node
    /// had recorded did not cover them: they are applied only after the engine was
    /// rebuilt from the state. When the subscriber comes back to this node, its
    /// session must not send the message again as a PUBLISH: the client would take
    /// it for a new message.
    #[tokio::test]
    async fn a_reclaim_here_sees_acks_applied_after_the_restart() {
        let r = restarted().await;
        assert_eq!(outbound(&r, "s"), (vec![], vec![Some(1)]));
        // The tail of the crashed run's log, committed by the new leader.
        r.apply(Event::Received {
            client_id: "s".into(),
            seq: 1,
        });
        r.apply(Event::Ack {
            client_id: "s".into(),
            seqs: vec![1],
        });
        release_orphans(&r);
        assert!(r.fake.state.lock().unwrap().sessions["s"].queue.is_empty());
        // The subscriber reconnects here.
        assert!(matches!(
            r.apply(claim("s")),
            Outcome::Claimed { present: true, .. }
        ));
        assert_eq!(
            outbound(&r, "s"),
            (vec![], vec![]),
            "acked: nothing to send"
        );
    }

    /// As above with only the PUBREC committed: PUBREL again, never the PUBLISH.
    #[tokio::test]
    async fn a_reclaim_here_sees_a_pubrec_applied_after_the_restart() {
        let r = restarted().await;
        r.apply(Event::Received {
            client_id: "s".into(),
            seq: 1,
        });
        release_orphans(&r);
        r.apply(claim("s"));
        assert_eq!(outbound(&r, "s"), (vec![(1, true)], vec![]), "PUBREL only");
    }

    /// A publisher's PUBREL committed by the crashed run, applied after the restart:
    /// back here, the publisher's packet id is free (else its PUBREL would be answered
    /// "not found" and the cluster would hold the id for ever), and a QoS 2 message of
    /// the crashed run applied after the restart holds its id here too.
    #[tokio::test]
    async fn a_reclaim_here_sees_inbound_qos2_applied_after_the_restart() {
        let r = restarted().await;
        let held = |r: &Replay| {
            let s = r.shared.session("p").expect("session");
            let mut ids: Vec<u16> = s.lock().incoming_qos2.iter().copied().collect();
            ids.sort();
            ids
        };
        assert_eq!(held(&r), [10]);
        r.apply(Event::PubRel {
            client_id: "p".into(),
            pkid: 10,
        });
        release_orphans(&r);
        r.apply(claim("p"));
        assert_eq!(held(&r), Vec::<u16>::new());
    }
}
