//! The state every node holds identically (ARCHITECTURE.md, "What goes through Raft"):
//! the session registry with each session's subscriptions and durable queue, and the
//! retained messages. [`State::apply`] is deterministic: the cluster layer applies the
//! same [`Event`]s in the same order on every node, and the engine mirrors what applied
//! events mean for its own clients (`broker::Shared::applied`).
//!
//! Everything here is plain data persisted in the Raft log and in snapshots (bincode 2
//! through serde): never reorder or remove variants or fields, only append.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::message::Message;
use crate::packet::{MessageProperties, QoS, RetainHandling, SubOptions, Will};

/// A node of the cluster.
pub type NodeId = u64;

/// A message as replicated and forwarded: no `Instant`s (they mean nothing on another
/// machine), the expiry as wall-clock milliseconds instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    pub properties: MessageProperties,
    /// Unix milliseconds at which the v5 message expiry runs out.
    pub expires_at_ms: Option<u64>,
    pub publisher: Option<String>,
}

/// Wall-clock milliseconds since the Unix epoch: the clock replicated deadlines (session
/// expiry, will delay) are written in, since an `Instant` means nothing on another node.
/// The `Origin::seq` of a will's `Publish`: the will of the offline session
/// `(client_id, epoch)`, taken by the same apply that queues it, so that it is
/// published once even if the leader that publishes it dies right after the commit.
pub const WILL_SEQ: u64 = u64::MAX;

pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl StoredMessage {
    pub fn from_message(m: &Message) -> StoredMessage {
        let now = Instant::now();
        StoredMessage {
            topic: m.topic.clone(),
            payload: m.payload.clone(),
            qos: m.qos as u8,
            retain: m.retain,
            properties: m.properties.clone(),
            expires_at_ms: m
                .expires_at
                .map(|t| unix_ms(SystemTime::now() + t.saturating_duration_since(now))),
            publisher: m.publisher.as_deref().map(str::to_string),
        }
    }

    pub fn to_message(&self) -> Message {
        let mut m = Message::new(
            self.topic.clone(),
            self.payload.clone(),
            QoS::from_u8(self.qos).unwrap_or(QoS::AtMostOnce),
            self.retain,
            self.properties.clone(),
            self.publisher.as_deref().map(Into::into),
        );
        m.expires_at = self.expires_at_ms.map(|ms| {
            let left = ms.saturating_sub(unix_ms(SystemTime::now()));
            Instant::now() + Duration::from_millis(left)
        });
        m
    }
}

/// Subscription options as replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSub {
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
    pub sub_id: Option<u32>,
}

impl StoredSub {
    pub(crate) fn from_opts(o: &SubOptions) -> StoredSub {
        StoredSub {
            qos: o.qos as u8,
            no_local: o.no_local,
            retain_as_published: o.retain_as_published,
            retain_handling: o.retain_handling as u8,
            sub_id: o.sub_id,
        }
    }

    pub(crate) fn to_opts(&self) -> SubOptions {
        SubOptions {
            qos: QoS::from_u8(self.qos).unwrap_or(QoS::AtMostOnce),
            no_local: self.no_local,
            retain_as_published: self.retain_as_published,
            retain_handling: match self.retain_handling {
                1 => RetainHandling::OnNewSubscribe,
                2 => RetainHandling::Never,
                _ => RetainHandling::OnSubscribe,
            },
            sub_id: self.sub_id,
        }
    }
}

/// How one message goes to one session (the merge of its matching subscriptions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub client_id: String,
    pub qos: u8,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
}

/// A QoS 1/2 message waiting in a persistent session's durable queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    pub message: StoredMessage,
    pub qos: u8,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    /// QoS 2: the client sent PUBREC, so it has the message; only PUBREL / PUBCOMP
    /// remain, and the message itself must never be sent again (exactly once).
    pub received: bool,
}

/// The packet id a durable delivery is sent with: derived from its sequence number, so
/// that the node that takes a session over resends it under the same id and a QoS 2
/// receiver recognises the duplicate.
pub fn pkid_for(seq: u64) -> u16 {
    ((seq.saturating_sub(1)) % u64::from(u16::MAX)) as u16 + 1
}

/// The client connection that sent a durable message: its messages are committed in
/// the order it sent them, without gaps, and a QoS 2 packet id is held until PUBREL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub client_id: String,
    pub epoch: u64,
    /// 1, 2, … per connection, over the messages it proposed.
    pub seq: u64,
    /// The packet id of a QoS 2 message from a persistent session.
    pub qos2_pkid: Option<u16>,
}

/// A connection's will, replicated so that the cluster can publish it if the node
/// serving the connection dies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredWill {
    pub message: StoredMessage,
    pub delay_secs: u32,
}

impl StoredWill {
    /// `client_id`'s will from its CONNECT. No expiry instant yet: its interval
    /// counts from when it is published.
    pub fn new(will: &Will, client_id: &str) -> StoredWill {
        StoredWill {
            message: StoredMessage {
                topic: will.topic.clone(),
                payload: will.payload.clone(),
                qos: will.qos as u8,
                retain: will.retain,
                properties: will.properties.clone(),
                expires_at_ms: None,
                publisher: Some(client_id.to_string()),
            },
            delay_secs: will.delay_interval,
        }
    }
}

/// One session as every node knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub owner: NodeId,
    /// Strictly increasing per claim, cluster-wide: events of an older connection are
    /// ignored.
    pub epoch: u64,
    pub connected: bool,
    /// Seconds the session outlives its connection (`u32::MAX`: never; 0: not at all).
    pub expiry_secs: u32,
    pub username: Option<String>,
    pub subscriptions: BTreeMap<String, StoredSub>,
    /// Unacknowledged QoS 1/2 messages of a persistent session, by sequence number.
    pub queue: BTreeMap<u64, Queued>,
    pub next_seq: u64,
    /// The will of the connected client; kept by the cluster only while the node
    /// serving it lives (that node publishes it when the connection ends).
    pub will: Option<StoredWill>,
    /// Set when the owner node was declared dead: the will is published then.
    pub will_due_ms: Option<u64>,
    /// When the connection ended (0 while connected): the expiry counts from here.
    pub released_at_ms: u64,
    /// Inbound QoS 2 packet ids whose message is committed and whose PUBREL has not
    /// come yet: a resent PUBLISH with one of them is a duplicate, on any node.
    pub inbound_qos2: BTreeSet<u16>,
    /// The last `Origin::seq` committed from the connection of `epoch`.
    pub published: u64,
}

impl SessionRecord {
    pub fn is_persistent(&self) -> bool {
        self.expiry_secs != 0
    }

    /// Whether the session, offline for `offline_ms`, has outlived its expiry, its
    /// will (if any is pending) published first.
    pub fn is_expired(&self, offline_ms: u64) -> bool {
        !self.connected
            && self.will_due_ms.is_none()
            && self.expiry_secs != u32::MAX
            && u64::from(self.expiry_secs) * 1000 <= offline_ms
    }

    /// The will delay of a pending will: both ends were set by one node at one moment,
    /// so no clock skew or jump is in it.
    pub fn will_delay_ms(&self) -> Option<u64> {
        self.will_due_ms
            .map(|due| due.saturating_sub(self.released_at_ms))
    }
}

/// The sessions whose offline state (connected, epoch, release, will, expiry) an event
/// may change, which is what [`State::due`] depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affects<'a> {
    Nothing,
    One(&'a str),
    Every,
}

impl Event {
    /// Which sessions' offline state applying this event may change.
    pub fn affects(&self) -> Affects<'_> {
        match self {
            Event::Claim { client_id, .. }
            | Event::Release { client_id, .. }
            | Event::ReleaseWithWill { client_id, .. }
            | Event::Expire { client_id, .. }
            | Event::FireWill { client_id, .. } => Affects::One(client_id),
            // A will's publish clears the will.
            Event::Publish { from: Some(o), .. } if o.seq == WILL_SEQ => Affects::One(&o.client_id),
            Event::NodeDown { .. } => Affects::Every,
            _ => Affects::Nothing,
        }
    }
}

/// The replicated vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A client connected at `node`: that node owns the session from now on.
    Claim {
        node: NodeId,
        client_id: String,
        clean_start: bool,
        expiry_secs: u32,
        username: Option<String>,
        will: Option<StoredWill>,
    },
    Subscribe {
        client_id: String,
        epoch: u64,
        filters: Vec<(String, StoredSub)>,
    },
    Unsubscribe {
        client_id: String,
        epoch: u64,
        filters: Vec<String>,
    },
    /// The connection of `epoch` ended (at `at_ms`); an expiry of 0 ends the session
    /// too. Its node has dealt with the will.
    Release {
        client_id: String,
        epoch: u64,
        expiry_secs: u32,
        at_ms: u64,
    },
    /// The session of `epoch`, offline, reached its expiry.
    Expire { client_id: String, epoch: u64 },
    /// A retained message set (or cleared, with `None`).
    Retain {
        topic: String,
        message: Option<StoredMessage>,
    },
    /// A QoS 1/2 message for persistent sessions: queued durably for each target, at
    /// most `cap` messages per session (beyond it the message is dropped for that one).
    Publish {
        message: StoredMessage,
        targets: Vec<Target>,
        cap: u64,
        /// The client connection that sent it (none for a will).
        from: Option<Origin>,
    },
    /// A session's client acknowledged these queued messages (PUBACK, PUBCOMP).
    Ack { client_id: String, seqs: Vec<u64> },
    /// A session's client sent PUBREC for this queued QoS 2 message.
    Received { client_id: String, seq: u64 },
    /// A publisher's PUBREL: its inbound QoS 2 packet id is free again.
    PubRel { client_id: String, pkid: u16 },
    /// The leader declared `node` dead (unreachable for a while) at `at_ms`: its
    /// connections are gone; their wills are due after each will delay.
    NodeDown { node: NodeId, at_ms: u64 },
    /// A node declared dead answers again.
    NodeUp { node: NodeId },
    /// Takes the due will of the session of `epoch` without publishing it (its
    /// client's access rules forbid it). A will that is published is taken by its own
    /// `Publish` ([`WILL_SEQ`]); [`State::due`] lists due wills as `FireWill` for the
    /// leader to publish.
    FireWill { client_id: String, epoch: u64 },
    /// The connection of `epoch` ended and its will (the one in the record) is the
    /// cluster's to publish: the session goes offline as with `Release`, and the
    /// leader publishes the will after its delay, once, as for a dead node's client,
    /// whichever node is alive then. Used for a delayed will (so that it is not lost
    /// if its node dies during the delay) and for a connection closed while its node
    /// was cut off. Stale if the session is offline already (its node was declared
    /// dead, and the will is pending or published).
    ReleaseWithWill {
        client_id: String,
        epoch: u64,
        expiry_secs: u32,
        at_ms: u64,
    },
}

/// What applying an event did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    #[default]
    Done,
    /// The event named an older connection (or an unknown session): nothing changed.
    Stale,
    Claimed {
        epoch: u64,
        /// A persistent session was resumed (MQTT "session present").
        present: bool,
    },
    /// Sequence numbers given to the targets of a `Publish`, in target order (`None`:
    /// dropped, the session's queue was full or the session is gone).
    Queued(Vec<Option<u64>>),
    /// A QoS 2 message whose packet id was held already: committed before, not queued.
    Duplicate,
    /// The will `FireWill` took (not published), and the client's username.
    Will {
        message: Box<StoredMessage>,
        username: Option<String>,
    },
}

/// The replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Persistent (structurally shared) so that a clone costs nothing: a snapshot is
    /// taken of a clone, and applies go on meanwhile. Encoded as a map, like a BTreeMap.
    pub sessions: imbl::OrdMap<String, SessionRecord>,
    pub retained: imbl::OrdMap<String, StoredMessage>,
    pub last_epoch: u64,
    /// Nodes declared dead and not back yet.
    pub down: BTreeSet<NodeId>,
}

impl State {
    /// Applies one event. Deterministic: depends only on the state and the event.
    pub fn apply(&mut self, event: &Event) -> Outcome {
        match event {
            Event::Claim {
                node,
                client_id,
                clean_start,
                expiry_secs,
                username,
                will,
            } => {
                self.last_epoch += 1;
                let epoch = self.last_epoch;
                let rec = self.sessions.entry(client_id.clone()).or_default();
                let present = !clean_start && rec.epoch != 0 && rec.is_persistent();
                if !present {
                    *rec = SessionRecord::default();
                }
                rec.owner = *node;
                rec.epoch = epoch;
                rec.connected = true;
                rec.expiry_secs = *expiry_secs;
                rec.username.clone_from(username);
                rec.will.clone_from(will);
                rec.will_due_ms = None;
                rec.released_at_ms = 0;
                rec.published = 0;
                Outcome::Claimed { epoch, present }
            }
            Event::Subscribe {
                client_id,
                epoch,
                filters,
                ..
            } => match self.current(client_id, *epoch) {
                Some(rec) => {
                    for (f, o) in filters {
                        rec.subscriptions.insert(f.clone(), o.clone());
                    }
                    Outcome::Done
                }
                None => Outcome::Stale,
            },
            Event::Unsubscribe {
                client_id,
                epoch,
                filters,
                ..
            } => match self.current(client_id, *epoch) {
                Some(rec) => {
                    for f in filters {
                        rec.subscriptions.remove(f);
                    }
                    Outcome::Done
                }
                None => Outcome::Stale,
            },
            Event::Release {
                client_id,
                epoch,
                expiry_secs,
                at_ms,
            } => match self.current(client_id, *epoch) {
                Some(_) if *expiry_secs == 0 => {
                    self.sessions.remove(client_id);
                    Outcome::Done
                }
                Some(rec) => {
                    rec.connected = false;
                    rec.expiry_secs = *expiry_secs;
                    rec.released_at_ms = *at_ms;
                    rec.will = None;
                    rec.will_due_ms = None;
                    Outcome::Done
                }
                None => Outcome::Stale,
            },
            Event::Expire {
                client_id, epoch, ..
            } => match self.current(client_id, *epoch) {
                Some(rec) if !rec.connected => {
                    self.sessions.remove(client_id);
                    Outcome::Done
                }
                _ => Outcome::Stale,
            },
            Event::Retain { topic, message } => {
                match message {
                    Some(m) => self.retained.insert(topic.clone(), m.clone()),
                    None => self.retained.remove(topic),
                };
                Outcome::Done
            }
            Event::Publish {
                message,
                targets,
                cap,
                from,
            } => {
                // A message from a connection that is no longer the session's (its
                // client went on elsewhere, where it resends), or that follows one of
                // its messages that was never committed (it failed, and what follows
                // would overtake its resend), is refused: first deliveries keep the
                // publisher's order. One whose QoS 2 packet id is held is a resend
                // committed twice: queued once.
                if let Some(o) = from.as_ref().filter(|o| o.seq == WILL_SEQ) {
                    let Some(rec) = self.current(&o.client_id, o.epoch) else {
                        return Outcome::Stale;
                    };
                    if rec.connected || rec.will_due_ms.is_none() || rec.will.is_none() {
                        return Outcome::Stale;
                    }
                    rec.will = None;
                    rec.will_due_ms = None;
                } else if let Some(o) = from {
                    let Some(rec) = self.current(&o.client_id, o.epoch) else {
                        return Outcome::Stale;
                    };
                    if o.seq != rec.published + 1 {
                        return Outcome::Stale;
                    }
                    rec.published = o.seq;
                    if o.qos2_pkid.is_some_and(|p| !rec.inbound_qos2.insert(p)) {
                        return Outcome::Duplicate;
                    }
                }
                let seqs = targets
                    .iter()
                    .map(|t| {
                        let rec = self.sessions.get_mut(&t.client_id)?;
                        // Clean sessions are targets too, for an exactly-once message;
                        // their queue ends with them.
                        if rec.queue.len() as u64 >= *cap {
                            return None;
                        }
                        rec.next_seq += 1;
                        let seq = rec.next_seq;
                        rec.queue.insert(
                            seq,
                            Queued {
                                message: message.clone(),
                                qos: t.qos,
                                retain: t.retain,
                                sub_ids: t.sub_ids.clone(),
                                received: false,
                            },
                        );
                        Some(seq)
                    })
                    .collect();
                Outcome::Queued(seqs)
            }
            Event::Ack { client_id, seqs } => {
                if let Some(rec) = self.sessions.get_mut(client_id) {
                    for s in seqs {
                        rec.queue.remove(s);
                    }
                }
                Outcome::Done
            }
            Event::Received { client_id, seq } => {
                let queued = self
                    .sessions
                    .get_mut(client_id)
                    .and_then(|r| r.queue.get_mut(seq));
                match queued {
                    Some(q) => {
                        q.received = true;
                        Outcome::Done
                    }
                    None => Outcome::Stale,
                }
            }
            Event::PubRel { client_id, pkid } => {
                if let Some(rec) = self.sessions.get_mut(client_id) {
                    rec.inbound_qos2.remove(pkid);
                }
                Outcome::Done
            }
            Event::NodeDown { node, at_ms } => {
                if !self.down.insert(*node) {
                    return Outcome::Stale;
                }
                // imbl's map has no `values_mut`: find them, then change each.
                let owned: Vec<String> = self
                    .sessions
                    .iter()
                    .filter(|(_, r)| r.owner == *node && r.connected)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in &owned {
                    if let Some(rec) = self.sessions.get_mut(id) {
                        rec.connected = false;
                        rec.released_at_ms = *at_ms;
                        rec.will_due_ms = rec
                            .will
                            .as_ref()
                            .map(|w| *at_ms + u64::from(w.delay_secs.min(rec.expiry_secs)) * 1000);
                    }
                }
                Outcome::Done
            }
            Event::NodeUp { node } => match self.down.remove(node) {
                true => Outcome::Done,
                false => Outcome::Stale,
            },
            Event::ReleaseWithWill {
                client_id,
                epoch,
                expiry_secs,
                at_ms,
            } => match self.current(client_id, *epoch) {
                Some(rec) if rec.connected => {
                    rec.connected = false;
                    rec.expiry_secs = *expiry_secs;
                    rec.released_at_ms = *at_ms;
                    rec.will_due_ms = rec
                        .will
                        .as_ref()
                        .map(|w| *at_ms + u64::from(w.delay_secs.min(*expiry_secs)) * 1000);
                    Outcome::Done
                }
                _ => Outcome::Stale,
            },
            Event::FireWill { client_id, epoch } => match self.current(client_id, *epoch) {
                Some(rec) if !rec.connected && rec.will_due_ms.is_some() => {
                    rec.will_due_ms = None;
                    match rec.will.take() {
                        Some(w) => Outcome::Will {
                            message: Box::new(w.message),
                            username: rec.username.clone(),
                        },
                        None => Outcome::Stale,
                    }
                }
                _ => Outcome::Stale,
            },
        }
    }

    /// What the leader should do now: the due wills (as `FireWill`, each published by
    /// the leader with [`WILL_SEQ`]), then the expired sessions, among every session.
    /// `offline_ms` tells how long an offline session has been offline. The leader
    /// measures that on its own monotonic clock, never as wall-clock time minus the
    /// replicated `released_at_ms`: a wall clock that jumps an hour forward must not
    /// expire sessions or fire wills early.
    ///
    /// The failover watch asks [`State::due_among`] only of the sessions whose time may
    /// have come; this walk of all of them is the reference its tests compare with.
    pub fn due(&self, offline_ms: impl Fn(&str, &SessionRecord) -> u64) -> Vec<Event> {
        self.due_among(self.sessions.keys().map(String::as_str), |id| {
            self.sessions.get(id).map_or(0, |r| offline_ms(id, r))
        })
    }

    /// [`State::due`] among the sessions `ids` (unknown ones skipped): for each, its
    /// will if due, else its expiry if due; the wills first.
    pub fn due_among<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
        offline_ms: impl Fn(&str) -> u64,
    ) -> Vec<Event> {
        let (mut wills, expired): (Vec<Event>, Vec<Event>) = ids
            .into_iter()
            .filter_map(|id| {
                let r = self.sessions.get(id)?;
                let offline = offline_ms(id);
                let epoch = r.epoch;
                let client_id = id.to_string();
                if !r.connected && r.will_delay_ms().is_some_and(|d| d <= offline) {
                    Some(Event::FireWill { client_id, epoch })
                } else {
                    r.is_expired(offline)
                        .then_some(Event::Expire { client_id, epoch })
                }
            })
            .partition(|e| matches!(e, Event::FireWill { .. }));
        wills.extend(expired);
        wills
    }

    fn current(&mut self, client_id: &str, epoch: u64) -> Option<&mut SessionRecord> {
        self.sessions
            .get_mut(client_id)
            .filter(|r| r.epoch == epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = 1;
    const B: NodeId = 2;

    fn claim(node: NodeId, id: &str, clean: bool, expiry: u32) -> Event {
        Event::Claim {
            node,
            client_id: id.into(),
            clean_start: clean,
            expiry_secs: expiry,
            username: None,
            will: None,
        }
    }

    fn msg() -> StoredMessage {
        StoredMessage {
            topic: "t".into(),
            payload: Bytes::from_static(b"x"),
            qos: 1,
            retain: false,
            properties: MessageProperties::default(),
            expires_at_ms: None,
            publisher: None,
        }
    }

    #[test]
    fn a_claim_moves_the_session_and_keeps_a_persistent_one() {
        let mut s = State::default();
        assert_eq!(
            s.apply(&claim(A, "c", false, 60)),
            Outcome::Claimed {
                epoch: 1,
                present: false
            }
        );
        let sub = StoredSub {
            qos: 1,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            sub_id: None,
        };
        s.apply(&Event::Subscribe {
            client_id: "c".into(),
            epoch: 1,
            filters: vec![("a/#".into(), sub)],
        });
        assert_eq!(
            s.apply(&claim(B, "c", false, 60)),
            Outcome::Claimed {
                epoch: 2,
                present: true
            }
        );
        assert_eq!(s.sessions["c"].owner, 2);
        assert_eq!(s.sessions["c"].subscriptions.len(), 1);
        // The old connection's release is stale and changes nothing.
        let stale = Event::Release {
            client_id: "c".into(),
            epoch: 1,
            expiry_secs: 0,
            at_ms: 0,
        };
        assert_eq!(s.apply(&stale), Outcome::Stale);
        assert!(s.sessions.contains_key("c"));
        // A clean start drops the subscriptions.
        s.apply(&claim(A, "c", true, 60));
        assert!(s.sessions["c"].subscriptions.is_empty());
    }

    #[test]
    fn durable_queue_is_capped_and_acked() {
        let mut s = State::default();
        s.apply(&claim(A, "p", false, u32::MAX));
        s.apply(&claim(A, "clean", true, 0));
        let targets = vec![
            Target {
                client_id: "p".into(),
                qos: 1,
                retain: false,
                sub_ids: vec![],
            },
            Target {
                client_id: "clean".into(),
                qos: 1,
                retain: false,
                sub_ids: vec![],
            },
        ];
        let publish = Event::Publish {
            message: msg(),
            targets,
            cap: 2,
            from: None,
        };
        // A clean session is a target only for an exactly-once message; queued alike.
        assert_eq!(s.apply(&publish), Outcome::Queued(vec![Some(1), Some(1)]));
        assert_eq!(s.apply(&publish), Outcome::Queued(vec![Some(2), Some(2)]));
        assert_eq!(s.apply(&publish), Outcome::Queued(vec![None, None]));
        s.apply(&Event::Ack {
            client_id: "p".into(),
            seqs: vec![1],
        });
        assert_eq!(s.sessions["p"].queue.keys().collect::<Vec<_>>(), [&2]);
    }

    #[test]
    fn a_dead_nodes_wills_fire_once_after_their_delay_and_sessions_expire() {
        let mut s = State::default();
        let will = |delay| StoredWill {
            message: msg(),
            delay_secs: delay,
        };
        let mut c = claim(A, "now", true, 0);
        if let Event::Claim { will: w, .. } = &mut c {
            *w = Some(will(0));
        }
        s.apply(&c);
        let mut c = claim(A, "later", false, 60);
        if let Event::Claim { will: w, .. } = &mut c {
            *w = Some(will(5));
        }
        s.apply(&c);
        s.apply(&claim(B, "elsewhere", false, 60));
        let down = Event::NodeDown {
            node: A,
            at_ms: 1000,
        };
        assert_eq!(s.apply(&down), Outcome::Done);
        assert_eq!(s.apply(&down), Outcome::Stale, "declared once");
        assert!(s.sessions["elsewhere"].connected);
        // Offline for `ms` as the leader measures it (from `at_ms`).
        let after = |ms: u64| move |_: &str, _: &SessionRecord| ms;
        // The clean session's will is due at once; it expires only after it fired.
        let due = s.due(after(0));
        assert_eq!(
            due,
            vec![Event::FireWill {
                client_id: "now".into(),
                epoch: 1
            }]
        );
        assert!(matches!(s.apply(&due[0]), Outcome::Will { .. }));
        assert_eq!(s.apply(&due[0]), Outcome::Stale, "a will fires once");
        assert_eq!(
            s.due(after(0)),
            vec![Event::Expire {
                client_id: "now".into(),
                epoch: 1
            }]
        );
        s.apply(&s.due(after(0))[0].clone());
        // The delayed one fires 5 s after, unless its client came back.
        assert!(s.due(after(4999)).is_empty());
        assert_eq!(s.due(after(5000)).len(), 1);
        s.apply(&claim(B, "later", false, 60));
        assert!(s.due(after(5000)).is_empty());
        assert_eq!(s.apply(&Event::NodeUp { node: A }), Outcome::Done);
        assert!(s.down.is_empty());
    }

    #[test]
    fn qos2_state_survives_in_the_record() {
        let mut s = State::default();
        s.apply(&claim(A, "pub", false, 60));
        s.apply(&claim(A, "sub", false, 60));
        let publish = Event::Publish {
            message: msg(),
            targets: vec![Target {
                client_id: "sub".into(),
                qos: 2,
                retain: false,
                sub_ids: vec![],
            }],
            cap: 10,
            from: Some(Origin {
                client_id: "pub".into(),
                epoch: 1,
                seq: 1,
                qos2_pkid: Some(7),
            }),
        };
        assert_eq!(s.apply(&publish), Outcome::Queued(vec![Some(1)]));
        assert!(s.sessions["pub"].inbound_qos2.contains(&7));
        assert_eq!(
            s.apply(&publish),
            Outcome::Stale,
            "seq 1 again: out of order"
        );
        let (mut again, mut gap) = (publish.clone(), publish.clone());
        if let (Event::Publish { from: Some(a), .. }, Event::Publish { from: Some(g), .. }) =
            (&mut again, &mut gap)
        {
            a.seq = 2;
            g.seq = 4;
        }
        assert_eq!(
            s.apply(&again),
            Outcome::Duplicate,
            "committed twice, queued once"
        );
        assert_eq!(s.apply(&gap), Outcome::Stale, "after a gap: refused");
        s.apply(&Event::PubRel {
            client_id: "pub".into(),
            pkid: 7,
        });
        assert!(s.sessions["pub"].inbound_qos2.is_empty());
        s.apply(&Event::Received {
            client_id: "sub".into(),
            seq: 1,
        });
        assert!(s.sessions["sub"].queue[&1].received);
        assert_eq!(pkid_for(1), 1);
        assert_eq!(pkid_for(65535), 65535);
        assert_eq!(pkid_for(65536), 1);
    }

    #[test]
    fn round_trips_through_bincode() {
        let mut s = State::default();
        s.apply(&claim(A, "p", false, 10));
        s.apply(&Event::Retain {
            topic: "r".into(),
            message: Some(msg()),
        });
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&s, cfg).unwrap();
        let (back, _): (State, usize) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(back, s);
    }
}
