//! The `connections` scenario: open many idle clients as fast as bounded concurrency
//! allows, then measure what each one costs the broker in memory. `idle` opens fewer,
//! fewer at a time, and lets the broker settle longer, before (for its baseline) and
//! after, so that its reading is the cost of holding a connection rather than the
//! high-water mark of a storm of handshakes or the broker's own warm-up.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout_at};

use crate::cli::{Params, Scenario};
use crate::client::{loopback_source, Client};
use crate::procfs::{self, RssSampler};
use crate::report::{round, Connections, Report};

/// Handshakes in progress at once: enough to keep the broker busy, few enough not to
/// overflow its listen backlog.
const IN_FLIGHT: usize = 500;
/// Handshakes in progress at once for `idle`.
const IDLE_IN_FLIGHT: usize = 50;
/// Descriptors we keep for ourselves beyond the clients (runtime, stdio, /proc reads).
const FD_RESERVE: u64 = 100;
/// Longest the connect storm may take, whatever the broker does.
const CONNECT_PHASE: Duration = Duration::from_secs(60);
/// Time for the broker to finish settling the last connections before RSS is read.
const SETTLE: Duration = Duration::from_secs(1);
/// The same for `idle`: long enough for deferred frees and the allocator to catch up.
const IDLE_SETTLE: Duration = Duration::from_secs(2);

pub async fn run(
    params: &Params,
    brokers: &[SocketAddr],
    rss: Option<&RssSampler>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let Some(rss) = rss else {
        bail!(
            "{} needs --broker-pid to measure the broker's memory",
            params.name
        );
    };
    let target = capped_target(params.connections.unwrap_or(0), report);
    let (in_flight, settle) = match params.scenario {
        Scenario::Idle => (IDLE_IN_FLIGHT, IDLE_SETTLE),
        _ => (IN_FLIGHT, SETTLE),
    };
    // The broker's RSS right after it starts accepting may still be growing; `idle`
    // lets it settle and reads its baseline again just before the first connect.
    let baseline = match params.scenario {
        Scenario::Idle => {
            sleep(settle).await;
            rss.now()
        }
        _ => rss.idle(),
    };
    let kernel_before = procfs::kernel_socket_kib();
    let (cpu0, started) = (procfs::cpu_time(), Instant::now());
    let Storm {
        clients,
        failed,
        first_error,
    } = connect_storm(target, brokers, in_flight).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    // The connect storm is the load; holding idle clients costs us nothing.
    report.loadgen_cpu_pct = round(procfs::cpu_pct(cpu0, started), 1);
    let established = clients.len() as u32;
    report.connections = Some(Connections {
        target,
        established,
        failed,
        connects_per_sec: round(f64::from(established) / connect_secs.max(1e-9), 1),
    });

    sleep(settle).await;
    let connected_rss = rss.now();
    let kernel_held = procfs::kernel_socket_kib();
    let hold = Duration::from_secs_f64(params.duration_s).saturating_sub(settle);
    sleep(hold).await;
    if established > 0 {
        let grown = connected_rss.saturating_sub(baseline) as f64;
        report.rss_per_connection_kib = Some(round(grown / f64::from(established), 2));
        if let (Some(before), Some(held)) = (kernel_before, kernel_held) {
            let grown = held.saturating_sub(before) as f64;
            report.kernel_socket_kib_per_connection =
                Some(round(grown / f64::from(established), 2));
        }
    }
    report.elapsed_s = round(started.elapsed().as_secs_f64(), 3);
    drop(clients);
    if let Some(e) = first_error {
        eprintln!("warning: {failed} connections failed; the first: {e}");
        report.notes.push(format!("first failure: {e}"));
    }
    if established == 0 {
        bail!("no connection was established");
    }
    Ok(())
}

/// The clients of a connect storm, and what went wrong with the others.
struct Storm {
    clients: Vec<Client>,
    failed: u32,
    first_error: Option<String>,
}

/// Connects `target` clients, `in_flight` at a time, within `CONNECT_PHASE`.
async fn connect_storm(
    target: u32,
    brokers: &[SocketAddr],
    in_flight: usize,
) -> anyhow::Result<Storm> {
    let run = format!("{:x}", std::process::id());
    let phase_end = Instant::now() + CONNECT_PHASE;
    let mut storm = Storm {
        clients: Vec::with_capacity(target as usize),
        failed: 0,
        first_error: None,
    };
    let mut tasks = JoinSet::new();
    let mut next = 0u32;
    while next < target || !tasks.is_empty() {
        while next < target && tasks.len() < in_flight {
            let addr = brokers[next as usize % brokers.len()];
            let (id, bind) = (
                format!("lg-{run}-c{next}"),
                loopback_source(addr, next as usize),
            );
            tasks.spawn(async move { Client::connect(addr, &id, bind).await });
            next += 1;
        }
        let Ok(joined) = timeout_at(phase_end.into(), tasks.join_next()).await else {
            // Whatever has not connected by now counts as failed.
            storm.failed += (target - next) + tasks.len() as u32;
            let cut = format!("connect phase cut at {CONNECT_PHASE:?}");
            storm.first_error.get_or_insert(cut);
            tasks.abort_all();
            break;
        };
        match joined.expect("tasks is not empty") {
            Ok(Ok(client)) => storm.clients.push(client),
            Ok(Err(e)) => {
                storm.failed += 1;
                storm.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(e) => bail!("connect task: {e}"),
        }
    }
    Ok(storm)
}

/// The requested number of clients, lowered to what our open-file limit allows.
fn capped_target(wanted: u32, report: &mut Report) -> u32 {
    let limit = procfs::open_file_limit().unwrap_or(u64::MAX);
    let allowed = limit.saturating_sub(FD_RESERVE).min(u64::from(u32::MAX)) as u32;
    if wanted > allowed {
        let note = format!("capped {wanted} connections to {allowed} (open-file limit {limit})");
        eprintln!("warning: {note}");
        report.notes.push(note);
    }
    wanted.min(allowed)
}
