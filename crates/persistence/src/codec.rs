//! bincode-2 (serde, standard config) helpers and the blocking-flush helper.

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

/// fsyncs the whole `Db` (all trees share one log) on the blocking pool.
///
/// Never `flush_async`: it hangs with concurrent callers in sled 0.34.7 (sled#1308).
pub(crate) async fn flush(db: &sled::Db) -> std::io::Result<()> {
    let db = db.clone();
    match tokio::task::spawn_blocking(move || db.flush()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(join) => Err(std::io::Error::other(join)),
    }
}
