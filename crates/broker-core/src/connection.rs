//! One task per client socket: the CONNECT handshake, then a loop that reads packets,
//! writes what the session has to send, and watches keep-alive, takeover and shutdown.
//! Reading and writing are both branches of one `select!`, so a client that does not
//! read never stops us from reading it, and its growing output stops us reading it
//! (never unbounded buffers).
//!
//! The socket is any [`ByteStream`]: plain TCP, TLS, WebSocket or WebSocket over TLS
//! all arrive here the same way (the transport layer accepts and unwraps them).

use std::collections::VecDeque;
use std::future::Future;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::broker::{Publisher, Shared};
use crate::codec::{self, DecodeError};
use crate::message::Message;
use crate::metrics::{ListenerKind, Metrics, Refusal};
use crate::packet::{
    reason, Ack, ConnAck, Connect, Disconnect, Packet, Protocol, Publish, QoS, RetainHandling,
    SubAck, SubOptions, Subscribe, UnsubAck, Unsubscribe, Will,
};
use crate::quota::{self, Quota};
use crate::rate::{Bucket, Pacing};
use crate::replicated::{Event, Outcome, StoredSub, StoredWill};
use crate::session::{Delivery, Inflight, Session, Stage};
use crate::{sys, topic};

/// Stop reading a client while this much output for it is unwritten.
const WBUF_HIGH: usize = 64 * 1024;
/// Deliveries taken from a session per lock.
const DRAIN_BATCH: usize = 64;
/// Bytes read per read call, into a stack buffer and then appended to the read buffer,
/// so that a connection waiting for input holds no buffer of its own. A busy connection
/// keeps its buffers (no allocation per read or write); an idle one releases them at
/// its next keep-alive check, and one that has only connected never had any.
const READ_CHUNK: usize = 8 * 1024;
/// How long a closing connection may take to flush its last packets.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);
/// Replies held for commits, per connection, before we stop reading the client.
const MAX_HELD: usize = 1024;

/// A reply held back until the cluster has committed what it acknowledges: the packet
/// to send then (None: nothing), or why the connection must end.
type Held = Pin<Box<dyn Future<Output = Result<Option<Packet>, Exit>> + Send>>;

/// Why a connection ended.
#[derive(Debug)]
enum Exit {
    /// The client sent DISCONNECT; `will` is true for v5 reason 0x04.
    Disconnect {
        will: bool,
    },
    /// The socket closed or failed without DISCONNECT.
    Lost(String),
    KeepAlive,
    TakenOver,
    Shutdown,
    /// This node is cut off from the cluster (`Engine::set_cut_off`): the client is
    /// sent elsewhere (5.0: 0x9C, with a Server Reference when one is known).
    CutOff {
        server_reference: Option<String>,
    },
    /// The cluster could not commit what this client sent: a 5.0 client gets `ack`
    /// (a failure reason code) before DISCONNECT 0x80, and reconnects, perhaps to a
    /// node that can; what it sent after that is refused (never a false ack, never
    /// out of order).
    Unavailable {
        ack: Option<Box<Packet>>,
        why: String,
    },
    /// We close for a protocol violation, with this v5 reason code.
    Violation {
        code: u8,
        why: String,
    },
    /// A publish passed a quota and no ack can refuse it (3.1.1, or QoS 0): the
    /// connection closes (5.0: DISCONNECT 0x97), as 3.1.1 §3.3.5 says of a PUBLISH the
    /// server will not take.
    Quota(String),
    /// A 5.0 client published faster than `max_publish_rate` (DISCONNECT 0x96).
    RateTooHigh(String),
}

impl Exit {
    fn violation(code: u8, why: impl Into<String>) -> Exit {
        Exit::Violation {
            code,
            why: why.into(),
        }
    }

    /// The DISCONNECT reason a v5 client is sent, when we are the one closing.
    fn server_reason(&self) -> Option<u8> {
        match self {
            Exit::KeepAlive => Some(reason::KEEP_ALIVE_TIMEOUT),
            Exit::TakenOver => Some(reason::SESSION_TAKEN_OVER),
            Exit::Shutdown => Some(reason::SERVER_SHUTTING_DOWN),
            Exit::CutOff { .. } => Some(reason::USE_ANOTHER_SERVER),
            Exit::Violation { code, .. } => Some(*code),
            Exit::Quota(_) => Some(reason::QUOTA_EXCEEDED),
            Exit::RateTooHigh(_) => Some(reason::MESSAGE_RATE_TOO_HIGH),
            // 0x88 (server unavailable) is a CONNACK code only.
            Exit::Unavailable { .. } => Some(reason::UNSPECIFIED_ERROR),
            Exit::Disconnect { .. } | Exit::Lost(_) => None,
        }
    }

    /// Cut off, the node leaves the will to the cluster: the majority declares it dead
    /// and publishes its clients' wills, once; a live client reconnects elsewhere.
    fn publishes_will(&self) -> bool {
        !matches!(self, Exit::Disconnect { will: false } | Exit::CutOff { .. })
    }
}

/// A client's byte stream, whatever carries it.
pub(crate) trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> ByteStream for S {}

/// Counts a connection as accepted and open (in total and on its `listener`) for as
/// long as the returned guard lives; taken by the transport layer as soon as a socket
/// is accepted, so that a connection still in its TLS or WebSocket handshake counts too.
pub(crate) fn open_guard(
    shared: &Arc<Shared>,
    listener: ListenerKind,
) -> impl Drop + Send + 'static {
    struct Open(Arc<Shared>, ListenerKind);
    impl Drop for Open {
        fn drop(&mut self) {
            let m = &self.0.metrics;
            m.connections_open.fetch_sub(1, Ordering::Relaxed);
            m.open_by_listener[self.1 as usize].fetch_sub(1, Ordering::Relaxed);
        }
    }
    let m = &shared.metrics;
    Metrics::inc(&m.connections_accepted);
    Metrics::inc(&m.connections_open);
    Metrics::inc(&m.accepted_by_listener[listener as usize]);
    Metrics::inc(&m.open_by_listener[listener as usize]);
    Open(shared.clone(), listener)
}

/// A client's byte stream, counting the bytes that go through it (`bytes_received`,
/// `bytes_sent`): every read and write of a connection, CONNECT and the last
/// DISCONNECT included, goes through here.
struct Metered<S> {
    stream: S,
    shared: Arc<Shared>,
}

impl<S: ByteStream> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        Metrics::add(&this.shared.metrics.bytes_received, n as u64);
        read
    }
}

impl<S: ByteStream> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            Metrics::add(&this.shared.metrics.bytes_sent, n as u64);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// What the transport proved about the client before CONNECT.
pub(crate) enum Proof {
    Nothing,
    /// A client certificate the TLS listener verified.
    Certificate {
        common_name: Option<String>,
    },
}

/// Serves one client: CONNECT (which must arrive before `deadline`, the accept time
/// plus the connect timeout, whatever handshake came first), then its session.
pub(crate) async fn serve<S: ByteStream>(
    shared: Arc<Shared>,
    stream: S,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
    proof: Proof,
) {
    let mut stream = Metered {
        stream,
        shared: shared.clone(),
    };
    // A future is as large as everything it may await, and this task lives as long as
    // the client stays connected: the handshake, packet processing and the close are
    // boxed so that an idle client holds only the wait loop (memory per connection).
    let accepted = Box::pin(handshake(&shared, &mut stream, peer, deadline, proof)).await;
    if let Some((conn, mut rbuf)) = accepted {
        if rbuf.is_empty() {
            rbuf = BytesMut::new();
        }
        conn.run(stream, rbuf).await;
    }
}

/// Reads and answers CONNECT; the connection and any bytes read past CONNECT.
async fn handshake<S: ByteStream>(
    shared: &Arc<Shared>,
    stream: &mut S,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
    proof: Proof,
) -> Option<(Box<Connection>, BytesMut)> {
    let mut rbuf = BytesMut::with_capacity(1024);
    let max = shared.config.max_packet_size as usize;
    let read = read_connect(stream, &mut rbuf, max);
    let connect = tokio::time::timeout_at(deadline, read).await;
    let connect = match connect {
        Ok(Ok(c)) => {
            Metrics::inc(&shared.metrics.packets_received);
            c
        }
        Ok(Err(ConnectError::Decode(DecodeError::UnsupportedProtocol { name, level }))) => {
            tracing::info!(%peer, protocol = %name, level, "refused: unsupported protocol");
            let ack = Packet::ConnAck(ConnAck {
                code: reason::UNSUPPORTED_PROTOCOL_VERSION,
                ..ConnAck::default()
            });
            close_refused(shared, stream, &ack, Protocol::V4).await;
            return None;
        }
        Ok(Err(e)) => {
            Metrics::inc(&shared.metrics.protocol_errors);
            tracing::info!(%peer, reason = %e, "closed before CONNECT");
            return None;
        }
        Err(_) => {
            tracing::info!(%peer, "closed: no CONNECT within the connect timeout");
            return None;
        }
    };
    let conn = Connection::accept(shared, stream, peer, connect, proof).await?;
    Some((conn, rbuf))
}

#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("{0}")]
    Decode(DecodeError),
    #[error("{0}")]
    Io(String),
}

async fn read_connect<S: ByteStream>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    max: usize,
) -> Result<Connect, ConnectError> {
    loop {
        match codec::decode_connect(rbuf, max) {
            Ok(Some(c)) => return Ok(c),
            Ok(None) => {}
            Err(e) => return Err(ConnectError::Decode(e)),
        }
        rbuf.reserve(1024);
        match stream.read_buf(rbuf).await {
            Ok(0) => return Err(ConnectError::Io("connection closed".into())),
            Ok(_) => {}
            Err(e) => return Err(ConnectError::Io(e.to_string())),
        }
    }
}

/// Sends the CONNACK `ack` refusing a client, counts the refusal by its reason, and
/// closes.
async fn close_refused<S: ByteStream>(
    shared: &Shared,
    stream: &mut S,
    ack: &Packet,
    protocol: Protocol,
) {
    if let Packet::ConnAck(a) = ack {
        Metrics::inc(&shared.metrics.connects_refused[Refusal::of_code(a.code) as usize]);
    }
    let mut out = BytesMut::new();
    if codec::encode(ack, protocol, &mut out).is_ok() {
        let _ = tokio::time::timeout(CLOSE_FLUSH, write_flush(stream, &out)).await;
    }
    let _ = tokio::time::timeout(CLOSE_FLUSH, stream.shutdown()).await;
}

/// Writes `bytes` and flushes them: TLS and WebSocket streams hold written bytes until
/// flushed.
async fn write_flush<S: ByteStream>(stream: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// With `tls_use_identity_as_username`, a client that proved a certificate is known by
/// its subject CN, whatever its CONNECT claims (the certificate is its credential);
/// `Ok(None)` when the certificate says nothing, `Err` when the client is refused.
fn certificate_identity(
    cfg: &crate::config::Config,
    proof: Proof,
) -> Result<Option<String>, &'static str> {
    match proof {
        Proof::Certificate { common_name } if cfg.tls_use_identity_as_username => common_name
            .map(Some)
            .ok_or("client certificate has no subject CN to take as username"),
        _ => Ok(None),
    }
}

/// A client id for a client that sent none: unique for the life of this process.
fn assigned_client_id(shared: &Shared, conn_id: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(conn_id);
    h.write_usize(shared as *const Shared as usize);
    format!("raftmq-{conn_id}-{:016x}", h.finish())
}

/// Per-connection state; the session holds what outlives it.
struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    protocol: Protocol,
    conn_id: u64,
    client_id: Arc<str>,
    username: Option<Arc<str>>,
    session: Arc<Session>,
    /// The epoch of our claim on the session (replicated registry).
    epoch: u64,
    /// Boxed: most clients have none, and it is large.
    will: Option<Box<Will>>,
    keep_alive: Option<Duration>,
    /// The client's Maximum Packet Size: larger messages are not sent to it.
    max_out: usize,
    /// Inbound topic aliases (v5), index = alias - 1.
    aliases_in: Vec<Option<String>>,
    /// Outbound topic aliases (v5): topic → alias, up to the client's maximum.
    aliases_out: std::collections::HashMap<String, u16>,
    aliases_out_max: u16,
    /// v5 Request Problem Information: reason strings may go on acks.
    problem_info: bool,
    wbuf: BytesMut,
    /// Written to the stream but not yet flushed (TLS and WebSocket buffer writes).
    unflushed: bool,
    want_drain: bool,
    /// Sessions queued above their bound by this client's publishes (backpressure):
    /// we stop reading the client, though not writing to it, until they have room.
    blocked: Vec<Arc<Session>>,
    /// Replies waiting for commits, in the order they must be sent (MQTT wants
    /// PUBACKs in PUBLISH order; commits complete in proposal order anyway).
    held: VecDeque<Held>,
    /// Messages this connection has proposed to the cluster (see `Publisher`).
    proposed: u64,
    /// Boxed, and only when a limit is set: most deployments have none.
    limits: Option<Box<Limits>>,
    /// Over an inbound rate: the socket is not read, nor packets handled, until then.
    paused_until: Option<tokio::time::Instant>,
    /// The push-pacing slot reserved for the session's next delivery.
    paced: Option<tokio::time::Instant>,
    /// When the client last sent anything (the keep-alive counts from it).
    last_read: Instant,
}

/// A client's inbound rates: `max_publish_rate` and `max_inbound_bytes_rate`.
struct Limits {
    publishes: Option<Bucket>,
    bytes: Option<Bucket>,
    /// Whether this client's first excess was logged (one line per client).
    logged: bool,
}

impl Limits {
    /// The configured limits, or none. A second's worth may come at once.
    fn new(cfg: &crate::config::Config) -> Option<Box<Limits>> {
        let now = tokio::time::Instant::now();
        let bucket = |rate: f64| (rate > 0.0).then(|| Bucket::new(rate, rate, now));
        let publishes = bucket(f64::from(cfg.max_publish_rate));
        let bytes = bucket(cfg.max_inbound_bytes_rate as f64);
        (publishes.is_some() || bytes.is_some()).then(|| {
            Box::new(Limits {
                publishes,
                bytes,
                logged: false,
            })
        })
    }
}

/// Push pacing: whether the next delivery, on `topic`, may go now. A paced one reserves
/// a slot in `paced` once and waits for it (the run loop wakes the drain then).
fn slot_due(pacing: &Pacing, paced: &mut Option<tokio::time::Instant>, topic: &str) -> bool {
    let now = tokio::time::Instant::now();
    let slot = match *paced {
        Some(slot) => slot,
        None => match pacing.slot(topic, now) {
            Some(slot) => slot,
            None => return true,
        },
    };
    let due = slot <= now;
    *paced = (!due).then_some(slot);
    due
}

/// Resolves at `at`, or never.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Connection {
    /// Validates CONNECT, claims and attaches the session and sends CONNACK; `None`
    /// when the client was refused (the refusal is already sent).
    async fn accept<S: ByteStream>(
        shared: &Arc<Shared>,
        stream: &mut S,
        peer: SocketAddr,
        c: Connect,
        proof: Proof,
    ) -> Option<Box<Connection>> {
        let cfg = &shared.config;
        let protocol = c.protocol;
        let conn_id = shared.next_conn_id();
        let certified = certificate_identity(cfg, proof);
        let refuse = |code: u8, why: &str| {
            tracing::info!(%peer, client_id = %c.client_id, code, "refused: {why}");
            Packet::ConnAck(ConnAck {
                code,
                ..ConnAck::default()
            })
        };
        let open = Metrics::get(&shared.metrics.connections_open);
        let refusal = if let Some(cut) = shared.cut_off() {
            // Cut off, no claim could commit: say so now, not after the commit timeout.
            let why = "cut off from the cluster: use another server";
            tracing::info!(%peer, client_id = %c.client_id, "refused: {why}");
            Some(Packet::ConnAck(ConnAck {
                code: match cut.server_reference {
                    Some(_) => reason::USE_ANOTHER_SERVER,
                    None => reason::SERVER_UNAVAILABLE,
                },
                server_reference: cut.server_reference,
                reason_string: Some(why.into()),
                ..ConnAck::default()
            }))
        } else if open > cfg.max_connections as u64 {
            Some(refuse(reason::SERVER_BUSY, "too many connections"))
        } else if shared.over_memory.load(Ordering::Relaxed) {
            Metrics::inc(&shared.metrics.refused_memory);
            Some(refuse(
                reason::SERVER_BUSY,
                "memory above max_memory_mb: server busy",
            ))
        } else if c.client_id.is_empty() && protocol == Protocol::V4 && !c.clean_start {
            Some(refuse(
                reason::CLIENT_ID_NOT_VALID,
                "empty client id needs clean session",
            ))
        } else if protocol == Protocol::V4
            && cfg.max_keep_alive_secs > 0
            && c.keep_alive > cfg.max_keep_alive_secs
        {
            // 3.1.1 has no Server Keep Alive: a client held to a shorter keep-alive than
            // it asked for would be dropped while behaving correctly. Refuse it openly,
            // as Mosquitto does (return code 0x02).
            Some(refuse(
                reason::CLIENT_ID_NOT_VALID,
                "3.1.1 keep-alive above max_keep_alive_secs",
            ))
        } else if c.authentication_method.is_some() {
            Some(refuse(
                reason::BAD_AUTH_METHOD,
                "no enhanced authentication",
            ))
        } else if c.receive_maximum == Some(0) || c.maximum_packet_size == Some(0) {
            Some(refuse(
                reason::PROTOCOL_ERROR,
                "zero receive/packet maximum",
            ))
        } else if c
            .will
            .as_ref()
            .is_some_and(|w| !topic::valid_topic_name(&w.topic))
        {
            Some(refuse(reason::TOPIC_NAME_INVALID, "invalid will topic"))
        } else {
            certified
                .as_ref()
                .err()
                .map(|why| refuse(reason::NOT_AUTHORIZED, why))
        };
        if let Some(ack) = refusal {
            close_refused(shared, stream, &ack, protocol).await;
            return None;
        }
        // From here on the username is the authenticated one (`None`: anonymous): the
        // certificate's when it vouches for one, else what the credentials prove.
        let (user, password) = (c.username.as_deref(), c.password.as_deref());
        let checked = match certified {
            Ok(Some(cn)) => Ok(Some(cn)),
            _ => shared
                .auth
                .check(&c.client_id, user, password, peer.ip())
                .await
                .map(|identity| identity.username),
        };
        let username = match checked {
            Ok(username) => username,
            Err(no) => {
                // Logged at debug: the throttle warns once per burst of failures.
                Metrics::inc(&shared.metrics.auth_failures);
                tracing::debug!(%peer, client_id = %c.client_id, code = no.code, "refused: {}", no.why);
                let ack = ConnAck {
                    code: no.code,
                    ..ConnAck::default()
                };
                close_refused(shared, stream, &Packet::ConnAck(ack), protocol).await;
                return None;
            }
        };

        let assigned = c.client_id.is_empty();
        let client_id: Arc<str> = if assigned {
            assigned_client_id(shared, conn_id).into()
        } else {
            c.client_id.as_str().into()
        };
        let requested_expiry = match protocol {
            Protocol::V5 => c.session_expiry_interval.unwrap_or(0),
            Protocol::V4 if c.clean_start => 0,
            Protocol::V4 => u32::MAX,
        };
        let expiry = requested_expiry.min(cfg.max_session_expiry_secs);
        let cap = cfg.max_keep_alive_secs;
        let server_keep_alive =
            (cap > 0 && (c.keep_alive == 0 || c.keep_alive > cap)).then_some(cap);
        let keep_alive = server_keep_alive.unwrap_or(c.keep_alive);
        let window = match protocol {
            Protocol::V5 => cfg.max_inflight.min(c.receive_maximum.unwrap_or(u16::MAX)),
            Protocol::V4 => cfg.max_inflight,
        };

        let over_quota = c
            .will
            .as_ref()
            .map_or(Ok(()), |w| quota::check_topic(cfg, &w.topic));
        if let Err(q) =
            over_quota.and_then(|()| shared.quota.admit_session(cfg, &client_id, expiry))
        {
            shared
                .quota
                .exceeded(&shared.metrics, q, &client_id, "CONNECT refused");
            let ack = refuse(reason::QUOTA_EXCEEDED, q.setting());
            close_refused(shared, stream, &ack, protocol).await;
            return None;
        }
        // Replicated, so that the cluster publishes it if this node dies.
        let will = c.will.as_ref().map(|w| StoredWill::new(w, &client_id));
        let claim = Event::Claim {
            node: shared.node,
            client_id: client_id.to_string(),
            clean_start: c.clean_start,
            expiry_secs: expiry,
            username: username.clone(),
            will,
        };
        let epoch_before = shared.session(&client_id).map(|s| s.lock().epoch);
        let claimed = match shared.cluster.commit(claim).await {
            Ok(Outcome::Claimed { epoch, present }) => shared
                .attach(&client_id, epoch, conn_id, protocol, usize::from(window))
                .map(|s| (s, present, epoch)),
            Ok(_) => None,
            Err(e) => {
                let ack = refuse(reason::SERVER_UNAVAILABLE, &e.to_string());
                close_refused(shared, stream, &ack, protocol).await;
                shared.release_if_claimed_late(&client_id, epoch_before);
                return None;
            }
        };
        let Some((session, present, epoch)) = claimed else {
            // Another connection claimed the client id while we were claiming it.
            let ack = refuse(reason::SESSION_TAKEN_OVER, "session taken over");
            close_refused(shared, stream, &ack, protocol).await;
            return None;
        };
        Metrics::inc(&shared.metrics.clients_accepted);
        tracing::info!(
            %peer, %client_id, ?protocol, clean_start = c.clean_start,
            session_present = present, keep_alive, "client connected"
        );
        let mut ack = ConnAck {
            session_present: present,
            code: reason::SUCCESS,
            ..ConnAck::default()
        };
        if protocol == Protocol::V5 {
            ack.receive_maximum = Some(cfg.receive_maximum);
            ack.maximum_packet_size = Some(cfg.max_packet_size);
            ack.topic_alias_maximum = Some(cfg.topic_alias_maximum);
            ack.assigned_client_identifier = assigned.then(|| client_id.to_string());
            ack.server_keep_alive = server_keep_alive;
            ack.session_expiry_interval = (expiry != requested_expiry).then_some(expiry);
        }
        let mut conn = Connection {
            shared: shared.clone(),
            peer,
            protocol,
            conn_id,
            client_id,
            username: username.map(Into::into),
            session,
            epoch,
            will: c.will.map(Box::new),
            keep_alive: (keep_alive > 0)
                .then(|| Duration::from_millis(u64::from(keep_alive) * 1500)),
            max_out: c.maximum_packet_size.map_or(usize::MAX, |m| m as usize),
            aliases_in: Vec::new(),
            aliases_out: Default::default(),
            aliases_out_max: c.topic_alias_maximum.unwrap_or(0),
            problem_info: c.request_problem_information != Some(0),
            wbuf: BytesMut::new(),
            unflushed: false,
            want_drain: true,
            blocked: Vec::new(),
            held: VecDeque::new(),
            proposed: 0,
            limits: Limits::new(cfg),
            paused_until: None,
            paced: None,
            last_read: Instant::now(),
        };
        conn.send(&Packet::ConnAck(ack));
        conn.resend_inflight();
        // Boxed: the task that serves the client holds a pointer, not the struct, in
        // each of the futures it passes through (async arguments are stored twice).
        Some(Box::new(conn))
    }

    /// Serves the session until the connection ends, in two states so that an idle client
    /// costs little memory: `active` (boxed, one per burst of work) moves packets while
    /// there is anything to read, write, wait for or deliver; `park` waits on the socket,
    /// the session's wake-up and the keep-alive timer, holding no buffers. The wake-up
    /// and the timer live here, across both states: a delivery signalled while one
    /// state hands over to the other is kept, not lost.
    async fn run<S: ByteStream>(mut self: Box<Self>, mut stream: S, mut rbuf: BytesMut) {
        let session = self.session.clone();
        let keep_alive = tokio::time::sleep(self.idle());
        tokio::pin!(keep_alive);
        let wake = session.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let exit = loop {
            let burst = self.active(
                &mut stream,
                &mut rbuf,
                &session,
                wake.as_mut(),
                keep_alive.as_mut(),
            );
            if let Err(exit) = Box::pin(burst).await {
                break exit;
            }
            // Nothing to do: give the buffers back (the next read or delivery takes
            // what it needs) and wait.
            if rbuf.is_empty() {
                rbuf = BytesMut::new();
            }
            self.wbuf = BytesMut::new();
            let parked = self.park(
                &mut stream,
                &mut rbuf,
                &session,
                wake.as_mut(),
                keep_alive.as_mut(),
            );
            if let Err(exit) = parked.await {
                break exit;
            }
        };
        Box::pin((*self).close(stream, exit)).await;
    }

    /// How long the client may stay silent: 1.5 times its keep-alive, or for ever.
    fn idle(&self) -> Duration {
        self.keep_alive
            .unwrap_or(Duration::from_secs(365 * 24 * 3600))
    }

    /// Moves packets until there is nothing to do (Ok: park) or the connection ends.
    async fn active<'s, S: ByteStream>(
        &mut self,
        stream: &mut S,
        rbuf: &mut BytesMut,
        session: &'s Arc<Session>,
        mut wake: Pin<&mut tokio::sync::futures::Notified<'s>>,
        mut keep_alive: Pin<&mut tokio::time::Sleep>,
    ) -> Result<(), Exit> {
        let max_in = self.shared.config.max_packet_size as usize;
        let bound = self.shared.config.max_queued_messages;
        // Bytes the park read: handled before anything else.
        if !rbuf.is_empty() {
            Box::pin(self.process(rbuf, max_in)).await?;
        }
        loop {
            if self.shared.shutting_down.load(Ordering::Acquire) {
                return Err(Exit::Shutdown);
            }
            if !session.is_attached(self.conn_id) {
                return Err(Exit::TakenOver);
            }
            if let Some(cut) = self.shared.cut_off() {
                return Err(Exit::CutOff {
                    server_reference: cut.server_reference,
                });
            }
            // Fill the write buffer in one go: a subscriber fed by many publishers gets
            // one turn per wake-up, and should move as much as it can with it.
            while self.want_drain && self.wbuf.len() < WBUF_HIGH {
                self.want_drain = self.drain();
            }
            if self.is_idle() {
                return Ok(());
            }
            let can_read = self.wbuf.len() < WBUF_HIGH
                && self.blocked.is_empty()
                && self.paused_until.is_none()
                && self.held.len() < MAX_HELD;
            tokio::select! {
                biased;
                io = std::future::poll_fn(|cx| {
                    poll_io(cx, stream, &self.wbuf, self.unflushed, can_read, rbuf, &self.shared)
                }), if !self.wbuf.is_empty() || self.unflushed || can_read => match io {
                    Io::Wrote(n) => {
                        self.wbuf.advance(n);
                        self.unflushed = true;
                    }
                    Io::Flushed => self.unflushed = false,
                    Io::Read(n) => {
                        self.on_read(n)?;
                        Box::pin(self.process(rbuf, max_in)).await?;
                    }
                    Io::CutOff(cut) => return Err(Exit::CutOff {
                        server_reference: cut.server_reference,
                    }),
                    Io::Failed(e) => return Err(Exit::Lost(e.to_string())),
                },
                r = next_held(&mut self.held), if !self.held.is_empty() => {
                    if let Some(packet) = r? {
                        self.send(&packet);
                    }
                }
                // Polled even while draining, so that a busy or stuck connection still
                // learns at once that it was taken over or that the broker stops.
                _ = wake.as_mut() => self.woken(session, wake.as_mut()),
                _ = sleep_until(self.paused_until), if self.paused_until.is_some() => {
                    self.paused_until = None;
                    Box::pin(self.process(rbuf, max_in)).await?;
                }
                _ = sleep_until(self.paced), if self.paced.is_some() && !self.want_drain => {
                    self.want_drain = true;
                }
                _ = wait_for_room(&self.blocked, bound), if !self.blocked.is_empty() => {
                    self.blocked.clear();
                    // Packets read before we stopped are handled now, not at the next read.
                    Box::pin(self.process(rbuf, max_in)).await?;
                }
                _ = keep_alive.as_mut(), if self.keep_alive.is_some() => {
                    self.on_keep_alive(keep_alive.as_mut())?;
                }
            }
        }
    }

    /// Nothing to write, flush, deliver, answer or wait for: only the client, a wake-up
    /// or the keep-alive timer can give this connection work.
    fn is_idle(&self) -> bool {
        !self.want_drain
            && self.wbuf.is_empty()
            && !self.unflushed
            && self.held.is_empty()
            && self.blocked.is_empty()
            && self.paused_until.is_none()
            && self.paced.is_none()
    }

    /// Waits, holding no buffer, until the client sends something (read into `rbuf`,
    /// for `active` to handle), the session is woken, or the keep-alive timer fires.
    async fn park<'s, S: ByteStream>(
        &mut self,
        stream: &mut S,
        rbuf: &mut BytesMut,
        session: &'s Arc<Session>,
        mut wake: Pin<&mut tokio::sync::futures::Notified<'s>>,
        mut keep_alive: Pin<&mut tokio::time::Sleep>,
    ) -> Result<(), Exit> {
        tokio::select! {
            biased;
            _ = wake.as_mut() => self.woken(session, wake.as_mut()),
            io = std::future::poll_fn(|cx| poll_io(cx, stream, &[], false, true, rbuf, &self.shared)) => {
                match io {
                    Io::Read(n) => self.on_read(n)?,
                    Io::Failed(e) => return Err(Exit::Lost(e.to_string())),
                    // Nothing was waiting to be written.
                    Io::Wrote(_) | Io::Flushed | Io::CutOff(_) => {}
                }
            }
            _ = keep_alive.as_mut(), if self.keep_alive.is_some() => {
                self.on_keep_alive(keep_alive)?;
            }
        }
        Ok(())
    }

    /// The session's wake-up fired: deliver, and register for the next one.
    fn woken<'s>(
        &mut self,
        session: &'s Arc<Session>,
        mut wake: Pin<&mut tokio::sync::futures::Notified<'s>>,
    ) {
        self.want_drain = true;
        wake.set(session.wake.notified());
        wake.as_mut().enable();
    }

    /// `n` bytes came in (0: the client closed its side).
    fn on_read(&mut self, n: usize) -> Result<(), Exit> {
        if n == 0 {
            return Err(Exit::Lost("connection closed by client".into()));
        }
        self.last_read = Instant::now();
        self.count_bytes_in(n);
        Ok(())
    }

    /// The keep-alive timer fired: ends a client silent for too long, else re-arms.
    /// Re-armed lazily: a timer reset per packet would cost more than one check per
    /// keep-alive period.
    fn on_keep_alive(&mut self, keep_alive: Pin<&mut tokio::time::Sleep>) -> Result<(), Exit> {
        let idle = self.idle();
        let deadline = self.last_read + idle;
        // A client we have stopped reading is not silent: we are.
        let reading = self.blocked.is_empty() && self.paused_until.is_none();
        if Instant::now() >= deadline && reading {
            return Err(Exit::KeepAlive);
        }
        let next = if reading {
            deadline
        } else {
            Instant::now() + idle
        };
        keep_alive.reset(next.into());
        Ok(())
    }

    /// Handles every complete packet in `rbuf`, or those up to a publish that filled a
    /// subscriber's queue under the backpressure policy.
    async fn process(&mut self, rbuf: &mut BytesMut, max_in: usize) -> Result<(), Exit> {
        while self.blocked.is_empty() && self.paused_until.is_none() {
            let packet = match codec::decode(rbuf, self.protocol, max_in) {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Exit::violation(e.reason_code(), e.to_string())),
            };
            self.handle(packet).await?;
        }
        Ok(())
    }

    async fn handle(&mut self, packet: Packet) -> Result<(), Exit> {
        tracing::trace!(client_id = %self.client_id, "in: {packet:?}");
        Metrics::inc(&self.shared.metrics.packets_received);
        match packet {
            Packet::Publish(p) => self.on_publish(p).await,
            Packet::PubAck(a) => {
                self.complete(a.pkid, Stage::Published);
                Ok(())
            }
            Packet::PubRec(a) => {
                self.on_pubrec(a);
                Ok(())
            }
            Packet::PubRel(a) => {
                self.on_pubrel(a);
                Ok(())
            }
            Packet::PubComp(a) => {
                self.complete(a.pkid, Stage::Released);
                Ok(())
            }
            Packet::Subscribe(s) => self.on_subscribe(s).await,
            Packet::Unsubscribe(u) => self.on_unsubscribe(u).await,
            Packet::PingReq => {
                self.send(&Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => self.on_disconnect(d),
            Packet::Connect(_) => Err(Exit::violation(reason::PROTOCOL_ERROR, "second CONNECT")),
            Packet::Auth { .. } => Err(Exit::violation(
                reason::PROTOCOL_ERROR,
                "AUTH without an authentication method",
            )),
            other => Err(Exit::violation(
                reason::PROTOCOL_ERROR,
                format!("a client may not send {}", packet_name(&other)),
            )),
        }
    }

    fn on_disconnect(&mut self, d: Disconnect) -> Result<(), Exit> {
        if let Some(requested) = d.session_expiry_interval {
            let mut st = self.session.lock();
            if st.expiry_secs == 0 && requested != 0 {
                drop(st);
                return Err(Exit::violation(
                    reason::PROTOCOL_ERROR,
                    "session expiry set on DISCONNECT after 0 on CONNECT",
                ));
            }
            st.expiry_secs = requested.min(self.shared.config.max_session_expiry_secs);
        }
        Err(Exit::Disconnect {
            will: d.code == reason::DISCONNECT_WITH_WILL,
        })
    }

    /// Resolves the topic of an inbound PUBLISH, applying v5 topic aliases.
    fn resolve_topic(&mut self, p: &mut Publish) -> Result<(), Exit> {
        if let Some(alias) = p.topic_alias {
            let max = self.shared.config.topic_alias_maximum;
            if alias == 0 || alias > max {
                return Err(Exit::violation(
                    reason::TOPIC_ALIAS_INVALID,
                    format!("topic alias {alias} outside 1..={max}"),
                ));
            }
            let slot = usize::from(alias - 1);
            if self.aliases_in.len() <= slot {
                self.aliases_in.resize(slot + 1, None);
            }
            if p.topic.is_empty() {
                match &self.aliases_in[slot] {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        return Err(Exit::violation(
                            reason::PROTOCOL_ERROR,
                            format!("unknown topic alias {alias}"),
                        ))
                    }
                }
            } else {
                self.aliases_in[slot] = Some(p.topic.clone());
            }
        }
        if !topic::valid_topic_name(&p.topic) {
            return Err(Exit::violation(
                reason::TOPIC_NAME_INVALID,
                format!("invalid topic name {:?}", p.topic),
            ));
        }
        Ok(())
    }

    async fn on_publish(&mut self, mut p: Publish) -> Result<(), Exit> {
        let m = &self.shared.metrics;
        Metrics::inc(&m.publish_received);
        Metrics::inc(&m.received_by_qos[p.qos as usize]);
        self.resolve_topic(&mut p)?;
        let (qos, pkid) = (p.qos, p.pkid);
        if let Err(q) = quota::check_topic(&self.shared.config, &p.topic) {
            let verdict = self.over_quota(q, qos, "PUBLISH topic")?;
            return self.answer(verdict, qos, pkid);
        }
        if self.limits.is_some() {
            self.check_publish_rate(qos, pkid)?;
        }
        if qos == QoS::ExactlyOnce {
            let mut st = self.session.lock();
            if st.incoming_qos2.contains(&pkid) {
                // A retransmission of a message we already have (perhaps committed by
                // another node before this client failed over): acknowledge again,
                // deliver nothing (exactly once).
                drop(st);
                self.reply(Packet::PubRec(Ack::new(pkid, reason::SUCCESS)));
                return Ok(());
            }
            // 5.0 clients are told Receive Maximum; 3.1.1 clients, told nothing, are
            // held to a quota.
            let cfg = &self.shared.config;
            let v5 = self.protocol == Protocol::V5;
            let limit = if v5 {
                cfg.receive_maximum
            } else {
                cfg.max_inflight_qos2
            };
            if st.incoming_qos2.len() >= usize::from(limit) {
                drop(st);
                if v5 {
                    return Err(Exit::violation(
                        reason::RECEIVE_MAXIMUM_EXCEEDED,
                        "more unacknowledged QoS 2 publishes than Receive Maximum",
                    ));
                }
                let (q, shared) = (Quota::InflightQos2, &self.shared);
                let what = "QoS 2 PUBLISH awaiting PUBREL";
                shared
                    .quota
                    .exceeded(&shared.metrics, q, &self.client_id, what);
                return Err(Exit::Quota(format!("{what} over {}", q.setting())));
            }
            // Taken now, so that a retransmission while the commit runs is one too.
            st.incoming_qos2.insert(pkid);
        }
        let verdict = match self.accept_publish(p) {
            Ok(verdict) => verdict,
            Err(exit) => {
                if qos == QoS::ExactlyOnce {
                    self.session.lock().incoming_qos2.remove(&pkid);
                }
                return Err(exit);
            }
        };
        self.answer(verdict, qos, pkid)
    }

    /// Sends (or holds) the ack `verdict` calls for.
    fn answer(&mut self, verdict: Verdict, qos: QoS, pkid: u16) -> Result<(), Exit> {
        let ack = move |code| match qos {
            QoS::ExactlyOnce => Packet::PubRec(Ack::new(pkid, code)),
            _ => Packet::PubAck(Ack::new(pkid, code)),
        };
        match verdict {
            Verdict::Now(code) => {
                if qos == QoS::ExactlyOnce && code >= 0x80 {
                    self.session.lock().incoming_qos2.remove(&pkid);
                }
                if qos != QoS::AtMostOnce {
                    let packet = self.with_reason(ack(code));
                    self.reply(packet);
                }
            }
            // No ack to hold: what the commit brings (a retained message) follows. It is
            // held all the same (sending nothing), so that a new retained topic counts
            // against its quota until applied, and `MAX_HELD` bounds how many are.
            Verdict::Commit { committed, .. } if qos == QoS::AtMostOnce => {
                self.held.push_back(Box::pin(async move {
                    let _ = committed.await;
                    Ok(None)
                }));
            }
            Verdict::Commit { code, committed } => {
                let failed = self.with_reason(ack(reason::UNSPECIFIED_ERROR));
                let protocol = self.protocol;
                let session = self.session.clone();
                let shared = self.shared.clone();
                let client_id = self.client_id.to_string();
                self.held.push_back(Box::pin(async move {
                    match committed.await {
                        Ok(()) => Ok(Some(ack(code))),
                        Err(e) => {
                            tracing::warn!(%client_id, "publish not committed: {e}");
                            session.lock().incoming_qos2.remove(&pkid);
                            // Never a false acknowledgement: 5.0 gets a failure code,
                            // which ends the flow, and 3.1.1, which has none, only the
                            // closed connection (then resends the message, DUP, which
                            // a late commit of it makes a known duplicate). After a
                            // 5.0 QoS 2 failure the client may reuse the packet id: the
                            // cluster frees it, after the message if that commits yet.
                            let ack = (protocol == Protocol::V5).then(|| Box::new(failed));
                            if qos == QoS::ExactlyOnce && ack.is_some() {
                                drop(shared.cluster.commit(Event::PubRel { client_id, pkid }));
                            }
                            Err(Exit::Unavailable {
                                ack,
                                why: e.to_string(),
                            })
                        }
                    }
                }));
            }
        }
        Ok(())
    }

    /// Sends `packet` now, or after the replies held before it.
    fn reply(&mut self, packet: Packet) {
        if self.held.is_empty() {
            self.send(&packet);
        } else {
            self.held
                .push_back(Box::pin(std::future::ready(Ok(Some(packet)))));
        }
    }

    /// `max_publish_rate`. A 5.0 client over it is disconnected with 0x96 (message rate
    /// too high: 5.0 defines that code for DISCONNECT only, no ack carries it), after a
    /// second's worth of burst. A 3.1.1 client, which has no code for it, is slowed
    /// instead: this publish goes through and the socket rests until the rate allows.
    /// The resend of a QoS 2 message already taken is never counted: its PUBREC must
    /// confirm it.
    fn check_publish_rate(&mut self, qos: QoS, pkid: u16) -> Result<(), Exit> {
        if qos == QoS::ExactlyOnce && self.session.lock().incoming_qos2.contains(&pkid) {
            return Ok(());
        }
        let v5 = self.protocol == Protocol::V5;
        let Some(limits) = self.limits.as_mut() else {
            return Ok(());
        };
        let Some(bucket) = limits.publishes.as_mut() else {
            return Ok(());
        };
        let now = tokio::time::Instant::now();
        let metrics = &self.shared.metrics;
        let rate = self.shared.config.max_publish_rate;
        if v5 {
            if bucket.try_take(1.0, now) {
                return Ok(());
            }
            Metrics::inc(&metrics.dropped_rate_limited);
            tracing::warn!(client_id = %self.client_id, "over max_publish_rate {rate}/s: disconnecting it (0x96)");
            return Err(Exit::RateTooHigh(format!(
                "publishing faster than max_publish_rate {rate}/s"
            )));
        }
        if let Some(until) = bucket.take(1.0, now) {
            Metrics::inc(&metrics.rate_limit_pauses);
            self.paused_until = Some(self.paused_until.map_or(until, |u| u.max(until)));
            if !limits.logged {
                limits.logged = true;
                tracing::warn!(client_id = %self.client_id, "over max_publish_rate {rate}/s: slowing it (not reading its socket)");
            }
        }
        Ok(())
    }

    /// `max_inbound_bytes_rate`: counts `n` bytes read, resting the socket when over.
    fn count_bytes_in(&mut self, n: usize) {
        let Some(bucket) = self.limits.as_mut().and_then(|l| l.bytes.as_mut()) else {
            return;
        };
        if let Some(until) = bucket.take(n as f64, tokio::time::Instant::now()) {
            Metrics::inc(&self.shared.metrics.rate_limit_pauses);
            self.paused_until = Some(self.paused_until.map_or(until, |u| u.max(until)));
            let limits = self.limits.as_mut().expect("checked above");
            if !limits.logged {
                limits.logged = true;
                let rate = self.shared.config.max_inbound_bytes_rate;
                tracing::warn!(client_id = %self.client_id, "over max_inbound_bytes_rate {rate} B/s: slowing (not reading) it");
            }
        }
    }

    /// Counts and logs a publish refused by `quota`: a 5.0 QoS 1/2 one gets its ack with
    /// 0x97; any other cannot be refused but by closing the connection.
    fn over_quota(&self, quota: Quota, qos: QoS, what: &str) -> Result<Verdict, Exit> {
        let shared = &self.shared;
        shared
            .quota
            .exceeded(&shared.metrics, quota, &self.client_id, what);
        match (self.protocol, qos) {
            (Protocol::V5, QoS::AtLeastOnce | QoS::ExactlyOnce) => {
                Ok(Verdict::Now(reason::QUOTA_EXCEEDED))
            }
            _ => Err(Exit::Quota(format!("{what} over {}", quota.setting()))),
        }
    }

    /// Adds a reason string to a failure ack, when the client wants them.
    fn with_reason(&self, packet: Packet) -> Packet {
        let add = |a: Ack| {
            let reason_string =
                (a.code >= 0x80 && self.problem_info).then(|| reason_text(a.code).to_string());
            Ack { reason_string, ..a }
        };
        match packet {
            Packet::PubAck(a) => Packet::PubAck(add(a)),
            Packet::PubRec(a) => Packet::PubRec(add(a)),
            other => other,
        }
    }

    /// Checks and routes an inbound message, proposing what must be committed first.
    fn accept_publish(&mut self, p: Publish) -> Result<Verdict, Exit> {
        if p.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&p.payload).is_err()
        {
            return Ok(Verdict::Now(reason::PAYLOAD_FORMAT_INVALID));
        }
        let shared = &self.shared;
        if !shared.may_publish(&self.client_id, self.username.as_deref(), &p.topic) {
            tracing::debug!(client_id = %self.client_id, topic = %p.topic, "publish denied");
            return Ok(Verdict::Now(reason::NOT_AUTHORIZED));
        }
        let retained = match p.retain && !p.payload.is_empty() {
            true => match self.reserve_retained(&p.topic, p.payload.len()) {
                Ok(room) => room,
                Err(q) => return self.over_quota(q, p.qos, "retained PUBLISH"),
            },
            false => None,
        };
        // A persistent session's QoS 2 packet id is held by the cluster until PUBREL,
        // so that a resend to another node after a failover is known as one.
        let qos2_pkid =
            (p.qos == QoS::ExactlyOnce && self.session.lock().expiry_secs != 0).then_some(p.pkid);
        let msg = Arc::new(Message::new(
            p.topic,
            // Decoded payloads are slices of the read buffer: one copy per message (never
            // per subscriber) keeps a queued or retained message from pinning that buffer.
            Bytes::copy_from_slice(&p.payload),
            p.qos,
            p.retain,
            p.properties,
            Some(self.client_id.clone()),
        ));
        let publisher = Publisher {
            will: false,
            client_id: &self.client_id,
            epoch: self.epoch,
            proposed: &mut self.proposed,
            qos2_pkid,
            retained,
        };
        let (routed, committed) = shared.publish(&msg, Some(publisher));
        let code = if routed.matched == 0 {
            reason::NO_MATCHING_SUBSCRIBERS
        } else {
            reason::SUCCESS
        };
        self.blocked.extend(routed.full);
        Ok(match committed {
            Some(committed) => Verdict::Commit { code, committed },
            None => Verdict::Now(code),
        })
    }

    /// Room for a retained message on `topic`, when it would be a new retained topic
    /// (replacing one is always allowed).
    fn reserve_retained(
        &self,
        topic: &str,
        payload_len: usize,
    ) -> Result<Option<quota::Reservation>, Quota> {
        let shared = &self.shared;
        let store = shared.retained.read().unwrap_or_else(|e| e.into_inner());
        if store.get(topic).is_some() {
            return Ok(None);
        }
        drop(store);
        let bytes = quota::retained_size(topic, payload_len);
        let room = shared
            .quota
            .reserve_retained(&shared.config, &self.client_id, bytes)?;
        Ok(Some(room))
    }

    /// PUBREL of an inbound QoS 2 message: the cluster forgets its packet id (for a
    /// persistent session) before PUBCOMP says it may be used again.
    fn on_pubrel(&mut self, a: Ack) {
        let (known, persistent) = {
            let mut st = self.session.lock();
            (st.incoming_qos2.remove(&a.pkid), st.expiry_secs != 0)
        };
        let code = if known {
            reason::SUCCESS
        } else {
            reason::PACKET_ID_NOT_FOUND
        };
        let pubcomp = Packet::PubComp(Ack::new(a.pkid, code));
        if !(known && persistent) {
            self.reply(pubcomp);
            return;
        }
        let committed = self.shared.cluster.commit(Event::PubRel {
            client_id: self.client_id.to_string(),
            pkid: a.pkid,
        });
        self.held.push_back(Box::pin(async move {
            match committed.await {
                Ok(_) => Ok(Some(pubcomp)),
                // Without PUBCOMP the client sends PUBREL again, here or elsewhere.
                Err(e) => Err(Exit::Unavailable {
                    ack: None,
                    why: e.to_string(),
                }),
            }
        }));
    }

    fn on_pubrec(&mut self, a: Ack) {
        let mut st = self.session.lock();
        let Some(i) = st
            .inflight
            .iter()
            .position(|f| f.pkid == a.pkid && f.stage == Stage::Published)
        else {
            drop(st);
            self.send(&Packet::PubRel(Ack::new(
                a.pkid,
                reason::PACKET_ID_NOT_FOUND,
            )));
            return;
        };
        if a.code >= 0x80 {
            // The receiver refused the message: the flow ends here.
            drop(st);
            self.complete(a.pkid, Stage::Published);
            return;
        }
        st.inflight[i].stage = Stage::Released;
        let seq = st.inflight[i].delivery.seq;
        drop(st);
        let pubrel = Packet::PubRel(Ack::new(a.pkid, reason::SUCCESS));
        let Some(seq) = seq else {
            self.reply(pubrel);
            return;
        };
        // A durable message: the cluster must know the client has it before PUBREL
        // lets the client forget its packet id, or a node taking the session over
        // would send it again as new.
        let committed = self.shared.cluster.commit(Event::Received {
            client_id: self.client_id.to_string(),
            seq,
        });
        let session = self.session.clone();
        let pkid = a.pkid;
        self.held.push_back(Box::pin(async move {
            match committed.await {
                Ok(_) => Ok(Some(pubrel)),
                Err(e) => {
                    // As the cluster knows it: the PUBLISH goes again, and the client's
                    // PUBREC comes again.
                    tracing::warn!("PUBREC not committed: {e}");
                    let mut st = session.lock();
                    if let Some(f) = st.inflight.iter_mut().find(|f| f.pkid == pkid) {
                        f.stage = Stage::Published;
                    }
                    Ok(None)
                }
            }
        }));
    }

    async fn on_subscribe(&mut self, s: Subscribe) -> Result<(), Exit> {
        let shared = self.shared.clone();
        let mut codes = Vec::with_capacity(s.filters.len());
        // (index in `codes`, filter, options, whether it is new), for the accepted ones.
        let mut accepted = Vec::new();
        // Subscriptions held, and added by this packet: `max_subscriptions_per_session`.
        let mut held = self.session.lock().subscriptions.len();
        for f in s.filters {
            if !topic::valid_topic_filter(&f.filter) {
                codes.push(reason::TOPIC_FILTER_INVALID);
                continue;
            }
            if let Err(q) = quota::check_filter(&shared.config, &f.filter) {
                shared
                    .quota
                    .exceeded(&shared.metrics, q, &self.client_id, "SUBSCRIBE filter");
                codes.push(reason::QUOTA_EXCEEDED);
                continue;
            }
            let shared_group = topic::split_shared(&f.filter);
            if shared_group.is_some() && f.no_local {
                return Err(Exit::violation(
                    reason::PROTOCOL_ERROR,
                    "no-local on a shared subscription",
                ));
            }
            let inner = shared_group.map_or(f.filter.as_str(), |(_, inner)| inner);
            if !shared.acl.is_empty()
                && !shared
                    .acl
                    .can_subscribe(&self.client_id, self.username.as_deref(), inner)
            {
                tracing::debug!(client_id = %self.client_id, filter = %f.filter, "subscribe denied");
                codes.push(reason::UNSPECIFIED_ERROR);
                continue;
            }
            let opts = SubOptions {
                qos: f.qos,
                no_local: f.no_local,
                retain_as_published: f.retain_as_published,
                retain_handling: f.retain_handling,
                sub_id: s.subscription_identifier,
            };
            let existed = self.session.lock().subscriptions.contains_key(&f.filter);
            if !existed && held >= shared.config.max_subscriptions_per_session {
                let q = Quota::Subscriptions;
                shared
                    .quota
                    .exceeded(&shared.metrics, q, &self.client_id, "SUBSCRIBE filter");
                codes.push(reason::QUOTA_EXCEEDED);
                continue;
            }
            held += usize::from(!existed);
            accepted.push((codes.len(), f.filter, opts, existed));
            codes.push(f.qos as u8);
        }
        // Routed here at once, so that what this node handles after the SUBSCRIBE
        // reaches it (arrival order, as a single node gives); other nodes route to it
        // once the cluster has it. Applying the event puts the same entries again.
        for (_, filter, opts, _) in &accepted {
            shared.insert_subscription(&self.session, filter, opts.clone(), self.username.clone());
        }
        if !accepted.is_empty() {
            let event = Event::Subscribe {
                client_id: self.client_id.to_string(),
                epoch: self.epoch,
                filters: accepted
                    .iter()
                    .map(|(_, f, o, _)| (f.clone(), StoredSub::from_opts(o)))
                    .collect(),
            };
            if let Err(e) = shared.cluster.commit(event).await {
                tracing::warn!(client_id = %self.client_id, "subscribe not committed: {e}");
                for (i, filter, ..) in accepted.drain(..) {
                    shared.remove_subscription(&self.session, &filter);
                    codes[i] = reason::UNSPECIFIED_ERROR;
                }
            }
        }
        let refused = codes.iter().any(|&c| c >= 0x80);
        self.send(&Packet::SubAck(SubAck {
            pkid: s.pkid,
            codes,
            reason_string: (refused && self.problem_info).then(|| {
                "one or more filters refused: invalid, not authorized or over quota".into()
            }),
        }));
        let mut retained = Vec::new();
        for (_, filter, opts, existed) in accepted {
            let wants_retained = match opts.retain_handling {
                RetainHandling::OnSubscribe => true,
                RetainHandling::OnNewSubscribe => !existed,
                RetainHandling::Never => false,
            };
            // Retained messages are not sent for a shared subscription (v5 §4.8.2).
            if wants_retained && topic::split_shared(&filter).is_none() {
                let store = shared.retained.read().unwrap_or_else(|e| e.into_inner());
                let mut push = |m: &Arc<Message>| {
                    retained.push(Delivery {
                        msg: m.clone(),
                        qos: m.qos.min(opts.qos),
                        retain: true,
                        sub_ids: opts.sub_id.into_iter().collect(),
                        seq: None,
                        dup: false,
                    })
                };
                store.for_each_match(&filter, |_, m| push(m));
                drop(store);
                // This node's own $SYS values, kept apart from the cluster's store.
                for m in sys::latest_matching(&shared, &filter) {
                    if shared.acl.is_empty()
                        || shared.acl.can_receive(
                            &self.client_id,
                            self.username.as_deref(),
                            &m.topic,
                        )
                    {
                        push(&m);
                    }
                }
            }
        }
        let mut routed = Default::default();
        let now = Instant::now();
        for d in retained {
            if !d.msg.is_expired(now) {
                shared.enqueue(&self.session, d, &mut routed);
                self.want_drain = true;
            }
        }
        Ok(())
    }

    async fn on_unsubscribe(&mut self, u: Unsubscribe) -> Result<(), Exit> {
        let mut codes: Vec<u8> = {
            let st = self.session.lock();
            u.filters
                .iter()
                .map(|f| match st.subscriptions.contains_key(f) {
                    true => reason::SUCCESS,
                    false => reason::NO_SUBSCRIPTION_EXISTED,
                })
                .collect()
        };
        // Out of this node's routing at once (see on_subscribe), of the others' once
        // committed.
        for f in &u.filters {
            self.shared.remove_subscription(&self.session, f);
        }
        let event = Event::Unsubscribe {
            client_id: self.client_id.to_string(),
            epoch: self.epoch,
            filters: u.filters,
        };
        if let Err(e) = self.shared.cluster.commit(event).await {
            tracing::warn!(client_id = %self.client_id, "unsubscribe not committed: {e}");
            codes
                .iter_mut()
                .for_each(|c| *c = reason::UNSPECIFIED_ERROR);
        }
        self.send(&Packet::UnsubAck(UnsubAck {
            pkid: u.pkid,
            codes,
        }));
        Ok(())
    }

    /// Ends the outbound flow `pkid` at `stage`; a message from the durable queue is
    /// then acknowledged to the cluster (queued, batched with others, not awaited).
    fn complete(&mut self, pkid: u16, stage: Stage) {
        let done = self.session.lock().complete(pkid, stage);
        if let Some(seq) = done.and_then(|f| f.delivery.seq) {
            drop(self.shared.cluster.commit(Event::Ack {
                client_id: self.client_id.to_string(),
                seqs: vec![seq],
            }));
        }
        self.want_drain = true;
    }

    /// Moves deliveries from the session into the write buffer, within the in-flight
    /// window. Returns true if it stopped early and more can be sent right away.
    fn drain(&mut self) -> bool {
        let now = Instant::now();
        let mut batch = Vec::new();
        let more = {
            let mut st = self.session.lock();
            if st.attached.as_ref().map(|a| a.conn_id) != Some(self.conn_id) {
                return false;
            }
            while batch.len() < DRAIN_BATCH {
                let Some(front) = st.pending.front() else {
                    break;
                };
                if front.msg.is_expired(now) {
                    st.pending.pop_front();
                    Metrics::inc(&self.shared.metrics.dropped_expired);
                    continue;
                }
                let qos0 = front.qos == QoS::AtMostOnce;
                if !qos0 && st.inflight.len() >= st.window {
                    break;
                }
                if !self.shared.pacing.is_empty()
                    && !slot_due(&self.shared.pacing, &mut self.paced, &front.msg.topic)
                {
                    break;
                }
                if qos0 {
                    let d = st.pending.pop_front().expect("front exists");
                    batch.push((d, 0));
                    continue;
                }
                let seq = front.seq;
                let Some(pkid) = st.pkid_for(seq) else {
                    break;
                };
                let d = st.pending.pop_front().expect("front exists");
                st.inflight.push_back(Inflight {
                    pkid,
                    delivery: d.clone(),
                    stage: Stage::Published,
                });
                batch.push((d, pkid));
            }
            batch.len() == DRAIN_BATCH
        };
        if !batch.is_empty() && self.shared.config.queue_policy == crate::QueuePolicy::Backpressure
        {
            self.session.room.notify_waiters();
        }
        for (d, pkid) in batch {
            self.send_publish(&d, pkid, d.dup, now);
        }
        more
    }

    /// On (re)attach: resend every unacknowledged message, in its original order.
    fn resend_inflight(&mut self) {
        let now = Instant::now();
        let resend: Vec<(u16, Stage, Delivery)> = self
            .session
            .lock()
            .inflight
            .iter()
            .map(|f| (f.pkid, f.stage, f.delivery.clone()))
            .collect();
        for (pkid, stage, d) in resend {
            match stage {
                Stage::Published => self.send_publish(&d, pkid, true, now),
                Stage::Released => self.send(&Packet::PubRel(Ack::new(pkid, reason::SUCCESS))),
            }
        }
    }

    /// Encodes one PUBLISH for this client: remaining expiry, topic alias, and its
    /// Maximum Packet Size (a message it cannot take is dropped, v5 §3.1.2.11.4).
    fn send_publish(&mut self, d: &Delivery, pkid: u16, dup: bool, now: Instant) {
        let msg = &d.msg;
        let start = self.wbuf.len();
        // Every 3.1.1 subscriber, and every 5.0 one without per-subscriber fields, gets
        // the same bytes but for flags and packet id: copy the message's shared header.
        let uniform = self.protocol == Protocol::V4
            || (d.sub_ids.is_empty() && msg.expires_at.is_none() && self.aliases_out_max == 0);
        let fast = uniform
            .then(|| msg.write_publish(self.protocol, d.qos, dup, d.retain, pkid, &mut self.wbuf))
            .flatten();
        let written = match fast {
            Some(n) => Ok(n),
            None => self.encode_publish(d, pkid, dup, now),
        };
        match written {
            Ok(n) if n > self.max_out => {
                self.wbuf.truncate(start);
                Metrics::inc(&self.shared.metrics.dropped_too_large);
                if pkid != 0 {
                    self.complete(pkid, Stage::Published);
                }
                self.want_drain = true;
            }
            Ok(_) => {
                let m = &self.shared.metrics;
                Metrics::inc(&m.publish_sent);
                Metrics::inc(&m.sent_by_qos[d.qos as usize]);
                Metrics::inc(&m.packets_sent);
            }
            Err(e) => {
                tracing::warn!(client_id = %self.client_id, error = %e, "could not encode PUBLISH");
                if pkid != 0 {
                    self.complete(pkid, Stage::Published);
                }
            }
        }
    }

    /// The full encoding, for what differs per subscriber: v5 subscription identifiers,
    /// the remaining message expiry, outbound topic aliases.
    fn encode_publish(
        &mut self,
        d: &Delivery,
        pkid: u16,
        dup: bool,
        now: Instant,
    ) -> Result<usize, codec::EncodeError> {
        let msg = &d.msg;
        let v5 = self.protocol == Protocol::V5;
        let mut properties = if v5 {
            msg.properties.clone()
        } else {
            Default::default()
        };
        if let (true, Some(at)) = (v5, msg.expires_at) {
            let left = at.saturating_duration_since(now);
            // Round up so that a message is never announced as already expired.
            properties.message_expiry_interval =
                Some(left.as_secs() as u32 + u32::from(left.subsec_nanos() > 0));
        }
        let known_alias = if self.aliases_out_max > 0 {
            self.aliases_out.get(&msg.topic).copied()
        } else {
            None
        };
        let new_alias = match known_alias {
            None if v5 && (self.aliases_out.len() as u16) < self.aliases_out_max => {
                Some(self.aliases_out.len() as u16 + 1)
            }
            _ => None,
        };
        let publish = Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: if known_alias.is_some() {
                String::new()
            } else {
                msg.topic.clone()
            },
            pkid,
            payload: msg.payload.clone(),
            topic_alias: known_alias.or(new_alias),
            subscription_identifiers: if v5 { d.sub_ids.clone() } else { Vec::new() },
            properties,
        };
        tracing::trace!(client_id = %self.client_id, "out: {publish:?}");
        let n = codec::encode(&Packet::Publish(publish), self.protocol, &mut self.wbuf)?;
        // An alias counts only once the client has received the packet that sets it.
        if let (Some(alias), true) = (new_alias, n <= self.max_out) {
            self.aliases_out.insert(msg.topic.clone(), alias);
        }
        Ok(n)
    }

    fn send(&mut self, packet: &Packet) {
        tracing::trace!(client_id = %self.client_id, "out: {packet:?}");
        Metrics::inc(&self.shared.metrics.packets_sent);
        if let Err(e) = codec::encode(packet, self.protocol, &mut self.wbuf) {
            tracing::warn!(client_id = %self.client_id, error = %e, "could not encode {}", packet_name(packet));
        }
    }

    /// Says goodbye (v5 DISCONNECT when we close), flushes, detaches the session, deals
    /// with the will, and lingers when we are the one closing.
    async fn close<S: ByteStream>(mut self, mut stream: S, exit: Exit) {
        // Cut off (or past its lease), the node says nothing but "use another server",
        // whatever ended the connection: not even a failure code, which would end a
        // flow the client may be carrying on with the node that has its session now.
        let exit = match self.shared.cut_off() {
            Some(cut) if exit.server_reason().is_some() => Exit::CutOff {
                server_reference: cut.server_reference,
            },
            _ => exit,
        };
        let mut server_reason = exit.server_reason();
        if let Exit::Unavailable { ack: Some(ack), .. } = &exit {
            self.send(ack);
        }
        if matches!(exit, Exit::Quota(_) | Exit::RateTooHigh(_)) {
            // Closed for what it sent last, the client still gets the acks of what it
            // sent before and we took: fewer resends after it reconnects.
            self.send_held_replies().await;
        }
        if matches!(exit, Exit::CutOff { .. }) {
            // Nothing more for this session from here: it may be served elsewhere by
            // now. Output that never left goes to the new owner from the durable queue.
            // A buffer cut mid-packet gets no DISCONNECT after it, only the close.
            if !self.wbuf.is_empty() {
                server_reason = None;
            }
            self.wbuf.clear();
        }
        if let (Protocol::V5, Some(code)) = (self.protocol, server_reason) {
            let why = match &exit {
                Exit::Violation { why, .. }
                | Exit::Unavailable { why, .. }
                | Exit::Quota(why)
                | Exit::RateTooHigh(why) => why.as_str(),
                _ => reason_text(code),
            };
            let server_reference = match &exit {
                Exit::CutOff { server_reference } => server_reference.clone(),
                _ => None,
            };
            self.send(&Packet::Disconnect(Disconnect {
                code,
                session_expiry_interval: None,
                reason_string: Some(why.chars().take(200).collect()),
                server_reference,
            }));
        }
        if !self.wbuf.is_empty() || self.unflushed {
            let _ = tokio::time::timeout(CLOSE_FLUSH, write_flush(&mut stream, &self.wbuf)).await;
        }
        let _ = tokio::time::timeout(CLOSE_FLUSH, stream.shutdown()).await;

        let shared = self.shared.clone();
        if matches!(exit, Exit::TakenOver) {
            // The session's new connection shares its wake-up; one meant for it may have
            // reached us instead.
            self.session.wake.notify_one();
        }
        // Cut off and declared dead, this node's clients had their wills published by
        // the cluster already.
        let (will_taken, expiry) = {
            let st = self.session.lock();
            (st.will_taken == Some(self.conn_id), st.expiry_secs)
        };
        let will = self
            .will
            .take()
            .filter(|_| exit.publishes_will() && !will_taken)
            .map(|w| *w);
        // A delayed will is the cluster's to publish (the leader, after the delay,
        // once), so that it is published even if this node dies meanwhile; so is the
        // will of a connection closed because this node is cut off.
        let cluster_will = matches!(exit, Exit::CutOff { .. })
            || will
                .as_ref()
                .is_some_and(|w| w.delay_interval.min(expiry) > 0);
        let generation = shared.detach(&self.session, self.conn_id, cluster_will);
        if let Some(will) = will.filter(|_| !cluster_will) {
            match generation {
                Some(g) => shared.schedule_will(&self.session, g, will, self.username.clone()),
                // Taken over: the client is back, so only a will without delay is due.
                None if will.delay_interval == 0 => {
                    let g = self.session.lock().generation;
                    shared.schedule_will(&self.session, g, will, self.username.clone());
                }
                None => {}
            }
        }
        self.log_exit(&exit);
        if server_reason.is_some() {
            linger(&mut stream).await;
        }
    }

    /// Sends the held replies whose commits complete within `CLOSE_FLUSH`, in order,
    /// up to the first that fails or is late.
    async fn send_held_replies(&mut self) {
        let deadline = tokio::time::Instant::now() + CLOSE_FLUSH;
        while let Some(reply) = self.held.pop_front() {
            match tokio::time::timeout_at(deadline, reply).await {
                Ok(Ok(Some(packet))) => self.send(&packet),
                Ok(Ok(None)) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
    }

    fn log_exit(&self, exit: &Exit) {
        let why = match exit {
            Exit::Violation { code, why } => {
                Metrics::inc(&self.shared.metrics.protocol_errors);
                tracing::info!(peer = %self.peer, client_id = %self.client_id, code, "client disconnected: {why}");
                return;
            }
            Exit::Disconnect { .. } => "DISCONNECT",
            Exit::Unavailable { why, .. } | Exit::Quota(why) | Exit::RateTooHigh(why) => {
                why.as_str()
            }
            Exit::Lost(e) => e.as_str(),
            Exit::KeepAlive => "keep-alive timeout",
            Exit::TakenOver => "session taken over",
            Exit::Shutdown => "server shutting down",
            Exit::CutOff { .. } => "cut off from the cluster: sent to another node",
        };
        tracing::info!(peer = %self.peer, client_id = %self.client_id, "client disconnected: {why}");
    }
}

/// What one poll of the socket achieved.
enum Io {
    Wrote(usize),
    Flushed,
    /// Bytes appended to the read buffer; 0 at end of stream.
    Read(usize),
    /// Output was waiting but this node is cut off (or past its lease): nothing more
    /// may leave.
    CutOff(crate::cluster_api::CutOff),
    Failed(std::io::Error),
}

/// Polls the socket for the first thing it can do: write `wbuf` (or flush what was
/// written), or read into `rbuf` when `can_read`. Reading goes through a stack buffer so
/// that a connection parked here owns no read buffer.
fn poll_io<S: ByteStream>(
    cx: &mut Context<'_>,
    stream: &mut S,
    wbuf: &[u8],
    unflushed: bool,
    can_read: bool,
    rbuf: &mut BytesMut,
    shared: &Shared,
) -> Poll<Io> {
    let mut stream = Pin::new(stream);
    if !wbuf.is_empty() {
        // Checked right before the bytes leave: a node resumed from a pause must not
        // send what it had buffered for a session that may be served elsewhere by now.
        if let Some(cut) = shared.cut_off() {
            return Poll::Ready(Io::CutOff(cut));
        }
        match stream.as_mut().poll_write(cx, wbuf) {
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Io::Failed(std::io::ErrorKind::WriteZero.into()))
            }
            Poll::Ready(Ok(n)) => return Poll::Ready(Io::Wrote(n)),
            Poll::Ready(Err(e)) => return Poll::Ready(Io::Failed(e)),
            Poll::Pending => {}
        }
    } else if unflushed {
        match stream.as_mut().poll_flush(cx) {
            Poll::Ready(Ok(())) => return Poll::Ready(Io::Flushed),
            Poll::Ready(Err(e)) => return Poll::Ready(Io::Failed(e)),
            Poll::Pending => {}
        }
    }
    if can_read {
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut chunk);
        match stream.poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                rbuf.extend_from_slice(buf.filled());
                return Poll::Ready(Io::Read(buf.filled().len()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Io::Failed(e)),
            Poll::Pending => {}
        }
    }
    Poll::Pending
}

/// Resolves once every session in `sessions` has room below `bound` (or is offline).
async fn wait_for_room(sessions: &[Arc<Session>], bound: usize) {
    for s in sessions {
        s.wait_for_room(bound).await;
    }
}

/// After we close our side (FIN sent), reads and discards what the client still sends,
/// until it closes too or `CLOSE_FLUSH` passes. Closing at once would answer its
/// in-flight packets with a reset, which can destroy our DISCONNECT, reason code and all,
/// before the client has read it.
async fn linger<S: ByteStream>(stream: &mut S) {
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(CLOSE_FLUSH, async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// The reason string sent with a failure code.
fn reason_text(code: u8) -> &'static str {
    match code {
        reason::NOT_AUTHORIZED => "not authorized",
        reason::QUOTA_EXCEEDED => "quota exceeded",
        reason::PAYLOAD_FORMAT_INVALID => "payload is not valid UTF-8",
        reason::UNSPECIFIED_ERROR => "the message could not be committed",
        reason::KEEP_ALIVE_TIMEOUT => "keep-alive timeout",
        reason::SESSION_TAKEN_OVER => "session taken over by another connection",
        reason::SERVER_SHUTTING_DOWN => "server shutting down",
        _ => "refused",
    }
}

fn packet_name(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect(_) => "DISCONNECT",
        Packet::Auth { .. } => "AUTH",
    }
}

/// What becomes of an accepted PUBLISH's ack.
enum Verdict {
    /// Send it now with this reason code.
    Now(u8),
    /// Send it with `code` once `committed` resolves.
    Commit {
        code: u8,
        committed: crate::cluster_api::ClusterFuture<()>,
    },
}

/// The next held reply, once it is ready (they are sent in order).
async fn next_held(held: &mut VecDeque<Held>) -> Result<Option<Packet>, Exit> {
    std::future::poll_fn(|cx| {
        let front = held.front_mut().expect("polled only when not empty");
        let ready = std::task::ready!(front.as_mut().poll(cx));
        held.pop_front();
        std::task::Poll::Ready(ready)
    })
    .await
}
