//! The publisher that fills the offline sessions' queues: M QoS 1 messages to a topic
//! every session's filter matches, a bounded window of them unacknowledged, each PUBACK
//! timed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bytes::BytesMut;
use hdrhistogram::Histogram;
use mqttbytes::v4::{self, Packet};
use mqttbytes::QoS;
use tokio::time::timeout_at;

use crate::client::{codec, Client, READ_CHUNK};
use crate::payload::Header;

/// Bytes per message, the sequence header included.
const PAYLOAD: usize = 64;

pub struct Spec {
    pub broker: SocketAddr,
    pub client_id: String,
    pub topic: String,
    pub messages: u32,
    /// Unacknowledged publishes at a time.
    pub inflight: usize,
    /// Bound on the whole phase, connect to last PUBACK.
    pub limit: Duration,
}

/// What the publisher got done.
pub struct Outcome {
    pub published: u32,
    pub acked: u32,
    pub elapsed: Duration,
    /// Microseconds from writing a PUBLISH to its PUBACK.
    pub puback_us: Histogram<u64>,
    pub error: Option<String>,
}

pub async fn publish(spec: &Spec) -> Outcome {
    let mut out = Outcome {
        published: 0,
        acked: 0,
        elapsed: Duration::ZERO,
        puback_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
        error: None,
    };
    let started = Instant::now();
    if let Err(e) = run(spec, &mut out, started + spec.limit).await {
        out.error = Some(format!("{e:#}"));
    }
    out.elapsed = started.elapsed();
    out
}

async fn run(spec: &Spec, out: &mut Outcome, deadline: Instant) -> anyhow::Result<()> {
    let mut client = timeout_at(
        deadline.into(),
        Client::connect(spec.broker, &spec.client_id, None),
    )
    .await
    .map_err(|_| anyhow!("connect: timed out"))??;
    let epoch = Instant::now();
    // Send time of each packet id in flight.
    let mut pending: HashMap<u16, Instant> = HashMap::new();
    while out.acked < spec.messages {
        while out.published < spec.messages && pending.len() < spec.inflight {
            let seq = out.published;
            let pkid = (seq % u32::from(u16::MAX)) as u16 + 1;
            let mut payload = BytesMut::with_capacity(PAYLOAD);
            let header = Header {
                publisher: 0,
                seq,
                sent_ns: epoch.elapsed().as_nanos() as u64,
            };
            header.write(&mut payload, PAYLOAD);
            let mut publish = v4::Publish::new(&spec.topic, QoS::AtLeastOnce, payload.freeze());
            publish.pkid = pkid;
            publish.write(&mut client.wbuf).map_err(codec)?;
            pending.insert(pkid, Instant::now());
            out.published += 1;
        }
        client.flush().await?;
        let read = timeout_at(deadline.into(), client.read(READ_CHUNK)).await;
        let Ok(read) = read else {
            bail!(
                "{} of {} publishes unacknowledged at the time limit",
                spec.messages - out.acked,
                spec.messages
            );
        };
        if read? == 0 {
            bail!("the broker closed the connection");
        }
        while let Some(packet) = client.next_packet()? {
            if let Packet::PubAck(ack) = packet {
                if let Some(sent) = pending.remove(&ack.pkid) {
                    out.acked += 1;
                    out.puback_us
                        .saturating_record(sent.elapsed().as_micros() as u64);
                }
            }
        }
    }
    client.disconnect().await;
    Ok(())
}
