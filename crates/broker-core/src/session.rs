//! A client's session: what survives its connection. Publishers push deliveries into it
//! under its own short lock (never a global one), and the connection attached to it, if
//! any, is woken to send them. One lock per session; lock order: registry → subscriptions
//! → session, and never a session lock across an `.await`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::message::Message;
use crate::packet::{Protocol, QoS, SubOptions};
use crate::replicated::NodeId;

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub msg: Arc<Message>,
    /// min(publish QoS, subscription QoS).
    pub qos: QoS,
    pub retain: bool,
    /// v5 subscription identifiers of every matching subscription.
    pub sub_ids: Vec<u32>,
    /// Its sequence number in the session's durable queue (replicated state), acked
    /// through the cluster once the client acknowledges it.
    pub seq: Option<u64>,
    /// Sent before, perhaps by another node: goes out with the DUP flag.
    pub dup: bool,
}

impl Delivery {
    /// A delivery described by replicated or forwarded data (QoS as its wire value).
    pub fn replicated(
        msg: &Arc<Message>,
        qos: u8,
        retain: bool,
        sub_ids: Vec<u32>,
        seq: Option<u64>,
    ) -> Delivery {
        Delivery {
            msg: msg.clone(),
            qos: QoS::from_u8(qos).unwrap_or(QoS::AtMostOnce),
            retain,
            sub_ids,
            seq,
            dup: false,
        }
    }
}

/// How far an outbound QoS 1/2 message has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// PUBLISH sent, awaiting PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREL sent, awaiting PUBCOMP.
    Released,
}

#[derive(Debug)]
pub(crate) struct Inflight {
    pub pkid: u16,
    pub delivery: Delivery,
    pub stage: Stage,
}

/// The connection currently attached to a session. A connection that finds itself no
/// longer attached when woken has been taken over, and closes.
#[derive(Debug)]
pub(crate) struct Attachment {
    pub conn_id: u64,
}

/// What `enqueue` did with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    Queued,
    /// Queued above the bound: the publisher should wait for room (backpressure).
    QueuedOverBound,
    /// Dropped (and counted by the caller).
    Dropped,
}

#[derive(Debug, Default)]
pub(crate) struct SessionState {
    pub attached: Option<Attachment>,
    /// Bumped at every attach; a will or expiry timer compares it to see whether the
    /// client came back in the meantime.
    pub generation: u64,
    pub protocol: Option<Protocol>,
    /// Seconds the session outlives its connection; `u32::MAX` is never.
    pub expiry_secs: u32,
    /// Full filter (including `$share/g/`) → options.
    pub subscriptions: HashMap<String, SubOptions>,
    /// Deliveries not yet sent, oldest first.
    pub pending: VecDeque<Delivery>,
    /// Sent, awaiting acknowledgement, in send order (resent in this order).
    pub inflight: VecDeque<Inflight>,
    pub last_pkid: u16,
    /// The epoch of the claim that made this node the owner (replicated registry).
    pub epoch: u64,
    /// Inbound QoS 2 packet ids: PUBREC sent, PUBREL not yet received.
    pub incoming_qos2: HashSet<u16>,
    /// Outbound window: max unacknowledged QoS 1/2 messages.
    pub window: usize,
    /// The connection whose will the cluster has published (its node was declared
    /// dead meanwhile): that connection must not publish it again when it closes.
    pub will_taken: Option<u64>,
}

impl SessionState {
    /// The packet id for a delivery: derived from its sequence number `seq` when it is
    /// durable (the same on whichever node sends it), else the next free one. None
    /// while that derived id is still in flight.
    pub fn pkid_for(&mut self, seq: Option<u64>) -> Option<u16> {
        match seq {
            Some(seq) => {
                let id = crate::replicated::pkid_for(seq);
                (!self.inflight.iter().any(|f| f.pkid == id)).then_some(id)
            }
            None => Some(self.next_pkid()),
        }
    }

    /// Next free packet id, skipping ids still in flight.
    pub fn next_pkid(&mut self) -> u16 {
        loop {
            self.last_pkid = self.last_pkid.wrapping_add(1);
            if self.last_pkid == 0 {
                continue;
            }
            let id = self.last_pkid;
            if !self.inflight.iter().any(|f| f.pkid == id) {
                return id;
            }
        }
    }

    /// Forgets the outbound flow `pkid` at `stage`, returning it if it was there.
    pub fn complete(&mut self, pkid: u16, stage: Stage) -> Option<Inflight> {
        let i = self
            .inflight
            .iter()
            .position(|f| f.pkid == pkid && f.stage == stage)?;
        self.inflight.remove(i)
    }
}

#[derive(Debug)]
pub(crate) struct Session {
    pub client_id: Arc<str>,
    state: Mutex<SessionState>,
    /// Wakes the attached connection: there is something to send.
    pub wake: Notify,
    /// Wakes publishers waiting for room in `pending` (backpressure policy).
    pub room: Notify,
    /// Mirrors `state.attached.is_some()` for lock-free checks on the hot path (for a
    /// session owned by another node: whether its client is connected there).
    online: AtomicBool,
    /// The node that owns the session (serves its client); others only route to it.
    owner: AtomicU64,
}

impl Session {
    pub fn new(client_id: Arc<str>, owner: NodeId) -> Arc<Session> {
        Arc::new(Session {
            client_id,
            state: Mutex::new(SessionState::default()),
            wake: Notify::new(),
            room: Notify::new(),
            online: AtomicBool::new(false),
            owner: AtomicU64::new(owner),
        })
    }

    pub fn owner(&self) -> NodeId {
        self.owner.load(Ordering::Acquire)
    }

    pub fn set_owner(&self, node: NodeId) {
        self.owner.store(node, Ordering::Release);
    }

    pub fn lock(&self) -> MutexGuard<'_, SessionState> {
        // A panic while holding a session lock is a bug, but one session's bug must not
        // take every publisher down with it: keep serving with the state as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// Whether connection `conn_id` still holds this session.
    pub fn is_attached(&self, conn_id: u64) -> bool {
        self.lock().attached.as_ref().map(|a| a.conn_id) == Some(conn_id)
    }

    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Release);
    }

    /// Queues `d` within `bound` pending deliveries. QoS 0 is only queued for an online
    /// session and never above the bound; QoS 1/2 above the bound is dropped, or queued
    /// anyway when `overflow` (backpressure) and the session is online.
    pub fn enqueue(&self, d: Delivery, bound: usize, overflow: bool) -> Enqueued {
        let online = self.is_online();
        let mut st = self.lock();
        let full = st.pending.len() >= bound;
        let result = if d.qos == QoS::AtMostOnce {
            if !online || full {
                return Enqueued::Dropped;
            }
            Enqueued::Queued
        } else if !full {
            Enqueued::Queued
        } else if overflow && online {
            Enqueued::QueuedOverBound
        } else {
            return Enqueued::Dropped;
        };
        st.pending.push_back(d);
        drop(st);
        if online {
            self.wake.notify_one();
        }
        result
    }

    /// Waits until this session has room below `bound`, or goes offline.
    pub async fn wait_for_room(&self, bound: usize) {
        loop {
            // Register before checking, so that a wake between the check and the await
            // is not lost (`notify_waiters` only reaches registered waiters).
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_online() || self.lock().pending.len() < bound {
                return;
            }
            notified.await;
        }
    }
}
