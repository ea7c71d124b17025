//! Command-line flags. Every setting has a flag named after its TOML key; each flag is
//! optional so that an absent flag leaves the file's value (or the default) alone. The
//! defaults quoted in the help are checked against `Settings::default()` by a test.
//!
//! `raftmq cluster …` subcommands do not start a server: they ask a running node over its
//! HTTP API (see `ctl`), so they take none of the server's flags. Nor does `raftmq
//! passwd`, which edits a password file (see `passwd`).

use std::net::SocketAddr;
use std::path::PathBuf;

use broker_core::{JwtAlgorithm, QueuePolicy};
use clap::{Args, Parser, Subcommand};
use serde::de::IntoDeserializer;
use serde::Deserialize;
use tracing::level_filters::LevelFilter;

/// raftmq: a clustered MQTT 3.1.1 / 5.0 broker whose nodes replicate sessions,
/// subscriptions, retained messages and QoS 1/2 queues through Raft, kept on disk.
///
/// Without a subcommand, raftmq runs a node: alone (a cluster of one that others may
/// join) or joining a cluster through --join. Settings come from the defaults, then the
/// --config file, then these flags: a flag wins over the file. Invalid settings are
/// reported on one line and exit with status 2.
#[derive(Debug, Default, Parser)]
#[command(
    name = "raftmq",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// TOML file with any of the settings below, keyed by their snake_case names, plus
    /// [[acl]] tables for access rules and [[pacing]] tables for push pacing (see
    /// --print-default-config) [default: none].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the default configuration as TOML and exit.
    #[arg(long, exclusive = true)]
    pub print_default_config: bool,

    /// Directory holding the node's durable state: Raft log, sessions, retained
    /// messages [default: ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Log level: off, error, warn, info, debug or trace; RUST_LOG, when set, wins
    /// [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<LevelFilter>,

    /// This node's id, unique in the cluster; required with --join [default: 1 when
    /// starting alone].
    #[arg(long, value_name = "N")]
    pub node_id: Option<u64>,

    /// Address of the node-to-node (Raft) transport listener [default: 0.0.0.0:7000].
    #[arg(long, value_name = "ADDR")]
    pub cluster_addr: Option<SocketAddr>,

    /// Cluster address that peers should dial, when --cluster-addr is not reachable as
    /// such (containers, NAT) [default: derived from --cluster-addr].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise_addr: Option<String>,

    /// Cluster addresses of existing members to join through, comma-separated or
    /// repeated; without it the node starts alone or restarts from --data-dir
    /// [default: none].
    #[arg(long, value_name = "HOST:PORT", value_delimiter = ',')]
    pub join: Option<Vec<String>>,

    /// Seconds a new node keeps trying its --join addresses before giving up
    /// [default: 60].
    #[arg(long, value_name = "SECS")]
    pub join_timeout_secs: Option<u64>,

    /// Address of the HTTP API listener: /health, /ready, /cluster, /metrics
    /// [default: 0.0.0.0:8080].
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,

    /// File holding the cluster secret (16 bytes or more, e.g. `openssl rand -hex 32`),
    /// the same on every node; RAFTMQ_CLUSTER_SECRET may hold the secret itself instead.
    /// Without one (and without cluster TLS) the node refuses --join and accepts
    /// loopback peers only [default: none].
    #[arg(long, value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,

    /// PEM certificate chain, leaf first, of this node on the cluster port (mutual TLS
    /// 1.3): signed by --cluster-tls-ca-file, with the DNS name raftmq-cluster; needs
    /// the other two --cluster-tls-* files. Reloaded on SIGHUP [default: none].
    #[arg(long, value_name = "FILE")]
    pub cluster_tls_cert_file: Option<PathBuf>,

    /// PEM private key of --cluster-tls-cert-file [default: none].
    #[arg(long, value_name = "FILE")]
    pub cluster_tls_key_file: Option<PathBuf>,

    /// PEM certificates of the cluster CA: peers must present a certificate it signed
    /// [default: none].
    #[arg(long, value_name = "FILE")]
    pub cluster_tls_ca_file: Option<PathBuf>,

    /// File holding the bearer token that POST /cluster/... requests must send (16 bytes
    /// or more); RAFTMQ_ADMIN_TOKEN may hold the token itself instead. Without one those
    /// requests are refused [default: none].
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Address of the MQTT over TCP listener [default: 0.0.0.0:1883].
    #[arg(long, value_name = "ADDR")]
    pub mqtt_addr: Option<SocketAddr>,

    /// Address of the MQTT over TLS listener, usually 0.0.0.0:8883; needs
    /// --tls-cert-file and --tls-key-file [default: off].
    #[arg(long, value_name = "ADDR")]
    pub tls_addr: Option<SocketAddr>,

    /// Address of the MQTT over WebSocket listener (path /mqtt, subprotocol mqtt),
    /// usually 0.0.0.0:8083 [default: off].
    #[arg(long, value_name = "ADDR")]
    pub ws_addr: Option<SocketAddr>,

    /// Address of the MQTT over WebSocket with TLS listener (path /mqtt), usually
    /// 0.0.0.0:8084; needs --tls-cert-file and --tls-key-file [default: off].
    #[arg(long, value_name = "ADDR")]
    pub wss_addr: Option<SocketAddr>,

    /// PEM certificate chain, leaf first, for the TLS listeners; reloaded on SIGHUP or
    /// when the file changes [default: none].
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of --tls-cert-file; reloaded with it [default: none].
    #[arg(long, value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// PEM CA certificates; when set, TLS clients must present a certificate that one
    /// of them signed (mutual TLS) [default: none].
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca_file: Option<PathBuf>,

    /// Take a TLS client's username from its certificate's subject CN, whatever its
    /// CONNECT says; needs --tls-client-ca-file [default: false].
    #[arg(long, value_name = "BOOL")]
    pub tls_use_identity_as_username: Option<bool>,

    /// Largest packet accepted from or sent to a client, in bytes [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub max_packet_size: Option<u32>,

    /// Most concurrent client connections; further clients are refused [default: 100000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Unacknowledged outbound QoS 1/2 messages per client (5.0 clients: at most their
    /// Receive Maximum) [default: 32].
    #[arg(long, value_name = "N")]
    pub max_inflight: Option<u16>,

    /// Receive Maximum told to 5.0 clients; a client exceeding it is disconnected
    /// [default: 64].
    #[arg(long, value_name = "N")]
    pub receive_maximum: Option<u16>,

    /// Messages queued per session beyond the in-flight window (offline or slow clients)
    /// [default: 1000].
    #[arg(long, value_name = "N")]
    pub max_queued_messages: Option<usize>,

    /// What a full session queue does: drop (the new message) or backpressure (stop
    /// reading the publisher) [default: drop].
    #[arg(long, value_name = "POLICY", value_parser = parse_queue_policy)]
    pub queue_policy: Option<QueuePolicy>,

    /// Seconds a new connection has to send CONNECT [default: 10].
    #[arg(long, value_name = "SECS")]
    pub connect_timeout_secs: Option<u64>,

    /// Cap on client keep-alive in seconds, 0 for no cap [default: 0].
    #[arg(long, value_name = "SECS")]
    pub max_keep_alive_secs: Option<u16>,

    /// Cap on the session expiry interval in seconds [default: 4294967295].
    #[arg(long, value_name = "SECS")]
    pub max_session_expiry_secs: Option<u32>,

    /// Topic aliases a 5.0 client may use towards the broker [default: 16].
    #[arg(long, value_name = "N")]
    pub topic_alias_maximum: Option<u16>,

    /// Threads serving clients, 0 for one per CPU core [default: 0].
    #[arg(long, value_name = "N")]
    pub worker_threads: Option<usize>,

    /// Password file of `user:argon2-hash` lines (see `raftmq passwd`); once set,
    /// clients need a valid username and password. Reloaded on SIGHUP [default: none].
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// Whether clients without a password may connect (as users without a name)
    /// [default: true without --password-file and --jwt-key-file, false with either].
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub allow_anonymous: Option<bool>,

    /// Key that passwords which are JSON Web Tokens are checked with: the HS256 secret,
    /// or the RS256 / ES256 public key in PEM. Reloaded on SIGHUP [default: none].
    #[arg(long, value_name = "FILE")]
    pub jwt_key_file: Option<PathBuf>,

    /// Signature algorithm of JWT passwords: HS256, RS256 or ES256 [default: HS256].
    #[arg(long, value_name = "ALG", value_parser = parse_jwt_algorithm)]
    pub jwt_algorithm: Option<JwtAlgorithm>,

    /// JWT claim holding the username [default: sub].
    #[arg(long, value_name = "CLAIM")]
    pub jwt_username_claim: Option<String>,

    /// Subscriptions one session may hold; more are refused [default: 1000].
    #[arg(long, value_name = "N")]
    pub max_subscriptions_per_session: Option<usize>,

    /// Longest topic name or filter, in bytes [default: 1024].
    #[arg(long, value_name = "BYTES")]
    pub max_topic_length: Option<usize>,

    /// Most levels in a topic name or filter [default: 32].
    #[arg(long, value_name = "N")]
    pub max_topic_levels: Option<usize>,

    /// Retained messages in the cluster; new retained topics past it are refused
    /// [default: 100000].
    #[arg(long, value_name = "N")]
    pub max_retained_messages: Option<usize>,

    /// Bytes of retained messages (topic + payload) in the cluster [default: 134217728].
    #[arg(long, value_name = "BYTES")]
    pub max_retained_bytes: Option<u64>,

    /// Retained messages one client may have set [default: 1000].
    #[arg(long, value_name = "N")]
    pub max_retained_per_client: Option<usize>,

    /// Persistent sessions in the cluster; CONNECTs creating more are refused
    /// [default: 100000].
    #[arg(long, value_name = "N")]
    pub max_persistent_sessions: Option<usize>,

    /// Inbound QoS 2 messages a 3.1.1 client may leave awaiting PUBREL; one more closes
    /// the connection (5.0 clients: Receive Maximum) [default: 64].
    #[arg(long, value_name = "N")]
    pub max_inflight_qos2: Option<u16>,

    /// Seconds between two publications of this node's $SYS topics to its own
    /// subscribers, 0 for none [default: 10].
    #[arg(long, value_name = "SECS")]
    pub sys_interval_secs: Option<u64>,

    /// New connections accepted per second, all listeners together; the excess waits
    /// in the accept queue (0: no limit) [default: 0].
    #[arg(long, value_name = "N")]
    pub max_connect_rate: Option<u32>,

    /// PUBLISH packets per second one client may send: 5.0 is disconnected with 0x96,
    /// 3.1.1 is slowed (0: no limit) [default: 0].
    #[arg(long, value_name = "N")]
    pub max_publish_rate: Option<u32>,

    /// Bytes per second one client may send; its socket is read no faster
    /// (0: no limit) [default: 0].
    #[arg(long, value_name = "BYTES")]
    pub max_inbound_bytes_rate: Option<u64>,

    /// Resident memory high-water mark in MiB: above it new connections are refused as
    /// busy and QoS 0 is dropped (0: none) [default: 0].
    #[arg(long, value_name = "MIB")]
    pub max_memory_mb: Option<u64>,
}

/// Work done on a running node instead of starting one.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show or change a running cluster's membership, through a node's HTTP API.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Add USER to password FILE, or change their password.
    ///
    /// The password is read from the terminal (twice, without echo) or, when stdin is
    /// not a terminal, from its first line; never from the command line. FILE is
    /// replaced atomically; a new FILE is created with mode 0600.
    Passwd {
        /// The password file (--password-file).
        file: PathBuf,
        /// The user to add or change.
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterAction {
    /// Print the node's Raft state and the cluster's members.
    Status {
        #[command(flatten)]
        node: NodeEndpoint,
        /// Print the node's status JSON as it came.
        #[arg(long)]
        json: bool,
    },
    /// Take the asked node out of the cluster (before stopping it for good).
    Leave {
        #[command(flatten)]
        node: NodeEndpoint,
    },
    /// Take node ID out of the cluster, e.g. one that is gone and will not come back.
    Remove {
        /// Id of the node to remove.
        id: u64,
        #[command(flatten)]
        node: NodeEndpoint,
    },
    /// Build a snapshot of the asked node's state now (e.g. before a backup of its data
    /// directory) and print what it cost.
    Snapshot {
        #[command(flatten)]
        node: NodeEndpoint,
    },
}

impl ClusterAction {
    pub fn node(&self) -> &NodeEndpoint {
        match self {
            ClusterAction::Status { node, .. }
            | ClusterAction::Leave { node }
            | ClusterAction::Snapshot { node }
            | ClusterAction::Remove { node, .. } => node,
        }
    }
}

/// Which node a subcommand asks.
#[derive(Debug, Args)]
pub struct NodeEndpoint {
    /// HTTP API address (--http-addr) of the node to ask.
    #[arg(long = "http", value_name = "HOST:PORT", default_value = "127.0.0.1:8080",
          value_parser = parse_host_port)]
    pub http: String,
    /// File holding the node's admin token, sent with leave, remove and snapshot (the node's
    /// --admin-token-file); RAFTMQ_ADMIN_TOKEN may hold the token itself instead.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

fn parse_host_port(s: &str) -> Result<String, String> {
    crate::config::check_host_port(s).map(|()| s.to_string())
}

fn parse_jwt_algorithm(s: &str) -> Result<JwtAlgorithm, String> {
    JwtAlgorithm::deserialize(s.into_deserializer())
        .map_err(|e: serde::de::value::Error| e.to_string())
}

/// Reads the policy through its serde names so that the flag and the file accept the
/// same words.
fn parse_queue_policy(s: &str) -> Result<QueuePolicy, String> {
    QueuePolicy::deserialize(s.into_deserializer())
        .map_err(|e: serde::de::value::Error| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Settings without a value by default are absent from the defaults' table; their
    /// help says in words what happens when they are not given.
    #[test]
    fn every_setting_has_a_flag_whose_help_quotes_its_default() {
        let defaults = crate::config::Settings::default().to_table();
        let command = Cli::command();
        for key in crate::config::Settings::keys() {
            if key == "acl" || key == "pacing" {
                continue;
            }
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_id() == key.as_str())
                .unwrap_or_else(|| panic!("no flag for setting {key}"));
            let shown = match defaults.get(&key) {
                Some(toml::Value::String(s)) => s.clone(),
                Some(toml::Value::Array(a)) if a.is_empty() => "none".to_string(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(
                help.contains(&format!("[default: {shown}")) && help.ends_with(']'),
                "--{key} help should end with [default: {shown}…]: {help}"
            );
        }
    }

    #[test]
    fn unset_defaults_are_explained() {
        let command = Cli::command();
        let help = |id: &str| {
            let arg = command.get_arguments().find(|a| a.get_id() == id).unwrap();
            arg.get_help().unwrap().to_string()
        };
        assert!(help("node_id").contains("required with --join [default: 1 when starting alone]"));
        assert!(help("advertise_addr").ends_with("[default: derived from --cluster-addr]"));
    }

    #[test]
    fn join_takes_a_comma_separated_list() {
        let cli = Cli::try_parse_from(["raftmq", "--join", "a:1,b:2", "--join", "c:3"]).unwrap();
        assert_eq!(cli.join.unwrap(), ["a:1", "b:2", "c:3"]);
        assert_eq!(Cli::try_parse_from(["raftmq"]).unwrap().join, None);
    }

    #[test]
    fn queue_policy_accepts_the_file_spelling() {
        let cli = Cli::try_parse_from(["raftmq", "--queue-policy", "backpressure"]).unwrap();
        assert_eq!(cli.queue_policy, Some(QueuePolicy::Backpressure));
        let err = Cli::try_parse_from(["raftmq", "--queue-policy", "block"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected `drop` or `backpressure`"),
            "{err}"
        );
    }

    #[test]
    fn auth_flags() {
        let cli = Cli::try_parse_from([
            "raftmq",
            "--allow-anonymous",
            "false",
            "--jwt-algorithm",
            "ES256",
        ])
        .unwrap();
        assert_eq!(cli.allow_anonymous, Some(false));
        assert_eq!(cli.jwt_algorithm, Some(JwtAlgorithm::ES256));
        assert!(Cli::try_parse_from(["raftmq", "--jwt-algorithm", "none"]).is_err());
        let cli = Cli::try_parse_from(["raftmq", "passwd", "users.txt", "alice"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Passwd { user, .. }) if user == "alice"));
    }

    #[test]
    fn print_default_config_stands_alone() {
        assert!(Cli::try_parse_from(["raftmq", "--print-default-config"]).is_ok());
        assert!(
            Cli::try_parse_from(["raftmq", "--print-default-config", "--max-inflight", "3"])
                .is_err()
        );
    }
}
