//! An application message as routed, and its encoded PUBLISH header, made once and
//! shared by every subscriber.
//!
//! Subscribers of one message mostly receive the same bytes: only the fixed header's
//! flags (DUP, QoS, RETAIN) and the packet id differ. Encoding the header once per
//! protocol and QoS class, then copying it and patching those bytes, takes the per-
//! subscriber encode (and its topic and property clones) off the fan-out path. The
//! payload is not part of the cached header: it is appended from the message itself,
//! so a queued or retained message does not hold its payload twice.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec;
use crate::packet::{MessageProperties, Packet, Protocol, Publish, QoS};

/// An application message as routed: built once per PUBLISH and shared, payload
/// included, by every session it goes to.
#[derive(Debug)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: MessageProperties,
    /// When the v5 message expiry interval runs out.
    pub expires_at: Option<Instant>,
    /// The publishing client, for v5 no-local.
    pub publisher: Option<Arc<str>>,
    /// Its encoded PUBLISH header, shared by the subscribers it goes to.
    pub wire: WireCache,
}

impl Message {
    pub fn new(
        topic: String,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        properties: MessageProperties,
        publisher: Option<Arc<str>>,
    ) -> Message {
        let expires_at = properties
            .message_expiry_interval
            .map(|s| Instant::now() + Duration::from_secs(u64::from(s)));
        Message {
            topic,
            payload,
            qos,
            retain,
            properties,
            expires_at,
            publisher,
            wire: WireCache::default(),
        }
    }

    /// Whether its message expiry interval has run out: such a message is dropped
    /// rather than sent.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// Headers by (protocol, with packet id); filled on first use.
#[derive(Default)]
pub struct WireCache {
    headers: [OnceLock<Option<Bytes>>; 4],
}

impl std::fmt::Debug for WireCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WireCache")
    }
}

impl Message {
    /// Appends this message as a PUBLISH with these flags and packet id, from the cached
    /// header; the bytes appended, or `None` when it cannot be encoded (the caller then
    /// takes the full encoding path, which reports why).
    pub(crate) fn write_publish(
        &self,
        protocol: Protocol,
        qos: QoS,
        dup: bool,
        retain: bool,
        pkid: u16,
        out: &mut BytesMut,
    ) -> Option<usize> {
        let with_pkid = qos != QoS::AtMostOnce;
        let slot = usize::from(protocol == Protocol::V5) * 2 + usize::from(with_pkid);
        let header = self.wire.headers[slot]
            .get_or_init(|| encode_header(self, protocol, with_pkid))
            .as_ref()?;
        let start = out.len();
        out.put_slice(header);
        out.put_slice(&self.payload);
        out[start] = 0x30 | (u8::from(dup) << 3) | ((qos as u8) << 1) | u8::from(retain);
        if with_pkid {
            let at = start + pkid_offset(header);
            out[at..at + 2].copy_from_slice(&pkid.to_be_bytes());
        }
        Some(out.len() - start)
    }
}

/// Encodes the message as a PUBLISH (QoS 1 with packet id 1, or QoS 0) and keeps all
/// but the payload.
fn encode_header(msg: &Message, protocol: Protocol, with_pkid: bool) -> Option<Bytes> {
    let (qos, pkid) = if with_pkid {
        (QoS::AtLeastOnce, 1)
    } else {
        (QoS::AtMostOnce, 0)
    };
    let publish = Publish {
        dup: false,
        qos,
        retain: false,
        topic: msg.topic.clone(),
        pkid,
        payload: msg.payload.clone(),
        topic_alias: None,
        subscription_identifiers: Vec::new(),
        properties: match protocol {
            Protocol::V5 => msg.properties.clone(),
            Protocol::V4 => Default::default(),
        },
    };
    let mut buf = BytesMut::new();
    codec::encode(&Packet::Publish(publish), protocol, &mut buf).ok()?;
    buf.truncate(buf.len().checked_sub(msg.payload.len())?);
    Some(buf.freeze())
}

/// Where the packet id sits: after the fixed header and the topic name.
fn pkid_offset(header: &[u8]) -> usize {
    let varint = header[1..].iter().take_while(|b| *b & 0x80 != 0).count() + 1;
    let topic_at = 1 + varint;
    let topic_len = usize::from(u16::from_be_bytes([header[topic_at], header[topic_at + 1]]));
    topic_at + 2 + topic_len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties() -> MessageProperties {
        MessageProperties {
            content_type: Some("text/plain".into()),
            user_properties: vec![("k".into(), "v".into())],
            ..Default::default()
        }
    }

    /// The patched copy is byte for byte what the codec encodes for that subscriber.
    #[test]
    fn patched_header_equals_full_encoding() {
        let payload = Bytes::from_static(b"hello");
        let msg = Message::new(
            "a/b".into(),
            payload.clone(),
            QoS::ExactlyOnce,
            true,
            properties(),
            None,
        );
        for protocol in [Protocol::V4, Protocol::V5] {
            for (qos, pkid) in [
                (QoS::AtMostOnce, 0),
                (QoS::AtLeastOnce, 7),
                (QoS::ExactlyOnce, 0x1234),
            ] {
                for (dup, retain) in [(false, false), (true, false), (false, true), (true, true)] {
                    if qos == QoS::AtMostOnce && dup {
                        continue;
                    }
                    let mut fast = BytesMut::from(&b"prefix"[..]);
                    let n = msg
                        .write_publish(protocol, qos, dup, retain, pkid, &mut fast)
                        .unwrap();
                    let full = Publish {
                        dup,
                        qos,
                        retain,
                        topic: "a/b".into(),
                        pkid,
                        payload: payload.clone(),
                        topic_alias: None,
                        subscription_identifiers: Vec::new(),
                        properties: match protocol {
                            Protocol::V5 => properties(),
                            Protocol::V4 => MessageProperties::default(),
                        },
                    };
                    let mut expected = BytesMut::from(&b"prefix"[..]);
                    codec::encode(&Packet::Publish(full), protocol, &mut expected).unwrap();
                    assert_eq!(n, expected.len() - 6);
                    assert_eq!(
                        fast, expected,
                        "{protocol:?} {qos:?} dup={dup} retain={retain}"
                    );
                }
            }
        }
    }
}
