//! Node-to-node transport: tokio TCP, each frame a u32 big-endian length then the
//! bincode-2 (serde) encoding of a [`Request`] or [`Response`]. Requests are answered in
//! order on their connection, except `Forward`, which has no answer (the direct path is
//! fire-and-forget). A frame that fails to decode closes that connection only.
//!
//! Every connection starts with the `handshake`: no frame is read from a peer, and no
//! length trusted, before it has proved it knows the cluster secret. With cluster TLS
//! (`tls`), each connection is TLS first, both certificates checked against the
//! cluster CA, and the handshake and the frames run inside it: one code path over a
//! [`Conn`], whatever carries it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use std::time::Instant;

use broker_core::replicated::{StoredMessage, Target};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::LogId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::handshake::{self, Quiet, Secret};
use crate::tls::Tls;
use crate::types::{Cmd, NodeInfo, Resp, TypeConfig};

/// Largest frame read: a snapshot chunk (3 MiB by default) or a batch of entries, with room.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// Commit this batch (sent to the leader by a follower's proposer).
    Write(Cmd),
    /// Add this node to the cluster (learner, then voter).
    Join {
        id: u64,
        node: NodeInfo,
    },
    /// Take this node out of the membership.
    Remove {
        id: u64,
    },
    /// Deliver to these local sessions; no response.
    Forward {
        message: StoredMessage,
        targets: Vec<Target>,
    },
    /// Would you vote for `candidate`, whose log ends at `last_log_id`? (`prevote`)
    PreVote {
        candidate: u64,
        last_log_id: Option<LogId<u64>>,
    },
}

/// A pre-vote answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ballot {
    Yes,
    /// This node heard from a live leader (which one, when known) within the lease, or
    /// is that leader with a quorum.
    LeaderAlive(Option<u64>),
    /// The candidate's log is behind this node's.
    LogBehind,
}

/// Why a leader-only request was not done.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum LeaderError {
    #[error("not the leader (leader: {0:?})")]
    NotLeader(Option<(u64, NodeInfo)>),
    /// Refused for good (e.g. a node id already taken): asking again changes nothing.
    #[error("{0}")]
    Failed(String),
    /// Not done for a passing reason (another membership change in progress, the
    /// leader stopping, a learner still catching up): ask again shortly. Last, so that
    /// the other variants keep their encoding.
    #[error("{0} (transient)")]
    Transient(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// The log index the batch was committed at, and its outcomes.
    Write(Result<(u64, Resp), LeaderError>),
    Done(Result<(), LeaderError>),
    PreVote(Ballot),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// What a cluster connection runs over: a TCP stream, or TLS over one.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for S {}

/// An authenticated cluster connection.
pub type Conn = Box<dyn Io>;

/// Writes one frame and flushes it (TLS may hold written bytes until flushed).
pub async fn write_frame<T: Serialize, S: Io + ?Sized>(stream: &mut S, msg: &T) -> io::Result<()> {
    let body = bincode::serde::encode_to_vec(msg, config())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await?;
    stream.flush().await
}

pub async fn read_frame<T: DeserializeOwned, S: Io + ?Sized>(stream: &mut S) -> io::Result<T> {
    let len = stream.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {MAX_FRAME}"),
        ));
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await?;
    let cfg = config().with_limit::<MAX_FRAME>();
    let (msg, _) = bincode::serde::decode_from_slice(&body, cfg)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(msg)
}

/// The address our outgoing cluster connections come from, when the transport listens
/// on one specific address: a multi-homed host talks to its peers from the address it
/// announced, and a firewall rule (or the test suite's partitioning proxy) can tell the
/// nodes apart by source address.
static SOURCE_IP: OnceLock<IpAddr> = OnceLock::new();

/// Sets the source address of outgoing cluster connections (once, at start-up); a
/// wildcard address leaves the choice to the kernel.
pub fn set_source_ip(ip: IpAddr) {
    if !ip.is_unspecified() {
        let _ = SOURCE_IP.set(ip);
    }
}

/// The cluster secret of this process, set once at start-up like [`SOURCE_IP`]: every
/// dialer (Raft RPCs, proposals, forwards, joins) and the listener use it.
static SECRET: OnceLock<Secret> = OnceLock::new();

/// Sets the cluster secret (once, at start-up); `None` leaves the well-known key of a
/// node without a secret, which `node::serve` only accepts from loopback.
pub fn set_secret(secret: Option<Secret>) {
    let _ = SECRET.set(secret.unwrap_or_else(Secret::none));
}

pub(crate) fn secret() -> &'static Secret {
    SECRET.get_or_init(Secret::none)
}

/// The cluster TLS of this process, set once at start-up like [`SECRET`]; `None`:
/// plain TCP.
static TLS: OnceLock<Option<Arc<Tls>>> = OnceLock::new();

/// Sets the cluster TLS (once, at start-up).
pub fn set_tls(tls: Option<Arc<Tls>>) {
    let _ = TLS.set(tls);
}

pub(crate) fn tls() -> Option<&'static Arc<Tls>> {
    TLS.get_or_init(|| None).as_ref()
}

/// Peers we dialled that failed the handshake.
static DIAL_REFUSALS: Quiet = Quiet::new();

/// Opens an authenticated connection to `addr`: TCP, TLS when configured, then the
/// handshake.
pub async fn connect(addr: &str) -> io::Result<Conn> {
    let stream = open(addr).await?;
    let dialed = async {
        let mut conn: Conn = match tls() {
            Some(tls) => Box::new(tls.connect(stream).await?),
            None => Box::new(stream),
        };
        // Over TLS, the listener's refusal of our certificate arrives as an alert
        // when we read its first handshake message.
        handshake::dial(&mut conn, secret())
            .await
            .map_err(crate::tls::refusal)?;
        Ok(conn)
    };
    dialed.await.inspect_err(|e: &io::Error| {
        if matches!(e.kind(), io::ErrorKind::PermissionDenied) {
            DIAL_REFUSALS.warn(format_args!("cluster peer {addr} refused: {e}"));
        }
    })
}

/// The listening side of [`connect`]: TLS when configured, then the handshake.
pub async fn accept(stream: TcpStream) -> io::Result<Conn> {
    let mut conn: Conn = match tls() {
        Some(tls) => Box::new(tls.accept(stream).await?),
        None => Box::new(stream),
    };
    handshake::accept(&mut conn, secret())
        .await
        .map_err(crate::tls::refusal)?;
    Ok(conn)
}

async fn open(addr: &str) -> io::Result<TcpStream> {
    let open = async {
        let Some(ip) = SOURCE_IP.get() else {
            return TcpStream::connect(addr).await;
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address"));
        for target in tokio::net::lookup_host(addr).await? {
            let socket = match target {
                SocketAddr::V4(_) if ip.is_ipv4() => TcpSocket::new_v4()?,
                SocketAddr::V6(_) if ip.is_ipv6() => TcpSocket::new_v6()?,
                _ => continue,
            };
            socket.bind(SocketAddr::new(*ip, 0))?;
            match socket.connect(target).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, open)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One request/response connection to a peer, opened lazily and reopened after an error.
pub struct Peer {
    addr: String,
    stream: Option<Conn>,
}

impl Peer {
    pub fn new(addr: String) -> Peer {
        Peer { addr, stream: None }
    }

    /// Sends `req` and reads its response. The stream is taken out while in use and put
    /// back only after a full response: if the caller drops this future mid-frame (an
    /// RPC timeout), the next call starts on a fresh connection, never on a stale reply.
    pub async fn call(&mut self, req: &Request) -> Result<Response, CallError> {
        let mut stream = match self.stream.take() {
            Some(s) => s,
            None => connect(&self.addr).await.map_err(CallError::Connect)?,
        };
        write_frame(&mut stream, req).await.map_err(CallError::Io)?;
        let resp = read_frame(&mut stream).await.map_err(CallError::Io)?;
        self.stream = Some(stream);
        Ok(resp)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("{0}")]
    Io(io::Error),
    #[error("unexpected response")]
    Unexpected,
}

type RpcErr<E = RaftError<u64>> = RPCError<u64, NodeInfo, E>;

impl<E: std::error::Error> From<CallError> for RpcErr<E> {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Connect(e) => RPCError::Unreachable(Unreachable::new(&e)),
            other => RPCError::Network(NetworkError::new(&other)),
        }
    }
}

// The error type is openraft's; its size is not ours to choose.
#[allow(clippy::result_large_err)]
fn remote<T, E: std::error::Error>(
    target: u64,
    node: &NodeInfo,
    r: Result<T, RaftError<u64, E>>,
) -> Result<T, RpcErr<RaftError<u64, E>>> {
    r.map_err(|e| {
        RPCError::RemoteError(openraft::error::RemoteError::new_with_node(
            target,
            node.clone(),
            e,
        ))
    })
}

/// When each peer last answered a Raft RPC (or a pre-vote) of ours. A leader sends every
/// follower a heartbeat per `heartbeat_interval`, so on the leader this tells which
/// nodes are reachable (`failover` declares the silent ones dead); a follower that
/// hears no leader asks the others for pre-votes, so it too knows whom it still reaches.
/// `followed` is narrower: answers to our AppendEntries that accepted us as leader (a
/// refusal with a higher vote is not one), the measure of a leader's quorum.
#[derive(Default)]
pub struct Contacts {
    seen: Mutex<HashMap<u64, Instant>>,
    followed: Mutex<HashMap<u64, Instant>>,
}

fn note(map: &Mutex<HashMap<u64, Instant>>, node: u64) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.insert(node, Instant::now());
}

fn get(map: &Mutex<HashMap<u64, Instant>>, node: u64) -> Option<Instant> {
    let map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.get(&node).copied()
}

impl Contacts {
    pub fn seen(&self, node: u64) {
        note(&self.seen, node);
    }

    pub fn last(&self, node: u64) -> Option<Instant> {
        get(&self.seen, node)
    }

    /// When `node` last accepted us as its leader.
    pub fn last_followed(&self, node: u64) -> Option<Instant> {
        get(&self.followed, node)
    }
}

/// openraft's view of the transport.
pub struct Network {
    pub contacts: Arc<Contacts>,
}

pub struct RaftPeer {
    target: u64,
    node: NodeInfo,
    peer: Peer,
    contacts: Arc<Contacts>,
}

impl RaftPeer {
    /// Sends `req`; any answer, even a refusal, shows the peer is alive.
    async fn call(&mut self, req: &Request) -> Result<Response, CallError> {
        let resp = self.peer.call(req).await?;
        self.contacts.seen(self.target);
        Ok(resp)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> RaftPeer {
        RaftPeer {
            target,
            node: node.clone(),
            peer: Peer::new(node.cluster_addr.clone()),
            contacts: self.contacts.clone(),
        }
    }
}

impl RaftNetwork<TypeConfig> for RaftPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcErr> {
        match self.call(&Request::Append(rpc)).await? {
            Response::Append(r) => {
                if matches!(&r, Ok(a) if !matches!(a, AppendEntriesResponse::HigherVote(_))) {
                    note(&self.contacts.followed, self.target);
                }
                remote(self.target, &self.node, r)
            }
            _ => Err(CallError::Unexpected.into()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcErr<RaftError<u64, InstallSnapshotError>>> {
        match self.call(&Request::Snapshot(rpc)).await? {
            Response::Snapshot(r) => remote(self.target, &self.node, r),
            _ => Err(CallError::Unexpected.into()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcErr> {
        match self.call(&Request::Vote(rpc)).await? {
            Response::Vote(r) => remote(self.target, &self.node, r),
            _ => Err(CallError::Unexpected.into()),
        }
    }
}
