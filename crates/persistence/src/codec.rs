//! bincode-2 (serde, standard config) helpers.

use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
}

/// Appends the encoding of `v` to `out`: no copy of a large value after the fact.
pub(crate) fn encode_onto<T: Serialize>(
    out: &mut Vec<u8>,
    v: &T,
) -> Result<(), bincode::error::EncodeError> {
    bincode::serde::encode_into_std_write(v, out, bincode::config::standard()).map(drop)
}

/// Decodes a whole value; trailing bytes are treated as corruption.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (v, used) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|e| format!("corrupt value: {e}"))?;
    if used != bytes.len() {
        return Err(format!(
            "corrupt value: {} trailing bytes",
            bytes.len() - used
        ));
    }
    Ok(v)
}

/// A message-only error (decode failures, transaction aborts), usable as a
/// `StorageIOError` source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Msg(pub(crate) String);
