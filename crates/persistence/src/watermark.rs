//! [`Watermark`]: how far the log is known to have been on disk, kept outside sled, so
//! that a damaged data directory is refused instead of silently served short.
//!
//! sled checks a CRC on every message of its log and, at open, replays the log up to the
//! first message that fails it. A damaged file (a bad sector, a bit flip, a truncation)
//! thus opens "fine" with everything after the damage gone: entries this node had
//! fsynced and acknowledged to the leader, and its vote. A Raft member that comes back
//! with less than it promised can let an acknowledged message be lost, or vote twice in
//! one term; a single node would just lose data. So we record, in a small file of our
//! own, the highest log index and vote term that were durable, and [`Watermark::check`]
//! at open refuses a log that ends below it.
//!
//! The file is rewritten and fsynced by a background thread every [`PERIOD`] when the
//! mark moved, not on the write path: a commit costs no second fsync. The price is that
//! damage confined to the last [`PERIOD`] of writes before a crash goes unnoticed (it is
//! then indistinguishable from a power cut just before those writes). A truncation of
//! the log by Raft (a follower dropping a dead leader's uncommitted tail) lowers the mark
//! first, synchronously, so a legitimate truncation is never mistaken for damage.
//!
//! File format (24 bytes, within one sector, so it is written whole or not at all): the
//! magic `RAFTMQW1`, then the log index and the vote term, each a `u64` big-endian
//! holding `value + 1` (0: none).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How often the background thread persists a moved mark.
pub const PERIOD: Duration = Duration::from_millis(100);
const MAGIC: &[u8; 8] = b"RAFTMQW1";
const FILE: &str = "raftmq.watermark";

/// Durable log index and vote term, as recorded (`None`: nothing yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Mark {
    pub index: Option<u64>,
    pub term: Option<u64>,
}

impl Mark {
    fn encode(self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.index.map_or(0, |i| i + 1).to_be_bytes());
        b[16..].copy_from_slice(&self.term.map_or(0, |t| t + 1).to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Mark> {
        if b.len() != 24 || &b[..8] != MAGIC {
            return None;
        }
        let get = |r: std::ops::Range<usize>| {
            let v = u64::from_be_bytes(b[r].try_into().expect("8 bytes"));
            v.checked_sub(1)
        };
        Some(Mark {
            index: get(8..16),
            term: get(16..24),
        })
    }
}

/// The mark in memory (what is durable in sled) and in its file (what was persisted).
pub(crate) struct Watermark {
    file: File,
    /// `index + 1` and `term + 1` of what sled has made durable; 0 is none.
    index: AtomicU64,
    term: AtomicU64,
    /// What the file holds; the lock also orders writers.
    written: Mutex<Mark>,
}

impl Watermark {
    /// Opens (creating) the file in `dir` and returns it with the mark it held, or an
    /// error naming the damage if it is unreadable. Starts the background thread.
    pub(crate) fn open(dir: &Path) -> Result<(Arc<Watermark>, Mark), String> {
        let path = dir.join(FILE);
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mark = match (existed, bytes.is_empty()) {
            // Created now, or by a run that died before its first write: nothing known.
            (false, _) | (true, true) => Mark::default(),
            (true, false) => Mark::decode(&bytes)
                .ok_or_else(|| format!("{} is damaged ({} bytes)", path.display(), bytes.len()))?,
        };
        if !existed {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let w = Arc::new(Watermark {
            file,
            index: AtomicU64::new(mark.index.map_or(0, |i| i + 1)),
            term: AtomicU64::new(mark.term.map_or(0, |t| t + 1)),
            written: Mutex::new(mark),
        });
        let weak = Arc::downgrade(&w);
        std::thread::Builder::new()
            .name("raftmq-watermark".into())
            .spawn(move || persist_loop(weak))
            .map_err(|e| format!("watermark thread: {e}"))?;
        Ok((w, mark))
    }

    /// Log entries up to `index` are durable (called after the fsync).
    pub(crate) fn log_durable(&self, index: u64) {
        self.index.fetch_max(index + 1, Ordering::AcqRel);
    }

    /// A vote of `term` is durable (called after the fsync).
    pub(crate) fn vote_durable(&self, term: u64) {
        self.term.fetch_max(term + 1, Ordering::AcqRel);
    }

    /// Before Raft truncates the log from `index` on: the mark drops below it, on disk,
    /// before the truncation can be.
    pub(crate) fn truncating(&self, index: u64) -> io::Result<()> {
        self.index.fetch_min(index, Ordering::AcqRel);
        self.persist()
    }

    fn current(&self) -> Mark {
        let get = |a: &AtomicU64| a.load(Ordering::Acquire).checked_sub(1);
        Mark {
            index: get(&self.index),
            term: get(&self.term),
        }
    }

    /// Writes and fsyncs the mark if it moved since the last write.
    fn persist(&self) -> io::Result<()> {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.current();
        if now == *written {
            return Ok(());
        }
        self.file.write_all_at(&now.encode(), 0)?;
        self.file.sync_data()?;
        *written = now;
        Ok(())
    }
}

fn persist_loop(w: Weak<Watermark>) {
    loop {
        std::thread::sleep(PERIOD);
        let Some(w) = w.upgrade() else { return };
        if let Err(e) = w.persist() {
            tracing::warn!("cannot persist the durability watermark: {e}");
        }
    }
}

/// Refuses storage whose log or vote ends below the mark: the data dir lost what it had
/// made durable.
pub(crate) fn check(
    mark: Mark,
    last_index: Option<u64>,
    vote_term: Option<u64>,
) -> Result<(), String> {
    if mark.index > last_index {
        return Err(format!(
            "the Raft log ends at index {} but had reached {} on disk: the data directory \
             is damaged (see README, \"Recovering a damaged node\")",
            last_index.map_or("none".to_string(), |i| i.to_string()),
            mark.index.unwrap_or_default()
        ));
    }
    if mark.term > vote_term {
        return Err(format!(
            "the stored vote is for term {} but a vote for term {} was on disk: the data \
             directory is damaged (see README, \"Recovering a damaged node\")",
            vote_term.map_or("none".to_string(), |t| t.to_string()),
            mark.term.unwrap_or_default()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let m = Mark {
            index: Some(41),
            term: Some(0),
        };
        assert_eq!(Mark::decode(&m.encode()), Some(m));
        assert_eq!(
            Mark::decode(&Mark::default().encode()),
            Some(Mark::default())
        );
        let mut bad = m.encode();
        bad[0] ^= 1;
        assert_eq!(Mark::decode(&bad), None);
        assert_eq!(Mark::decode(&m.encode()[..20]), None);
    }

    #[test]
    fn check_refuses_less_than_the_mark() {
        let m = Mark {
            index: Some(10),
            term: Some(3),
        };
        assert!(check(m, Some(10), Some(3)).is_ok());
        assert!(check(m, Some(12), Some(4)).is_ok());
        assert!(check(m, Some(9), Some(3))
            .unwrap_err()
            .contains("ends at index 9"));
        assert!(check(m, None, Some(3)).is_err());
        assert!(check(m, Some(10), Some(2)).unwrap_err().contains("term 2"));
        assert!(check(Mark::default(), None, None).is_ok());
    }

    #[test]
    fn persisted_marks_survive_reopen_and_truncation_lowers_them() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (w, m) = Watermark::open(dir.path()).unwrap();
            assert_eq!(m, Mark::default());
            w.log_durable(7);
            w.vote_durable(2);
            w.persist().unwrap();
        }
        let (w, m) = Watermark::open(dir.path()).unwrap();
        assert_eq!(
            m,
            Mark {
                index: Some(7),
                term: Some(2)
            }
        );
        w.truncating(5).unwrap();
        drop(w);
        let (_, m) = Watermark::open(dir.path()).unwrap();
        assert_eq!(m.index, Some(4));
        std::fs::write(dir.path().join(FILE), b"garbage").unwrap();
        let err = Watermark::open(dir.path())
            .err()
            .expect("a damaged file is refused");
        assert!(err.contains("damaged"), "{err}");
    }
}
