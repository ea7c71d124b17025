//! A small MQTT 3.1.1 / 5.0 codec for tests that must control or inspect the wire:
//! DUP flags, packet ids, malformed packets, exact reason codes and properties.
//!
//! It is deliberately independent of the broker's codec (and of rumqttc's), so that a
//! bug shared by both ends cannot hide itself. Encoders build whole packets (fixed
//! header included) as `Vec<u8>`; [`decode`] splits one packet off a buffer.

use bytes::{Buf, BytesMut};

/// Protocol level carried in CONNECT: 4 is MQTT 3.1.1, 5 is MQTT 5.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V4,
    V5,
}

impl Version {
    pub fn level(self) -> u8 {
        match self {
            Version::V4 => 4,
            Version::V5 => 5,
        }
    }
}

/// MQTT 5.0 property identifiers used by the tests.
pub mod prop {
    pub const PAYLOAD_FORMAT: u8 = 0x01;
    pub const MESSAGE_EXPIRY: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_ID: u8 = 0x0B;
    pub const SESSION_EXPIRY: u8 = 0x11;
    pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const WILL_DELAY: u8 = 0x18;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
}

/// One property value; the identifier decides the wire type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropVal {
    Byte(u8),
    U16(u16),
    U32(u32),
    VarInt(u32),
    Str(String),
    Bin(Vec<u8>),
    Pair(String, String),
}

/// An ordered property list, used both to build and to inspect packets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props(pub Vec<(u8, PropVal)>);

impl Props {
    pub fn new() -> Self {
        Props::default()
    }

    pub fn with(mut self, id: u8, value: PropVal) -> Self {
        self.0.push((id, value));
        self
    }

    pub fn get(&self, id: u8) -> Option<&PropVal> {
        self.0.iter().find(|(i, _)| *i == id).map(|(_, v)| v)
    }

    /// Any integer-valued property, widened to u32.
    pub fn int(&self, id: u8) -> Option<u32> {
        match self.get(id)? {
            PropVal::Byte(v) => Some(u32::from(*v)),
            PropVal::U16(v) => Some(u32::from(*v)),
            PropVal::U32(v) | PropVal::VarInt(v) => Some(*v),
            _ => None,
        }
    }

    pub fn str(&self, id: u8) -> Option<&str> {
        match self.get(id)? {
            PropVal::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn bin(&self, id: u8) -> Option<&[u8]> {
        match self.get(id)? {
            PropVal::Bin(b) => Some(b),
            _ => None,
        }
    }

    /// Every value of a repeatable integer property (subscription identifiers).
    pub fn ints(&self, id: u8) -> Vec<u32> {
        self.0
            .iter()
            .filter(|(i, _)| *i == id)
            .filter_map(|(_, v)| match v {
                PropVal::VarInt(v) | PropVal::U32(v) => Some(*v),
                _ => None,
            })
            .collect()
    }

    pub fn user_properties(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter_map(|(_, v)| match v {
                PropVal::Pair(k, v) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::new();
        for (id, value) in &self.0 {
            body.push(*id);
            match value {
                PropVal::Byte(v) => body.push(*v),
                PropVal::U16(v) => body.extend_from_slice(&v.to_be_bytes()),
                PropVal::U32(v) => body.extend_from_slice(&v.to_be_bytes()),
                PropVal::VarInt(v) => put_varint(&mut body, *v),
                PropVal::Str(s) => put_bytes(&mut body, s.as_bytes()),
                PropVal::Bin(b) => put_bytes(&mut body, b),
                PropVal::Pair(k, v) => {
                    put_bytes(&mut body, k.as_bytes());
                    put_bytes(&mut body, v.as_bytes());
                }
            }
        }
        put_varint(out, body.len() as u32);
        out.extend_from_slice(&body);
    }

    fn decode(buf: &mut &[u8]) -> Result<Props, String> {
        let len = get_varint(buf)? as usize;
        if buf.len() < len {
            return Err("property length beyond packet".into());
        }
        let (mut body, rest) = buf.split_at(len);
        *buf = rest;
        let mut props = Props::new();
        while !body.is_empty() {
            let id = get_u8(&mut body)?;
            let value = match id {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => {
                    PropVal::Byte(get_u8(&mut body)?)
                }
                0x13 | 0x21 | 0x22 | 0x23 => PropVal::U16(get_u16(&mut body)?),
                0x02 | 0x11 | 0x18 | 0x27 => PropVal::U32(get_u32(&mut body)?),
                0x0B => PropVal::VarInt(get_varint(&mut body)?),
                0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => {
                    PropVal::Str(get_string(&mut body)?)
                }
                0x09 | 0x16 => PropVal::Bin(get_bytes(&mut body)?.to_vec()),
                0x26 => PropVal::Pair(get_string(&mut body)?, get_string(&mut body)?),
                other => return Err(format!("unknown property id {other:#04x}")),
            };
            props.0.push((id, value));
        }
        Ok(props)
    }
}

/// A will message carried in CONNECT.
#[derive(Debug, Clone, Default)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub props: Props,
}

/// Everything a CONNECT can carry; `encode` writes it as given, without validation.
#[derive(Debug, Clone)]
pub struct Connect {
    pub version: Version,
    pub client_id: String,
    pub clean: bool,
    pub keep_alive: u16,
    pub props: Props,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
}

impl Connect {
    /// A clean-session CONNECT with keep-alive 60 s.
    pub fn new(version: Version, client_id: &str) -> Connect {
        Connect {
            version,
            client_id: client_id.to_string(),
            clean: true,
            keep_alive: 60,
            props: Props::new(),
            will: None,
            username: None,
            password: None,
        }
    }

    /// A CONNECT that resumes a session: clean session / clean start 0, and on 5.0 a
    /// session expiry of an hour.
    pub fn persistent(version: Version, client_id: &str) -> Connect {
        let mut c = Connect::new(version, client_id);
        c.clean = false;
        if version == Version::V5 {
            c.props = Props::new().with(prop::SESSION_EXPIRY, PropVal::U32(3600));
        }
        c
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        put_bytes(&mut body, b"MQTT");
        body.push(self.version.level());
        let mut flags = 0u8;
        if self.clean {
            flags |= 0x02;
        }
        if let Some(will) = &self.will {
            flags |= 0x04 | (will.qos << 3);
            if will.retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        body.push(flags);
        body.extend_from_slice(&self.keep_alive.to_be_bytes());
        if self.version == Version::V5 {
            self.props.encode(&mut body);
        }
        put_bytes(&mut body, self.client_id.as_bytes());
        if let Some(will) = &self.will {
            if self.version == Version::V5 {
                will.props.encode(&mut body);
            }
            put_bytes(&mut body, will.topic.as_bytes());
            put_bytes(&mut body, &will.payload);
        }
        if let Some(user) = &self.username {
            put_bytes(&mut body, user.as_bytes());
        }
        if let Some(pass) = &self.password {
            put_bytes(&mut body, pass);
        }
        frame(0x10, &body)
    }
}

/// A PUBLISH in either direction. `topic` is raw bytes so that tests can send
/// invalid UTF-8; [`Publish::topic_str`] reads it back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    pub topic: Vec<u8>,
    pub pkid: u16,
    pub props: Props,
    pub payload: Vec<u8>,
}

impl Publish {
    pub fn new(topic: &str, qos: u8, payload: &[u8]) -> Publish {
        Publish {
            qos,
            topic: topic.as_bytes().to_vec(),
            payload: payload.to_vec(),
            ..Publish::default()
        }
    }

    pub fn topic_str(&self) -> String {
        String::from_utf8_lossy(&self.topic).into_owned()
    }

    pub fn encode(&self, version: Version) -> Vec<u8> {
        let mut body = Vec::new();
        put_bytes(&mut body, &self.topic);
        if self.qos > 0 {
            body.extend_from_slice(&self.pkid.to_be_bytes());
        }
        if version == Version::V5 {
            self.props.encode(&mut body);
        }
        body.extend_from_slice(&self.payload);
        let mut first = 0x30 | (self.qos << 1);
        if self.dup {
            first |= 0x08;
        }
        if self.retain {
            first |= 0x01;
        }
        frame(first, &body)
    }
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP. 3.1.1 acks decode with reason 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub pkid: u16,
    pub reason: u8,
    pub props: Props,
}

/// A packet received from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connack {
        session_present: bool,
        code: u8,
        props: Props,
    },
    Publish(Publish),
    Puback(Ack),
    Pubrec(Ack),
    Pubrel(Ack),
    Pubcomp(Ack),
    Suback {
        pkid: u16,
        codes: Vec<u8>,
        props: Props,
    },
    /// 3.1.1 UNSUBACK has no reason codes: `codes` is empty then.
    Unsuback {
        pkid: u16,
        codes: Vec<u8>,
    },
    Pingresp,
    /// A 3.1.1 broker never sends DISCONNECT; 5.0 short forms decode as reason 0.
    Disconnect {
        reason: u8,
        props: Props,
    },
    /// Anything a broker should not send (CONNECT, SUBSCRIBE, …), kept raw.
    Other {
        first_byte: u8,
        body: Vec<u8>,
    },
}

/// Ack packets a client sends: `0x40` PUBACK, `0x50` PUBREC, `0x62` PUBREL, `0x70` PUBCOMP.
pub fn ack(version: Version, first_byte: u8, pkid: u16, reason: u8) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if version == Version::V5 && reason != 0 {
        body.push(reason);
    }
    frame(first_byte, &body)
}

pub fn puback(version: Version, pkid: u16) -> Vec<u8> {
    ack(version, 0x40, pkid, 0)
}

pub fn pubrec(version: Version, pkid: u16) -> Vec<u8> {
    ack(version, 0x50, pkid, 0)
}

pub fn pubrel(version: Version, pkid: u16) -> Vec<u8> {
    ack(version, 0x62, pkid, 0)
}

pub fn pubcomp(version: Version, pkid: u16) -> Vec<u8> {
    ack(version, 0x70, pkid, 0)
}

/// SUBSCRIBE with one options byte per filter (QoS in bits 0-1; 5.0 adds No Local 0x04,
/// Retain As Published 0x08 and Retain Handling in bits 4-5).
pub fn subscribe(version: Version, pkid: u16, filters: &[(&str, u8)], props: &Props) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if version == Version::V5 {
        props.encode(&mut body);
    }
    for (filter, options) in filters {
        put_bytes(&mut body, filter.as_bytes());
        body.push(*options);
    }
    frame(0x82, &body)
}

pub fn unsubscribe(version: Version, pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if version == Version::V5 {
        Props::new().encode(&mut body);
    }
    for filter in filters {
        put_bytes(&mut body, filter.as_bytes());
    }
    frame(0xA2, &body)
}

pub fn pingreq() -> Vec<u8> {
    vec![0xC0, 0x00]
}

/// DISCONNECT: `E0 00` on 3.1.1, reason code and properties on 5.0.
pub fn disconnect(version: Version, reason: u8, props: &Props) -> Vec<u8> {
    if version == Version::V4 {
        return vec![0xE0, 0x00];
    }
    let mut body = vec![reason];
    props.encode(&mut body);
    frame(0xE0, &body)
}

/// Wraps a variable header + payload in a fixed header.
pub fn frame(first_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first_byte];
    put_varint(&mut out, body.len() as u32);
    out.extend_from_slice(body);
    out
}

/// Splits one whole packet off `buf`; `Ok(None)` when more bytes are needed.
pub fn decode(version: Version, buf: &mut BytesMut) -> Result<Option<Packet>, String> {
    let mut len: usize = 0;
    let mut header = 1;
    loop {
        let Some(&byte) = buf.get(header) else {
            return Ok(None);
        };
        len |= usize::from(byte & 0x7F) << (7 * (header - 1));
        header += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if header > 4 {
            return Err("remaining length longer than 4 bytes".into());
        }
    }
    if buf.len() < header + len {
        return Ok(None);
    }
    let first_byte = buf[0];
    buf.advance(header);
    let body = buf.split_to(len);
    parse(version, first_byte, &body).map(Some)
}

fn parse(version: Version, first_byte: u8, body: &[u8]) -> Result<Packet, String> {
    let v5 = version == Version::V5;
    let mut b = body;
    let packet = match first_byte >> 4 {
        2 => {
            let flags = get_u8(&mut b)?;
            let code = get_u8(&mut b)?;
            let props = if v5 && !b.is_empty() {
                Props::decode(&mut b)?
            } else {
                Props::new()
            };
            Packet::Connack {
                session_present: flags & 1 == 1,
                code,
                props,
            }
        }
        3 => {
            let qos = (first_byte >> 1) & 3;
            let topic = get_bytes(&mut b)?.to_vec();
            let pkid = if qos > 0 { get_u16(&mut b)? } else { 0 };
            let props = if v5 {
                Props::decode(&mut b)?
            } else {
                Props::new()
            };
            Packet::Publish(Publish {
                dup: first_byte & 0x08 != 0,
                qos,
                retain: first_byte & 1 == 1,
                topic,
                pkid,
                props,
                payload: b.to_vec(),
            })
        }
        kind @ 4..=7 => {
            let pkid = get_u16(&mut b)?;
            let reason = if b.is_empty() { 0 } else { get_u8(&mut b)? };
            let props = if b.is_empty() {
                Props::new()
            } else {
                Props::decode(&mut b)?
            };
            let ack = Ack {
                pkid,
                reason,
                props,
            };
            match kind {
                4 => Packet::Puback(ack),
                5 => Packet::Pubrec(ack),
                6 => Packet::Pubrel(ack),
                _ => Packet::Pubcomp(ack),
            }
        }
        9 => {
            let pkid = get_u16(&mut b)?;
            let props = if v5 {
                Props::decode(&mut b)?
            } else {
                Props::new()
            };
            Packet::Suback {
                pkid,
                codes: b.to_vec(),
                props,
            }
        }
        11 => {
            let pkid = get_u16(&mut b)?;
            if v5 {
                Props::decode(&mut b)?;
            }
            Packet::Unsuback {
                pkid,
                codes: b.to_vec(),
            }
        }
        13 => Packet::Pingresp,
        14 => {
            let reason = if b.is_empty() { 0 } else { get_u8(&mut b)? };
            let props = if b.is_empty() {
                Props::new()
            } else {
                Props::decode(&mut b)?
            };
            Packet::Disconnect { reason, props }
        }
        _ => Packet::Other {
            first_byte,
            body: body.to_vec(),
        },
    };
    Ok(packet)
}

pub fn put_varint(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            return;
        }
    }
}

pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn get_u8(b: &mut &[u8]) -> Result<u8, String> {
    let (&first, rest) = b.split_first().ok_or("packet too short")?;
    *b = rest;
    Ok(first)
}

fn get_u16(b: &mut &[u8]) -> Result<u16, String> {
    Ok(u16::from_be_bytes([get_u8(b)?, get_u8(b)?]))
}

fn get_u32(b: &mut &[u8]) -> Result<u32, String> {
    Ok(u32::from(get_u16(b)?) << 16 | u32::from(get_u16(b)?))
}

fn get_varint(b: &mut &[u8]) -> Result<u32, String> {
    let mut value = 0u32;
    for i in 0..4 {
        let byte = get_u8(b)?;
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("variable byte integer longer than 4 bytes".into())
}

fn get_bytes<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let len = usize::from(get_u16(b)?);
    if b.len() < len {
        return Err("string length beyond packet".into());
    }
    let (bytes, rest) = b.split_at(len);
    *b = rest;
    Ok(bytes)
}

fn get_string(b: &mut &[u8]) -> Result<String, String> {
    String::from_utf8(get_bytes(b)?.to_vec()).map_err(|_| "invalid UTF-8 string".to_string())
}
