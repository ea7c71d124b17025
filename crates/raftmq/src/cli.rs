//! Command-line flags. Every setting has a flag named after its TOML key; each flag is
//! optional so that an absent flag leaves the file's value (or the default) alone. The
//! defaults quoted in the help are checked against `Settings::default()` by a test.
//!
//! `raftmq cluster …` subcommands do not start a server: they ask a running node over its
//! HTTP API (see `ctl`), so they take none of the server's flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use broker_core::QueuePolicy;
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
    /// [[acl]] tables for access rules (see --print-default-config) [default: none].
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

    /// Address of the HTTP API listener: /health, /ready, /cluster
    /// [default: 0.0.0.0:8080].
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,

    /// File holding the cluster secret (16 bytes or more, e.g. `openssl rand -hex 32`),
    /// the same on every node; RAFTMQ_CLUSTER_SECRET may hold the secret itself instead.
    /// Without one the node refuses --join and accepts loopback peers only [default:
    /// none].
    #[arg(long, value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,

    /// File holding the bearer token that POST /cluster/... requests must send (16 bytes
    /// or more); RAFTMQ_ADMIN_TOKEN may hold the token itself instead. Without one those
    /// requests are refused [default: none].
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Address of the MQTT over TCP listener [default: 0.0.0.0:1883].
    #[arg(long, value_name = "ADDR")]
    pub mqtt_addr: Option<SocketAddr>,

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
}

/// Work done on a running node instead of starting one.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show or change a running cluster's membership, through a node's HTTP API.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
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
}

impl ClusterAction {
    pub fn node(&self) -> &NodeEndpoint {
        match self {
            ClusterAction::Status { node, .. }
            | ClusterAction::Leave { node }
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
    /// File holding the node's admin token, sent with leave and remove (the node's
    /// --admin-token-file); RAFTMQ_ADMIN_TOKEN may hold the token itself instead.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

fn parse_host_port(s: &str) -> Result<String, String> {
    crate::config::check_host_port(s).map(|()| s.to_string())
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
            if key == "acl" {
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
    fn print_default_config_stands_alone() {
        assert!(Cli::try_parse_from(["raftmq", "--print-default-config"]).is_ok());
        assert!(
            Cli::try_parse_from(["raftmq", "--print-default-config", "--max-inflight", "3"])
                .is_err()
        );
    }
}
