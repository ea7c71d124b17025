//! The wire edge: MQTT 3.1.1 / 5.0 bytes to and from the [`crate::packet`] model.
//!
//! The framing, the decoder and the encoder are written here rather than by wrapping
//! mqttbytes 0.6's `read`/`write`. A wrapper would have had to re-parse every packet
//! anyway, because what mqttbytes gets wrong sits inside its parsers, out of reach of
//! checks before or after them:
//! - v5 property sections are not bounded by their declared length: a property may run
//!   into the payload unnoticed, and a duplicated property is accepted;
//! - a complete frame that ends early reports `InsufficientBytes` after the frame has
//!   already been split off the buffer (v5 `E0 01 8E`, a v5 PUBLISH without a property
//!   length), so "need more bytes" and "malformed" cannot be told apart;
//! - a password is read as a `String` (binary passwords are refused), and a user name
//!   flag with an empty user name is read as "no user name";
//! - trailing bytes after v4 acks, PINGREQ and DISCONNECT are ignored, as are reserved
//!   SUBSCRIBE option bits, fixed-header flags and the CONNECT reserved bit;
//! - `v5::Unsubscribe::read` contains a `dbg!`, printing to stderr on every UNSUBSCRIBE;
//! - the writers cast lengths to `u16` unchecked and write partial output on error.
//!
//! mqttbytes stays the test oracle: the tests check that it reads what we write.
//!
//! Only what a client may send is decoded; anything else is refused with a
//! [`DecodeError`] whose [`reason_code`](DecodeError::reason_code) the engine can send.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::packet::{
    reason, Ack, ConnAck, Connect, Disconnect, MessageProperties, Packet, Protocol, Publish, QoS,
    RetainHandling, SubAck, Subscribe, SubscribeFilter, UnsubAck, Unsubscribe, UserProperties,
    Will,
};

/// The largest value a Variable Byte Integer (and so a remaining length) can hold.
const MAX_VARINT: usize = 268_435_455;

/// Packet type names, indexed by the type nibble, for error messages.
const PACKET_NAMES: [&str; 16] = [
    "reserved type 0",
    "CONNECT",
    "CONNACK",
    "PUBLISH",
    "PUBACK",
    "PUBREC",
    "PUBREL",
    "PUBCOMP",
    "SUBSCRIBE",
    "SUBACK",
    "UNSUBSCRIBE",
    "UNSUBACK",
    "PINGREQ",
    "PINGRESP",
    "DISCONNECT",
    "AUTH",
];

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Bad bytes: reason 0x81.
    #[error("malformed packet: {0}")]
    Malformed(String),
    /// Well-formed but forbidden (bad flags, empty SUBSCRIBE, pkid 0 with QoS>0, server-only
    /// packet from a client, second CONNECT...): reason 0x82.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Whole packet (fixed header + remaining) larger than max: reason 0x95.
    #[error("packet of {size} bytes exceeds maximum {max}")]
    TooLarge { size: usize, max: usize },
    /// CONNECT with an unknown protocol name/level (e.g. MQIsdp/3, level 6): answer CONNACK
    /// 0x84 (encoded as 3.1.1 return code 0x01 when the reply is encoded as V4, which is what
    /// a client below level 5 understands).
    #[error("unsupported protocol {name:?} level {level}")]
    UnsupportedProtocol { name: String, level: u8 },
}

impl DecodeError {
    /// The MQTT 5 reason code to report this error with (CONNACK or DISCONNECT).
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::Malformed(_) => reason::MALFORMED_PACKET,
            DecodeError::Protocol(_) => reason::PROTOCOL_ERROR,
            DecodeError::TooLarge { .. } => reason::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocol { .. } => reason::UNSUPPORTED_PROTOCOL_VERSION,
        }
    }
}

fn malformed(msg: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(msg.into())
}

fn protocol_error(msg: impl Into<String>) -> DecodeError {
    DecodeError::Protocol(msg.into())
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("{field} is {len} bytes long; MQTT strings and binary data hold at most 65535")]
    FieldTooLong { field: &'static str, len: usize },
    #[error("packet identifier 0 in {0}")]
    PacketIdZero(&'static str),
    #[error("remaining length {0} exceeds the MQTT maximum of 268435455")]
    PacketTooLarge(usize),
    /// A value the protocol cannot carry (QoS 0 with DUP, subscription identifier 0, ...).
    #[error("cannot encode: {0}")]
    Invalid(&'static str),
}

// ---------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------

/// A parsed fixed header.
#[derive(Debug, Clone, Copy)]
struct Header {
    byte1: u8,
    /// 1 + the bytes of the remaining length (2..=5).
    len: usize,
    remaining: usize,
}

impl Header {
    fn kind(&self) -> u8 {
        self.byte1 >> 4
    }

    fn flags(&self) -> u8 {
        self.byte1 & 0x0F
    }

    fn name(&self) -> &'static str {
        PACKET_NAMES[usize::from(self.kind())]
    }

    fn frame_len(&self) -> usize {
        self.len + self.remaining
    }
}

/// Parses the fixed header at the start of `buf`; `Ok(None)` until all of it is there.
fn parse_header(buf: &[u8]) -> Result<Option<Header>, DecodeError> {
    let Some(&byte1) = buf.first() else {
        return Ok(None);
    };
    let mut remaining = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some(Header {
                byte1,
                len: 2 + i,
                remaining,
            }));
        }
    }
    Err(malformed("remaining length longer than 4 bytes"))
}

/// Takes one frame off `buf` and returns its header and body, or `Ok(None)` (buffer
/// untouched) if it is not complete. Size and `check` run on the fixed header alone, so a
/// packet that will be refused anyway is refused before its body is buffered.
fn next_frame(
    buf: &mut BytesMut,
    max_size: usize,
    check: impl FnOnce(&Header) -> Result<(), DecodeError>,
) -> Result<Option<(Header, Bytes)>, DecodeError> {
    let Some(header) = parse_header(buf)? else {
        return Ok(None);
    };
    let size = header.frame_len();
    if size > max_size {
        return Err(DecodeError::TooLarge {
            size,
            max: max_size,
        });
    }
    check(&header)?;
    if buf.len() < size {
        return Ok(None);
    }
    let mut frame = buf.split_to(size).freeze();
    frame.advance(header.len);
    Ok(Some((header, frame)))
}

/// PUBLISH fixed-header flags: (dup, qos, retain).
fn publish_flags(flags: u8) -> Result<(bool, QoS, bool), DecodeError> {
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or_else(|| malformed("PUBLISH with QoS 3"))?;
    let dup = flags & 0b1000 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(malformed("PUBLISH with QoS 0 and DUP set"));
    }
    Ok((dup, qos, flags & 1 != 0))
}

/// Checks the type and flags of a packet after CONNECT.
fn check_header(header: &Header, protocol: Protocol) -> Result<(), DecodeError> {
    let expected_flags = match header.kind() {
        0 => return Err(malformed("reserved packet type 0")),
        1 => return Err(protocol_error("second CONNECT")),
        2 | 9 | 11 | 13 => {
            return Err(protocol_error(format!(
                "{} is sent only by a server",
                header.name()
            )))
        }
        3 => return publish_flags(header.flags()).map(|_| ()),
        15 if protocol == Protocol::V4 => {
            return Err(malformed(
                "packet type 15 (AUTH) does not exist in MQTT 3.1.1",
            ))
        }
        6 | 8 | 10 => 0b0010,
        _ => 0,
    };
    if header.flags() != expected_flags {
        return Err(malformed(format!(
            "{} with fixed-header flags {:#06b}",
            header.name(),
            header.flags()
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------

/// The first packet of a connection, which must be CONNECT (anything else: Protocol error).
/// `Ok(None)`: more bytes needed (buffer untouched). On `Ok(Some)` exactly the CONNECT frame
/// is consumed; after an error the connection must be closed and the buffer is unspecified.
///
/// `max_size` bounds the whole packet (fixed header included). A 3.1.1 CONNECT gets
/// `session_expiry_interval: None`; a 5.0 one always gets `Some` (absent means 0).
pub fn decode_connect(buf: &mut BytesMut, max_size: usize) -> Result<Option<Connect>, DecodeError> {
    let frame = next_frame(buf, max_size, |header| {
        if header.kind() != 1 {
            return Err(protocol_error(format!(
                "first packet must be CONNECT, got {}",
                header.name()
            )));
        }
        if header.flags() != 0 {
            return Err(malformed("CONNECT with non-zero fixed-header flags"));
        }
        Ok(())
    })?;
    let Some((_, body)) = frame else {
        return Ok(None);
    };
    // A copy, so that the will, password and properties kept for the whole session do not pin
    // the connection's read buffer.
    read_connect(&mut Reader(Bytes::copy_from_slice(&body))).map(Some)
}

/// Every packet after CONNECT. `Ok(None)`: more bytes needed, buffer untouched. Consumes
/// exactly one frame on `Ok(Some)`; after an error the connection must be closed.
///
/// PUBLISH payloads and correlation data are slices of `buf`'s memory: copy them before
/// keeping them for long (retained or queued messages).
pub fn decode(
    buf: &mut BytesMut,
    protocol: Protocol,
    max_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some((header, body)) = next_frame(buf, max_size, |h| check_header(h, protocol))? else {
        return Ok(None);
    };
    let v5 = protocol == Protocol::V5;
    let mut r = Reader(body);
    let packet = match header.kind() {
        3 => Packet::Publish(read_publish(header.flags(), &mut r, v5)?),
        4 => Packet::PubAck(read_ack(&mut r, v5, "PUBACK", PUBACK_CODES)?),
        5 => Packet::PubRec(read_ack(&mut r, v5, "PUBREC", PUBACK_CODES)?),
        6 => Packet::PubRel(read_ack(&mut r, v5, "PUBREL", PUBREL_CODES)?),
        7 => Packet::PubComp(read_ack(&mut r, v5, "PUBCOMP", PUBREL_CODES)?),
        8 => Packet::Subscribe(read_subscribe(&mut r, v5)?),
        10 => Packet::Unsubscribe(read_unsubscribe(&mut r, v5)?),
        12 => Packet::PingReq,
        14 => Packet::Disconnect(read_disconnect(&mut r, v5)?),
        15 => read_auth(&mut r)?,
        // check_header refused every other type.
        _ => return Err(protocol_error(format!("unexpected {}", header.name()))),
    };
    r.finish(header.name())?;
    Ok(Some(packet))
}

/// Bounds-checked reads over one frame's body: running short is Malformed, never a panic.
struct Reader(Bytes);

fn truncated() -> DecodeError {
    malformed("packet ends before its contents")
}

impl Reader {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn finish(&self, what: &str) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(malformed(format!(
                "{} unexpected bytes at the end of {what}",
                self.0.len()
            )))
        }
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.0.is_empty() {
            return Err(truncated());
        }
        Ok(self.0.get_u8())
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.0.len() < 2 {
            return Err(truncated());
        }
        Ok(self.0.get_u16())
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        if self.0.len() < 4 {
            return Err(truncated());
        }
        Ok(self.0.get_u32())
    }

    fn varint(&mut self) -> Result<usize, DecodeError> {
        let mut value = 0;
        for i in 0..4 {
            let b = self.u8()?;
            value |= usize::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("variable byte integer longer than 4 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.0.len() < n {
            return Err(truncated());
        }
        Ok(self.0.split_to(n))
    }

    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.0)
    }

    fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 Encoded String: ill-formed UTF-8 and U+0000 are Malformed (MQTT 5 §1.5.4).
    fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        let bytes = self.binary()?;
        let s = std::str::from_utf8(&bytes)
            .map_err(|_| malformed(format!("{what} is not valid UTF-8")))?;
        if s.contains('\0') {
            return Err(malformed(format!("{what} contains U+0000")));
        }
        Ok(s.to_owned())
    }
}

fn nonzero_pkid(pkid: u16, packet: &str) -> Result<u16, DecodeError> {
    if pkid == 0 {
        return Err(protocol_error(format!("{packet} with packet identifier 0")));
    }
    Ok(pkid)
}

/// MQTT 5 property identifiers.
mod prop {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIERS_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// A set of property identifiers as a bit mask (every identifier is below 64).
const fn prop_set(ids: &[u8]) -> u64 {
    let mut mask = 0;
    let mut i = 0;
    while i < ids.len() {
        mask |= 1 << ids[i];
        i += 1;
    }
    mask
}

// The properties a client may send in each packet (MQTT 5 §2.2.2.2).
const CONNECT_PROPS: u64 = prop_set(&[
    prop::SESSION_EXPIRY_INTERVAL,
    prop::RECEIVE_MAXIMUM,
    prop::MAXIMUM_PACKET_SIZE,
    prop::TOPIC_ALIAS_MAXIMUM,
    prop::REQUEST_RESPONSE_INFORMATION,
    prop::REQUEST_PROBLEM_INFORMATION,
    prop::USER_PROPERTY,
    prop::AUTHENTICATION_METHOD,
    prop::AUTHENTICATION_DATA,
]);
const WILL_PROPS: u64 = prop_set(&[
    prop::WILL_DELAY_INTERVAL,
    prop::PAYLOAD_FORMAT_INDICATOR,
    prop::MESSAGE_EXPIRY_INTERVAL,
    prop::CONTENT_TYPE,
    prop::RESPONSE_TOPIC,
    prop::CORRELATION_DATA,
    prop::USER_PROPERTY,
]);
// Subscription Identifier is valid in PUBLISH but only server to client; read_publish
// refuses it as a Protocol Error (MQTT-3.3.4-6).
const PUBLISH_PROPS: u64 = prop_set(&[
    prop::PAYLOAD_FORMAT_INDICATOR,
    prop::MESSAGE_EXPIRY_INTERVAL,
    prop::CONTENT_TYPE,
    prop::RESPONSE_TOPIC,
    prop::CORRELATION_DATA,
    prop::SUBSCRIPTION_IDENTIFIER,
    prop::TOPIC_ALIAS,
    prop::USER_PROPERTY,
]);
const ACK_PROPS: u64 = prop_set(&[prop::REASON_STRING, prop::USER_PROPERTY]);
const SUBSCRIBE_PROPS: u64 = prop_set(&[prop::SUBSCRIPTION_IDENTIFIER, prop::USER_PROPERTY]);
const UNSUBSCRIBE_PROPS: u64 = prop_set(&[prop::USER_PROPERTY]);
const DISCONNECT_PROPS: u64 = prop_set(&[
    prop::SESSION_EXPIRY_INTERVAL,
    prop::REASON_STRING,
    prop::USER_PROPERTY,
    prop::SERVER_REFERENCE,
]);
const AUTH_PROPS: u64 = prop_set(&[
    prop::AUTHENTICATION_METHOD,
    prop::AUTHENTICATION_DATA,
    prop::REASON_STRING,
    prop::USER_PROPERTY,
]);

/// Every property a client may send; each packet allows a subset and keeps what it needs.
#[derive(Default)]
struct Props {
    payload_format_indicator: Option<u8>,
    message_expiry_interval: Option<u32>,
    content_type: Option<String>,
    response_topic: Option<String>,
    correlation_data: Option<Bytes>,
    subscription_identifier: Option<u32>,
    session_expiry_interval: Option<u32>,
    authentication_method: Option<String>,
    authentication_data: Option<Bytes>,
    request_problem_information: Option<u8>,
    will_delay_interval: Option<u32>,
    request_response_information: Option<u8>,
    reason_string: Option<String>,
    receive_maximum: Option<u16>,
    topic_alias_maximum: Option<u16>,
    topic_alias: Option<u16>,
    maximum_packet_size: Option<u32>,
    user_properties: UserProperties,
}

impl Props {
    fn take_message_properties(&mut self) -> MessageProperties {
        MessageProperties {
            payload_format_indicator: self.payload_format_indicator,
            message_expiry_interval: self.message_expiry_interval,
            content_type: self.content_type.take(),
            response_topic: self.response_topic.take(),
            correlation_data: self.correlation_data.take(),
            user_properties: std::mem::take(&mut self.user_properties),
        }
    }
}

/// A property byte that may only be 0 or 1.
fn flag_byte(value: u8, what: &str) -> Result<u8, DecodeError> {
    if value > 1 {
        return Err(protocol_error(format!("{what} of {value}")));
    }
    Ok(value)
}

fn nonzero<T: Default + PartialEq>(value: T, what: &str) -> Result<T, DecodeError> {
    if value == T::default() {
        return Err(protocol_error(format!("{what} of 0")));
    }
    Ok(value)
}

/// Reads a v5 property section (its length, then properties exactly filling it).
/// An identifier unknown or not allowed in `packet` is Malformed, a repeated one other than
/// User Property a Protocol Error, as are values the specification rules out.
fn read_props(r: &mut Reader, allowed: u64, packet: &str) -> Result<Props, DecodeError> {
    let len = r.varint()?;
    if len == 0 {
        return Ok(Props::default());
    }
    let mut r = Reader(r.take(len)?);
    let mut p = Props::default();
    let mut seen = 0u64;
    while !r.is_empty() {
        // Identifiers are Variable Byte Integers, but every defined one fits in one byte.
        let id = r.u8()?;
        if id >= 64 || allowed & (1 << id) == 0 {
            return Err(malformed(format!(
                "property {id:#04x} is not valid in {packet}"
            )));
        }
        if id != prop::USER_PROPERTY {
            if seen & (1 << id) != 0 {
                return Err(protocol_error(format!(
                    "property {id:#04x} repeated in {packet}"
                )));
            }
            seen |= 1 << id;
        }
        match id {
            prop::PAYLOAD_FORMAT_INDICATOR => {
                p.payload_format_indicator = Some(flag_byte(r.u8()?, "payload format indicator")?)
            }
            prop::MESSAGE_EXPIRY_INTERVAL => p.message_expiry_interval = Some(r.u32()?),
            prop::CONTENT_TYPE => p.content_type = Some(r.string("content type")?),
            prop::RESPONSE_TOPIC => p.response_topic = Some(r.string("response topic")?),
            prop::CORRELATION_DATA => p.correlation_data = Some(r.binary()?),
            prop::SUBSCRIPTION_IDENTIFIER => {
                // 4 varint bytes hold at most 268,435,455, which fits in a u32.
                let id = nonzero(r.varint()?, "subscription identifier")?;
                p.subscription_identifier = Some(id as u32);
            }
            prop::SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(r.u32()?),
            prop::AUTHENTICATION_METHOD => {
                p.authentication_method = Some(r.string("authentication method")?)
            }
            prop::AUTHENTICATION_DATA => p.authentication_data = Some(r.binary()?),
            prop::REQUEST_PROBLEM_INFORMATION => {
                p.request_problem_information =
                    Some(flag_byte(r.u8()?, "request problem information")?)
            }
            prop::WILL_DELAY_INTERVAL => p.will_delay_interval = Some(r.u32()?),
            prop::REQUEST_RESPONSE_INFORMATION => {
                p.request_response_information =
                    Some(flag_byte(r.u8()?, "request response information")?)
            }
            prop::SERVER_REFERENCE => {
                // Meaningless from a client; validated, then dropped.
                r.string("server reference")?;
            }
            prop::REASON_STRING => p.reason_string = Some(r.string("reason string")?),
            prop::RECEIVE_MAXIMUM => {
                p.receive_maximum = Some(nonzero(r.u16()?, "receive maximum")?)
            }
            prop::TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(r.u16()?),
            prop::TOPIC_ALIAS => p.topic_alias = Some(nonzero(r.u16()?, "topic alias")?),
            prop::USER_PROPERTY => {
                let key = r.string("user property name")?;
                let value = r.string("user property value")?;
                p.user_properties.push((key, value));
            }
            prop::MAXIMUM_PACKET_SIZE => {
                p.maximum_packet_size = Some(nonzero(r.u32()?, "maximum packet size")?)
            }
            // Not in any allowed set.
            _ => {
                return Err(malformed(format!(
                    "property {id:#04x} is not valid in {packet}"
                )))
            }
        }
    }
    Ok(p)
}

fn read_connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.string("protocol name")?;
    let level = r.u8()?;
    let protocol = match (name.as_str(), level) {
        ("MQTT", 4) => Protocol::V4,
        ("MQTT", 5) => Protocol::V5,
        _ => return Err(DecodeError::UnsupportedProtocol { name, level }),
    };
    let v5 = protocol == Protocol::V5;

    let flags = r.u8()?;
    if flags & 0b0000_0001 != 0 {
        return Err(malformed("CONNECT reserved flag is set"));
    }
    let clean_start = flags & 0b0000_0010 != 0;
    let will_flag = flags & 0b0000_0100 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0b0010_0000 != 0;
    let password_flag = flags & 0b0100_0000 != 0;
    let username_flag = flags & 0b1000_0000 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(malformed(
            "will QoS or will retain set without the will flag",
        ));
    }
    let will_qos = QoS::from_u8(will_qos).ok_or_else(|| malformed("will QoS 3"))?;
    // 3.1.1 forbids it (MQTT-3.1.2-22); 5.0 allows a password alone.
    if !v5 && password_flag && !username_flag {
        return Err(malformed("password flag set without the user name flag"));
    }
    let keep_alive = r.u16()?;

    let mut props = if v5 {
        read_props(r, CONNECT_PROPS, "CONNECT")?
    } else {
        Props::default()
    };
    if props.authentication_data.is_some() && props.authentication_method.is_none() {
        return Err(protocol_error(
            "authentication data without an authentication method",
        ));
    }

    let client_id = r.string("client identifier")?;
    let will = if will_flag {
        let mut will_props = if v5 {
            read_props(r, WILL_PROPS, "will properties")?
        } else {
            Props::default()
        };
        Some(Will {
            topic: r.string("will topic")?,
            payload: r.binary()?,
            qos: will_qos,
            retain: will_retain,
            delay_interval: will_props.will_delay_interval.unwrap_or(0),
            properties: will_props.take_message_properties(),
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string("user name")?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary()?)
    } else {
        None
    };
    r.finish("CONNECT")?;

    Ok(Connect {
        protocol,
        keep_alive,
        client_id,
        clean_start,
        will,
        username,
        password,
        // Absent in 5.0 means 0 (§3.1.2.11.2); None is left for 3.1.1, where the engine
        // derives it from clean session.
        session_expiry_interval: v5.then(|| props.session_expiry_interval.unwrap_or(0)),
        receive_maximum: props.receive_maximum,
        maximum_packet_size: props.maximum_packet_size,
        topic_alias_maximum: props.topic_alias_maximum,
        request_response_information: props.request_response_information,
        request_problem_information: props.request_problem_information,
        authentication_method: props.authentication_method.take(),
        user_properties: std::mem::take(&mut props.user_properties),
    })
}

fn read_publish(flags: u8, r: &mut Reader, v5: bool) -> Result<Publish, DecodeError> {
    let (dup, qos, retain) = publish_flags(flags)?;
    let topic = r.string("topic name")?;
    let pkid = match qos {
        QoS::AtMostOnce => 0,
        _ => nonzero_pkid(r.u16()?, "PUBLISH")?,
    };
    let (topic_alias, properties) = if v5 {
        let mut props = read_props(r, PUBLISH_PROPS, "PUBLISH")?;
        if props.subscription_identifier.is_some() {
            return Err(protocol_error(
                "PUBLISH from a client with a subscription identifier",
            ));
        }
        (props.topic_alias, props.take_message_properties())
    } else {
        (None, MessageProperties::default())
    };
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        pkid,
        payload: r.rest(),
        topic_alias,
        subscription_identifiers: Vec::new(),
        properties,
    })
}

// Reason codes each ack may carry (MQTT 5 §3.4.2.1, §3.5.2.1, §3.6.2.1, §3.7.2.1).
const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];

fn read_ack(r: &mut Reader, v5: bool, packet: &str, codes: &[u8]) -> Result<Ack, DecodeError> {
    let mut ack = Ack::new(nonzero_pkid(r.u16()?, packet)?, reason::SUCCESS);
    // 5.0 omits the reason code when it is 0 and there are no properties (remaining
    // length 2), and the properties when there are none (remaining length 3).
    if v5 && !r.is_empty() {
        ack.code = r.u8()?;
        if !codes.contains(&ack.code) {
            return Err(protocol_error(format!(
                "{packet} with reason code {:#04x}",
                ack.code
            )));
        }
        if !r.is_empty() {
            ack.reason_string = read_props(r, ACK_PROPS, packet)?.reason_string;
        }
    }
    Ok(ack)
}

fn read_subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let pkid = nonzero_pkid(r.u16()?, "SUBSCRIBE")?;
    let mut props = if v5 {
        read_props(r, SUBSCRIBE_PROPS, "SUBSCRIBE")?
    } else {
        Props::default()
    };
    // Bits 2..7 are reserved in 3.1.1, bits 6..7 in 5.0.
    let reserved = if v5 { 0b1100_0000 } else { 0b1111_1100 };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string("topic filter")?;
        let options = r.u8()?;
        if options & reserved != 0 {
            return Err(malformed("reserved subscription option bits set"));
        }
        let qos = QoS::from_u8(options & 0b11)
            .ok_or_else(|| malformed("subscription requesting QoS 3"))?;
        let retain_handling = match (options >> 4) & 0b11 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscribe,
            2 => RetainHandling::Never,
            _ => return Err(protocol_error("retain handling 3")),
        };
        filters.push(SubscribeFilter {
            filter,
            qos,
            no_local: options & 0b0100 != 0,
            retain_as_published: options & 0b1000 != 0,
            retain_handling,
        });
    }
    if filters.is_empty() {
        return Err(protocol_error("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe {
        pkid,
        filters,
        subscription_identifier: props.subscription_identifier,
        user_properties: std::mem::take(&mut props.user_properties),
    })
}

fn read_unsubscribe(r: &mut Reader, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let pkid = nonzero_pkid(r.u16()?, "UNSUBSCRIBE")?;
    if v5 {
        read_props(r, UNSUBSCRIBE_PROPS, "UNSUBSCRIBE")?;
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string("topic filter")?);
    }
    if filters.is_empty() {
        return Err(protocol_error("UNSUBSCRIBE without topic filters"));
    }
    Ok(Unsubscribe { pkid, filters })
}

fn read_disconnect(r: &mut Reader, v5: bool) -> Result<Disconnect, DecodeError> {
    let mut disconnect = Disconnect::default();
    // 5.0: remaining length 0 means reason 0, and 1 means a reason code alone.
    if v5 && !r.is_empty() {
        disconnect.code = r.u8()?;
        if !r.is_empty() {
            let props = read_props(r, DISCONNECT_PROPS, "DISCONNECT")?;
            disconnect.session_expiry_interval = props.session_expiry_interval;
            disconnect.reason_string = props.reason_string;
        }
    }
    Ok(disconnect)
}

fn read_auth(r: &mut Reader) -> Result<Packet, DecodeError> {
    let mut code = reason::SUCCESS;
    if !r.is_empty() {
        code = r.u8()?;
        if !r.is_empty() {
            read_props(r, AUTH_PROPS, "AUTH")?;
        }
    }
    Ok(Packet::Auth { code })
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/// Appends the encoding to `out`. On error nothing is appended. Packets that do not exist
/// in 3.1.1 (server DISCONNECT, AUTH) encode to nothing for V4. Returns the number of bytes
/// appended.
///
/// `protocol` decides the format; `Connect::protocol` is not consulted. On V4, reason codes
/// become 3.1.1 return codes (CONNACK, SUBACK) or are dropped (other acks). A CONNACK with a
/// non-zero code is always sent with session present 0 (MQTT-3.2.2-4, MQTT-3.2.2-6).
pub fn encode(
    packet: &Packet,
    protocol: Protocol,
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    let v5 = protocol == Protocol::V5;
    let byte1 = match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(p) => {
            if p.dup && p.qos == QoS::AtMostOnce {
                return Err(EncodeError::Invalid("DUP on a QoS 0 PUBLISH"));
            }
            0x30 | u8::from(p.dup) << 3 | (p.qos as u8) << 1 | u8::from(p.retain)
        }
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) if !v5 => return Ok(0),
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth { .. } if !v5 => return Ok(0),
        Packet::Auth { .. } => 0xF0,
    };

    // A dry run sizes the packet and finds every error before anything is appended.
    let mut counter = Counter(0);
    write_body(packet, v5, &mut Writer(&mut counter))?;
    let remaining = counter.0;
    if remaining > MAX_VARINT {
        return Err(EncodeError::PacketTooLarge(remaining));
    }

    let start = out.len();
    out.reserve(5 + remaining);
    out.put_u8(byte1);
    let mut w = Writer(&mut *out);
    let written = w
        .varint(remaining)
        .and_then(|()| write_body(packet, v5, &mut w));
    if let Err(e) = written {
        out.truncate(start);
        return Err(e);
    }
    Ok(out.len() - start)
}

/// Where a [`Writer`] puts bytes: the output buffer, or a [`Counter`] for the dry run.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for BytesMut {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Counts the bytes a writer would append; encoding sizes each packet and each property
/// section this way, so lengths never disagree with what is written.
struct Counter(usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

struct Writer<'a>(&'a mut dyn Sink);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.put(&[v]);
    }

    fn u16(&mut self, v: u16) {
        self.0.put(&v.to_be_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.0.put(&v.to_be_bytes());
    }

    fn varint(&mut self, mut v: usize) -> Result<(), EncodeError> {
        if v > MAX_VARINT {
            return Err(EncodeError::PacketTooLarge(v));
        }
        loop {
            let byte = (v & 0x7F) as u8;
            v >>= 7;
            if v == 0 {
                self.u8(byte);
                return Ok(());
            }
            self.u8(byte | 0x80);
        }
    }

    fn binary(&mut self, field: &'static str, bytes: &[u8]) -> Result<(), EncodeError> {
        let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::FieldTooLong {
            field,
            len: bytes.len(),
        })?;
        self.u16(len);
        self.0.put(bytes);
        Ok(())
    }

    fn string(&mut self, field: &'static str, s: &str) -> Result<(), EncodeError> {
        self.binary(field, s.as_bytes())
    }

    fn pkid(&mut self, pkid: u16, packet: &'static str) -> Result<(), EncodeError> {
        if pkid == 0 {
            return Err(EncodeError::PacketIdZero(packet));
        }
        self.u16(pkid);
        Ok(())
    }

    /// A property section: its length, then what `write` writes (run twice, to size it).
    fn props(
        &mut self,
        write: impl Fn(&mut Writer<'_>) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        let mut counter = Counter(0);
        write(&mut Writer(&mut counter))?;
        self.varint(counter.0)?;
        write(self)
    }

    fn prop_u8(&mut self, id: u8, v: Option<u8>) {
        if let Some(v) = v {
            self.u8(id);
            self.u8(v);
        }
    }

    fn prop_u16(&mut self, id: u8, v: Option<u16>) {
        if let Some(v) = v {
            self.u8(id);
            self.u16(v);
        }
    }

    fn prop_u32(&mut self, id: u8, v: Option<u32>) {
        if let Some(v) = v {
            self.u8(id);
            self.u32(v);
        }
    }

    fn prop_string(
        &mut self,
        id: u8,
        field: &'static str,
        v: Option<&str>,
    ) -> Result<(), EncodeError> {
        if let Some(v) = v {
            self.u8(id);
            self.string(field, v)?;
        }
        Ok(())
    }

    fn prop_binary(
        &mut self,
        id: u8,
        field: &'static str,
        v: Option<&[u8]>,
    ) -> Result<(), EncodeError> {
        if let Some(v) = v {
            self.u8(id);
            self.binary(field, v)?;
        }
        Ok(())
    }

    fn user_properties(&mut self, props: &UserProperties) -> Result<(), EncodeError> {
        for (key, value) in props {
            self.u8(prop::USER_PROPERTY);
            self.string("user property name", key)?;
            self.string("user property value", value)?;
        }
        Ok(())
    }

    fn subscription_identifier(&mut self, id: u32) -> Result<(), EncodeError> {
        if id == 0 || id as usize > MAX_VARINT {
            return Err(EncodeError::Invalid(
                "subscription identifier outside 1..=268435455",
            ));
        }
        self.u8(prop::SUBSCRIPTION_IDENTIFIER);
        self.varint(id as usize)
    }

    fn message_properties(&mut self, p: &MessageProperties) -> Result<(), EncodeError> {
        self.prop_u8(prop::PAYLOAD_FORMAT_INDICATOR, p.payload_format_indicator);
        self.prop_u32(prop::MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval);
        self.prop_string(
            prop::CONTENT_TYPE,
            "content type",
            p.content_type.as_deref(),
        )?;
        self.prop_string(
            prop::RESPONSE_TOPIC,
            "response topic",
            p.response_topic.as_deref(),
        )?;
        self.prop_binary(
            prop::CORRELATION_DATA,
            "correlation data",
            p.correlation_data.as_deref(),
        )?;
        self.user_properties(&p.user_properties)
    }
}

/// Variable header and payload of `packet` (everything after the fixed header).
fn write_body(packet: &Packet, v5: bool, w: &mut Writer<'_>) -> Result<(), EncodeError> {
    match packet {
        Packet::Connect(c) => write_connect(c, v5, w),
        Packet::ConnAck(c) => write_connack(c, v5, w),
        Packet::Publish(p) => write_publish(p, v5, w),
        Packet::PubAck(a) => write_ack(a, "PUBACK", v5, w),
        Packet::PubRec(a) => write_ack(a, "PUBREC", v5, w),
        Packet::PubRel(a) => write_ack(a, "PUBREL", v5, w),
        Packet::PubComp(a) => write_ack(a, "PUBCOMP", v5, w),
        Packet::Subscribe(s) => write_subscribe(s, v5, w),
        Packet::SubAck(s) => write_suback(s, v5, w),
        Packet::Unsubscribe(u) => write_unsubscribe(u, v5, w),
        Packet::UnsubAck(u) => write_unsuback(u, v5, w),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(d) => {
            // Reason code and property length always (`E0 02 rc 00` at least): rumqttc and
            // mqttbytes refuse the shorter forms the specification allows.
            w.u8(d.code);
            w.props(|w| {
                w.prop_u32(prop::SESSION_EXPIRY_INTERVAL, d.session_expiry_interval);
                w.prop_string(
                    prop::REASON_STRING,
                    "reason string",
                    d.reason_string.as_deref(),
                )
            })
        }
        Packet::Auth { code } => {
            w.u8(*code);
            w.props(|_| Ok(()))
        }
    }
}

fn write_connect(c: &Connect, v5: bool, w: &mut Writer<'_>) -> Result<(), EncodeError> {
    if !v5 && c.password.is_some() && c.username.is_none() {
        return Err(EncodeError::Invalid(
            "3.1.1 CONNECT with a password but no user name",
        ));
    }
    w.string("protocol name", "MQTT")?;
    w.u8(if v5 { 5 } else { 4 });
    let mut flags = 0;
    if c.clean_start {
        flags |= 0b0000_0010;
    }
    if let Some(will) = &c.will {
        flags |= 0b0000_0100 | (will.qos as u8) << 3;
        if will.retain {
            flags |= 0b0010_0000;
        }
    }
    if c.password.is_some() {
        flags |= 0b0100_0000;
    }
    if c.username.is_some() {
        flags |= 0b1000_0000;
    }
    w.u8(flags);
    w.u16(c.keep_alive);
    if v5 {
        w.props(|w| {
            w.prop_u32(prop::SESSION_EXPIRY_INTERVAL, c.session_expiry_interval);
            w.prop_u16(prop::RECEIVE_MAXIMUM, c.receive_maximum);
            w.prop_u32(prop::MAXIMUM_PACKET_SIZE, c.maximum_packet_size);
            w.prop_u16(prop::TOPIC_ALIAS_MAXIMUM, c.topic_alias_maximum);
            w.prop_u8(
                prop::REQUEST_RESPONSE_INFORMATION,
                c.request_response_information,
            );
            w.prop_u8(
                prop::REQUEST_PROBLEM_INFORMATION,
                c.request_problem_information,
            );
            w.prop_string(
                prop::AUTHENTICATION_METHOD,
                "authentication method",
                c.authentication_method.as_deref(),
            )?;
            w.user_properties(&c.user_properties)
        })?;
    }
    w.string("client identifier", &c.client_id)?;
    if let Some(will) = &c.will {
        if v5 {
            w.props(|w| {
                if will.delay_interval != 0 {
                    w.prop_u32(prop::WILL_DELAY_INTERVAL, Some(will.delay_interval));
                }
                w.message_properties(&will.properties)
            })?;
        }
        w.string("will topic", &will.topic)?;
        w.binary("will payload", &will.payload)?;
    }
    if let Some(username) = &c.username {
        w.string("user name", username)?;
    }
    if let Some(password) = &c.password {
        w.binary("password", password)?;
    }
    Ok(())
}

/// A 5.0 CONNACK reason code as a 3.1.1 return code.
fn v4_connack_code(code: u8) -> u8 {
    match code {
        reason::SUCCESS => 0,
        reason::UNSUPPORTED_PROTOCOL_VERSION => 1,
        reason::CLIENT_ID_NOT_VALID => 2,
        reason::SERVER_UNAVAILABLE | reason::SERVER_BUSY => 3,
        reason::BAD_USERNAME_OR_PASSWORD => 4,
        reason::NOT_AUTHORIZED | reason::BAD_AUTH_METHOD => 5,
        // 3.1.1 has nothing closer for any other refusal.
        _ => 3,
    }
}

fn write_connack(c: &ConnAck, v5: bool, w: &mut Writer<'_>) -> Result<(), EncodeError> {
    w.u8(u8::from(c.session_present && c.code == reason::SUCCESS));
    if !v5 {
        w.u8(v4_connack_code(c.code));
        return Ok(());
    }
    w.u8(c.code);
    w.props(|w| {
        w.prop_u32(prop::SESSION_EXPIRY_INTERVAL, c.session_expiry_interval);
        w.prop_u16(prop::RECEIVE_MAXIMUM, c.receive_maximum);
        w.prop_u8(prop::MAXIMUM_QOS, c.maximum_qos);
        w.prop_u8(prop::RETAIN_AVAILABLE, c.retain_available);
        w.prop_u32(prop::MAXIMUM_PACKET_SIZE, c.maximum_packet_size);
        w.prop_string(
            prop::ASSIGNED_CLIENT_IDENTIFIER,
            "assigned client identifier",
            c.assigned_client_identifier.as_deref(),
        )?;
        w.prop_u16(prop::TOPIC_ALIAS_MAXIMUM, c.topic_alias_maximum);
        w.prop_string(
            prop::REASON_STRING,
            "reason string",
            c.reason_string.as_deref(),
        )?;
        w.prop_u8(
            prop::WILDCARD_SUBSCRIPTION_AVAILABLE,
            c.wildcard_subscription_available,
        );
        w.prop_u8(
            prop::SUBSCRIPTION_IDENTIFIERS_AVAILABLE,
            c.subscription_identifiers_available,
        );
        w.prop_u8(
            prop::SHARED_SUBSCRIPTION_AVAILABLE,
            c.shared_subscription_available,
        );
        w.prop_u16(prop::SERVER_KEEP_ALIVE, c.server_keep_alive);
        w.user_properties(&c.user_properties)
    })
}

fn write_publish(p: &Publish, v5: bool, w: &mut Writer<'_>) -> Result<(), EncodeError> {
    w.string("topic name", &p.topic)?;
    if p.qos != QoS::AtMostOnce {
        w.pkid(p.pkid, "PUBLISH")?;
    }
    if v5 {
        w.props(|w| {
            if p.topic_alias == Some(0) {
                return Err(EncodeError::Invalid("topic alias 0"));
            }
            w.prop_u16(prop::TOPIC_ALIAS, p.topic_alias);
            for &id in &p.subscription_identifiers {
                w.subscription_identifier(id)?;
            }
            w.message_properties(&p.properties)
        })?;
    }
    w.0.put(&p.payload);
    Ok(())
}

fn write_ack(
    a: &Ack,
    packet: &'static str,
    v5: bool,
    w: &mut Writer<'_>,
) -> Result<(), EncodeError> {
    w.pkid(a.pkid, packet)?;
    // Shortest 5.0 form: nothing after the packet id for success without properties.
    if v5 && (a.code != reason::SUCCESS || a.reason_string.is_some()) {
        w.u8(a.code);
        if a.reason_string.is_some() {
            w.props(|w| {
                w.prop_string(
                    prop::REASON_STRING,
                    "reason string",
                    a.reason_string.as_deref(),
                )
            })?;
        }
    }
    Ok(())
}

fn write_subscribe(s: &Subscribe, v5: bool, w: &mut Writer<'_>) -> Result<(), EncodeError> {
    if s.filters.is_empty() {
        return Err(EncodeError::Invalid("SUBSCRIBE without topic filters"));
    }
    w.pkid(s.pkid, "SUBSCRIBE")?;
    if v5 {
        w.props(|w| {
            if let Some(id) = s.subscription_identifier {
                w.subscription_identifier(id)?;
            }
            w.user_properties(&s.user_properties)
        })?;
    }
    for f in &s.filters {
        w.string("topic filter", &f.filter)?;
        let mut options = f.qos as u8;
        if v5 {
            options |= u8::from(f.no_local) << 2
                | u8::from(f.retain_as_published) << 3
                | (f.retain_handling as u8) << 4;
        }
        w.u8(options);
    }
    Ok(())
}

fn write_suback(s: &SubAck, v5: bool, w: &mut Writer<'_>) -> Result<(), EncodeError> {
    if s.codes.is_empty() {
        return Err(EncodeError::Invalid("SUBACK without return codes"));
    }
    w.pkid(s.pkid, "SUBACK")?;
    if v5 {
        w.props(|w| {
            w.prop_string(
                prop::REASON_STRING,
                "reason string",
                s.reason_string.as_deref(),
            )
        })?;
        w.0.put(&s.codes);
    } else {
        for &code in &s.codes {
            // 3.1.1 has a single failure code.
            w.u8(if code <= 2 { code } else { 0x80 });
        }
    }
    Ok(())
}

fn write_unsubscribe(u: &Unsubscribe, v5: bool, w: &mut Writer<'_>) -> Result<(), EncodeError> {
    if u.filters.is_empty() {
        return Err(EncodeError::Invalid("UNSUBSCRIBE without topic filters"));
    }
    w.pkid(u.pkid, "UNSUBSCRIBE")?;
    if v5 {
        w.props(|_| Ok(()))?;
    }
    for filter in &u.filters {
        w.string("topic filter", filter)?;
    }
    Ok(())
}

fn write_unsuback(u: &UnsubAck, v5: bool, w: &mut Writer<'_>) -> Result<(), EncodeError> {
    w.pkid(u.pkid, "UNSUBACK")?;
    if v5 {
        if u.codes.is_empty() {
            return Err(EncodeError::Invalid("5.0 UNSUBACK without reason codes"));
        }
        w.props(|_| Ok(()))?;
        w.0.put(&u.codes);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1 << 20;
    const V4: Protocol = Protocol::V4;
    const V5: Protocol = Protocol::V5;

    fn enc(packet: &Packet, protocol: Protocol) -> BytesMut {
        let mut out = BytesMut::new();
        let n = encode(packet, protocol, &mut out).unwrap();
        assert_eq!(n, out.len());
        out
    }

    fn dec(bytes: &[u8], protocol: Protocol) -> Result<Option<Packet>, DecodeError> {
        decode(&mut BytesMut::from(bytes), protocol, MAX)
    }

    /// Decodes one whole packet and checks it used every byte.
    fn dec_one(bytes: &[u8], protocol: Protocol) -> Packet {
        let mut buf = BytesMut::from(bytes);
        let packet = decode(&mut buf, protocol, MAX).unwrap().unwrap();
        assert!(buf.is_empty(), "{} bytes left", buf.len());
        packet
    }

    fn dec_connect(bytes: &[u8]) -> Result<Option<Connect>, DecodeError> {
        decode_connect(&mut BytesMut::from(bytes), MAX)
    }

    /// A frame around `body`, with a correct remaining length.
    fn frame(byte1: u8, body: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_u8(byte1);
        Writer(&mut out).varint(body.len()).unwrap();
        out.extend_from_slice(body);
        out.to_vec()
    }

    /// A CONNECT frame: "MQTT", `level`, `flags`, keep alive 60, then `rest` (for level 5,
    /// `rest` starts with the property length).
    fn connect_frame(level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, flags, 0, 60];
        body.extend_from_slice(rest);
        frame(0x10, &body)
    }

    #[track_caller]
    fn assert_code<T: std::fmt::Debug>(result: Result<T, DecodeError>, code: u8) {
        match result {
            Err(e) => assert_eq!(e.reason_code(), code, "wrong error: {e}"),
            Ok(v) => panic!("expected error {code:#04x}, got {v:?}"),
        }
    }

    #[track_caller]
    fn assert_malformed<T: std::fmt::Debug>(result: Result<T, DecodeError>) {
        assert_code(result, reason::MALFORMED_PACKET);
    }

    #[track_caller]
    fn assert_protocol<T: std::fmt::Debug>(result: Result<T, DecodeError>) {
        assert_code(result, reason::PROTOCOL_ERROR);
    }

    fn message_properties() -> MessageProperties {
        MessageProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(3600),
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(&[0, 1, 2, 0xFF])),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "v2".into())],
        }
    }

    fn connect(protocol: Protocol) -> Connect {
        Connect {
            protocol,
            keep_alive: 30,
            client_id: "client-1".into(),
            clean_start: true,
            will: None,
            username: None,
            password: None,
            session_expiry_interval: (protocol == V5).then_some(0),
            receive_maximum: None,
            maximum_packet_size: None,
            topic_alias_maximum: None,
            request_response_information: None,
            request_problem_information: None,
            authentication_method: None,
            user_properties: Vec::new(),
        }
    }

    fn full_connect(protocol: Protocol) -> Connect {
        let v5 = protocol == V5;
        Connect {
            clean_start: false,
            will: Some(Will {
                topic: "clients/1/status".into(),
                payload: Bytes::from_static(b"offline"),
                qos: QoS::AtLeastOnce,
                retain: true,
                delay_interval: if v5 { 30 } else { 0 },
                properties: if v5 {
                    message_properties()
                } else {
                    MessageProperties::default()
                },
            }),
            username: Some("user".into()),
            // Binary, not UTF-8: mqttbytes refuses this.
            password: Some(Bytes::from_static(&[0xFF, 0xFE, 0x00, b'p'])),
            session_expiry_interval: v5.then_some(7200),
            receive_maximum: v5.then_some(20),
            maximum_packet_size: v5.then_some(65_536),
            topic_alias_maximum: v5.then_some(10),
            request_response_information: v5.then_some(1),
            request_problem_information: v5.then_some(0),
            authentication_method: v5.then(|| "SCRAM-SHA-1".into()),
            user_properties: if v5 {
                vec![("a".into(), "b".into())]
            } else {
                Vec::new()
            },
            ..connect(protocol)
        }
    }

    fn publish(qos: QoS, pkid: u16) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: "sensors/1/temp".into(),
            pkid,
            payload: Bytes::from_static(b"21.5"),
            topic_alias: None,
            subscription_identifiers: Vec::new(),
            properties: MessageProperties::default(),
        }
    }

    fn filter(filter: &str, qos: QoS) -> SubscribeFilter {
        SubscribeFilter {
            filter: filter.into(),
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::OnSubscribe,
        }
    }

    /// Every packet a client may send, as the decoder returns it.
    fn client_packets(protocol: Protocol) -> Vec<Packet> {
        let v5 = protocol == V5;
        let ack_with_code = |pkid, code| Ack {
            pkid,
            code: if v5 { code } else { 0 },
            reason_string: v5.then(|| "why".into()),
        };
        let mut packets = vec![
            Packet::Publish(publish(QoS::AtMostOnce, 0)),
            Packet::Publish(Publish {
                dup: true,
                retain: true,
                payload: Bytes::new(),
                ..publish(QoS::AtLeastOnce, 1)
            }),
            Packet::Publish(Publish {
                payload: Bytes::from(vec![0xAB; 300]),
                ..publish(QoS::ExactlyOnce, u16::MAX)
            }),
            Packet::PubAck(Ack::new(1, 0)),
            Packet::PubRec(Ack::new(2, 0)),
            Packet::PubRel(Ack::new(3, 0)),
            Packet::PubComp(Ack::new(4, 0)),
            Packet::PubAck(ack_with_code(5, reason::NO_MATCHING_SUBSCRIBERS)),
            Packet::PubRec(ack_with_code(6, reason::QUOTA_EXCEEDED)),
            Packet::PubRel(ack_with_code(7, reason::PACKET_ID_NOT_FOUND)),
            Packet::PubComp(ack_with_code(8, reason::PACKET_ID_NOT_FOUND)),
            Packet::Subscribe(Subscribe {
                pkid: 9,
                filters: vec![
                    filter("a/+/c", QoS::AtMostOnce),
                    filter("d/#", QoS::ExactlyOnce),
                ],
                subscription_identifier: None,
                user_properties: Vec::new(),
            }),
            Packet::Unsubscribe(Unsubscribe {
                pkid: 10,
                filters: vec!["a/+/c".into(), "d/#".into()],
            }),
            Packet::PingReq,
        ];
        if v5 {
            packets.extend([
                Packet::Publish(Publish {
                    topic: String::new(),
                    topic_alias: Some(3),
                    properties: message_properties(),
                    ..publish(QoS::AtLeastOnce, 11)
                }),
                Packet::Subscribe(Subscribe {
                    pkid: 12,
                    filters: vec![
                        SubscribeFilter {
                            no_local: true,
                            retain_as_published: true,
                            retain_handling: RetainHandling::Never,
                            ..filter("x/y", QoS::AtLeastOnce)
                        },
                        SubscribeFilter {
                            retain_handling: RetainHandling::OnNewSubscribe,
                            ..filter("$share/g/z", QoS::ExactlyOnce)
                        },
                    ],
                    subscription_identifier: Some(268_435_455),
                    user_properties: vec![("u".into(), "p".into())],
                }),
                Packet::Disconnect(Disconnect::default()),
                Packet::Disconnect(Disconnect {
                    code: reason::DISCONNECT_WITH_WILL,
                    session_expiry_interval: Some(60),
                    reason_string: Some("bye".into()),
                }),
                Packet::Auth { code: 0x18 },
            ]);
        }
        packets
    }

    // --- round trips ----------------------------------------------------------------------

    #[test]
    fn round_trip_connect() {
        let v5_password_only = Connect {
            password: Some(Bytes::from_static(b"secret")),
            ..connect(V5)
        };
        let empty_user = Connect {
            username: Some(String::new()),
            password: Some(Bytes::new()),
            ..connect(V4)
        };
        for (protocol, c) in [
            (V4, connect(V4)),
            (V4, full_connect(V4)),
            (V4, empty_user),
            (V5, connect(V5)),
            (V5, full_connect(V5)),
            (V5, v5_password_only),
        ] {
            let bytes = enc(&Packet::Connect(c.clone()), protocol);
            let mut buf = bytes.clone();
            assert_eq!(decode_connect(&mut buf, MAX).unwrap(), Some(c));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn round_trip_client_packets() {
        for protocol in [V4, V5] {
            for packet in client_packets(protocol) {
                let bytes = enc(&packet, protocol);
                assert_eq!(dec_one(&bytes, protocol), packet, "{protocol:?}");
            }
        }
    }

    #[test]
    fn byte_at_a_time() {
        /// Feeds `bytes` one at a time: `Ok(None)` with the buffer intact until the last.
        fn feed<T>(bytes: &[u8], mut decode: impl FnMut(&mut BytesMut) -> Option<T>) -> T {
            let mut buf = BytesMut::new();
            for (n, &b) in bytes[..bytes.len() - 1].iter().enumerate() {
                buf.put_u8(b);
                assert!(decode(&mut buf).is_none(), "complete after {} bytes", n + 1);
                assert_eq!(&buf[..], &bytes[..=n], "Ok(None) changed the buffer");
            }
            buf.put_u8(bytes[bytes.len() - 1]);
            let decoded = decode(&mut buf).expect("complete");
            assert!(buf.is_empty());
            decoded
        }
        for protocol in [V4, V5] {
            let connect = full_connect(protocol);
            let bytes = enc(&Packet::Connect(connect.clone()), protocol);
            let got = feed(&bytes, |buf| decode_connect(buf, MAX).unwrap());
            assert_eq!(got, connect);
            for packet in client_packets(protocol) {
                let bytes = enc(&packet, protocol);
                let got = feed(&bytes, |buf| decode(buf, protocol, MAX).unwrap());
                assert_eq!(got, packet);
            }
        }
    }

    #[test]
    fn consumes_exactly_one_frame() {
        let mut buf = enc(&Packet::Publish(publish(QoS::AtLeastOnce, 1)), V5);
        buf.extend_from_slice(&enc(&Packet::PingReq, V5));
        buf.extend_from_slice(&[0x30]); // the start of a third packet
        assert!(matches!(
            decode(&mut buf, V5, MAX),
            Ok(Some(Packet::Publish(_)))
        ));
        assert_eq!(decode(&mut buf, V5, MAX).unwrap(), Some(Packet::PingReq));
        assert_eq!(decode(&mut buf, V5, MAX).unwrap(), None);
        assert_eq!(&buf[..], &[0x30]);
    }

    // --- framing --------------------------------------------------------------------------

    #[test]
    fn too_large_is_detected_from_the_fixed_header() {
        // Only the fixed header of a 2 MiB PUBLISH has arrived.
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0x7F][..]);
        match decode(&mut buf, V4, 1000) {
            Err(e @ DecodeError::TooLarge { size, max: 1000 }) => {
                assert_eq!(size, 4 + 2_097_151);
                assert_eq!(e.reason_code(), reason::PACKET_TOO_LARGE);
            }
            other => panic!("{other:?}"),
        }
        let mut buf = BytesMut::from(&[0x10, 0xFF, 0x7F][..]);
        assert_code(decode_connect(&mut buf, 1000), reason::PACKET_TOO_LARGE);
    }

    #[test]
    fn max_size_counts_the_whole_packet() {
        let bytes = enc(&Packet::Publish(publish(QoS::AtMostOnce, 0)), V4);
        let size = bytes.len();
        assert!(decode(&mut bytes.clone(), V4, size).unwrap().is_some());
        assert_code(
            decode(&mut bytes.clone(), V4, size - 1),
            reason::PACKET_TOO_LARGE,
        );
    }

    #[test]
    fn remaining_length_over_four_bytes_is_malformed() {
        assert_malformed(dec(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], V4));
        // Known as soon as the fourth length byte has its continuation bit set.
        assert_malformed(dec(&[0x30, 0x80, 0x80, 0x80, 0x80], V5));
        assert_malformed(dec_connect(&[0x10, 0x80, 0x80, 0x80, 0x80]));
        assert!(dec(&[0x30, 0x80, 0x80, 0x80], V4).unwrap().is_none());
    }

    #[test]
    fn fixed_header_flags() {
        let pkid = [0, 1];
        let sub = [0, 1, 0, 1, b'a', 0];
        for (protocol, bytes) in [
            (V4, frame(0x60, &pkid)),               // PUBREL must be 0010
            (V5, frame(0x63, &pkid)),               // PUBREL must be 0010
            (V4, frame(0x80, &sub)),                // SUBSCRIBE must be 0010
            (V4, frame(0xA0, &sub[..5])),           // UNSUBSCRIBE must be 0010
            (V4, frame(0x42, &pkid)),               // PUBACK must be 0000
            (V4, frame(0x51, &pkid)),               // PUBREC
            (V4, frame(0x78, &pkid)),               // PUBCOMP
            (V4, frame(0xC1, &[])),                 // PINGREQ
            (V4, frame(0xE2, &[])),                 // DISCONNECT
            (V5, frame(0xF1, &[])),                 // AUTH
            (V4, frame(0x36, &[0, 1, b'a', 0, 1])), // PUBLISH QoS 3
            (V5, frame(0x38, &[0, 1, b'a', 0])),    // PUBLISH QoS 0 with DUP
            (V4, frame(0x00, &[])),                 // reserved type 0
        ] {
            assert_malformed(dec(&bytes, protocol));
            // Refused from the fixed header alone, before the body is buffered.
            let header_len = if bytes.len() > 1 { 2 } else { 1 };
            assert_malformed(dec(&bytes[..header_len], protocol));
        }
        assert_malformed(dec_connect(&frame(0x11, &[0; 10])));
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        assert_malformed(dec(&frame(0xC0, &[0]), V4)); // PINGREQ with a body
        assert_malformed(dec(&frame(0xC0, &[0]), V5));
        assert_malformed(dec(&frame(0xE0, &[0]), V4)); // 3.1.1 DISCONNECT with a body
        assert_malformed(dec(&frame(0x40, &[0, 1, 0]), V4)); // 3.1.1 PUBACK with a code
        assert_malformed(dec(&frame(0x40, &[0, 1, 0, 0, 9]), V5)); // after the properties
        let mut connect = enc(&Packet::Connect(connect(V4)), V4).to_vec();
        connect[1] += 1;
        connect.push(0);
        assert_malformed(dec_connect(&connect));
    }

    // --- CONNECT checks -------------------------------------------------------------------

    #[test]
    fn connect_flag_checks() {
        let id = [0, 1, b'c'];
        // Reserved bit.
        assert_malformed(dec_connect(&connect_frame(4, 0b0000_0011, &id)));
        assert_malformed(dec_connect(&connect_frame(
            5,
            0b0000_0001,
            &[0, 0, 1, b'c'],
        )));
        // Will QoS / will retain without the will flag.
        assert_malformed(dec_connect(&connect_frame(4, 0b0000_1000, &id)));
        assert_malformed(dec_connect(&connect_frame(4, 0b0010_0000, &id)));
        // Will QoS 3.
        let will = [0, 1, b'c', 0, 1, b't', 0, 1, b'p'];
        assert_malformed(dec_connect(&connect_frame(4, 0b0001_1100, &will)));
        assert!(dec_connect(&connect_frame(4, 0b0001_0100, &will))
            .unwrap()
            .is_some());
        // 3.1.1: password without user name; 5.0 allows it.
        let password = [0, 1, b'c', 0, 2, b'p', b'w'];
        assert_malformed(dec_connect(&connect_frame(4, 0b0100_0000, &password)));
        let mut v5 = vec![0];
        v5.extend_from_slice(&password);
        let c = dec_connect(&connect_frame(5, 0b0100_0000, &v5))
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.username, c.password),
            (None, Some(Bytes::from_static(b"pw")))
        );
    }

    #[test]
    fn connect_protocol_name_and_level() {
        let unsupported = |bytes: Vec<u8>, name: &str, level: u8| match dec_connect(&bytes) {
            Err(e @ DecodeError::UnsupportedProtocol { .. }) => {
                assert_eq!(e.reason_code(), reason::UNSUPPORTED_PROTOCOL_VERSION);
                let DecodeError::UnsupportedProtocol { name: n, level: l } = e else {
                    unreachable!()
                };
                assert_eq!((n.as_str(), l), (name, level));
            }
            other => panic!("{other:?}"),
        };
        // MQTT 3.1.
        let mut body = vec![0, 6];
        body.extend_from_slice(b"MQIsdp");
        body.extend_from_slice(&[3, 2, 0, 60, 0, 1, b'c']);
        unsupported(frame(0x10, &body), "MQIsdp", 3);
        unsupported(connect_frame(3, 2, &[0, 1, b'c']), "MQTT", 3);
        unsupported(connect_frame(6, 2, &[0, 0, 1, b'c']), "MQTT", 6);
        let mut body = vec![0, 4];
        body.extend_from_slice(b"MQTX");
        body.extend_from_slice(&[4, 2, 0, 60, 0, 1, b'c']);
        unsupported(frame(0x10, &body), "MQTX", 4);
        // Too short to hold a level at all.
        assert_malformed(dec_connect(&frame(0x10, &[0, 4, b'M', b'Q', b'T', b'T'])));
    }

    #[test]
    fn connect_v4_has_no_session_expiry_and_v5_defaults_to_zero() {
        let c = dec_connect(&connect_frame(4, 0b10, &[0, 1, b'c']))
            .unwrap()
            .unwrap();
        assert_eq!(c.protocol, V4);
        assert_eq!(c.session_expiry_interval, None);
        let c = dec_connect(&connect_frame(5, 0b10, &[0, 0, 1, b'c']))
            .unwrap()
            .unwrap();
        assert_eq!(c.protocol, V5);
        assert_eq!(c.session_expiry_interval, Some(0));
        // An empty client id is the engine's decision, not the codec's.
        let c = dec_connect(&connect_frame(4, 0b10, &[0, 0]))
            .unwrap()
            .unwrap();
        assert_eq!(c.client_id, "");
    }

    #[test]
    fn connect_v5_property_checks() {
        let with_props = |props: &[u8]| {
            let mut rest = vec![props.len() as u8];
            rest.extend_from_slice(props);
            rest.extend_from_slice(&[0, 1, b'c']);
            dec_connect(&connect_frame(5, 0b10, &rest))
        };
        assert!(with_props(&[0x11, 0, 0, 0, 5]).unwrap().is_some());
        assert_protocol(with_props(&[0x11, 0, 0, 0, 5, 0x11, 0, 0, 0, 6])); // repeated
        assert_protocol(with_props(&[0x21, 0, 0])); // receive maximum 0
        assert_protocol(with_props(&[0x27, 0, 0, 0, 0])); // maximum packet size 0
        assert_protocol(with_props(&[0x19, 2])); // request response information 2
        assert_protocol(with_props(&[0x16, 0, 1, 9])); // auth data without method
        assert_malformed(with_props(&[0x23, 0, 1])); // topic alias is not a CONNECT property
        assert_malformed(with_props(&[0x7F, 0])); // unknown identifier
        assert_malformed(with_props(&[0x11, 0, 0])); // value cut short by the section
                                                     // Will properties: delay interval maps to Will::delay_interval.
        let mut rest = vec![0, 0, 1, b'c', 5, 0x18, 0, 0, 1, 0];
        rest.extend_from_slice(&[0, 1, b't', 0, 0]);
        let c = dec_connect(&connect_frame(5, 0b0000_0110, &rest))
            .unwrap()
            .unwrap();
        assert_eq!(c.will.unwrap().delay_interval, 256);
        let mut rest = vec![0, 0, 1, b'c', 3, 0x23, 0, 1];
        rest.extend_from_slice(&[0, 1, b't', 0, 0]);
        assert_malformed(dec_connect(&connect_frame(5, 0b0000_0110, &rest)));
    }

    // --- later packets ----------------------------------------------------------------------

    #[test]
    fn first_packet_must_be_connect_and_only_once() {
        assert_protocol(dec_connect(&frame(0x30, &[0, 1, b'a'])));
        assert_protocol(dec_connect(&[0xC0, 0x00]));
        for protocol in [V4, V5] {
            let connect = enc(&Packet::Connect(connect(protocol)), protocol);
            assert_protocol(dec(&connect, protocol));
            assert_protocol(dec(&connect[..2], protocol)); // from the header alone
        }
    }

    #[test]
    fn server_only_packets_are_protocol_errors() {
        for protocol in [V4, V5] {
            assert_protocol(dec(&[0x20, 0x02, 0x00, 0x00], protocol)); // CONNACK
            assert_protocol(dec(&[0x90, 0x03, 0x00, 0x01, 0x00], protocol)); // SUBACK
            assert_protocol(dec(&[0xB0, 0x02, 0x00, 0x01], protocol)); // UNSUBACK
            assert_protocol(dec(&[0xD0, 0x00], protocol)); // PINGRESP
        }
    }

    #[test]
    fn packet_id_zero_is_a_protocol_error() {
        for protocol in [V4, V5] {
            let props: &[u8] = if protocol == V5 { &[0] } else { &[] };
            let mut publish = vec![0, 1, b'a', 0, 0];
            publish.extend_from_slice(props);
            assert_protocol(dec(&frame(0x32, &publish), protocol));
            assert_protocol(dec(&frame(0x34, &publish), protocol));
            for byte1 in [0x40, 0x50, 0x62, 0x70] {
                assert_protocol(dec(&frame(byte1, &[0, 0]), protocol));
            }
            let mut sub = vec![0, 0];
            sub.extend_from_slice(props);
            sub.extend_from_slice(&[0, 1, b'a', 0]);
            assert_protocol(dec(&frame(0x82, &sub), protocol));
            assert_protocol(dec(&frame(0xA2, &sub[..sub.len() - 1]), protocol));
        }
    }

    #[test]
    fn subscribe_checks() {
        // 3.1.1: payload is filter + options byte.
        let v4 = |payload: &[u8]| {
            let mut body = vec![0, 1];
            body.extend_from_slice(payload);
            dec(&frame(0x82, &body), V4)
        };
        assert_protocol(v4(&[])); // no filters
        assert_malformed(v4(&[0, 1, b'a', 3])); // QoS 3
        assert_malformed(v4(&[0, 1, b'a', 0b0000_0100])); // 5.0 option bits are reserved
        assert_malformed(v4(&[0, 1, b'a'])); // options byte missing
        assert!(v4(&[0, 1, b'a', 2]).unwrap().is_some());

        let v5 = |payload: &[u8]| {
            let mut body = vec![0, 1];
            body.extend_from_slice(payload);
            dec(&frame(0x82, &body), V5)
        };
        assert_protocol(v5(&[0])); // no filters
        assert_malformed(v5(&[0, 0, 1, b'a', 3])); // QoS 3
        assert_malformed(v5(&[0, 0, 1, b'a', 0b0100_0000])); // reserved bits
        assert_protocol(v5(&[0, 0, 1, b'a', 0b0011_0000])); // retain handling 3
        assert_protocol(v5(&[2, 0x0B, 0, 0, 1, b'a', 0])); // subscription identifier 0
        assert_protocol(v5(&[4, 0x0B, 1, 0x0B, 2, 0, 1, b'a', 0])); // repeated
        assert_malformed(v5(&[5, 0x0B, 0x80, 0x80, 0x80, 0x80, 0, 1, b'a', 0])); // 5-byte varint
        assert_malformed(v5(&[2, 0x1F, 0, 0, 1, b'a', 0])); // reason string is not allowed
        let Packet::Subscribe(s) = v5(&[3, 0x0B, 0xFF, 0x7F, 0, 1, b'a', 0]).unwrap().unwrap()
        else {
            panic!()
        };
        assert_eq!(s.subscription_identifier, Some(16_383));
    }

    #[test]
    fn unsubscribe_checks() {
        assert_protocol(dec(&frame(0xA2, &[0, 1]), V4));
        assert_protocol(dec(&frame(0xA2, &[0, 1, 0]), V5));
        assert_malformed(dec(&frame(0xA2, &[0, 1, 0, 5, b'a']), V4)); // string runs past the end
        assert_malformed(dec(&frame(0xA2, &[0, 1, 1, 0x26, 0, 1, b'a']), V5));
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        // 0xC3 0x28 is an invalid sequence; 0xED 0xA0 0x80 encodes a surrogate.
        for bad in [&[0xC3, 0x28][..], &[0xED, 0xA0, 0x80], &[b'a', 0, b'b']] {
            let string = |s: &[u8]| {
                let mut out = vec![0, s.len() as u8];
                out.extend_from_slice(s);
                out
            };
            let topic = string(bad);
            assert_malformed(dec(&frame(0x30, &topic), V4));
            let mut v5 = topic.clone();
            v5.push(0);
            assert_malformed(dec(&frame(0x30, &v5), V5));
            assert_malformed(dec_connect(&connect_frame(4, 2, &string(bad))));
            let mut sub = vec![0, 1];
            sub.extend_from_slice(&string(bad));
            sub.push(0);
            assert_malformed(dec(&frame(0x82, &sub), V4));
            assert_malformed(dec(&frame(0xA2, &sub[..sub.len() - 1]), V4));
            // In a user property.
            let mut props = vec![0, 1, b't', (bad.len() + 6) as u8, 0x26];
            props.extend_from_slice(&string(bad));
            props.extend_from_slice(&[0, 0]);
            assert_malformed(dec(&frame(0x30, &props), V5));
        }
    }

    #[test]
    fn publish_v5_property_checks() {
        let with_props = |props: &[u8]| {
            let mut body = vec![0, 1, b't', props.len() as u8];
            body.extend_from_slice(props);
            body.extend_from_slice(b"payload");
            dec(&frame(0x30, &body), V5)
        };
        let Packet::Publish(p) = with_props(&[0x23, 0, 7]).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!((p.topic_alias, &p.payload[..]), (Some(7), &b"payload"[..]));
        assert_protocol(with_props(&[0x23, 0, 0])); // topic alias 0
        assert_protocol(with_props(&[0x0B, 1])); // subscription identifier from a client
        assert_protocol(with_props(&[0x01, 2])); // payload format indicator 2
        assert_protocol(with_props(&[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2])); // repeated
        assert_malformed(with_props(&[0x11, 0, 0, 0, 1])); // session expiry in PUBLISH
                                                           // A property running past its section: mqttbytes reads on into the payload.
        let mut body = vec![0, 1, b't', 2, 0x26, 0, 1, b'a', 0, 1, b'b'];
        body.extend_from_slice(b"xy");
        assert_malformed(dec(&frame(0x30, &body), V5));
        // No property length at all.
        assert_malformed(dec(&frame(0x30, &[0, 1, b't']), V5));
        assert_malformed(dec(&frame(0x32, &[0, 1, b't', 0, 1]), V5));
    }

    #[test]
    fn disconnect_short_forms() {
        assert_eq!(
            dec_one(&[0xE0, 0x00], V5),
            Packet::Disconnect(Disconnect::default())
        );
        let d = dec_one(&[0xE0, 0x01, 0x8E], V5);
        assert_eq!(
            d,
            Packet::Disconnect(Disconnect {
                code: 0x8E,
                ..Disconnect::default()
            })
        );
        assert_eq!(
            dec_one(&[0xE0, 0x02, 0x04, 0x00], V5),
            Packet::Disconnect(Disconnect {
                code: 0x04,
                ..Disconnect::default()
            })
        );
        assert_eq!(
            dec_one(&[0xE0, 0x00], V4),
            Packet::Disconnect(Disconnect::default())
        );
        // Server Reference is read and dropped; a property cut short is malformed.
        dec_one(&[0xE0, 0x06, 0x00, 0x04, 0x1C, 0, 1, b's'], V5);
        assert_malformed(dec(&[0xE0, 0x03, 0x00, 0x02, 0x11], V5));
    }

    #[test]
    fn auth() {
        assert_eq!(dec_one(&[0xF0, 0x00], V5), Packet::Auth { code: 0 });
        assert_eq!(
            dec_one(&[0xF0, 0x01, 0x18], V5),
            Packet::Auth { code: 0x18 }
        );
        let method = [0xF0, 0x08, 0x19, 0x06, 0x15, 0, 3, b'a', b'b', b'c'];
        assert_eq!(dec_one(&method, V5), Packet::Auth { code: 0x19 });
        assert_malformed(dec(&[0xF0, 0x00], V4));
    }

    #[test]
    fn v5_acks() {
        for byte1 in [0x40, 0x50, 0x62, 0x70] {
            let ok = |bytes: &[u8]| match dec_one(bytes, V5) {
                Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => a,
                other => panic!("{other:?}"),
            };
            assert_eq!(ok(&[byte1, 2, 0, 9]), Ack::new(9, 0));
            assert_eq!(ok(&[byte1, 3, 0, 9, 0]), Ack::new(9, 0));
            assert_eq!(ok(&[byte1, 4, 0, 9, 0, 0]), Ack::new(9, 0));
            let code = if byte1 == 0x40 || byte1 == 0x50 {
                0x10
            } else {
                0x92
            };
            assert_eq!(ok(&[byte1, 3, 0, 9, code]), Ack::new(9, code));
            let with_reason = [byte1, 8, 0, 9, code, 4, 0x1F, 0, 1, b'r'];
            assert_eq!(ok(&with_reason).reason_string.as_deref(), Some("r"));
            assert_protocol(dec(&[byte1, 3, 0, 9, 0x42], V5)); // not a reason code for it
            assert_malformed(dec(&[byte1, 6, 0, 9, 0, 2, 0x23, 0], V5)); // topic alias
        }
        // 3.1.1 acks are exactly 2 bytes.
        assert_eq!(
            dec_one(&[0x40, 2, 0, 9], V4),
            Packet::PubAck(Ack::new(9, 0))
        );
        assert_malformed(dec(&[0x40, 1, 0], V4));
    }

    // --- encoding -------------------------------------------------------------------------

    #[test]
    fn v4_connack_codes() {
        for (code, v4) in [
            (0x00, 0),
            (0x84, 1),
            (0x85, 2),
            (0x88, 3),
            (0x89, 3),
            (0x86, 4),
            (0x87, 5),
            (0x8C, 5),
            (0x80, 3),
            (0x9F, 3),
        ] {
            let ack = ConnAck {
                session_present: true,
                code,
                reason_string: Some("ignored on 3.1.1".into()),
                ..ConnAck::default()
            };
            let present = u8::from(code == 0);
            assert_eq!(&enc(&Packet::ConnAck(ack), V4)[..], &[0x20, 2, present, v4]);
        }
    }

    #[test]
    fn v4_suback_and_unsuback() {
        let suback = SubAck {
            pkid: 7,
            codes: vec![0, 1, 2, 0x80, 0x87, 0xA2],
            reason_string: Some("dropped".into()),
        };
        assert_eq!(
            &enc(&Packet::SubAck(suback), V4)[..],
            &[0x90, 8, 0, 7, 0, 1, 2, 0x80, 0x80, 0x80]
        );
        let unsuback = UnsubAck {
            pkid: 7,
            codes: vec![0, 0x11],
        };
        assert_eq!(
            &enc(&Packet::UnsubAck(unsuback.clone()), V4)[..],
            &[0xB0, 2, 0, 7]
        );
        assert_eq!(
            &enc(&Packet::UnsubAck(unsuback), V5)[..],
            &[0xB0, 5, 0, 7, 0, 0, 0x11]
        );
    }

    #[test]
    fn v5_disconnect_is_never_shorter_than_four_bytes() {
        let bytes = enc(&Packet::Disconnect(Disconnect::default()), V5);
        assert_eq!(&bytes[..], &[0xE0, 2, 0, 0]);
        let taken_over = Disconnect {
            code: reason::SESSION_TAKEN_OVER,
            ..Disconnect::default()
        };
        assert_eq!(
            &enc(&Packet::Disconnect(taken_over), V5)[..],
            &[0xE0, 2, 0x8E, 0]
        );
        assert_eq!(
            &enc(&Packet::Auth { code: 0x18 }, V5)[..],
            &[0xF0, 2, 0x18, 0]
        );
    }

    #[test]
    fn v4_has_no_disconnect_or_auth_to_send() {
        let mut out = BytesMut::from(&b"x"[..]);
        for packet in [
            Packet::Disconnect(Disconnect::default()),
            Packet::Auth { code: 0 },
        ] {
            assert_eq!(encode(&packet, V4, &mut out).unwrap(), 0);
        }
        assert_eq!(&out[..], b"x");
    }

    #[test]
    fn v5_ack_forms() {
        assert_eq!(
            &enc(&Packet::PubAck(Ack::new(1, 0)), V5)[..],
            &[0x40, 2, 0, 1]
        );
        assert_eq!(
            &enc(&Packet::PubRel(Ack::new(1, 0)), V5)[..],
            &[0x62, 2, 0, 1]
        );
        assert_eq!(
            &enc(&Packet::PubRec(Ack::new(1, 0x10)), V5)[..],
            &[0x50, 3, 0, 1, 0x10]
        );
        assert_eq!(
            &enc(&Packet::PubComp(Ack::new(1, 0x92)), V4)[..],
            &[0x70, 2, 0, 1]
        );
    }

    #[test]
    fn encode_errors_append_nothing() {
        let long = "x".repeat(70_000);
        let cases = [
            Packet::Publish(publish(QoS::AtLeastOnce, 0)),
            Packet::Publish(Publish {
                topic: long.clone(),
                ..publish(QoS::AtMostOnce, 0)
            }),
            Packet::Publish(Publish {
                dup: true,
                ..publish(QoS::AtMostOnce, 0)
            }),
            Packet::Publish(Publish {
                properties: MessageProperties {
                    user_properties: vec![("k".into(), long.clone())],
                    ..MessageProperties::default()
                },
                ..publish(QoS::AtLeastOnce, 1)
            }),
            Packet::Publish(Publish {
                subscription_identifiers: vec![1, 0],
                ..publish(QoS::AtLeastOnce, 1)
            }),
            Packet::Publish(Publish {
                subscription_identifiers: vec![268_435_456],
                ..publish(QoS::AtLeastOnce, 1)
            }),
            Packet::Publish(Publish {
                topic_alias: Some(0),
                ..publish(QoS::AtLeastOnce, 1)
            }),
            Packet::PubAck(Ack::new(0, 0)),
            Packet::SubAck(SubAck {
                pkid: 1,
                codes: Vec::new(),
                reason_string: None,
            }),
            Packet::UnsubAck(UnsubAck {
                pkid: 1,
                codes: Vec::new(),
            }),
            Packet::ConnAck(ConnAck {
                assigned_client_identifier: Some(long.clone()),
                ..ConnAck::default()
            }),
        ];
        for packet in &cases {
            let mut out = BytesMut::from(&b"keep"[..]);
            assert!(encode(packet, V5, &mut out).is_err(), "{packet:?}");
            assert_eq!(&out[..], b"keep");
        }
        let mut out = BytesMut::new();
        let err = encode(&cases[1], V4, &mut out).unwrap_err();
        assert!(
            matches!(err, EncodeError::FieldTooLong { len: 70_000, .. }),
            "{err}"
        );
        assert!(matches!(
            encode(&cases[0], V4, &mut out),
            Err(EncodeError::PacketIdZero("PUBLISH"))
        ));
        let password_only = Connect {
            password: Some(Bytes::from_static(b"pw")),
            ..connect(V4)
        };
        assert!(encode(&Packet::Connect(password_only), V4, &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn large_publish_uses_a_four_byte_length() {
        let p = Packet::Publish(Publish {
            payload: Bytes::from(vec![7; 2_100_000]),
            ..publish(QoS::AtLeastOnce, 3)
        });
        let bytes = enc(&p, V5);
        assert_eq!(bytes.len(), 1 + 4 + 2 + 14 + 2 + 1 + 2_100_000);
        assert_eq!(decode(&mut bytes.clone(), V5, 4 << 20).unwrap(), Some(p));
    }

    // --- mqttbytes as an oracle: it reads what we write, we read what it writes ----------

    #[test]
    fn mqttbytes_reads_our_v4_server_packets() {
        use mqttbytes::v4;
        let read = |p: Packet| v4::read(&mut enc(&p, V4), MAX).unwrap();
        let ack = ConnAck {
            session_present: true,
            ..ConnAck::default()
        };
        assert_eq!(
            read(Packet::ConnAck(ack)),
            v4::Packet::ConnAck(v4::ConnAck::new(v4::ConnectReturnCode::Success, true))
        );
        let mut p = publish(QoS::ExactlyOnce, 42);
        p.retain = true;
        p.dup = true;
        let v4::Packet::Publish(got) = read(Packet::Publish(p.clone())) else {
            panic!()
        };
        assert_eq!(
            (
                got.dup,
                got.qos as u8,
                got.retain,
                got.topic,
                got.pkid,
                got.payload
            ),
            (true, 2, true, p.topic, 42, p.payload)
        );
        assert_eq!(
            read(Packet::PubAck(Ack::new(5, 0x10))),
            v4::Packet::PubAck(v4::PubAck::new(5))
        );
        assert_eq!(
            read(Packet::PubRec(Ack::new(5, 0))),
            v4::Packet::PubRec(v4::PubRec::new(5))
        );
        assert_eq!(
            read(Packet::PubRel(Ack::new(5, 0))),
            v4::Packet::PubRel(v4::PubRel::new(5))
        );
        assert_eq!(
            read(Packet::PubComp(Ack::new(5, 0))),
            v4::Packet::PubComp(v4::PubComp::new(5))
        );
        let suback = SubAck {
            pkid: 6,
            codes: vec![1, 0x87],
            reason_string: None,
        };
        assert_eq!(
            read(Packet::SubAck(suback)),
            v4::Packet::SubAck(v4::SubAck::new(
                6,
                vec![
                    v4::SubscribeReasonCode::Success(mqttbytes::QoS::AtLeastOnce),
                    v4::SubscribeReasonCode::Failure
                ]
            ))
        );
        let unsuback = UnsubAck {
            pkid: 6,
            codes: vec![0],
        };
        assert_eq!(
            read(Packet::UnsubAck(unsuback)),
            v4::Packet::UnsubAck(v4::UnsubAck::new(6))
        );
        assert_eq!(read(Packet::PingResp), v4::Packet::PingResp);
    }

    #[test]
    fn mqttbytes_reads_our_v5_server_packets() {
        use mqttbytes::v5;
        let read = |p: Packet| v5::read(&mut enc(&p, V5), MAX).unwrap();
        let ack = ConnAck {
            session_present: true,
            code: 0,
            session_expiry_interval: Some(10),
            receive_maximum: Some(100),
            maximum_qos: Some(1),
            retain_available: Some(1),
            maximum_packet_size: Some(1 << 20),
            assigned_client_identifier: Some("auto-1".into()),
            topic_alias_maximum: Some(16),
            reason_string: Some("welcome".into()),
            wildcard_subscription_available: Some(1),
            subscription_identifiers_available: Some(1),
            shared_subscription_available: Some(0),
            server_keep_alive: Some(45),
            user_properties: vec![("node".into(), "1".into())],
        };
        let v5::Packet::ConnAck(got) = read(Packet::ConnAck(ack)) else {
            panic!()
        };
        assert!(got.session_present);
        assert_eq!(got.code as u8, 0);
        let props = got.properties.unwrap();
        assert_eq!(props.session_expiry_interval, Some(10));
        assert_eq!(props.receive_max, Some(100));
        assert_eq!(props.max_qos, Some(1));
        assert_eq!(props.retain_available, Some(1));
        assert_eq!(props.max_packet_size, Some(1 << 20));
        assert_eq!(props.assigned_client_identifier.as_deref(), Some("auto-1"));
        assert_eq!(props.topic_alias_max, Some(16));
        assert_eq!(props.reason_string.as_deref(), Some("welcome"));
        assert_eq!(props.wildcard_subscription_available, Some(1));
        assert_eq!(props.subscription_identifiers_available, Some(1));
        assert_eq!(props.shared_subscription_available, Some(0));
        assert_eq!(props.server_keep_alive, Some(45));
        assert_eq!(props.user_properties, vec![("node".into(), "1".into())]);

        let refused = ConnAck {
            session_present: true,
            code: reason::NOT_AUTHORIZED,
            ..ConnAck::default()
        };
        let v5::Packet::ConnAck(got) = read(Packet::ConnAck(refused)) else {
            panic!()
        };
        assert!(!got.session_present);
        assert_eq!(got.code as u8, reason::NOT_AUTHORIZED);

        let p = Publish {
            topic_alias: Some(2),
            subscription_identifiers: vec![1, 200, 268_435_455],
            properties: message_properties(),
            ..publish(QoS::AtLeastOnce, 9)
        };
        let v5::Packet::Publish(got) = read(Packet::Publish(p.clone())) else {
            panic!()
        };
        assert_eq!((got.topic, got.pkid, got.payload), (p.topic, 9, p.payload));
        let props = got.properties.unwrap();
        let m = message_properties();
        assert_eq!(props.topic_alias, Some(2));
        assert_eq!(props.subscription_identifiers, vec![1, 200, 268_435_455]);
        assert_eq!(props.payload_format_indicator, m.payload_format_indicator);
        assert_eq!(props.message_expiry_interval, m.message_expiry_interval);
        assert_eq!(props.content_type, m.content_type);
        assert_eq!(props.response_topic, m.response_topic);
        assert_eq!(props.correlation_data, m.correlation_data);
        assert_eq!(props.user_properties, m.user_properties);

        let v5::Packet::PubAck(got) = read(Packet::PubAck(Ack {
            pkid: 3,
            code: 0x10,
            reason_string: Some("none".into()),
        })) else {
            panic!()
        };
        assert_eq!((got.pkid, got.reason as u8), (3, 0x10));
        assert_eq!(
            got.properties.unwrap().reason_string.as_deref(),
            Some("none")
        );
        let v5::Packet::PubRel(got) = read(Packet::PubRel(Ack::new(4, 0x92))) else {
            panic!()
        };
        assert_eq!((got.pkid, got.reason as u8), (4, 0x92));
        let v5::Packet::PubComp(got) = read(Packet::PubComp(Ack::new(4, 0))) else {
            panic!()
        };
        assert_eq!((got.pkid, got.reason as u8), (4, 0));
        let v5::Packet::PubRec(got) = read(Packet::PubRec(Ack::new(4, 0x97))) else {
            panic!()
        };
        assert_eq!((got.pkid, got.reason as u8), (4, 0x97));

        let v5::Packet::SubAck(got) = read(Packet::SubAck(SubAck {
            pkid: 5,
            codes: vec![0, 2, 0x8F, 0x9E],
            reason_string: Some("partly".into()),
        })) else {
            panic!()
        };
        let codes: Vec<u8> = got.return_codes.iter().map(|c| *c as u8).collect();
        assert_eq!((got.pkid, codes), (5, vec![0, 2, 0x8F, 0x9E]));
        let v5::Packet::UnsubAck(got) = read(Packet::UnsubAck(UnsubAck {
            pkid: 5,
            codes: vec![0, 0x11],
        })) else {
            panic!()
        };
        let codes: Vec<u8> = got.reasons.iter().map(|c| *c as u8).collect();
        assert_eq!((got.pkid, codes), (5, vec![0, 0x11]));
        assert_eq!(read(Packet::PingResp), v5::Packet::PingResp);
        let v5::Packet::Disconnect(got) = read(Packet::Disconnect(Disconnect {
            code: reason::SESSION_TAKEN_OVER,
            session_expiry_interval: None,
            reason_string: Some("another connection".into()),
        })) else {
            panic!()
        };
        assert_eq!(got.reason_code as u8, reason::SESSION_TAKEN_OVER);
        assert_eq!(
            got.properties.unwrap().reason_string.as_deref(),
            Some("another connection")
        );
    }

    #[test]
    fn we_read_mqttbytes_v4_client_packets() {
        use mqttbytes::v4;
        let mut buf = BytesMut::new();
        let mut c = v4::Connect::new("mqttbytes-client");
        c.keep_alive = 15;
        c.clean_session = false;
        c.last_will = Some(v4::LastWill::new(
            "lw",
            "gone",
            mqttbytes::QoS::ExactlyOnce,
            true,
        ));
        c.set_login("name", "word");
        c.write(&mut buf).unwrap();
        v4::Publish {
            pkid: 77,
            dup: true,
            retain: true,
            ..v4::Publish::new("a/b", mqttbytes::QoS::AtLeastOnce, "body")
        }
        .write(&mut buf)
        .unwrap();
        let mut s = v4::Subscribe::new("a/#", mqttbytes::QoS::AtLeastOnce);
        s.pkid = 78;
        s.add("b/+".into(), mqttbytes::QoS::ExactlyOnce);
        s.write(&mut buf).unwrap();
        v4::Unsubscribe {
            pkid: 79,
            topics: vec!["a/#".into()],
        }
        .write(&mut buf)
        .unwrap();
        v4::PubAck::new(80).write(&mut buf).unwrap();
        v4::PubRec::new(81).write(&mut buf).unwrap();
        v4::PubRel::new(82).write(&mut buf).unwrap();
        v4::PubComp::new(83).write(&mut buf).unwrap();
        v4::PingReq.write(&mut buf).unwrap();
        v4::Disconnect.write(&mut buf).unwrap();

        let got = decode_connect(&mut buf, MAX).unwrap().unwrap();
        assert_eq!(
            got,
            Connect {
                keep_alive: 15,
                client_id: "mqttbytes-client".into(),
                clean_start: false,
                will: Some(Will {
                    topic: "lw".into(),
                    payload: Bytes::from_static(b"gone"),
                    qos: QoS::ExactlyOnce,
                    retain: true,
                    delay_interval: 0,
                    properties: MessageProperties::default(),
                }),
                username: Some("name".into()),
                password: Some(Bytes::from_static(b"word")),
                ..connect(V4)
            }
        );
        let mut next = || decode(&mut buf, V4, MAX).unwrap().unwrap();
        assert_eq!(
            next(),
            Packet::Publish(Publish {
                dup: true,
                retain: true,
                topic: "a/b".into(),
                payload: Bytes::from_static(b"body"),
                ..publish(QoS::AtLeastOnce, 77)
            })
        );
        assert_eq!(
            next(),
            Packet::Subscribe(Subscribe {
                pkid: 78,
                filters: vec![
                    filter("a/#", QoS::AtLeastOnce),
                    filter("b/+", QoS::ExactlyOnce)
                ],
                subscription_identifier: None,
                user_properties: Vec::new(),
            })
        );
        assert_eq!(
            next(),
            Packet::Unsubscribe(Unsubscribe {
                pkid: 79,
                filters: vec!["a/#".into()],
            })
        );
        assert_eq!(next(), Packet::PubAck(Ack::new(80, 0)));
        assert_eq!(next(), Packet::PubRec(Ack::new(81, 0)));
        assert_eq!(next(), Packet::PubRel(Ack::new(82, 0)));
        assert_eq!(next(), Packet::PubComp(Ack::new(83, 0)));
        assert_eq!(next(), Packet::PingReq);
        assert_eq!(next(), Packet::Disconnect(Disconnect::default()));
        assert!(buf.is_empty());
    }

    #[test]
    fn we_read_mqttbytes_v5_client_packets() {
        use mqttbytes::v5;
        let mut buf = BytesMut::new();
        let mut c = v5::Connect::new("v5-client");
        c.properties = Some(v5::ConnectProperties {
            session_expiry_interval: Some(300),
            receive_maximum: Some(50),
            max_packet_size: Some(4096),
            topic_alias_max: Some(5),
            request_response_info: Some(1),
            request_problem_info: Some(1),
            user_properties: vec![("x".into(), "y".into())],
            authentication_method: None,
            authentication_data: None,
        });
        let mut will = v5::LastWill::new("lw", "gone", mqttbytes::QoS::AtMostOnce, false);
        will.properties = Some(v5::WillProperties {
            delay_interval: Some(9),
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(&[1, 2])),
            user_properties: vec![("w".into(), "p".into())],
        });
        c.last_will = Some(will);
        c.write(&mut buf).unwrap();
        let mut p = v5::Publish::new("a/b", mqttbytes::QoS::ExactlyOnce, "body");
        p.pkid = 3;
        p.properties = Some(v5::PublishProperties {
            payload_format_indicator: Some(0),
            message_expiry_interval: Some(5),
            topic_alias: Some(4),
            response_topic: None,
            correlation_data: None,
            user_properties: vec![("u".into(), "v".into())],
            subscription_identifiers: Vec::new(),
            content_type: Some("json".into()),
        });
        p.write(&mut buf).unwrap();
        let mut f = v5::SubscribeFilter::new("s/#".into(), mqttbytes::QoS::AtLeastOnce);
        f.set_nolocal(true)
            .set_preserve_retain(true)
            .set_retain_forward_rule(v5::RetainForwardRule::OnNewSubscribe);
        v5::Subscribe {
            pkid: 4,
            filters: vec![f],
            properties: Some(v5::SubscribeProperties {
                id: Some(1000),
                user_properties: Vec::new(),
            }),
        }
        .write(&mut buf)
        .unwrap();
        v5::PubAck {
            pkid: 5,
            reason: v5::PubAckReason::NotAuthorized,
            properties: Some(v5::PubAckProperties {
                reason_string: Some("no".into()),
                user_properties: Vec::new(),
            }),
        }
        .write(&mut buf)
        .unwrap();
        v5::PubRel::new(6).write(&mut buf).unwrap();

        let got = decode_connect(&mut buf, MAX).unwrap().unwrap();
        assert_eq!(
            got,
            Connect {
                keep_alive: 10,
                client_id: "v5-client".into(),
                will: Some(Will {
                    topic: "lw".into(),
                    payload: Bytes::from_static(b"gone"),
                    qos: QoS::AtMostOnce,
                    retain: false,
                    delay_interval: 9,
                    properties: MessageProperties {
                        correlation_data: Some(Bytes::from_static(&[1, 2])),
                        message_expiry_interval: Some(60),
                        user_properties: vec![("w".into(), "p".into())],
                        ..message_properties()
                    },
                }),
                session_expiry_interval: Some(300),
                receive_maximum: Some(50),
                maximum_packet_size: Some(4096),
                topic_alias_maximum: Some(5),
                request_response_information: Some(1),
                request_problem_information: Some(1),
                user_properties: vec![("x".into(), "y".into())],
                ..connect(V5)
            }
        );
        let mut next = || decode(&mut buf, V5, MAX).unwrap().unwrap();
        assert_eq!(
            next(),
            Packet::Publish(Publish {
                topic: "a/b".into(),
                payload: Bytes::from_static(b"body"),
                topic_alias: Some(4),
                properties: MessageProperties {
                    payload_format_indicator: Some(0),
                    message_expiry_interval: Some(5),
                    content_type: Some("json".into()),
                    user_properties: vec![("u".into(), "v".into())],
                    ..MessageProperties::default()
                },
                ..publish(QoS::ExactlyOnce, 3)
            })
        );
        assert_eq!(
            next(),
            Packet::Subscribe(Subscribe {
                pkid: 4,
                filters: vec![SubscribeFilter {
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::OnNewSubscribe,
                    ..filter("s/#", QoS::AtLeastOnce)
                }],
                subscription_identifier: Some(1000),
                user_properties: Vec::new(),
            })
        );
        assert_eq!(
            next(),
            Packet::PubAck(Ack {
                pkid: 5,
                code: reason::NOT_AUTHORIZED,
                reason_string: Some("no".into()),
            })
        );
        assert_eq!(next(), Packet::PubRel(Ack::new(6, 0)));
        assert!(buf.is_empty());
    }

    // --- properties -------------------------------------------------------------------------

    /// Feeds `bytes` to the decoder until it stops, checking its buffer contract.
    fn drain(bytes: &[u8], protocol: Protocol, max_size: usize) {
        let mut buf = BytesMut::from(bytes);
        loop {
            let before = buf.clone();
            match decode(&mut buf, protocol, max_size) {
                Ok(Some(_)) => {
                    let header = parse_header(&before).unwrap().unwrap();
                    assert_eq!(before.len() - buf.len(), header.frame_len());
                    assert_eq!(&buf[..], &before[header.frame_len()..]);
                }
                Ok(None) => {
                    assert_eq!(buf, before, "Ok(None) consumed bytes");
                    return;
                }
                Err(_) => return,
            }
        }
    }

    fn qos_strategy() -> impl Strategy<Value = QoS> {
        prop_oneof![
            Just(QoS::AtMostOnce),
            Just(QoS::AtLeastOnce),
            Just(QoS::ExactlyOnce)
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300),
                                       max_size in 0usize..400) {
            for protocol in [V4, V5] {
                drain(&bytes, protocol, max_size);
                drain(&bytes, protocol, MAX);
            }
            let mut buf = BytesMut::from(&bytes[..]);
            if let Ok(None) = decode_connect(&mut buf, MAX) {
                prop_assert_eq!(&buf[..], &bytes[..]);
            }
        }

        /// A valid fixed header around random bytes, so the body parsers get exercised.
        #[test]
        fn framed_random_bodies_never_panic(byte1 in any::<u8>(),
                                            body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let bytes = frame(byte1, &body);
            for protocol in [V4, V5] {
                drain(&bytes, protocol, MAX);
            }
            let _ = decode_connect(&mut BytesMut::from(&bytes[..]), MAX);
            let _ = decode_connect(&mut BytesMut::from(&connect_frame(byte1 % 8, body.first().copied().unwrap_or(0), &body)[..]), MAX);
        }

        #[test]
        fn publish_round_trip(qos in qos_strategy(), dup in any::<bool>(), retain in any::<bool>(),
                              topic in "[a-z/ é]{0,30}", pkid in 1u16.., alias in proptest::option::of(1u16..),
                              payload in proptest::collection::vec(any::<u8>(), 0..200),
                              expiry in proptest::option::of(any::<u32>()),
                              user in proptest::collection::vec(("[a-z]{0,5}", "[a-z]{0,5}"), 0..3)) {
            let p = Publish {
                dup: dup && qos != QoS::AtMostOnce,
                qos,
                retain,
                topic,
                pkid: if qos == QoS::AtMostOnce { 0 } else { pkid },
                payload: Bytes::from(payload),
                topic_alias: None,
                subscription_identifiers: Vec::new(),
                properties: MessageProperties::default(),
            };
            prop_assert_eq!(dec_one(&enc(&Packet::Publish(p.clone()), V4), V4), Packet::Publish(p.clone()));
            let p = Publish {
                topic_alias: alias,
                properties: MessageProperties {
                    message_expiry_interval: expiry,
                    user_properties: user,
                    ..MessageProperties::default()
                },
                ..p
            };
            prop_assert_eq!(dec_one(&enc(&Packet::Publish(p.clone()), V5), V5), Packet::Publish(p));
        }
    }
}
