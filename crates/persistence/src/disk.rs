//! [`Disk`]: the sled database plus what it takes to make its writes survive a power cut.
//!
//! sled 0.34.7's `Db::flush()` writes its log buffers with `pwrite` and then, on Linux,
//! calls `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)` on the written range. That
//! starts and waits for writeback of those pages, but it is not an fsync: it persists
//! neither the file's size nor its metadata, and it does not flush the disk's volatile
//! write cache. Only sled's background flusher calls `fsync`, every 500 ms. Values too
//! large for a log segment (about 128 KiB: big snapshots, big batches) go to files in
//! `blobs/` that sled writes and never syncs, and sled creates files and renames its own
//! snapshots (`snap.*`) without syncing the directory. So what sled calls "flushed" is
//! lost on a power cut; a SIGKILL does not show it, because the page cache survives.
//!
//! What we add, in [`Disk::sync`], after every `flush()`: `fsync` of every blob file
//! not yet synced, of the `blobs/` directory and of the data directory (new files and
//! renames), and `fdatasync` of the log file `db` through a handle we keep (data and
//! size). Every write a reply depends on (a log append before its callback, a vote
//! before a vote reply, a snapshot before it is installed) ends in [`Disk::flush`].
//! [`Disk::open`] also syncs what sled created at open (`conf`, `db`, the directories up
//! to the first one that already existed), so a brand-new data directory is durable
//! before the node answers anyone.
//!
//! Proven by the power-loss tests (tests/powerfs, tests/cluster/t75_power_loss.rs): a
//! filesystem that keeps writes in memory until fsync and drops the rest on a "power
//! cut".

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The sled database of one data directory and the handles that make it durable.
pub(crate) struct Disk {
    db: sled::Db,
    dir: PathBuf,
    /// sled's log: every tree's writes land here.
    log_file: File,
    /// Blob files already fsynced (sled never rewrites a blob; it writes a new one).
    synced_blobs: Mutex<HashSet<OsString>>,
}

impl Disk {
    /// Creates the directory if needed, opens sled in it and syncs what the open wrote.
    pub(crate) fn open(dir: &Path, config: sled::Config) -> Result<Arc<Disk>, sled::Error> {
        create_dir_durably(dir)?;
        let db = config.path(dir).open()?;
        let disk = Disk {
            db,
            dir: dir.to_path_buf(),
            log_file: File::open(dir.join("db"))?,
            synced_blobs: Mutex::new(HashSet::new()),
        };
        if let Ok(conf) = File::open(dir.join("conf")) {
            conf.sync_all()?;
        }
        disk.sync()?;
        Ok(Arc::new(disk))
    }

    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Makes every write sled accepted so far durable (blocking).
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.db.flush().map_err(io::Error::from)?;
        self.sync_blobs()?;
        sync_dir(&self.dir)?;
        self.log_file.sync_data()
    }

    /// [`Disk::sync`] on the blocking pool.
    ///
    /// Never sled's `flush_async`: it hangs with concurrent callers in sled 0.34.7
    /// (sled#1308).
    pub(crate) async fn flush(self: &Arc<Self>) -> io::Result<()> {
        let disk = self.clone();
        match tokio::task::spawn_blocking(move || disk.sync()).await {
            Ok(res) => res,
            Err(join) => Err(io::Error::other(join)),
        }
    }

    /// fsyncs the blob files written since the last call, then the `blobs/` directory.
    fn sync_blobs(&self) -> io::Result<()> {
        let blobs = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|e| e.into_inner());
        let mut present = HashSet::with_capacity(synced.len());
        for entry in entries {
            let name = entry?.file_name();
            if !synced.contains(&name) {
                match File::open(blobs.join(&name)) {
                    Ok(f) => f.sync_all()?,
                    // sled removed it since (garbage collection): nothing to keep.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            present.insert(name);
        }
        // Forget removed blobs, so the set stays the size of the directory.
        *synced = present;
        drop(synced);
        sync_dir(&blobs)
    }
}

/// fsync of a directory: makes the creation, removal and renaming of its entries durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `create_dir_all`, then fsync of each parent whose entries changed, so the new
/// directories survive a power cut.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        at = d.parent();
    }
    std::fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}
