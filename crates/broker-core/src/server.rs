//! The broker as a server: the engine plus its listeners. Each listener accepts
//! sockets, unwraps its transport (TLS, WebSocket) within the connect timeout, and
//! hands the resulting byte stream to `connection::serve`, one task per client.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout_at, Instant};
use tokio_rustls::server::TlsStream;

use crate::auth::Auth;
use crate::broker::Shared;
use crate::cluster_api::ClusterApi;
use crate::config::Config;
use crate::connection::{self, ByteStream, Proof};
use crate::metrics::{Gauges, ListenerKind, Metrics};
use crate::rate::Bucket;
use crate::transport::{tls, ws, Tls};

/// How long shutdown waits for connections to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How often certificate files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// How often resident memory is compared with `max_memory_mb`.
const MEMORY_CHECK: Duration = Duration::from_millis(250);

/// The accept side's token bucket (`max_connect_rate`), shared by every listener.
type Admission = Option<Arc<std::sync::Mutex<Bucket>>>;

/// What a listener speaks on top of TCP.
#[derive(Clone)]
pub enum Transport {
    /// MQTT straight over TCP.
    Tcp,
    /// MQTT over TLS.
    Tls(Arc<Tls>),
    /// MQTT over WebSocket.
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss(Arc<Tls>),
}

impl Transport {
    /// Which listener this is, for the per-listener metrics.
    pub fn kind(&self) -> ListenerKind {
        match self {
            Transport::Tcp => ListenerKind::Tcp,
            Transport::Tls(_) => ListenerKind::Tls,
            Transport::Ws => ListenerKind::Ws,
            Transport::Wss(_) => ListenerKind::Wss,
        }
    }

    fn name(&self) -> &'static str {
        self.kind().label()
    }

    fn tls(&self) -> Option<&Arc<Tls>> {
        match self {
            Transport::Tls(t) | Transport::Wss(t) => Some(t),
            Transport::Tcp | Transport::Ws => None,
        }
    }
}

/// Reloads the listeners' certificates and keys when their files change (SIGHUP is the
/// binary's, through [`Tls::reload`]). New connections get the new ones; connections
/// already up keep theirs.
struct Reloader {
    tls: Vec<Arc<Tls>>,
}

impl Reloader {
    fn reload_changed(&self) {
        for tls in &self.tls {
            match tls.reload_if_changed() {
                Some(Ok(())) => tracing::info!("TLS certificate reloaded"),
                Some(Err(e)) => {
                    tracing::warn!("TLS certificate not reloaded, the previous one stays: {e}")
                }
                None => {}
            }
        }
    }
}

/// A bound socket and the transport its clients speak.
pub struct Listener {
    pub socket: TcpListener,
    pub transport: Transport,
}

/// A started engine and its listeners, not yet serving.
pub struct Broker {
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
}

impl Broker {
    /// Starts the engine on the cluster's state (replayed first); serves nobody until
    /// [`Broker::run`]. `auth` was loaded from `config` ([`Auth::load`]).
    pub async fn start(config: Config, auth: Arc<Auth>, cluster: Arc<dyn ClusterApi>) -> Broker {
        Broker {
            shared: Shared::start(config, auth, cluster).await,
            listeners: Vec::new(),
        }
    }

    /// Adds a listener; returns its address.
    pub fn listen(&mut self, listener: Listener) -> io::Result<SocketAddr> {
        let addr = listener.socket.local_addr()?;
        self.listeners.push(listener);
        Ok(addr)
    }

    /// What the engine counts, readable while it runs (a metrics endpoint holds it).
    pub fn stats(&self) -> Stats {
        Stats(self.shared.clone())
    }

    /// Every TLS configuration of the listeners, once each.
    fn reloader(&self) -> Reloader {
        let mut tls: Vec<Arc<Tls>> = Vec::new();
        for t in self.listeners.iter().filter_map(|l| l.transport.tls()) {
            if !tls.iter().any(|known| Arc::ptr_eq(known, t)) {
                tls.push(t.clone());
            }
        }
        Reloader { tls }
    }

    /// Serves clients until `shutdown` resolves, then asks every connection to close
    /// and waits (bounded) for them.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        // Every connection task holds a clone of `done_tx`; when all are gone, `recv`
        // returns None (the drop-guard pattern of STYLE.md, convention 9).
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let (stop_tx, stop_rx) = watch::channel(false);
        let reloader = self.reloader();
        if !reloader.tls.is_empty() {
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(RELOAD_CHECK) => reloader.reload_changed(),
                    }
                }
            });
        }
        tokio::spawn(crate::sys::run(self.shared.clone(), stop_rx.clone()));
        if self.shared.config.max_memory_mb > 0 {
            tokio::spawn(watch_memory(self.shared.clone(), stop_rx.clone()));
        }
        let rate = self.shared.config.max_connect_rate;
        // A tenth of a second's worth may come at once; the rest waits its turn.
        let admission: Admission = (rate > 0).then(|| {
            let burst = f64::from(rate) / 10.0;
            Arc::new(std::sync::Mutex::new(Bucket::new(
                f64::from(rate),
                burst,
                Instant::now(),
            )))
        });
        for listener in self.listeners {
            let shared = self.shared.clone();
            tokio::spawn(accept_loop(
                shared,
                listener,
                admission.clone(),
                done_tx.clone(),
                stop_rx.clone(),
            ));
        }
        shutdown.await;
        tracing::info!("shutting down: closing client connections");
        let _ = stop_tx.send(true);
        self.shared.shutting_down.store(true, Ordering::Release);
        self.shared.wake_all();
        drop(done_tx);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, done_rx.recv()).await;
    }
}

/// A running engine's counters ([`Metrics`]) and, counted when asked, what it holds
/// ([`Gauges`]).
#[derive(Clone)]
pub struct Stats(Arc<Shared>);

impl Stats {
    pub fn counters(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn gauges(&self) -> Gauges {
        self.0.gauges()
    }

    /// This node's own figures, as `$SYS` publishes them (`GET /node`).
    pub fn figures(&self) -> crate::sys::Figures {
        crate::sys::figures(&self.0)
    }
}

/// Samples resident memory and sets `over_memory` while it is above `max_memory_mb`,
/// logging each crossing.
async fn watch_memory(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let limit = shared.config.max_memory_mb.saturating_mul(1024 * 1024);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(MEMORY_CHECK) => {}
        }
        let Some(rss) = resident_bytes() else {
            tracing::warn!("max_memory_mb: cannot read /proc/self/status; not enforced");
            return;
        };
        let over = rss > limit;
        if over != shared.over_memory.swap(over, Ordering::Relaxed) {
            let mib = rss / (1024 * 1024);
            let max = shared.config.max_memory_mb;
            match over {
                true => tracing::warn!(
                    "memory high-water mark: {mib} MiB resident, above max_memory_mb \
                     {max}: refusing new connections as busy and dropping QoS 0"
                ),
                false => tracing::info!(
                    "memory back below the high-water mark ({mib} MiB, max_memory_mb \
                     {max}): accepting connections and QoS 0 again"
                ),
            }
        }
    }
}

/// This process's resident set size (VmRSS), in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: Listener,
    admission: Admission,
    done: mpsc::Sender<()>,
    mut stop: watch::Receiver<bool>,
) {
    let name = listener.transport.name();
    loop {
        // Over `max_connect_rate`, wait before accepting: clients queue in the
        // kernel's backlog (their connect completes, their CONNECT waits), and nobody is
        // refused.
        let turn = admission.as_ref().and_then(|bucket| {
            let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
            bucket.take(1.0, Instant::now())
        });
        if let Some(turn) = turn {
            Metrics::inc(&shared.metrics.connect_rate_waits);
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep_until(turn) => {}
            }
        }
        let (tcp, peer) = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.socket.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of
                    // spinning, and keep serving the connections we have.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        // The connect timeout runs from here: a transport handshake spends from it.
        let deadline = Instant::now() + shared.config.connect_timeout();
        let open = connection::open_guard(&shared, listener.transport.kind());
        let shared = shared.clone();
        let transport = listener.transport.clone();
        let done = done.clone();
        tokio::spawn(async move {
            upgrade(shared, transport, tcp, peer, deadline).await;
            drop(open);
            drop(done);
        });
    }
}

/// Unwraps the transport (within the connect deadline) and serves the client. A task
/// is as large as the largest future it may await, for as long as its client stays:
/// plain TCP is served inline, while TLS and WebSocket (their handshakes are several
/// KiB, their streams more) are served from a box, so that they cost only the clients
/// that use them.
async fn upgrade(
    shared: Arc<Shared>,
    transport: Transport,
    tcp: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
) {
    let name = transport.name();
    let max = shared.config.max_packet_size as usize;
    match transport {
        Transport::Tcp => connection::serve(shared, tcp, peer, deadline, Proof::Nothing).await,
        Transport::Ws => {
            Box::pin(async move {
                if let Some(ws) = ws_accept(tcp, max, peer, name, deadline).await {
                    connection::serve(shared, Box::new(ws), peer, deadline, Proof::Nothing).await;
                }
            })
            .await
        }
        Transport::Tls(tls) => {
            Box::pin(async move {
                if let Some((stream, proof)) = tls_accept(&tls, tcp, peer, name, deadline).await {
                    connection::serve(shared, Box::new(stream), peer, deadline, proof).await;
                }
            })
            .await
        }
        Transport::Wss(tls) => {
            Box::pin(async move {
                let Some((stream, proof)) = tls_accept(&tls, tcp, peer, name, deadline).await
                else {
                    return;
                };
                if let Some(ws) = ws_accept(stream, max, peer, name, deadline).await {
                    connection::serve(shared, Box::new(ws), peer, deadline, proof).await;
                }
            })
            .await
        }
    }
}

/// The TLS handshake, and what the client's certificate (if any) proves.
async fn tls_accept(
    tls: &Tls,
    tcp: TcpStream,
    peer: SocketAddr,
    name: &str,
    deadline: Instant,
) -> Option<(TlsStream<TcpStream>, Proof)> {
    match timeout_at(deadline, tls.acceptor().accept(tcp)).await {
        Ok(Ok(stream)) => {
            let conn = stream.get_ref().1;
            let proof = match conn.peer_certificates() {
                Some(certs) if !certs.is_empty() => Proof::Certificate {
                    common_name: tls::peer_common_name(conn),
                },
                _ => Proof::Nothing,
            };
            Some((stream, proof))
        }
        Ok(Err(e)) => refused(peer, name, "TLS handshake", &e.to_string()),
        Err(_) => refused(
            peer,
            name,
            "TLS handshake",
            "not done in the connect timeout",
        ),
    }
}

async fn ws_accept<S: ByteStream>(
    stream: S,
    max_packet: usize,
    peer: SocketAddr,
    name: &str,
    deadline: Instant,
) -> Option<ws::WsStream<S>> {
    match timeout_at(deadline, ws::accept(stream, max_packet)).await {
        Ok(Ok(ws)) => Some(ws),
        Ok(Err(e)) => refused(peer, name, "WebSocket upgrade", &e),
        Err(_) => refused(
            peer,
            name,
            "WebSocket upgrade",
            "not done in the connect timeout",
        ),
    }
}

/// One log line for a client that failed its transport's handshake.
fn refused<T>(peer: SocketAddr, listener: &str, what: &str, why: &str) -> Option<T> {
    tracing::info!(%peer, listener, "refused: {what} failed: {why}");
    None
}
