//! A bare MQTT 3.1.1 client: a TCP stream, a big read buffer decoded frame by frame with
//! mqttbytes, and a write buffer flushed in one `write` per batch. Nothing is spawned and
//! nothing is copied beyond what mqttbytes does, so the generator stays cheap.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::{BufMut, BytesMut};
use mqttbytes::v4::{self, Packet};
use mqttbytes::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// Bound on connecting and on waiting for CONNACK or SUBACK.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// A write blocked this long means the broker stopped reading us; giving up keeps every
/// run bounded.
const WRITE_STALL: Duration = Duration::from_secs(10);
/// Largest frame we accept; far above any payload we send.
const MAX_FRAME: usize = 2 << 20;
/// How much we ask the kernel for per read when not throttled.
pub const READ_CHUNK: usize = 256 << 10;

pub struct Client {
    stream: TcpStream,
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
        let mut client = Client {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(64 << 10),
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
        let peer = self.stream.peer_addr()?;
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
