//! What survives a power cut on powerfs, and what doesn't. Each test returns early, after
//! "skipped: no FUSE (...)", on a machine where FUSE can't be used.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::{errno, fsync_dir, is_mount_point, mount, wait_for};

/// A file that exists durably (created, fsynced, its directory fsynced) and is empty.
fn durable_empty_file(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    File::create(&path).unwrap().sync_all().unwrap();
    fsync_dir(dir);
    path
}

#[test]
fn mount_errors_are_one_line() {
    let err = powerfs::PowerFs::mount(std::path::Path::new("/nonexistent/powerfs")).unwrap_err();
    eprintln!("{err}");
    assert!(!err.is_empty() && !err.contains('\n'));
}

#[test]
fn unsynced_writes_are_lost() {
    let Some(fs) = mount() else { return };
    let path = durable_empty_file(fs.path(), "f");
    fs::write(&path, b"hello").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"hello");

    let report = fs.power_loss();
    eprintln!("{report}");
    assert_eq!(report.files_reverted, 1);
    assert_eq!(report.bytes_dropped, 5);
    assert_eq!(fs::read(&path).unwrap(), b"", "unsynced data must be gone");
}

#[test]
fn fsynced_data_and_size_survive() {
    let Some(fs) = mount() else { return };
    let path = durable_empty_file(fs.path(), "f");
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b"one ").unwrap();
    f.sync_all().unwrap(); // fsync
    f.write_all(b"two ").unwrap();
    f.sync_data().unwrap(); // fdatasync persists data and the size it needs too
    f.write_all(b"three").unwrap(); // never synced
    drop(f);

    let stats = fs.stats();
    assert_eq!((stats.fsync, stats.fdatasync), (3, 1), "{stats:?}"); // incl. the create's
    assert!(stats.writes >= 3 && stats.bytes_written == 13, "{stats:?}");

    fs.power_loss();
    assert_eq!(fs::read(&path).unwrap(), b"one two ");
    assert_eq!(fs::metadata(&path).unwrap().len(), 8);
}

#[test]
fn sync_file_range_alone_does_not_survive() {
    let Some(fs) = mount() else { return };
    let path = durable_empty_file(fs.path(), "f");
    let mut f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all(b"sled's flush").unwrap();
    // What sled 0.34's flush ends in on Linux: page cache writeback, no device flush.
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a valid open fd; the call touches no memory of ours.
    let rc = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, flags) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    assert_eq!(
        fs.stats().fsync,
        1,
        "sync_file_range must not reach us as fsync"
    );

    fs.power_loss();
    assert_eq!(fs::read(&path).unwrap(), b"");
}

#[test]
fn new_file_needs_its_directory_fsynced() {
    let Some(fs) = mount() else { return };
    let root = fs.path();
    // fsync of the file alone: its data is durable but its name is not.
    let mut f = File::create(root.join("f")).unwrap();
    f.write_all(b"data").unwrap();
    f.sync_all().unwrap();
    drop(f);
    let report = fs.power_loss();
    eprintln!("{report}");
    assert!(!root.join("f").exists());
    assert_eq!((report.entries_dropped, report.inodes_dropped), (1, 1));

    // The same plus fsync of the directory.
    let mut f = File::create(root.join("f")).unwrap();
    f.write_all(b"data").unwrap();
    f.sync_all().unwrap();
    fsync_dir(root);
    fs.power_loss();
    assert_eq!(fs::read(root.join("f")).unwrap(), b"data");

    // A new subdirectory's entries are durable, but its own name in the root is not.
    fs::create_dir(root.join("sub")).unwrap();
    File::create(root.join("sub/f"))
        .unwrap()
        .sync_all()
        .unwrap();
    fsync_dir(&root.join("sub"));
    let report = fs.power_loss();
    assert!(!root.join("sub").exists());
    assert_eq!((report.entries_dropped, report.inodes_dropped), (1, 2));
}

#[test]
fn unlink_needs_its_directory_fsynced() {
    let Some(fs) = mount() else { return };
    let path = durable_empty_file(fs.path(), "f");
    fs::write(&path, b"kept").unwrap();
    File::open(&path).unwrap().sync_all().unwrap();
    fs::remove_file(&path).unwrap();
    fs.power_loss();
    assert_eq!(
        fs::read(&path).unwrap(),
        b"kept",
        "the unlink was never made durable"
    );

    fs::remove_file(&path).unwrap();
    fsync_dir(fs.path());
    fs.power_loss();
    assert!(!path.exists());
}

#[test]
fn rename_is_durable_once_the_directory_is_fsynced() {
    let Some(fs) = mount() else { return };
    let root = fs.path();
    let target = root.join("current");
    let tmp = root.join("current.tmp");
    fs::write(&target, b"old").unwrap();
    File::open(&target).unwrap().sync_all().unwrap();
    fsync_dir(root);

    // The atomic-replace idiom without the final directory fsync.
    fs::write(&tmp, b"new").unwrap();
    File::open(&tmp).unwrap().sync_all().unwrap();
    fs::rename(&tmp, &target).unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"new");
    fs.power_loss();
    assert_eq!(fs::read(&target).unwrap(), b"old");
    assert!(!tmp.exists());

    // With it.
    fs::write(&tmp, b"new").unwrap();
    File::open(&tmp).unwrap().sync_all().unwrap();
    fs::rename(&tmp, &target).unwrap();
    fsync_dir(root);
    fs.power_loss();
    assert_eq!(fs::read(&target).unwrap(), b"new");
    assert!(!tmp.exists());

    // Across directories: both must be fsynced.
    fs::create_dir(root.join("a")).unwrap();
    fs::create_dir(root.join("b")).unwrap();
    fsync_dir(root);
    fs::rename(&target, root.join("b/moved")).unwrap();
    fsync_dir(root);
    fsync_dir(&root.join("b"));
    fs.power_loss();
    assert!(!target.exists());
    assert_eq!(fs::read(root.join("b/moved")).unwrap(), b"new");
}

#[test]
fn handles_from_before_the_cut_get_eio() {
    let Some(fs) = mount() else { return };
    let root = fs.path();
    let path = durable_empty_file(root, "f");
    fs::write(&path, b"0123456789").unwrap();
    File::open(&path).unwrap().sync_all().unwrap();

    let mut old = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let old_dir = File::open(root).unwrap();
    let report = fs.power_loss();
    assert_eq!(report.handles_invalidated, 2);

    let mut buf = [0u8; 4];
    assert_eq!(errno(old.read(&mut buf)), libc::EIO, "read");
    assert_eq!(errno(old.write_at(b"x", 0)), libc::EIO, "write");
    assert_eq!(errno(old.sync_all()), libc::EIO, "fsync");
    assert_eq!(errno(old.sync_data()), libc::EIO, "fdatasync");
    assert_eq!(errno(old.set_len(1)), libc::EIO, "ftruncate");
    // (fstat is answered without the handle: FUSE's getattr carries none for it.)
    assert_eq!(errno(old_dir.sync_all()), libc::EIO, "fsync of a directory");

    // A handle opened now works, on the same (durable) file.
    let mut new = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut s = String::new();
    new.read_to_string(&mut s).unwrap();
    assert_eq!(s, "0123456789");
    new.seek(SeekFrom::Start(0)).unwrap();
    new.write_all(b"ab").unwrap();
    new.sync_all().unwrap();
    File::open(root).unwrap().sync_all().unwrap();
    // The old one is still dead, and closing it is fine.
    assert_eq!(errno(old.read(&mut buf)), libc::EIO);
    drop(old);
    drop(old_dir);
    assert_eq!(fs::read(&path).unwrap(), b"ab23456789");
}

#[test]
fn flock_excludes_a_second_handle() {
    let Some(fs) = mount() else { return };
    let path = durable_empty_file(fs.path(), "db");
    let first = File::open(&path).unwrap();
    let second = File::open(&path).unwrap();
    let flock = |f: &File, op| {
        // SAFETY: a valid open fd.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    flock(&first, libc::LOCK_EX | libc::LOCK_NB).unwrap();
    assert_eq!(
        errno(flock(&second, libc::LOCK_EX | libc::LOCK_NB)),
        libc::EWOULDBLOCK
    );
    flock(&first, libc::LOCK_UN).unwrap();
    flock(&second, libc::LOCK_EX | libc::LOCK_NB).unwrap();
    drop(second); // closing releases the lock
    flock(&first, libc::LOCK_EX | libc::LOCK_NB).unwrap();
}

#[test]
fn truncate_and_extend() {
    let Some(fs) = mount() else { return };
    let path = durable_empty_file(fs.path(), "f");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.write_at(&[7u8; 100], 0).unwrap();
    f.sync_all().unwrap();

    // Unsynced truncation: undone.
    f.set_len(10).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 10);
    fs.power_loss();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    assert_eq!(fs::read(&path).unwrap(), [7u8; 100]);

    // Truncate, extend with zeros, write into the zeros, fsync: exactly that survives.
    f.set_len(10).unwrap();
    f.set_len(50).unwrap();
    f.write_at(b"xy", 40).unwrap();
    f.sync_data().unwrap();
    let mut want = vec![7u8; 10];
    want.resize(50, 0);
    want[40..42].copy_from_slice(b"xy");
    fs.power_loss();
    assert_eq!(fs::read(&path).unwrap(), want);

    // Writing past the end leaves a zero-filled hole; fallocate(mode 0) grows the file.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.write_at(b"end", 60).unwrap();
    // SAFETY: a valid open fd.
    assert_eq!(unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 100) }, 0);
    assert_eq!(f.metadata().unwrap().len(), 100);
    f.sync_all().unwrap();
    f.set_len(0).unwrap(); // unsynced
    want.resize(60, 0);
    want.extend_from_slice(b"end");
    want.resize(100, 0);
    fs.power_loss();
    assert_eq!(fs::read(&path).unwrap(), want);
}

#[test]
fn directory_listing_survives_removal_while_reading() {
    // sled's blob GC reads a directory and deletes entries as it goes.
    let Some(fs) = mount() else { return };
    let dir = fs.path().join("blobs");
    fs::create_dir(&dir).unwrap();
    for i in 0..300 {
        fs::write(
            dir.join(format!("{i:04}-a-fairly-long-name-to-fill-buffers")),
            b"",
        )
        .unwrap();
    }
    let mut removed = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
        removed += 1;
    }
    assert_eq!(removed, 300);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    fs::remove_dir(&dir).unwrap();
}

#[test]
fn mounts_are_independent() {
    let (Some(a), Some(b)) = (mount(), mount()) else {
        return;
    };
    for fs in [&a, &b] {
        let path = durable_empty_file(fs.path(), "f");
        fs::write(path, b"unsynced").unwrap();
    }
    a.power_loss();
    assert_eq!(fs::read(a.path().join("f")).unwrap(), b"");
    assert_eq!(fs::read(b.path().join("f")).unwrap(), b"unsynced");
}

#[test]
fn drop_does_not_hang_while_a_file_is_open() {
    let Some(common::Mounted { fs, dir: _tmp }) = mount() else {
        return;
    };
    let dir = fs.path().to_path_buf();
    let mut open = File::create(dir.join("f")).unwrap();
    assert!(is_mount_point(&dir));

    let started = Instant::now();
    drop(fs); // busy: unmounted lazily
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!is_mount_point(&dir), "gone from the namespace at once");
    // The detached filesystem still serves the file that was open.
    open.write_all(b"still served").unwrap();
    drop(open);
    // Nothing left open: the mount point is a plain (empty) directory again.
    let empty = wait_for(Duration::from_secs(10), || {
        let mut entries = fs::read_dir(&dir).ok()?;
        entries.next().is_none().then_some(())
    });
    assert!(empty.is_some());
}

#[tokio::test]
async fn usable_from_a_tokio_test() {
    let Some(fs) = mount() else { return };
    let path = durable_empty_file(fs.path(), "f");
    let p = path.clone();
    tokio::task::spawn_blocking(move || {
        let mut f = OpenOptions::new().write(true).open(p).unwrap();
        f.write_all(b"async").unwrap();
        f.sync_data().unwrap();
    })
    .await
    .unwrap();
    fs.power_loss();
    assert_eq!(fs::read(&path).unwrap(), b"async");
}

#[test]
fn many_small_fsyncs_on_a_large_file() {
    // sled's pattern: a log of several MB, appended to in small pieces, each fsynced.
    // fsync copies only what changed, so this stays fast however large the file.
    let Some(fs) = mount() else { return };
    let path = durable_empty_file(fs.path(), "log");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.set_len(8 << 20).unwrap();
    f.sync_all().unwrap();
    let rounds = 2000u64;
    let started = Instant::now();
    for i in 0..rounds {
        f.write_at(&i.to_le_bytes(), i * 8).unwrap();
        f.sync_data().unwrap();
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{rounds} write+fdatasync on an 8 MiB file: {:.0}/s",
        rounds as f64 / elapsed.as_secs_f64()
    );
    f.write_at(b"unsynced", 0).unwrap();
    fs.power_loss();
    let data = fs::read(&path).unwrap();
    assert_eq!(data.len(), 8 << 20);
    for i in 0..rounds {
        let at = (i * 8) as usize;
        assert_eq!(data[at..at + 8], i.to_le_bytes());
    }
}
