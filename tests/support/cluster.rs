//! Multi-node harness: a [`Cluster`] of real `raftmq` processes on loopback, each node
//! on its own IP, driven through its MQTT port and its HTTP API.
//!
//! Node `i` (1-based) of a cluster listens on `127.0.K.(i+1)`, where `K` counts the
//! clusters of this test process (the first cluster is on 127.0.0.2, .3, …), so that
//! parallel tests never share an address, even when a killed node's port is free for a
//! while. Ports are picked by binding port 0 on that IP; a start that loses the race for
//! a port is retried with new ones. A node keeps its ports and its data dir
//! (`<tempdir>/node-i`) across [`Cluster::kill`] and [`Cluster::restart`].
//!
//! Cluster traffic goes through a fault-injecting proxy per node ([`super::proxy`]):
//! node `i` listens on its real cluster port ([`Node::listen`]) and advertises its
//! proxy's port ([`Node::cluster`]), which is also what `--join` names. So
//! [`Cluster::partition`], [`Cluster::isolate`] and [`Cluster::heal`] can cut and restore
//! links between nodes, while clients and the HTTP API reach every node directly.
//!
//! [`Cluster::start_on_powerfs`] puts each node's data dir on its own power-loss
//! filesystem (tests/powerfs): [`Cluster::power_loss`] kills the nodes and drops every
//! write they had not fsynced, as a power cut does.
//!
//! Every node gets the cluster's secret (`--cluster-secret-file`, [`Cluster::secret_file`];
//! unless [`Cluster::without_secret`]) and admin token (`--admin-token-file`,
//! [`Cluster::token_file`]), written once in its temp dir: `raftmq cluster leave|remove`
//! needs `--admin-token-file` too. [`Cluster::with_node_args`] adds flags per node
//! (e.g. each node's cluster TLS certificate).
//!
//! All nodes' stderr go to `<tempdir>/node-i.log` (appended across restarts). When the
//! test panics, the tail of every log is printed and the temp dir is kept.
//! `RAFTMQ_TEST_LOG` (default `debug`) is the nodes' `--log-level`.

use std::cell::Cell;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::client::{Client, Msg};
use super::proxy::Faults;
use super::{run_raftmq, wait_until};

/// Bound on an election, a join, or a restarted node catching up.
pub const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Polling interval of the cluster waits.
pub const POLL: Duration = Duration::from_millis(100);
/// Bound on one HTTP request to a node.
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);
/// Log lines printed per node when a test fails.
const LOG_TAIL: usize = 150;
/// The payload of route probes; [`recv_data`] skips them.
pub const PROBE: &[u8] = b"probe";

static NEXT_CLUSTER: AtomicU8 = AtomicU8::new(0);
/// In the cluster's temp dir: the cluster secret and the admin token of its nodes.
const SECRET_FILE: &str = "cluster.secret";
const TOKEN_FILE: &str = "admin.token";
/// Debian's libfaketime (package `libfaketime`).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// One node: its addresses, data dir and (while running) its process.
pub struct Node {
    pub id: u64,
    pub mqtt: SocketAddr,
    /// The cluster address peers dial: the node's proxy.
    pub cluster: SocketAddr,
    /// Where the node itself listens for cluster traffic (behind the proxy).
    pub listen: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    log: PathBuf,
    /// Cluster addresses given as `--join` (empty for the bootstrap node).
    join: Vec<SocketAddr>,
    /// In a mutex so that a `&Cluster` can notice an exit.
    child: Mutex<Option<Child>>,
    starts: u32,
    /// The filesystem holding `data_dir`, when the cluster runs on power-loss disks.
    disk: Option<powerfs::PowerFs>,
    /// The file libfaketime reads the node's wall-clock offset from, when faked.
    clock: Option<PathBuf>,
    /// Set in the node's environment after the harness's own variables.
    env: Vec<(String, String)>,
    /// Flags after the harness's own ([`Cluster::with_flag`]).
    flags: Vec<String>,
    /// `--cluster-secret-file` (if any) and `--admin-token-file`.
    secret_file: Option<PathBuf>,
    token_file: PathBuf,
    /// More flags, after the harness's own.
    extra_args: Vec<String>,
}

impl Node {
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    pub fn cluster_addr(&self) -> SocketAddr {
        self.cluster
    }

    /// Started and not killed (it may have exited on its own since).
    pub fn is_running(&self) -> bool {
        self.child().is_some()
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything the node wrote to stderr, over all its runs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn args(&self) -> Vec<String> {
        let log_level = std::env::var("RAFTMQ_TEST_LOG").unwrap_or_else(|_| "debug".into());
        let mut args: Vec<String> = vec![
            "--node-id".into(),
            self.id.to_string(),
            "--mqtt-addr".into(),
            self.mqtt.to_string(),
            "--cluster-addr".into(),
            self.listen.to_string(),
            "--advertise-addr".into(),
            self.cluster.to_string(),
            "--http-addr".into(),
            self.http.to_string(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--log-level".into(),
            log_level,
            "--admin-token-file".into(),
            self.token_file.display().to_string(),
        ];
        if let Some(file) = &self.secret_file {
            args.extend(["--cluster-secret-file".into(), file.display().to_string()]);
        }
        if !self.join.is_empty() {
            let join: Vec<String> = self.join.iter().map(|a| a.to_string()).collect();
            args.extend(["--join".into(), join.join(",")]);
        }
        args.extend(self.extra_args.iter().cloned());
        args.extend(self.flags.iter().cloned());
        args
    }

    /// Spawns the process (the same arguments on every start).
    fn spawn(&mut self) {
        assert!(!self.is_running(), "node {} is already running", self.id);
        self.starts += 1;
        let args = self.args();
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("node log file");
        writeln!(
            log,
            "==== start #{}: raftmq {} ====",
            self.starts,
            args.join(" ")
        )
        .ok();
        let child = Command::new(env!("CARGO_BIN_EXE_raftmq"))
            .args(&args)
            // Snapshots every 100 entries: a node that was down catches up by one.
            .env("RAFTMQ_SNAPSHOT_LOGS", "100")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(self.clock.iter().flat_map(|file| {
                [
                    ("LD_PRELOAD", LIBFAKETIME.to_string()),
                    ("FAKETIME_TIMESTAMP_FILE", file.display().to_string()),
                    // Read at every call, so that the test can move it.
                    ("FAKETIME_NO_CACHE", "1".to_string()),
                    // Timers and timeouts run on the monotonic clock: only the wall
                    // clock jumps.
                    ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
                ]
            }))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log file"))
            .stderr(log)
            .spawn()
            .expect("spawn raftmq");
        *self.child() = Some(child);
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The exit status if the process has ended (it is then forgotten).
    fn exited(&self) -> Option<ExitStatus> {
        let mut child = self.child();
        let status = child.as_mut()?.try_wait().ok().flatten()?;
        *child = None;
        Some(status)
    }

    fn print_log_tail(&self) {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(LOG_TAIL);
        eprintln!(
            "---- node {} ({}) log, last {LOG_TAIL} lines ----",
            self.id, self.cluster
        );
        for line in &lines[from..] {
            eprintln!("{line}");
        }
    }
}

/// A set of raftmq processes forming (or meant to form) one cluster.
pub struct Cluster {
    /// `None` once kept for inspection after a failure.
    dir: Option<tempfile::TempDir>,
    /// The `K` of this cluster's IPs 127.0.K.x.
    net: u8,
    nodes: Vec<Node>,
    /// The nodes' cluster-port proxies.
    faults: Faults,
    /// Whether new nodes get a power-loss filesystem for their data dir.
    powerfs: bool,
    /// Whether new nodes run under libfaketime ([`Cluster::set_clock`]).
    faketime: bool,
    /// Environment of new nodes ([`Cluster::with_env`]).
    env: Vec<(String, String)>,
    /// Whether new nodes get `--cluster-secret-file` ([`Cluster::without_secret`]).
    secret: bool,
    /// More flags of new node `id` ([`Cluster::with_node_args`]).
    node_args: Option<NodeArgs>,
    /// Extra flags of new nodes ([`Cluster::with_flag`]).
    flags: Vec<String>,
}

/// What [`Cluster::with_node_args`] takes: node id → flags.
type NodeArgs = Box<dyn Fn(u64) -> Vec<String> + Send + Sync>;

impl Cluster {
    /// Starts node 1 (which bootstraps), waits until it is ready, then starts nodes
    /// 2..=n joining it, and waits until all are ready and agree on the leader.
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, Cluster::empty()).await
    }

    /// [`Cluster::start`] with each node's data dir on a power-loss filesystem; `None`
    /// (after printing "skipped: no FUSE") where FUSE cannot be mounted.
    pub async fn start_on_powerfs(n: usize) -> Option<Cluster> {
        Some(Cluster::start_with(n, Cluster::on_powerfs()?).await)
    }

    /// An empty cluster whose nodes will have their data dir on a power-loss
    /// filesystem; `None` (after printing "skipped: no FUSE") where FUSE cannot be
    /// mounted.
    pub fn on_powerfs() -> Option<Cluster> {
        let mut cluster = Cluster::empty();
        cluster.powerfs = true;
        // Probe once, so that a machine without FUSE skips instead of panicking.
        let probe = cluster.dir().join("probe");
        std::fs::create_dir(&probe).expect("probe dir");
        powerfs::try_mount(&probe)?;
        Some(cluster)
    }

    /// Sets `key=value` in the environment of the nodes added from now on, over the
    /// harness's own (e.g. `RAFTMQ_SNAPSHOT_LOGS`, 100 unless set); e.g.
    /// `Cluster::start_with(3, Cluster::empty().with_env("RAFTMQ_SNAPSHOT_LOGS", 5))`.
    pub fn with_env(mut self, key: &str, value: impl ToString) -> Cluster {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Nodes added from now on get no `--cluster-secret-file` (e.g. a cluster that
    /// authenticates its nodes by TLS alone).
    pub fn without_secret(mut self) -> Cluster {
        self.secret = false;
        self
    }

    /// Nodes added from now on get `args(id)` after the harness's flags, e.g. their
    /// cluster TLS files.
    pub fn with_node_args(
        mut self,
        args: impl Fn(u64) -> Vec<String> + Send + Sync + 'static,
    ) -> Cluster {
        self.node_args = Some(Box::new(args));
        self
    }

    /// Gives the nodes added from now on `--flag value` too, e.g.
    /// `Cluster::empty().with_flag("sys-interval-secs", 1)`.
    pub fn with_flag(mut self, flag: &str, value: impl ToString) -> Cluster {
        self.flags.extend([format!("--{flag}"), value.to_string()]);
        self
    }

    /// [`Cluster::start`] with each node's wall clock under the test's control
    /// ([`Cluster::set_clock`], libfaketime); `None` (after printing "skipped: no
    /// libfaketime") where the library is not installed.
    pub async fn start_with_faketime(n: usize) -> Option<Cluster> {
        if !Path::new(LIBFAKETIME).exists() {
            eprintln!("skipped: no libfaketime ({LIBFAKETIME}; apt-get install libfaketime)");
            return None;
        }
        let mut cluster = Cluster::empty();
        cluster.faketime = true;
        Some(Cluster::start_with(n, cluster).await)
    }

    /// Moves node `id`'s wall clock to `offset` from the real time (libfaketime's
    /// syntax: `+1h`, `-1h`, `+0`); its monotonic clock is left alone.
    pub fn set_clock(&self, id: u64, offset: &str) {
        let file = self
            .node(id)
            .clock
            .as_ref()
            .expect("a cluster started with faketime");
        std::fs::write(file, format!("{offset}\n")).expect("clock file");
    }

    /// Starts `n` nodes in `cluster`, an empty one ([`Cluster::empty`],
    /// [`Cluster::on_powerfs`]), as [`Cluster::start`] does.
    pub async fn start_with(n: usize, mut cluster: Cluster) -> Cluster {
        assert!(n >= 1);
        cluster.launch_new(Vec::new()).await;
        cluster.wait_ready(1).await;
        let join = vec![cluster.node(1).cluster];
        for _ in 2..=n {
            cluster.push_node(join.clone());
            let id = cluster.nodes.len() as u64;
            cluster.node_mut(id).spawn();
        }
        for id in 2..=n as u64 {
            cluster.wait_started(id).await;
        }
        cluster.wait_leader().await;
        cluster
    }

    /// A cluster with no nodes yet: its temp dir and IP block.
    pub fn empty() -> Cluster {
        let net = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed);
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = format!("cluster {net} secret, pid {}\n", std::process::id());
        std::fs::write(dir.path().join(SECRET_FILE), secret).expect("secret file");
        let token = format!("cluster {net} admin token\n");
        std::fs::write(dir.path().join(TOKEN_FILE), token).expect("token file");
        Cluster {
            dir: Some(dir),
            net,
            nodes: Vec::new(),
            faults: Faults::new(net),
            powerfs: false,
            faketime: false,
            env: Vec::new(),
            secret: true,
            node_args: None,
            flags: Vec::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("temp dir").path()
    }

    /// The file holding the cluster secret every node is started with.
    pub fn secret_file(&self) -> PathBuf {
        self.dir().join(SECRET_FILE)
    }

    /// The file holding the admin token every node is started with.
    pub fn token_file(&self) -> PathBuf {
        self.dir().join(TOKEN_FILE)
    }

    /// The IP that node `id` has, or would have.
    pub fn ip(&self, id: u64) -> IpAddr {
        assert!((1..=250).contains(&id), "node id {id} has no IP");
        IpAddr::V4(Ipv4Addr::new(127, 0, self.net, id as u8 + 1))
    }

    pub fn node(&self, id: u64) -> &Node {
        self.nodes
            .get((id as usize).wrapping_sub(1))
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .get_mut((id as usize).wrapping_sub(1))
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Ids of all nodes ever started, running or not.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Ids of the running nodes.
    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect()
    }

    /// Records the next node (not started): fresh ports, `--join join`.
    fn push_node(&mut self, join: Vec<SocketAddr>) {
        let id = self.nodes.len() as u64 + 1;
        let ip = self.ip(id);
        let [mqtt, listen, http] = free_addrs(ip);
        // Bound here and kept for the cluster's life: the advertised port never moves.
        let proxy = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
        let cluster = proxy.local_addr().expect("local addr");
        self.faults.add_node(id, proxy, listen);
        let (disk, data_dir) = if self.powerfs {
            let mount = self.dir().join(format!("node-{id}.fs"));
            std::fs::create_dir(&mount).expect("mount point");
            let fs = powerfs::PowerFs::mount(&mount).expect("mount powerfs");
            (Some(fs), mount.join("data"))
        } else {
            (None, self.dir().join(format!("node-{id}")))
        };
        let clock = self.faketime.then(|| {
            let file = self.dir().join(format!("node-{id}.clock"));
            std::fs::write(&file, "+0\n").expect("clock file");
            file
        });
        let node = Node {
            id,
            mqtt,
            cluster,
            listen,
            http,
            data_dir,
            log: self.dir().join(format!("node-{id}.log")),
            join,
            child: Mutex::new(None),
            starts: 0,
            disk,
            clock,
            env: self.env.clone(),
            flags: self.flags.clone(),
            secret_file: self.secret.then(|| self.secret_file()),
            token_file: self.token_file(),
            extra_args: self.node_args.as_ref().map(|f| f(id)).unwrap_or_default(),
        };
        self.nodes.push(node);
    }

    /// Adds and starts the next node, without waiting for it to be ready.
    async fn launch_new(&mut self, join: Vec<SocketAddr>) -> u64 {
        self.push_node(join);
        let id = self.nodes.len() as u64;
        self.node_mut(id).spawn();
        self.wait_started(id).await;
        id
    }

    /// Waits until a new node's HTTP API answers. A node that exits because one of its
    /// ports was taken meanwhile is started again on new ports with a fresh data dir.
    async fn wait_started(&mut self, id: u64) {
        for attempt in 0..3 {
            if attempt > 0 {
                let [mqtt, listen, http] = free_addrs(self.ip(id));
                self.faults.set_upstream(id, listen);
                let node = self.node_mut(id);
                (node.mqtt, node.listen, node.http) = (mqtt, listen, http);
                let _ = std::fs::remove_dir_all(&node.data_dir);
                node.spawn();
            }
            let deadline = Instant::now() + CLUSTER_TIMEOUT;
            loop {
                if http_get(self.node(id).http, "/health").await.is_ok() {
                    return;
                }
                if let Some(status) = self.node(id).exited() {
                    let log = self.node(id).log();
                    let this_run = log.rsplit("==== start #").next().unwrap_or_default();
                    if !this_run.to_lowercase().contains("in use") {
                        panic!("node {id} exited with {status} while starting");
                    }
                    break;
                }
                if Instant::now() >= deadline {
                    panic!("node {id}: no HTTP answer after {CLUSTER_TIMEOUT:?}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("node {id} could not bind its ports");
    }

    /// Starts a fresh node that joins the cluster (its `--join` lists every node's
    /// cluster address) and waits until it is ready; returns its id.
    pub async fn add_node(&mut self) -> u64 {
        let join = self.nodes.iter().map(|n| n.cluster).collect();
        let id = self.launch_new(join).await;
        self.wait_ready(id).await;
        id
    }

    /// Starts `n` fresh nodes at the same moment, each joining the cluster (`--join`
    /// lists every node's cluster address), so that their membership changes collide at
    /// the leader; returns their ids at once ([`Cluster::wait_joined`] waits for them).
    pub fn spawn_joiners(&mut self, n: usize) -> Vec<u64> {
        let join: Vec<SocketAddr> = self.nodes.iter().map(|n| n.cluster).collect();
        let first = self.nodes.len() as u64 + 1;
        let ids: Vec<u64> = (first..first + n as u64).collect();
        for &id in &ids {
            self.push_node(join.clone());
            self.node_mut(id).spawn();
        }
        ids
    }

    /// Waits until each of `ids`, started by [`Cluster::spawn_joiners`], has joined: a
    /// node serves HTTP once it is a member. A joiner that gives up exits, which fails
    /// the wait.
    pub async fn wait_joined(&mut self, ids: &[u64]) {
        for &id in ids {
            self.wait_started(id).await;
        }
    }

    /// SIGKILL, keeping the data dir.
    pub fn kill(&mut self, id: u64) {
        self.node_mut(id).kill();
    }

    /// The process id of running node `id`.
    pub fn pid(&self, id: u64) -> u32 {
        let pid = self.node(id).child().as_ref().map(|c| c.id());
        pid.unwrap_or_else(|| panic!("node {id} is not running"))
    }

    /// SIGSTOP: the process stops, its sockets stay open (a stalled VM, a GC pause).
    pub fn pause(&self, id: u64) {
        self.signal(id, libc::SIGSTOP);
    }

    /// SIGCONT after [`Cluster::pause`].
    pub fn resume(&self, id: u64) {
        self.signal(id, libc::SIGCONT);
    }

    fn signal(&self, id: u64, signal: libc::c_int) {
        let pid = self.pid(id);
        // SAFETY: kill(2) on a child process we started and have not reaped.
        let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// A power cut of the nodes `ids` at once: each is SIGKILLed, then its filesystem
    /// drops every write the node had not fsynced. Needs [`Cluster::start_on_powerfs`].
    pub fn power_loss(&mut self, ids: &[u64]) {
        for &id in ids {
            self.node_mut(id).kill();
        }
        for &id in ids {
            let node = self.node(id);
            let disk = node.disk.as_ref().expect("a cluster started on powerfs");
            let report = disk.power_loss();
            let mut log = std::fs::OpenOptions::new()
                .append(true)
                .open(&node.log)
                .expect("node log file");
            writeln!(log, "==== power loss: {report:?} ====").ok();
        }
    }

    /// Starts a killed node again (same ports, data dir and flags) and waits until it
    /// is ready.
    pub async fn restart(&mut self, id: u64) {
        self.relaunch(id);
        self.wait_ready(id).await;
    }

    /// Starts a killed node again without waiting (e.g. while it has no quorum).
    pub fn relaunch(&mut self, id: u64) {
        self.node_mut(id).spawn();
    }

    /// Waits (bounded) until node `id`'s process exits by itself; its status and what
    /// it logged in this run.
    pub async fn wait_exit(&self, id: u64) -> (ExitStatus, String) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            if let Some(status) = self.node(id).exited() {
                let log = self.node(id).log();
                let this_run = log.rsplit("==== start #").next().unwrap_or_default();
                return (status, this_run.to_string());
            }
            assert!(
                Instant::now() < deadline,
                "node {id} still running after {CLUSTER_TIMEOUT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// `GET /cluster` of node `id`, or why not.
    pub async fn try_status(&self, id: u64) -> Result<Value, String> {
        let (code, body) = http_get(self.node(id).http, "/cluster").await?;
        if code != 200 {
            return Err(format!("HTTP {code}: {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
    }

    /// `GET /cluster` of node `id`; panics if it does not answer.
    pub async fn status(&self, id: u64) -> Value {
        match self.try_status(id).await {
            Ok(v) => v,
            Err(e) => panic!("node {id}: GET /cluster: {e}"),
        }
    }

    /// Whether `GET /ready` answers 200.
    pub async fn is_ready(&self, id: u64) -> bool {
        matches!(http_get(self.node(id).http, "/ready").await, Ok((200, _)))
    }

    /// The leader node `id` knows of, if it answers and knows one.
    pub async fn leader(&self, id: u64) -> Option<u64> {
        self.try_status(id).await.ok()?["leader"].as_u64()
    }

    /// Sorted ids of the members node `id` lists, and of those that are voters.
    pub async fn members(&self, id: u64) -> (Vec<u64>, Vec<u64>) {
        let status = self.status(id).await;
        members_of(&status)
    }

    /// Polls `check` until it holds (panics naming `what` after `timeout`); the check
    /// gets the cluster, e.g. `c.wait_until("…", T, |c| async move { … })`.
    pub async fn wait_until<'a, F, Fut>(&'a self, what: &str, timeout: Duration, check: F)
    where
        F: Fn(&'a Cluster) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        wait_until(what, timeout, POLL, || check(self)).await
    }

    /// Waits until node `id` is ready; panics if its process exits meanwhile.
    pub async fn wait_ready(&self, id: u64) {
        let what = format!("node {id} to be ready");
        self.wait_until(&what, CLUSTER_TIMEOUT, |c| async move {
            c.assert_running(id);
            c.is_ready(id).await
        })
        .await
    }

    /// Waits until node `id` answers `GET /cluster`, ready or not (e.g. a restarted node
    /// that has no quorum yet).
    pub async fn wait_answering(&self, id: u64) {
        let what = format!("node {id} to answer GET /cluster");
        self.wait_until(&what, CLUSTER_TIMEOUT, |c| async move {
            c.assert_running(id);
            c.try_status(id).await.is_ok()
        })
        .await
    }

    /// Waits until every running node is ready and they all name the same leader, which
    /// itself says it is the leader; returns its id.
    pub async fn wait_leader(&self) -> u64 {
        self.wait_leader_of(&self.running()).await
    }

    /// Like [`Cluster::wait_leader`] for some of the nodes only (e.g. the majority side
    /// of a partition, while the other side cannot know the new leader).
    pub async fn wait_leader_of(&self, nodes: &[u64]) -> u64 {
        let found = Cell::new(None);
        let found = &found;
        let what = format!("nodes {nodes:?} ready with one leader among them");
        self.wait_until(&what, CLUSTER_TIMEOUT, |c| async move {
            found.set(c.agreed_leader(nodes).await);
            found.get().is_some()
        })
        .await;
        found.get().expect("checked by the wait")
    }

    async fn agreed_leader(&self, nodes: &[u64]) -> Option<u64> {
        let mut leader = None;
        for &id in nodes {
            self.assert_running(id);
            if !self.is_ready(id).await {
                return None;
            }
            let l = self.leader(id).await?;
            if leader.is_some_and(|x| x != l) {
                return None;
            }
            leader = Some(l);
        }
        let l = leader.filter(|l| nodes.contains(l))?;
        let status = self.try_status(l).await.ok()?;
        (status["role"] == "leader").then_some(l)
    }

    /// Cuts the cluster links between nodes of different groups (both ways); links
    /// within a group, and of nodes in no group, stay up. Replaces any earlier cut.
    pub fn partition(&self, groups: &[&[u64]]) {
        self.faults.partition(groups);
    }

    /// Cuts every cluster link of node `id`.
    pub fn isolate(&self, id: u64) {
        let others: Vec<u64> = self.ids().into_iter().filter(|&i| i != id).collect();
        self.faults.partition(&[&[id], &others]);
    }

    /// Cuts the directed links `(from, to)`: what `from` sends to `to` is lost, what
    /// `to` sends to `from` still arrives (a one-way partition). Adds to earlier cuts;
    /// both directions of a pair cut just that link.
    pub fn cut(&self, links: &[(u64, u64)]) {
        self.faults.cut(links);
    }

    /// Restores every cluster link.
    pub fn heal(&self) {
        self.faults.heal();
    }

    /// Waits until each of `nodes` lists exactly `voters` as members, all voters.
    pub async fn wait_voters(&self, nodes: &[u64], voters: &[u64]) {
        let want = (voters.to_vec(), voters.to_vec());
        let what = format!("nodes {nodes:?} to list voters {voters:?}");
        self.wait_until(&what, CLUSTER_TIMEOUT, |c| {
            let want = want.clone();
            async move {
                for &id in nodes {
                    match c.try_status(id).await {
                        Ok(s) if members_of(&s) == want => {}
                        _ => return false,
                    }
                }
                true
            }
        })
        .await;
    }

    /// Waits until every running node has applied everything the leader had committed
    /// when called: a barrier after a change made through Raft (e.g. a SUBSCRIBE).
    pub async fn wait_applied(&self) {
        let leader = self.wait_leader().await;
        let commit = self.status(leader).await["commit_index"]
            .as_u64()
            .expect("commit_index");
        let what = format!("all nodes to apply up to index {commit}");
        self.wait_until(&what, CLUSTER_TIMEOUT, |c| async move {
            for id in c.running() {
                let status = c.try_status(id).await.ok();
                let applied = status.and_then(|s| s["applied_index"].as_u64());
                if !matches!(applied, Some(a) if a >= commit) {
                    return false;
                }
            }
            true
        })
        .await
    }

    /// Panics (printing the logs) if node `id` was running but its process ended.
    fn assert_running(&self, id: u64) {
        if let Some(status) = self.node(id).exited() {
            panic!("node {id} exited unexpectedly with {status}");
        }
    }

    /// `raftmq <args>` run to completion (bounded by `timeout`), e.g. the cluster CLI.
    pub fn run(&self, args: &[&str], timeout: Duration) -> Output {
        run_raftmq(args, timeout)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
            // Unmounted before the temp dir is removed.
            node.disk = None;
        }
        if std::thread::panicking() {
            for node in &self.nodes {
                node.print_log_tail();
            }
            if let Some(dir) = self.dir.take() {
                eprintln!("---- cluster files kept in {} ----", dir.keep().display());
            }
        }
    }
}

/// Sorted member ids and voter ids from a `/cluster` document.
pub fn members_of(status: &Value) -> (Vec<u64>, Vec<u64>) {
    let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
    let mut all: Vec<u64> = nodes.iter().filter_map(|n| n["id"].as_u64()).collect();
    let mut voters: Vec<u64> = nodes
        .iter()
        .filter(|n| n["voter"] == true)
        .filter_map(|n| n["id"].as_u64())
        .collect();
    all.sort();
    voters.sort();
    (all, voters)
}

/// Three addresses on `ip` that were free a moment ago.
pub fn free_addrs(ip: IpAddr) -> [SocketAddr; 3] {
    let bind = || TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
    // Held together so that the three differ.
    let listeners = [bind(), bind(), bind()];
    listeners.map(|l| l.local_addr().expect("local addr"))
}

/// `GET http://addr/path`: the status code and body (ureq, blocking, off the runtime).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(HTTP_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent
            .get(&url)
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?;
        let code = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("GET {url}: {e}"))?;
        Ok((code, body))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// `POST http://addr/path`, with `Authorization: Bearer token` when given: the status
/// code and body.
pub async fn http_post(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let url = format!("http://{addr}{path}");
    let token = token.map(|t| format!("Bearer {t}"));
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(HTTP_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        let mut request = agent.post(&url);
        if let Some(token) = token {
            request = request.header("Authorization", token);
        }
        let mut response = request
            .send_empty()
            .map_err(|e| format!("POST {url}: {e}"))?;
        let code = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("POST {url}: {e}"))?;
        Ok((code, body))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Publishes QoS 0 [`PROBE`]s to `topic` through `publisher` until `subscriber` gets
/// one: the subscriber's route is then live on the publisher's node. Later reads
/// should use [`recv_data`], since a late probe may still arrive.
pub async fn wait_route(publisher: &mut Client, subscriber: &mut Client, topic: &str) {
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    loop {
        publisher.publish(topic, 0, false, PROBE).await;
        if let Some(m) = subscriber.try_recv(Duration::from_millis(200)).await {
            assert_eq!(m.payload, PROBE, "unexpected message while probing {topic}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no probe on {topic} reached the subscriber within {CLUSTER_TIMEOUT:?}"
        );
    }
}

/// The next message that is not a probe.
pub async fn recv_data(c: &mut Client) -> Msg {
    loop {
        let m = c.recv().await;
        if m.payload != PROBE {
            return m;
        }
    }
}

/// The next message that is not a probe within `wait`, if any.
pub async fn try_recv_data(c: &mut Client, wait: Duration) -> Option<Msg> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = c.try_recv(left).await?;
        if m.payload != PROBE {
            return Some(m);
        }
    }
}
