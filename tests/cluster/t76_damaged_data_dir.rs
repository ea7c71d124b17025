//! A damaged data directory (issue 11): a node whose files lost part of what it had
//! made durable must either recover it or refuse to start with a clear error, never
//! serve a shortened log. sled replays its log up to the first message whose CRC fails
//! and would open "fine" without the rest; raftmq's watermark (crates/persistence,
//! watermark.rs) catches that. Then the README's procedure (remove the node, wipe its
//! data dir, start it again with `--join`) brings it back with nothing acknowledged
//! lost.

use std::path::Path;
use std::time::Duration;

use crate::support::checker::{Checker, Load};
use crate::support::cluster::{Cluster, CLUSTER_TIMEOUT};
use crate::t70_failover::{bounded, others};

const PROGRESS: usize = 30;

/// One way of damaging a data dir.
type Damage = fn(&Path);

/// Overwrites 64 bytes in the middle of sled's log file.
fn scribble_on_the_log(data_dir: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let path = data_dir.join("db");
    let len = std::fs::metadata(&path).expect("db file").len();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open db");
    f.seek(SeekFrom::Start(len / 2)).expect("seek");
    f.write_all(&[0xA5; 64]).expect("write");
}

/// Cuts sled's log file to half its length.
fn truncate_the_log(data_dir: &Path) {
    let path = data_dir.join("db");
    let len = std::fs::metadata(&path).expect("db file").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open db");
    f.set_len(len / 2).expect("truncate");
}

/// Starts node `id` again and expects it to refuse, naming the damage.
async fn assert_refused(c: &mut Cluster, id: u64, what: &str) {
    c.relaunch(id);
    let (status, log) = c.wait_exit(id).await;
    assert_eq!(status.code(), Some(1), "{what}: exit status; log:\n{log}");
    assert!(
        log.contains("damaged") || log.contains("corrupt"),
        "{what}: no clear error; log:\n{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("raftmq: error"))
        .unwrap_or_default();
    println!("[damaged data dir] {what}: refused: {line}");
}

/// A follower's log is damaged while it is down: it refuses to start; removed, wiped
/// and started again it rejoins, and the checker finds nothing lost.
#[tokio::test]
async fn a_damaged_follower_refuses_then_rejoins() {
    let name = "damaged data dir: follower";
    bounded(name, async {
        let mut c = Cluster::start(3).await;
        let leader = c.wait_leader().await;
        // Not node 1: the others were started with `--join`, which a wiped node needs.
        let victim = *others(&c, leader)
            .iter()
            .find(|&&id| id != 1)
            .expect("a follower");
        let load = Load::spread(&c.ids()).offline_subscriber(leader);
        let checker = Checker::start(&c, name, load).await;
        checker.wait_acked(3 * PROGRESS, CLUSTER_TIMEOUT).await;
        c.kill(victim);
        let dir = c.node(victim).data_dir.clone();
        scribble_on_the_log(&dir);
        assert_refused(&mut c, victim, "bytes overwritten in the log").await;
        // README, "Recovering a damaged node".
        let http = c.node(leader).http.to_string();
        let token = c.token_file().display().to_string();
        let out = c.run(
            &[
                "cluster",
                "remove",
                &victim.to_string(),
                "--http",
                &http,
                "--admin-token-file",
                &token,
            ],
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "cluster remove: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_dir_all(&dir).expect("wipe the data dir");
        c.restart(victim).await;
        c.wait_voters(&c.ids(), &c.ids()).await;
        checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
        checker.finish().await;
    })
    .await
}

/// A single node (the embedded default) has no peer to recover from: whatever the
/// damage, it refuses to start rather than serve less than it acknowledged.
#[tokio::test]
async fn a_damaged_single_node_refuses_to_start() {
    let name = "damaged data dir: single node";
    bounded(name, async {
        let mut c = Cluster::start(1).await;
        let load = Load::spread(&c.ids()).offline_subscriber(1);
        let checker = Checker::start(&c, name, load).await;
        checker.wait_acked(3 * PROGRESS, CLUSTER_TIMEOUT).await;
        drop(checker);
        c.kill(1);
        let dir = c.node(1).data_dir.clone();
        let saved = c.dir().join("saved");
        copy_dir(&dir, &saved);
        let damages: [(&str, Damage); 4] = [
            ("bytes overwritten in the log", scribble_on_the_log),
            ("the log cut to half", truncate_the_log),
            ("a garbled watermark", |d| {
                std::fs::write(d.join("raftmq.watermark"), b"garbage").unwrap()
            }),
            ("a garbled sled config", |d| {
                std::fs::write(d.join("conf"), b"segment_size: banana\n").unwrap()
            }),
        ];
        for (what, damage) in damages {
            std::fs::remove_dir_all(&dir).expect("remove");
            copy_dir(&saved, &dir);
            damage(&dir);
            assert_refused(&mut c, 1, what).await;
        }
        // Undamaged, the same files start.
        std::fs::remove_dir_all(&dir).expect("remove");
        copy_dir(&saved, &dir);
        c.restart(1).await;
    })
    .await
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
