//! Raft log on sled: trees `raft_log` (index `u64` BE -> entry) and `raft_meta`.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Mutex;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    LogId, OptionalSend, RaftLogId, RaftLogReader, RaftTypeConfig, StorageError, StorageIOError,
    Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use std::sync::Arc;

use crate::codec::{self, Msg};
use crate::disk::Disk;
use crate::watermark::{self, Mark, Watermark};

const LOG_TREE: &str = "raft_log";
const META_TREE: &str = "raft_meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_RUN: &[u8] = b"run";

/// Encoded bytes of the newest entries kept decoded in [`Tail`].
const TAIL_BYTES: usize = 8 << 20;

type SResult<T, C> = Result<T, StorageError<<C as RaftTypeConfig>::NodeId>>;

/// The Raft log and its metadata. Cloning is cheap (sled handles are reference counted);
/// a clone is also the [`RaftLogStorage::LogReader`].
pub struct LogStore<C: RaftTypeConfig> {
    disk: Arc<Disk>,
    watermark: Arc<Watermark>,
    log: sled::Tree,
    meta: sled::Tree,
    tail: Arc<Mutex<Tail<C>>>,
}

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            disk: self.disk.clone(),
            watermark: self.watermark.clone(),
            log: self.log.clone(),
            meta: self.meta.clone(),
            tail: self.tail.clone(),
        }
    }
}

/// The log's newest entries, decoded. The leader reads an entry back soon after writing
/// it, once per follower to replicate it and once to apply it, and every node once to
/// apply it: decoding those reads was 9% of a node's CPU in a reconnect storm. Always a
/// suffix of the log (an append extends both, a truncation cuts both, an error empties
/// it), so a read from its first index on is served from here alone; older entries come
/// from sled.
struct Tail<C: RaftTypeConfig> {
    /// Entries with consecutive indexes, and each one's encoded size.
    entries: VecDeque<(C::Entry, usize)>,
    bytes: usize,
}

impl<C: RaftTypeConfig> Tail<C>
where
    C::Entry: Clone,
{
    fn new() -> Self {
        Tail {
            entries: VecDeque::new(),
            bytes: 0,
        }
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.get_log_id().index)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.get_log_id().index)
    }

    /// Appends entries just written to the log after its current last one.
    fn extend(&mut self, written: Vec<(C::Entry, usize)>) {
        for (entry, size) in written {
            let index = entry.get_log_id().index;
            if self.last_index().is_some_and(|last| last + 1 != index) {
                // Not contiguous (cannot happen while every write goes through here):
                // an empty tail is always a valid one.
                self.clear();
            }
            self.entries.push_back((entry, size));
            self.bytes += size;
        }
        while self.bytes > TAIL_BYTES && self.entries.len() > 1 {
            if let Some((_, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }

    /// Drops the entries from `index` on (a truncation of the log).
    fn cut_from(&mut self, index: u64) {
        while self.last_index().is_some_and(|last| last >= index) {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entries in `range` when it starts at or after the tail's first entry.
    fn read(&self, start: u64, range: &impl RangeBounds<u64>) -> Option<Vec<C::Entry>> {
        let first = self.first_index()?;
        if start < first {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        Some(
            self.entries
                .iter()
                .skip(skip)
                .map(|(e, _)| e)
                .take_while(|e| range.contains(&e.get_log_id().index))
                .cloned()
                .collect(),
        )
    }
}

impl<C: RaftTypeConfig> Debug for LogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("entries", &self.log.len())
            .finish()
    }
}

impl<C: RaftTypeConfig> LogStore<C>
where
    C::Entry: Clone,
{
    fn tail(&self) -> std::sync::MutexGuard<'_, Tail<C>> {
        // A panic while holding the lock cannot leave the tail half-changed in a way
        // that matters more than losing it: empty it and go on.
        self.tail.lock().unwrap_or_else(|e| {
            let mut t = e.into_inner();
            t.clear();
            t
        })
    }

    pub(crate) fn new(disk: &Arc<Disk>, watermark: Arc<Watermark>) -> Result<Self, sled::Error> {
        let store = Self {
            disk: disk.clone(),
            watermark,
            log: disk.db().open_tree(LOG_TREE)?,
            meta: disk.db().open_tree(META_TREE)?,
            tail: Arc::new(Mutex::new(Tail::new())),
        };
        // A crash may have cut short the sweep of a purge; finish it.
        if let Ok(Some(purged)) = store.get_meta::<LogId<C::NodeId>>(KEY_LAST_PURGED) {
            store.sweep_in_background(purged.index);
        }
        Ok(store)
    }

    /// The last committed log index this node has recorded (for status reports).
    pub fn committed_index(&self) -> Option<u64> {
        self.get_meta::<LogId<C::NodeId>>(KEY_COMMITTED)
            .ok()
            .flatten()
            .map(|l| l.index)
    }

    /// Numbers this run of the node: `now_ms`, but above every earlier run's number even
    /// when the clock stepped back across the restart (a device without a real-time clock
    /// boots in 1970 until NTP answers). Run numbers order a proposer's batches: a run
    /// numbered below the last one would have every batch refused as a stale resend.
    /// Durable before it is returned.
    pub fn next_run(&self, now_ms: u64) -> Result<u64, String> {
        let last: Option<u64> = self.get_meta(KEY_RUN)?;
        let run = now_ms.max(last.map_or(0, |l| l + 1));
        self.put_meta(KEY_RUN, &run).map_err(|e| e.to_string())?;
        self.disk.sync().map_err(|e| e.to_string())?;
        Ok(run)
    }

    /// Decodes every metadata value and the first and last entries, so that corruption is
    /// reported at open time rather than later.
    pub(crate) fn check(&self) -> Result<(), String> {
        self.get_meta::<Vote<C::NodeId>>(KEY_VOTE)
            .map_err(|e| format!("raft_meta/vote: {e}"))?;
        self.get_meta::<LogId<C::NodeId>>(KEY_COMMITTED)
            .map_err(|e| format!("raft_meta/committed: {e}"))?;
        self.get_meta::<LogId<C::NodeId>>(KEY_LAST_PURGED)
            .map_err(|e| format!("raft_meta/last_purged: {e}"))?;
        self.get_meta::<u64>(KEY_RUN)
            .map_err(|e| format!("raft_meta/run: {e}"))?;
        for item in [self.log.first(), self.log.last()] {
            if let Some((k, v)) = item.map_err(|e| e.to_string())? {
                decode_entry::<C>(&k, &v).map_err(|e| format!("raft_log: {e}"))?;
            }
        }
        Ok(())
    }

    /// Refuses a log or vote that ends below what the watermark says was durable.
    pub(crate) fn check_watermark(&self, mark: Mark) -> Result<(), String> {
        let last_purged = self.get_meta::<LogId<C::NodeId>>(KEY_LAST_PURGED)?;
        let last = match self.log.last().map_err(|e| e.to_string())? {
            Some((k, _)) => Some(key_index(&k)?),
            None => None,
        };
        let last_index = last.max(last_purged.map(|l| l.index));
        let vote = self.get_meta::<Vote<C::NodeId>>(KEY_VOTE)?;
        watermark::check(mark, last_index, vote.map(|v| v.leader_id.term))
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, String> {
        match self.meta.get(key).map_err(|e| e.to_string())? {
            None => Ok(None),
            Some(v) => codec::decode(&v).map(Some),
        }
    }

    fn put_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let bytes = codec::encode(value)?;
        self.meta.insert(key, bytes)?;
        Ok(())
    }

    /// Deletes the entries up to `upto` on a blocking thread, one key at a time.
    ///
    /// Why not one batch: all voters snapshot at the same index, and a batch of thousands
    /// of removals held sled's write path for 0.65-0.9 s, long enough for appends (and so
    /// heartbeats) to stall and a follower to call an election under load. The entries are
    /// dead already (`last_purged` covers them and every reader skips them), so nothing
    /// waits for this and a crash midway only leaves work for the next open.
    fn sweep_in_background(&self, upto: u64) {
        let log = self.log.clone();
        let run = move || {
            let end = upto.to_be_bytes();
            loop {
                match log.first() {
                    Ok(Some((k, _))) if k.as_ref() <= end.as_slice() => {
                        if let Err(e) = log.remove(k) {
                            tracing::warn!(error = %e, "sweeping purged log entries");
                            return;
                        }
                    }
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "sweeping purged log entries");
                        return;
                    }
                }
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("raftmq-log-sweep".into())
            .spawn(run)
        {
            tracing::warn!(error = %e, "could not start the log sweep; purged entries stay");
        }
    }

    /// Deletes the log entries whose keys fall in `range`, in one atomic batch.
    fn remove_entries(&self, range: impl RangeBounds<[u8; 8]>) -> sled::Result<()> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(range) {
            batch.remove(item?.0);
        }
        self.log.apply_batch(batch)
    }
}

/// Adapts a boxed error to `&E: Error` for `StorageIOError` constructors.
struct AnyErr(Box<dyn std::error::Error + Send + Sync>);

impl From<AnyErr> for openraft::AnyError {
    fn from(e: AnyErr) -> Self {
        openraft::AnyError::error(e.0.to_string())
    }
}

fn decode_entry<C: RaftTypeConfig>(key: &[u8], value: &[u8]) -> Result<C::Entry, String> {
    let entry: C::Entry = codec::decode(value)?;
    let idx = key_index(key)?;
    if entry.get_log_id().index != idx {
        return Err(format!(
            "entry under key {idx} has index {}",
            entry.get_log_id().index
        ));
    }
    Ok(entry)
}

fn key_index(key: &[u8]) -> Result<u64, String> {
    let arr: [u8; 8] = key
        .try_into()
        .map_err(|_| format!("log key of {} bytes", key.len()))?;
    Ok(u64::from_be_bytes(arr))
}

impl<C: RaftTypeConfig> RaftLogReader<C> for LogStore<C>
where
    C::Entry: Clone,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> SResult<Vec<C::Entry>, C> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => match s.checked_add(1) {
                Some(s) => s,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        // Skip what a purge covers but its sweep has not deleted yet.
        let purged: Option<LogId<C::NodeId>> = self
            .get_meta(KEY_LAST_PURGED)
            .map_err(|e| StorageIOError::read_logs(&Msg(e)))?;
        let start = match purged {
            Some(p) if p.index >= start => p.index + 1,
            _ => start,
        };
        if let Some(entries) = self.tail().read(start, &range) {
            return Ok(entries);
        }
        let mut out = Vec::new();
        for item in self.log.range(start.to_be_bytes()..) {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let idx = key_index(&k).map_err(|e| StorageIOError::read_logs(&Msg(e)))?;
            if !range.contains(&idx) {
                break;
            }
            let entry = decode_entry::<C>(&k, &v)
                .map_err(|e| StorageIOError::read_log_at_index(idx, &Msg(e)))?;
            out.push(entry);
        }
        Ok(out)
    }
}

impl<C: RaftTypeConfig> RaftLogStorage<C> for LogStore<C>
where
    C::Entry: Clone,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> SResult<LogState<C>, C> {
        let last_purged_log_id: Option<LogId<C::NodeId>> = self
            .get_meta(KEY_LAST_PURGED)
            .map_err(|e| StorageIOError::read_logs(&Msg(e)))?;
        let last = match self.log.last().map_err(|e| StorageIOError::read_logs(&e))? {
            Some((k, v)) => Some(
                decode_entry::<C>(&k, &v)
                    .map_err(|e| StorageIOError::read_logs(&Msg(e)))?
                    .get_log_id()
                    .clone(),
            ),
            None => None,
        };
        // Entries not yet swept after a purge are dead: the purge point wins over them.
        let last_log_id = match (last, &last_purged_log_id) {
            (Some(l), Some(p)) if l.index <= p.index => Some(p.clone()),
            (last, p) => last.or_else(|| p.clone()),
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> SResult<(), C> {
        self.put_meta(KEY_VOTE, vote)
            .map_err(|e| StorageIOError::write_vote(AnyErr(e)))?;
        self.disk
            .flush()
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.watermark.vote_durable(vote.leader_id.term);
        Ok(())
    }

    async fn read_vote(&mut self) -> SResult<Option<Vote<C::NodeId>>, C> {
        self.get_meta(KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(&Msg(e)).into())
    }

    /// Not flushed here: losing `committed` only means re-applying less on restart; the next
    /// append or vote flush persists it.
    async fn save_committed(&mut self, committed: Option<LogId<C::NodeId>>) -> SResult<(), C> {
        let res = match committed {
            Some(c) => self.put_meta(KEY_COMMITTED, &c),
            None => self
                .meta
                .remove(KEY_COMMITTED)
                .map(|_| ())
                .map_err(|e| e.into()),
        };
        res.map_err(|e| StorageIOError::write(AnyErr(e)))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> SResult<Option<LogId<C::NodeId>>, C> {
        self.get_meta(KEY_COMMITTED)
            .map_err(|e| StorageIOError::read(&Msg(e)).into())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> SResult<(), C>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        let mut last = None;
        let mut written = Vec::new();
        for entry in entries {
            let idx = entry.get_log_id().index;
            last = Some(idx);
            let bytes = codec::encode(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            written.push((entry, bytes.len()));
            batch.insert(&idx.to_be_bytes(), bytes);
        }
        if let Err(e) = self.log.apply_batch(batch) {
            self.tail().clear();
            return Err(StorageIOError::write_logs(&e).into());
        }
        self.tail().extend(written);
        // Entries are readable now; acknowledge durability only after the fsync.
        let res = self.disk.flush().await;
        if let (Ok(()), Some(last)) = (&res, last) {
            self.watermark.log_durable(last);
        }
        let err = res
            .as_ref()
            .err()
            .map(|e| std::io::Error::new(e.kind(), e.to_string()));
        callback.log_io_completed(res);
        match err {
            Some(e) => Err(StorageIOError::write_logs(&e).into()),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> SResult<(), C> {
        tracing::debug!(%log_id, "truncate log from");
        self.watermark
            .truncating(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.tail().cut_from(log_id.index);
        self.remove_entries(log_id.index.to_be_bytes()..)
            .map_err(|e| {
                self.tail().clear();
                StorageIOError::write_logs(&e).into()
            })
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> SResult<(), C> {
        tracing::debug!(%log_id, "purge log up to");
        // `last_purged` alone makes the entries dead (readers skip them); deleting them is
        // left to a background sweep, so that a purge never holds up appends.
        self.put_meta(KEY_LAST_PURGED, &log_id)
            .map_err(|e| StorageIOError::write_logs(AnyErr(e)))?;
        self.sweep_in_background(log_id.index);
        Ok(())
    }
}
