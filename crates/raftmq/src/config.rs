//! The server's settings: the engine's `Config` plus the binary's own keys (`data_dir`,
//! `log_level`, the cluster's), merged as defaults ← TOML file ← flags. Errors are one
//! line naming the setting, ready for `raftmq: error: …`.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use broker_core::Config;
use serde::{Deserialize, Serialize};
use tracing::level_filters::LevelFilter;

use crate::cli::Cli;

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The node's durable state: Raft log, sessions, retained messages.
    pub data_dir: PathBuf,
    /// Used when RUST_LOG is not set.
    pub log_level: LevelFilter,
    pub cluster: ClusterSettings,
    pub engine: Config,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("./data"),
            log_level: LevelFilter::INFO,
            cluster: ClusterSettings::default(),
            engine: Config::default(),
        }
    }
}

/// Where this node sits in a cluster and how it finds the others. In the file these are
/// top-level keys like every other setting; the struct only groups them for the code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// Unique in the cluster. `None` is allowed only for a node starting alone, which
    /// takes `DEFAULT_NODE_ID`; a joining node must be told, since two nodes picking the
    /// same default would corrupt each other's Raft state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u64>,
    /// Listener of the node-to-node transport (Raft RPCs, forwarded publishes).
    pub cluster_addr: SocketAddr,
    /// host:port that peers dial to reach `cluster_addr`, when that differs (containers,
    /// NAT, a wildcard listen address). `None`: derived from `cluster_addr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_addr: Option<String>,
    /// host:port cluster addresses of existing members to ask for admission; empty to
    /// start alone (or to restart from `data_dir`).
    pub join: Vec<String>,
    /// How long a new node keeps trying its `join` addresses before giving up.
    pub join_timeout_secs: u64,
    /// Listener of the HTTP API (health, readiness, cluster status and membership).
    pub http_addr: SocketAddr,
    /// File holding the cluster secret every node must prove it knows (`Secrets`).
    /// `None` (and no `RAFTMQ_CLUSTER_SECRET`, and no cluster TLS): no `join`, and
    /// loopback peers only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Cluster TLS (all three or none): this node's certificate chain and key, and the
    /// cluster CA that peers' certificates must chain to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_tls_cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_tls_key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_tls_ca_file: Option<PathBuf>,
    /// File holding the bearer token of the HTTP endpoints that change the cluster.
    /// `None` (and no `RAFTMQ_ADMIN_TOKEN`): those endpoints refuse every request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
}

/// The node id of a node started without `--node-id` (and without `--join`).
pub const DEFAULT_NODE_ID: u64 = 1;

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            node_id: None,
            cluster_addr: SocketAddr::from(([0, 0, 0, 0], 7000)),
            advertise_addr: None,
            join: Vec::new(),
            join_timeout_secs: 60,
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            cluster_secret_file: None,
            cluster_tls_cert_file: None,
            cluster_tls_key_file: None,
            cluster_tls_ca_file: None,
            admin_token_file: None,
        }
    }
}

/// The cluster's keys, taken out of the file's flat table before the engine's are read.
const CLUSTER_KEYS: [&str; 11] = [
    "node_id",
    "cluster_addr",
    "advertise_addr",
    "join",
    "join_timeout_secs",
    "http_addr",
    "cluster_secret_file",
    "cluster_tls_cert_file",
    "cluster_tls_key_file",
    "cluster_tls_ca_file",
    "admin_token_file",
];

/// Settings without a default value: absent from the printed file (TOML has no null),
/// which shows them as these commented lines instead, each before the line of the
/// key it is grouped with.
const UNSET_EXAMPLES: [(&str, &str, &str); 16] = [
    (
        "node_id",
        "cluster_addr",
        "# node_id = 1                      # required with join",
    ),
    (
        "advertise_addr",
        "cluster_addr",
        "# advertise_addr = \"raftmq-1:7000\" # default: derived from cluster_addr",
    ),
    (
        "tls_addr",
        "tls_use_identity_as_username",
        "# tls_addr = \"0.0.0.0:8883\"        # MQTT over TLS: off unless set",
    ),
    (
        "ws_addr",
        "tls_use_identity_as_username",
        "# ws_addr = \"0.0.0.0:8083\"         # MQTT over WebSocket (/mqtt): off unless set",
    ),
    (
        "wss_addr",
        "tls_use_identity_as_username",
        "# wss_addr = \"0.0.0.0:8084\"        # WebSocket over TLS (/mqtt): off unless set",
    ),
    (
        "tls_cert_file",
        "tls_use_identity_as_username",
        "# tls_cert_file = \"server.pem\"     # PEM chain, leaf first",
    ),
    (
        "tls_key_file",
        "tls_use_identity_as_username",
        "# tls_key_file = \"server.key\"      # PEM private key",
    ),
    (
        "tls_client_ca_file",
        "tls_use_identity_as_username",
        "# tls_client_ca_file = \"ca.pem\"    # require client certificates (mTLS)",
    ),
    (
        "password_file",
        "jwt_algorithm",
        "# password_file = \"/etc/raftmq/passwords\" # default: none (see raftmq passwd)",
    ),
    (
        "allow_anonymous",
        "jwt_algorithm",
        "# allow_anonymous = false          # default: true without password_file and \
         jwt_key_file",
    ),
    (
        "jwt_key_file",
        "jwt_algorithm",
        "# jwt_key_file = \"/etc/raftmq/jwt.key\" # default: none",
    ),
    (
        "cluster_secret_file",
        "cluster_addr",
        "# cluster_secret_file = \"/etc/raftmq/cluster.secret\" # required with join \
         (or cluster TLS)",
    ),
    (
        "cluster_tls_cert_file",
        "cluster_addr",
        "# cluster_tls_cert_file = \"/etc/raftmq/node.pem\" # cluster mTLS: DNS raftmq-cluster",
    ),
    (
        "cluster_tls_key_file",
        "cluster_addr",
        "# cluster_tls_key_file = \"/etc/raftmq/node.key\"",
    ),
    (
        "cluster_tls_ca_file",
        "cluster_addr",
        "# cluster_tls_ca_file = \"/etc/raftmq/cluster-ca.pem\" # the CA peers must chain to",
    ),
    (
        "admin_token_file",
        "cluster_addr",
        "# admin_token_file = \"/etc/raftmq/admin.token\" # for POST /cluster/...",
    ),
];

impl ClusterSettings {
    /// This node's id: the one given, or `DEFAULT_NODE_ID` for a node starting alone.
    pub fn id(&self) -> u64 {
        self.node_id.unwrap_or(DEFAULT_NODE_ID)
    }

    /// Checks what the types cannot: addresses that are host names, and node ids.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(addr) = &self.advertise_addr {
            check_host_port(addr).map_err(|e| format!("advertise_addr: {e}"))?;
        }
        for addr in &self.join {
            check_host_port(addr).map_err(|e| format!("join: {e}"))?;
        }
        if !self.join.is_empty() && self.node_id.is_none() {
            return Err("node_id: required with join \
                        (each node of a cluster needs a unique --node-id)"
                .to_string());
        }
        if self.join_timeout_secs == 0 {
            return Err("join_timeout_secs: must be at least 1".to_string());
        }
        self.cluster_tls()?;
        Ok(())
    }

    /// The cluster TLS files: all three, or none (`Ok(None)`); an error names the
    /// missing ones.
    pub fn cluster_tls(&self) -> Result<Option<cluster::TlsFiles>, String> {
        let files = [
            ("cluster_tls_cert_file", &self.cluster_tls_cert_file),
            ("cluster_tls_key_file", &self.cluster_tls_key_file),
            ("cluster_tls_ca_file", &self.cluster_tls_ca_file),
        ];
        match (
            &self.cluster_tls_cert_file,
            &self.cluster_tls_key_file,
            &self.cluster_tls_ca_file,
        ) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(cluster::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })),
            _ => {
                let missing: Vec<&str> = files
                    .iter()
                    .filter(|(_, file)| file.is_none())
                    .map(|(key, _)| *key)
                    .collect();
                Err(format!(
                    "{}: missing; cluster TLS needs all three of --cluster-tls-cert-file, \
                     --cluster-tls-key-file and --cluster-tls-ca-file",
                    missing.join(", ")
                ))
            }
        }
    }
}

/// Accepts `host:port` as a peer would dial it: a non-empty host name or address (IPv6 in
/// brackets) and a port from 1 to 65535. The host is not resolved here: it may name a
/// peer that is not up yet.
pub fn check_host_port(addr: &str) -> Result<(), String> {
    let bad = |why: &str| format!("`{addr}` is not host:port ({why})");
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.contains(':') && !bracketed {
        return Err(bad("an IPv6 address goes in brackets"));
    }
    if host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(bad("invalid host"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad("the port must be 1 to 65535")),
        Ok(_) => Ok(()),
    }
}

/// The environment variable holding the cluster secret itself (for containers).
pub const SECRET_ENV: &str = "RAFTMQ_CLUSTER_SECRET";
/// The environment variable holding the admin token itself.
pub const TOKEN_ENV: &str = "RAFTMQ_ADMIN_TOKEN";

/// The secrets named by the settings, read once at start-up. Kept out of [`Settings`]
/// so that the settings can be printed and compared without them.
#[derive(Debug, Default)]
pub struct Secrets {
    /// What peers prove they know; `None` (and no `cluster_tls`): loopback peers only,
    /// no `join`.
    pub cluster: Option<cluster::Secret>,
    /// The cluster port's mutual TLS: this node's certificate and key, the cluster CA.
    pub cluster_tls: Option<Arc<cluster::Tls>>,
    /// The bearer token of the admin endpoints; `None`: they refuse every request.
    pub admin_token: Option<cluster::Secret>,
}

impl Secrets {
    /// Reads the secret files (or the environment) and the cluster TLS files that `c`
    /// names; refuses a `join` without a cluster secret or cluster TLS.
    pub fn load(c: &ClusterSettings, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let cluster = read_secret(
            "cluster_secret_file",
            c.cluster_secret_file.as_deref(),
            SECRET_ENV,
            env(SECRET_ENV),
        )?;
        let admin_token = read_secret(
            "admin_token_file",
            c.admin_token_file.as_deref(),
            TOKEN_ENV,
            env(TOKEN_ENV),
        )?;
        let cluster_tls = match c.cluster_tls()? {
            Some(files) => Some(Arc::new(
                cluster::Tls::load(files).map_err(|e| format!("cluster TLS: {e}"))?,
            )),
            None => None,
        };
        if cluster.is_none() && cluster_tls.is_none() && !c.join.is_empty() {
            return Err(format!(
                "join: needs a cluster secret, the same on every node: \
                 --cluster-secret-file FILE (or {SECRET_ENV}); e.g. `openssl rand -hex 32 > FILE`; \
                 or cluster TLS (--cluster-tls-cert-file, --cluster-tls-key-file, \
                 --cluster-tls-ca-file)"
            ));
        }
        Ok(Secrets {
            cluster,
            cluster_tls,
            admin_token,
        })
    }
}

/// A secret from `file` or from the environment variable `var` (`value`), trimmed: at
/// most one of the two, and at least `cluster::Secret`'s minimum length.
pub fn read_secret(
    key: &str,
    file: Option<&Path>,
    var: &str,
    value: Option<String>,
) -> Result<Option<cluster::Secret>, String> {
    let (text, from) = match (file, value) {
        (Some(_), Some(_)) => {
            return Err(format!("{key}: {var} is set too; give one of the two"));
        }
        (Some(path), None) => {
            let text = fs::read_to_string(path)
                .map_err(|e| format!("{key} {}: cannot read: {e}", path.display()))?;
            (text, format!("{key} {}", path.display()))
        }
        (None, Some(value)) => (value, var.to_string()),
        (None, None) => return Ok(None),
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("{from}: empty"));
    }
    cluster::Secret::new(text)
        .map(Some)
        .map_err(|e| format!("{from}: {e}"))
}

/// The file's shape when written out: the binary's keys first, then the engine's, flat.
#[derive(Serialize)]
struct FileView<'a> {
    data_dir: &'a Path,
    log_level: String,
    #[serde(flatten)]
    cluster: &'a ClusterSettings,
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

const PACING_EXAMPLE: &str = "\
# Push pacing: deliveries of matching messages leave this node at most `rate` per
# second, spread over the subscribers. Replace `pacing = []` with tables like
# [[pacing]]
# topic = \"fleet/broadcast/#\"   # a topic filter; + and # allowed
# rate = 200                      # deliveries per second on this node
";

impl Settings {
    /// Defaults, then the `--config` file, then the flags; validated.
    pub fn load(cli: &Cli) -> Result<Settings, String> {
        let mut settings = match &cli.config {
            Some(path) => Settings::read_file(path)?,
            None => Settings::default(),
        };
        settings.apply_flags(cli);
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), String> {
        self.cluster.validate()?;
        self.engine.validate()
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
        let known = Settings::keys();
        if let Some(key) = table.keys().find(|key| !known.contains(key)) {
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
        let cluster: toml::Table = CLUSTER_KEYS
            .iter()
            .filter_map(|key| Some((key.to_string(), table.remove(*key)?)))
            .collect();
        settings.cluster = deserialize_named(cluster)?;
        settings.engine = deserialize_named(table)?;
        Ok(settings)
    }

    /// Every key a file may hold, sorted: those printed with their default, plus the
    /// unset ones.
    pub(crate) fn keys() -> Vec<String> {
        let mut keys: Vec<String> = Settings::default().to_table().keys().cloned().collect();
        keys.extend(UNSET_EXAMPLES.map(|(key, _, _)| key.to_string()));
        keys.sort();
        keys
    }

    /// Every flag given replaces the value from the file or the default. The exhaustive
    /// destructuring makes a new flag fail to compile until it is merged here.
    fn apply_flags(&mut self, cli: &Cli) {
        let Cli {
            config: _,
            print_default_config: _,
            command: _,
            data_dir,
            log_level,
            node_id,
            cluster_addr,
            advertise_addr,
            join,
            join_timeout_secs,
            http_addr,
            cluster_secret_file,
            cluster_tls_cert_file,
            cluster_tls_key_file,
            cluster_tls_ca_file,
            admin_token_file,
            mqtt_addr,
            tls_addr,
            ws_addr,
            wss_addr,
            tls_cert_file,
            tls_key_file,
            tls_client_ca_file,
            tls_use_identity_as_username,
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
            password_file,
            allow_anonymous,
            jwt_key_file,
            jwt_algorithm,
            jwt_username_claim,
            max_subscriptions_per_session,
            max_topic_length,
            max_topic_levels,
            max_retained_messages,
            max_retained_bytes,
            max_retained_per_client,
            max_persistent_sessions,
            max_inflight_qos2,
            sys_interval_secs,
            max_connect_rate,
            max_publish_rate,
            max_inbound_bytes_rate,
            max_memory_mb,
        } = cli;
        let engine = &mut self.engine;
        set(&mut self.data_dir, data_dir);
        set(&mut self.log_level, log_level);
        let cluster = &mut self.cluster;
        set_optional(&mut cluster.node_id, node_id);
        set(&mut cluster.cluster_addr, cluster_addr);
        set_optional(&mut cluster.advertise_addr, advertise_addr);
        set(&mut cluster.join, join);
        set(&mut cluster.join_timeout_secs, join_timeout_secs);
        set(&mut cluster.http_addr, http_addr);
        set_optional(&mut cluster.cluster_secret_file, cluster_secret_file);
        set_optional(&mut cluster.cluster_tls_cert_file, cluster_tls_cert_file);
        set_optional(&mut cluster.cluster_tls_key_file, cluster_tls_key_file);
        set_optional(&mut cluster.cluster_tls_ca_file, cluster_tls_ca_file);
        set_optional(&mut cluster.admin_token_file, admin_token_file);
        set(&mut engine.mqtt_addr, mqtt_addr);
        set_optional(&mut engine.tls_addr, tls_addr);
        set_optional(&mut engine.ws_addr, ws_addr);
        set_optional(&mut engine.wss_addr, wss_addr);
        set_optional(&mut engine.tls_cert_file, tls_cert_file);
        set_optional(&mut engine.tls_key_file, tls_key_file);
        set_optional(&mut engine.tls_client_ca_file, tls_client_ca_file);
        set(
            &mut engine.tls_use_identity_as_username,
            tls_use_identity_as_username,
        );
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
        set_optional(&mut engine.password_file, password_file);
        set_optional(&mut engine.allow_anonymous, allow_anonymous);
        set_optional(&mut engine.jwt_key_file, jwt_key_file);
        set(&mut engine.jwt_algorithm, jwt_algorithm);
        set(&mut engine.jwt_username_claim, jwt_username_claim);
        set(
            &mut engine.max_subscriptions_per_session,
            max_subscriptions_per_session,
        );
        set(&mut engine.max_topic_length, max_topic_length);
        set(&mut engine.max_topic_levels, max_topic_levels);
        set(&mut engine.max_retained_messages, max_retained_messages);
        set(&mut engine.max_retained_bytes, max_retained_bytes);
        set(&mut engine.max_retained_per_client, max_retained_per_client);
        set(&mut engine.max_persistent_sessions, max_persistent_sessions);
        set(&mut engine.max_inflight_qos2, max_inflight_qos2);
        set(&mut engine.sys_interval_secs, sys_interval_secs);
        set(&mut engine.max_connect_rate, max_connect_rate);
        set(&mut engine.max_publish_rate, max_publish_rate);
        set(&mut engine.max_inbound_bytes_rate, max_inbound_bytes_rate);
        set(&mut engine.max_memory_mb, max_memory_mb);
    }

    /// The settings as a TOML file would hold them. Unset optional settings show as
    /// commented examples before the key `UNSET_EXAMPLES` names for each.
    pub fn to_toml(&self) -> String {
        let values = toml::to_string(&self.view()).expect("settings serialize to TOML");
        let table = self.to_table();
        let mut text = String::with_capacity(values.len() + 1024);
        for line in values.lines() {
            for (key, before, example) in UNSET_EXAMPLES {
                if line.starts_with(&format!("{before} =")) && !table.contains_key(key) {
                    text.push_str(example);
                    text.push('\n');
                }
            }
            text.push_str(line);
            text.push('\n');
        }
        if self.engine.acl.is_empty() {
            text.push('\n');
            text.push_str(ACL_EXAMPLE);
        }
        if self.engine.pacing.is_empty() {
            text.push('\n');
            text.push_str(PACING_EXAMPLE);
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
            cluster: &self.cluster,
            engine: &self.engine,
        }
    }
}

fn set<T: Clone>(setting: &mut T, flag: &Option<T>) {
    if let Some(value) = flag {
        *setting = value.clone();
    }
}

/// For settings that may stay unset: a flag sets them, an absent flag leaves them be.
fn set_optional<T: Clone>(setting: &mut Option<T>, flag: &Option<T>) {
    if flag.is_some() {
        setting.clone_from(flag);
    }
}

/// Serde errors prefixed with their path (`acl[0].action: …`), so the message names the
/// setting.
fn deserialize_named<T: for<'de> Deserialize<'de>>(table: toml::Table) -> Result<T, String> {
    serde_path_to_error::deserialize(toml::Value::Table(table))
        .map_err(|e| format!("{}: {}", e.path(), e.inner().message()))
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
        settings.validate()?;
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
                "--tls-addr=127.0.0.1:8883",
                "--ws-addr=127.0.0.1:8083",
                "--wss-addr=127.0.0.1:8084",
                "--tls-cert-file=c.pem",
                "--tls-key-file=k.pem",
                "--tls-client-ca-file=ca.pem",
                "--tls-use-identity-as-username=true",
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
                "--max-subscriptions-per-session=15",
                "--max-topic-length=16",
                "--max-topic-levels=17",
                "--max-retained-messages=18",
                "--max-retained-bytes=19",
                "--max-retained-per-client=20",
                "--max-persistent-sessions=21",
                "--max-inflight-qos2=22",
                "--sys-interval-secs=23",
                "--max-connect-rate=23",
                "--max-publish-rate=24",
                "--max-inbound-bytes-rate=25",
                "--max-memory-mb=26",
                "--log-level=trace",
                "--data-dir=d",
                "--node-id=4",
                "--cluster-addr=127.0.0.4:7004",
                "--advertise-addr=raftmq-4:7004",
                "--join=raftmq-1:7000,raftmq-2:7000",
                "--join-timeout-secs=5",
                "--http-addr=127.0.0.4:8084",
                "--password-file=p",
                "--allow-anonymous=true",
                "--jwt-key-file=k",
                "--jwt-algorithm=RS256",
                "--jwt-username-claim=device",
                "--cluster-secret-file=/s",
                "--cluster-tls-cert-file=/n.pem",
                "--cluster-tls-key-file=/n.key",
                "--cluster-tls-ca-file=/ca.pem",
                "--admin-token-file=/t",
            ],
        )
        .unwrap();
        let expected = Settings {
            data_dir: PathBuf::from("d"),
            log_level: LevelFilter::TRACE,
            cluster: ClusterSettings {
                node_id: Some(4),
                cluster_addr: "127.0.0.4:7004".parse().unwrap(),
                advertise_addr: Some("raftmq-4:7004".into()),
                join: vec!["raftmq-1:7000".into(), "raftmq-2:7000".into()],
                join_timeout_secs: 5,
                http_addr: "127.0.0.4:8084".parse().unwrap(),
                cluster_secret_file: Some("/s".into()),
                cluster_tls_cert_file: Some("/n.pem".into()),
                cluster_tls_key_file: Some("/n.key".into()),
                cluster_tls_ca_file: Some("/ca.pem".into()),
                admin_token_file: Some("/t".into()),
            },
            engine: Config {
                mqtt_addr: "127.0.0.1:1999".parse().unwrap(),
                tls_addr: Some("127.0.0.1:8883".parse().unwrap()),
                ws_addr: Some("127.0.0.1:8083".parse().unwrap()),
                wss_addr: Some("127.0.0.1:8084".parse().unwrap()),
                tls_cert_file: Some("c.pem".into()),
                tls_key_file: Some("k.pem".into()),
                tls_client_ca_file: Some("ca.pem".into()),
                tls_use_identity_as_username: true,
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
                password_file: Some("p".into()),
                allow_anonymous: Some(true),
                jwt_key_file: Some("k".into()),
                jwt_algorithm: broker_core::JwtAlgorithm::RS256,
                jwt_username_claim: "device".into(),
                acl: Vec::new(),
                max_subscriptions_per_session: 15,
                max_topic_length: 16,
                max_topic_levels: 17,
                max_retained_messages: 18,
                max_retained_bytes: 19,
                max_retained_per_client: 20,
                max_persistent_sessions: 21,
                max_inflight_qos2: 22,
                sys_interval_secs: 23,
                max_connect_rate: 23,
                max_publish_rate: 24,
                max_inbound_bytes_rate: 25,
                max_memory_mb: 26,
                pacing: Vec::new(),
            },
        };
        assert_eq!(settings, expected);
    }

    #[test]
    fn sys_interval_comes_from_the_file_or_the_flag() {
        assert_eq!(Settings::default().engine.sys_interval_secs, 10);
        let interval =
            |file: &str, args: &[&str]| merge(file, args).unwrap().engine.sys_interval_secs;
        assert_eq!(
            interval("sys_interval_secs = 0", &[]),
            0,
            "0 turns $SYS off"
        );
        assert_eq!(
            interval("sys_interval_secs = 30", &["--sys-interval-secs", "5"]),
            5
        );
        let err = merge("sys_interval_secs = -1", &[]).unwrap_err();
        assert!(err.starts_with("sys_interval_secs: invalid value"), "{err}");
        assert!(Settings::default()
            .to_toml()
            .contains("\nsys_interval_secs = 10\n"));
    }

    #[test]
    fn pacing_tables_are_read_and_checked() {
        let file = "[[pacing]]\ntopic = \"fleet/+/cmd\"\nrate = 50\n";
        let pacing = merge(file, &[]).unwrap().engine.pacing;
        assert_eq!(pacing.len(), 1);
        assert_eq!(
            (pacing[0].topic.as_str(), pacing[0].rate),
            ("fleet/+/cmd", 50)
        );
        let zero = merge("[[pacing]]\ntopic = \"a\"\nrate = 0\n", &[]).unwrap_err();
        assert!(
            zero.contains("pacing[0].rate: must be at least 1"),
            "{zero}"
        );
        let bad = merge("[[pacing]]\ntopic = \"a/#/b\"\nrate = 5\n", &[]).unwrap_err();
        assert!(bad.contains("pacing[0].topic"), "{bad}");
        let unknown = merge("[[pacing]]\ntopic = \"a\"\nrat = 5\n", &[]).unwrap_err();
        assert!(unknown.contains("pacing[0]"), "{unknown}");
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
            ("node_id = -1", "node_id: invalid value: integer `-1`"),
            (
                "cluster_addr = \"raftmq-1:7000\"",
                "cluster_addr: invalid socket address syntax",
            ),
            ("join = \"a:1\"", "join: invalid type: string \"a:1\""),
            (
                "node_id = 2\njoin = [\"a:1\", \"b\"]",
                "join: `b` is not host:port (no port)",
            ),
            (
                "advertise_addr = \"h:70000\"",
                "advertise_addr: `h:70000` is not host:port",
            ),
            (
                "join_timeout_secs = 0",
                "join_timeout_secs: must be at least 1",
            ),
            ("\n\nmax_inflight = ", "line 3: "),
        ];
        for (file, expected) in cases {
            let err = merge(file, &[]).unwrap_err();
            assert!(err.starts_with(expected), "{file:?}: got {err:?}");
            assert!(!err.contains('\n'), "{file:?}: not one line: {err:?}");
        }
    }

    #[test]
    fn allow_anonymous_follows_authentication_unless_given() {
        let anonymous =
            |file: &str, args: &[&str]| merge(file, args).map(|s| s.engine.allows_anonymous());
        assert_eq!(anonymous("", &[]), Ok(true));
        assert_eq!(anonymous("password_file = \"p\"", &[]), Ok(false));
        assert_eq!(anonymous("", &["--jwt-key-file", "k"]), Ok(false));
        let explicit = "password_file = \"p\"\nallow_anonymous = true";
        assert_eq!(anonymous(explicit, &[]), Ok(true));
        assert_eq!(
            anonymous(explicit, &["--allow-anonymous", "false"]),
            Ok(false)
        );
        let err = anonymous("allow_anonymous = false", &[]).unwrap_err();
        assert!(
            err.starts_with("allow_anonymous: false needs password_file"),
            "{err}"
        );
        let err = merge("jwt_algorithm = \"none\"", &[]).unwrap_err();
        assert!(
            err.starts_with("jwt_algorithm: unknown variant `none`"),
            "{err}"
        );
    }

    #[test]
    fn cluster_defaults_start_a_node_alone() {
        let cluster = Settings::default().cluster;
        assert_eq!(cluster.node_id, None);
        assert_eq!(cluster.id(), 1);
        assert_eq!(cluster.cluster_addr.to_string(), "0.0.0.0:7000");
        assert_eq!(cluster.advertise_addr, None);
        assert!(cluster.join.is_empty());
        assert_eq!(cluster.join_timeout_secs, 60);
        assert_eq!(cluster.http_addr.to_string(), "0.0.0.0:8080");
    }

    #[test]
    fn join_needs_a_node_id_from_the_file_or_a_flag() {
        let expected = "node_id: required with join \
                        (each node of a cluster needs a unique --node-id)";
        let err = Settings::load(&cli(&["--join", "10.0.0.1:7000"])).unwrap_err();
        assert_eq!(err, expected);
        assert_eq!(merge("join = [\"h:7000\"]", &[]).unwrap_err(), expected);
        let settings = merge("join = [\"h:7000\"]", &["--node-id", "2"]).unwrap();
        assert_eq!(settings.cluster.node_id, Some(2));
        let settings = merge("node_id = 3", &["--join", "h:7000"]).unwrap();
        assert_eq!(settings.cluster.node_id, Some(3));
    }

    #[test]
    fn join_flag_is_a_list_that_replaces_the_files() {
        let file = "node_id = 2\njoin = [\"a:1\", \"b:2\"]";
        assert_eq!(merge(file, &[]).unwrap().cluster.join, ["a:1", "b:2"]);
        let repeated = merge(file, &["--join", "c:3", "--join", "[::1]:4"]).unwrap();
        assert_eq!(repeated.cluster.join, ["c:3", "[::1]:4"]);
        let err = merge("", &["--node-id=2", "--join=a:1,,b:2"]).unwrap_err();
        assert!(err.starts_with("join: `` is not host:port"), "{err}");
    }

    #[test]
    fn host_port_is_checked_without_resolving() {
        for good in [
            "raftmq-1:7000",
            "10.0.0.1:1",
            "[::1]:65535",
            "a.b.example:7000",
        ] {
            assert_eq!(check_host_port(good), Ok(()), "{good}");
        }
        for bad in [
            "raftmq-1", ":7000", "h:", "h:0", "h:65536", "h:x", "::1:7000", "h/x:1",
        ] {
            let err = check_host_port(bad).unwrap_err();
            assert!(
                err.starts_with(&format!("`{bad}` is not host:port (")),
                "{err}"
            );
        }
        let err = Settings::load(&cli(&["--advertise-addr", "nope"])).unwrap_err();
        assert_eq!(err, "advertise_addr: `nope` is not host:port (no port)");
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
        assert!(text.contains("\n# node_id = 1 "), "{text}");
        assert!(text.contains("\n# advertise_addr = "), "{text}");
        assert!(text.contains("\n# password_file = "), "{text}");
        assert!(text.contains("\n# allow_anonymous = "), "{text}");
        assert!(text.contains("\njwt_algorithm = \"HS256\"\n"), "{text}");
        assert!(text.contains("\njoin = []\n"), "{text}");
        assert_eq!(Settings::from_toml(&text).unwrap(), Settings::default());
    }

    #[test]
    fn set_optional_settings_print_as_values() {
        let mut settings = Settings::default();
        settings.cluster.node_id = Some(7);
        settings.cluster.advertise_addr = Some("raftmq-7:7000".into());
        settings.cluster.join = vec!["raftmq-1:7000".into()];
        let text = settings.to_toml();
        assert!(text.contains("\nnode_id = 7\n"), "{text}");
        assert!(!text.contains("# node_id"), "{text}");
        assert!(!text.contains("# advertise_addr"), "{text}");
        assert_eq!(Settings::from_toml(&text).unwrap(), settings);
    }

    #[test]
    fn unset_settings_are_known_keys() {
        let keys = Settings::keys();
        for key in CLUSTER_KEYS {
            assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
        }
        assert!(merge("node_id = 1\nadvertise_addr = \"h:1\"", &[]).is_ok());
    }

    fn secrets(file: &str, env: &[(&str, &str)]) -> Result<Secrets, String> {
        let settings = merge(file, &[])?;
        Secrets::load(&settings.cluster, |var| {
            env.iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn secrets_come_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        fs::write(&good, "  0123456789abcdef0123\n").unwrap();
        let file = format!(
            "cluster_secret_file = {:?}\nadmin_token_file = {:?}",
            good, good
        );
        let s = secrets(&file, &[]).unwrap();
        assert_eq!(
            s.cluster,
            Some(cluster::Secret::new("0123456789abcdef0123").unwrap())
        );
        assert_eq!(s.admin_token, s.cluster, "trimmed");
        let env = [
            (SECRET_ENV, "from-the-environment!"),
            (TOKEN_ENV, "token-from-env-0123"),
        ];
        let s = secrets("", &env).unwrap();
        assert!(s.cluster.unwrap().matches(b"from-the-environment!"));
        assert!(s.admin_token.unwrap().matches(b"token-from-env-0123"));
        let s = secrets("", &[]).unwrap();
        assert!(s.cluster.is_none() && s.admin_token.is_none());
    }

    #[test]
    fn bad_secrets_are_refused_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        fs::write(&short, "0123456789abcde\n").unwrap();
        let empty = dir.path().join("empty");
        fs::write(&empty, " \n").unwrap();
        let missing = dir.path().join("missing");
        let at = |key: &str, path: &Path| format!("{key} = {path:?}");
        let cases = [
            (at("cluster_secret_file", &short), "too short (15 bytes"),
            (at("cluster_secret_file", &empty), ": empty"),
            (at("cluster_secret_file", &missing), ": cannot read: "),
            (at("admin_token_file", &short), "too short (15 bytes"),
            (
                "node_id = 2\njoin = [\"h:1\"]".into(),
                "join: needs a cluster secret",
            ),
        ];
        for (file, expected) in cases {
            let err = secrets(&file, &[]).unwrap_err();
            assert!(err.contains(expected), "{file}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let err = secrets("", &[(SECRET_ENV, "short")]).unwrap_err();
        assert!(err.starts_with("RAFTMQ_CLUSTER_SECRET: too short"), "{err}");
        let both = at("cluster_secret_file", &short);
        let err = secrets(&both, &[(SECRET_ENV, "0123456789abcdef")]).unwrap_err();
        assert!(err.contains("give one of the two"), "{err}");
        let env = [(SECRET_ENV, "0123456789abcdef")];
        assert!(secrets("node_id = 2\njoin = [\"h:1\"]", &env).is_ok());
    }

    #[test]
    fn cluster_tls_needs_all_three_files() {
        let err = merge("", &["--cluster-tls-cert-file=n.pem"]).unwrap_err();
        assert_eq!(
            err,
            "cluster_tls_key_file, cluster_tls_ca_file: missing; cluster TLS needs all three \
             of --cluster-tls-cert-file, --cluster-tls-key-file and --cluster-tls-ca-file"
        );
        let err = merge(
            "cluster_tls_ca_file = \"ca.pem\"",
            &["--cluster-tls-key-file=k"],
        );
        assert!(err
            .unwrap_err()
            .starts_with("cluster_tls_cert_file: missing;"));
        let all = "cluster_tls_cert_file = \"n.pem\"\ncluster_tls_key_file = \"n.key\"\n\
                   cluster_tls_ca_file = \"ca.pem\"";
        let files = merge(all, &[])
            .unwrap()
            .cluster
            .cluster_tls()
            .unwrap()
            .unwrap();
        assert_eq!(files.cert, PathBuf::from("n.pem"));
        assert_eq!(files.key, PathBuf::from("n.key"));
        assert_eq!(files.ca, PathBuf::from("ca.pem"));
        assert_eq!(Settings::default().cluster.cluster_tls(), Ok(None));
        let text = Settings::default().to_toml();
        for key in [
            "cluster_tls_cert_file",
            "cluster_tls_key_file",
            "cluster_tls_ca_file",
        ] {
            assert!(text.contains(&format!("\n# {key} = ")), "{text}");
        }
    }

    /// Cluster TLS files are read at start-up (the error names the file), and let a
    /// node join without a cluster secret.
    #[test]
    fn cluster_tls_files_are_loaded_with_the_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let file = format!(
            "node_id = 2\njoin = [\"h:1\"]\ncluster_tls_cert_file = {missing:?}\n\
             cluster_tls_key_file = {missing:?}\ncluster_tls_ca_file = {missing:?}"
        );
        let err = secrets(&file, &[]).unwrap_err();
        assert!(
            err.starts_with("cluster TLS: ") && err.contains("missing.pem: cannot read"),
            "{err}"
        );
        let err = secrets("node_id = 2\njoin = [\"h:1\"]", &[]).unwrap_err();
        assert!(
            err.contains("or cluster TLS (--cluster-tls-cert-file"),
            "{err}"
        );
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
