//! The failover checker: load that runs while a scenario breaks the cluster, and the
//! verdict on what the clients saw.
//!
//! - Publishers (QoS 1 and 2, 5.0 and 3.1.1) send `"<publisher>:<seq>"` to
//!   `ck/<publisher>`, one message at a time (stop-and-wait), with a persistent session.
//!   A message is acknowledged when PUBACK < 0x80 (QoS 1) or PUBCOMP (QoS 2, after a
//!   PUBREC < 0x80) arrives.
//!   After a lost connection a publisher connects to the next node and sends the
//!   in-flight message again (DUP, same packet id; PUBREL if PUBREC had come), as the
//!   spec asks; after a refusal (PUBACK/PUBREC >= 0x80) it moves on to the next message
//!   and to another node, leaving the old connection open: the broker must close it
//!   once the session is taken over ("superseded" below).
//! - Persistent subscribers, one per node, take `ck/#` and `will/#` at QoS 2, follow
//!   their session to another node when theirs fails, and dedupe QoS 2 as the spec's
//!   receiver does ([`Qos2Receiver`](super::roaming::Qos2Receiver)).
//! - Will clients sit on the nodes a scenario is about to kill or cut off.
//!
//! [`Checker::finish`] stops the publishers, waits (bounded) until every subscriber has
//! everything acknowledged, and checks: every acknowledged QoS 1 message delivered at
//! least once to every subscriber, every acknowledged QoS 2 message exactly once, no
//! unacknowledged QoS 2 message more than once, first deliveries in publish order per
//! publisher, no session lost on a reconnect, every superseded connection and every
//! will client's connection closed by the broker, every will published exactly once.
//!
//! The client tasks are in `checker/clients.rs`, the verdict in `checker/report.rs`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::cluster::Cluster;
use super::codec::Packet;
use super::codec::{self, Version};
use super::raw::{Raw, Recv};
use super::roaming::Roamer;

mod clients;
mod report;

use clients::{publish_loop, subscribe_loop, will_client};
pub use report::Report;

/// Filters of every subscriber: the load and the wills.
const FILTERS: &[(&str, u8)] = &[("ck/#", 2), ("will/#", 2)];
/// Bound on the wait for subscribers to get everything acknowledged.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound, after settling, on the broker closing superseded connections.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);
/// Read timeout of the subscriber loops (how soon they notice a stop).
const TICK: Duration = Duration::from_millis(200);

/// One publisher: client id, QoS, protocol version, and the node it starts on.
#[derive(Debug, Clone)]
pub struct PubSpec {
    pub id: String,
    pub qos: u8,
    pub version: Version,
    pub home: u64,
}

/// One persistent subscriber. An `offline` one subscribes, disconnects, and comes back
/// only in [`Checker::finish`]: everything then reaches it from its durable queue.
#[derive(Debug, Clone)]
pub struct SubSpec {
    pub id: String,
    pub version: Version,
    pub home: u64,
    pub offline: bool,
}

/// What a scenario runs.
#[derive(Debug, Clone)]
pub struct Load {
    pub publishers: Vec<PubSpec>,
    pub subscribers: Vec<SubSpec>,
    /// Nodes that get a client with a will; each such will must be published once.
    pub wills: Vec<u64>,
    /// Pause between two messages of one publisher.
    pub pace: Duration,
    /// Messages per publisher at most.
    pub max_per_publisher: u32,
}

impl Load {
    /// Three publishers on the first three of `nodes` (QoS 1 5.0, QoS 2 5.0, QoS 2
    /// 3.1.1) and a subscriber on each node (5.0 and 3.1.1 in turn).
    pub fn spread(nodes: &[u64]) -> Load {
        let kinds = [(1, Version::V5), (2, Version::V5), (2, Version::V4)];
        let publishers = kinds
            .iter()
            .zip(nodes.iter().cycle())
            .enumerate()
            .map(|(i, (&(qos, version), &home))| PubSpec {
                id: format!("p{}-q{qos}", i + 1),
                qos,
                version,
                home,
            })
            .collect();
        let subscribers = nodes
            .iter()
            .map(|&home| SubSpec {
                id: format!("s{home}"),
                version: if home % 2 == 1 {
                    Version::V5
                } else {
                    Version::V4
                },
                home,
                offline: false,
            })
            .collect();
        Load {
            publishers,
            subscribers,
            wills: Vec::new(),
            pace: Duration::from_millis(100),
            max_per_publisher: 10_000,
        }
    }

    pub fn wills_on(mut self, nodes: &[u64]) -> Load {
        self.wills = nodes.to_vec();
        self
    }

    /// Adds an offline subscriber. It must be able to queue every message: the load
    /// is capped below `max_queued_messages` (1000 by default).
    pub fn offline_subscriber(mut self, home: u64) -> Load {
        self.max_per_publisher = 900 / self.publishers.len().max(1) as u32;
        // At most 5 messages/s per publisher: the cap lasts a minute.
        self.pace = self.pace.max(Duration::from_millis(200));
        self.subscribers.push(SubSpec {
            id: format!("offline{home}"),
            version: Version::V5,
            home,
            offline: true,
        });
        self
    }
}

/// How one message ended for its publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Acked,
    /// PUBACK or PUBREC with this reason (>= 0x80).
    Refused(u8),
    /// No answer: connection lost with the session, or gave up.
    Unknown,
}

/// What one subscriber received.
#[derive(Debug, Default)]
struct Seen {
    /// Deliveries per (publisher, seq); QoS 2 retransmissions are not deliveries.
    count: HashMap<(String, u32), u32>,
    /// Per publisher, sequence numbers in the order of their first delivery.
    first: BTreeMap<String, Vec<u32>>,
    /// QoS 2 PUBLISHes whose packet id still awaited PUBREL (method B duplicates).
    qos2_resends: u32,
    /// Deliveries per will payload.
    wills: BTreeMap<String, u32>,
    /// Anything that is neither load nor a will.
    strays: Vec<String>,
    /// When the last new message arrived, and the longest wait between two.
    last_new: Option<Instant>,
    worst_gap: Duration,
}

/// A connection the broker is expected to close: a session's old connection, or a
/// will client whose node failed.
#[derive(Debug)]
struct Watched {
    what: String,
    since: Instant,
    closed: Option<Instant>,
    /// What the broker sent on it (DISCONNECT aside), and when.
    after: Vec<(Instant, String)>,
}

#[derive(Debug, Default)]
struct Record {
    /// Per publisher: its QoS and the outcome of each message (index seq - 1).
    sent: BTreeMap<String, (u8, Vec<Outcome>)>,
    seen: BTreeMap<String, Seen>,
    watched: Vec<Watched>,
    wills: Vec<String>,
    reconnects: u32,
    sessions_lost: Vec<String>,
    errors: Vec<String>,
    /// Things that did not happen in time.
    late: Vec<String>,
}

/// State shared by the scenario and the client tasks.
struct Shared {
    rec: Mutex<Record>,
    stop_publishing: AtomicBool,
    stop_subscribers: AtomicBool,
    wake_offline: AtomicBool,
    /// Tasks watching connections; aborted at the end.
    watchers: Mutex<Vec<JoinHandle<()>>>,
    /// A node the clients leave (as clients of a node that stopped answering do).
    avoid: Mutex<Option<SocketAddr>>,
    /// From when on anything the broker sends on a connection its client left is a
    /// failure ([`Checker::silent_superseded_from_now`]).
    silent_from: Mutex<Option<Instant>>,
}

impl Shared {
    fn rec(&self) -> MutexGuard<'_, Record> {
        self.rec.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches `conn` until the broker closes it.
    fn watch(self: &Arc<Self>, what: String, conn: Raw) {
        let i = {
            let mut rec = self.rec();
            rec.watched.push(Watched {
                what,
                since: Instant::now(),
                closed: None,
                after: Vec::new(),
            });
            rec.watched.len() - 1
        };
        let shared = self.clone();
        let task = tokio::spawn(async move {
            let mut conn = conn;
            loop {
                match conn.try_recv(Duration::from_secs(3600)).await {
                    Recv::Packet(Packet::Disconnect { .. }) => {}
                    Recv::Packet(p) => {
                        let what = format!("{p:?}").chars().take(120).collect();
                        shared.rec().watched[i].after.push((Instant::now(), what));
                    }
                    Recv::Closed => {
                        shared.rec().watched[i].closed = Some(Instant::now());
                        return;
                    }
                    Recv::Timeout => return,
                }
            }
        });
        self.watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    /// Leaves the current connection if it is to the node clients are told to avoid
    /// (watching it: the broker must close it once the session moves); whether it did.
    fn leave_avoided(self: &Arc<Self>, r: &mut Roamer) -> bool {
        let avoid = *self.avoid.lock().unwrap_or_else(|e| e.into_inner());
        if avoid.is_none() || r.node() != avoid {
            return false;
        }
        if let Some(conn) = r.abandon() {
            self.watch(
                format!("{} (left a node that stopped answering)", r.id),
                conn,
            );
        }
        true
    }

    fn note_roamer(&self, r: &Roamer) {
        let mut rec = self.rec();
        rec.reconnects += r.reconnects;
        if r.sessions_lost > 0 {
            rec.sessions_lost
                .push(format!("{} ({} times)", r.id, r.sessions_lost));
        }
    }
}

/// A running load; see the module docs.
pub struct Checker {
    name: String,
    started: Instant,
    shared: Arc<Shared>,
    publishers: Vec<JoinHandle<()>>,
    subscribers: Vec<JoinHandle<()>>,
}

impl Drop for Checker {
    fn drop(&mut self) {
        for t in self.publishers.iter().chain(&self.subscribers) {
            t.abort();
        }
        for t in self
            .shared
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            t.abort();
        }
    }
}

impl Checker {
    /// Connects the subscribers and will clients, waits until every node has applied
    /// their sessions, then starts the publishers.
    pub async fn start(c: &Cluster, name: &str, load: Load) -> Checker {
        let nodes: Vec<SocketAddr> = c.ids().iter().map(|&id| c.node(id).mqtt).collect();
        let home = |id: u64| (id - 1) as usize;
        let shared = Arc::new(Shared {
            rec: Mutex::new(Record::default()),
            stop_publishing: AtomicBool::new(false),
            stop_subscribers: AtomicBool::new(false),
            wake_offline: AtomicBool::new(false),
            watchers: Mutex::new(Vec::new()),
            avoid: Mutex::new(None),
            silent_from: Mutex::new(None),
        });
        let mut subscribers = Vec::new();
        for s in &load.subscribers {
            let mut r = Roamer::new(&s.id, s.version, nodes.clone(), home(s.home));
            let connected = r.connect().await;
            assert!(matches!(connected, Ok(false)), "{}: {connected:?}", s.id);
            assert!(r.subscribe(FILTERS).await, "{}: SUBSCRIBE failed", s.id);
            if s.offline {
                r.send(&codec::disconnect(s.version, 0, &Default::default()))
                    .await;
                r.lost();
            }
            shared.rec().seen.insert(s.id.clone(), Seen::default());
            subscribers.push(tokio::spawn(subscribe_loop(r, s.offline, shared.clone())));
        }
        for &node in &load.wills {
            let id = format!("will-n{node}");
            let conn = will_client(&id, c.node(node).mqtt).await;
            shared.rec().wills.push(id.clone());
            shared.watch(format!("{id} (will client on node {node})"), conn);
        }
        c.wait_applied().await;
        let mut publishers = Vec::new();
        for p in &load.publishers {
            let mut r = Roamer::new(&p.id, p.version, nodes.clone(), home(p.home));
            let connected = r.connect().await;
            assert!(matches!(connected, Ok(false)), "{}: {connected:?}", p.id);
            shared.rec().sent.insert(p.id.clone(), (p.qos, Vec::new()));
            let task = publish_loop(r, p.qos, load.pace, load.max_per_publisher, shared.clone());
            publishers.push(tokio::spawn(task));
        }
        Checker {
            name: name.to_string(),
            started: Instant::now(),
            shared,
            publishers,
            subscribers,
        }
    }

    /// Clients connected to `node` leave it for the next node, as clients do when their
    /// node stops answering (a SIGSTOP); `None` ends that.
    pub fn avoid(&self, node: Option<SocketAddr>) {
        *self.shared.avoid.lock().unwrap_or_else(|e| e.into_inner()) = node;
    }

    /// From now on, anything the broker sends on a connection that its client has
    /// left (a PUBLISH, an acknowledgement) fails the run: the node that served it
    /// has lost the session and must not act for it.
    pub fn silent_superseded_from_now(&self) {
        *self
            .shared
            .silent_from
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Messages acknowledged so far.
    pub fn acked(&self) -> usize {
        let rec = self.shared.rec();
        rec.sent
            .values()
            .flat_map(|(_, o)| o)
            .filter(|o| **o == Outcome::Acked)
            .count()
    }

    /// Messages refused (reason >= 0x80) so far.
    pub fn refused(&self) -> usize {
        let rec = self.shared.rec();
        rec.sent
            .values()
            .flat_map(|(_, o)| o)
            .filter(|o| matches!(o, Outcome::Refused(_)))
            .count()
    }

    /// Waits until `more` messages beyond those acknowledged now are acknowledged:
    /// the load goes on. Panics after `within`.
    pub async fn wait_acked(&self, more: usize, within: Duration) {
        let want = self.acked() + more;
        let what = format!("{}: {want} messages acknowledged", self.name);
        super::wait_until(&what, within, TICK, || async { self.acked() >= want }).await;
    }

    /// Returns as soon as (within a millisecond of when) one more message is
    /// acknowledged: a fault injected then hits a message whose acknowledgement has
    /// just gone out. Panics after `within`.
    pub async fn wait_next_ack(&self, within: Duration) {
        let want = self.acked() + 1;
        let what = format!("{}: message {want} acknowledged", self.name);
        let poll = Duration::from_millis(1);
        super::wait_until(&what, within, poll, || async { self.acked() >= want }).await;
    }

    /// Waits until some subscriber has received every will (the cluster published
    /// them). Not within `within` is a failure, reported by [`Checker::finish`]; the
    /// scenario goes on, so that the other checks are reported too.
    pub async fn wait_wills(&self, within: Duration) {
        let started = Instant::now();
        let published = || {
            let rec = self.shared.rec();
            rec.seen
                .values()
                .any(|s| rec.wills.iter().all(|w| s.wills.contains_key(w)))
        };
        while !published() {
            if started.elapsed() >= within {
                let failure = format!("wills not published within {within:?}");
                self.shared.rec().late.push(failure);
                return;
            }
            tokio::time::sleep(TICK).await;
        }
        let took = started.elapsed().as_secs_f32();
        println!("[{}] wills published within {took:.1}s", self.name);
    }

    /// Stops the load, settles, verifies and prints the report; panics listing every
    /// failed property.
    pub async fn finish(mut self) -> Report {
        self.shared.stop_publishing.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.publishers) {
            let _ = t.await;
        }
        self.shared.wake_offline.store(true, Ordering::Relaxed);
        let settled = self.settle().await;
        let closed = self.wait_watched_closed().await;
        self.shared.stop_subscribers.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.subscribers) {
            let _ = t.await;
        }
        let silent_from = *self
            .shared
            .silent_from
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut report = Report::of(&self.name, &self.shared.rec(), self.started.elapsed());
        if let Some(from) = silent_from {
            for w in &self.shared.rec().watched {
                let late: Vec<&String> = w
                    .after
                    .iter()
                    .filter(|(t, _)| *t >= from)
                    .map(|(_, p)| p)
                    .collect();
                if !late.is_empty() {
                    report.failures.push(format!(
                        "sent on a superseded connection, {}: {} packets, e.g. {:?}",
                        w.what,
                        late.len(),
                        late.iter().take(3).collect::<Vec<_>>()
                    ));
                }
            }
        }
        for w in &self.shared.rec().watched {
            let closed = match w.closed {
                Some(t) => format!(
                    "closed by the broker after {:.1}s",
                    (t - w.since).as_secs_f32()
                ),
                None => "NOT closed by the broker".to_string(),
            };
            println!("[{}] {}: {closed}", self.name, w.what);
        }
        println!("{report}");
        let mut notes = String::new();
        if !settled {
            notes.push_str(&format!("\n  (waited {SETTLE_TIMEOUT:?} for deliveries)"));
        }
        if !closed {
            notes.push_str(&format!(
                "\n  (waited {CLOSE_TIMEOUT:?} for connections to close)"
            ));
        }
        assert!(
            report.failures.is_empty(),
            "{report}:\n  {}{notes}",
            report.failures.join("\n  ")
        );
        report
    }

    /// Waits until every subscriber has every acknowledged message and every will.
    async fn settle(&self) -> bool {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while Instant::now() < deadline {
            if missing(&self.shared.rec()) == 0 {
                return true;
            }
            tokio::time::sleep(TICK).await;
        }
        false
    }

    async fn wait_watched_closed(&self) -> bool {
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        while Instant::now() < deadline {
            if self.shared.rec().watched.iter().all(|w| w.closed.is_some()) {
                return true;
            }
            tokio::time::sleep(TICK).await;
        }
        false
    }
}

/// Acknowledged messages and wills not yet delivered, summed over subscribers.
fn missing(rec: &Record) -> usize {
    let mut n = 0;
    for seen in rec.seen.values() {
        for (p, (_, outcomes)) in &rec.sent {
            for (i, o) in outcomes.iter().enumerate() {
                let key = (p.clone(), i as u32 + 1);
                if *o == Outcome::Acked && !seen.count.contains_key(&key) {
                    n += 1;
                }
            }
        }
        // Only wills that were published somewhere: whether they are is
        // [`Checker::wait_wills`]'s check.
        let published = |w: &String| rec.seen.values().any(|s| s.wills.contains_key(w));
        n += rec
            .wills
            .iter()
            .filter(|w| published(w) && !seen.wills.contains_key(*w))
            .count();
    }
    n
}
