//! Starting a node: bind every listener (so that port 0 becomes a real port before peers
//! are told about it), start the cluster member (bootstrap, join or restart from the data
//! dir), then the broker on top of it and the HTTP API beside it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use broker_core::transport::{Tls, TlsFiles};
use broker_core::{Auth, Broker, Listener, Stats, Transport};
use cluster::{Node, NodeInfo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::config::{Secrets, Settings};
use crate::http::{Change, Control, Reply};
use crate::metrics::Exporter;
use crate::{fail, on_hangup, shutdown_signal, EXIT_FAILURE};

/// What SIGHUP reads again. Each part keeps its previous state when its files are bad,
/// so a typo in one file never locks clients out.
struct Reloadable {
    auth: Arc<Auth>,
    tls: Option<Arc<Tls>>,
    cluster_tls: Option<Arc<cluster::Tls>>,
}

impl Reloadable {
    fn reload(&self) {
        if let Err(e) = self.auth.reload() {
            tracing::warn!("reload: {e}; keeping the previous users and keys");
        }
        match self.tls.as_ref().map(|t| t.reload()) {
            Some(Ok(())) => tracing::info!("TLS certificate reloaded"),
            Some(Err(e)) => {
                tracing::warn!("TLS certificate not reloaded, the previous one stays: {e}")
            }
            None => {}
        }
        match self.cluster_tls.as_ref().map(|t| t.reload()) {
            Some(Ok(())) => tracing::info!("cluster TLS certificate reloaded"),
            Some(Err(e)) => {
                tracing::warn!("cluster TLS certificate not reloaded, the previous one stays: {e}")
            }
            None => {}
        }
    }
}

/// Binds, starts the node and serves until a signal arrives or the node leaves.
pub async fn serve(settings: Settings, auth: Arc<Auth>, secrets: Secrets) -> ExitCode {
    // Installed before anything else so that a signal during start-up (a long join)
    // stops us gracefully rather than by the default action.
    let shutdown = match shutdown_signal() {
        Ok(shutdown) => shutdown,
        Err(e) => return fail(EXIT_FAILURE, format!("cannot install signal handlers: {e}")),
    };
    let tls = match load_tls(&settings) {
        Ok(tls) => tls,
        Err(e) => return fail(EXIT_FAILURE, e),
    };
    let reloadable = Reloadable {
        auth: auth.clone(),
        tls: tls.clone(),
        cluster_tls: secrets.cluster_tls.clone(),
    };
    if let Err(e) = on_hangup(move || reloadable.reload()) {
        return fail(EXIT_FAILURE, format!("cannot install signal handlers: {e}"));
    }
    let c = &settings.cluster;
    let (mqtt, cluster_listener, http) = match bind_all(&settings).await {
        Ok(l) => l,
        Err(e) => return fail(EXIT_FAILURE, e),
    };
    let more_listeners = match client_listeners(&settings, tls).await {
        Ok(l) => l,
        Err(e) => return fail(EXIT_FAILURE, e),
    };
    let addr = |l: &TcpListener| l.local_addr().expect("a bound listener has an address");
    let advertise = advertised(
        c.advertise_addr.as_deref(),
        addr(&cluster_listener),
        addr(&mqtt),
        addr(&http),
    );
    let node_id = c.id();
    tracing::info!(
        node_id,
        data_dir = %settings.data_dir.display(),
        cluster_addr = %advertise.cluster_addr,
        "starting cluster member"
    );
    match (&secrets.cluster, &secrets.cluster_tls) {
        (None, None) => tracing::info!(
            "no cluster secret (--cluster-secret-file) nor cluster TLS: the cluster port \
             accepts loopback peers only"
        ),
        (_, Some(tls)) => tracing::info!(
            cert = %tls.files().cert.display(),
            ca = %tls.files().ca.display(),
            "cluster port: mutual TLS 1.3 with the cluster CA"
        ),
        (Some(_), None) => {}
    }
    let start = Node::start(cluster::Settings {
        node_id,
        data_dir: settings.data_dir.clone(),
        listener: cluster_listener,
        advertise,
        join: c.join.clone(),
        join_timeout: Duration::from_secs(c.join_timeout_secs),
        secret: secrets.cluster,
        tls: secrets.cluster_tls,
    });
    let mut shutdown = Box::pin(shutdown);
    let node = tokio::select! {
        started = start => match started {
            Ok(node) => node,
            Err(e) => return fail(EXIT_FAILURE, e),
        },
        _ = &mut shutdown => return ExitCode::SUCCESS,
    };
    let mut broker = Broker::start(settings.engine, auth, node.clone()).await;
    let mqtt_addr = match broker.listen(Listener {
        socket: mqtt,
        transport: Transport::Tcp,
    }) {
        Ok(a) => a,
        Err(e) => return fail(EXIT_FAILURE, format!("MQTT listener: {e}")),
    };
    for listener in more_listeners {
        let kind = match &listener.transport {
            Transport::Tcp => "MQTT",
            Transport::Tls(_) => "MQTT over TLS",
            Transport::Ws => "MQTT over WebSocket",
            Transport::Wss(_) => "MQTT over WebSocket and TLS",
        };
        match broker.listen(listener) {
            Ok(a) => tracing::info!("raftmq listening on {a} ({kind})"),
            Err(e) => return fail(EXIT_FAILURE, format!("{kind} listener: {e}")),
        }
    }
    let http_addr = addr(&http);
    let control: Arc<dyn Control> = Arc::new(NodeControl {
        metrics: Exporter::new(node.clone(), broker.stats(), settings.data_dir.clone()),
        node: node.clone(),
        stats: broker.stats(),
        data_dir: settings.data_dir.clone(),
    });
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http_task = tokio::spawn(crate::http::serve(
        http,
        control,
        secrets.admin_token,
        async {
            let _ = http_stopped.await;
        },
    ));
    tracing::info!("raftmq listening on {mqtt_addr} (MQTT), {http_addr} (HTTP)");
    let left = node.clone();
    let stop = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = left.left.notified() => {}
        }
    };
    broker.run(stop).await;
    let _ = stop_http.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), http_task).await;
    node.shutdown().await;
    tracing::info!("raftmq stopped");
    ExitCode::SUCCESS
}

async fn bind_all(s: &Settings) -> Result<(TcpListener, TcpListener, TcpListener), String> {
    let bind = |name: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("{name} {addr}: cannot listen: {e}"))
    };
    Ok((
        bind("mqtt_addr", s.engine.mqtt_addr).await?,
        bind("cluster_addr", s.cluster.cluster_addr).await?,
        bind("http_addr", s.cluster.http_addr).await?,
    ))
}

/// The TLS configuration, when certificate files are configured.
fn load_tls(s: &Settings) -> Result<Option<Arc<Tls>>, String> {
    let e = &s.engine;
    Ok(match (&e.tls_cert_file, &e.tls_key_file) {
        (Some(cert), Some(key)) => Some(Arc::new(Tls::load(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: e.tls_client_ca_file.clone(),
        })?)),
        _ => None,
    })
}

/// The TLS and WebSocket listeners that are configured, bound; one TLS configuration
/// shared by the TLS and WSS listeners.
async fn client_listeners(s: &Settings, tls: Option<Arc<Tls>>) -> Result<Vec<Listener>, String> {
    let e = &s.engine;
    let bind = |name: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("{name} {addr}: cannot listen: {e}"))
    };
    let mut listeners = Vec::new();
    let tls_transport = |wrap: fn(Arc<Tls>) -> Transport| {
        tls.clone()
            .map(wrap)
            .ok_or("tls_cert_file and tls_key_file are needed")
    };
    if let Some(addr) = e.tls_addr {
        listeners.push(Listener {
            socket: bind("tls_addr", addr).await?,
            transport: tls_transport(Transport::Tls)?,
        });
    }
    if let Some(addr) = e.ws_addr {
        listeners.push(Listener {
            socket: bind("ws_addr", addr).await?,
            transport: Transport::Ws,
        });
    }
    if let Some(addr) = e.wss_addr {
        listeners.push(Listener {
            socket: bind("wss_addr", addr).await?,
            transport: tls_transport(Transport::Wss)?,
        });
    }
    Ok(listeners)
}

/// The addresses peers and clients are told. With `--advertise-addr host:port`, the
/// cluster address is that and the other listeners are announced on the same host;
/// otherwise each listener's own address, with a wildcard IP replaced by this
/// machine's host name (what a container or a LAN peer can resolve).
fn advertised(
    advertise: Option<&str>,
    cluster: SocketAddr,
    mqtt: SocketAddr,
    http: SocketAddr,
) -> NodeInfo {
    let host_of = |a: SocketAddr| match a.ip().is_unspecified() {
        true => hostname(),
        false => a.ip().to_string(),
    };
    let (cluster_addr, host) = match advertise.and_then(|a| a.rsplit_once(':')) {
        Some((host, _)) => (advertise.unwrap_or_default().to_string(), Some(host)),
        None => (format!("{}:{}", host_of(cluster), cluster.port()), None),
    };
    let at = |a: SocketAddr| match host {
        Some(h) => format!("{h}:{}", a.port()),
        None => format!("{}:{}", host_of(a), a.port()),
    };
    NodeInfo {
        cluster_addr,
        mqtt_addr: at(mqtt),
        http_addr: at(http),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "127.0.0.1".to_string())
}

/// Bound on `POST /cluster/snapshot`'s wait for the snapshot to be stored.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);

/// The HTTP API's view of the node.
struct NodeControl {
    node: Arc<Node>,
    metrics: Exporter,
    /// The engine's figures.
    stats: Stats,
    data_dir: PathBuf,
}

impl Control for NodeControl {
    fn status(&self) -> Value {
        serde_json::to_value(self.node.status()).unwrap_or(Value::Null)
    }

    fn is_ready(&self) -> bool {
        self.node.is_ready()
    }

    fn metrics(&self) -> String {
        self.metrics.encode()
    }

    fn leave(&self) -> Change {
        let node = self.node.clone();
        Box::pin(async move { node.leave().await })
    }

    fn remove(&self, id: u64) -> Change {
        let node = self.node.clone();
        Box::pin(async move { node.remove(id).await })
    }

    fn snapshot(&self) -> Reply {
        let node = self.node.clone();
        Box::pin(async move {
            let figures = node.snapshot_now(SNAPSHOT_TIMEOUT).await?;
            serde_json::to_value(figures).map_err(|e| e.to_string())
        })
    }

    fn node(&self) -> Value {
        let s = self.node.status();
        json!({
            "id": s.node_id,
            "role": s.role,
            "leader": s.leader,
            "term": s.term,
            "ready": s.ready,
            "commit_index": s.commit_index,
            "applied_index": s.applied_index,
            "stats": self.stats.figures(),
            "disk": disk_usage(&self.data_dir),
        })
    }

    fn events(&self, since: Option<u64>) -> Value {
        serde_json::to_value(self.node.events(since)).unwrap_or(Value::Null)
    }
}

/// The data dir, the bytes its files take and the bytes free for it on its filesystem
/// (`null` when that cannot be read).
fn disk_usage(dir: &Path) -> Value {
    json!({
        "data_dir": dir.display().to_string(),
        "used_bytes": dir_size(dir),
        "free_bytes": free_bytes(dir),
    })
}

/// The sizes of the files under `dir`, added up (symbolic links not followed).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => dir_size(&entry.path()),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        })
        .sum()
}

/// Bytes an unprivileged user may still write on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `st` is writable space for one
    // statvfs, which the call fills when it returns 0.
    let st = unsafe {
        if libc::statvfs(path.as_ptr(), st.as_mut_ptr()) != 0 {
            return None;
        }
        st.assume_init()
    };
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_usage_adds_up_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 100]).unwrap();
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        std::fs::write(dir.path().join("blobs/b"), [0u8; 23]).unwrap();
        let usage = disk_usage(dir.path());
        assert_eq!(usage["used_bytes"], 123);
        assert!(
            usage["free_bytes"].as_u64().is_some_and(|f| f > 0),
            "{usage}"
        );
        assert_eq!(disk_usage(&dir.path().join("missing"))["used_bytes"], 0);
        assert_eq!(
            disk_usage(&dir.path().join("missing"))["free_bytes"],
            Value::Null
        );
    }

    #[test]
    fn advertised_addresses() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let n = advertised(
            None,
            a("127.0.0.2:7000"),
            a("127.0.0.2:1883"),
            a("0.0.0.0:8080"),
        );
        assert_eq!(n.cluster_addr, "127.0.0.2:7000");
        assert_eq!(n.mqtt_addr, "127.0.0.2:1883");
        assert_eq!(n.http_addr, format!("{}:8080", hostname()));
        let n = advertised(
            Some("node2:7100"),
            a("0.0.0.0:7000"),
            a("0.0.0.0:1883"),
            a("0.0.0.0:8080"),
        );
        assert_eq!(n.cluster_addr, "node2:7100");
        assert_eq!(n.mqtt_addr, "node2:1883");
        assert_eq!(n.http_addr, "node2:8080");
    }
}
