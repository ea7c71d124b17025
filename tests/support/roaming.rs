//! A client that keeps one persistent MQTT session across node failures: when its
//! connection fails it connects to the next node of the cluster, as a client behind a
//! load balancer would, and the session (subscriptions, queued messages, QoS 2 state)
//! is expected to follow it.
//!
//! Built on the byte-level client rather than rumqttc: after a reconnect, a broker
//! that follows the spec sends PUBREL again for QoS 2 messages the client already
//! received (MQTT 4.4), and rumqttc, which forgets its incoming QoS 2 packet ids when a
//! connection drops, treats that PUBREL as a protocol error and drops the connection
//! again. Here the QoS 2 receiver state lives in [`Qos2Receiver`], which outlives
//! connections.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::codec::{prop, Connect, Packet, PropVal, Props, Version, Will};
use super::raw::{Raw, Recv};

/// Bound on TCP connect plus CONNACK at one node. A node without quorum refuses a
/// CONNECT after about 5 s (the session claim is a Raft commit that cannot complete).
pub const CONNACK_WAIT: Duration = Duration::from_secs(8);
/// How long a client keeps trying the nodes before giving up.
pub const ROAM_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two rounds over all nodes.
const ROUND_PAUSE: Duration = Duration::from_millis(200);

/// One persistent session, connected to one node at a time.
pub struct Roamer {
    pub id: String,
    pub version: Version,
    nodes: Vec<SocketAddr>,
    /// Index in `nodes` of the node to use (or try) next.
    at: usize,
    conn: Option<Raw>,
    connected_once: bool,
    /// Successful connects after the first.
    pub reconnects: u32,
    /// Reconnects answered with session present 0: the session was lost.
    pub sessions_lost: u32,
    next_pkid: u16,
}

impl Roamer {
    /// A client for `nodes` (MQTT addresses) that starts at `nodes[home]`.
    pub fn new(id: &str, version: Version, nodes: Vec<SocketAddr>, home: usize) -> Roamer {
        assert!(!nodes.is_empty());
        Roamer {
            id: id.to_string(),
            version,
            at: home % nodes.len(),
            nodes,
            conn: None,
            connected_once: false,
            reconnects: 0,
            sessions_lost: 0,
            next_pkid: 0,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// The node this client is connected to, if any.
    pub fn node(&self) -> Option<SocketAddr> {
        self.conn.as_ref().map(|_| self.nodes[self.at])
    }

    /// The CONNECT of this session: clean session 0 (3.1.1), or clean start 0 with an
    /// hour of session expiry (5.0); no keep-alive, so an idle client is never timed out.
    fn connect_packet(&self) -> Connect {
        let mut c = Connect::new(self.version, &self.id);
        c.clean = false;
        c.keep_alive = 0;
        if self.version == Version::V5 {
            c.props = Props::new().with(prop::SESSION_EXPIRY, PropVal::U32(3600));
        }
        c
    }

    /// Connects to the current node, or the following ones in turn, until one accepts
    /// (within [`ROAM_TIMEOUT`]); returns session present. A node that is down, refuses
    /// or does not answer is skipped.
    pub async fn connect(&mut self) -> Result<bool, String> {
        let deadline = Instant::now() + ROAM_TIMEOUT;
        let connect = self.connect_packet();
        let mut last = String::new();
        while Instant::now() < deadline {
            for _ in 0..self.nodes.len() {
                let addr = self.nodes[self.at];
                match Raw::try_connect(addr, &connect, CONNACK_WAIT).await {
                    Ok((
                        raw,
                        Packet::Connack {
                            code: 0,
                            session_present,
                            ..
                        },
                    )) => {
                        self.conn = Some(raw);
                        if self.connected_once {
                            self.reconnects += 1;
                            self.sessions_lost += u32::from(!session_present);
                        }
                        self.connected_once = true;
                        return Ok(session_present);
                    }
                    Ok((_, p)) => last = format!("{addr}: {p:?}"),
                    Err(e) => last = e,
                }
                self.at = (self.at + 1) % self.nodes.len();
            }
            tokio::time::sleep(ROUND_PAUSE).await;
        }
        Err(format!(
            "{}: no node accepted within {ROAM_TIMEOUT:?}; last: {last}",
            self.id
        ))
    }

    /// Forgets a connection that failed; the next [`Roamer::connect`] starts at the
    /// next node.
    pub fn lost(&mut self) {
        self.conn = None;
        self.at = (self.at + 1) % self.nodes.len();
    }

    /// Leaves the current connection without closing it, to move to another node:
    /// the broker must close it once the session is taken over elsewhere. The caller
    /// watches it (the checker's `Shared::watch`).
    pub fn abandon(&mut self) -> Option<Raw> {
        self.at = (self.at + 1) % self.nodes.len();
        self.conn.take()
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        if let Some(c) = &mut self.conn {
            c.send(bytes).await;
        }
    }

    /// The next packet within `wait`; `Closed` when not connected. A DISCONNECT from
    /// the broker counts as closed (it closes the connection after it).
    pub async fn recv(&mut self, wait: Duration) -> Recv {
        let Some(c) = &mut self.conn else {
            return Recv::Closed;
        };
        match c.try_recv(wait).await {
            Recv::Packet(Packet::Disconnect { .. }) => Recv::Closed,
            other => other,
        }
    }

    pub fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid % u16::MAX + 1;
        self.next_pkid
    }

    /// SUBSCRIBE `filters` on the current connection; false if it failed.
    pub async fn subscribe(&mut self, filters: &[(&str, u8)]) -> bool {
        let pkid = self.pkid();
        let Some(c) = &mut self.conn else {
            return false;
        };
        c.send(&super::codec::subscribe(
            self.version,
            pkid,
            filters,
            &Props::new(),
        ))
        .await;
        let deadline = Instant::now() + CONNACK_WAIT;
        loop {
            match c
                .try_recv(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Recv::Packet(Packet::Suback { pkid: p, codes, .. }) if p == pkid => {
                    return codes.iter().all(|&c| c < 0x80);
                }
                Recv::Packet(_) => {}
                _ => return false,
            }
        }
    }
}

/// The receiving side of QoS 2 as MQTT 4.3.3 "method B" has it: a PUBLISH whose
/// packet id still awaits its PUBREL is a retransmission, not a new message; the id
/// is free again once the PUBREL comes. Kept per client id across connections.
#[derive(Debug, Default)]
pub struct Qos2Receiver {
    awaiting_rel: BTreeSet<u16>,
}

impl Qos2Receiver {
    /// A QoS 2 PUBLISH with `pkid` arrived: whether it is a new message.
    pub fn on_publish(&mut self, pkid: u16) -> bool {
        self.awaiting_rel.insert(pkid)
    }

    pub fn on_pubrel(&mut self, pkid: u16) {
        self.awaiting_rel.remove(&pkid);
    }

    /// The session was lost: nothing awaits a PUBREL any more.
    pub fn reset(&mut self) {
        self.awaiting_rel.clear();
    }
}

/// A will as the checker sets it: QoS 2, not retained.
pub fn will(topic: &str, payload: &[u8]) -> Will {
    Will {
        topic: topic.to_string(),
        payload: payload.to_vec(),
        qos: 2,
        retain: false,
        props: Props::new(),
    }
}
