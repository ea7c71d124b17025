//! The checker's clients: publishers, subscribers and will clients, each a task
//! that records what it sees in the shared [`Record`](super::Record).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Outcome, Seen, Shared, FILTERS, TICK};
use crate::support::codec::{self, Connect, Packet, Publish, Version};
use crate::support::raw::{Raw, Recv};
use crate::support::roaming::{self, Qos2Receiver, Roamer, CONNACK_WAIT};

/// How long a publisher waits for the answer to one PUBLISH before it tries another
/// node (a node without quorum answers 0x80 after about 5 s).
const ACK_WAIT: Duration = Duration::from_secs(10);
/// Bound on one message, resends and reconnects included.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(90);

/// A clean-session 5.0 client with a QoS 2 will on `will/<id>`; its connection is
/// returned open.
pub(super) async fn will_client(id: &str, addr: SocketAddr) -> Raw {
    let mut connect = Connect::new(Version::V5, id);
    connect.keep_alive = 0;
    connect.will = Some(roaming::will(&format!("will/{id}"), id.as_bytes()));
    match Raw::try_connect(addr, &connect, CONNACK_WAIT).await {
        Ok((raw, Packet::Connack { code: 0, .. })) => raw,
        other => panic!("will client {id}: {:?}", other.map(|(_, p)| p)),
    }
}

/// Publishes `<id>:1`, `<id>:2`, … until told to stop or `max`, recording each
/// message's outcome; stops early if the client can reach no node.
pub(super) async fn publish_loop(
    mut r: Roamer,
    qos: u8,
    pace: Duration,
    max: u32,
    shared: Arc<Shared>,
) {
    for seq in 1..=max {
        if shared.stop_publishing.load(Ordering::Relaxed) {
            break;
        }
        shared.leave_avoided(&mut r);
        let payload = format!("{}:{seq}", r.id);
        let result = publish_one(&mut r, qos, payload.as_bytes(), &shared).await;
        let gave_up = {
            let mut rec = shared.rec();
            let outcomes = &mut rec.sent.get_mut(&r.id).expect("publisher").1;
            outcomes.push(*result.as_ref().unwrap_or(&Outcome::Unknown));
            result.err().map(|e| rec.errors.push(e)).is_some()
        };
        if gave_up {
            break;
        }
        tokio::time::sleep(pace).await;
    }
    shared.note_roamer(&r);
}

/// Publishes one message until it is acknowledged or refused, following the session
/// to another node when the connection fails.
async fn publish_one(
    r: &mut Roamer,
    qos: u8,
    payload: &[u8],
    shared: &Arc<Shared>,
) -> Result<Outcome, String> {
    let deadline = Instant::now() + MESSAGE_TIMEOUT;
    let mut publish = Publish::new(&format!("ck/{}", r.id), qos, payload);
    publish.pkid = r.pkid();
    let pkid = publish.pkid;
    let mut released = false;
    while Instant::now() < deadline {
        if !r.is_connected() {
            match r.connect().await {
                Ok(true) => {}
                // A new session holds nothing in flight: the message is gone.
                Ok(false) => return Ok(Outcome::Unknown),
                Err(e) => return Err(e),
            }
        }
        if released {
            r.send(&codec::pubrel(r.version, pkid)).await;
        } else {
            r.send(&publish.encode(r.version)).await;
        }
        publish.dup = true;
        let answer_by = Instant::now() + ACK_WAIT;
        loop {
            // Short reads, to notice a node the clients are told to leave.
            let wait = answer_by
                .saturating_duration_since(Instant::now())
                .min(TICK);
            match r.recv(wait).await {
                Recv::Packet(Packet::Puback(a)) if a.pkid == pkid => {
                    return Ok(finished(r, a.reason, shared));
                }
                // Whatever its reason: 0x92 (packet id not found) after a resent PUBREL
                // means the release was done before; the PUBREC had the message.
                Recv::Packet(Packet::Pubcomp(a)) if a.pkid == pkid => return Ok(Outcome::Acked),
                Recv::Packet(Packet::Pubrec(a)) if a.pkid == pkid => {
                    if a.reason >= 0x80 {
                        return Ok(finished(r, a.reason, shared));
                    }
                    released = true;
                    r.send(&codec::pubrel(r.version, pkid)).await;
                }
                Recv::Packet(_) => {}
                Recv::Timeout if Instant::now() < answer_by && !shared.leave_avoided(r) => {}
                Recv::Timeout => {
                    let sent = if released { "PUBREL" } else { "PUBLISH" };
                    if let Some(conn) = r.abandon() {
                        shared.watch(format!("{} (no answer to {sent})", r.id), conn);
                    }
                    break;
                }
                Recv::Closed => {
                    r.lost();
                    break;
                }
            }
        }
    }
    Ok(Outcome::Unknown)
}

/// The final answer to a message: acknowledged, or refused, in which case this node
/// cannot commit now and the publisher moves to another one.
fn finished(r: &mut Roamer, reason: u8, shared: &Arc<Shared>) -> Outcome {
    if reason < 0x80 {
        return Outcome::Acked;
    }
    if let Some(conn) = r.abandon() {
        shared.watch(format!("{} (refused {reason:#x})", r.id), conn);
    }
    Outcome::Refused(reason)
}

/// Receives and acknowledges until told to stop, following the session to another
/// node when the connection ends; an offline subscriber first waits to be woken.
pub(super) async fn subscribe_loop(mut r: Roamer, offline: bool, shared: Arc<Shared>) {
    let mut qos2 = Qos2Receiver::default();
    if offline {
        while !shared.wake_offline.load(Ordering::Relaxed) {
            tokio::time::sleep(TICK).await;
        }
    }
    while !shared.stop_subscribers.load(Ordering::Relaxed) {
        shared.leave_avoided(&mut r);
        if !r.is_connected() {
            match r.connect().await {
                Ok(true) => {}
                Ok(false) => {
                    // Counted as a lost session; subscribe again to keep checking.
                    qos2.reset();
                    if !r.subscribe(FILTERS).await {
                        r.lost();
                        continue;
                    }
                }
                Err(e) => {
                    shared.rec().errors.push(e);
                    break;
                }
            }
        }
        match r.recv(TICK).await {
            Recv::Packet(p) => on_packet(&mut r, &mut qos2, p, &shared).await,
            Recv::Timeout => {}
            Recv::Closed => r.lost(),
        }
    }
    shared.note_roamer(&r);
}

async fn on_packet(r: &mut Roamer, qos2: &mut Qos2Receiver, p: Packet, shared: &Shared) {
    match p {
        Packet::Publish(p) => {
            let new = p.qos < 2 || qos2.on_publish(p.pkid);
            {
                let mut rec = shared.rec();
                let seen = rec.seen.get_mut(&r.id).expect("subscriber");
                match new {
                    true => record(seen, &p),
                    false => seen.qos2_resends += 1,
                }
            }
            match p.qos {
                1 => r.send(&codec::puback(r.version, p.pkid)).await,
                2 => r.send(&codec::pubrec(r.version, p.pkid)).await,
                _ => {}
            }
        }
        Packet::Pubrel(a) => {
            qos2.on_pubrel(a.pkid);
            r.send(&codec::pubcomp(r.version, a.pkid)).await;
        }
        _ => {}
    }
}

/// Counts one delivery: `ck/<publisher>` with `<publisher>:<seq>`, or `will/<id>`.
fn record(seen: &mut Seen, p: &Publish) {
    let topic = p.topic_str();
    let payload = String::from_utf8_lossy(&p.payload).into_owned();
    if let Some(id) = topic.strip_prefix("will/") {
        *seen.wills.entry(id.to_string()).or_default() += 1;
        return;
    }
    let parsed = payload
        .rsplit_once(':')
        .and_then(|(id, seq)| Some((id.to_string(), seq.parse::<u32>().ok()?)));
    let Some((id, seq)) = parsed.filter(|(id, _)| topic == format!("ck/{id}")) else {
        seen.strays.push(format!("{topic}: {payload}"));
        return;
    };
    let n = seen.count.entry((id.clone(), seq)).or_default();
    *n += 1;
    if *n == 1 {
        seen.first.entry(id).or_default().push(seq);
        let now = Instant::now();
        if let Some(last) = seen.last_new.replace(now) {
            seen.worst_gap = seen.worst_gap.max(now - last);
        }
    }
}
