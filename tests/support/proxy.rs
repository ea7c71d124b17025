//! Network faults between cluster nodes: a TCP proxy in front of each node's cluster
//! port, which can cut the links between chosen nodes, like a network partition.
//!
//! Node `i` listens for cluster traffic on its real port and advertises its proxy's
//! port, so every connection a peer opens to it goes through the proxy. Nodes bind the
//! source of their outgoing cluster connections to their own IP (127.0.K.(j+1) for node
//! `j`), so the proxy knows from the peer address which node is calling. A cut link
//! `(from, to)` drops what `from` sends to `to`:
//! - it closes at once the proxied connections between the two (either way);
//! - new connections from `from` to `to` are black-holed: accepted, held open, what
//!   they send is read and dropped, nothing is forwarded;
//! - new connections from `to` to `from` (when `(to, from)` is not cut) are forwarded
//!   one way: `to`'s requests arrive, `from`'s answers are dropped;
//! - they are closed when the links change again. A node thus sees what a real
//!   network drop looks like: RPCs that never get an answer.
//!
//! Cutting both directions of every link between groups is a partition
//! ([`Faults::partition`]); one direction alone is a one-way partition
//! ([`Faults::cut`]), where A hears B but B does not hear A.
//!
//! The proxies run on their own runtime (two threads shared by all clusters of the test
//! process), so a test that blocks its own thread (e.g. running the `raftmq` CLI)
//! does not stall the cluster traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::watch;

/// Bound on the proxy's connection to a node's real port.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What every proxy task watches: the cut links, where nodes really listen, and
/// whether the cluster is gone.
#[derive(Debug, Default)]
struct Links {
    /// Directed `(from, to)` node pairs whose traffic is dropped.
    cut: BTreeSet<(u64, u64)>,
    /// Each node's real cluster address (it changes if a start is retried on new ports).
    upstream: BTreeMap<u64, SocketAddr>,
    closed: bool,
}

impl Links {
    fn is_cut(&self, from: Option<u64>, to: u64) -> bool {
        from.is_some_and(|f| self.cut.contains(&(f, to)))
    }
}

/// The proxies of one cluster. Dropping it stops them and closes their connections.
pub struct Faults {
    /// The `K` of the cluster's IPs 127.0.K.x, to tell nodes apart by peer address.
    net: u8,
    links: watch::Sender<Links>,
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .expect("proxy runtime")
    })
}

impl Faults {
    pub fn new(net: u8) -> Faults {
        Faults {
            net,
            links: watch::Sender::new(Links::default()),
        }
    }

    /// Starts the proxy of node `id` on `listener`, forwarding to `upstream`.
    pub fn add_node(&self, id: u64, listener: std::net::TcpListener, upstream: SocketAddr) {
        self.set_upstream(id, upstream);
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let links = self.links.subscribe();
        let net = self.net;
        runtime().spawn(async move {
            let listener = TcpListener::from_std(listener).expect("proxy listener");
            accept_loop(listener, net, id, links).await;
        });
    }

    /// Where node `id` really listens for cluster traffic.
    pub fn set_upstream(&self, id: u64, upstream: SocketAddr) {
        self.links.send_modify(|l| {
            l.upstream.insert(id, upstream);
        });
    }

    /// Cuts every link between nodes of different groups, both ways, and heals every
    /// other link. Nodes in no group keep their links.
    pub fn partition(&self, groups: &[&[u64]]) {
        let mut cut = BTreeSet::new();
        for (i, a) in groups.iter().enumerate() {
            for b in groups.iter().skip(i + 1) {
                for &x in a.iter() {
                    for &y in b.iter() {
                        cut.insert((x, y));
                        cut.insert((y, x));
                    }
                }
            }
        }
        self.links.send_modify(|l| l.cut = cut);
    }

    /// Cuts the directed links `(from, to)` (what `from` sends to `to` is dropped) in
    /// addition to those already cut.
    pub fn cut(&self, links: &[(u64, u64)]) {
        self.links
            .send_modify(|l| l.cut.extend(links.iter().copied()));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.links.send_modify(|l| l.cut.clear());
    }
}

impl Drop for Faults {
    fn drop(&mut self) {
        self.links.send_modify(|l| l.closed = true);
    }
}

async fn accept_loop(listener: TcpListener, net: u8, to: u64, mut links: watch::Receiver<Links>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let from = node_of(net, peer.ip());
                tokio::spawn(serve(stream, from, to, links.clone()));
            }
            changed = links.changed() => {
                if changed.is_err() || links.borrow().closed {
                    return;
                }
            }
        }
    }
}

/// The node whose IP `ip` is, for IPs of this cluster's block.
fn node_of(net: u8, ip: IpAddr) -> Option<u64> {
    match ip {
        IpAddr::V4(v4) => match v4.octets() {
            [127, 0, k, x] if k == net && x >= 2 => Some(u64::from(x) - 1),
            _ => None,
        },
        IpAddr::V6(_) => None,
    }
}

/// One connection from `from` (None: not a node of this cluster) to node `to`.
async fn serve(
    mut inbound: TcpStream,
    from: Option<u64>,
    to: u64,
    mut links: watch::Receiver<Links>,
) {
    let (closed, cut, upstream) = {
        let l = links.borrow_and_update();
        (l.closed, l.is_cut(from, to), l.upstream.get(&to).copied())
    };
    if closed {
        return;
    }
    if cut {
        black_hole(&mut inbound, &mut links, from, to).await;
        return;
    }
    let answers_cut = from.is_some_and(|f| links.borrow().is_cut(Some(to), f));
    let Some(upstream) = upstream else { return };
    let Ok(Ok(mut outbound)) =
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream)).await
    else {
        return; // The node is down: the caller sees its connection closed.
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    if answers_cut {
        // One way only: the requests go through, the answers are read and dropped.
        let (mut in_read, _in_write) = inbound.split();
        let (mut out_read, mut out_write) = outbound.split();
        let mut sink = vec![0u8; 16 * 1024];
        let drop_answers =
            async { while matches!(out_read.read(&mut sink).await, Ok(n) if n > 0) {} };
        tokio::select! {
            _ = tokio::io::copy(&mut in_read, &mut out_write) => {}
            _ = drop_answers => {}
            _ = until_changed(&mut links, from, to) => {}
        }
        return;
    }
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = until_changed(&mut links, from, to) => {}
    }
}

/// Holds a connection of a cut link, dropping what it sends, until the link heals or
/// the caller closes it; it is then closed.
async fn black_hole(
    inbound: &mut TcpStream,
    links: &mut watch::Receiver<Links>,
    from: Option<u64>,
    to: u64,
) {
    let mut sink = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = inbound.read(&mut sink) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
            }
            changed = links.changed() => {
                let l = links.borrow_and_update();
                if changed.is_err() || l.closed || !l.is_cut(from, to) {
                    return;
                }
            }
        }
    }
}

/// Returns when either direction between `from` and `to` changes (cut or healed), or
/// the cluster is gone: the connection is then closed, and the next one follows the
/// new links.
async fn until_changed(links: &mut watch::Receiver<Links>, from: Option<u64>, to: u64) {
    let state = |l: &Links| {
        (
            l.is_cut(from, to),
            from.is_some_and(|f| l.is_cut(Some(to), f)),
        )
    };
    let before = state(&links.borrow_and_update());
    loop {
        if links.changed().await.is_err() {
            return;
        }
        let l = links.borrow_and_update();
        if l.closed || state(&l) != before {
            return;
        }
    }
}
