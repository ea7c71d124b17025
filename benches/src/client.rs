//! A bare MQTT 3.1.1 client: a TCP (or TLS over TCP) stream, a big read buffer decoded
//! frame by frame with mqttbytes, and a write buffer flushed in one `write` per batch.
//! Nothing is spawned and nothing is copied beyond what mqttbytes does, so the generator
//! stays cheap.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::{BufMut, BytesMut};
use mqttbytes::v4::{self, Packet};
use mqttbytes::QoS;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Bound on connecting and on waiting for CONNACK or SUBACK.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// A write blocked this long means the broker stopped reading us; giving up keeps every
/// run bounded.
const WRITE_STALL: Duration = Duration::from_secs(10);
/// Largest frame we accept; far above any payload we send.
const MAX_FRAME: usize = 2 << 20;
/// How much we ask the kernel for per read when not throttled.
pub const READ_CHUNK: usize = 256 << 10;

/// How every client of this process reaches the broker: set once, by `use_tls`, before
/// the first connect; plain TCP when never set.
static TLS: OnceLock<Tls> = OnceLock::new();

struct Tls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

/// Makes every later connection TLS: the broker's certificate must chain to a CA in
/// `ca_file` (PEM) and be valid for `server_name` (a DNS name or an IP address).
pub fn use_tls(ca_file: &Path, server_name: &str) -> anyhow::Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("--tls-ca {}", ca_file.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("--tls-ca {}: bad PEM", ca_file.display()))?;
        roots
            .add(cert)
            .context("--tls-ca: unusable CA certificate")?;
    }
    if roots.is_empty() {
        bail!("--tls-ca {}: no certificate in it", ca_file.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = ServerName::try_from(server_name.to_string())
        .map_err(|e| anyhow!("--tls-server-name {server_name}: {e}"))?;
    let tls = Tls {
        connector: TlsConnector::from(Arc::new(config)),
        server_name,
    };
    TLS.set(tls)
        .map_err(|_| anyhow!("TLS was already configured"))
}

/// The connection under the MQTT client.
enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    async fn read_buf(&mut self, buf: &mut impl BufMut) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read_buf(buf).await,
            Stream::Tls(s) => s.read_buf(buf).await,
        }
    }

    /// Writes all of `data` and, over TLS, the records it became.
    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(data).await,
            Stream::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
        }
    }

    /// What is readable without waiting; `WouldBlock` when nothing is.
    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_read_buf(buf),
            Stream::Tls(s) => {
                // One poll with a waker that does nothing: decrypts what the socket
                // already holds. A later real poll registers its own waker.
                let mut cx = TaskContext::from_waker(Waker::noop());
                let spare = buf.spare_capacity_mut();
                let mut rb = ReadBuf::uninit(spare);
                match Pin::new(&mut **s).poll_read(&mut cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        // SAFETY: poll_read initialised and filled these n bytes of the
                        // spare capacity.
                        unsafe { buf.advance_mut(n) };
                        Ok(n)
                    }
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }
}

pub struct Client {
    stream: Stream,
    rbuf: BytesMut,
    pub wbuf: BytesMut,
    /// The CONNACK's "session present": the broker resumed a stored session.
    pub session_present: bool,
}

impl Client {
    /// Connects (from `bind` when given), sends CONNECT with a clean session, and waits
    /// for a successful CONNACK.
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        bind: Option<IpAddr>,
    ) -> anyhow::Result<Client> {
        Client::connect_session(addr, client_id, bind, true).await
    }

    /// As `connect`, with the clean-session flag given: `false` asks the broker to keep
    /// (or resume) the session after the connection ends.
    pub async fn connect_session(
        addr: SocketAddr,
        client_id: &str,
        bind: Option<IpAddr>,
        clean_session: bool,
    ) -> anyhow::Result<Client> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(ip) = bind {
            defer_port_choice(&socket)?;
            socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("bind {ip}"))?;
        }
        let stream = timeout(SETUP_TIMEOUT, socket.connect(addr))
            .await
            .map_err(|_| anyhow!("connect {addr}: timed out"))?
            .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        let stream = match TLS.get() {
            None => Stream::Tcp(stream),
            Some(tls) => {
                let handshake = tls.connector.connect(tls.server_name.clone(), stream);
                let tls_stream = timeout(SETUP_TIMEOUT, handshake)
                    .await
                    .map_err(|_| anyhow!("TLS handshake with {addr}: timed out"))?
                    .with_context(|| format!("TLS handshake with {addr}"))?;
                Stream::Tls(Box::new(tls_stream))
            }
        };
        let mut client = Client {
            stream,
            // Grown on use: a storm of thousands of idle clients must not map (and
            // later unmap, with a TLB shootdown each) a large buffer per connection.
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            session_present: false,
        };
        let mut connect = v4::Connect::new(client_id);
        connect.clean_session = clean_session;
        // Long enough that no run needs a ping, so idle and throttled clients are never
        // dropped for silence. Not 0: rumqttd 0.20 refuses a zero keep-alive.
        connect.keep_alive = 3600;
        connect.write(&mut client.wbuf).map_err(codec)?;
        client.flush().await?;
        match client.expect_reply(addr).await? {
            Packet::ConnAck(ack) if ack.code == v4::ConnectReturnCode::Success => {
                client.session_present = ack.session_present;
                Ok(client)
            }
            Packet::ConnAck(ack) => bail!("{addr} refused CONNECT: {:?}", ack.code),
            other => bail!("{addr} answered CONNECT with {other:?}"),
        }
    }

    /// Subscribes to all `filters` in one SUBSCRIBE and checks every grant.
    pub async fn subscribe(&mut self, filters: &[String], qos: QoS) -> anyhow::Result<()> {
        let peer = self.stream.tcp().peer_addr()?;
        let mut sub = v4::Subscribe::new_many(
            (filters.iter()).map(|f| v4::SubscribeFilter::new(f.clone(), qos)),
        );
        sub.pkid = 1;
        sub.write(&mut self.wbuf).map_err(codec)?;
        self.flush().await?;
        match self.expect_reply(peer).await? {
            Packet::SubAck(ack) => {
                let granted = v4::SubscribeReasonCode::Success(qos);
                match ack.return_codes.iter().position(|c| *c != granted) {
                    // A downgrade would silently turn a QoS 1 run into a QoS 0 one.
                    Some(i) => bail!(
                        "{peer} answered SUBSCRIBE to {} with {:?}",
                        filters[i],
                        ack.return_codes[i]
                    ),
                    None => Ok(()),
                }
            }
            other => bail!("{peer} answered SUBSCRIBE with {other:?}"),
        }
    }

    /// The next packet, bounded by `SETUP_TIMEOUT`.
    async fn expect_reply(&mut self, peer: SocketAddr) -> anyhow::Result<Packet> {
        let wait = async {
            loop {
                if let Some(packet) = self.next_packet()? {
                    return Ok(packet);
                }
                if self.read(READ_CHUNK).await? == 0 {
                    bail!("{peer} closed the connection");
                }
            }
        };
        timeout(SETUP_TIMEOUT, wait)
            .await
            .map_err(|_| anyhow!("{peer}: no reply within {SETUP_TIMEOUT:?}"))?
    }

    /// Reads at most `limit` bytes into the buffer; 0 means the broker closed.
    pub async fn read(&mut self, limit: usize) -> io::Result<usize> {
        self.rbuf.reserve(limit);
        self.stream
            .read_buf(&mut (&mut self.rbuf).limit(limit))
            .await
    }

    /// Reads whatever is already there without waiting; 0 when nothing is.
    pub fn try_read(&mut self) -> io::Result<usize> {
        self.rbuf.reserve(READ_CHUNK);
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the broker closed the connection",
            )),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Splits the next complete frame off the read buffer, if there is one.
    pub fn next_packet(&mut self) -> anyhow::Result<Option<Packet>> {
        match v4::read(&mut self.rbuf, MAX_FRAME) {
            Ok(packet) => Ok(Some(packet)),
            Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(anyhow!("undecodable frame from the broker: {e:?}")),
        }
    }

    /// Writes the whole write buffer in one go.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.wbuf.is_empty() {
            timeout(WRITE_STALL, self.stream.write_all(&self.wbuf))
                .await
                .map_err(|_| anyhow!("the broker stopped reading for {WRITE_STALL:?}"))??;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Says goodbye so that the broker does not publish a will or log an error; the
    /// outcome does not matter.
    pub async fn disconnect(mut self) {
        if v4::Disconnect.write(&mut self.wbuf).is_ok() {
            let _ = timeout(Duration::from_secs(1), self.flush()).await;
        }
    }
}

/// mqttbytes's error is not a `std::error::Error` (the crate is no_std).
pub fn codec(e: mqttbytes::Error) -> anyhow::Error {
    anyhow!("mqtt codec: {e:?}")
}

/// Clients per source address. Linux picks a connecting socket's port by walking the
/// ephemeral range from a hashed start until the 4-tuple is free; with ten thousand
/// clients of one address on one broker the walk crosses long runs of taken ports, and a
/// storm profile showed 18% of the generator's CPU in it (`__inet_hash_connect`). A few
/// hundred per address keep the first candidate free.
const PER_SOURCE_ADDR: usize = 256;

/// The source address of client `i` of a loopback broker: 127.0.0.2 for the first
/// [`PER_SOURCE_ADDR`], then .3 and on (127.0.1.x past 255); `None` (the default
/// address) for any other broker.
pub fn loopback_source(broker: SocketAddr, i: usize) -> Option<IpAddr> {
    match broker.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let host = 2 + i / PER_SOURCE_ADDR;
            Some(IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                (host >> 8) as u8,
                host as u8,
            )))
        }
        _ => None,
    }
}

/// Sets IP_BIND_ADDRESS_NO_PORT: without it, binding to port 0 makes the kernel pick a
/// port that is free for every destination, a search that slowed thousands of binds to
/// ~2 ms each; with it the port is picked at connect time for this 4-tuple only.
fn defer_port_choice(socket: &TcpSocket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: the descriptor belongs to `socket`, alive for the call, and the option
    // value is a c_int whose address and size are passed together.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
