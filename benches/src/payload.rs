//! The message header every payload starts with: who sent it, its sequence number and
//! when, so that subscribers can count loss, duplicates, reordering and latency.

use bytes::BufMut;

/// Bytes of header; the rest of the payload is zero padding.
pub const HEADER_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub publisher: u32,
    pub seq: u32,
    /// Nanoseconds since the run's epoch (one process, so one monotonic clock).
    pub sent_ns: u64,
}

impl Header {
    /// Appends the header and pads to `len` bytes (at least `HEADER_LEN`).
    pub fn write(&self, buf: &mut impl BufMut, len: usize) {
        buf.put_u32(self.publisher);
        buf.put_u32(self.seq);
        buf.put_u64(self.sent_ns);
        buf.put_bytes(0, len.saturating_sub(HEADER_LEN));
    }

    /// `None` for a payload too short to be ours.
    pub fn read(payload: &[u8]) -> Option<Header> {
        let b = payload.get(..HEADER_LEN)?;
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let sent = u64::from_be_bytes(b[8..16].try_into().expect("8 bytes"));
        Some(Header {
            publisher: u32_at(0),
            seq: u32_at(4),
            sent_ns: sent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads() {
        let h = Header {
            publisher: 7,
            seq: 123_456,
            sent_ns: 9_876_543_210,
        };
        let mut buf = Vec::new();
        h.write(&mut buf, 64);
        assert_eq!(buf.len(), 64);
        assert_eq!(Header::read(&buf), Some(h));
        assert_eq!(Header::read(&buf[..15]), None);
    }
}
