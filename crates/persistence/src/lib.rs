//! sled-backed storage for openraft 0.9 (storage-v2), generic over the type config.
//!
//! Map:
//! - [`open`] opens one `sled::Db` (cache 64 MiB) and returns both halves of the storage.
//!   A second open of the same path (in-process or by another process) fails with
//!   [`OpenError::Locked`]; a corrupt stored value fails with [`OpenError::Corrupt`].
//! - [`LogStore`] (`log_store.rs`): `RaftLogReader` + `RaftLogStorage` on the trees
//!   `raft_log` (key = index `u64` big-endian, value = bincode-2 serde of the entry) and
//!   `raft_meta` (`vote`, `committed`, `last_purged`). Votes and appends are fsynced
//!   before they are acknowledged.
//! - [`StateMachineStore`] (`state_machine.rs`): `RaftStateMachine` +
//!   `RaftSnapshotBuilder` over an in-memory application state `A: Apply<C>`, made durable
//!   by the log plus snapshots kept in the trees `snapshot` and `sm_meta`.
//!
//! Both halves require `C::Entry = openraft::Entry<C>` and
//! `C::SnapshotData = std::io::Cursor<Vec<u8>>`.

mod codec;
mod log_store;
mod state_machine;

use std::io::Cursor;
use std::path::{Path, PathBuf};

use openraft::RaftTypeConfig;

pub use log_store::LogStore;
pub use state_machine::{Apply, SnapshotBuilder, StateMachineStore, SNAPSHOT_FORMAT_VERSION};

/// sled page-cache size; sled's default (1 GiB) is far more than we want.
pub const CACHE_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

/// Why [`open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another handle (this process or another one) holds the database lock.
    #[error("storage at {path} is locked by another open handle or process")]
    Locked { path: PathBuf },
    /// Any other I/O or sled failure while opening.
    #[error("cannot open storage at {path}: {source}")]
    Sled {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    /// A stored value could not be decoded.
    #[error("corrupt value in storage at {path}: {what}")]
    Corrupt { path: PathBuf, what: String },
}

/// Opens (creating if needed) the storage at `path` and returns the log store and the state
/// machine store, both backed by the same `sled::Db`.
pub fn open<C, A>(
    path: impl AsRef<Path>,
) -> Result<(LogStore<C>, StateMachineStore<C, A>), OpenError>
where
    C: RaftTypeConfig<Entry = openraft::Entry<C>, SnapshotData = Cursor<Vec<u8>>>,
    A: Apply<C>,
{
    let path = path.as_ref().to_path_buf();
    let db = sled::Config::new()
        .path(&path)
        .cache_capacity(CACHE_CAPACITY_BYTES)
        .open()
        .map_err(|e| map_open_error(&path, e))?;
    let sled_err = |source| OpenError::Sled {
        path: path.clone(),
        source,
    };
    let log = LogStore::new(&db).map_err(sled_err)?;
    log.check().map_err(|what| OpenError::Corrupt {
        path: path.clone(),
        what,
    })?;
    let sm = StateMachineStore::load(&db).map_err(|e| match e {
        state_machine::LoadError::Sled(source) => OpenError::Sled {
            path: path.clone(),
            source,
        },
        state_machine::LoadError::Corrupt(what) => OpenError::Corrupt {
            path: path.clone(),
            what,
        },
    })?;
    Ok((log, sm))
}

fn map_open_error(path: &Path, e: sled::Error) -> OpenError {
    if let sled::Error::Io(io) = &e {
        // sled 0.34 reports a held lock as `Other` with this message; fs2 may surface
        // `WouldBlock` directly.
        if io.kind() == std::io::ErrorKind::WouldBlock
            || io.to_string().contains("could not acquire lock")
        {
            return OpenError::Locked {
                path: path.to_path_buf(),
            };
        }
    }
    OpenError::Sled {
        path: path.to_path_buf(),
        source: e,
    }
}
