//! The paced QoS 1 publisher: one numbered message per interval, open loop (an election
//! that holds PUBACKs back does not slow it), then a wait for the acknowledgements due.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::BytesMut;
use mqttbytes::v4::{self, Packet};
use mqttbytes::QoS;
use tokio::sync::watch;
use tokio::time::sleep_until;

use super::{lock, stopped};
use crate::client::{codec, Client, READ_CHUNK};
use crate::payload::Header;
use crate::tracker::SeqSet;

/// Bytes per message, the sequence header included.
const PAYLOAD: usize = 64;

pub struct Spec {
    pub topic: String,
    pub interval: Duration,
    /// How long to wait for acknowledgements once told to stop publishing.
    pub drain: Duration,
}

/// What the broker acknowledged; shared with the run, which polls it.
#[derive(Debug, Default)]
pub struct Acks {
    pub sent: u64,
    pub acked: SeqSet,
    pub unacked: u64,
    /// The longest wait for a PUBACK, in ms.
    pub max_ack_ms: f64,
    pub error: Option<String>,
}

struct Publisher {
    spec: Spec,
    client: Client,
    acks: Arc<Mutex<Acks>>,
    epoch: Instant,
    /// Sequence number and send time under each packet id in flight.
    pending: HashMap<u16, (u32, Instant)>,
    next_seq: u32,
}

/// Publishes until `stop` turns true, then drains; a failure ends up in `acks.error`.
pub async fn run(
    spec: Spec,
    client: Client,
    acks: Arc<Mutex<Acks>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut p = Publisher {
        spec,
        client,
        acks,
        epoch: Instant::now(),
        pending: HashMap::new(),
        next_seq: 0,
    };
    let result = async {
        p.publish(&mut stop).await?;
        p.drain().await
    }
    .await;
    {
        let mut acks = lock(&p.acks);
        acks.unacked = p.pending.len() as u64;
        if let Err(e) = result {
            acks.error = Some(format!("{e:#}"));
        }
    }
    p.client.disconnect().await;
}

impl Publisher {
    async fn publish(&mut self, stop: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut next = Instant::now();
        loop {
            tokio::select! {
                _ = stopped(stop) => return Ok(()),
                read = self.client.read(READ_CHUNK) => self.on_read(read?).await?,
                _ = sleep_until(next.into()) => {
                    self.send_one().await?;
                    next += self.spec.interval;
                }
            }
        }
    }

    async fn drain(&mut self) -> anyhow::Result<()> {
        let until = Instant::now() + self.spec.drain;
        while !self.pending.is_empty() {
            tokio::select! {
                read = self.client.read(READ_CHUNK) => self.on_read(read?).await?,
                _ = sleep_until(until.into()) => return Ok(()),
            }
        }
        Ok(())
    }

    async fn send_one(&mut self) -> anyhow::Result<()> {
        let seq = self.next_seq;
        let pkid = (seq % u32::from(u16::MAX)) as u16 + 1;
        if self.pending.contains_key(&pkid) {
            bail!("65535 publishes unacknowledged");
        }
        let mut payload = BytesMut::with_capacity(PAYLOAD);
        let header = Header {
            publisher: 0,
            seq,
            sent_ns: self.epoch.elapsed().as_nanos() as u64,
        };
        header.write(&mut payload, PAYLOAD);
        let mut publish = v4::Publish::new(&self.spec.topic, QoS::AtLeastOnce, payload.freeze());
        publish.pkid = pkid;
        publish.write(&mut self.client.wbuf).map_err(codec)?;
        self.client.flush().await?;
        self.pending.insert(pkid, (seq, Instant::now()));
        self.next_seq += 1;
        lock(&self.acks).sent += 1;
        Ok(())
    }

    async fn on_read(&mut self, n: usize) -> anyhow::Result<()> {
        if n == 0 {
            bail!("the broker closed the connection");
        }
        while let Some(packet) = self.client.next_packet()? {
            if let Packet::PubAck(ack) = packet {
                if let Some((seq, since)) = self.pending.remove(&ack.pkid) {
                    let mut acks = lock(&self.acks);
                    acks.acked.insert(seq);
                    acks.max_ack_ms = acks.max_ack_ms.max(since.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        Ok(())
    }
}
