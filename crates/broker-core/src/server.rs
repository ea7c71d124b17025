//! The broker as a server: the engine plus its listeners. Each listener accepts
//! sockets, unwraps its transport (TLS, WebSocket) within the connect timeout, and
//! hands the resulting byte stream to `connection::serve`, one task per client.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::broker::Shared;
use crate::cluster_api::ClusterApi;
use crate::config::Config;
use crate::connection;

/// How long shutdown waits for connections to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What a listener speaks on top of TCP.
#[derive(Clone)]
pub enum Transport {
    /// MQTT straight over TCP.
    Tcp,
}

impl Transport {
    fn name(&self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
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
    /// [`Broker::run`].
    pub async fn start(config: Config, cluster: Arc<dyn ClusterApi>) -> Broker {
        Broker {
            shared: Shared::start(config, cluster).await,
            listeners: Vec::new(),
        }
    }

    /// Adds a listener; returns its address.
    pub fn listen(&mut self, listener: Listener) -> io::Result<SocketAddr> {
        let addr = listener.socket.local_addr()?;
        self.listeners.push(listener);
        Ok(addr)
    }

    /// Serves clients until `shutdown` resolves, then asks every connection to close
    /// and waits (bounded) for them.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        // Every connection task holds a clone of `done_tx`; when all are gone, `recv`
        // returns None (the drop-guard pattern of STYLE.md, convention 9).
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let (stop_tx, stop_rx) = watch::channel(false);
        for listener in self.listeners {
            let shared = self.shared.clone();
            tokio::spawn(accept_loop(
                shared,
                listener,
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

async fn accept_loop(
    shared: Arc<Shared>,
    listener: Listener,
    done: mpsc::Sender<()>,
    mut stop: watch::Receiver<bool>,
) {
    let name = listener.transport.name();
    loop {
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
        let deadline = tokio::time::Instant::now() + shared.config.connect_timeout();
        let open = connection::open_guard(&shared);
        let shared = shared.clone();
        let transport = listener.transport.clone();
        let done = done.clone();
        tokio::spawn(async move {
            match transport {
                Transport::Tcp => connection::serve(shared, tcp, peer, deadline).await,
            }
            drop(open);
            drop(done);
        });
    }
}
