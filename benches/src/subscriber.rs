//! One subscribing client: decodes every frame of each read, records what arrived and
//! its latency, acknowledges QoS 1/2 deliveries in one write, and reports progress to
//! the publishers' windows. A slow subscriber reads only part of what is published.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use mqttbytes::v4::{self, Packet};
use mqttbytes::QoS;
use tokio::sync::watch;
use tokio::time::sleep;

use crate::client::{codec, Client, READ_CHUNK};
use crate::flow::Flow;
use crate::payload::Header;
use crate::tracker::Stream;

/// A slow subscriber consumes this fraction of what is published...
const SLOW_SHARE: u64 = 4;
/// ...but at least this many messages per second, so that a broker that pushes back on
/// publishers (and thereby slows them to our pace) does not end in a standstill.
const SLOW_FLOOR_PER_SEC: f64 = 1_000.0;
/// A slow subscriber reads in small steps so that it cannot overshoot its allowance much.
const SLOW_CHUNK: usize = 4 << 10;
const SLOW_NAP: Duration = Duration::from_millis(5);

pub struct Spec {
    pub index: usize,
    /// Its sink in the flow: its own, or its shared group's.
    pub sink: usize,
    pub publishers: usize,
    pub slow: bool,
}

pub struct Outcome {
    pub sink: usize,
    /// What arrived from each publisher.
    pub streams: Vec<Stream>,
    pub latency_us: Histogram<u64>,
    /// When the last new message arrived.
    pub last_delivery: Option<Instant>,
    pub error: Option<String>,
}

struct Subscriber {
    spec: Spec,
    client: Client,
    flow: Arc<Flow>,
    epoch: Instant,
    received: u64,
    /// New messages per publisher in the current read, and the highest position.
    batch: Vec<(u64, u64)>,
    out: Outcome,
}

/// Runs until `stop` turns true (or its sender goes).
pub async fn run(
    spec: Spec,
    client: Client,
    flow: Arc<Flow>,
    epoch: Instant,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let out = Outcome {
        sink: spec.sink,
        streams: vec![Stream::default(); spec.publishers],
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        last_delivery: None,
        error: None,
    };
    let mut s = Subscriber {
        batch: vec![(0, 0); spec.publishers],
        spec,
        client,
        flow,
        epoch,
        received: 0,
        out,
    };
    if let Err(e) = s.consume(&mut stop).await {
        s.out.error = Some(format!("subscriber {}: {e:#}", s.spec.index));
    }
    // A dead subscriber must not hold its publishers' windows shut; in a group, the
    // others still receive, so the group stays open.
    if s.out.error.is_some() && !s.flow.is_shared() {
        s.flow.close(s.spec.sink);
    }
    s.client.disconnect().await;
    s.out
}

impl Subscriber {
    /// Reads until told to stop. Only the read and the nap are raced against `stop`:
    /// cancelling a half-done write would leave a torn frame on the wire.
    async fn consume(&mut self, stop: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
        loop {
            let throttled = self.throttled();
            if throttled && self.received >= self.allowance() {
                tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => return Ok(()),
                    _ = sleep(SLOW_NAP) => continue,
                }
            }
            let limit = if throttled { SLOW_CHUNK } else { READ_CHUNK };
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return Ok(()),
                read = self.client.read(limit) => {
                    if read? == 0 {
                        bail!("the broker closed the connection");
                    }
                }
            }
            self.on_packets().await?;
        }
    }

    fn throttled(&self) -> bool {
        self.spec.slow && self.flow.publishing()
    }

    /// Messages a slow subscriber may have read by now.
    fn allowance(&self) -> u64 {
        let floor = self.epoch.elapsed().as_secs_f64() * SLOW_FLOOR_PER_SEC;
        (self.flow.total_sent() / SLOW_SHARE).max(floor as u64)
    }

    /// Handles every complete frame read so far, then acknowledges and reports progress.
    async fn on_packets(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let now_ns = now.duration_since(self.epoch).as_nanos() as u64;
        while let Some(packet) = self.client.next_packet()? {
            match packet {
                Packet::Publish(publish) => {
                    self.on_publish(&publish.payload, now_ns);
                    match publish.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => {
                            v4::PubAck::new(publish.pkid)
                                .write(&mut self.client.wbuf)
                                .map_err(codec)?;
                        }
                        QoS::ExactlyOnce => {
                            v4::PubRec::new(publish.pkid)
                                .write(&mut self.client.wbuf)
                                .map_err(codec)?;
                        }
                    }
                }
                Packet::PubRel(rel) => {
                    v4::PubComp::new(rel.pkid)
                        .write(&mut self.client.wbuf)
                        .map_err(codec)?;
                }
                _ => {}
            }
        }
        self.client.flush().await?;
        self.report_progress(now);
        Ok(())
    }

    fn on_publish(&mut self, payload: &[u8], now_ns: u64) {
        self.received += 1;
        let Some(header) = Header::read(payload) else {
            return;
        };
        let p = header.publisher as usize;
        let Some(stream) = self.out.streams.get_mut(p) else {
            return;
        };
        if stream.record(header.seq) {
            let (count, next) = &mut self.batch[p];
            *count += 1;
            *next = (*next).max(u64::from(header.seq) + 1);
        }
        let us = now_ns.saturating_sub(header.sent_ns) / 1_000;
        self.out.latency_us.saturating_record(us.max(1));
    }

    fn report_progress(&mut self, now: Instant) {
        for (p, (count, next)) in self.batch.iter_mut().enumerate() {
            if *count > 0 {
                self.flow.advance(p, self.spec.sink, *count, *next);
                self.out.last_delivery = Some(now);
                *count = 0;
            }
        }
    }
}
