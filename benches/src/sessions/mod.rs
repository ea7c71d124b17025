//! `loadgen sessions`: creates many persistent sessions and leaves them offline, the
//! load behind issue 14's figures (memory per offline session, snapshots, restart and
//! join times with a large state).
//!
//! Each client connects with clean session = 0 under the id `sess-<prefix>-<i>`,
//! subscribes at QoS 1, waits for the SUBACK and disconnects cleanly, so the broker keeps
//! an offline session with one subscription. Clients go round-robin over the `--broker`
//! addresses, `--in-flight` at a time. With `--queued M` every session subscribes to one
//! common filter and, once they all exist, a publisher sends M QoS 1 messages to a topic
//! that filter matches, so that every offline session holds M queued messages.
//!
//! - `queue`: the publisher of the queued messages.
//! - `report`: the JSON line and the stderr table.

mod queue;
mod report;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use mqttbytes::QoS;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout_at};

use crate::client::{loopback_source, Client};
use crate::procfs;
pub use report::Report;

/// How often the creation phase prints its progress on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Wait before the first retry of a session; doubled on each further one, up to
/// `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// loadgen sessions: create N persistent sessions (offline, one QoS 1 subscription each)
/// and optionally queue M QoS 1 messages in every one of them.
///
/// Client i connects to the (i mod B)-th --broker with clean session = 0 and the id
/// sess-<prefix>-<i>, subscribes at QoS 1 to its filter, waits for the SUBACK and
/// disconnects cleanly (DISCONNECT): the broker keeps an offline session holding one
/// subscription. --in-flight clients are at it at once. A session whose connect is
/// refused, times out (10 s for TCP, CONNACK and SUBACK each) or fails otherwise is
/// retried up to --retries times (backoff from 100 ms, doubling, at most 2 s).
///
/// Filters: `own` gives session i the topic sessions/<prefix>/<i>; `shared` gives every
/// session queue/<prefix>/#. With --queued M (which implies `shared`), once every session
/// exists one clean-session publisher on the first --broker publishes M QoS 1 messages
/// (64 bytes) to queue/<prefix>/m, --publish-inflight unacknowledged at a time, and waits
/// for every PUBACK: each offline session then holds M queued messages.
///
/// Reports the sessions created and failed, the creation's wall time and sessions per
/// second, the p50/p99/max of one session's creation (first connect attempt to SUBACK,
/// retries included), and for the queued messages the PUBACK time p50/p99/max and the
/// publish phase's wall time. A table goes to stderr, one JSON line to stdout. Exit
/// status 1 when a session or a publish failed, 2 for invalid flags.
#[derive(Debug, Parser)]
#[command(
    name = "loadgen sessions",
    bin_name = "loadgen sessions",
    verbatim_doc_comment
)]
pub struct SessionsCli {
    /// MQTT address of a broker (cluster node); repeat it to spread the sessions
    /// round-robin.
    #[arg(long = "broker", value_name = "HOST:PORT", required = true)]
    pub brokers: Vec<String>,

    /// Persistent sessions to create.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub sessions: u32,

    /// Tag in the client ids and topics, so that two runs on one cluster do not share
    /// sessions [default: from our pid and the clock].
    #[arg(long, value_name = "TEXT", value_parser = prefix)]
    pub prefix: Option<String>,

    /// Sessions being created at once (each holds a connection only while it is).
    #[arg(long, value_name = "N", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub in_flight: u32,

    /// Further attempts for a session whose creation failed.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    pub retries: u32,

    /// Each session's subscription: its own topic, or one filter common to all
    /// [default: own; shared with --queued].
    #[arg(long, value_enum, value_name = "KIND")]
    pub filter: Option<Filter>,

    /// QoS 1 messages to queue in every session once they all exist (needs the shared
    /// filter).
    #[arg(long, value_name = "M", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=60_000))]
    pub queued: u32,

    /// Unacknowledged publishes at a time while queueing; 1 measures each PUBACK alone.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub publish_inflight: u16,

    /// Seconds the creation of all sessions may take; what is not done by then fails.
    #[arg(long, value_name = "SECS", default_value_t = 7_200.0, value_parser = secs)]
    pub timeout: f64,

    /// Seconds the queued publishes may take, their PUBACKs included.
    #[arg(long, value_name = "SECS", default_value_t = 600.0, value_parser = secs)]
    pub publish_timeout: f64,

    /// Name of the broker in the JSON output [default: the --broker list].
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Filter {
    /// sessions/<prefix>/<i>: one topic per session.
    Own,
    /// queue/<prefix>/#: the same filter for every session.
    Shared,
}

impl Filter {
    pub fn name(self) -> &'static str {
        match self {
            Filter::Own => "own",
            Filter::Shared => "shared",
        }
    }
}

/// The flags checked against each other, with the defaults that depend on others.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub prefix: String,
    pub filter: Filter,
    pub queued: u32,
}

impl SessionsCli {
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let filter = match (self.filter, self.queued) {
            (Some(Filter::Own), m) if m > 0 => {
                bail!("--queued needs --filter shared: one publish must reach every session")
            }
            (Some(f), _) => f,
            (None, 0) => Filter::Own,
            (None, _) => Filter::Shared,
        };
        let prefix = match &self.prefix {
            Some(p) => p.clone(),
            None => crate::pubsub::run_id(),
        };
        Ok(Plan {
            prefix,
            filter,
            queued: self.queued,
        })
    }
}

impl Plan {
    pub fn client_id(&self, i: u32) -> String {
        format!("sess-{}-{i}", self.prefix)
    }

    /// The filter session `i` subscribes to.
    pub fn filter_of(&self, i: u32) -> String {
        match self.filter {
            Filter::Own => format!("sessions/{}/{i}", self.prefix),
            Filter::Shared => format!("queue/{}/#", self.prefix),
        }
    }

    /// The topic of the queued messages: every shared filter matches it.
    pub fn queue_topic(&self) -> String {
        format!("queue/{}/m", self.prefix)
    }
}

/// A client id and topic tag: letters, digits, `_` and `-`, at most 32.
fn prefix(s: &str) -> Result<String, String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !s.is_empty() && s.len() <= 32 && s.chars().all(ok) {
        Ok(s.to_string())
    } else {
        Err("expected 1 to 32 letters, digits, '_' or '-'".into())
    }
}

/// A duration in seconds: finite, above 0, at most a day.
fn secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 86_400.0 => Ok(secs),
        _ => Err("expected seconds above 0, at most 86400".into()),
    }
}

/// Runs the scenario. Never fails: a failure is the report's `error`.
pub async fn run(cli: &SessionsCli) -> Report {
    let mut report = Report::new(cli);
    if let Err(e) = measure(cli, &mut report).await {
        report.error = Some(format!("{e:#}"));
    }
    report.judge();
    report
}

async fn measure(cli: &SessionsCli, report: &mut Report) -> anyhow::Result<()> {
    let plan = cli.plan()?;
    report.plan(&plan);
    let brokers = crate::resolve(&cli.brokers).await?;
    let (cpu0, started) = (procfs::cpu_time(), Instant::now());
    create_all(cli, &plan, &brokers, report).await?;
    report.loadgen_cpu_pct = crate::report::round(procfs::cpu_pct(cpu0, started), 1);
    if plan.queued > 0 {
        if report.failed > 0 {
            bail!(
                "{} sessions were not created: the messages are not queued",
                report.failed
            );
        }
        let spec = queue::Spec {
            broker: brokers[0],
            client_id: format!("sess-{}-pub", plan.prefix),
            topic: plan.queue_topic(),
            messages: plan.queued,
            inflight: usize::from(cli.publish_inflight),
            limit: Duration::from_secs_f64(cli.publish_timeout),
        };
        let outcome = queue::publish(&spec).await;
        report.queued_outcome(&outcome);
        if let Some(e) = outcome.error {
            bail!("queued publishes: {e}");
        }
    }
    Ok(())
}

/// What creating one session came to.
struct Created {
    /// First attempt to SUBACK, retries included.
    took: Duration,
    attempts: u32,
    /// The last CONNACK had "session present".
    present: bool,
}

struct Failed {
    attempts: u32,
    error: String,
}

/// Creates every session, `in_flight` at a time, within `cli.timeout`.
async fn create_all(
    cli: &SessionsCli,
    plan: &Plan,
    brokers: &[SocketAddr],
    report: &mut Report,
) -> anyhow::Result<()> {
    let target = cli.sessions;
    let started = Instant::now();
    let phase_end = started + Duration::from_secs_f64(cli.timeout);
    let mut took = Histogram::<u64>::new_with_bounds(1, 86_400_000_000, 3).expect("valid bounds");
    let mut tasks = JoinSet::new();
    let (mut next, mut done) = (0u32, 0u32);
    let mut progress_at = started + PROGRESS_EVERY;
    while next < target || !tasks.is_empty() {
        while next < target && tasks.len() < cli.in_flight as usize {
            let addr = brokers[next as usize % brokers.len()];
            let (id, filter) = (plan.client_id(next), plan.filter_of(next));
            let bind = loopback_source(addr, next as usize);
            let retries = cli.retries;
            tasks.spawn(async move { create(addr, bind, id, filter, retries).await });
            next += 1;
        }
        let Ok(joined) = timeout_at(phase_end.into(), tasks.join_next()).await else {
            // Whatever is not done by now counts as failed.
            report.failed += (target - next) + tasks.len() as u32;
            let cut = format!("creation cut at {}s", cli.timeout);
            report.first_error.get_or_insert(cut);
            tasks.abort_all();
            break;
        };
        done += 1;
        match joined
            .expect("tasks is not empty")
            .context("session task")?
        {
            Ok(c) => {
                report.created += 1;
                report.present += u32::from(c.present);
                report.retried += c.attempts - 1;
                took.saturating_record(c.took.as_micros() as u64);
            }
            Err(f) => {
                report.failed += 1;
                report.retried += f.attempts - 1;
                report.first_error.get_or_insert(f.error);
            }
        }
        if Instant::now() >= progress_at {
            progress_at += PROGRESS_EVERY;
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "sessions: {done}/{target} after {secs:.0} s ({:.0}/s), {} failed",
                f64::from(done) / secs,
                report.failed
            );
        }
    }
    report.creation_outcome(started.elapsed(), &took);
    Ok(())
}

/// Creates one session: connect (clean session 0), subscribe, disconnect; retried.
async fn create(
    addr: SocketAddr,
    bind: Option<std::net::IpAddr>,
    id: String,
    filter: String,
    retries: u32,
) -> Result<Created, Failed> {
    let start = Instant::now();
    let filters = [filter];
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let attempt = async {
            let mut client = Client::connect_session(addr, &id, bind, false).await?;
            let present = client.session_present;
            client.subscribe(&filters, QoS::AtLeastOnce).await?;
            let took = start.elapsed();
            client.disconnect().await;
            anyhow::Ok((took, present))
        };
        match attempt.await {
            Ok((took, present)) => {
                return Ok(Created {
                    took,
                    attempts,
                    present,
                })
            }
            Err(e) if attempts > retries => {
                return Err(Failed {
                    attempts,
                    error: format!("{id}: {e:#}"),
                })
            }
            Err(_) => {
                sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<SessionsCli, clap::Error> {
        let mut argv = vec!["loadgen sessions"];
        argv.extend_from_slice(args);
        SessionsCli::try_parse_from(argv)
    }

    #[test]
    fn defaults_are_own_topics_without_queued_messages() {
        let c = cli(&["--broker", "127.0.0.2:1883", "--prefix", "t"]).expect("valid flags");
        assert_eq!(c.brokers, ["127.0.0.2:1883"]);
        assert_eq!((c.sessions, c.in_flight, c.retries), (10_000, 500, 5));
        assert_eq!((c.queued, c.publish_inflight), (0, 1));
        let plan = c.plan().expect("consistent flags");
        assert_eq!(plan.filter, Filter::Own);
        assert_eq!(plan.client_id(7), "sess-t-7");
        assert_eq!(plan.filter_of(7), "sessions/t/7");
    }

    #[test]
    fn queued_messages_imply_the_shared_filter() {
        let c = cli(&[
            "--broker",
            "127.0.0.2:1883",
            "--broker",
            "127.0.0.3:1883",
            "--sessions",
            "100000",
            "--queued",
            "100",
            "--prefix",
            "q",
        ])
        .expect("valid flags");
        assert_eq!(c.brokers.len(), 2);
        let plan = c.plan().expect("consistent flags");
        assert_eq!((plan.filter, plan.queued), (Filter::Shared, 100));
        assert_eq!(plan.filter_of(1), plan.filter_of(2));
        assert_eq!(plan.filter_of(1), "queue/q/#");
        assert_eq!(plan.queue_topic(), "queue/q/m");
    }

    #[test]
    fn queued_messages_refuse_own_topics() {
        let c = cli(&["--broker", "b:1", "--queued", "5", "--filter", "own"]).expect("parses");
        assert!(c.plan().is_err());
        let c = cli(&["--broker", "b:1", "--filter", "shared"]).expect("parses");
        assert_eq!(c.plan().expect("consistent").filter, Filter::Shared);
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(cli(&[]).is_err(), "--broker is required");
        for bad in [
            &["--sessions", "0"][..],
            &["--in-flight", "0"],
            &["--prefix", "a/b"],
            &["--prefix", ""],
            &["--timeout", "0"],
            &["--publish-inflight", "0"],
            &["--filter", "mine"],
        ] {
            let mut args = vec!["--broker", "127.0.0.2:1883"];
            args.extend_from_slice(bad);
            assert!(cli(&args).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn a_generated_prefix_is_a_valid_one() {
        let c = cli(&["--broker", "127.0.0.2:1883"]).expect("valid flags");
        let plan = c.plan().expect("consistent flags");
        assert!(prefix(&plan.prefix).is_ok(), "{}", plan.prefix);
    }
}
