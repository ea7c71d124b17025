//! sled-backed storage for openraft 0.9 (storage-v2), generic over the type config.
//!
//! Map:
//! - [`open`] opens one `sled::Db` (cache 64 MiB) in a data directory (`disk.rs`) and
//!   returns both halves of the storage. A second open of the same path (in-process or by
//!   another process) fails with [`OpenError::Locked`]; a corrupt stored value fails with
//!   [`OpenError::Corrupt`].
//! - [`LogStore`] (`log_store.rs`): `RaftLogReader` + `RaftLogStorage` on the trees
//!   `raft_log` (key = index `u64` big-endian, value = bincode-2 serde of the entry) and
//!   `raft_meta` (`vote`, `committed`, `last_purged`).
//! - [`StateMachineStore`] (`state_machine.rs`): `RaftStateMachine` +
//!   `RaftSnapshotBuilder` over an in-memory application state `A: Apply<C>`, made durable
//!   by the log plus snapshots kept in the trees `snapshot` and `sm_meta`.
//!
//! Durability, and why it takes more than sled:
//! - What sled guarantees: its trees share one log file; a `flush()` writes everything
//!   accepted so far in log order, and recovery after a crash replays a prefix of that log
//!   (each batch and transaction whole or not at all), checking CRCs.
//! - What it does not: on Linux `flush()` ends in `sync_file_range`, not `fsync`, so a
//!   "flushed" write may still be only in the page cache (and the disk's write cache):
//!   a power cut loses it, a SIGKILL does not. Large values go to blob files that sled
//!   never syncs, and new files and renames are not made durable in their directory.
//! - What we add (`disk.rs`): after every `flush()`, `fdatasync` of the log file, `fsync`
//!   of new blob files and of the directories. A vote is durable before `save_vote`
//!   returns (so before any vote reply), log entries before `append` calls openraft's
//!   callback (so before any AppendEntries reply or commit, hence before any PUBACK), a
//!   snapshot before `install_snapshot` returns. `save_committed`, `truncate` and `purge`
//!   are not synced on their own: losing them only re-applies or re-truncates on restart,
//!   and the next synced write (sled's log is one sequence) carries them anyway. A purge
//!   only records `last_purged`; a background thread deletes the dead entries one by one
//!   (`log_store.rs` says why), and readers skip what `last_purged` covers meanwhile.
//! - Damage (a bad sector, a truncated file) makes sled replay its log only up to the
//!   damage, silently. `watermark.rs` records, outside sled, how far the log and the
//!   vote had been made durable, and [`open`] refuses a log that ends below that.
//! - The proof is a test, not this text: tests/powerfs is a filesystem that keeps writes
//!   in memory until they are fsynced and drops the rest on a simulated power cut; the
//!   power-loss scenarios in tests/cluster run the broker on it.
//!
//! Both halves require `C::Entry = openraft::Entry<C>` and
//! `C::SnapshotData = std::io::Cursor<Vec<u8>>`.

mod codec;
mod disk;
mod log_store;
mod state_machine;
mod watermark;

use std::io::Cursor;
use std::path::{Path, PathBuf};

use openraft::RaftTypeConfig;

use disk::Disk;

pub use log_store::LogStore;
pub use state_machine::{
    Apply, SnapshotBuilder, SnapshotFigures, StateMachineStore, SNAPSHOT_FORMAT_VERSION,
};

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
    C::D: Clone,
    A: Apply<C>,
{
    let path = path.as_ref().to_path_buf();
    let config = sled::Config::new().cache_capacity(CACHE_CAPACITY_BYTES);
    let disk = Disk::open(&path, config).map_err(|e| map_open_error(&path, e))?;
    let sled_err = |source| OpenError::Sled {
        path: path.clone(),
        source,
    };
    let corrupt = |what| OpenError::Corrupt {
        path: path.clone(),
        what,
    };
    let (watermark, mark) = watermark::Watermark::open(&path).map_err(corrupt)?;
    let log = LogStore::new(&disk, watermark).map_err(sled_err)?;
    log.check().map_err(corrupt)?;
    log.check_watermark(mark).map_err(corrupt)?;
    let sm = StateMachineStore::load(&disk).map_err(|e| match e {
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
    if let sled::Error::Corruption { .. } = &e {
        return OpenError::Corrupt {
            path: path.to_path_buf(),
            what: format!(
                "sled finds its files damaged ({e}) (see README, \"Recovering a damaged node\")"
            ),
        };
    }
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
