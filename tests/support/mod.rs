//! Test harness: runs the real `raftmq` binary as a child process and gives tests
//! clients to talk to it.
//!
//! - [`Broker`]: one broker process on 127.0.0.1 and a free port, SIGKILLed on drop.
//!   Its stderr goes to a file in a temp dir and is printed when the test panics.
//! - [`cluster`]: several nodes forming a Raft cluster, each on its own loopback IP,
//!   their cluster links through [`proxy`], which can cut them (partitions).
//! - [`checker`]: load and verdict for failover scenarios, with [`roaming`] clients
//!   that follow their session to another node.
//! - [`client`]: rumqttc 3.1.1 / 5.0 clients behind one API, over TCP, TLS or WebSocket.
//! - [`certs`]: a CA and certificates made at test time, for the TLS listeners.
//! - [`raw`] and [`codec`]: a byte-level client for wire-exact tests.
//! - [`metrics`]: `GET /metrics` scraped and parsed, and `promtool` when installed.
//! - [`wait_until`]: the only way to wait for a condition (no bare sleeps).
//!
//! Environment knobs:
//! - `RAFTMQ_TEST_LOG` (default `debug`): the broker's `--log-level`.
//! - `RAFTMQ_TEST_BROKER=mosquitto`: run the suite against Mosquitto (`mosquitto` on
//!   PATH) instead of raftmq, to check a test against a reference broker. Settings
//!   without a Mosquitto equivalent (ACL rules, connect timeout, …) make the test panic
//!   with "needs raftmq"; known Mosquitto deviations are listed in the report.

#![allow(dead_code)]

pub mod certs;
pub mod checker;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod metrics;
pub mod proxy;
pub mod raw;
pub mod roaming;

use std::future::Future;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// Bound on every single receive in the tests.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a "nothing arrives" check listens, after a positive barrier where possible.
pub const QUIET: Duration = Duration::from_millis(400);
/// How long a broker has to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Polls `check` every `poll` until it returns true; panics naming `what` after
/// `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, poll: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(poll).await;
    }
}

fn use_mosquitto() -> bool {
    std::env::var("RAFTMQ_TEST_BROKER").is_ok_and(|v| v == "mosquitto")
}

/// Settings for one broker. Each `set` is a raftmq flag name (kebab case, without
/// `--`) and value; `config` adds TOML to the config file (e.g. `[[acl]]` tables).
#[derive(Debug, Clone, Default)]
pub struct BrokerOpts {
    flags: Vec<(String, String)>,
    toml: String,
}

impl BrokerOpts {
    pub fn set(mut self, flag: &str, value: impl ToString) -> Self {
        self.flags.push((flag.to_string(), value.to_string()));
        self
    }

    pub fn config(mut self, toml: &str) -> Self {
        self.toml.push_str(toml);
        self.toml.push('\n');
        self
    }

    pub async fn start(self) -> Broker {
        Broker::start_with(self).await
    }
}

/// A running broker process.
pub struct Broker {
    child: Child,
    pub addr: SocketAddr,
    /// The HTTP API (`/metrics`, `/cluster`, ...); raftmq only.
    pub http: SocketAddr,
    stderr_path: PathBuf,
    dir: tempfile::TempDir,
}

impl Broker {
    /// A broker with default settings.
    pub async fn start() -> Broker {
        BrokerOpts::default().start().await
    }

    pub fn opts() -> BrokerOpts {
        BrokerOpts::default()
    }

    async fn start_with(opts: BrokerOpts) -> Broker {
        // The port is free when we look but another test may take it before the
        // broker binds it: retry with a new one.
        let mut last = String::new();
        for _ in 0..3 {
            match Broker::try_start(&opts).await {
                Ok(b) => return b,
                Err(e) => last = e,
            }
        }
        panic!("broker did not start: {last}");
    }

    async fn try_start(opts: &BrokerOpts) -> Result<Broker, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = free_addr();
        let http = free_addr();
        let stderr_path = dir.path().join("broker.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut cmd = if use_mosquitto() {
            mosquitto_command(opts, addr, dir.path())
        } else {
            raftmq_command(opts, addr, http, dir.path())
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("dup stderr file"))
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let mut broker = Broker {
            child,
            addr,
            http,
            stderr_path,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(broker);
            }
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!("exited with {status}: {}", broker.stderr()));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not listening after {START_TIMEOUT:?}: {}",
                    broker.stderr()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the broker wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends SIGHUP (reload the password file and keys).
    pub fn hangup(&self) {
        // SAFETY: kill(2) with our own child's pid and a valid signal number.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(rc, 0, "kill -HUP {}", self.child.id());
    }

    /// The broker process's resident memory, in KiB (`VmRSS` in /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("broker's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status")
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn is_mosquitto(&self) -> bool {
        use_mosquitto()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.stderr();
            let tail: Vec<&str> = log.lines().rev().take(200).collect();
            eprintln!("---- broker {} stderr (last 200 lines) ----", self.addr);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
            eprintln!("---- end of broker stderr ----");
        }
    }
}

/// A loopback address with a port that was free when asked (for extra listeners).
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr")
}

fn raftmq_command(opts: &BrokerOpts, addr: SocketAddr, http: SocketAddr, dir: &Path) -> Command {
    let config = dir.join("raftmq.toml");
    let data_dir = dir.join("data");
    let mut file = std::fs::File::create(&config).expect("config file");
    writeln!(file, "data_dir = {:?}", data_dir.display().to_string()).expect("write config");
    // Port 0, or one free a moment ago: parallel single-node tests must not collide on
    // the default 7000/8080.
    writeln!(file, "cluster_addr = \"127.0.0.1:0\"").expect("write config");
    writeln!(file, "http_addr = \"{http}\"").expect("write config");
    file.write_all(opts.toml.as_bytes()).expect("write config");
    let log = std::env::var("RAFTMQ_TEST_LOG").unwrap_or_else(|_| "debug".into());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_raftmq"));
    cmd.arg("--mqtt-addr")
        .arg(addr.to_string())
        .arg("--config")
        .arg(&config)
        .arg("--log-level")
        .arg(log);
    for (flag, value) in &opts.flags {
        cmd.arg(format!("--{flag}")).arg(value);
    }
    cmd
}

/// Translates raftmq settings to a mosquitto.conf (see the module docs).
fn mosquitto_command(opts: &BrokerOpts, addr: SocketAddr, dir: &Path) -> Command {
    assert!(opts.toml.is_empty(), "config file settings need raftmq");
    let mut conf = format!(
        "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type all\n",
        addr.port()
    );
    for (flag, value) in &opts.flags {
        let key = match flag.as_str() {
            "max-packet-size" => "max_packet_size",
            "max-connections" => "max_connections",
            "max-inflight" => "max_inflight_messages",
            "max-queued-messages" => "max_queued_messages",
            "max-keep-alive-secs" => "max_keepalive",
            "topic-alias-maximum" => "max_topic_alias",
            other => panic!("--{other} has no Mosquitto equivalent: the test needs raftmq"),
        };
        conf.push_str(&format!("{key} {value}\n"));
    }
    let path = dir.join("mosquitto.conf");
    std::fs::write(&path, conf).expect("mosquitto.conf");
    let mut cmd = Command::new("mosquitto");
    cmd.arg("-c").arg(path);
    cmd
}

/// Fails the test early when it runs against Mosquitto and checks raftmq-only behaviour.
pub fn needs_raftmq(what: &str) {
    if use_mosquitto() {
        panic!("needs raftmq: {what}");
    }
}

/// Runs `raftmq <args>` to completion; kills it and panics after `timeout`.
pub fn run_raftmq(args: &[&str], timeout: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_raftmq"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn raftmq");
    let deadline = std::time::Instant::now() + timeout;
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "raftmq {args:?} still running after {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}
