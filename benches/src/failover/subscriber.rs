//! One persistent subscriber: reads and acknowledges until its connection is lost, then
//! reconnects at once to the survivors in turn, and notes when it was served again.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use mqttbytes::v4::{self, Packet};
use mqttbytes::QoS;
use tokio::sync::watch;
use tokio::time::{sleep, timeout};

use super::{lock, stopped};
use crate::client::{codec, loopback_source, Client};
use crate::payload::Header;
use crate::tracker::SeqSet;

/// Read size: a subscriber gets a few small messages at a time; thousands of them
/// reading 256 KiB each would cost the generator more than the brokers.
const READ_CHUNK: usize = 8 << 10;

/// Pause after a failed attempt before the next survivor: a refusal can come back at
/// once, and a tight loop of them would only load the nodes that are electing.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

pub struct Spec {
    pub index: usize,
    pub client_id: String,
    pub topic: String,
    pub survivors: Vec<SocketAddr>,
    pub connect_timeout: Duration,
}

/// What the subscriber saw and when; shared with the run, which polls it.
#[derive(Debug, Default)]
pub struct Progress {
    pub seen: SeqSet,
    /// The first sequence number received at all.
    pub first_seq: Option<u32>,
    pub duplicated: u64,
    /// The first connection loss.
    pub lost_at: Option<Instant>,
    /// The first CONNACK after it.
    pub connack_at: Option<Instant>,
    /// The first message after that CONNACK.
    pub resumed_at: Option<Instant>,
    pub resumed_on: Option<SocketAddr>,
    /// Connect attempts after the first loss, and the first of them to fail.
    pub attempts: u32,
    pub first_failure: Option<String>,
    /// Connections lost, the first included.
    pub disconnects: u32,
    /// CONNACKs after a loss without "session present".
    pub present_violations: u32,
}

/// Runs until `stop` turns true (or its sender goes).
pub async fn run(
    spec: Spec,
    mut client: Client,
    progress: Arc<Mutex<Progress>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut awaiting_resume = false;
    loop {
        let lost = consume(&mut client, &progress, &mut awaiting_resume, &mut stop).await;
        if !lost {
            client.disconnect().await;
            return;
        }
        // Closed before reconnecting: a storm of N clients holds N descriptors, not 2N.
        drop(client);
        {
            let mut p = lock(&progress);
            p.lost_at.get_or_insert_with(Instant::now);
            p.disconnects += 1;
        }
        match reconnect(&spec, &progress, &mut stop).await {
            Some((next, addr)) => {
                client = next;
                awaiting_resume = lock(&progress).resumed_at.is_none();
                if awaiting_resume {
                    lock(&progress).resumed_on = Some(addr);
                }
            }
            None => return,
        }
    }
}

/// Reads and acknowledges until told to stop (false) or the connection is lost (true).
async fn consume(
    client: &mut Client,
    progress: &Mutex<Progress>,
    awaiting_resume: &mut bool,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        // First what is already buffered: the read that brought the CONNACK may have
        // brought the resumed session's messages too, and the broker sends no more
        // until they are acknowledged.
        let now = Instant::now();
        if on_packets(client, progress, awaiting_resume, now)
            .await
            .is_err()
        {
            return true;
        }
        tokio::select! {
            _ = stopped(stop) => return false,
            read = client.read(READ_CHUNK) => match read {
                Ok(n) if n > 0 => {}
                _ => return true,
            },
        }
    }
}

/// Records every message read so far and acknowledges them in one write.
async fn on_packets(
    client: &mut Client,
    progress: &Mutex<Progress>,
    awaiting_resume: &mut bool,
    now: Instant,
) -> anyhow::Result<()> {
    while let Some(packet) = client.next_packet()? {
        let Packet::Publish(publish) = packet else {
            continue;
        };
        let header = Header::read(&publish.payload).ok_or_else(|| anyhow!("short payload"))?;
        {
            let mut p = lock(progress);
            p.first_seq.get_or_insert(header.seq);
            if !p.seen.insert(header.seq) {
                p.duplicated += 1;
            }
            if std::mem::take(awaiting_resume) {
                p.resumed_at = Some(now);
            }
        }
        if publish.qos == QoS::AtLeastOnce {
            v4::PubAck::new(publish.pkid)
                .write(&mut client.wbuf)
                .map_err(codec)?;
        }
    }
    client.flush().await
}

/// Tries the survivors in turn, starting with survivor `index`, until one answers
/// CONNACK (and SUBACK, when the session was not resumed). `None` when told to stop.
async fn reconnect(
    spec: &Spec,
    progress: &Mutex<Progress>,
    stop: &mut watch::Receiver<bool>,
) -> Option<(Client, SocketAddr)> {
    for attempt in 0usize.. {
        let addr = spec.survivors[(spec.index + attempt) % spec.survivors.len()];
        lock(progress).attempts += 1;
        let connect = timeout(
            spec.connect_timeout,
            Client::connect_session(
                addr,
                &spec.client_id,
                loopback_source(addr, spec.index),
                false,
            ),
        );
        let failure = tokio::select! {
            _ = stopped(stop) => return None,
            connected = connect => match connected {
                Ok(Ok(client)) => match resume(spec, client, progress).await {
                    Ok(client) => return Some((client, addr)),
                    Err(e) => format!("{e:#}"),
                },
                Ok(Err(e)) => format!("{e:#}"),
                Err(_) => format!("{addr}: no CONNACK within {:?}", spec.connect_timeout),
            },
        };
        lock(progress).first_failure.get_or_insert(failure);
        tokio::select! {
            _ = stopped(stop) => return None,
            _ = sleep(RETRY_PAUSE) => {}
        }
    }
    None
}

/// Notes the CONNACK; a session that was not resumed is a violation, and subscribing
/// again lets the run go on (what it missed then counts as lost).
async fn resume(
    spec: &Spec,
    mut client: Client,
    progress: &Mutex<Progress>,
) -> anyhow::Result<Client> {
    {
        let mut p = lock(progress);
        p.connack_at.get_or_insert_with(Instant::now);
        if !client.session_present {
            p.present_violations += 1;
        }
    }
    if !client.session_present {
        client
            .subscribe(std::slice::from_ref(&spec.topic), QoS::AtLeastOnce)
            .await?;
    }
    Ok(client)
}
