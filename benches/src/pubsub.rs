//! The publish/subscribe scenarios: connect subscribers then publishers, run the load
//! for the duration, drain, and count what arrived against what was sent and acked.
//!
//! `durable` subscribers keep persistent sessions under fixed client ids. A session
//! left by an earlier run would replay its stored messages into this one, so each is
//! first cleared (a clean-session connect) and cleared again after the run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use mqttbytes::QoS;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout};

use crate::cli::Params;
use crate::client::{Client, SETUP_TIMEOUT};
use crate::flow::Flow;
use crate::procfs;
use crate::publisher::{self, Schedule};
use crate::report::{round, Latency, Report};
use crate::subscriber;
use crate::tracker::Stream;

/// Longest wait after the load for acknowledgements and deliveries still on their way.
const DRAIN: Duration = Duration::from_secs(2);
const DRAIN_POLL: Duration = Duration::from_millis(5);

pub async fn run(
    params: &Params,
    brokers: &[SocketAddr],
    report: &mut Report,
) -> anyhow::Result<()> {
    let (np, ns) = (params.publishers as usize, params.subscribers as usize);
    if np == 0 || ns == 0 {
        bail!(
            "{} needs at least one publisher and one subscriber",
            params.name
        );
    }
    let qos = match params.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    let run = run_id();
    let topics: Vec<String> = (0..np).map(|i| format!("loadgen/{run}/p{i}")).collect();
    let (subs, pubs) = connect(params, brokers, &run, &topics, qos).await?;

    let flow = Arc::new(Flow::new(np, sink_count(params), params.shared));
    let (cpu0, epoch) = (procfs::cpu_time(), Instant::now());
    let deadline = epoch + Duration::from_secs_f64(params.duration_s);
    let schedule = Schedule {
        epoch,
        deadline,
        drain_until: deadline + DRAIN,
    };
    let (stop, stopped) = watch::channel(false);
    let sub_tasks: Vec<_> = (subs.into_iter().enumerate())
        .map(|(j, client)| {
            let spec = subscriber::Spec {
                index: j,
                sink: if params.shared { 0 } else { j },
                publishers: np,
                slow: params.slow_subscribers,
            };
            let flow = flow.clone();
            tokio::spawn(subscriber::run(spec, client, flow, epoch, stopped.clone()))
        })
        .collect();
    let pub_tasks: Vec<_> = (pubs.into_iter().enumerate())
        .map(|(i, client)| {
            let spec = publisher::Spec {
                id: i as u32,
                topic: topics[i].clone(),
                qos,
                payload: params.payload as usize,
                inflight: params.inflight,
                window: (!params.open_loop).then_some(params.window),
                rate: params.rate,
            };
            tokio::spawn(publisher::run(spec, client, flow.clone(), schedule))
        })
        .collect();

    sleep_until(deadline.into()).await;
    flow.stop_publishing();
    // Over the load only: an idle drain would dilute the figure.
    report.loadgen_cpu_pct = round(procfs::cpu_pct(cpu0, epoch), 1);
    drain(&pub_tasks, &flow, schedule.drain_until).await;
    let _ = stop.send(true);
    let pub_out = join_all(pub_tasks).await.context("publisher task")?;
    let sub_out = join_all(sub_tasks).await.context("subscriber task")?;
    if params.durable_subscribers {
        clear_durable_sessions(params, brokers, report).await;
    }
    tally(params, qos, epoch, deadline, &pub_out, &sub_out, report);
    Ok(())
}

/// Subscribers first (subscribed), so that nothing published is missed; then publishers.
/// Publisher i goes to node i and subscriber j to node j + 1, so that with two nodes
/// every message crosses between them.
async fn connect(
    params: &Params,
    brokers: &[SocketAddr],
    run: &str,
    topics: &[String],
    qos: QoS,
) -> anyhow::Result<(Vec<Client>, Vec<Client>)> {
    let filters: Vec<String> = match params.shared {
        true => topics.iter().map(|t| format!("$share/g/{t}")).collect(),
        false => topics.to_vec(),
    };
    let node = |i: usize| brokers[i % brokers.len()];
    let durable = params.durable_subscribers;
    let subs = connect_all(params.subscribers as usize, |j| {
        let id = match durable {
            true => durable_id(j),
            false => format!("lg-{run}-s{j}"),
        };
        let (addr, filters) = (node(j + 1), filters.clone());
        async move {
            if durable {
                Client::connect(addr, &id, None).await?.disconnect().await;
            }
            let mut client = Client::connect_session(addr, &id, None, !durable).await?;
            if client.session_present {
                bail!("{addr} resumed a stored session for {id} despite the clean start before");
            }
            client.subscribe(&filters, qos).await?;
            Ok(client)
        }
    })
    .await
    .context("subscribers")?;
    let pubs = connect_all(params.publishers as usize, |i| {
        let (addr, id) = (node(i), format!("lg-{run}-p{i}"));
        async move { Client::connect(addr, &id, None).await }
    })
    .await
    .context("publishers")?;
    Ok((subs, pubs))
}

/// The fixed client id of durable subscriber `j`.
fn durable_id(j: usize) -> String {
    format!("loadgen-durable-sub-{j}")
}

/// Ends the durable subscribers' sessions (a clean-session connect and disconnect each)
/// so that they stop collecting messages on the broker. Best effort: a failure is a note.
async fn clear_durable_sessions(params: &Params, brokers: &[SocketAddr], report: &mut Report) {
    let tasks: Vec<_> = (0..params.subscribers as usize)
        .map(|j| {
            let addr = brokers[(j + 1) % brokers.len()];
            tokio::spawn(async move {
                let id = durable_id(j);
                let clear = async {
                    Client::connect(addr, &id, None).await?.disconnect().await;
                    Ok(())
                };
                match timeout(SETUP_TIMEOUT, clear).await {
                    Ok(result) => result,
                    Err(_) => Err(anyhow::anyhow!("timed out")),
                }
                .with_context(|| format!("clearing the session of {id} on {addr}"))
            })
        })
        .collect();
    for task in tasks {
        if let Ok(Err(e)) = task.await {
            report.notes.push(format!("{e:#}"));
        }
    }
}

/// Connects `n` clients at once; the first failure fails the setup.
async fn connect_all<F, Fut>(n: usize, make: F) -> anyhow::Result<Vec<Client>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Client>> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(make(i))).collect();
    join_all(tasks).await?.into_iter().collect()
}

async fn join_all<T>(tasks: Vec<JoinHandle<T>>) -> anyhow::Result<Vec<T>> {
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await?);
    }
    Ok(out)
}

/// Waits until the publishers have their acknowledgements and every sink has every
/// message, or until `until`.
async fn drain(publishers: &[JoinHandle<publisher::Outcome>], flow: &Flow, until: Instant) {
    while Instant::now() < until
        && !(publishers.iter().all(|t| t.is_finished()) && flow.all_delivered())
    {
        sleep(DRAIN_POLL).await;
    }
}

/// Each subscriber is its own sink, except that a shared group is one.
fn sink_count(params: &Params) -> usize {
    if params.shared {
        1
    } else {
        params.subscribers as usize
    }
}

/// Counts, per (publisher, sink), what was sent or acked against what arrived.
fn tally(
    params: &Params,
    qos: QoS,
    epoch: Instant,
    deadline: Instant,
    pubs: &[publisher::Outcome],
    subs: &[subscriber::Outcome],
    report: &mut Report,
) {
    let mut received = vec![vec![Stream::default(); pubs.len()]; sink_count(params)];
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut ack_latency = latency.clone();
    let mut last = deadline;
    for s in subs {
        for (mine, theirs) in received[s.sink].iter_mut().zip(&s.streams) {
            mine.merge(theirs);
        }
        latency.add(&s.latency_us).expect("same bounds");
        last = last.max(s.last_delivery.unwrap_or(deadline));
    }
    for sink in &received {
        for (p, stream) in pubs.iter().zip(sink) {
            let unique = stream.seen.len();
            report.expected += p.sent;
            report.delivered += unique;
            report.duplicated += stream.duplicated;
            report.reordered += stream.reordered;
            report.lost += match qos {
                QoS::AtMostOnce => p.sent.saturating_sub(unique),
                _ => p.acked.count_missing_from(&stream.seen),
            };
        }
    }
    for p in pubs {
        ack_latency.add(&p.ack_latency_us).expect("same bounds");
    }
    report.published = pubs.iter().map(|p| p.sent).sum();
    report.acked = pubs.iter().map(|p| p.acked.len()).sum();
    let elapsed = last.duration_since(epoch).as_secs_f64();
    report.elapsed_s = round(elapsed, 3);
    report.deliveries_per_sec = round(report.delivered as f64 / elapsed.max(1e-9), 1);
    report.latency_us = percentiles(&latency);
    report.ack_latency_us = percentiles(&ack_latency);
    notes(pubs, subs, report);
    if qos != QoS::AtMostOnce && report.lost > 0 {
        let msg = format!(
            "LOST {} ACKNOWLEDGED MESSAGES (acked by the broker, not delivered within the {}s drain)",
            report.lost,
            DRAIN.as_secs()
        );
        eprintln!("!!!!!!!! {msg} !!!!!!!!");
        report.error = Some(msg);
    }
}

fn percentiles(h: &Histogram<u64>) -> Option<Latency> {
    (!h.is_empty()).then(|| Latency {
        p50: h.value_at_quantile(0.5),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    })
}

/// What the table should mention beyond the counts.
fn notes(pubs: &[publisher::Outcome], subs: &[subscriber::Outcome], report: &mut Report) {
    let stalls: u32 = pubs.iter().map(|p| p.stalls).sum();
    if stalls > 0 {
        report.notes.push(format!(
            "{stalls} window stalls (no subscriber progress for 200 ms)"
        ));
    }
    let unacked: u64 = pubs.iter().map(|p| p.unacked).sum();
    if unacked > 0 {
        report
            .notes
            .push(format!("{unacked} publishes never acknowledged"));
    }
    let errors = pubs
        .iter()
        .map(|p| &p.error)
        .chain(subs.iter().map(|s| &s.error));
    for e in errors.flatten() {
        eprintln!("warning: {e}");
        report.notes.push(e.clone());
    }
}

/// Tags topics and client ids so that runs never see each other's messages or sessions.
pub(crate) fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id(), nanos)
}
