//! Generic state-machine store: an in-memory application state `A: Apply<C>`, made durable
//! by the Raft log plus snapshots.
//!
//! Durability model (STYLE 12): `apply` only changes memory. Snapshots are persisted in the
//! `snapshot` tree (`current` = bincode of `(SnapshotMeta, bytes)`), and in the same sled
//! transaction `sm_meta` records `last_applied` and `membership` of that snapshot. On open
//! the state is restored from the snapshot, and openraft re-applies
//! `(last_applied, committed]` from the log (the log store persists `committed`).
//!
//! Snapshot bytes: one version byte ([`SNAPSHOT_FORMAT_VERSION`]) followed by the bincode-2
//! serde encoding of `(last_applied, membership, app_state)`.
//!
//! Responses: blank and membership entries get `C::R::default()`.
//!
//! Concurrency (openraft builds snapshots in a spawned task while `apply` continues):
//! [`RaftStateMachine::get_snapshot_builder`] clones the state under a read lock;
//! `apply` and `install_snapshot` take the write side, so a snapshot never observes a
//! half-applied batch. The application state should clone cheaply (persistent maps):
//! applies wait for the clone alone, not for the encoding (on a blocking thread) nor for
//! the write and fsync. Writes of snapshots are ordered by `Trees::written`: one at a
//! time, and a build that finishes after a newer snapshot was installed does not
//! overwrite it.

use std::fmt::Debug;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, RaftTypeConfig, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionResult, Transactional};
use tokio::sync::{Mutex as AsyncMutex, RwLock};

use crate::codec::{self, Msg};
use crate::disk::Disk;

/// Leading byte of every snapshot this crate writes.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 1;

const SM_META_TREE: &str = "sm_meta";
const SNAPSHOT_TREE: &str = "snapshot";
const KEY_LAST_APPLIED: &[u8] = b"last_applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_CURRENT: &[u8] = b"current";

type SResult<T, C> = Result<T, StorageError<<C as RaftTypeConfig>::NodeId>>;

/// The application half of the state machine: deterministic, in memory, serializable.
pub trait Apply<C: RaftTypeConfig>:
    Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// Applies one committed command and returns its response.
    fn apply(&mut self, data: &C::D) -> C::R;

    /// Called on a state just decoded from an installed snapshot, with the state it
    /// replaces: carries over whatever is not part of the data (observers).
    fn installed(&mut self, _previous: &mut Self) {}
}

struct SmState<C: RaftTypeConfig, A> {
    last_applied: Option<LogId<C::NodeId>>,
    membership: StoredMembership<C::NodeId, C::Node>,
    app: A,
}

impl<C: RaftTypeConfig, A: Clone> Clone for SmState<C, A> {
    fn clone(&self) -> Self {
        Self {
            last_applied: self.last_applied.clone(),
            membership: self.membership.clone(),
            app: self.app.clone(),
        }
    }
}

impl<C: RaftTypeConfig, A: Default> Default for SmState<C, A> {
    fn default() -> Self {
        Self {
            last_applied: None,
            membership: StoredMembership::default(),
            app: A::default(),
        }
    }
}

#[derive(Debug)]
pub(crate) enum LoadError {
    Sled(sled::Error),
    Corrupt(String),
}

/// What this node's snapshots cost: for operators (`/cluster`) and the benches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotFigures {
    /// Snapshots built here since the process started (installed ones not counted).
    pub builds: u64,
    /// Wall time of the last build: encoding, write and fsync.
    pub last_build_ms: f64,
    /// How long the last build held applies off (the clone of the state).
    pub last_hold_ms: f64,
    /// Size of the last snapshot built here.
    pub last_bytes: u64,
}

#[derive(Clone)]
struct Trees {
    disk: Arc<Disk>,
    sm_meta: sled::Tree,
    snapshot: sled::Tree,
    /// The last log index of the snapshot written last, held across each write.
    written: Arc<AsyncMutex<Option<u64>>>,
    figures: Arc<Mutex<SnapshotFigures>>,
}

impl Trees {
    /// Stores the snapshot and its applied point atomically, then fsyncs; unless a
    /// snapshot of a later point was written meanwhile (a build that lost the race with
    /// an install), which it leaves in place.
    async fn persist<C: RaftTypeConfig>(
        &self,
        meta: &SnapshotMeta<C::NodeId, C::Node>,
        data: &[u8],
    ) -> Result<(), StorageIOError<C::NodeId>> {
        let mut written = self.written.lock().await;
        let index = meta.last_log_id.as_ref().map(|l| l.index);
        if *written > index {
            return Ok(());
        }
        let sig = Some(meta.signature());
        let wr = |e: String| StorageIOError::write_snapshot(sig.clone(), &Msg(e));
        let current = codec::encode(&(meta, data)).map_err(|e| wr(e.to_string()))?;
        let last = codec::encode(&meta.last_log_id).map_err(|e| wr(e.to_string()))?;
        let membership = codec::encode(&meta.last_membership).map_err(|e| wr(e.to_string()))?;
        // A snapshot can be hundreds of megabytes: sled copies it on a blocking thread,
        // not on one of the runtime's workers.
        let trees = (self.snapshot.clone(), self.sm_meta.clone());
        tokio::task::spawn_blocking(move || {
            (&trees.0, &trees.1).transaction(|(s, m)| -> ConflictableTransactionResult<(), ()> {
                s.insert(KEY_CURRENT, current.as_slice())?;
                m.insert(KEY_LAST_APPLIED, last.as_slice())?;
                m.insert(KEY_MEMBERSHIP, membership.as_slice())?;
                Ok(())
            })
        })
        .await
        .map_err(|e| wr(e.to_string()))?
        .map_err(|e| wr(format!("{e:?}")))?;
        self.disk
            .flush()
            .await
            .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        *written = index;
        Ok(())
    }

    fn current<C: RaftTypeConfig>(&self) -> Result<Option<StoredSnapshot<C>>, LoadError> {
        match self.snapshot.get(KEY_CURRENT).map_err(LoadError::Sled)? {
            None => Ok(None),
            Some(v) => codec::decode(&v)
                .map(Some)
                .map_err(|e| LoadError::Corrupt(format!("snapshot/current: {e}"))),
        }
    }
}

/// The `snapshot/current` value: meta and the snapshot bytes.
type StoredSnapshot<C> = (
    SnapshotMeta<<C as RaftTypeConfig>::NodeId, <C as RaftTypeConfig>::Node>,
    Vec<u8>,
);

type Decoded<C, A> = (
    Option<LogId<<C as RaftTypeConfig>::NodeId>>,
    StoredMembership<<C as RaftTypeConfig>::NodeId, <C as RaftTypeConfig>::Node>,
    A,
);

fn decode_snapshot<C: RaftTypeConfig, A: Apply<C>>(
    meta: &SnapshotMeta<C::NodeId, C::Node>,
    bytes: &[u8],
) -> Result<SmState<C, A>, String> {
    match bytes.first() {
        Some(&SNAPSHOT_FORMAT_VERSION) => {}
        Some(v) => return Err(format!("unknown snapshot format version {v}")),
        None => return Err("empty snapshot".to_string()),
    }
    let (last_applied, membership, app): Decoded<C, A> = codec::decode(&bytes[1..])?;
    if last_applied != meta.last_log_id || membership != meta.last_membership {
        return Err("snapshot data does not match its meta".to_string());
    }
    Ok(SmState {
        last_applied,
        membership,
        app,
    })
}

/// State machine store; see the module docs for the durability and locking model.
pub struct StateMachineStore<C: RaftTypeConfig, A> {
    trees: Trees,
    state: Arc<RwLock<SmState<C, A>>>,
    snapshot_seq: Arc<AtomicU64>,
}

/// A clone shares the state: keep one to read or observe the state after handing the
/// store to openraft.
impl<C: RaftTypeConfig, A> Clone for StateMachineStore<C, A> {
    fn clone(&self) -> Self {
        Self {
            trees: self.trees.clone(),
            state: self.state.clone(),
            snapshot_seq: self.snapshot_seq.clone(),
        }
    }
}

impl<C: RaftTypeConfig, A> Debug for StateMachineStore<C, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore").finish_non_exhaustive()
    }
}

impl<C, A> StateMachineStore<C, A>
where
    C: RaftTypeConfig,
    A: Apply<C>,
{
    pub(crate) fn load(disk: &Arc<Disk>) -> Result<Self, LoadError> {
        let db = disk.db();
        let mut trees = Trees {
            disk: disk.clone(),
            sm_meta: db.open_tree(SM_META_TREE).map_err(LoadError::Sled)?,
            snapshot: db.open_tree(SNAPSHOT_TREE).map_err(LoadError::Sled)?,
            written: Arc::default(),
            figures: Arc::default(),
        };
        let state = match trees.current::<C>()? {
            None => SmState::default(),
            Some((meta, bytes)) => {
                trees.written =
                    Arc::new(AsyncMutex::new(meta.last_log_id.as_ref().map(|l| l.index)));
                let state = decode_snapshot::<C, A>(&meta, &bytes)
                    .map_err(|e| LoadError::Corrupt(format!("snapshot/current: {e}")))?;
                let recorded: Option<Option<LogId<C::NodeId>>> =
                    match trees
                        .sm_meta
                        .get(KEY_LAST_APPLIED)
                        .map_err(LoadError::Sled)?
                    {
                        None => None,
                        Some(v) => Some(codec::decode(&v).map_err(|e| {
                            LoadError::Corrupt(format!("sm_meta/last_applied: {e}"))
                        })?),
                    };
                if recorded.as_ref() != Some(&state.last_applied) {
                    return Err(LoadError::Corrupt(
                        "sm_meta/last_applied does not match the stored snapshot".to_string(),
                    ));
                }
                state
            }
        };
        Ok(Self {
            trees,
            state: Arc::new(RwLock::new(state)),
            snapshot_seq: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Runs `f` on the application state with applies held off (to attach observers).
    pub async fn with_app_mut<T>(&self, f: impl FnOnce(&mut A) -> T) -> T {
        f(&mut self.state.write().await.app)
    }

    /// What the snapshots built here cost.
    pub fn snapshot_figures(&self) -> SnapshotFigures {
        *self.trees.figures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the current application state (for local, possibly stale, reads).
    pub async fn read<T>(&self, f: impl FnOnce(&A) -> T) -> T {
        f(&self.state.read().await.app)
    }
}

/// Builds a snapshot of the state as of [`RaftStateMachine::get_snapshot_builder`].
pub struct SnapshotBuilder<C: RaftTypeConfig, A> {
    trees: Trees,
    /// A clone of the state, taken by the build.
    state: Option<SmState<C, A>>,
    /// How long applies waited for the clone.
    held: Duration,
    seq: u64,
}

impl<C, A> RaftSnapshotBuilder<C> for SnapshotBuilder<C, A>
where
    C: RaftTypeConfig<Entry = Entry<C>, SnapshotData = Cursor<Vec<u8>>>,
    A: Apply<C>,
{
    async fn build_snapshot(&mut self) -> SResult<Snapshot<C>, C> {
        let started = Instant::now();
        let st = self.state.take().ok_or_else(|| {
            StorageIOError::write_snapshot(None, &Msg("snapshot builder used twice".into()))
        })?;
        // Encoding a large state takes a core for a while: on a blocking thread, so that
        // the runtime's workers go on serving clients meanwhile.
        let encoded = tokio::task::spawn_blocking(move || {
            let mut data = vec![SNAPSHOT_FORMAT_VERSION];
            codec::encode_onto(&mut data, &(&st.last_applied, &st.membership, &st.app))
                .map(|()| (data, st.last_applied, st.membership))
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, &Msg(e.to_string())))?;
        let (data, last_applied, membership) =
            encoded.map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let held = self.held;
        let snapshot_id = match &last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.seq),
            None => format!("none-{}", self.seq),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        self.trees.persist::<C>(&meta, &data).await?;
        let mut figures = self.trees.figures.lock().unwrap_or_else(|e| e.into_inner());
        figures.builds += 1;
        figures.last_build_ms = started.elapsed().as_secs_f64() * 1e3;
        figures.last_hold_ms = held.as_secs_f64() * 1e3;
        figures.last_bytes = data.len() as u64;
        drop(figures);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl<C, A> RaftStateMachine<C> for StateMachineStore<C, A>
where
    C: RaftTypeConfig<Entry = Entry<C>, SnapshotData = Cursor<Vec<u8>>>,
    C::R: Default,
    A: Apply<C>,
{
    type SnapshotBuilder = SnapshotBuilder<C, A>;

    async fn applied_state(
        &mut self,
    ) -> SResult<
        (
            Option<LogId<C::NodeId>>,
            StoredMembership<C::NodeId, C::Node>,
        ),
        C,
    > {
        let st = self.state.read().await;
        Ok((st.last_applied.clone(), st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> SResult<Vec<C::R>, C>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut st = self.state.write().await;
        let mut out = Vec::new();
        for entry in entries {
            st.last_applied = Some(entry.log_id.clone());
            let resp = match entry.payload {
                EntryPayload::Blank => C::R::default(),
                EntryPayload::Normal(ref d) => st.app.apply(d),
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(entry.log_id), m);
                    C::R::default()
                }
            };
            out.push(resp);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let guard = self.state.read().await;
        // Applies wait from here: for the clone, not for the encoding and the write.
        let cloning = Instant::now();
        let state = guard.clone();
        drop(guard);
        SnapshotBuilder {
            trees: self.trees.clone(),
            state: Some(state),
            held: cloning.elapsed(),
            seq: self.snapshot_seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> SResult<Box<Cursor<Vec<u8>>>, C> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<C::NodeId, C::Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> SResult<(), C> {
        let data = snapshot.into_inner();
        let new_state = decode_snapshot::<C, A>(meta, &data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &Msg(e)))?;
        let mut new_state = new_state;
        let mut st = self.state.write().await;
        self.trees.persist::<C>(meta, &data).await?;
        new_state.app.installed(&mut st.app);
        *st = new_state;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SResult<Option<Snapshot<C>>, C> {
        let current = self.trees.current::<C>().map_err(|e| {
            let msg = match e {
                LoadError::Sled(e) => e.to_string(),
                LoadError::Corrupt(s) => s,
            };
            StorageIOError::read_snapshot(None, &Msg(msg))
        })?;
        Ok(current.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
