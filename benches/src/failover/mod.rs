//! `loadgen failover`: how long the persistent subscribers of a cluster node take to be
//! served again by another node once that node is killed.
//!
//! Subscribers (clean session = 0, QoS 1) connect to the victim; one publisher on a
//! survivor publishes numbered QoS 1 messages at a steady pace. Once every subscriber
//! receives, we SIGKILL the victim ourselves (T0, on the same clock as every other
//! timestamp). Each subscriber reconnects at once, round-robin over the survivors, until
//! a CONNACK; it has resumed when its first message after that arrives. The failover
//! time is T(last subscriber resumed) − T0. Then the publisher stops, and every message
//! it had acknowledged must reach every subscriber.
//!
//! - `publisher`: the paced QoS 1 publisher and what it got acknowledged.
//! - `subscriber`: the reconnecting subscriber and what it saw, and when.
//! - `report`: the JSON line and the stderr table.

mod publisher;
mod report;
mod subscriber;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use mqttbytes::QoS;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

use crate::client::{loopback_source, Client};
use crate::procfs;
use crate::tracker::SeqSet;
pub use report::Report;
use subscriber::Progress;

/// How often the run looks at the clients' progress while it waits (each client keeps
/// its own timestamps: this only paces the run).
const POLL: Duration = Duration::from_millis(10);
/// Subscribers connecting to the victim at once before the kill (set-up, not measured):
/// enough to keep the broker busy, few enough not to overflow its listen backlog.
const SETUP_IN_FLIGHT: usize = 500;
/// Bound on the first message reaching every subscriber after the warm-up: longer means
/// the subscriptions never reached the publisher's node.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// loadgen failover: SIGKILL a cluster node and time how long its persistent
/// subscribers take to resume on the other nodes.
///
/// SUBSCRIBERS clients (clean session = 0, QoS 1 subscription) connect to --victim; one
/// publisher on the first --survivor publishes QoS 1 every INTERVAL ms. After --warmup,
/// once every subscriber has received, loadgen sends SIGKILL to --kill-pid (T0). Each
/// subscriber then reconnects at once, round-robin over the survivors (subscriber j
/// starts with survivor j), retrying a refused or timed-out connect, until a CONNACK;
/// "session present" must be set (else a violation is counted and it subscribes again).
/// It has resumed when its first message after that CONNACK arrives.
///
/// Reports failover_ms = T(last subscriber resumed) - T0, the median subscriber, and the
/// messages acknowledged to the publisher that some subscriber never received (lost).
/// resume_ms = T0 to the last CONNACK with session present (p50/p99 over subscribers),
/// the reconnect storm's length; with --survivor-pid, the peak RSS and the CPU seconds
/// of those processes from T0 until every subscriber resumed (/proc, every 100 ms).
/// A table goes to stderr, one JSON line to stdout. Exit status 1 on a setup failure,
/// a subscriber not resumed, a loss or a session-present violation; 2 for invalid flags.
#[derive(Debug, Parser)]
#[command(
    name = "loadgen failover",
    bin_name = "loadgen failover",
    verbatim_doc_comment
)]
pub struct FailoverCli {
    /// MQTT address of the node to kill; the subscribers start there.
    #[arg(long, value_name = "HOST:PORT")]
    pub victim: String,

    /// MQTT address of a node that stays up; repeat it. The publisher uses the first.
    #[arg(long = "survivor", value_name = "HOST:PORT", required = true)]
    pub survivors: Vec<String>,

    /// Process id of the victim node, sent SIGKILL at T0.
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(i32).range(2..))]
    pub kill_pid: i32,

    /// Free text recorded in the report, e.g. `leader` or `follower`.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub kind: String,

    /// Persistent subscribers on the victim. Each holds one descriptor here and one in
    /// the victim, then in a survivor: the open-files limit bounds it.
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=60_000))]
    pub subscribers: u32,

    /// Process id of a surviving node, whose peak RSS and CPU time during the
    /// reconnect storm are reported; repeat it.
    #[arg(long = "survivor-pid", value_name = "PID")]
    pub survivor_pids: Vec<u32>,

    /// Milliseconds between two publishes.
    #[arg(long, value_name = "MS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub interval_ms: u64,

    /// Seconds of publishing before the kill.
    #[arg(long, value_name = "SECS", default_value_t = 2.0, value_parser = secs)]
    pub warmup: f64,

    /// Seconds of publishing after the last subscriber resumed.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = secs)]
    pub tail: f64,

    /// Seconds one reconnect attempt may take (TCP connect and CONNACK). raftmq holds a
    /// CONNECT for up to 5 s while the cluster has no leader, then refuses it; waiting
    /// longer than that keeps this timeout from shaping the measurement.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = secs)]
    pub connect_timeout: f64,

    /// Seconds after T0 within which every subscriber must have resumed.
    #[arg(long, value_name = "SECS", default_value_t = 60.0, value_parser = secs)]
    pub resume_timeout: f64,

    /// Seconds, once publishing stops, for the last acknowledgements and deliveries.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = secs)]
    pub drain_timeout: f64,
}

/// A duration in seconds: finite, not negative, at most an hour.
fn secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(secs) if (0.0..=3_600.0).contains(&secs) => Ok(secs),
        _ => Err("expected seconds between 0 and 3600".into()),
    }
}

/// Runs one failover measurement. Never fails: a failure is the report's `error`.
pub async fn run(cli: &FailoverCli) -> Report {
    let mut report = Report::new(cli);
    if let Err(e) = measure(cli, &mut report).await {
        report.error = Some(format!("{e:#}"));
    }
    report.judge();
    report
}

async fn measure(cli: &FailoverCli, report: &mut Report) -> anyhow::Result<()> {
    let victim = crate::resolve(std::slice::from_ref(&cli.victim)).await?[0];
    let survivors = crate::resolve(&cli.survivors).await?;
    let run = crate::pubsub::run_id();
    let topic = format!("failover/{run}");
    let subs = connect_subscribers(cli, victim, &run, &topic).await?;
    let publisher = Client::connect(survivors[0], &format!("fo-{run}-p"), None)
        .await
        .context("publisher")?;

    let (stop, stopped) = watch::channel(false);
    let (stop_publishing, publishing_stopped) = watch::channel(false);
    let progress: Vec<_> = (0..subs.len())
        .map(|_| Arc::new(Mutex::new(Progress::default())))
        .collect();
    let sub_tasks: Vec<_> = (subs.into_iter().enumerate())
        .map(|(j, client)| {
            let spec = subscriber::Spec {
                index: j,
                client_id: client_id(&run, j),
                topic: topic.clone(),
                survivors: survivors.clone(),
                connect_timeout: Duration::from_secs_f64(cli.connect_timeout),
            };
            let (progress, stopped) = (progress[j].clone(), stopped.clone());
            tokio::spawn(subscriber::run(spec, client, progress, stopped))
        })
        .collect();
    let acks = Arc::new(Mutex::new(publisher::Acks::default()));
    let spec = publisher::Spec {
        topic,
        interval: Duration::from_millis(cli.interval_ms),
        drain: Duration::from_secs_f64(cli.drain_timeout),
    };
    let mut pub_task = tokio::spawn(publisher::run(
        spec,
        publisher,
        acks.clone(),
        publishing_stopped,
    ));

    let result = failover(cli, report, &progress, &acks, &pub_task).await;
    let _ = stop_publishing.send(true);
    let drain = Duration::from_secs_f64(cli.drain_timeout);
    if result.is_ok() {
        // The publisher waits out its own acknowledgements, bounded by the drain time.
        let _ = timeout(drain + Duration::from_secs(5), &mut pub_task).await;
        wait_delivered(&progress, &acks, report.counted_from_seq, drain).await;
    }
    let _ = stop.send(true);
    for task in sub_tasks {
        let _ = timeout(Duration::from_secs(5), task).await;
    }
    pub_task.abort();
    report.tally(&progress, &acks);
    result
}

/// Connects every subscriber to the victim, fresh sessions subscribed at QoS 1.
async fn connect_subscribers(
    cli: &FailoverCli,
    victim: SocketAddr,
    run: &str,
    topic: &str,
) -> anyhow::Result<Vec<Client>> {
    let gate = Arc::new(tokio::sync::Semaphore::new(SETUP_IN_FLIGHT));
    let tasks: Vec<JoinHandle<anyhow::Result<Client>>> = (0..cli.subscribers as usize)
        .map(|j| {
            let (id, filters) = (client_id(run, j), vec![topic.to_string()]);
            let gate = gate.clone();
            tokio::spawn(async move {
                let _turn = gate.acquire().await?;
                let mut client =
                    Client::connect_session(victim, &id, loopback_source(victim, j), false).await?;
                if client.session_present {
                    bail!("{victim} resumed a session for the new client id {id}");
                }
                client.subscribe(&filters, QoS::AtLeastOnce).await?;
                Ok(client)
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(tasks.len());
    for task in tasks {
        clients.push(task.await?.context("subscriber on the victim")?);
    }
    Ok(clients)
}

fn client_id(run: &str, j: usize) -> String {
    format!("fo-{run}-s{j}")
}

/// Warm-up, the kill, and the wait until every subscriber has resumed plus the tail.
async fn failover(
    cli: &FailoverCli,
    report: &mut Report,
    progress: &[Arc<Mutex<Progress>>],
    acks: &Mutex<publisher::Acks>,
    publisher: &JoinHandle<()>,
) -> anyhow::Result<()> {
    let warm = Instant::now() + Duration::from_secs_f64(cli.warmup);
    let first_by = warm + FIRST_MESSAGE_TIMEOUT;
    let firsts = loop {
        check_alive(publisher, acks)?;
        let firsts: Option<Vec<u32>> = progress.iter().map(|p| lock(p).first_seq).collect();
        match firsts {
            Some(f) if Instant::now() >= warm => break f,
            _ if Instant::now() >= first_by => bail!(
                "a subscriber received nothing within {}s: the subscription did not reach \
                 the publisher's node",
                (first_by - warm).as_secs()
            ),
            _ => sleep(POLL).await,
        }
    };
    if let Some(j) = progress.iter().position(|p| lock(p).lost_at.is_some()) {
        bail!("subscriber {j} lost its connection before the kill");
    }
    // Below this, a subscription may not have reached the publisher's node yet.
    report.counted_from_seq = firsts.into_iter().max().unwrap_or(0);

    // The generator samples itself too: on a small machine it may be what limits the
    // storm, not the survivors.
    let mut watched = cli.survivor_pids.clone();
    watched.push(std::process::id());
    let sampler = procfs::ProcSampler::start(&watched);
    let t0 = kill(cli.kill_pid)?;
    report.t0 = Some(t0);
    report.killed_at_unix_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .ok();
    let resume_by = t0 + Duration::from_secs_f64(cli.resume_timeout);
    let resumed = async {
        while !progress.iter().all(|p| lock(p).resumed_at.is_some()) {
            check_alive(publisher, acks)?;
            if Instant::now() >= resume_by {
                bail!(
                    "not every subscriber resumed within {}s of the kill",
                    cli.resume_timeout
                );
            }
            sleep(POLL).await;
        }
        Ok(())
    }
    .await;
    let mut used = sampler.finish();
    report.loadgen_use = used.pop();
    report.survivor_use = used;
    resumed?;
    sleep(Duration::from_secs_f64(cli.tail)).await;
    check_alive(publisher, acks)
}

/// Sends SIGKILL to `pid` and returns when.
fn kill(pid: i32) -> anyhow::Result<Instant> {
    let t0 = Instant::now();
    // SAFETY: kill(2) takes plain integers; the flag's parser keeps pid above 1, so it
    // names one process, never a group or every process.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        return Err(anyhow!(std::io::Error::last_os_error())).context(format!("SIGKILL {pid}"));
    }
    Ok(t0)
}

/// The publisher ends early only on a failure, which ends the run.
fn check_alive(publisher: &JoinHandle<()>, acks: &Mutex<publisher::Acks>) -> anyhow::Result<()> {
    if publisher.is_finished() {
        let error = lock(acks).error.clone();
        bail!("publisher: {}", error.as_deref().unwrap_or("ended early"));
    }
    Ok(())
}

/// Waits until every subscriber has every acknowledged message from `from` on, or
/// `limit` passes.
async fn wait_delivered(
    progress: &[Arc<Mutex<Progress>>],
    acks: &Mutex<publisher::Acks>,
    from: u32,
    limit: Duration,
) {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        let acked = lock(acks).acked.clone();
        if progress
            .iter()
            .all(|p| missing(&acked, &lock(p).seen, from) == 0)
        {
            return;
        }
        sleep(Duration::from_millis(10)).await;
    }
}

/// Acknowledged messages from `from` on that are not in `seen`.
fn missing(acked: &SeqSet, seen: &SeqSet, from: u32) -> u64 {
    (from..acked.end())
        .filter(|&seq| acked.contains(seq) && !seen.contains(seq))
        .count() as u64
}

/// Resolves once `stop` turns true (or its sender goes). Holds no borrow of the
/// channel, so a `select!` arm on it does not keep the future from being `Send`.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The state is only ever held for a few statements, so a poisoned lock means a panic
/// elsewhere already failed the run; its data is still good to report.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
