//! sled 0.34 on powerfs: its `flush()` is not an fsync (it ends in `sync_file_range`),
//! and what an explicit fsync of the `db` file plus the directories keeps.

mod common;

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use common::{fsync_dir, mount, sync_tree, tree, wait_for};

/// Without sled's background flusher, whose `sync_all` every 500 ms (the default) would
/// otherwise race with the test and sometimes make the insert durable.
fn config(dir: &Path) -> sled::Config {
    sled::Config::new().path(dir).flush_every_ms(None)
}

/// Reopens after a "crash". The old `Db` may still be closing its files on sled's own
/// threads (its flock on `db` goes with the last of them), so retry for a bounded time.
fn reopen(dir: &Path) -> sled::Db {
    let mut last = None;
    wait_for(Duration::from_secs(20), || match config(dir).open() {
        Ok(db) => Some(db),
        Err(e) => {
            last = Some(e);
            None
        }
    })
    .unwrap_or_else(|| panic!("reopen failed: {last:?}"))
}

/// Lets go of a db whose files died in a power cut. sled's `Log::drop` unwraps an fsync
/// that now fails with EIO, so it panics (a real process would crash the same way); the
/// fields are still dropped while unwinding, which closes the files and frees the flock.
fn drop_dead(db: sled::Db) {
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(db)));
    eprintln!("dropping the dead db panicked: {}", dropped.is_err());
}

/// Opens a fresh db and makes everything it created durable, so that only what the test
/// does next is at stake.
fn fresh_durable_db(root: &Path) -> (std::path::PathBuf, sled::Db) {
    let dir = root.join("node");
    let db = config(&dir).open().unwrap();
    db.insert("setup", "done").unwrap();
    db.flush().unwrap();
    sync_tree(root);
    eprintln!("sled files after open + flush: {:?}", tree(root));
    (dir, db)
}

#[test]
fn sled_flush_is_not_durable() {
    let Some(fs) = mount() else { return };
    let (dir, db) = fresh_durable_db(fs.path());
    let fsyncs = fs.stats().fsync;

    db.insert("key", "value").unwrap();
    db.flush().unwrap();
    assert_eq!(fs.stats().fsync, fsyncs, "sled's flush sent no fsync");

    let report = fs.power_loss();
    eprintln!("{report}");
    assert!(report.bytes_dropped > 0);
    // The "dead process" lets go of the db; its late writes and fsync fail with EIO.
    drop_dead(db);

    let db = reopen(&dir);
    assert_eq!(db.get("setup").unwrap().as_deref(), Some(&b"done"[..]));
    assert_eq!(
        db.get("key").unwrap(),
        None,
        "flush() alone must not survive"
    );
    eprintln!("sled files after reopen: {:?}", tree(fs.path()));
}

#[test]
fn sled_flush_plus_fsync_is_durable() {
    let Some(fs) = mount() else { return };
    let root = fs.path();
    let dir = root.join("node");
    let db = config(&dir).open().unwrap();
    eprintln!("sled files after open: {:?}", tree(root));

    db.insert("key", "value").unwrap();
    db.flush().unwrap();
    File::open(dir.join("db")).unwrap().sync_data().unwrap();
    fsync_dir(&dir);
    fsync_dir(root);

    let report = fs.power_loss();
    eprintln!("{report}");
    drop_dead(db);

    eprintln!("sled files after the cut: {:?}", tree(root));
    let db = reopen(&dir);
    assert_eq!(db.get("key").unwrap().as_deref(), Some(&b"value"[..]));
}

#[test]
fn sled_default_config_on_powerfs() {
    // With sled's defaults, its background flusher fsyncs `db` every 500 ms, and sled
    // takes `flock` on `db` through fs2: a second open of the same dir must be refused.
    let Some(fs) = mount() else { return };
    let dir = fs.path().join("node");
    let db = sled::Config::new().path(&dir).open().unwrap();
    let second = sled::Config::new().path(&dir).open();
    assert!(
        second.is_err(),
        "the flock on db must exclude a second opener"
    );

    db.insert("key", "value").unwrap();
    let before = fs.stats().fsync;
    let ticked = wait_for(Duration::from_secs(10), || {
        (fs.stats().fsync > before).then_some(())
    });
    assert!(ticked.is_some(), "the background flusher fsyncs on its own");
    drop(db);
}
