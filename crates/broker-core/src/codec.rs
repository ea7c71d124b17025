//! TODO STUB (replaced by helper)
use bytes::BytesMut;
use crate::packet::{Connect, Packet, Protocol};
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed packet: {0}")] Malformed(String),
    #[error("protocol error: {0}")] Protocol(String),
    #[error("packet of {size} bytes exceeds maximum {max}")] TooLarge { size: usize, max: usize },
    #[error("unsupported protocol {name:?} level {level}")] UnsupportedProtocol { name: String, level: u8 },
}
impl DecodeError { pub fn reason_code(&self) -> u8 { 0x81 } }
#[derive(Debug, thiserror::Error)]
#[error("encode")]
pub struct EncodeError;
pub fn decode_connect(_b: &mut BytesMut, _m: usize) -> Result<Option<Connect>, DecodeError> { unimplemented!() }
pub fn decode(_b: &mut BytesMut, _p: Protocol, _m: usize) -> Result<Option<Packet>, DecodeError> { unimplemented!() }
pub fn encode(_p: &Packet, _v: Protocol, _o: &mut BytesMut) -> Result<usize, EncodeError> { unimplemented!() }
