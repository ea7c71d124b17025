//! Command-line flags. Every engine setting has a flag named after its TOML key; each
//! flag is optional so that an absent flag leaves the file's value (or the default) alone.
//! The defaults quoted in the help are checked against `Config::default()` by a test.

use std::net::SocketAddr;
use std::path::PathBuf;

use broker_core::QueuePolicy;
use clap::Parser;
use serde::de::IntoDeserializer;
use serde::Deserialize;
use tracing::level_filters::LevelFilter;

/// raftmq: a clustered MQTT 3.1.1 / 5.0 broker (today a single node, state in memory).
///
/// Settings come from the defaults, then the --config file, then these flags: a flag wins
/// over the file. Invalid settings are reported on one line and exit with status 2.
#[derive(Debug, Default, Parser)]
#[command(name = "raftmq", version, about, long_about)]
pub struct Cli {
    /// TOML file with any of the settings below, keyed by their snake_case names, plus
    /// [[acl]] tables for access rules (see --print-default-config) [default: none].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the default configuration as TOML and exit.
    #[arg(long, exclusive = true)]
    pub print_default_config: bool,

    /// Directory reserved for durable cluster state; not used yet: all state is in memory
    /// and lost on restart [default: ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Log level: off, error, warn, info, debug or trace; RUST_LOG, when set, wins
    /// [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<LevelFilter>,

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

    #[test]
    fn every_setting_has_a_flag_whose_help_quotes_its_default() {
        let defaults = crate::config::Settings::default().to_table();
        let command = Cli::command();
        for (key, value) in defaults.iter().filter(|(key, _)| *key != "acl") {
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_id() == key.as_str())
                .unwrap_or_else(|| panic!("no flag for setting {key}"));
            let shown = match value {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(
                help.contains(&format!("[default: {shown}]")),
                "--{key} help should say [default: {shown}]: {help}"
            );
        }
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
