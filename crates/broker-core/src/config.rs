//! Engine settings. `Config::default()` is the documented default of every setting; the
//! server binary fills it from its TOML file and flags, then calls [`Config::validate`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What happens when a QoS 1/2 message arrives for a session whose queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum QueuePolicy {
    /// Drop the new message for that session; count it and log it (rate-limited).
    #[default]
    Drop,
    /// Stop reading the publisher's socket until the subscriber's queue has room, so
    /// that TCP slows the publisher down. Offline sessions still drop.
    Backpressure,
}

/// How JWT passwords are signed: HS256 with a shared secret, RS256 / ES256 with the
/// issuer's public key (PEM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum JwtAlgorithm {
    #[default]
    HS256,
    RS256,
    ES256,
}

/// Who an access rule applies to, and what it allows or denies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// `allow` or `deny`.
    pub permission: Permission,
    /// `publish`, `subscribe` or `all`.
    pub action: AclAction,
    /// A topic filter (`+` and `#` allowed). A PUBLISH is covered when its topic matches
    /// it; a SUBSCRIBE when its filter, read level by level, lies within it. `%c` stands
    /// for the client's id and `%u` for its username (see `acl`).
    pub topic: String,
    /// Only this client id; any client when absent.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Only this username; any user when absent.
    #[serde(default)]
    pub username: Option<String>,
}

/// Push pacing: deliveries of messages whose topic matches `topic` leave this node at
/// most `rate` per second, spread evenly over the subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacingRule {
    /// A topic filter (`+` and `#` allowed); the first matching rule paces a message.
    pub topic: String,
    /// Deliveries per second on this node.
    pub rate: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclAction {
    Publish,
    Subscribe,
    All,
}

/// Every engine setting. Time values are whole seconds so that the TOML file and the
/// flags read the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// MQTT over TCP listener.
    pub mqtt_addr: SocketAddr,
    /// MQTT over TLS listener (off unless set; 8883 is the usual port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_addr: Option<SocketAddr>,
    /// MQTT over WebSocket listener, path /mqtt (off unless set; 8083 is usual).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws_addr: Option<SocketAddr>,
    /// MQTT over WebSocket with TLS, path /mqtt (off unless set; 8084 is usual).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wss_addr: Option<SocketAddr>,
    /// PEM certificate chain (leaf first) for the TLS and WSS listeners.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of that certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates: when set, TLS clients must present a certificate signed by
    /// one of them (mutual TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Take a TLS client's username from its certificate's subject common name (CN),
    /// whatever its CONNECT says (needs `tls_client_ca_file`).
    pub tls_use_identity_as_username: bool,
    /// Largest packet accepted from or sent to a client, in bytes (whole packet).
    pub max_packet_size: u32,
    /// Most concurrent client connections; further CONNECTs are refused (server busy).
    pub max_connections: usize,
    /// Outbound QoS 1/2 window per client: 3.1.1 clients get this many unacknowledged
    /// messages; 5.0 clients the smaller of this and their Receive Maximum.
    pub max_inflight: u16,
    /// Inbound window advertised to 5.0 clients as Receive Maximum; a client that
    /// exceeds it is disconnected (0x93).
    pub receive_maximum: u16,
    /// Messages held per session beyond the in-flight window (QoS 1/2 while offline or
    /// slow, QoS 0 while online and slow).
    pub max_queued_messages: usize,
    /// What happens when that queue is full.
    pub queue_policy: QueuePolicy,
    /// Seconds a new connection has to send its CONNECT.
    pub connect_timeout_secs: u64,
    /// Cap on client keep-alive, seconds. 5.0 clients asking for more (or for none) are
    /// told the cap via Server Keep Alive; 3.1.1 clients, who cannot be told, are
    /// refused (CONNACK 0x02). 0 means no cap.
    pub max_keep_alive_secs: u16,
    /// Cap on session expiry interval, seconds.
    pub max_session_expiry_secs: u32,
    /// Topic aliases a 5.0 client may use towards us (Topic Alias Maximum in CONNACK).
    pub topic_alias_maximum: u16,
    /// Threads serving clients; 0 means one per CPU core. With 1, a single-threaded
    /// runtime handles packets from different connections in the order they arrive, as
    /// a single event loop does.
    pub worker_threads: usize,
    /// Users and their argon2 password hashes, one `user:$argon2id$...` per line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Whether clients without a password may connect. `None`: only when neither
    /// `password_file` nor `jwt_key_file` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_anonymous: Option<bool>,
    /// Key that JWT passwords are checked with: the HS256 secret, or the RS256 / ES256
    /// public key in PEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_key_file: Option<PathBuf>,
    /// Signature algorithm of JWT passwords.
    pub jwt_algorithm: JwtAlgorithm,
    /// JWT claim that holds the username.
    pub jwt_username_claim: String,
    /// Publish / subscribe access rules, first match wins; no match allows.
    pub acl: Vec<AclRule>,
    /// Subscriptions one session may hold; further filters are refused (SUBACK 0x97,
    /// 3.1.1: 0x80). Replacing an existing subscription is always allowed.
    pub max_subscriptions_per_session: usize,
    /// Longest topic name or filter, in bytes (publish topics, subscription filters).
    pub max_topic_length: usize,
    /// Most levels in a topic name or filter (`a/b/c` has 3).
    pub max_topic_levels: usize,
    /// Retained messages in the cluster. Setting a new retained topic past it is
    /// refused; replacing or clearing an existing one is always allowed.
    pub max_retained_messages: usize,
    /// Bytes of retained messages (topic + payload) in the cluster, likewise.
    pub max_retained_bytes: u64,
    /// Retained messages one client id may have set, likewise.
    pub max_retained_per_client: usize,
    /// Persistent sessions (session expiry above 0) in the cluster; a CONNECT that
    /// would create one more is refused (CONNACK 0x97, 3.1.1: 0x03). Resuming or
    /// replacing an existing one is always allowed.
    pub max_persistent_sessions: usize,
    /// Inbound QoS 2 messages a 3.1.1 client may leave awaiting PUBREL; one more closes
    /// the connection. 5.0 clients are held to `receive_maximum` instead, which they
    /// are told.
    pub max_inflight_qos2: u16,
    /// Seconds between two publications of this node's `$SYS` topics to its own
    /// subscribers; 0 turns them off.
    pub sys_interval_secs: u64,
    /// New connections this node accepts per second, all listeners together (0: no
    /// limit). The excess waits in the kernel's accept queue, so a reconnect storm is
    /// absorbed rather than refused.
    pub max_connect_rate: u32,
    /// PUBLISH packets per second one client may send, with a second's worth of burst
    /// (0: no limit). Over it, a 5.0 client is disconnected with 0x96 (message rate too
    /// high) and a 3.1.1 client, which has no such code, is not read until its rate
    /// allows.
    pub max_publish_rate: u32,
    /// Bytes per second one client may send, all packets (0: no limit): its socket is
    /// not read until its rate allows.
    pub max_inbound_bytes_rate: u64,
    /// Resident memory high-water mark in MiB (0: none). Above it, new connections are
    /// refused as server busy and QoS 0 deliveries are dropped.
    pub max_memory_mb: u64,
    /// Push pacing rules (`[[pacing]]` tables), first match wins.
    pub pacing: Vec<PacingRule>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mqtt_addr: "0.0.0.0:1883".parse().expect("literal address"),
            tls_addr: None,
            ws_addr: None,
            wss_addr: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            tls_use_identity_as_username: false,
            max_packet_size: 1024 * 1024,
            max_connections: 100_000,
            max_inflight: 32,
            receive_maximum: 64,
            max_queued_messages: 1000,
            queue_policy: QueuePolicy::Drop,
            connect_timeout_secs: 10,
            max_keep_alive_secs: 0,
            max_session_expiry_secs: u32::MAX,
            topic_alias_maximum: 16,
            worker_threads: 0,
            password_file: None,
            allow_anonymous: None,
            jwt_key_file: None,
            jwt_algorithm: JwtAlgorithm::HS256,
            jwt_username_claim: "sub".to_string(),
            acl: Vec::new(),
            max_subscriptions_per_session: 1000,
            max_topic_length: 1024,
            max_topic_levels: 32,
            max_retained_messages: 100_000,
            max_retained_bytes: 128 * 1024 * 1024,
            max_retained_per_client: 1000,
            max_persistent_sessions: 100_000,
            max_inflight_qos2: 64,
            sys_interval_secs: 10,
            max_connect_rate: 0,
            max_publish_rate: 0,
            max_inbound_bytes_rate: 0,
            max_memory_mb: 0,
            pacing: Vec::new(),
        }
    }
}

impl Config {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// Whether clients must authenticate: a password file or a JWT key is configured.
    pub fn auth_enabled(&self) -> bool {
        self.password_file.is_some() || self.jwt_key_file.is_some()
    }

    /// `allow_anonymous` as given, or its default: true unless authentication is on.
    pub fn allows_anonymous(&self) -> bool {
        self.allow_anonymous.unwrap_or(!self.auth_enabled())
    }

    /// Checks every setting; the error names the setting and says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !(16..=268_435_460).contains(&self.max_packet_size) {
            return Err(format!(
                "max_packet_size: {} is outside 16..=268435460",
                self.max_packet_size
            ));
        }
        if self.max_connections == 0 {
            return Err("max_connections: must be at least 1".into());
        }
        if self.max_inflight == 0 {
            return Err("max_inflight: must be at least 1".into());
        }
        if self.receive_maximum == 0 {
            return Err("receive_maximum: must be at least 1".into());
        }
        if self.max_queued_messages == 0 {
            return Err("max_queued_messages: must be at least 1".into());
        }
        if self.worker_threads > 1024 {
            return Err(format!(
                "worker_threads: {} is more than 1024",
                self.worker_threads
            ));
        }
        if self.connect_timeout_secs == 0 {
            return Err("connect_timeout_secs: must be at least 1".into());
        }
        let tls_listener = self.tls_addr.is_some() || self.wss_addr.is_some();
        match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) if tls_listener => {
                return Err("tls_addr / wss_addr: need tls_cert_file and tls_key_file".into())
            }
            (Some(_), None) => return Err("tls_cert_file: needs tls_key_file too".into()),
            (None, Some(_)) => return Err("tls_key_file: needs tls_cert_file too".into()),
            _ => {}
        }
        if self.tls_client_ca_file.is_some() && !tls_listener {
            return Err("tls_client_ca_file: no TLS listener (tls_addr or wss_addr)".into());
        }
        if self.tls_use_identity_as_username && self.tls_client_ca_file.is_none() {
            return Err("tls_use_identity_as_username: needs tls_client_ca_file".into());
        }
        if !self.allows_anonymous() && !self.auth_enabled() {
            return Err(
                "allow_anonymous: false needs password_file or jwt_key_file \
                        (no client could connect)"
                    .into(),
            );
        }
        if self.jwt_username_claim.is_empty() {
            return Err("jwt_username_claim: must not be empty".into());
        }
        if !(1..=65_535).contains(&self.max_topic_length) {
            return Err(format!(
                "max_topic_length: {} is outside 1..=65535",
                self.max_topic_length
            ));
        }
        if self.max_topic_levels == 0 {
            return Err("max_topic_levels: must be at least 1".into());
        }
        if self.max_inflight_qos2 == 0 {
            return Err("max_inflight_qos2: must be at least 1".into());
        }
        for (i, rule) in self.pacing.iter().enumerate() {
            if !crate::topic::valid_topic_filter(&rule.topic) {
                return Err(format!(
                    "pacing[{i}].topic: {:?} is not a valid topic filter",
                    rule.topic
                ));
            }
            if rule.rate == 0 {
                return Err(format!("pacing[{i}].rate: must be at least 1"));
            }
        }
        for (i, rule) in self.acl.iter().enumerate() {
            if !crate::topic::valid_topic_filter(&rule.topic) {
                return Err(format!(
                    "acl[{i}].topic: {:?} is not a valid topic filter",
                    rule.topic
                ));
            }
        }
        Ok(())
    }
}
