//! What the cluster does about failures, on a timer (ARCHITECTURE.md, "Sessions and
//! failover"):
//!
//! - every node watches whether it can commit (a leader it hears from, or, leading, a
//!   quorum that answers) and logs and counts losing and regaining it; cut off for
//!   longer than `RAFTMQ_NODE_DOWN_MS`, it closes its client connections and refuses
//!   new ones (the majority has declared it dead and serves its clients' sessions),
//!   sending 5.0 clients to a peer it still hears;
//! - the leader declares a node dead once it has not answered for
//!   `RAFTMQ_NODE_DOWN_MS` (default 3000), and back once it answers again;
//! - the leader publishes the wills that are due (of the clients of dead nodes) and
//!   ends the sessions whose expiry has run out, whichever node they were on.
//!
//! All of it goes through Raft, so a new leader carries on where the old one stopped,
//! and a will is published once.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use broker_core::cluster_api::CutOff;
use broker_core::replicated::{now_ms, Event, Outcome, State, StoredMessage};
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use std::time::Instant;

use crate::events::Kind;
use crate::node::{Node, COMMIT_TIMEOUT, ELECTION};
use crate::types::{Cmd, Touched};

/// How often the checks run.
const TICK: Duration = Duration::from_millis(250);
/// Silence from the leader (or, leading, from a majority) after which a node counts
/// itself unable to commit: the longest election timeout, after which a follower
/// stands itself and the majority side of a partition has elected a new leader.
const QUORUM_SILENCE: Duration = ELECTION.end;

/// Failure handling, counted since this node started (for metrics and `/cluster`).
#[derive(Debug, Default)]
pub struct Counters {
    pub leader_changes: AtomicU64,
    /// Nodes this node, leading, declared dead, and declared back.
    pub nodes_down: AtomicU64,
    pub nodes_up: AtomicU64,
    /// Times this node lost the ability to commit (cut off, or no leader), and got it back.
    pub quorum_lost: AtomicU64,
    pub quorum_regained: AtomicU64,
    /// Wills of dead nodes' clients this node published, and sessions it expired.
    pub wills_published: AtomicU64,
    pub sessions_expired: AtomicU64,
    /// The proposer's log entries (one per batch), the events in them, the largest
    /// batch, and the time spent committing them (from the write to applied here).
    pub batches: AtomicU64,
    pub batched_events: AtomicU64,
    pub largest_batch: AtomicU64,
    pub commit_us: AtomicU64,
}

/// A snapshot of [`Counters`], as `/cluster` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Events {
    pub leader_changes: u64,
    pub nodes_down: u64,
    pub nodes_up: u64,
    pub quorum_lost: u64,
    pub quorum_regained: u64,
    pub wills_published: u64,
    pub sessions_expired: u64,
    pub batches: u64,
    pub batched_events: u64,
    pub largest_batch: u64,
    pub commit_us: u64,
}

impl Counters {
    pub fn snapshot(&self) -> Events {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Events {
            leader_changes: get(&self.leader_changes),
            nodes_down: get(&self.nodes_down),
            nodes_up: get(&self.nodes_up),
            quorum_lost: get(&self.quorum_lost),
            quorum_regained: get(&self.quorum_regained),
            wills_published: get(&self.wills_published),
            sessions_expired: get(&self.sessions_expired),
            batches: get(&self.batches),
            batched_events: get(&self.batched_events),
            largest_batch: get(&self.largest_batch),
            commit_us: get(&self.commit_us),
        }
    }
}

impl Counters {
    /// One batch of `events` committed (or failed) in `took`.
    pub fn batched(&self, events: usize, took: Duration) {
        inc(&self.batches);
        self.batched_events
            .fetch_add(events as u64, Ordering::Relaxed);
        self.largest_batch
            .fetch_max(events as u64, Ordering::Relaxed);
        self.commit_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Silence after which the leader declares a node dead.
fn node_down_after() -> Duration {
    let ms = std::env::var("RAFTMQ_NODE_DOWN_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&ms| ms >= 500)
        .unwrap_or(3000);
    Duration::from_millis(ms)
}

/// Runs the checks until the node shuts down.
pub async fn run(node: Arc<Node>) {
    let down_after = node_down_after();
    let mut offline = OfflineSince::default();
    // Wills being published: not tried again while their commit may still land.
    let mut firing: HashMap<(String, u64), Instant> = HashMap::new();
    let mut quorum = false;
    let mut cut_off = false;
    let started = Instant::now();
    // Until when the engine's lease runs, and, once it has run out, the commit index
    // this node must apply before it serves again (see below).
    let mut lease_until: Option<Instant> = None;
    let mut catch_up: Option<u64> = None;
    // When we last became leader: silence is counted from then at the earliest.
    let mut leading_since: Option<Instant> = None;
    // The last tick at which we did not lead.
    let mut followed_at = started;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let m = node.metrics();
        if m.state == ServerState::Shutdown {
            return;
        }
        let leader = m.state == ServerState::Leader;
        // When this node last knew it was part of a working cluster. Our own clocks,
        // not openraft's metrics: those are as old as their last report, which after
        // a pause (SIGSTOP, a stalled VM) predates it.
        let contact = match m.state {
            // The majority that elected us answered after our last tick as a
            // non-leader: a new leader that has no answer to its first AppendEntries
            // yet is not cut off (without this, a tick between the election and that
            // answer cut off the new leader, which closed every client connection it
            // had just taken over).
            ServerState::Leader => {
                Some(quorum_contact(&node, &m).map_or(followed_at, |t| t.max(followed_at)))
            }
            _ => node.leader_heard(),
        }
        .unwrap_or(started);
        if !leader {
            followed_at = Instant::now();
        }
        if leader {
            // Stepping down, its silence counts from its last quorum, not from the
            // last time it followed someone.
            node.heard_leader_at(contact);
        }
        let silence = contact.elapsed();
        // A lease that ran out (paused, cut off) is renewed only once this node has
        // applied what the leader had committed when it heard it again: hearing a
        // heartbeat is not knowing that its sessions were taken elsewhere meanwhile.
        if lease_until.is_some_and(|t| Instant::now() >= t) && catch_up.is_none() {
            catch_up = Some(node.leader_commit.load(Ordering::Relaxed));
        }
        if !leader && silence < down_after {
            if let Some(target) = catch_up {
                let applied = m.last_applied.as_ref().map_or(0, |l| l.index);
                if applied >= target {
                    catch_up = None;
                }
            }
        } else if leader {
            catch_up = None;
        }
        if catch_up.is_none() {
            lease_until = Some(contact + down_after);
            if let Some(engine) = node.engine() {
                engine.renew_lease(contact + down_after);
            }
        }
        let now_quorum = match m.state {
            ServerState::Leader => silence < QUORUM_SILENCE,
            ServerState::Follower | ServerState::Learner => {
                m.current_leader.is_some() && silence < QUORUM_SILENCE
            }
            _ => false,
        };
        if now_quorum != quorum {
            if now_quorum {
                inc(&node.counters.quorum_regained);
                node.record(Kind::QuorumRegained);
                tracing::info!(
                    leader = ?m.current_leader,
                    "cluster quorum regained: commits, connects and QoS 1/2 acks resume"
                );
            } else {
                inc(&node.counters.quorum_lost);
                node.record(Kind::QuorumLost);
                tracing::warn!(
                    state = ?m.state,
                    "cluster quorum lost (no leader reachable, or leading without a \
                     majority): new connects are refused and QoS 1/2 acks withheld; QoS 0 \
                     still reaches local subscribers"
                );
            }
            quorum = now_quorum;
        }
        node.quorum.store(quorum, Ordering::Relaxed);
        let now_cut_off = !quorum && silence >= down_after;
        if now_cut_off != cut_off {
            cut_off = now_cut_off;
            let reference = cut_off.then(|| server_reference(&node, &m, down_after));
            match &reference {
                Some(to) => tracing::warn!(
                    silent_ms = silence.as_millis() as u64,
                    server_reference = ?to,
                    "cut off from the cluster for longer than the node-down time: closing \
                     client connections (they resume on another node) and refusing new ones"
                ),
                None => tracing::info!("serving clients again"),
            }
            if let Some(engine) = node.engine() {
                engine.set_cut_off(reference.map(|server_reference| CutOff { server_reference }));
            }
        }
        let dead = node
            .sm
            .with_app_mut(|app| {
                offline.observe(&app.state, app.touched.take());
                app.state.down.clone()
            })
            .await;
        *node.down.lock().unwrap_or_else(|e| e.into_inner()) = dead.iter().copied().collect();
        if !leader {
            leading_since = None;
            continue;
        }
        let since = *leading_since.get_or_insert_with(Instant::now);
        let (due, wills) = node
            .sm
            .read(|app| {
                let due = offline.due(&app.state);
                let (wills, others): (Vec<Event>, Vec<Event>) = due
                    .into_iter()
                    .partition(|e| matches!(e, Event::FireWill { .. }));
                let wills: Vec<DueWill> = wills
                    .iter()
                    .filter_map(|e| match e {
                        Event::FireWill { client_id, epoch } => {
                            let rec = app.state.sessions.get(client_id)?;
                            let will = rec.will.as_ref()?;
                            Some((
                                client_id.clone(),
                                *epoch,
                                will.message.clone(),
                                rec.username.clone(),
                            ))
                        }
                        _ => None,
                    })
                    .collect();
                (others, wills)
            })
            .await;
        fire_wills(&node, wills, &mut firing);
        let mut events = Vec::new();
        let members: Vec<u64> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        for id in members {
            let last = match id == node.id {
                true => Some(Instant::now()),
                false => node.contacts.last(id),
            };
            let heard = last.map_or(since, |t| t.max(since));
            let silent = heard.elapsed();
            let down = dead.contains(&id);
            if !down && silent >= down_after {
                tracing::warn!(
                    node = id,
                    silent_ms = silent.as_millis() as u64,
                    "node unreachable: declaring it dead (its clients' sessions go offline, \
                     their wills are published)"
                );
                events.push(Event::NodeDown {
                    node: id,
                    at_ms: now_ms(),
                });
            } else if down && silent < down_after / 2 {
                tracing::info!(node = id, "node reachable again: declaring it back");
                events.push(Event::NodeUp { node: id });
            }
        }
        events.extend(due);
        commit_all(&node, events).await;
    }
}

/// When this node first saw each offline session offline, on its monotonic clock: the
/// leader's measure of how long a session has been offline (expiry, will delay).
/// Every node keeps it, so a new leader has it at once. It starts late, never early:
/// a tick after the event, or at this node's start for sessions already offline then
/// (time during which no node of the cluster ran does not count).
#[derive(Default)]
struct OfflineSince {
    /// Per offline session: its `(epoch, released_at_ms)`, when this node saw it go
    /// offline, and the moments its will delay and its expiry run out from then.
    since: HashMap<String, Offline>,
    /// Those moments, in order: `due` looks only at the sessions whose moment came.
    deadlines: BTreeSet<(Instant, String)>,
}

struct Offline {
    epoch: u64,
    released_at_ms: u64,
    since: Instant,
    deadlines: Vec<Instant>,
}

impl OfflineSince {
    /// Takes in the sessions whose offline state changed (`touched`; all of them at
    /// the first look, after a snapshot was installed or a node declared down):
    /// forgets those that are back or gone and notes the newly offline ones (an offline
    /// session is one `(epoch, released_at_ms)`).
    fn observe(&mut self, state: &State, touched: Touched) {
        let now = Instant::now();
        if touched.all {
            let stale: Vec<String> = self
                .since
                .keys()
                .filter(|id| !state.sessions.contains_key(*id))
                .cloned()
                .collect();
            for id in stale.iter().chain(state.sessions.keys()) {
                self.refresh(id, state, now);
            }
        } else {
            for id in &touched.ids {
                self.refresh(id, state, now);
            }
        }
    }

    fn refresh(&mut self, id: &str, state: &State, now: Instant) {
        let rec = state.sessions.get(id).filter(|r| !r.connected);
        let old = self.since.remove(id);
        if let Some(o) = &old {
            for at in &o.deadlines {
                self.deadlines.remove(&(*at, id.to_string()));
            }
        }
        let Some(r) = rec else { return };
        // Still the same offline spell: it keeps its start.
        let since = old
            .filter(|o| (o.epoch, o.released_at_ms) == (r.epoch, r.released_at_ms))
            .map_or(now, |o| o.since);
        let after = |ms: u64| since + Duration::from_millis(ms);
        let mut deadlines = Vec::new();
        if let Some(delay) = r.will_delay_ms() {
            deadlines.push(after(delay));
        }
        if r.expiry_secs != u32::MAX {
            deadlines.push(after(u64::from(r.expiry_secs) * 1000));
        }
        for at in &deadlines {
            self.deadlines.insert((*at, id.to_string()));
        }
        self.since.insert(
            id.to_string(),
            Offline {
                epoch: r.epoch,
                released_at_ms: r.released_at_ms,
                since,
                deadlines,
            },
        );
    }

    /// How long session `id` has been offline, as this node saw it.
    fn ms(&self, id: &str) -> u64 {
        self.since
            .get(id)
            .map_or(0, |o| o.since.elapsed().as_millis() as u64)
    }

    /// The wills and expiries due now, as `State::due` would list them, looking only at
    /// the sessions one of whose moments has come.
    fn due(&self, state: &State) -> Vec<Event> {
        let now = Instant::now();
        let mut ids: Vec<&str> = self
            .deadlines
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| id.as_str())
            .collect();
        // A session whose will delay and expiry have both come is listed twice.
        ids.sort_unstable();
        ids.dedup();
        state.due_among(ids, |id| self.ms(id))
    }
}

/// When a majority of the voters, this leader included, had last accepted it as leader:
/// the leader's contact with its quorum. Refusals do not count: a leader resumed from
/// a pause hears at once from peers that have moved on to a new term.
pub(crate) fn quorum_contact(
    node: &Node,
    m: &openraft::RaftMetrics<u64, crate::types::NodeInfo>,
) -> Option<Instant> {
    let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
    let mut heard: Vec<Option<Instant>> = voters
        .iter()
        .map(|&id| match id == node.id {
            true => Some(Instant::now()),
            false => node.contacts.last_followed(id),
        })
        .collect();
    // Most recent first (None, never heard, last): the majority-th is the quorum's.
    heard.sort_by(|a, b| b.cmp(a));
    heard.get(voters.len() / 2).copied().flatten()
}

/// The MQTT address of a member that answered us within `within` (so probably on the
/// majority's side), for clients sent away from a cut-off node; None if there is none,
/// or it listens on a wildcard address a client cannot dial.
fn server_reference(
    node: &Node,
    m: &openraft::RaftMetrics<u64, crate::types::NodeInfo>,
    within: Duration,
) -> Option<String> {
    m.membership_config
        .membership()
        .nodes()
        .filter(|(id, _)| **id != node.id)
        .filter(|(id, _)| {
            node.contacts
                .last(**id)
                .is_some_and(|t| t.elapsed() < within)
        })
        .map(|(_, info)| info.mqtt_addr.clone())
        .find(|addr| {
            addr.parse::<std::net::SocketAddr>()
                .map_or(true, |a| !a.ip().is_unspecified())
        })
}

/// A due will: its session `(client_id, epoch)`, the message and the client's username.
type DueWill = (String, u64, StoredMessage, Option<String>);

/// Publishes the due wills (the leader does), each at most once per commit timeout:
/// the commit of its publication takes it from the session, so a second try, or
/// another leader's, finds it gone.
fn fire_wills(node: &Arc<Node>, wills: Vec<DueWill>, firing: &mut HashMap<(String, u64), Instant>) {
    firing.retain(|_, at| at.elapsed() < 2 * COMMIT_TIMEOUT);
    let Some(engine) = node.engine() else {
        return;
    };
    for (client_id, epoch, message, username) in wills {
        let key = (client_id, epoch);
        if firing.contains_key(&key) {
            continue;
        }
        let committed = engine.publish_will(&key.0, key.1, message, username);
        firing.insert(key.clone(), Instant::now());
        let node = node.clone();
        tokio::spawn(async move {
            if committed.await.is_ok() {
                inc(&node.counters.wills_published);
                node.record(Kind::WillPublished {
                    client_id: key.0.clone(),
                });
            }
        });
    }
}

/// Commits the leader's events as the leader, in one entry, never through another
/// node: decided by a leader that may have lost its majority, they must not be
/// committed by the next one, which decides for itself.
async fn commit_all(node: &Arc<Node>, events: Vec<Event>) {
    if events.is_empty() {
        return;
    }
    let cmd = Cmd {
        node: node.id,
        boot: 0,
        seq: 0,
        events: Arc::new(events.clone()),
    };
    let outcomes = match tokio::time::timeout(COMMIT_TIMEOUT, node.leader_write(cmd)).await {
        Ok(Ok((_, outcomes))) => outcomes,
        Ok(Err(e)) => {
            tracing::debug!("failure handling not committed (retried next tick): {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("failure handling not committed within the timeout (no quorum?)");
            return;
        }
    };
    let c = &node.counters;
    for (event, outcome) in events.iter().zip(outcomes) {
        match (event, outcome) {
            (Event::NodeDown { node: id, .. }, Outcome::Done) => {
                inc(&c.nodes_down);
                node.record(Kind::NodeDown { node: *id });
            }
            (Event::NodeUp { node: id }, Outcome::Done) => {
                inc(&c.nodes_up);
                node.record(Kind::NodeUp { node: *id });
            }
            (Event::Expire { client_id, .. }, Outcome::Done) => {
                inc(&c.sessions_expired);
                node.record(Kind::SessionExpired {
                    client_id: client_id.clone(),
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::App;
    use broker_core::replicated::StoredWill;
    use persistence::Apply;

    fn claim(id: &str, expiry_secs: u32, will_delay_secs: Option<u32>) -> Event {
        Event::Claim {
            node: 1,
            client_id: id.into(),
            clean_start: false,
            expiry_secs,
            username: None,
            will: will_delay_secs.map(|delay_secs| StoredWill {
                message: StoredMessage {
                    topic: "w".into(),
                    payload: b"gone".as_slice().to_vec().into(),
                    qos: 0,
                    retain: false,
                    properties: Default::default(),
                    expires_at_ms: None,
                    publisher: None,
                },
                delay_secs,
            }),
        }
    }

    fn apply(app: &mut App, events: Vec<Event>) {
        let cmd = Cmd {
            node: 1,
            boot: 0,
            seq: 0,
            events: Arc::new(events),
        };
        app.apply(&cmd);
    }

    fn epoch(app: &App, id: &str) -> u64 {
        app.state.sessions[id].epoch
    }

    fn release(app: &App, id: &str, expiry_secs: u32) -> Event {
        Event::ReleaseWithWill {
            client_id: id.into(),
            epoch: epoch(app, id),
            expiry_secs,
            at_ms: 1_000,
        }
    }

    /// The watch looks only at the sessions applied events touched, and finds what a
    /// walk of every session (`State::due`, with the same offline times) finds.
    #[test]
    fn due_from_the_touched_sessions_matches_a_full_walk() {
        let mut app = App::default();
        let mut offline = OfflineSince::default();
        apply(
            &mut app,
            vec![
                claim("keep", u32::MAX, None),
                claim("zero", 0, None),
                claim("will", 60, Some(0)),
            ],
        );
        offline.observe(&app.state, app.touched.take());
        assert!(offline.due(&app.state).is_empty(), "all connected");
        assert!(offline.since.is_empty());

        let gone = vec![
            release(&app, "keep", u32::MAX),
            release(&app, "zero", 0),
            release(&app, "will", 60),
        ];
        apply(&mut app, gone);
        let touched = app.touched.take();
        assert!(!touched.all && touched.ids.len() == 3, "{touched:?}");
        offline.observe(&app.state, touched);
        let due = offline.due(&app.state);
        assert_eq!(due, app.state.due(|id, _| offline.ms(id)));
        let (will_epoch, zero_epoch) = (epoch(&app, "will"), epoch(&app, "zero"));
        assert_eq!(
            due,
            vec![
                Event::FireWill {
                    client_id: "will".into(),
                    epoch: will_epoch
                },
                Event::Expire {
                    client_id: "zero".into(),
                    epoch: zero_epoch
                },
            ]
        );
        // A session with no expiry has no deadline: never looked at again.
        assert_eq!(offline.deadlines.len(), 3, "{:?}", offline.deadlines);

        // Applied, they are gone from the watch; reconnected, "keep" is too.
        apply(&mut app, due);
        apply(&mut app, vec![claim("keep", u32::MAX, None)]);
        offline.observe(&app.state, app.touched.take());
        assert!(offline.due(&app.state).is_empty());
        assert_eq!(offline.since.keys().collect::<Vec<_>>(), ["will"]);
        assert_eq!(
            offline.deadlines.len(),
            1,
            "only the will's session's expiry"
        );

        // A node declared down: every session is looked at again.
        apply(
            &mut app,
            vec![Event::NodeDown {
                node: 1,
                at_ms: 2_000,
            }],
        );
        let touched = app.touched.take();
        assert!(touched.all);
        offline.observe(&app.state, touched);
        let mut ids: Vec<&str> = offline.since.keys().map(String::as_str).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["keep", "will"]);
    }
}
