//! One publishing client: sends numbered messages in batches, as the closed-loop window,
//! the MQTT in-flight window and the pace allow, then waits out its acknowledgements.
//! At QoS 1/2 it times each handshake, from the write of the PUBLISH to its PUBACK
//! (PUBCOMP at QoS 2).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::BytesMut;
use hdrhistogram::Histogram;
use mqttbytes::v4::{self, Packet};
use mqttbytes::QoS;
use tokio::time::sleep_until;

use crate::client::{codec, Client, READ_CHUNK};
use crate::flow::Flow;
use crate::payload::Header;
use crate::tracker::SeqSet;

/// Most messages encoded into one `write`.
const MAX_BATCH: u64 = 256;
/// The closed loop sends again once 1/REFILL_DIVISOR of the window is free.
const REFILL_DIVISOR: u64 = 8;
/// A full window with no subscriber progress for this long means its messages were lost
/// (QoS 0 drops, a dead subscriber): stop waiting for them rather than hang the run.
/// Waiting too little only loosens the loop for a moment; too long idles the publisher.
const STALL_AFTER: Duration = Duration::from_millis(200);
/// Marks a packet id with nothing in flight.
const FREE: u32 = u32::MAX;

pub struct Spec {
    pub id: u32,
    pub topic: String,
    pub qos: QoS,
    pub payload: usize,
    pub inflight: u16,
    /// Closed-loop window; `None` runs open loop.
    pub window: Option<u64>,
    /// Messages per second; `None` sends as fast as the windows allow.
    pub rate: Option<u64>,
}

/// When the load starts and stops; shared by every client of a run.
#[derive(Clone, Copy)]
pub struct Schedule {
    /// Payload timestamps count from here.
    pub epoch: Instant,
    pub deadline: Instant,
    /// Last moment to wait for acknowledgements and deliveries.
    pub drain_until: Instant,
}

pub struct Outcome {
    pub sent: u64,
    /// Sequence numbers whose handshake completed (PUBACK, or PUBCOMP for QoS 2).
    pub acked: SeqSet,
    /// Microseconds from writing each acknowledged PUBLISH to its PUBACK (PUBCOMP).
    pub ack_latency_us: Histogram<u64>,
    /// Times the window was forced open after `STALL_AFTER` without progress.
    pub stalls: u32,
    /// Still unacknowledged when the drain period ended.
    pub unacked: u64,
    pub error: Option<String>,
}

impl Default for Outcome {
    fn default() -> Outcome {
        Outcome {
            sent: 0,
            acked: SeqSet::default(),
            ack_latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            stalls: 0,
            unacked: 0,
            error: None,
        }
    }
}

struct Publisher {
    spec: Spec,
    client: Client,
    flow: Arc<Flow>,
    schedule: Schedule,
    publish: v4::Publish,
    /// Sequence number in flight under each packet id.
    pending: Vec<u32>,
    /// When the PUBLISH under each packet id was written, in ns since the epoch.
    pending_since_ns: Vec<u64>,
    inflight: u16,
    last_pkid: u16,
    /// Subscriber progress assumed despite the stall that ended the last wait.
    forgiven: u64,
    last_progress: (u64, Instant),
    out: Outcome,
}

pub async fn run(spec: Spec, client: Client, flow: Arc<Flow>, schedule: Schedule) -> Outcome {
    let publish = v4::Publish::new(spec.topic.clone(), spec.qos, Vec::new());
    let mut p = Publisher {
        spec,
        client,
        flow,
        schedule,
        publish,
        pending: vec![FREE; usize::from(u16::MAX) + 1],
        pending_since_ns: vec![0; usize::from(u16::MAX) + 1],
        inflight: 0,
        last_pkid: 0,
        forgiven: 0,
        last_progress: (0, schedule.epoch),
        out: Outcome::default(),
    };
    let result = async {
        p.load().await?;
        p.drain().await
    }
    .await;
    if let Err(e) = result {
        p.out.error = Some(format!("publisher {}: {e:#}", p.spec.id));
    }
    p.out.unacked = u64::from(p.inflight);
    p.client.disconnect().await;
    p.out
}

impl Publisher {
    async fn load(&mut self) -> anyhow::Result<()> {
        let flow = self.flow.clone();
        loop {
            if self.client.try_read()? > 0 {
                self.on_packets().await?;
            }
            let now = Instant::now();
            if now >= self.schedule.deadline {
                return Ok(());
            }
            let n = self.budget(now);
            if n > 0 {
                self.send(n).await?;
                continue;
            }
            let wake = self.wake_at(now);
            tokio::select! {
                read = self.client.read(READ_CHUNK) => {
                    if read? == 0 {
                        bail!("the broker closed the connection");
                    }
                    self.on_packets().await?;
                }
                _ = flow.notified(self.spec.id as usize), if self.spec.window.is_some() => {}
                _ = sleep_until(wake.into()) => {}
            }
        }
    }

    /// Waits for the acknowledgements still due, until the drain period ends.
    async fn drain(&mut self) -> anyhow::Result<()> {
        while self.inflight > 0 {
            tokio::select! {
                read = self.client.read(READ_CHUNK) => {
                    if read? == 0 {
                        bail!("the broker closed the connection");
                    }
                    self.on_packets().await?;
                }
                _ = sleep_until(self.schedule.drain_until.into()) => return Ok(()),
            }
        }
        Ok(())
    }

    /// How many messages may go now: the least of what the closed-loop window, the
    /// in-flight window and the pace leave.
    fn budget(&mut self, now: Instant) -> u64 {
        let sent = self.out.sent;
        let mut n = MAX_BATCH;
        if self.spec.qos != QoS::AtMostOnce {
            n = n.min(u64::from(self.spec.inflight - self.inflight));
        }
        if let Some(rate) = self.spec.rate {
            let due = now.duration_since(self.schedule.epoch).as_secs_f64() * rate as f64;
            n = n.min((due as u64).saturating_sub(sent));
        }
        if let Some(window) = self.spec.window {
            let reached = self.flow.slowest(self.spec.id as usize).max(self.forgiven);
            let mut room = window.saturating_sub(sent.saturating_sub(reached));
            // Refill in chunks: waking to send each single message would cost a syscall
            // per message and make the generator the bottleneck.
            let mut waiting = room < (window / REFILL_DIVISOR).max(1);
            if reached != self.last_progress.0 || !waiting {
                self.last_progress = (reached, now);
            } else if now.duration_since(self.last_progress.1) >= STALL_AFTER {
                self.on_stall(now);
                (room, waiting) = (window, false);
            }
            n = n.min(if waiting { 0 } else { room });
        }
        n
    }

    /// The window is (nearly) full and nobody made progress for `STALL_AFTER`.
    fn on_stall(&mut self, now: Instant) {
        if self.out.stalls == 0 {
            eprintln!(
                "warning: publisher {}: no subscriber progress for {STALL_AFTER:?}; \
                 counting its unreceived messages as lost and going on",
                self.spec.id
            );
        }
        self.out.stalls += 1;
        self.forgiven = self.out.sent;
        self.last_progress = (self.forgiven, now);
    }

    /// When to look again if nothing arrives: the next paced send, the next stall check
    /// or the end of the load, whichever is first.
    fn wake_at(&self, now: Instant) -> Instant {
        let mut wake = self.schedule.deadline;
        if let Some(rate) = self.spec.rate {
            let next = Duration::from_secs_f64((self.out.sent + 1) as f64 / rate as f64);
            wake = wake.min(self.schedule.epoch + next);
        }
        if self.spec.window.is_some() {
            wake = wake.min(self.last_progress.1 + STALL_AFTER);
        }
        wake.max(now)
    }

    /// Encodes `n` messages into one buffer and writes it.
    async fn send(&mut self, n: u64) -> anyhow::Result<()> {
        let len = self.spec.payload;
        let sent_ns = self.schedule.epoch.elapsed().as_nanos() as u64;
        let mut payloads = BytesMut::with_capacity(n as usize * len);
        for seq in self.out.sent..self.out.sent + n {
            let header = Header {
                publisher: self.spec.id,
                seq: seq as u32,
                sent_ns,
            };
            header.write(&mut payloads, len);
        }
        let mut payloads = payloads.freeze();
        for seq in self.out.sent..self.out.sent + n {
            self.publish.payload = payloads.split_to(len);
            if self.spec.qos != QoS::AtMostOnce {
                let pkid = self.next_pkid();
                self.pending[usize::from(pkid)] = seq as u32;
                self.pending_since_ns[usize::from(pkid)] = sent_ns;
                self.publish.pkid = pkid;
                self.inflight += 1;
            }
            self.publish.write(&mut self.client.wbuf).map_err(codec)?;
        }
        self.out.sent += n;
        self.flow.set_sent(self.spec.id as usize, self.out.sent);
        self.client.flush().await?;
        Ok(())
    }

    /// The next free packet id, cycling through 1..=65535; one never acknowledged is
    /// skipped rather than reused.
    fn next_pkid(&mut self) -> u16 {
        loop {
            self.last_pkid = self.last_pkid % u16::MAX + 1;
            if self.pending[usize::from(self.last_pkid)] == FREE {
                return self.last_pkid;
            }
        }
    }

    /// Handles every complete frame read so far, answering PUBRECs with PUBRELs.
    async fn on_packets(&mut self) -> anyhow::Result<()> {
        let now_ns = self.schedule.epoch.elapsed().as_nanos() as u64;
        while let Some(packet) = self.client.next_packet()? {
            match packet {
                Packet::PubAck(ack) => self.on_ack(ack.pkid, now_ns),
                Packet::PubRec(rec) => {
                    v4::PubRel::new(rec.pkid)
                        .write(&mut self.client.wbuf)
                        .map_err(codec)?;
                }
                Packet::PubComp(comp) => self.on_ack(comp.pkid, now_ns),
                _ => {}
            }
        }
        self.client.flush().await?;
        Ok(())
    }

    /// The handshake for the message under `pkid` is complete (PUBACK, or PUBCOMP for
    /// QoS 2: a PUBRECed message may be discarded if we vanish before releasing it).
    fn on_ack(&mut self, pkid: u16, now_ns: u64) {
        let slot = &mut self.pending[usize::from(pkid)];
        if *slot != FREE {
            self.out.acked.insert(*slot);
            let since = self.pending_since_ns[usize::from(pkid)];
            let us = now_ns.saturating_sub(since) / 1_000;
            self.out.ack_latency_us.saturating_record(us.max(1));
            *slot = FREE;
            self.inflight -= 1;
        }
    }
}
