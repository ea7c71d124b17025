//! bincode-2 (serde, standard config) helpers.

use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
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
