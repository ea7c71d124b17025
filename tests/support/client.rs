//! One wrapper over rumqttc's 3.1.1 and 5.0 clients, so that a scenario can be written
//! once and run on both protocol versions with a real third-party client.
//!
//! The event loop runs in its own task and forwards what it sees, converted to [`Ev`],
//! over a channel. It stops at the first connection error instead of reconnecting, so
//! a test sees every close. Reason codes are plain `u8`s, as on the wire.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5 as m5;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::codec::Version;
use super::RECV_TIMEOUT;

/// What the client saw, in order.
#[derive(Debug, Clone)]
pub enum Ev {
    ConnAck {
        session_present: bool,
        code: u8,
        props: Option<m5::ConnAckProperties>,
    },
    Publish(Msg),
    SubAck(Vec<u8>),
    UnsubAck(Vec<u8>),
    PubAck {
        pkid: u16,
        reason: u8,
    },
    PubRec {
        pkid: u16,
        reason: u8,
    },
    PubComp {
        pkid: u16,
    },
    /// A 5.0 DISCONNECT from the broker.
    Disconnect(u8),
    /// The connection ended (broker close, error, or refused CONNACK).
    Closed(String),
}

/// A received PUBLISH, protocol-independent.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    pub pkid: u16,
    /// 5.0 only.
    pub props: Option<m5::PublishProperties>,
    original: Original,
}

#[derive(Debug, Clone)]
enum Original {
    V4(rumqttc::Publish),
    V5(m5::Publish),
}

#[derive(Clone)]
enum Handle {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// A will as both versions can express it; `delay` is the 5.0 Will Delay Interval.
#[derive(Debug, Clone)]
pub struct WillSpec {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub delay: Option<u32>,
}

/// Connection options; start with [`v4`] or [`v5`].
#[derive(Debug, Clone)]
pub struct Opts {
    pub version: Version,
    pub id: String,
    pub clean: bool,
    pub keep_alive_secs: u64,
    pub session_expiry: Option<u32>,
    pub will: Option<WillSpec>,
    pub manual_acks: bool,
    pub receive_maximum: Option<u16>,
    pub max_packet_size: Option<u32>,
    /// Username and password (rumqttc sends both or neither).
    pub login: Option<(String, String)>,
    /// TLS, WebSocket or both; plain TCP when `None`.
    pub transport: Option<Transport>,
}

/// rumqttc's transport, which has no `Debug`.
#[derive(Clone)]
pub struct Transport(rumqttc::Transport);

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            rumqttc::Transport::Tcp => "tcp",
            rumqttc::Transport::Tls(_) => "tls",
            rumqttc::Transport::Ws => "ws",
            rumqttc::Transport::Wss(_) => "wss",
            _ => "other",
        })
    }
}

pub fn v4(id: &str) -> Opts {
    Opts::new(Version::V4, id)
}

pub fn v5(id: &str) -> Opts {
    Opts::new(Version::V5, id)
}

impl Opts {
    pub fn new(version: Version, id: &str) -> Opts {
        Opts {
            version,
            id: id.to_string(),
            clean: true,
            keep_alive_secs: 30,
            session_expiry: None,
            will: None,
            manual_acks: false,
            receive_maximum: None,
            max_packet_size: None,
            transport: None,
            login: None,
        }
    }

    /// MQTT over TLS with this client configuration.
    pub fn tls(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Opts {
        self.transport = Some(Transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(config),
        )));
        self
    }

    /// MQTT over WebSocket, path /mqtt.
    pub fn ws(mut self) -> Opts {
        self.transport = Some(Transport(rumqttc::Transport::Ws));
        self
    }

    /// MQTT over WebSocket over TLS, path /mqtt.
    pub fn wss(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Opts {
        self.transport = Some(Transport(rumqttc::Transport::wss_with_config(
            rumqttc::TlsConfiguration::Rustls(config),
        )));
        self
    }

    /// The host rumqttc is given: a URL for WebSocket, else the IP.
    fn host(&self, addr: SocketAddr) -> String {
        match &self.transport {
            Some(Transport(rumqttc::Transport::Ws)) => format!("ws://{addr}/mqtt"),
            Some(Transport(rumqttc::Transport::Wss(_))) => format!("wss://{addr}/mqtt"),
            _ => addr.ip().to_string(),
        }
    }

    /// A persistent session: clean session 0 on 3.1.1; clean start 0 and a session
    /// expiry of one hour on 5.0 (so that the session outlives the connection).
    pub fn persistent(mut self) -> Opts {
        self.clean = false;
        if self.version == Version::V5 && self.session_expiry.is_none() {
            self.session_expiry = Some(3600);
        }
        self
    }

    pub fn clean(mut self, clean: bool) -> Opts {
        self.clean = clean;
        self
    }

    pub fn session_expiry(mut self, secs: u32) -> Opts {
        self.session_expiry = Some(secs);
        self
    }

    pub fn keep_alive(mut self, secs: u64) -> Opts {
        self.keep_alive_secs = secs;
        self
    }

    pub fn will(mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> Opts {
        self.will = Some(WillSpec {
            topic: topic.to_string(),
            payload: payload.to_vec(),
            qos,
            retain,
            delay: None,
        });
        self
    }

    pub fn will_delay(mut self, secs: u32) -> Opts {
        self.will.as_mut().expect("set a will first").delay = Some(secs);
        self
    }

    pub fn manual_acks(mut self) -> Opts {
        self.manual_acks = true;
        self
    }

    pub fn receive_maximum(mut self, n: u16) -> Opts {
        self.receive_maximum = Some(n);
        self
    }

    pub fn max_packet_size(mut self, n: u32) -> Opts {
        self.max_packet_size = Some(n);
        self
    }

    pub fn login(mut self, username: &str, password: &str) -> Opts {
        self.login = Some((username.to_string(), password.to_string()));
        self
    }

    /// Connects and asserts that the broker accepted.
    pub async fn connect(self, addr: SocketAddr) -> Client {
        let id = self.id.clone();
        match self.try_connect(addr).await {
            Ok(c) => c,
            Err(e) => panic!("client {id:?} could not connect: {e:?}"),
        }
    }

    /// Connects; `Err` holds what the client saw instead of a successful CONNACK
    /// (`ConnAck` with a failure code, or `Closed`).
    pub async fn try_connect(self, addr: SocketAddr) -> Result<Client, Ev> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (handle, task) = match self.version {
            Version::V4 => spawn_v4(&self, addr, tx),
            Version::V5 => spawn_v5(&self, addr, tx),
        };
        let mut client = Client {
            handle,
            rx,
            pending: VecDeque::new(),
            task,
            version: self.version,
            session_present: false,
            connack_props: None,
        };
        match client.next(RECV_TIMEOUT).await {
            Some(Ev::ConnAck {
                session_present,
                code: 0,
                props,
            }) => {
                client.session_present = session_present;
                client.connack_props = props;
                Ok(client)
            }
            Some(other) => Err(other),
            None => Err(Ev::Closed("no CONNACK within the timeout".into())),
        }
    }
}

pub struct Client {
    handle: Handle,
    rx: mpsc::UnboundedReceiver<Ev>,
    pending: VecDeque<Ev>,
    task: JoinHandle<()>,
    pub version: Version,
    pub session_present: bool,
    /// 5.0 CONNACK properties.
    pub connack_props: Option<m5::ConnAckProperties>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    async fn next(&mut self, wait: Duration) -> Option<Ev> {
        if let Some(ev) = self.pending.pop_front() {
            return Some(ev);
        }
        tokio::time::timeout(wait, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// The first event that `pick` accepts within [`RECV_TIMEOUT`]; others are kept.
    pub async fn wait_for<T>(&mut self, what: &str, pick: impl Fn(&Ev) -> Option<T>) -> T {
        match self.try_wait_for(RECV_TIMEOUT, &pick).await {
            Some(t) => t,
            None => panic!(
                "client {:?}: no {what} within {RECV_TIMEOUT:?}; saw {:?}",
                self.version, self.pending
            ),
        }
    }

    async fn try_wait_for<T>(
        &mut self,
        wait: Duration,
        pick: impl Fn(&Ev) -> Option<T>,
    ) -> Option<T> {
        if let Some(i) = self.pending.iter().position(|e| pick(e).is_some()) {
            let ev = self.pending.remove(i).expect("index from position");
            return pick(&ev);
        }
        let deadline = Instant::now() + wait;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .ok()
                .flatten()?;
            match pick(&ev) {
                Some(t) => return Some(t),
                None => self.pending.push_back(ev),
            }
        }
    }

    /// Subscribes to one filter; returns the SUBACK reason codes.
    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> Vec<u8> {
        match &self.handle {
            Handle::V4(c) => c
                .subscribe(filter, qos4(qos))
                .await
                .map_err(|e| e.to_string()),
            Handle::V5(c) => c
                .subscribe(filter, qos5(qos))
                .await
                .map_err(|e| e.to_string()),
        }
        .expect("subscribe request");
        self.wait_for("SUBACK", |e| match e {
            Ev::SubAck(codes) => Some(codes.clone()),
            _ => None,
        })
        .await
    }

    /// 5.0 SUBSCRIBE with full options and an optional subscription identifier.
    pub async fn subscribe_v5(&mut self, filter: m5::Filter, id: Option<usize>) -> Vec<u8> {
        let Handle::V5(c) = &self.handle else {
            panic!("subscribe_v5 on a 3.1.1 client");
        };
        let props = id.map(|id| m5::SubscribeProperties {
            id: Some(id),
            user_properties: Vec::new(),
        });
        match props {
            Some(p) => c.subscribe_many_with_properties([filter], p).await,
            None => c.subscribe_many([filter]).await,
        }
        .expect("subscribe request");
        self.wait_for("SUBACK", |e| match e {
            Ev::SubAck(codes) => Some(codes.clone()),
            _ => None,
        })
        .await
    }

    pub async fn unsubscribe(&mut self, filter: &str) -> Vec<u8> {
        match &self.handle {
            Handle::V4(c) => c.unsubscribe(filter).await.map_err(|e| e.to_string()),
            Handle::V5(c) => c.unsubscribe(filter).await.map_err(|e| e.to_string()),
        }
        .expect("unsubscribe request");
        self.wait_for("UNSUBACK", |e| match e {
            Ev::UnsubAck(codes) => Some(codes.clone()),
            _ => None,
        })
        .await
    }

    /// Queues a PUBLISH without waiting for its acknowledgement.
    pub async fn publish_nowait(&self, topic: &str, qos: u8, retain: bool, payload: &[u8]) {
        match &self.handle {
            Handle::V4(c) => c
                .publish(topic, qos4(qos), retain, payload.to_vec())
                .await
                .map_err(|e| e.to_string()),
            Handle::V5(c) => c
                .publish(topic, qos5(qos), retain, payload.to_vec())
                .await
                .map_err(|e| e.to_string()),
        }
        .expect("publish request");
    }

    /// Publishes and, for QoS 1/2, waits until the broker acknowledged it (PUBACK, or
    /// PUBCOMP); returns the PUBACK/PUBREC reason code (0 for QoS 0 and 3.1.1).
    pub async fn publish(&mut self, topic: &str, qos: u8, retain: bool, payload: &[u8]) -> u8 {
        self.publish_nowait(topic, qos, retain, payload).await;
        self.await_ack(qos).await
    }

    /// 5.0 PUBLISH with properties; waits for the acknowledgement like [`Client::publish`].
    pub async fn publish_v5(
        &mut self,
        topic: &str,
        qos: u8,
        retain: bool,
        payload: &[u8],
        props: m5::PublishProperties,
    ) -> u8 {
        let Handle::V5(c) = &self.handle else {
            panic!("publish_v5 on a 3.1.1 client");
        };
        c.publish_with_properties(topic, qos5(qos), retain, payload.to_vec(), props)
            .await
            .expect("publish request");
        self.await_ack(qos).await
    }

    async fn await_ack(&mut self, qos: u8) -> u8 {
        match qos {
            0 => 0,
            1 => {
                self.wait_for("PUBACK", |e| match e {
                    Ev::PubAck { reason, .. } => Some(*reason),
                    _ => None,
                })
                .await
            }
            _ => {
                let reason = self
                    .wait_for("PUBREC", |e| match e {
                        Ev::PubRec { reason, .. } => Some(*reason),
                        _ => None,
                    })
                    .await;
                if reason < 0x80 {
                    self.wait_for("PUBCOMP", |e| matches!(e, Ev::PubComp { .. }).then_some(()))
                        .await;
                }
                reason
            }
        }
    }

    /// Next PUBLISH; panics after [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> Msg {
        self.wait_for("PUBLISH", |e| match e {
            Ev::Publish(m) => Some(m.clone()),
            _ => None,
        })
        .await
    }

    /// Next PUBLISH within `wait`, if any.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Msg> {
        self.try_wait_for(wait, |e| match e {
            Ev::Publish(m) => Some(m.clone()),
            _ => None,
        })
        .await
    }

    /// Asserts that no PUBLISH arrives within `wait`.
    pub async fn expect_nothing(&mut self, wait: Duration) {
        if let Some(m) = self.try_recv(wait).await {
            panic!("unexpected message on {:?}: {m:?}", m.topic);
        }
    }

    /// Receives messages until one has `payload`; returns those before it. A barrier:
    /// the broker keeps per-subscription order, so anything it should have sent first
    /// has arrived once the barrier has.
    pub async fn recv_until(&mut self, payload: &[u8]) -> Vec<Msg> {
        let mut before = Vec::new();
        loop {
            let m = self.recv().await;
            if m.payload == payload {
                return before;
            }
            before.push(m);
        }
    }

    /// Manually acknowledges a message (clients built with `manual_acks`).
    pub async fn ack(&self, msg: &Msg) {
        match (&self.handle, &msg.original) {
            (Handle::V4(c), Original::V4(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            (Handle::V5(c), Original::V5(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            _ => panic!("message from another protocol version"),
        }
        .expect("ack request");
    }

    /// Waits until the connection ends; returns the 5.0 DISCONNECT reason if one came.
    pub async fn expect_closed(&mut self, wait: Duration) -> Option<u8> {
        let mut reason = None;
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .try_wait_for(left, |e| match e {
                    Ev::Disconnect(r) => Some(Some(*r)),
                    Ev::Closed(_) => Some(None),
                    _ => None,
                })
                .await
            {
                Some(Some(r)) => reason = Some(r),
                Some(None) => return reason,
                None => panic!("client {:?} still connected after {wait:?}", self.version),
            }
        }
    }

    /// A normal DISCONNECT; waits for the broker to close the connection.
    pub async fn disconnect(mut self) {
        match &self.handle {
            Handle::V4(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Handle::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        }
        .expect("disconnect request");
        let _ = self
            .try_wait_for(RECV_TIMEOUT, |e| matches!(e, Ev::Closed(_)).then_some(()))
            .await;
    }

    /// Drops the connection without DISCONNECT (as a crashed client would).
    pub fn kill(self) {
        self.task.abort();
    }
}

fn qos4(qos: u8) -> rumqttc::QoS {
    rumqttc::qos(qos).expect("QoS 0..=2")
}

fn qos5(qos: u8) -> QoS5 {
    rumqttc::v5::mqttbytes::qos(qos).expect("QoS 0..=2")
}

fn spawn_v4(
    opts: &Opts,
    addr: SocketAddr,
    tx: mpsc::UnboundedSender<Ev>,
) -> (Handle, JoinHandle<()>) {
    let mut o = rumqttc::MqttOptions::new(&opts.id, opts.host(addr), addr.port());
    if let Some(t) = &opts.transport {
        o.set_transport(t.0.clone());
    }
    o.set_clean_session(opts.clean)
        .set_keep_alive(Duration::from_secs(opts.keep_alive_secs))
        .set_manual_acks(opts.manual_acks)
        .set_max_packet_size(1 << 20, 1 << 20);
    if let Some((user, password)) = &opts.login {
        o.set_credentials(user, password);
    }
    if let Some(w) = &opts.will {
        o.set_last_will(rumqttc::LastWill::new(
            &w.topic,
            w.payload.clone(),
            qos4(w.qos),
            w.retain,
        ));
    }
    let (client, mut el) = rumqttc::AsyncClient::new(o, 1000);
    let task = tokio::spawn(async move {
        loop {
            let ev = match el.poll().await {
                Ok(rumqttc::Event::Incoming(p)) => match from_v4(p) {
                    Some(ev) => ev,
                    None => continue,
                },
                Ok(rumqttc::Event::Outgoing(_)) => continue,
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => Ev::ConnAck {
                    session_present: false,
                    code: code as u8,
                    props: None,
                },
                Err(e) => Ev::Closed(e.to_string()),
            };
            let last =
                matches!(ev, Ev::Closed(_)) || matches!(ev, Ev::ConnAck { code, .. } if code != 0);
            if tx.send(ev).is_err() || last {
                let _ = tx.send(Ev::Closed("event loop stopped".into()));
                return;
            }
        }
    });
    (Handle::V4(client), task)
}

fn from_v4(p: rumqttc::Packet) -> Option<Ev> {
    use rumqttc::Packet as P;
    Some(match p {
        P::ConnAck(c) => Ev::ConnAck {
            session_present: c.session_present,
            code: c.code as u8,
            props: None,
        },
        P::Publish(p) => Ev::Publish(Msg {
            topic: p.topic.clone(),
            payload: p.payload.to_vec(),
            qos: p.qos as u8,
            retain: p.retain,
            dup: p.dup,
            pkid: p.pkid,
            props: None,
            original: Original::V4(p),
        }),
        P::SubAck(s) => Ev::SubAck(
            s.return_codes
                .iter()
                .map(|c| match c {
                    rumqttc::SubscribeReasonCode::Success(q) => *q as u8,
                    rumqttc::SubscribeReasonCode::Failure => 0x80,
                })
                .collect(),
        ),
        P::UnsubAck(_) => Ev::UnsubAck(Vec::new()),
        P::PubAck(a) => Ev::PubAck {
            pkid: a.pkid,
            reason: 0,
        },
        P::PubRec(a) => Ev::PubRec {
            pkid: a.pkid,
            reason: 0,
        },
        P::PubComp(a) => Ev::PubComp { pkid: a.pkid },
        _ => return None,
    })
}

fn spawn_v5(
    opts: &Opts,
    addr: SocketAddr,
    tx: mpsc::UnboundedSender<Ev>,
) -> (Handle, JoinHandle<()>) {
    let mut o = rumqttc::v5::MqttOptions::new(&opts.id, opts.host(addr), addr.port());
    if let Some(t) = &opts.transport {
        o.set_transport(t.0.clone());
    }
    o.set_clean_start(opts.clean)
        .set_keep_alive(Duration::from_secs(opts.keep_alive_secs))
        .set_manual_acks(opts.manual_acks)
        .set_session_expiry_interval(opts.session_expiry)
        .set_receive_maximum(opts.receive_maximum)
        // rumqttc's own default would refuse incoming packets above 10 KiB.
        .set_max_packet_size(Some(opts.max_packet_size.unwrap_or(1 << 20)));
    if let Some((user, password)) = &opts.login {
        o.set_credentials(user, password);
    }
    if let Some(w) = &opts.will {
        let props = w.delay.map(|d| m5::LastWillProperties {
            delay_interval: Some(d),
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        });
        o.set_last_will(m5::LastWill::new(
            &w.topic,
            w.payload.clone(),
            qos5(w.qos),
            w.retain,
            props,
        ));
    }
    let (client, mut el) = rumqttc::v5::AsyncClient::new(o, 1000);
    let task = tokio::spawn(async move {
        use rumqttc::v5::{ConnectionError as CE, StateError as SE};
        loop {
            let ev = match el.poll().await {
                Ok(rumqttc::v5::Event::Incoming(p)) => match from_v5(p) {
                    Some(ev) => ev,
                    None => continue,
                },
                Ok(rumqttc::v5::Event::Outgoing(_)) => continue,
                Err(CE::ConnectionRefused(code)) => Ev::ConnAck {
                    session_present: false,
                    code: connack_code(code),
                    props: None,
                },
                Err(CE::MqttState(SE::ServerDisconnect { reason_code, .. })) => {
                    let _ = tx.send(Ev::Disconnect(reason_code as u8));
                    Ev::Closed("server sent DISCONNECT".into())
                }
                Err(e) => Ev::Closed(e.to_string()),
            };
            let last =
                matches!(ev, Ev::Closed(_)) || matches!(ev, Ev::ConnAck { code, .. } if code != 0);
            if tx.send(ev).is_err() || last {
                let _ = tx.send(Ev::Closed("event loop stopped".into()));
                return;
            }
        }
    });
    (Handle::V5(client), task)
}

fn from_v5(p: m5::Packet) -> Option<Ev> {
    use m5::Packet as P;
    Some(match p {
        P::ConnAck(c) => Ev::ConnAck {
            session_present: c.session_present,
            code: connack_code(c.code),
            props: c.properties,
        },
        P::Publish(p) => Ev::Publish(Msg {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload.to_vec(),
            qos: p.qos as u8,
            retain: p.retain,
            dup: p.dup,
            pkid: p.pkid,
            props: p.properties.clone(),
            original: Original::V5(p),
        }),
        P::SubAck(s) => Ev::SubAck(s.return_codes.iter().map(suback_code).collect()),
        P::UnsubAck(u) => Ev::UnsubAck(u.reasons.iter().map(unsuback_code).collect()),
        P::PubAck(a) => Ev::PubAck {
            pkid: a.pkid,
            reason: puback_code(&a.reason),
        },
        P::PubRec(a) => Ev::PubRec {
            pkid: a.pkid,
            reason: pubrec_code(&a.reason),
        },
        P::PubComp(a) => Ev::PubComp { pkid: a.pkid },
        P::Disconnect(d) => Ev::Disconnect(d.reason_code as u8),
        _ => return None,
    })
}

fn connack_code(c: m5::ConnectReturnCode) -> u8 {
    use m5::ConnectReturnCode as C;
    match c {
        C::Success => 0x00,
        C::RefusedProtocolVersion => 0x84,
        C::BadClientId => 0x85,
        C::ServiceUnavailable => 0x88,
        C::UnspecifiedError => 0x80,
        C::MalformedPacket => 0x81,
        C::ProtocolError => 0x82,
        C::ImplementationSpecificError => 0x83,
        C::UnsupportedProtocolVersion => 0x84,
        C::ClientIdentifierNotValid => 0x85,
        C::BadUserNamePassword => 0x86,
        C::NotAuthorized => 0x87,
        C::ServerUnavailable => 0x88,
        C::ServerBusy => 0x89,
        C::Banned => 0x8A,
        C::BadAuthenticationMethod => 0x8C,
        C::TopicNameInvalid => 0x90,
        C::PacketTooLarge => 0x95,
        C::QuotaExceeded => 0x97,
        C::PayloadFormatInvalid => 0x99,
        C::RetainNotSupported => 0x9A,
        C::QoSNotSupported => 0x9B,
        C::UseAnotherServer => 0x9C,
        C::ServerMoved => 0x9D,
        C::ConnectionRateExceeded => 0x9F,
    }
}

fn suback_code(c: &m5::SubscribeReasonCode) -> u8 {
    use m5::SubscribeReasonCode as S;
    match c {
        S::Success(q) => *q as u8,
        S::Failure | S::Unspecified => 0x80,
        S::ImplementationSpecific => 0x83,
        S::NotAuthorized => 0x87,
        S::TopicFilterInvalid => 0x8F,
        S::PkidInUse => 0x91,
        S::QuotaExceeded => 0x97,
        S::SharedSubscriptionsNotSupported => 0x9E,
        S::SubscriptionIdNotSupported => 0xA1,
        S::WildcardSubscriptionsNotSupported => 0xA2,
    }
}

fn unsuback_code(c: &m5::UnsubAckReason) -> u8 {
    use m5::UnsubAckReason as U;
    match c {
        U::Success => 0x00,
        U::NoSubscriptionExisted => 0x11,
        U::UnspecifiedError => 0x80,
        U::ImplementationSpecificError => 0x83,
        U::NotAuthorized => 0x87,
        U::TopicFilterInvalid => 0x8F,
        U::PacketIdentifierInUse => 0x91,
    }
}

fn puback_code(c: &m5::PubAckReason) -> u8 {
    use m5::PubAckReason as A;
    match c {
        A::Success => 0x00,
        A::NoMatchingSubscribers => 0x10,
        A::UnspecifiedError => 0x80,
        A::ImplementationSpecificError => 0x83,
        A::NotAuthorized => 0x87,
        A::TopicNameInvalid => 0x90,
        A::PacketIdentifierInUse => 0x91,
        A::QuotaExceeded => 0x97,
        A::PayloadFormatInvalid => 0x99,
    }
}

fn pubrec_code(c: &m5::PubRecReason) -> u8 {
    use m5::PubRecReason as R;
    match c {
        R::Success => 0x00,
        R::NoMatchingSubscribers => 0x10,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    }
}
