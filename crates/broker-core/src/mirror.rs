//! The engine's view of the replicated state: what each applied [`Event`] means for this
//! node (ARCHITECTURE.md, "Sessions and failover"). Every node holds a `Session` for
//! every session of the cluster, with its subscriptions in the trie, so that one match
//! finds local and remote subscribers alike (and picks one member of a shared group
//! cluster-wide); only the owner node queues and sends a session's messages.

use std::sync::Arc;

use crate::broker::{Message, Routed, Shared};
use crate::cluster_api::Engine;
use crate::replicated::{Event, Outcome, SessionRecord, State, StoredMessage, Target};
use crate::session::{Delivery, Enqueued, Session};

impl Engine for Shared {
    fn reset(&self, state: &State) {
        let stale: Vec<Arc<Session>> = {
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            sessions
                .values()
                .filter(|s| !state.sessions.contains_key(&*s.client_id))
                .cloned()
                .collect()
        };
        for s in stale {
            kick(&s);
            self.remove_session(&s);
        }
        for (client_id, rec) in &state.sessions {
            let session = self.session(client_id);
            let session = match session {
                Some(s) if s.owner() == self.node && rec.owner == self.node => {
                    // Ours and live: our own view is the newer one.
                    continue;
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
    }

    fn applied(&self, event: &Event, outcome: &Outcome, state: &State) {
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
                let moved = session.owner() != rec.owner;
                self.take_ownership(&session, rec, moved);
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
            (Event::Release { client_id, .. }, Outcome::Done) => {
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
            (Event::Expire { client_id, .. }, Outcome::Done) => {
                if let Some(s) = self.session(client_id) {
                    self.remove_session(&s);
                }
            }
            (Event::Retain { topic, message }, _) => {
                let mut retained = self.retained.write().unwrap_or_else(|e| e.into_inner());
                match message {
                    Some(m) => retained.insert(topic, Arc::new(m.to_message())),
                    None => retained.remove(topic),
                };
            }
            (
                Event::Publish {
                    message, targets, ..
                },
                Outcome::Queued(seqs),
            ) => {
                let mut msg: Option<Arc<Message>> = None;
                for (t, seq) in targets.iter().zip(seqs) {
                    let (Some(seq), Some(s)) = (seq, self.session(&t.client_id)) else {
                        continue;
                    };
                    if s.owner() != self.node {
                        continue;
                    }
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

    fn forwarded(&self, message: StoredMessage, targets: Vec<Target>) {
        self.deliver_forwarded(&Arc::new(message.to_message()), targets);
    }
}

impl Shared {
    /// Makes `rec`'s owner the owner of `session`; on the node that now owns it, a
    /// session that `moved` here gets its durable queue from the replicated state.
    fn take_ownership(&self, session: &Arc<Session>, rec: &SessionRecord, moved: bool) {
        session.set_owner(rec.owner);
        let mine = rec.owner == self.node;
        let mut st = session.lock();
        st.epoch = rec.epoch;
        st.expiry_secs = rec.expiry_secs;
        if !mine {
            st.pending.clear();
            st.inflight.clear();
            st.incoming_qos2.clear();
        } else if moved {
            st.inflight.clear();
            st.pending = rec
                .queue
                .iter()
                .map(|(seq, q)| {
                    let msg = Arc::new(q.message.to_message());
                    Delivery::replicated(&msg, q.qos, q.retain, q.sub_ids.clone(), Some(*seq))
                })
                .collect();
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

    /// After start-up: the sessions this node owned before it stopped have no
    /// connection any more. Their connections are released (which ends clean sessions
    /// cluster-wide) and persistent ones start their expiry.
    pub(crate) fn release_orphans(self: &Arc<Self>) {
        let mine: Vec<Arc<Session>> = {
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            sessions
                .values()
                .filter(|s| s.owner() == self.node && !s.is_online())
                .cloned()
                .collect()
        };
        for s in mine {
            let (generation, epoch, expiry) = {
                let st = s.lock();
                (st.generation, st.epoch, st.expiry_secs)
            };
            self.release(&s, generation, epoch, expiry);
        }
    }
}

/// Closes the connection attached to `session` here, if any: it wakes, finds itself
/// detached and leaves (v5: reason 0x8E, session taken over).
fn kick(session: &Session) {
    if session.lock().attached.take().is_some() {
        session.set_online(false);
        session.wake.notify_waiters();
    }
}
