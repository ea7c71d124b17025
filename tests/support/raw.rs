//! A byte-level MQTT client on a plain `TcpStream`, for tests that need exact control
//! of what is sent (malformed packets, DUP retransmissions, unacknowledged messages) or
//! exact knowledge of what came back (flags, packet ids, reason codes, properties).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use super::codec::{self, Connect, Packet, Props, Publish, Version};
use super::RECV_TIMEOUT;

/// What one bounded read produced.
#[derive(Debug)]
pub enum Recv {
    Packet(Packet),
    /// EOF or connection reset: the broker closed the connection.
    Closed,
    Timeout,
}

pub struct Raw {
    stream: TcpStream,
    buf: BytesMut,
    pending: VecDeque<Packet>,
    pub version: Version,
    next_pkid: u16,
}

impl Raw {
    /// A TCP connection that has sent nothing yet.
    pub async fn tcp(addr: SocketAddr, version: Version) -> Raw {
        let stream = timeout(RECV_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("TCP connect timed out")
            .expect("TCP connect failed");
        stream.set_nodelay(true).ok();
        Raw {
            stream,
            buf: BytesMut::new(),
            pending: VecDeque::new(),
            version,
            next_pkid: 0,
        }
    }

    /// Sends `connect` and returns the connection with the broker's first packet,
    /// which should be a CONNACK.
    pub async fn connect_with(addr: SocketAddr, connect: &Connect) -> (Raw, Recv) {
        let mut raw = Raw::tcp(addr, connect.version).await;
        raw.send(&connect.encode()).await;
        let first = raw.try_recv(RECV_TIMEOUT).await;
        (raw, first)
    }

    /// Sends `connect` and returns the connection with the broker's first packet, or
    /// why there is none within `wait` (nothing listening, closed, no answer). For
    /// clients that expect a node to be down and try another one.
    pub async fn try_connect(
        addr: SocketAddr,
        connect: &Connect,
        wait: Duration,
    ) -> Result<(Raw, Packet), String> {
        let stream = match timeout(wait, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("{addr}: {e}")),
            Err(_) => return Err(format!("{addr}: TCP connect timed out")),
        };
        stream.set_nodelay(true).ok();
        let mut raw = Raw {
            stream,
            buf: BytesMut::new(),
            pending: VecDeque::new(),
            version: connect.version,
            next_pkid: 0,
        };
        raw.send(&connect.encode()).await;
        match raw.try_recv(wait).await {
            Recv::Packet(p) => Ok((raw, p)),
            other => Err(format!("{addr}: {other:?} instead of CONNACK")),
        }
    }

    /// Connects and asserts that the CONNACK accepts; returns it as well.
    pub async fn connect(addr: SocketAddr, connect: &Connect) -> (Raw, Packet) {
        let (raw, first) = Raw::connect_with(addr, connect).await;
        match first {
            Recv::Packet(p @ Packet::Connack { code: 0, .. }) => (raw, p),
            other => panic!("CONNECT {:?} refused: {other:?}", connect.client_id),
        }
    }

    /// A connected clean-session client.
    pub async fn client(addr: SocketAddr, version: Version, client_id: &str) -> Raw {
        Raw::connect(addr, &Connect::new(version, client_id))
            .await
            .0
    }

    /// Writes bytes; a write error (the broker already closed) is ignored, since the
    /// tests then observe the close on the read side.
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    pub fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid % u16::MAX + 1;
        self.next_pkid
    }

    /// Next packet, or closed/timeout, within `wait`.
    pub async fn try_recv(&mut self, wait: Duration) -> Recv {
        if let Some(p) = self.pending.pop_front() {
            return Recv::Packet(p);
        }
        self.read_packet(wait).await
    }

    async fn read_packet(&mut self, wait: Duration) -> Recv {
        let deadline = Instant::now() + wait;
        loop {
            match codec::decode(self.version, &mut self.buf) {
                Ok(Some(p)) => return Recv::Packet(p),
                Ok(None) => {}
                Err(e) => panic!("broker sent a malformed packet: {e}"),
            }
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Recv::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => return Recv::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Next packet; panics on close or after [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> Packet {
        match self.try_recv(RECV_TIMEOUT).await {
            Recv::Packet(p) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// The first packet that `pick` accepts; packets before it are kept for later reads.
    pub async fn recv_where<T>(&mut self, what: &str, pick: impl Fn(&Packet) -> Option<T>) -> T {
        if let Some(i) = self.pending.iter().position(|p| pick(p).is_some()) {
            let p = self.pending.remove(i).expect("index from position");
            return pick(&p).expect("picked above");
        }
        let deadline = Instant::now() + RECV_TIMEOUT;
        loop {
            match self
                .read_packet(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Recv::Packet(p) => match pick(&p) {
                    Some(t) => return t,
                    None => self.pending.push_back(p),
                },
                other => panic!("waiting for {what}: {other:?} (kept: {:?})", self.pending),
            }
        }
    }

    pub async fn recv_publish(&mut self) -> Publish {
        self.recv_where("PUBLISH", |p| match p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Asserts that no PUBLISH arrives within `wait` and returns any other packets.
    pub async fn expect_no_publish(&mut self, wait: Duration) {
        if let Some(p) = self
            .pending
            .iter()
            .find(|p| matches!(p, Packet::Publish(_)))
        {
            panic!("unexpected {p:?}");
        }
        let deadline = Instant::now() + wait;
        loop {
            match self
                .read_packet(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Recv::Packet(Packet::Publish(p)) => panic!("unexpected {p:?}"),
                Recv::Packet(p) => self.pending.push_back(p),
                Recv::Timeout => return,
                Recv::Closed => panic!("connection closed while expecting silence"),
            }
        }
    }

    /// Waits for the broker to close the connection; returns the packets it sent before
    /// (e.g. a 5.0 DISCONNECT). Panics if the connection is still open after `wait`.
    pub async fn expect_closed(&mut self, wait: Duration) -> Vec<Packet> {
        let mut seen: Vec<Packet> = self.pending.drain(..).collect();
        let deadline = Instant::now() + wait;
        loop {
            match self
                .read_packet(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Recv::Packet(p) => seen.push(p),
                Recv::Closed => return seen,
                Recv::Timeout => panic!("connection still open after {wait:?}; got {seen:?}"),
            }
        }
    }

    /// Like [`Raw::expect_closed`], and if a DISCONNECT came first, its reason code.
    pub async fn expect_closed_reason(&mut self, wait: Duration) -> Option<u8> {
        let seen = self.expect_closed(wait).await;
        seen.iter().find_map(|p| match p {
            Packet::Disconnect { reason, .. } => Some(*reason),
            _ => None,
        })
    }

    /// SUBSCRIBE one filter with an options byte; returns the SUBACK reason codes.
    pub async fn subscribe(&mut self, filter: &str, options: u8) -> Vec<u8> {
        self.subscribe_with(&[(filter, options)], &Props::new())
            .await
    }

    pub async fn subscribe_with(&mut self, filters: &[(&str, u8)], props: &Props) -> Vec<u8> {
        let pkid = self.pkid();
        self.send(&codec::subscribe(self.version, pkid, filters, props))
            .await;
        self.recv_where("SUBACK", |p| match p {
            Packet::Suback {
                pkid: id, codes, ..
            } if *id == pkid => Some(codes.clone()),
            _ => None,
        })
        .await
    }

    /// UNSUBSCRIBE; returns the UNSUBACK reason codes (empty on 3.1.1).
    pub async fn unsubscribe(&mut self, filters: &[&str]) -> Vec<u8> {
        let pkid = self.pkid();
        self.send(&codec::unsubscribe(self.version, pkid, filters))
            .await;
        self.recv_where("UNSUBACK", |p| match p {
            Packet::Unsuback { pkid: id, codes } if *id == pkid => Some(codes.clone()),
            _ => None,
        })
        .await
    }

    /// Sends a PUBLISH. QoS 1 waits for PUBACK, QoS 2 completes the whole exchange;
    /// returns the reason code of PUBACK or PUBREC (0 on 3.1.1).
    pub async fn publish(&mut self, mut publish: Publish) -> u8 {
        if publish.qos > 0 && publish.pkid == 0 {
            publish.pkid = self.pkid();
        }
        let pkid = publish.pkid;
        self.send(&publish.encode(self.version)).await;
        match publish.qos {
            0 => 0,
            1 => {
                self.recv_where("PUBACK", |p| match p {
                    Packet::Puback(a) if a.pkid == pkid => Some(a.reason),
                    _ => None,
                })
                .await
            }
            _ => {
                let reason = self.recv_pubrec(pkid).await;
                if reason < 0x80 {
                    self.send(&codec::pubrel(self.version, pkid)).await;
                    self.recv_pubcomp(pkid).await;
                }
                reason
            }
        }
    }

    /// The reason code of the PUBREC for `pkid` (other packets are kept).
    pub async fn recv_pubrec(&mut self, pkid: u16) -> u8 {
        self.recv_where("PUBREC", |p| match p {
            Packet::Pubrec(a) if a.pkid == pkid => Some(a.reason),
            _ => None,
        })
        .await
    }

    /// The reason code of the PUBCOMP for `pkid` (other packets are kept).
    pub async fn recv_pubcomp(&mut self, pkid: u16) -> u8 {
        self.recv_where("PUBCOMP", |p| match p {
            Packet::Pubcomp(a) if a.pkid == pkid => Some(a.reason),
            _ => None,
        })
        .await
    }

    /// Publishes `payload` on `topic` at `qos`, completing the QoS flow.
    pub async fn pub_msg(&mut self, topic: &str, qos: u8, payload: &[u8]) -> u8 {
        self.publish(Publish::new(topic, qos, payload)).await
    }

    /// Acknowledges a received PUBLISH as its QoS requires (QoS 2: PUBREC, wait for
    /// PUBREL, PUBCOMP).
    pub async fn ack(&mut self, publish: &Publish) {
        match publish.qos {
            1 => self.send(&codec::puback(self.version, publish.pkid)).await,
            2 => {
                let pkid = publish.pkid;
                self.send(&codec::pubrec(self.version, pkid)).await;
                self.recv_where("PUBREL", |p| match p {
                    Packet::Pubrel(a) if a.pkid == pkid => Some(()),
                    _ => None,
                })
                .await;
                self.send(&codec::pubcomp(self.version, pkid)).await;
            }
            _ => {}
        }
    }

    /// Receives a PUBLISH and acknowledges it.
    pub async fn recv_acked(&mut self) -> Publish {
        let p = self.recv_publish().await;
        self.ack(&p).await;
        p
    }

    /// PINGREQ → PINGRESP round trip, proving every earlier packet was processed.
    pub async fn ping(&mut self) {
        self.send(&codec::pingreq()).await;
        self.recv_where("PINGRESP", |p| matches!(p, Packet::Pingresp).then_some(()))
            .await;
    }

    /// A normal DISCONNECT (reason 0), then waits for the close.
    pub async fn disconnect(mut self) {
        self.send(&codec::disconnect(self.version, 0, &Props::new()))
            .await;
        self.pending.clear();
        let deadline = Instant::now() + RECV_TIMEOUT;
        while let Recv::Packet(_) = self
            .read_packet(deadline.saturating_duration_since(Instant::now()))
            .await
        {}
    }

    pub fn pending(&self) -> &VecDeque<Packet> {
        &self.pending
    }
}
