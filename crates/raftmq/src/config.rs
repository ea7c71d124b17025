//! The server's settings: the engine's `Config` plus the binary's own keys (`data_dir`,
//! `log_level`), merged as defaults ← TOML file ← flags. Errors are one line naming the
//! setting, ready for `raftmq: error: …`.

use std::fs;
use std::path::{Path, PathBuf};

use broker_core::Config;
use serde::{Deserialize, Serialize};
use tracing::level_filters::LevelFilter;

use crate::cli::Cli;

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Reserved for the durable cluster layer; nothing reads it yet.
    pub data_dir: PathBuf,
    /// Used when RUST_LOG is not set.
    pub log_level: LevelFilter,
    pub engine: Config,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("./data"),
            log_level: LevelFilter::INFO,
            engine: Config::default(),
        }
    }
}

/// The file's shape when written out: the binary's keys first, then the engine's, flat.
#[derive(Serialize)]
struct FileView<'a> {
    data_dir: &'a Path,
    log_level: String,
    #[serde(flatten)]
    engine: &'a Config,
}

const ACL_EXAMPLE: &str = "\
# Access rules: first match wins, no match allows. Replace `acl = []` with tables like
# [[acl]]
# permission = \"deny\"            # allow | deny
# action = \"subscribe\"           # publish | subscribe | all
# topic = \"test/nosubscribe\"     # a topic filter; + and # allowed
# client_id = \"sensor-1\"         # optional: only this client
# username = \"alice\"             # optional: only this user
";

impl Settings {
    /// Defaults, then the `--config` file, then the flags; validated.
    pub fn load(cli: &Cli) -> Result<Settings, String> {
        let mut settings = match &cli.config {
            Some(path) => Settings::read_file(path)?,
            None => Settings::default(),
        };
        settings.apply_flags(cli);
        settings.engine.validate()?;
        Ok(settings)
    }

    fn read_file(path: &Path) -> Result<Settings, String> {
        let in_file = |e: String| format!("config file {}: {e}", path.display());
        let text = fs::read_to_string(path).map_err(|e| in_file(e.to_string()))?;
        Settings::from_toml(&text).map_err(in_file)
    }

    /// Parses a file's text. The binary's own keys are taken out first; the rest must be
    /// exactly the engine's `Config`, whose serde errors are prefixed with their path
    /// (`acl[0].action: …`) so the message names the setting.
    fn from_toml(text: &str) -> Result<Settings, String> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
        let known = Settings::default().to_table();
        if let Some(key) = table.keys().find(|key| !known.contains_key(*key)) {
            let known: Vec<&str> = known.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown field `{key}` (known: {})",
                known.join(", ")
            ));
        }
        let mut settings = Settings::default();
        if let Some(value) = table.remove("data_dir") {
            settings.data_dir = value_of("data_dir", value)?;
        }
        if let Some(value) = table.remove("log_level") {
            let level: String = value_of("log_level", value)?;
            settings.log_level = level.parse().map_err(|e| format!("log_level: {e}"))?;
        }
        settings.engine = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| format!("{}: {}", e.path(), e.inner().message()))?;
        Ok(settings)
    }

    /// Every flag given replaces the value from the file or the default. The exhaustive
    /// destructuring makes a new flag fail to compile until it is merged here.
    fn apply_flags(&mut self, cli: &Cli) {
        let Cli {
            config: _,
            print_default_config: _,
            data_dir,
            log_level,
            mqtt_addr,
            max_packet_size,
            max_connections,
            max_inflight,
            receive_maximum,
            max_queued_messages,
            queue_policy,
            connect_timeout_secs,
            max_keep_alive_secs,
            max_session_expiry_secs,
            topic_alias_maximum,
            worker_threads,
        } = cli;
        let engine = &mut self.engine;
        set(&mut self.data_dir, data_dir);
        set(&mut self.log_level, log_level);
        set(&mut engine.mqtt_addr, mqtt_addr);
        set(&mut engine.max_packet_size, max_packet_size);
        set(&mut engine.max_connections, max_connections);
        set(&mut engine.max_inflight, max_inflight);
        set(&mut engine.receive_maximum, receive_maximum);
        set(&mut engine.max_queued_messages, max_queued_messages);
        set(&mut engine.queue_policy, queue_policy);
        set(&mut engine.connect_timeout_secs, connect_timeout_secs);
        set(&mut engine.max_keep_alive_secs, max_keep_alive_secs);
        set(&mut engine.max_session_expiry_secs, max_session_expiry_secs);
        set(&mut engine.topic_alias_maximum, topic_alias_maximum);
        set(&mut engine.worker_threads, worker_threads);
    }

    /// The settings as a TOML file would hold them.
    pub fn to_toml(&self) -> String {
        let mut text = toml::to_string(&self.view()).expect("settings serialize to TOML");
        if self.engine.acl.is_empty() {
            text.push('\n');
            text.push_str(ACL_EXAMPLE);
        }
        text
    }

    pub(crate) fn to_table(&self) -> toml::Table {
        toml::Table::try_from(self.view()).expect("settings serialize to TOML")
    }

    fn view(&self) -> FileView<'_> {
        FileView {
            data_dir: &self.data_dir,
            log_level: self.log_level.to_string(),
            engine: &self.engine,
        }
    }
}

fn set<T: Clone>(setting: &mut T, flag: &Option<T>) {
    if let Some(value) = flag {
        *setting = value.clone();
    }
}

fn value_of<T: for<'de> Deserialize<'de>>(key: &str, value: toml::Value) -> Result<T, String> {
    value
        .try_into()
        .map_err(|e| format!("{key}: {}", e.message()))
}

/// toml's own rendering spans several lines with a caret; we keep its message and say
/// where.
fn syntax_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let line = text[..span.start].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_core::{AclAction, Permission, QueuePolicy};
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("raftmq").chain(args.iter().copied())).unwrap()
    }

    fn merge(file: &str, args: &[&str]) -> Result<Settings, String> {
        let mut settings = Settings::from_toml(file)?;
        settings.apply_flags(&cli(args));
        settings.engine.validate()?;
        Ok(settings)
    }

    #[test]
    fn no_flags_no_file_gives_the_defaults() {
        assert_eq!(Settings::load(&cli(&[])).unwrap(), Settings::default());
        let defaults = Settings::default();
        assert_eq!(defaults.engine.mqtt_addr.to_string(), "0.0.0.0:1883");
        assert_eq!(defaults.data_dir, PathBuf::from("./data"));
        assert_eq!(defaults.log_level, LevelFilter::INFO);
    }

    #[test]
    fn file_overrides_defaults_and_flags_override_file() {
        let file = "max_inflight = 3\nreceive_maximum = 9\nlog_level = \"debug\"\n";
        let settings = merge(file, &["--max-inflight", "5", "--data-dir", "/var/raftmq"]).unwrap();
        assert_eq!(settings.engine.max_inflight, 5, "flag wins over file");
        assert_eq!(settings.engine.receive_maximum, 9, "file wins over default");
        assert_eq!(settings.log_level, LevelFilter::DEBUG);
        assert_eq!(settings.data_dir, PathBuf::from("/var/raftmq"));
        assert_eq!(settings.engine.max_connections, 100_000, "default stays");
    }

    #[test]
    fn every_flag_is_merged() {
        let settings = merge(
            "",
            &[
                "--mqtt-addr=127.0.0.1:1999",
                "--max-packet-size=2048",
                "--max-connections=7",
                "--max-inflight=8",
                "--receive-maximum=9",
                "--max-queued-messages=10",
                "--queue-policy=backpressure",
                "--connect-timeout-secs=11",
                "--max-keep-alive-secs=12",
                "--max-session-expiry-secs=13",
                "--topic-alias-maximum=14",
                "--worker-threads=3",
                "--log-level=trace",
                "--data-dir=d",
            ],
        )
        .unwrap();
        let expected = Settings {
            data_dir: PathBuf::from("d"),
            log_level: LevelFilter::TRACE,
            engine: Config {
                mqtt_addr: "127.0.0.1:1999".parse().unwrap(),
                max_packet_size: 2048,
                max_connections: 7,
                max_inflight: 8,
                receive_maximum: 9,
                max_queued_messages: 10,
                queue_policy: QueuePolicy::Backpressure,
                connect_timeout_secs: 11,
                max_keep_alive_secs: 12,
                max_session_expiry_secs: 13,
                topic_alias_maximum: 14,
                worker_threads: 3,
                acl: Vec::new(),
            },
        };
        assert_eq!(settings, expected);
    }

    #[test]
    fn acl_tables_are_read() {
        let file = "[[acl]]\npermission = \"deny\"\naction = \"publish\"\ntopic = \"a/#\"\n\
                    username = \"bob\"\n";
        let acl = merge(file, &[]).unwrap().engine.acl;
        assert_eq!(acl.len(), 1);
        assert_eq!(acl[0].permission, Permission::Deny);
        assert_eq!(acl[0].action, AclAction::Publish);
        assert_eq!(acl[0].username.as_deref(), Some("bob"));
        assert_eq!(acl[0].client_id, None);
    }

    #[test]
    fn errors_name_the_setting() {
        let cases = [
            ("bogus = 1", "unknown field `bogus` (known: acl,"),
            (
                "max_inflight = \"a\"",
                "max_inflight: invalid type: string \"a\"",
            ),
            (
                "max_inflight = 70000",
                "max_inflight: invalid value: integer `70000`",
            ),
            (
                "mqtt_addr = \"localhost\"",
                "mqtt_addr: invalid socket address syntax",
            ),
            (
                "queue_policy = \"block\"",
                "queue_policy: unknown variant `block`",
            ),
            ("log_level = \"loud\"", "log_level: "),
            ("data_dir = 5", "data_dir: invalid type: integer `5`"),
            (
                "[[acl]]\npermission = \"deny\"\naction = \"read\"\ntopic = \"a\"",
                "acl[0].action: unknown variant `read`",
            ),
            (
                "[[acl]]\npermission = \"deny\"\naction = \"all\"\ntopic = \"a\"\nuser = \"x\"",
                "acl[0].user: unknown field `user`",
            ),
            (
                "[[acl]]\npermission = \"deny\"\naction = \"all\"\ntopic = \"\"",
                "acl[0].topic: ",
            ),
            ("max_inflight = 0", "max_inflight: must be at least 1"),
            ("\n\nmax_inflight = ", "line 3: "),
        ];
        for (file, expected) in cases {
            let err = merge(file, &[]).unwrap_err();
            assert!(err.starts_with(expected), "{file:?}: got {err:?}");
            assert!(!err.contains('\n'), "{file:?}: not one line: {err:?}");
        }
    }

    #[test]
    fn invalid_flag_values_are_caught_by_validation() {
        let err = Settings::load(&cli(&["--max-inflight", "0"])).unwrap_err();
        assert_eq!(err, "max_inflight: must be at least 1");
        let err = Settings::load(&cli(&["--max-packet-size", "3"])).unwrap_err();
        assert!(err.starts_with("max_packet_size: "), "{err}");
    }

    #[test]
    fn unreadable_file_names_the_file() {
        let err = Settings::load(&cli(&["--config", "/nonexistent/raftmq.toml"])).unwrap_err();
        assert!(
            err.starts_with("config file /nonexistent/raftmq.toml: "),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }

    #[test]
    fn printed_defaults_read_back_as_the_defaults() {
        let text = Settings::default().to_toml();
        assert!(text.contains("log_level = \"info\""), "{text}");
        assert!(text.contains("data_dir = \"./data\""), "{text}");
        assert_eq!(Settings::from_toml(&text).unwrap(), Settings::default());
    }

    #[test]
    fn paho_conformance_example_is_valid() {
        let text = include_str!("../../../examples/paho-conformance.toml");
        let settings = merge(text, &[]).unwrap();
        assert_eq!(settings.engine.max_keep_alive_secs, 60);
        assert_eq!(settings.engine.worker_threads, 1);
        let deny = &settings.engine.acl[0];
        assert_eq!(deny.permission, Permission::Deny);
        assert_eq!(deny.action, AclAction::Subscribe);
        assert_eq!(deny.topic, "test/nosubscribe");
        let rest = Config {
            max_keep_alive_secs: 0,
            worker_threads: 0,
            acl: Vec::new(),
            ..settings.engine
        };
        assert_eq!(rest, Config::default(), "everything else is the default");
    }
}
