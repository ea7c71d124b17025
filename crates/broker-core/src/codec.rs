//! The wire edge: MQTT 3.1.1 / 5.0 bytes to and from the [`crate::packet`] model.
//!
//! mqttbytes 0.6 (`v4`, `v5`) parses packet bodies and writes packets. This module frames,
//! checks the raw frame before mqttbytes reads it and the result after, converts to and
//! from [`crate::packet`], and covers what mqttbytes gets wrong:
//! - A complete frame that ends early reports `InsufficientBytes` once it has been split
//!   off the buffer (v5 `E0 01 8E`, a v5 PUBLISH without a property length), so "need more
//!   bytes" and "malformed" cannot be told apart. We frame (fixed header, remaining length,
//!   size limit, type and flags) and give mqttbytes exactly one complete frame, so its
//!   `InsufficientBytes` means Malformed.
//! - v5 property sections are not bounded by their declared length (a property may run
//!   into the payload unnoticed), and a repeated property silently replaces the first:
//!   `walk_props` checks each section on the raw frame before mqttbytes reads it.
//! - Bytes after what it reads are ignored (v4 acks, PINGREQ, DISCONNECT, CONNECT): the
//!   frame must be exactly as long as its decoded contents.
//! - Not validated: fixed-header flags, the CONNECT reserved bit and 3.1.1's
//!   password-without-user-name rule, reserved SUBSCRIBE option bits (checked on the raw
//!   frame); packet id 0 outside PUBLISH, empty SUBSCRIBE/UNSUBSCRIBE, subscription
//!   identifier, topic alias, receive maximum or maximum packet size 0, request and format
//!   flags above 1, U+0000 in strings (checked on the result).
//! - MQIsdp/3 and unknown levels are plain errors: the raw check turns them into
//!   [`DecodeError::UnsupportedProtocol`], which the engine answers with a CONNACK.
//! - A user name flag with an empty user name, or an empty password, reads as absent: the
//!   connect flags tell whether each was sent.
//! - Parsed here because mqttbytes cannot: v5 UNSUBSCRIBE (`v5::Unsubscribe::read`
//!   `dbg!`s to stderr on every packet), a v5 DISCONNECT holding only a reason code
//!   (mqttbytes requires a property length) and AUTH (unknown to mqttbytes).
//! - The writers cast lengths to `u16` unchecked and leave partial output on error: our
//!   guards run first, and a failed write is truncated away. They also emit v5 forms that
//!   mqttbytes' and rumqttc's own readers refuse (DISCONNECT `E0 00` and `E0 01 rc`, a
//!   CONNACK without property length): a v5 CONNACK always gets a property section, and a
//!   v5 DISCONNECT without properties is written here as `E0 02 rc 00` (mqttbytes makes
//!   even an empty section `E0 00`), like AUTH, which mqttbytes cannot write at all.
//!
//! Limitations left, because mqttbytes' types cannot carry the data:
//! - Passwords are `String`s: a binary (non-UTF-8) password is refused as Malformed, and
//!   cannot be encoded.
//! - Encoding a CONNECT (tests only: a server never sends one) refuses an empty user name
//!   or password, which mqttbytes would silently leave out.
//! - Reason codes are encoded through mqttbytes' enums, so a code the specification does
//!   not allow in that packet cannot be encoded; the same lists refuse such a code on
//!   decoding (DISCONNECT and acks: Protocol Error).
//!
//! Only what a client may send is decoded; anything else is refused with a
//! [`DecodeError`] whose [`reason_code`](DecodeError::reason_code) the engine can send.

use bytes::{BufMut, Bytes, BytesMut};
use mqttbytes::{v4, v5, FixedHeader};

use crate::packet::{
    reason, Ack, ConnAck, Connect, Disconnect, MessageProperties, Packet, Protocol, Publish, QoS,
    RetainHandling, SubAck, Subscribe, SubscribeFilter, UnsubAck, Unsubscribe, UserProperties,
    Will,
};

/// The largest value a Variable Byte Integer (and so a remaining length) can hold.
const MAX_VARINT: usize = 268_435_455;

/// The longest UTF-8 string or binary field: its length prefix is a `u16`.
const MAX_FIELD: usize = u16::MAX as usize;

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

    /// The same header for mqttbytes' per-type `read`s, which skip `len` bytes of the frame.
    fn mqttbytes(&self) -> FixedHeader {
        FixedHeader::new(self.byte1, self.len - 1, self.remaining)
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

/// Takes one whole frame (fixed header included) off `buf`, or returns `Ok(None)` with the
/// buffer untouched if it is not complete. Size and `check` run on the fixed header alone,
/// so a packet that will be refused anyway is refused before its body is buffered.
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
    Ok(Some((header, buf.split_to(size).freeze())))
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

/// mqttbytes ignores what follows the fields it reads: the body must be exactly as long as
/// its decoded contents (MQTT requires minimal lengths, so a valid packet always is).
fn expect_len(header: &Header, expected: usize) -> Result<(), DecodeError> {
    match header.remaining.checked_sub(expected) {
        Some(0) => Ok(()),
        Some(extra) => Err(malformed(format!(
            "{extra} unexpected bytes at the end of {}",
            header.name()
        ))),
        None => Err(malformed(format!(
            "{} shorter than its contents",
            header.name()
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Raw checks: what mqttbytes does not look at, and the packets it cannot read
// ---------------------------------------------------------------------------------------

/// A bounds-checked cursor over a frame's body. Running short is Malformed, never a panic.
struct Raw<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn truncated() -> DecodeError {
    malformed("packet ends before its contents")
}

impl<'a> Raw<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Raw { buf, pos: 0 }
    }

    fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let bytes = self
            .buf
            .get(self.pos..self.pos.saturating_add(n))
            .ok_or_else(truncated)?;
        self.pos += n;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
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

    fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    fn string(&mut self, what: &str) -> Result<&'a str, DecodeError> {
        let bytes = self.binary()?;
        let s = std::str::from_utf8(bytes)
            .map_err(|_| malformed(format!("{what} is not valid UTF-8")))?;
        no_nul(s, what)?;
        Ok(s)
    }
}

/// U+0000 is not allowed in a UTF-8 Encoded String (MQTT 5 §1.5.4); mqttbytes accepts it.
fn no_nul(s: &str, what: &str) -> Result<(), DecodeError> {
    if s.contains('\0') {
        return Err(malformed(format!("{what} contains U+0000")));
    }
    Ok(())
}

/// The bits of the CONNECT flags byte.
mod connect_flag {
    pub const RESERVED: u8 = 0b0000_0001;
    pub const WILL: u8 = 0b0000_0100;
    pub const WILL_RETAIN: u8 = 0b0010_0000;
    pub const PASSWORD: u8 = 0b0100_0000;
    pub const USER_NAME: u8 = 0b1000_0000;
}

/// mqttbytes ignores the reserved bit and the 3.1.1 password rule.
fn check_connect_flags(flags: u8, v5: bool) -> Result<(), DecodeError> {
    if flags & connect_flag::RESERVED != 0 {
        return Err(malformed("CONNECT reserved flag is set"));
    }
    let will_qos = (flags >> 3) & 0b11;
    if flags & connect_flag::WILL == 0 && (will_qos != 0 || flags & connect_flag::WILL_RETAIN != 0)
    {
        return Err(malformed(
            "will QoS or will retain set without the will flag",
        ));
    }
    if will_qos == 3 {
        return Err(malformed("will QoS 3"));
    }
    // 3.1.1 forbids it (MQTT-3.1.2-22); 5.0 allows a password alone.
    if !v5 && flags & connect_flag::PASSWORD != 0 && flags & connect_flag::USER_NAME == 0 {
        return Err(malformed("password flag set without the user name flag"));
    }
    Ok(())
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
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
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

/// Walks the v5 property section at the cursor and returns its size, length included. It
/// must be filled exactly by properties allowed in `packet` (an unknown or misplaced one is
/// Malformed), none repeated but User Property (a Protocol Error), with well-formed strings.
///
/// mqttbytes reads properties until it has read at least the declared length, so a
/// property may run past the section, and keeps the last of a repeated one. A section that
/// passed this walk is one it reads exactly as declared; values are left to it.
fn walk_props(r: &mut Raw<'_>, allowed: u64, packet: &str) -> Result<usize, DecodeError> {
    let start = r.pos;
    let len = r.varint()?;
    let mut s = Raw::new(r.take(len)?);
    let mut seen = 0u64;
    while !s.is_empty() {
        // Identifiers are Variable Byte Integers, but every defined one fits in one byte.
        let id = s.u8()?;
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
            prop::PAYLOAD_FORMAT_INDICATOR
            | prop::REQUEST_PROBLEM_INFORMATION
            | prop::REQUEST_RESPONSE_INFORMATION => {
                s.u8()?;
            }
            prop::RECEIVE_MAXIMUM | prop::TOPIC_ALIAS_MAXIMUM | prop::TOPIC_ALIAS => {
                s.u16()?;
            }
            prop::MESSAGE_EXPIRY_INTERVAL
            | prop::SESSION_EXPIRY_INTERVAL
            | prop::WILL_DELAY_INTERVAL
            | prop::MAXIMUM_PACKET_SIZE => {
                s.take(4)?;
            }
            prop::SUBSCRIPTION_IDENTIFIER => {
                s.varint()?;
            }
            prop::CORRELATION_DATA | prop::AUTHENTICATION_DATA => {
                s.binary()?;
            }
            prop::USER_PROPERTY => {
                s.string("user property name")?;
                s.string("user property value")?;
            }
            prop::CONTENT_TYPE
            | prop::RESPONSE_TOPIC
            | prop::AUTHENTICATION_METHOD
            | prop::REASON_STRING
            | prop::SERVER_REFERENCE => {
                s.string("property")?;
            }
            // No allowed set holds anything else.
            _ => {
                return Err(malformed(format!(
                    "property {id:#04x} is not valid in {packet}"
                )))
            }
        }
    }
    Ok(r.pos - start)
}

/// mqttbytes ignores reserved option bits and reads retain handling 3 as malformed, where
/// it is a Protocol Error: a walk over the raw filters and their option bytes.
fn check_subscribe_options(body: &[u8], v5: bool) -> Result<(), DecodeError> {
    let mut r = Raw::new(body);
    r.u16()?;
    if v5 {
        walk_props(&mut r, SUBSCRIBE_PROPS, "SUBSCRIBE")?;
    }
    // Bits 2..7 are reserved in 3.1.1, bits 6..7 in 5.0.
    let reserved = if v5 { 0b1100_0000 } else { 0b1111_1100 };
    while !r.is_empty() {
        r.binary()?;
        let options = r.u8()?;
        if options & reserved != 0 {
            return Err(malformed("reserved subscription option bits set"));
        }
        if options & 0b11 == 3 {
            return Err(malformed("subscription requesting QoS 3"));
        }
        if (options >> 4) & 0b11 == 3 {
            return Err(protocol_error("retain handling 3"));
        }
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
    let Some((header, frame)) = frame else {
        return Ok(None);
    };
    // A copy, so that the will, password and properties kept for the whole session do not pin
    // the connection's read buffer.
    read_connect(&header, Bytes::copy_from_slice(&frame)).map(Some)
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
    let Some((header, frame)) = next_frame(buf, max_size, |h| check_header(h, protocol))? else {
        return Ok(None);
    };
    let v5 = protocol == Protocol::V5;
    let packet = match header.kind() {
        3 => Packet::Publish(read_publish(&header, frame, v5)?),
        4..=7 => read_ack(&header, frame, v5)?,
        8 => Packet::Subscribe(read_subscribe(&header, frame, v5)?),
        10 => Packet::Unsubscribe(read_unsubscribe(&header, frame, v5)?),
        12 => {
            expect_len(&header, 0)?;
            Packet::PingReq
        }
        14 => Packet::Disconnect(read_disconnect(&header, frame, v5)?),
        15 => read_auth(&header, &frame[header.len..])?,
        // check_header refused every other type.
        _ => return Err(protocol_error(format!("unexpected {}", header.name()))),
    };
    Ok(Some(packet))
}

/// An mqttbytes error on a complete frame.
fn read_error(e: mqttbytes::Error, packet: &str) -> DecodeError {
    use mqttbytes::Error as E;
    match e {
        E::PacketIdZero => protocol_error(format!("{packet} with packet identifier 0")),
        // mqttbytes' name for every reason code outside a packet's list.
        E::InvalidConnectReturnCode(code) => {
            protocol_error(format!("{packet} with reason code {code:#04x}"))
        }
        // The whole frame is there, so running short inside it is not "need more bytes".
        E::InsufficientBytes(_) => malformed(format!("{packet} ends before its contents")),
        other => malformed(format!("{packet}: {other:?}")),
    }
}

fn nonzero_pkid(pkid: u16, packet: &str) -> Result<u16, DecodeError> {
    if pkid == 0 {
        return Err(protocol_error(format!("{packet} with packet identifier 0")));
    }
    Ok(pkid)
}

/// A property that may not be 0.
fn nonzero<T: Default + PartialEq>(value: Option<T>, what: &str) -> Result<Option<T>, DecodeError> {
    if value == Some(T::default()) {
        return Err(protocol_error(format!("{what} of 0")));
    }
    Ok(value)
}

/// A property byte that may only be 0 or 1.
fn flag_byte(value: Option<u8>, what: &str) -> Result<Option<u8>, DecodeError> {
    match value {
        Some(v) if v > 1 => Err(protocol_error(format!("{what} of {v}"))),
        _ => Ok(value),
    }
}

fn from_qos(qos: mqttbytes::QoS) -> QoS {
    match qos {
        mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn to_qos(qos: QoS) -> mqttbytes::QoS {
    match qos {
        QoS::AtMostOnce => mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => mqttbytes::QoS::ExactlyOnce,
    }
}

fn read_connect(header: &Header, frame: Bytes) -> Result<Connect, DecodeError> {
    let mut r = Raw::new(&frame[header.len..]);
    // mqttbytes has only an error for MQIsdp/3 or level 6; the engine answers them.
    let name = r.string("protocol name")?;
    let level = r.u8()?;
    let v5 = match (name, level) {
        ("MQTT", 4) => false,
        ("MQTT", 5) => true,
        _ => {
            return Err(DecodeError::UnsupportedProtocol {
                name: name.to_owned(),
                level,
            })
        }
    };
    let flags = r.u8()?;
    check_connect_flags(flags, v5)?;
    let mut sections = 0;
    if v5 {
        r.u16()?; // keep alive
        sections += walk_props(&mut r, CONNECT_PROPS, "CONNECT")?;
        r.binary()?; // client identifier
        if flags & connect_flag::WILL != 0 {
            sections += walk_props(&mut r, WILL_PROPS, "will properties")?;
        }
    }

    let fh = header.mqttbytes();
    let err = |e| read_error(e, "CONNECT");
    let connect = if v5 {
        v5_connect(v5::Connect::read(fh, frame).map_err(err)?, flags)?
    } else {
        v4_connect(v4::Connect::read(fh, frame).map_err(err)?, flags)
    };
    no_nul(&connect.client_id, "client identifier")?;
    if let Some(will) = &connect.will {
        no_nul(&will.topic, "will topic")?;
    }
    if let Some(username) = &connect.username {
        no_nul(username, "user name")?;
    }

    // Name, level, flags and keep alive take 10 bytes; then the sections and the strings.
    let mut expected = 10 + sections + 2 + connect.client_id.len();
    if let Some(will) = &connect.will {
        expected += 2 + will.topic.len() + 2 + will.payload.len();
    }
    expected += connect.username.as_ref().map_or(0, |u| 2 + u.len());
    expected += connect.password.as_ref().map_or(0, |p| 2 + p.len());
    expect_len(header, expected)?;
    Ok(connect)
}

/// mqttbytes reads an empty user name or password as absent (and both as no login): the
/// connect flags say which were sent.
fn credentials(flags: u8, login: Option<(String, String)>) -> (Option<String>, Option<Bytes>) {
    let (username, password) = login.unwrap_or_default();
    (
        (flags & connect_flag::USER_NAME != 0).then_some(username),
        (flags & connect_flag::PASSWORD != 0).then(|| Bytes::from(password)),
    )
}

fn v4_connect(c: v4::Connect, flags: u8) -> Connect {
    let (username, password) = credentials(flags, c.login.map(|l| (l.username, l.password)));
    Connect {
        protocol: Protocol::V4,
        keep_alive: c.keep_alive,
        client_id: c.client_id,
        clean_start: c.clean_session,
        will: c.last_will.map(|w| Will {
            topic: w.topic,
            payload: w.message,
            qos: from_qos(w.qos),
            retain: w.retain,
            delay_interval: 0,
            properties: MessageProperties::default(),
        }),
        username,
        password,
        // The engine derives it from clean session.
        session_expiry_interval: None,
        receive_maximum: None,
        maximum_packet_size: None,
        topic_alias_maximum: None,
        request_response_information: None,
        request_problem_information: None,
        authentication_method: None,
        user_properties: Vec::new(),
    }
}

fn v5_connect(c: v5::Connect, flags: u8) -> Result<Connect, DecodeError> {
    let (username, password) = credentials(flags, c.login.map(|l| (l.username, l.password)));
    let will = match c.last_will {
        None => None,
        Some(w) => {
            let (delay_interval, properties) = match w.properties {
                None => (0, MessageProperties::default()),
                Some(p) => (
                    p.delay_interval.unwrap_or(0),
                    MessageProperties {
                        payload_format_indicator: flag_byte(
                            p.payload_format_indicator,
                            "payload format indicator",
                        )?,
                        message_expiry_interval: p.message_expiry_interval,
                        content_type: p.content_type,
                        response_topic: p.response_topic,
                        correlation_data: p.correlation_data,
                        user_properties: p.user_properties,
                    },
                ),
            };
            Some(Will {
                topic: w.topic,
                payload: w.message,
                qos: from_qos(w.qos),
                retain: w.retain,
                delay_interval,
                properties,
            })
        }
    };
    let mut connect = Connect {
        protocol: Protocol::V5,
        keep_alive: c.keep_alive,
        client_id: c.client_id,
        clean_start: c.clean_session,
        will,
        username,
        password,
        // Absent in 5.0 means 0 (§3.1.2.11.2).
        session_expiry_interval: Some(0),
        receive_maximum: None,
        maximum_packet_size: None,
        topic_alias_maximum: None,
        request_response_information: None,
        request_problem_information: None,
        authentication_method: None,
        user_properties: Vec::new(),
    };
    if let Some(p) = c.properties {
        if p.authentication_data.is_some() && p.authentication_method.is_none() {
            return Err(protocol_error(
                "authentication data without an authentication method",
            ));
        }
        connect.session_expiry_interval = Some(p.session_expiry_interval.unwrap_or(0));
        connect.receive_maximum = nonzero(p.receive_maximum, "receive maximum")?;
        connect.maximum_packet_size = nonzero(p.max_packet_size, "maximum packet size")?;
        connect.topic_alias_maximum = p.topic_alias_max;
        connect.request_response_information =
            flag_byte(p.request_response_info, "request response information")?;
        connect.request_problem_information =
            flag_byte(p.request_problem_info, "request problem information")?;
        connect.authentication_method = p.authentication_method;
        connect.user_properties = p.user_properties;
    }
    Ok(connect)
}

fn read_publish(header: &Header, frame: Bytes, v5: bool) -> Result<Publish, DecodeError> {
    let err = |e| read_error(e, "PUBLISH");
    if !v5 {
        // The payload is the rest of the frame: nothing can trail.
        let p = v4::Publish::read(header.mqttbytes(), frame).map_err(err)?;
        no_nul(&p.topic, "topic name")?;
        return Ok(Publish {
            dup: p.dup,
            qos: from_qos(p.qos),
            retain: p.retain,
            topic: p.topic,
            pkid: p.pkid,
            payload: p.payload,
            topic_alias: None,
            subscription_identifiers: Vec::new(),
            properties: MessageProperties::default(),
        });
    }

    // The property section follows the topic and, above QoS 0, the packet id.
    let mut r = Raw::new(&frame[header.len..]);
    r.binary()?;
    if header.flags() & 0b0110 != 0 {
        r.u16()?;
    }
    walk_props(&mut r, PUBLISH_PROPS, "PUBLISH")?;

    let p = v5::Publish::read(header.mqttbytes(), frame).map_err(err)?;
    no_nul(&p.topic, "topic name")?;
    let mut publish = Publish {
        dup: p.dup,
        qos: from_qos(p.qos),
        retain: p.retain,
        topic: p.topic,
        pkid: p.pkid,
        payload: p.payload,
        topic_alias: None,
        subscription_identifiers: Vec::new(),
        properties: MessageProperties::default(),
    };
    if let Some(props) = p.properties {
        if !props.subscription_identifiers.is_empty() {
            return Err(protocol_error(
                "PUBLISH from a client with a subscription identifier",
            ));
        }
        publish.topic_alias = nonzero(props.topic_alias, "topic alias")?;
        publish.properties = MessageProperties {
            payload_format_indicator: flag_byte(
                props.payload_format_indicator,
                "payload format indicator",
            )?,
            message_expiry_interval: props.message_expiry_interval,
            content_type: props.content_type,
            response_topic: props.response_topic,
            correlation_data: props.correlation_data,
            user_properties: props.user_properties,
        };
    }
    Ok(publish)
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP.
fn read_ack(header: &Header, frame: Bytes, v5: bool) -> Result<Packet, DecodeError> {
    let name = header.name();
    let fh = header.mqttbytes();
    let err = |e| read_error(e, name);
    let ack = if v5 {
        // 5.0 omits the reason code when it is 0 and there are no properties (remaining
        // length 2), and the property length when there are none (remaining length 3).
        if header.remaining >= 4 {
            let mut r = Raw::new(&frame[header.len + 3..]);
            let section = walk_props(&mut r, ACK_PROPS, name)?;
            expect_len(header, 3 + section)?;
        }
        // mqttbytes checks the reason code against each packet's list. Four distinct
        // types of the same shape:
        macro_rules! read_v5 {
            ($ack:ident) => {{
                let a = v5::$ack::read(fh, frame).map_err(err)?;
                (
                    a.pkid,
                    a.reason as u8,
                    a.properties.and_then(|p| p.reason_string),
                )
            }};
        }
        let (pkid, code, reason_string) = match header.kind() {
            4 => read_v5!(PubAck),
            5 => read_v5!(PubRec),
            6 => read_v5!(PubRel),
            _ => read_v5!(PubComp),
        };
        Ack {
            pkid,
            code,
            reason_string,
        }
    } else {
        let pkid = match header.kind() {
            4 => v4::PubAck::read(fh, frame).map_err(err)?.pkid,
            5 => v4::PubRec::read(fh, frame).map_err(err)?.pkid,
            6 => v4::PubRel::read(fh, frame).map_err(err)?.pkid,
            _ => v4::PubComp::read(fh, frame).map_err(err)?.pkid,
        };
        expect_len(header, 2)?;
        Ack::new(pkid, reason::SUCCESS)
    };
    nonzero_pkid(ack.pkid, name)?;
    Ok(match header.kind() {
        4 => Packet::PubAck(ack),
        5 => Packet::PubRec(ack),
        6 => Packet::PubRel(ack),
        _ => Packet::PubComp(ack),
    })
}

fn read_subscribe(header: &Header, frame: Bytes, v5: bool) -> Result<Subscribe, DecodeError> {
    // Also walks the property section: the filters follow it, and mqttbytes reads them to
    // the end of the frame, so nothing can trail.
    check_subscribe_options(&frame[header.len..], v5)?;
    let err = |e| read_error(e, "SUBSCRIBE");
    let subscribe = if v5 {
        let s = v5::Subscribe::read(header.mqttbytes(), frame).map_err(err)?;
        let (id, user_properties) = match s.properties {
            Some(p) => (p.id, p.user_properties),
            None => (None, Vec::new()),
        };
        let subscription_identifier = nonzero(id, "subscription identifier")?
            .map(|id| u32::try_from(id).map_err(|_| malformed("subscription identifier")))
            .transpose()?;
        let filters = s
            .filters
            .into_iter()
            .map(|f| SubscribeFilter {
                filter: f.path,
                qos: from_qos(f.qos),
                no_local: f.nolocal,
                retain_as_published: f.preserve_retain,
                retain_handling: match f.retain_forward_rule {
                    v5::RetainForwardRule::OnEverySubscribe => RetainHandling::OnSubscribe,
                    v5::RetainForwardRule::OnNewSubscribe => RetainHandling::OnNewSubscribe,
                    v5::RetainForwardRule::Never => RetainHandling::Never,
                },
            })
            .collect();
        Subscribe {
            pkid: s.pkid,
            filters,
            subscription_identifier,
            user_properties,
        }
    } else {
        let s = v4::Subscribe::read(header.mqttbytes(), frame).map_err(err)?;
        Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| SubscribeFilter {
                    filter: f.path,
                    qos: from_qos(f.qos),
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: RetainHandling::OnSubscribe,
                })
                .collect(),
            subscription_identifier: None,
            user_properties: Vec::new(),
        }
    };
    nonzero_pkid(subscribe.pkid, "SUBSCRIBE")?;
    if subscribe.filters.is_empty() {
        return Err(protocol_error("SUBSCRIBE without topic filters"));
    }
    for f in &subscribe.filters {
        no_nul(&f.filter, "topic filter")?;
    }
    Ok(subscribe)
}

fn read_unsubscribe(header: &Header, frame: Bytes, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let (pkid, filters) = if v5 {
        // Parsed here: mqttbytes' v5 reader prints every packet id to stderr (`dbg!`).
        let mut r = Raw::new(&frame[header.len..]);
        let pkid = r.u16()?;
        walk_props(&mut r, UNSUBSCRIBE_PROPS, "UNSUBSCRIBE")?;
        let mut filters = Vec::new();
        while !r.is_empty() {
            filters.push(r.string("topic filter")?.to_owned());
        }
        (pkid, filters)
    } else {
        // Filters run to the end of the frame: nothing can trail.
        let u = v4::Unsubscribe::read(header.mqttbytes(), frame)
            .map_err(|e| read_error(e, "UNSUBSCRIBE"))?;
        for filter in &u.topics {
            no_nul(filter, "topic filter")?;
        }
        (u.pkid, u.topics)
    };
    nonzero_pkid(pkid, "UNSUBSCRIBE")?;
    if filters.is_empty() {
        return Err(protocol_error("UNSUBSCRIBE without topic filters"));
    }
    Ok(Unsubscribe { pkid, filters })
}

fn read_disconnect(header: &Header, frame: Bytes, v5: bool) -> Result<Disconnect, DecodeError> {
    // 3.1.1 and the shortest 5.0 form have no body: reason 0.
    if !v5 || header.remaining == 0 {
        expect_len(header, 0)?;
        return Ok(Disconnect::default());
    }
    let body = &frame[header.len..];
    if header.remaining == 1 {
        // Parsed here: mqttbytes requires a property length after the reason code, which
        // 5.0 lets a client leave out. Its list still judges the code.
        let code = body[0];
        v5::DisconnectReasonCode::try_from(code).map_err(|e| read_error(e, "DISCONNECT"))?;
        return Ok(Disconnect {
            code,
            ..Disconnect::default()
        });
    }
    let section = walk_props(&mut Raw::new(&body[1..]), DISCONNECT_PROPS, "DISCONNECT")?;
    expect_len(header, 1 + section)?;
    let d =
        v5::Disconnect::read(header.mqttbytes(), frame).map_err(|e| read_error(e, "DISCONNECT"))?;
    let mut disconnect = Disconnect {
        code: d.reason_code as u8,
        ..Disconnect::default()
    };
    // User properties are dropped.
    if let Some(p) = d.properties {
        disconnect.session_expiry_interval = p.session_expiry_interval;
        disconnect.reason_string = p.reason_string;
        disconnect.server_reference = p.server_reference;
    }
    Ok(disconnect)
}

/// Parsed here: mqttbytes does not know packet type 15. Decoded only so that the engine can
/// refuse it cleanly; the properties are checked but dropped.
fn read_auth(header: &Header, body: &[u8]) -> Result<Packet, DecodeError> {
    let mut r = Raw::new(body);
    let mut code = reason::SUCCESS;
    if !r.is_empty() {
        code = r.u8()?;
        if !r.is_empty() {
            walk_props(&mut r, AUTH_PROPS, "AUTH")?;
        }
    }
    expect_len(header, r.pos)?;
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
///
/// Our guards run before each mqttbytes writer: it would cast lengths to `u16` unchecked
/// and stop half-way on a packet id 0.
pub fn encode(
    packet: &Packet,
    protocol: Protocol,
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    let v5 = protocol == Protocol::V5;
    match packet {
        Packet::Connect(c) => write_connect(c, v5, out),
        Packet::ConnAck(c) => write_connack(c, v5, out),
        Packet::Publish(p) => write_publish(p, v5, out),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            write_ack(packet, a, v5, out)
        }
        Packet::Subscribe(s) => write_subscribe(s, v5, out),
        Packet::SubAck(s) => write_suback(s, v5, out),
        Packet::Unsubscribe(u) => write_unsubscribe(u, v5, out),
        Packet::UnsubAck(u) => write_unsuback(u, v5, out),
        // Both are the same two bytes in 5.0.
        Packet::PingReq => write_with(out, |out| v4::PingReq.write(out)),
        Packet::PingResp => write_with(out, |out| v4::PingResp.write(out)),
        Packet::Disconnect(_) | Packet::Auth { .. } if !v5 => Ok(0),
        Packet::Disconnect(d) => write_disconnect(d, out),
        Packet::Auth { code } => {
            // Written here: mqttbytes has no AUTH. The same shape as our short DISCONNECT.
            out.put_slice(&[0xF0, 2, *code, 0]);
            Ok(4)
        }
    }
}

/// Runs an mqttbytes writer once the guards have passed. Returns the bytes appended
/// (mqttbytes' own count is wrong for several packets); an error removes partial output.
fn write_with(
    out: &mut BytesMut,
    write: impl FnOnce(&mut BytesMut) -> Result<usize, mqttbytes::Error>,
) -> Result<usize, EncodeError> {
    let start = out.len();
    if write(out).is_err() {
        out.truncate(start);
        return Err(EncodeError::Invalid("mqttbytes could not write the packet"));
    }
    Ok(out.len() - start)
}

fn check_field(field: &'static str, len: usize) -> Result<(), EncodeError> {
    if len > MAX_FIELD {
        return Err(EncodeError::FieldTooLong { field, len });
    }
    Ok(())
}

fn check_opt_field(field: &'static str, value: Option<&[u8]>) -> Result<(), EncodeError> {
    value.map_or(Ok(()), |v| check_field(field, v.len()))
}

fn check_user_properties(props: &UserProperties) -> Result<(), EncodeError> {
    for (key, value) in props {
        check_field("user property name", key.len())?;
        check_field("user property value", value.len())?;
    }
    Ok(())
}

fn check_message_properties(p: &MessageProperties) -> Result<(), EncodeError> {
    check_opt_field("content type", p.content_type.as_deref().map(str::as_bytes))?;
    check_opt_field(
        "response topic",
        p.response_topic.as_deref().map(str::as_bytes),
    )?;
    check_opt_field("correlation data", p.correlation_data.as_deref())?;
    check_user_properties(&p.user_properties)
}

fn check_pkid(pkid: u16, packet: &'static str) -> Result<(), EncodeError> {
    if pkid == 0 {
        return Err(EncodeError::PacketIdZero(packet));
    }
    Ok(())
}

fn check_remaining(len: usize) -> Result<(), EncodeError> {
    if len > MAX_VARINT {
        return Err(EncodeError::PacketTooLarge(len));
    }
    Ok(())
}

fn check_subscription_identifier(id: u32) -> Result<(), EncodeError> {
    if id == 0 || id as usize > MAX_VARINT {
        return Err(EncodeError::Invalid(
            "subscription identifier outside 1..=268435455",
        ));
    }
    Ok(())
}

/// A reason code as one of mqttbytes' reason enums, whose conversions from `u8` are
/// private; `None` if the enum, like the specification for that packet, lacks it.
macro_rules! reason_lookup {
    ($name:ident, $ty:ty, [$($variant:ident),+ $(,)?]) => {
        fn $name(code: u8) -> Option<$ty> {
            [$(<$ty>::$variant),+].into_iter().find(|v| *v as u8 == code)
        }
    };
}

reason_lookup!(
    connack_reason,
    v5::ConnectReturnCode,
    [
        Success,
        UnspecifiedError,
        MalformedPacket,
        ProtocolError,
        ImplementationSpecificError,
        UnsupportedProtocolVersion,
        ClientIdentifierNotValid,
        BadUserNamePassword,
        NotAuthorized,
        ServerUnavailable,
        ServerBusy,
        Banned,
        BadAuthenticationMethod,
        TopicNameInvalid,
        PacketTooLarge,
        QuotaExceeded,
        PayloadFormatInvalid,
        RetainNotSupported,
        QoSNotSupported,
        UseAnotherServer,
        ServerMoved,
        ConnectionRateExceeded,
    ]
);
reason_lookup!(
    puback_reason,
    v5::PubAckReason,
    [
        Success,
        NoMatchingSubscribers,
        UnspecifiedError,
        ImplementationSpecificError,
        NotAuthorized,
        TopicNameInvalid,
        PacketIdentifierInUse,
        QuotaExceeded,
        PayloadFormatInvalid,
    ]
);
reason_lookup!(
    pubrec_reason,
    v5::PubRecReason,
    [
        Success,
        NoMatchingSubscribers,
        UnspecifiedError,
        ImplementationSpecificError,
        NotAuthorized,
        TopicNameInvalid,
        PacketIdentifierInUse,
        QuotaExceeded,
        PayloadFormatInvalid,
    ]
);
reason_lookup!(
    pubrel_reason,
    v5::PubRelReason,
    [Success, PacketIdentifierNotFound]
);
reason_lookup!(
    pubcomp_reason,
    v5::PubCompReason,
    [Success, PacketIdentifierNotFound]
);
reason_lookup!(
    unsuback_reason,
    v5::UnsubAckReason,
    [
        Success,
        NoSubscriptionExisted,
        UnspecifiedError,
        ImplementationSpecificError,
        NotAuthorized,
        TopicFilterInvalid,
        PacketIdentifierInUse,
    ]
);

fn write_connect(c: &Connect, v5: bool, out: &mut BytesMut) -> Result<usize, EncodeError> {
    if !v5 && c.password.is_some() && c.username.is_none() {
        return Err(EncodeError::Invalid(
            "3.1.1 CONNECT with a password but no user name",
        ));
    }
    check_field("client identifier", c.client_id.len())?;
    // mqttbytes leaves out an empty user name or password, and holds the password as a
    // String: refuse what it would get wrong.
    let login = if c.username.is_some() || c.password.is_some() {
        let username = c.username.clone().unwrap_or_default();
        let password = match &c.password {
            Some(p) => String::from_utf8(p.to_vec())
                .map_err(|_| EncodeError::Invalid("binary password (mqttbytes writes a string)"))?,
            None => String::new(),
        };
        if c.username.as_deref() == Some("") || c.password.as_ref().is_some_and(|p| p.is_empty()) {
            return Err(EncodeError::Invalid(
                "empty user name or password (mqttbytes leaves it out)",
            ));
        }
        check_field("user name", username.len())?;
        check_field("password", password.len())?;
        Some((username, password))
    } else {
        None
    };
    if let Some(will) = &c.will {
        check_field("will topic", will.topic.len())?;
        check_field("will payload", will.payload.len())?;
        if v5 {
            check_message_properties(&will.properties)?;
        }
    }

    if !v5 {
        let connect = v4::Connect {
            protocol: mqttbytes::Protocol::V4,
            keep_alive: c.keep_alive,
            client_id: c.client_id.clone(),
            clean_session: c.clean_start,
            last_will: c.will.as_ref().map(|w| v4::LastWill {
                topic: w.topic.clone(),
                message: w.payload.clone(),
                qos: to_qos(w.qos),
                retain: w.retain,
            }),
            login: login.map(|(username, password)| v4::Login { username, password }),
        };
        check_remaining(connect.len())?;
        return write_with(out, |out| connect.write(out));
    }

    check_opt_field(
        "authentication method",
        c.authentication_method.as_deref().map(str::as_bytes),
    )?;
    check_user_properties(&c.user_properties)?;
    let connect = v5::Connect {
        protocol: mqttbytes::Protocol::V5,
        keep_alive: c.keep_alive,
        client_id: c.client_id.clone(),
        clean_session: c.clean_start,
        last_will: c.will.as_ref().map(|w| v5::LastWill {
            topic: w.topic.clone(),
            message: w.payload.clone(),
            qos: to_qos(w.qos),
            retain: w.retain,
            properties: Some(v5::WillProperties {
                delay_interval: (w.delay_interval != 0).then_some(w.delay_interval),
                payload_format_indicator: w.properties.payload_format_indicator,
                message_expiry_interval: w.properties.message_expiry_interval,
                content_type: w.properties.content_type.clone(),
                response_topic: w.properties.response_topic.clone(),
                correlation_data: w.properties.correlation_data.clone(),
                user_properties: w.properties.user_properties.clone(),
            }),
        }),
        login: login.map(|(username, password)| v5::Login { username, password }),
        properties: Some(v5::ConnectProperties {
            session_expiry_interval: c.session_expiry_interval,
            receive_maximum: c.receive_maximum,
            max_packet_size: c.maximum_packet_size,
            topic_alias_max: c.topic_alias_maximum,
            request_response_info: c.request_response_information,
            request_problem_info: c.request_problem_information,
            user_properties: c.user_properties.clone(),
            authentication_method: c.authentication_method.clone(),
            authentication_data: None,
        }),
    };
    check_remaining(connect.len())?;
    write_with(out, |out| connect.write(out))
}

/// A 5.0 CONNACK reason code as a 3.1.1 return code.
fn v4_connack_code(code: u8) -> v4::ConnectReturnCode {
    use v4::ConnectReturnCode as Rc;
    match code {
        reason::SUCCESS => Rc::Success,
        reason::UNSUPPORTED_PROTOCOL_VERSION => Rc::RefusedProtocolVersion,
        reason::CLIENT_ID_NOT_VALID => Rc::BadClientId,
        reason::SERVER_UNAVAILABLE | reason::SERVER_BUSY => Rc::ServiceUnavailable,
        reason::BAD_USERNAME_OR_PASSWORD => Rc::BadUserNamePassword,
        reason::NOT_AUTHORIZED | reason::BAD_AUTH_METHOD => Rc::NotAuthorized,
        // 3.1.1 has nothing closer for any other refusal.
        _ => Rc::ServiceUnavailable,
    }
}

fn write_connack(c: &ConnAck, v5: bool, out: &mut BytesMut) -> Result<usize, EncodeError> {
    let session_present = c.session_present && c.code == reason::SUCCESS;
    if !v5 {
        let ack = v4::ConnAck::new(v4_connack_code(c.code), session_present);
        return write_with(out, |out| ack.write(out));
    }
    let code = connack_reason(c.code).ok_or(EncodeError::Invalid("not a CONNACK reason code"))?;
    check_opt_field(
        "assigned client identifier",
        c.assigned_client_identifier.as_deref().map(str::as_bytes),
    )?;
    check_opt_field(
        "reason string",
        c.reason_string.as_deref().map(str::as_bytes),
    )?;
    check_user_properties(&c.user_properties)?;
    let mut props = v5::ConnAckProperties::new();
    props.session_expiry_interval = c.session_expiry_interval;
    props.receive_max = c.receive_maximum;
    props.max_qos = c.maximum_qos;
    props.retain_available = c.retain_available;
    props.max_packet_size = c.maximum_packet_size;
    props.assigned_client_identifier = c.assigned_client_identifier.clone();
    props.topic_alias_max = c.topic_alias_maximum;
    props.reason_string = c.reason_string.clone();
    props.user_properties = c.user_properties.clone();
    props.wildcard_subscription_available = c.wildcard_subscription_available;
    props.subscription_identifiers_available = c.subscription_identifiers_available;
    props.shared_subscription_available = c.shared_subscription_available;
    props.server_keep_alive = c.server_keep_alive;
    props.server_reference = c.server_reference.clone();
    // Its property length counted at its longest (4 bytes).
    check_remaining(2 + 4 + props.len())?;
    let ack = v5::ConnAck {
        session_present,
        code,
        // Always present: without properties mqttbytes leaves out the property length,
        // which 5.0 requires.
        properties: Some(props),
    };
    write_with(out, |out| ack.write(out))
}

fn write_publish(p: &Publish, v5: bool, out: &mut BytesMut) -> Result<usize, EncodeError> {
    if p.dup && p.qos == QoS::AtMostOnce {
        return Err(EncodeError::Invalid("DUP on a QoS 0 PUBLISH"));
    }
    if p.qos != QoS::AtMostOnce {
        check_pkid(p.pkid, "PUBLISH")?;
    }
    check_field("topic name", p.topic.len())?;
    // Sent once per delivery per subscriber. mqttbytes' structs own their fields: the topic
    // is copied, the payload shared, and properties copied only when there are any.
    if !v5 {
        let publish = v4::Publish {
            dup: p.dup,
            qos: to_qos(p.qos),
            retain: p.retain,
            topic: p.topic.clone(),
            pkid: p.pkid,
            payload: p.payload.clone(),
        };
        let len = publish.len();
        check_remaining(len)?;
        out.reserve(5 + len);
        return write_with(out, |out| publish.write(out));
    }
    let m = &p.properties;
    let properties =
        if p.topic_alias.is_none() && p.subscription_identifiers.is_empty() && m.is_empty() {
            None
        } else {
            if p.topic_alias == Some(0) {
                return Err(EncodeError::Invalid("topic alias 0"));
            }
            for &id in &p.subscription_identifiers {
                check_subscription_identifier(id)?;
            }
            check_message_properties(m)?;
            Some(v5::PublishProperties {
                payload_format_indicator: m.payload_format_indicator,
                message_expiry_interval: m.message_expiry_interval,
                topic_alias: p.topic_alias,
                response_topic: m.response_topic.clone(),
                correlation_data: m.correlation_data.clone(),
                user_properties: m.user_properties.clone(),
                subscription_identifiers: p
                    .subscription_identifiers
                    .iter()
                    .map(|&id| id as usize)
                    .collect(),
                content_type: m.content_type.clone(),
            })
        };
    let publish = v5::Publish {
        dup: p.dup,
        qos: to_qos(p.qos),
        retain: p.retain,
        topic: p.topic.clone(),
        pkid: p.pkid,
        properties,
        payload: p.payload.clone(),
    };
    let len = publish.len();
    check_remaining(len)?;
    out.reserve(5 + len);
    write_with(out, |out| publish.write(out))
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP (`packet` says which). mqttbytes writes the shortest
/// 5.0 form: nothing after the packet id for success without properties.
fn write_ack(packet: &Packet, a: &Ack, v5: bool, out: &mut BytesMut) -> Result<usize, EncodeError> {
    let name = match packet {
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        _ => "PUBCOMP",
    };
    check_pkid(a.pkid, name)?;
    let pkid = a.pkid;
    if !v5 {
        return match packet {
            Packet::PubAck(_) => write_with(out, |out| v4::PubAck::new(pkid).write(out)),
            Packet::PubRec(_) => write_with(out, |out| v4::PubRec::new(pkid).write(out)),
            Packet::PubRel(_) => write_with(out, |out| v4::PubRel::new(pkid).write(out)),
            _ => write_with(out, |out| v4::PubComp::new(pkid).write(out)),
        };
    }
    check_opt_field(
        "reason string",
        a.reason_string.as_deref().map(str::as_bytes),
    )?;
    let not_allowed = EncodeError::Invalid("reason code not allowed in this acknowledgement");
    // Four distinct mqttbytes types of the same shape.
    macro_rules! write_v5 {
        ($ack:ident, $props:ident, $reason:ident) => {{
            let ack = v5::$ack {
                pkid,
                reason: $reason(a.code).ok_or(not_allowed)?,
                properties: a.reason_string.as_ref().map(|r| v5::$props {
                    reason_string: Some(r.clone()),
                    user_properties: Vec::new(),
                }),
            };
            write_with(out, |out| ack.write(out))
        }};
    }
    match packet {
        Packet::PubAck(_) => write_v5!(PubAck, PubAckProperties, puback_reason),
        Packet::PubRec(_) => write_v5!(PubRec, PubRecProperties, pubrec_reason),
        Packet::PubRel(_) => write_v5!(PubRel, PubRelProperties, pubrel_reason),
        _ => write_v5!(PubComp, PubCompProperties, pubcomp_reason),
    }
}

fn write_subscribe(s: &Subscribe, v5: bool, out: &mut BytesMut) -> Result<usize, EncodeError> {
    if s.filters.is_empty() {
        return Err(EncodeError::Invalid("SUBSCRIBE without topic filters"));
    }
    check_pkid(s.pkid, "SUBSCRIBE")?;
    for f in &s.filters {
        check_field("topic filter", f.filter.len())?;
    }
    if !v5 {
        let subscribe = v4::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .iter()
                .map(|f| v4::SubscribeFilter::new(f.filter.clone(), to_qos(f.qos)))
                .collect(),
        };
        check_remaining(subscribe.len())?;
        return write_with(out, |out| subscribe.write(out));
    }
    if let Some(id) = s.subscription_identifier {
        check_subscription_identifier(id)?;
    }
    check_user_properties(&s.user_properties)?;
    let subscribe = v5::Subscribe {
        pkid: s.pkid,
        filters: s
            .filters
            .iter()
            .map(|f| v5::SubscribeFilter {
                path: f.filter.clone(),
                qos: to_qos(f.qos),
                nolocal: f.no_local,
                preserve_retain: f.retain_as_published,
                retain_forward_rule: match f.retain_handling {
                    RetainHandling::OnSubscribe => v5::RetainForwardRule::OnEverySubscribe,
                    RetainHandling::OnNewSubscribe => v5::RetainForwardRule::OnNewSubscribe,
                    RetainHandling::Never => v5::RetainForwardRule::Never,
                },
            })
            .collect(),
        properties: Some(v5::SubscribeProperties {
            id: s.subscription_identifier.map(|id| id as usize),
            user_properties: s.user_properties.clone(),
        }),
    };
    check_remaining(subscribe.len())?;
    write_with(out, |out| subscribe.write(out))
}

fn write_suback(s: &SubAck, v5: bool, out: &mut BytesMut) -> Result<usize, EncodeError> {
    if s.codes.is_empty() {
        return Err(EncodeError::Invalid("SUBACK without return codes"));
    }
    check_pkid(s.pkid, "SUBACK")?;
    if !v5 {
        let codes = s.codes.iter().map(|&code| match QoS::from_u8(code) {
            Some(qos) => v4::SubscribeReasonCode::Success(to_qos(qos)),
            // 3.1.1 has a single failure code.
            None => v4::SubscribeReasonCode::Failure,
        });
        let ack = v4::SubAck::new(s.pkid, codes.collect());
        check_remaining(ack.len())?;
        return write_with(out, |out| ack.write(out));
    }
    check_opt_field(
        "reason string",
        s.reason_string.as_deref().map(str::as_bytes),
    )?;
    let codes = s
        .codes
        .iter()
        .map(|&code| v5::SubscribeReasonCode::try_from(code))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| EncodeError::Invalid("not a SUBACK reason code"))?;
    let ack = v5::SubAck {
        pkid: s.pkid,
        return_codes: codes,
        properties: s.reason_string.as_ref().map(|r| v5::SubAckProperties {
            reason_string: Some(r.clone()),
            user_properties: Vec::new(),
        }),
    };
    check_remaining(ack.len())?;
    write_with(out, |out| ack.write(out))
}

fn write_unsubscribe(u: &Unsubscribe, v5: bool, out: &mut BytesMut) -> Result<usize, EncodeError> {
    if u.filters.is_empty() {
        return Err(EncodeError::Invalid("UNSUBSCRIBE without topic filters"));
    }
    check_pkid(u.pkid, "UNSUBSCRIBE")?;
    for filter in &u.filters {
        check_field("topic filter", filter.len())?;
    }
    // Packet id, each filter with its length, and a 5.0 property length of 0.
    let len = 2 + u.filters.iter().map(|f| 2 + f.len()).sum::<usize>() + usize::from(v5);
    check_remaining(len)?;
    if v5 {
        let unsubscribe = v5::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters.clone(),
            properties: None,
        };
        write_with(out, |out| unsubscribe.write(out))
    } else {
        let unsubscribe = v4::Unsubscribe {
            pkid: u.pkid,
            topics: u.filters.clone(),
        };
        write_with(out, |out| unsubscribe.write(out))
    }
}

fn write_unsuback(u: &UnsubAck, v5: bool, out: &mut BytesMut) -> Result<usize, EncodeError> {
    check_pkid(u.pkid, "UNSUBACK")?;
    if !v5 {
        return write_with(out, |out| v4::UnsubAck::new(u.pkid).write(out));
    }
    if u.codes.is_empty() {
        return Err(EncodeError::Invalid("5.0 UNSUBACK without reason codes"));
    }
    let reasons = u
        .codes
        .iter()
        .map(|&code| unsuback_reason(code))
        .collect::<Option<Vec<_>>>()
        .ok_or(EncodeError::Invalid("not an UNSUBACK reason code"))?;
    let ack = v5::UnsubAck {
        pkid: u.pkid,
        reasons,
        properties: None,
    };
    check_remaining(ack.len())?;
    write_with(out, |out| ack.write(out))
}

/// 5.0 only (3.1.1 has no server DISCONNECT).
fn write_disconnect(d: &Disconnect, out: &mut BytesMut) -> Result<usize, EncodeError> {
    let code = v5::DisconnectReasonCode::try_from(d.code)
        .map_err(|_| EncodeError::Invalid("not a DISCONNECT reason code"))?;
    check_opt_field(
        "reason string",
        d.reason_string.as_deref().map(str::as_bytes),
    )?;
    check_opt_field(
        "server reference",
        d.server_reference.as_deref().map(str::as_bytes),
    )?;
    if d.session_expiry_interval.is_none()
        && d.reason_string.is_none()
        && d.server_reference.is_none()
    {
        // Written here: mqttbytes writes `E0 00` (even for an empty property section, its
        // "length 2" case) or `E0 01 rc`, which its own reader and rumqttc's refuse.
        out.put_slice(&[0xE0, 2, d.code, 0]);
        return Ok(4);
    }
    let mut props = v5::DisconnectProperties::new();
    props.session_expiry_interval = d.session_expiry_interval;
    props.reason_string = d.reason_string.clone();
    props.server_reference = d.server_reference.clone();
    let disconnect = v5::Disconnect {
        reason_code: code,
        properties: Some(props),
    };
    write_with(out, |out| disconnect.write(out))
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
        let mut out = vec![byte1];
        let mut len = body.len();
        loop {
            let byte = (len & 0x7F) as u8;
            len >>= 7;
            if len == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.extend_from_slice(body);
        out
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
            // Binary passwords are a documented limitation (mqttbytes holds a String); U+0000
            // is still fine in one.
            password: Some(Bytes::from_static(b"pa\0ss")),
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
                    server_reference: Some("other:1883".into()),
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
        for (protocol, c) in [
            (V4, connect(V4)),
            (V4, full_connect(V4)),
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
                                                     // Declared 1, but the property takes 2: mqttbytes reads on into the client id, and
                                                     // the packet would even re-encode to its own length.
        assert_malformed(dec_connect(&connect_frame(
            5,
            0b10,
            &[1, 0x17, 1, 0, 1, b'c'],
        )));
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
    fn disconnect_reason_codes_and_trailing_bytes() {
        // mqttbytes' list of DISCONNECT codes judges the code, short form included.
        assert_protocol(dec(&[0xE0, 0x01, 0x05], V5));
        assert_protocol(dec(&[0xE0, 0x02, 0x05, 0x00], V5));
        assert_eq!(
            dec_one(&[0xE0, 0x01, 0x04], V5),
            Packet::Disconnect(Disconnect {
                code: 0x04,
                ..Disconnect::default()
            })
        );
        // Bytes after the property section.
        assert_malformed(dec(&[0xE0, 0x03, 0x00, 0x00, 0x00], V5));
        assert_malformed(dec(&[0xF0, 0x03, 0x00, 0x00, 0x00], V5));
    }

    #[test]
    fn ack_property_checks() {
        let reason = [0x1F, 0, 1, b'a'];
        let twice: Vec<u8> = [&[0, 1, 0x10, 8][..], &reason, &reason].concat();
        assert_protocol(dec(&frame(0x40, &twice), V5));
        // U+0000 in a string mqttbytes would read and the engine drop.
        assert_malformed(dec(&frame(0x40, &[0, 1, 0x10, 4, 0x1F, 0, 1, 0]), V5));
        let user = [0, 1, 0x10, 5, 0x26, 0, 0, 0, 0];
        assert_eq!(
            dec_one(&frame(0x50, &user), V5),
            Packet::PubRec(Ack::new(1, 0x10))
        );
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
            // Reason codes the packet may not carry.
            Packet::ConnAck(ConnAck {
                code: reason::KEEP_ALIVE_TIMEOUT,
                ..ConnAck::default()
            }),
            Packet::PubAck(Ack::new(1, reason::PACKET_ID_NOT_FOUND)),
            Packet::PubComp(Ack::new(1, reason::QUOTA_EXCEEDED)),
            Packet::SubAck(SubAck {
                pkid: 1,
                codes: vec![0, reason::NO_SUBSCRIPTION_EXISTED],
                reason_string: None,
            }),
            Packet::UnsubAck(UnsubAck {
                pkid: 1,
                codes: vec![reason::GRANTED_QOS1],
            }),
            Packet::Disconnect(Disconnect {
                code: 0x05,
                ..Disconnect::default()
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

    #[test]
    fn mqttbytes_limitations() {
        // Binary passwords: mqttbytes reads and writes passwords as strings.
        let binary = [0, 1, b'c', 0, 1, b'u', 0, 2, 0xFF, 0xFE];
        assert_malformed(dec_connect(&connect_frame(4, 0b1100_0000, &binary)));
        let c = Connect {
            username: Some("u".into()),
            password: Some(Bytes::from_static(&[0xFF, 0xFE])),
            ..connect(V4)
        };
        let mut out = BytesMut::new();
        let err = encode(&Packet::Connect(c), V4, &mut out).unwrap_err();
        assert!(matches!(err, EncodeError::Invalid(_)), "{err}");
        assert!(out.is_empty());

        // An empty user name or password decodes as sent (the connect flags say so), but
        // cannot be encoded: mqttbytes would leave it out.
        let empty = [0, 1, b'c', 0, 0, 0, 0];
        let c = dec_connect(&connect_frame(4, 0b1100_0000, &empty))
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (Some(""), Some(&b""[..]))
        );
        assert!(encode(&Packet::Connect(c), V4, &mut out).is_err());
        let c = dec_connect(&connect_frame(5, 0b0100_0000, &[0, 0, 1, b'c', 0, 0]))
            .unwrap()
            .unwrap();
        assert_eq!((c.username, c.password), (None, Some(Bytes::new())));
        assert!(out.is_empty());
    }

    // --- mqttbytes as an oracle: it reads what we write (the field mapping of packets we
    // never decode), we read what it writes (packets built without our encoder) ----------

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
            server_reference: Some("node2:1883".into()),
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
        assert_eq!(props.server_reference.as_deref(), Some("node2:1883"));
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
            server_reference: None,
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
