//! openraft's storage Suite against the sled store, plus lock and restart checks.

use std::collections::BTreeMap;
use std::io::Cursor;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{BasicNode, StorageError};
use persistence::{Apply, LogStore, OpenError, StateMachineStore};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

/// Test command: set `key` to `value`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    pub key: String,
    pub value: String,
}

/// Previous value of the key, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prev(pub Option<String>);

openraft::declare_raft_types!(
    pub TestConfig:
        D = Set,
        R = Prev,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TestConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Kv(BTreeMap<String, String>);

impl Apply<TestConfig> for Kv {
    fn apply(&mut self, data: &Set) -> Prev {
        Prev(self.0.insert(data.key.clone(), data.value.clone()))
    }
}

type Stores = (LogStore<TestConfig>, StateMachineStore<TestConfig, Kv>);

struct Builder;

impl StoreBuilder<TestConfig, LogStore<TestConfig>, StateMachineStore<TestConfig, Kv>, TempDir>
    for Builder
{
    async fn build(
        &self,
    ) -> Result<
        (
            TempDir,
            LogStore<TestConfig>,
            StateMachineStore<TestConfig, Kv>,
        ),
        StorageError<u64>,
    > {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, sm): Stores = persistence::open(dir.path()).expect("open");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_suite() {
    Suite::test_all(Builder).expect("openraft storage suite");
}

#[test]
fn second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _first: Stores = persistence::open(dir.path()).unwrap();
    let second: Result<Stores, _> = persistence::open(dir.path());
    match second {
        Err(OpenError::Locked { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Run numbers only grow, across reopens too, whatever the clock says.
#[test]
fn run_numbers_grow_when_the_clock_steps_back() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _sm): Stores = persistence::open(dir.path()).unwrap();
        assert_eq!(log.next_run(5_000).unwrap(), 5_000);
        assert_eq!(log.next_run(9_000).unwrap(), 9_000);
    }
    let (log, _sm): Stores = persistence::open(dir.path()).unwrap();
    // Booted before NTP answered: the clock reads far less than last time.
    assert_eq!(log.next_run(10).unwrap(), 9_001);
    assert_eq!(log.next_run(20_000).unwrap(), 20_000);
}

#[test]
fn values_survive_reopen() {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};
    let dir = tempfile::tempdir().unwrap();
    let log_id = |i| LogId::new(CommittedLeaderId::new(1, 0), i);
    let set = |k: &str, v: &str| Set {
        key: k.into(),
        value: v.into(),
    };
    rt().block_on(async {
        let (mut log, mut sm): Stores = persistence::open(dir.path()).unwrap();
        log.save_vote(&Vote::new(1, 0)).await.unwrap();
        let mem = Membership::new(vec![[0u64].into()], None);
        let entries = vec![
            Entry::<TestConfig> {
                log_id: log_id(1),
                payload: EntryPayload::Membership(mem),
            },
            Entry {
                log_id: log_id(2),
                payload: EntryPayload::Normal(set("a", "1")),
            },
            Entry {
                log_id: log_id(3),
                payload: EntryPayload::Normal(set("a", "2")),
            },
        ];
        log.blocking_append(entries.clone()).await.unwrap();
        log.save_committed(Some(log_id(3))).await.unwrap();
        let resp = sm.apply(entries[..2].to_vec()).await.unwrap();
        assert_eq!(resp, vec![Prev(None), Prev(None)]);
        // Snapshot at index 2; entry 3 only lives in the log.
        use openraft::RaftSnapshotBuilder;
        let mut b = sm.get_snapshot_builder().await;
        let snap = b.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(2)));
    });
    rt().block_on(async {
        let (mut log, mut sm): Stores = persistence::open(dir.path()).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(1, 0)));
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(3)));
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id, Some(log_id(3)));
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(2)));
        assert_eq!(sm.read(|kv| kv.0.get("a").cloned()).await, Some("1".into()));
        let snap = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(2)));
        // Re-applying the committed tail from the log completes the state.
        let tail = openraft::RaftLogReader::try_get_log_entries(&mut log, 3..=3)
            .await
            .unwrap();
        let resp = sm.apply(tail).await.unwrap();
        assert_eq!(resp, vec![Prev(Some("1".into()))]);
    });
}

#[test]
fn corrupt_value_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("raft_meta")
            .unwrap()
            .insert("vote", &[0xff, 0xff, 0xff][..])
            .unwrap();
        db.flush().unwrap();
    }
    let res: Result<Stores, _> = persistence::open(dir.path());
    assert!(matches!(res, Err(OpenError::Corrupt { .. })), "{res:?}");
}

#[test]
fn corrupt_log_entry_is_a_storage_error() {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader};
    let dir = tempfile::tempdir().unwrap();
    let log_id = |i| LogId::new(CommittedLeaderId::new(1, 0), i);
    rt().block_on(async {
        let (mut log, _sm): Stores = persistence::open(dir.path()).unwrap();
        let entries = (1..=3).map(|i| Entry::<TestConfig> {
            log_id: log_id(i),
            payload: EntryPayload::Blank,
        });
        log.blocking_append(entries).await.unwrap();
    });
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("raft_log")
            .unwrap()
            .insert(2u64.to_be_bytes(), &[0xff, 0xfe][..])
            .unwrap();
        db.flush().unwrap();
    }
    rt().block_on(async {
        let (mut log, _sm): Stores = persistence::open(dir.path()).unwrap();
        assert!(log.try_get_log_entries(1..=3).await.is_err());
        assert_eq!(log.try_get_log_entries(3..).await.unwrap().len(), 1);
    });
}

/// A purge makes the entries it covers unreadable at once and deletes them in the
/// background; a purge of the whole log keeps the purge point as the last log id.
#[test]
fn purge_hides_at_once_and_sweeps_later() {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader};
    let dir = tempfile::tempdir().unwrap();
    let log_id = |i| LogId::new(CommittedLeaderId::new(1, 0), i);
    rt().block_on(async {
        let (mut log, _sm): Stores = persistence::open(dir.path()).unwrap();
        let entries: Vec<Entry<TestConfig>> = (1..=100)
            .map(|i| Entry {
                log_id: log_id(i),
                payload: EntryPayload::Normal(Set {
                    key: format!("k{i}"),
                    value: "v".into(),
                }),
            })
            .collect();
        log.blocking_append(entries).await.unwrap();
        log.purge(log_id(60)).await.unwrap();
        let read = log.try_get_log_entries(0..).await.unwrap();
        assert_eq!(read.first().map(|e| e.log_id.index), Some(61));
        assert_eq!(read.len(), 40);
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(log_id(60)));
        assert_eq!(st.last_log_id, Some(log_id(100)));
        // The sweep deletes the 60 dead entries (bounded wait).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while format!("{log:?}") != "LogStore { entries: 40 }" {
            assert!(std::time::Instant::now() < deadline, "not swept: {log:?}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Purging everything: whatever the sweep has done, the log ends at the purge point.
        log.purge(log_id(100)).await.unwrap();
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id, Some(log_id(100)));
        assert!(log.try_get_log_entries(0..).await.unwrap().is_empty());
    });
}

/// A snapshot build that finishes after a newer snapshot was installed (the builder took
/// its copy of the state first) leaves the installed one in place: on reopen the store
/// starts from the newer snapshot, not from the build's older one.
#[test]
fn a_late_build_leaves_a_newer_installed_snapshot() {
    use openraft::{
        CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftSnapshotBuilder,
    };
    let log_id = |i| LogId::new(CommittedLeaderId::new(1, 0), i);
    let entries: Vec<Entry<TestConfig>> = [("a", "1"), ("b", "2"), ("c", "3")]
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Entry {
            log_id: log_id(i as u64 + 2),
            payload: EntryPayload::Normal(Set {
                key: (*k).into(),
                value: (*v).into(),
            }),
        })
        .collect();
    let membership = Entry::<TestConfig> {
        log_id: log_id(1),
        payload: EntryPayload::Membership(Membership::new(vec![[0u64].into()], None)),
    };
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (_log, mut sm): Stores = persistence::open(dir.path()).unwrap();
        sm.apply(vec![membership.clone(), entries[0].clone()])
            .await
            .unwrap();
        // Its copy of the state is taken here, at index 2.
        let mut late = sm.get_snapshot_builder().await;

        // A newer snapshot (index 4), built elsewhere, is installed meanwhile.
        let (_log, mut leader): Stores = persistence::open(other.path()).unwrap();
        let mut all = vec![membership];
        all.extend(entries);
        leader.apply(all).await.unwrap();
        let newer = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(newer.meta.last_log_id, Some(log_id(4)));
        sm.install_snapshot(&newer.meta, newer.snapshot)
            .await
            .unwrap();

        late.build_snapshot().await.unwrap();
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.last_log_id, Some(log_id(4)));
    });
    rt().block_on(async {
        let (_log, mut sm): Stores = persistence::open(dir.path()).unwrap();
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(4)));
        assert_eq!(sm.read(|kv| kv.0.get("c").cloned()).await, Some("3".into()));
    });
}
