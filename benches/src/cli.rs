//! Command-line flags and the per-scenario defaults they override.

use clap::{Parser, ValueEnum};

/// Idle clients the `connections` scenario opens by default. The hard `ulimit -n` on
/// the reference machine is 20,000 and the broker under test shares it, so 9,000 leaves
/// room for the broker's own descriptors plus ours.
pub const DEFAULT_CONNECTIONS: u32 = 9_000;
/// Idle clients the `idle` scenario opens by default: fewer than `connections`, since
/// over TLS each costs the load generator far more memory too.
pub const DEFAULT_IDLE: u32 = 5_000;

/// loadgen: drives any MQTT 3.1.1 broker and prints one JSON line of results.
///
/// A readable table goes to stderr, exactly one JSON line to stdout. Exit status: 0 when
/// the run completed (even with QoS 0 losses), 1 on a setup failure or when a QoS 1/2
/// run lost an acknowledged message, 2 for invalid flags.
///
/// Scenario defaults (flags override them):
///   qos0          4 publishers -> 4 subscribers, QoS 0, closed loop W=250, 10 s
///   qos1          as qos0 with QoS 1, in-flight 64 per publisher
///   durable       as qos1, subscribers with persistent sessions (clean session = 0,
///                 ids loadgen-durable-sub-N): on raftmq every PUBACK waits for Raft
///   fanout        1 publisher -> 100 subscribers, QoS 0, closed loop
///   fanin         16 publishers -> 1 subscriber, QoS 0, closed loop
///   fanin-shared  16 publishers -> $share group of 4 subscribers, QoS 0, closed loop
///   latency       1 -> 1 at 5,000 msgs/s, QoS 0, end-to-end latency percentiles
///   latency-durable
///                 as latency with QoS 1 and a persistent subscriber (as durable): the
///                 PUBACK latency of a message that must survive the broker
///   overload      4 -> 4, QoS 1, open loop; subscribers read at ~1/4 of the publish rate
///   connections   9,000 idle clients (needs --broker-pid), held for --duration (2 s)
///   idle          5,000 idle clients opened 50 at a time once the broker settled for
///                 2 s (needs --broker-pid), held for --duration (5 s): the broker's
///                 memory per idle connection, without the transient peak of a connect
///                 storm
///
/// With --tls-ca every client connects over TLS and the scenario is reported as
/// tls-<scenario> (tls-qos0, tls-connections, ...).
///
/// `loadgen failover ...` (its own flags: `loadgen failover --help`) kills a cluster
/// node and times how long its persistent subscribers take to resume on the others.
#[derive(Debug, Parser)]
#[command(name = "loadgen", verbatim_doc_comment)]
pub struct Cli {
    /// Which load to apply.
    #[arg(value_enum)]
    pub scenario: Scenario,

    /// Broker address; repeat it to spread clients round-robin over several nodes
    /// (publisher i on node i, subscriber j on node j+1).
    #[arg(long = "broker", value_name = "HOST:PORT", required = true)]
    pub brokers: Vec<String>,

    /// Name of the broker in the JSON output [default: the --broker list].
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,

    /// Name of the scenario in the JSON output, e.g. latency-3n for a run against three
    /// nodes [default: the scenario, tls-<scenario> over TLS].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Broker process to sample VmRSS from every 100 ms (required by `connections`).
    #[arg(long, value_name = "PID")]
    pub broker_pid: Option<u32>,

    /// Seconds of load (for `connections`: seconds to hold the clients) [default: 10;
    /// connections: 2].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<f64>,

    /// Publishing clients [default: per scenario].
    #[arg(long, value_name = "N")]
    pub publishers: Option<u32>,

    /// Subscribing clients [default: per scenario].
    #[arg(long, value_name = "N")]
    pub subscribers: Option<u32>,

    /// QoS of publishes and subscriptions [default: 1 for qos1, durable and overload,
    /// else 0].
    #[arg(long, value_name = "Q", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: Option<u8>,

    /// Payload size in bytes, the 16-byte sequence header included [default: 64].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
    pub payload: Option<u32>,

    /// Closed loop: messages a publisher may have that its slowest subscriber has not yet
    /// received [default: 250].
    #[arg(long, value_name = "W", value_parser = clap::value_parser!(u64).range(1..))]
    pub window: Option<u64>,

    /// Unacknowledged QoS 1/2 PUBLISHes per publisher [default: 64].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub inflight: Option<u16>,

    /// Messages per second per publisher; makes the run open loop at a fixed pace
    /// [default: 5000 for latency, else unpaced].
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,

    /// Idle clients for `connections`, capped by our own open-file limit
    /// [default: 9000, because the hard limit here is 20,000 and shared with the broker].
    #[arg(long, value_name = "N")]
    pub connections: Option<u32>,

    /// Connect over TLS, checking the broker's certificate against the CA certificates
    /// in FILE (PEM); the scenario is then reported as tls-<scenario> [default: TCP].
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,

    /// Name the broker's certificate must be valid for, a DNS name or an IP address
    /// [default: the host of the first --broker].
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Qos0,
    Qos1,
    Durable,
    Fanout,
    Fanin,
    FaninShared,
    Latency,
    LatencyDurable,
    Overload,
    Connections,
    Idle,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Qos0 => "qos0",
            Scenario::Qos1 => "qos1",
            Scenario::Durable => "durable",
            Scenario::Fanout => "fanout",
            Scenario::Fanin => "fanin",
            Scenario::FaninShared => "fanin-shared",
            Scenario::Latency => "latency",
            Scenario::LatencyDurable => "latency-durable",
            Scenario::Overload => "overload",
            Scenario::Connections => "connections",
            Scenario::Idle => "idle",
        }
    }
}

/// The resolved parameters of one run: scenario defaults with the flags applied.
#[derive(Debug, Clone)]
pub struct Params {
    pub scenario: Scenario,
    /// The scenario's name in the report: tls-<name> over TLS.
    pub name: String,
    pub tls: bool,
    pub publishers: u32,
    pub subscribers: u32,
    pub qos: u8,
    pub payload: u32,
    pub window: u64,
    pub inflight: u16,
    /// Publishers ignore the closed-loop window (overload, latency, or any paced run).
    pub open_loop: bool,
    pub rate: Option<u64>,
    pub duration_s: f64,
    pub connections: Option<u32>,
    /// Subscribers form one `$share` group instead of each receiving everything.
    pub shared: bool,
    /// Subscribers consume at a fraction of the publish rate (overload).
    pub slow_subscribers: bool,
    /// Subscribers keep persistent sessions (clean session = 0) under fixed ids
    /// (durable).
    pub durable_subscribers: bool,
}

impl Params {
    pub fn resolve(cli: &Cli) -> Params {
        use Scenario::*;
        let s = cli.scenario;
        let (publishers, subscribers) = match s {
            Qos0 | Qos1 | Durable | Overload => (4, 4),
            Fanout => (1, 100),
            Fanin => (16, 1),
            FaninShared => (16, 4),
            Latency | LatencyDurable => (1, 1),
            Connections | Idle => (0, 0),
        };
        let rate = cli
            .rate
            .or(matches!(s, Latency | LatencyDurable).then_some(5_000));
        let default_duration = match s {
            Connections => 2.0,
            Idle => 5.0,
            _ => 10.0,
        };
        let tls = cli.tls_ca.is_some();
        Params {
            scenario: s,
            name: match (&cli.name, tls) {
                (Some(name), _) => name.clone(),
                (None, true) => format!("tls-{}", s.name()),
                (None, false) => s.name().to_string(),
            },
            tls,
            publishers: cli.publishers.unwrap_or(publishers),
            subscribers: cli.subscribers.unwrap_or(subscribers),
            qos: cli.qos.unwrap_or(u8::from(matches!(
                s,
                Qos1 | Durable | LatencyDurable | Overload
            ))),
            payload: cli.payload.unwrap_or(64),
            window: cli.window.unwrap_or(250),
            inflight: cli.inflight.unwrap_or(64),
            open_loop: s == Overload || rate.is_some(),
            rate,
            duration_s: cli.duration.unwrap_or(default_duration),
            connections: match s {
                Connections => Some(cli.connections.unwrap_or(DEFAULT_CONNECTIONS)),
                Idle => Some(cli.connections.unwrap_or(DEFAULT_IDLE)),
                _ => None,
            },
            shared: s == FaninShared,
            slow_subscribers: s == Overload,
            durable_subscribers: matches!(s, Durable | LatencyDurable),
        }
    }
}

/// A duration in seconds: finite, not negative, at most a day.
fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(secs) if (0.0..=86_400.0).contains(&secs) => Ok(secs),
        _ => Err("expected seconds between 0 and 86400".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(args: &[&str]) -> Params {
        let mut argv = vec!["loadgen"];
        argv.extend_from_slice(args);
        Params::resolve(&Cli::try_parse_from(argv).expect("valid flags"))
    }

    #[test]
    fn durable_is_qos1_with_persistent_subscribers() {
        let d = params(&["durable", "--broker", "127.0.0.1:1883"]);
        let q = params(&["qos1", "--broker", "127.0.0.1:1883"]);
        assert_eq!(d.scenario.name(), "durable");
        assert!(d.durable_subscribers && !q.durable_subscribers);
        assert_eq!(
            (d.publishers, d.subscribers, d.qos, d.inflight, d.window),
            (q.publishers, q.subscribers, q.qos, q.inflight, q.window)
        );
        assert_eq!((d.qos, d.inflight, d.open_loop), (1, 64, false));
    }

    #[test]
    fn latency_durable_is_the_latency_run_at_qos1_to_a_persistent_session() {
        let l = params(&["latency", "--broker", "127.0.0.1:1883"]);
        let d = params(&["latency-durable", "--broker", "127.0.0.1:1883"]);
        assert_eq!(d.name, "latency-durable");
        assert_eq!((d.publishers, d.subscribers, d.rate), (1, 1, Some(5_000)));
        assert_eq!((l.rate, l.qos, d.qos), (Some(5_000), 0, 1));
        assert!(d.durable_subscribers && !l.durable_subscribers && d.open_loop);
        let named = params(&[
            "latency",
            "--broker",
            "b:1",
            "--broker",
            "c:1",
            "--name",
            "latency-3n",
        ]);
        assert_eq!(named.name, "latency-3n");
    }

    #[test]
    fn tls_runs_are_named_apart() {
        let plain = params(&["qos0", "--broker", "127.0.0.1:1883"]);
        let tls = params(&["qos0", "--broker", "127.0.0.1:8883", "--tls-ca", "ca.pem"]);
        assert_eq!((plain.name.as_str(), plain.tls), ("qos0", false));
        assert_eq!((tls.name.as_str(), tls.tls), ("tls-qos0", true));
        let idle = params(&["idle", "--broker", "127.0.0.1:8883", "--tls-ca", "ca.pem"]);
        assert_eq!(idle.name, "tls-idle");
        assert_eq!(
            (idle.connections, idle.duration_s),
            (Some(DEFAULT_IDLE), 5.0)
        );
    }
}
