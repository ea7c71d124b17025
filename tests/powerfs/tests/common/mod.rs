//! Helpers shared by the powerfs tests.

#![allow(dead_code)] // each test binary uses its own subset

use std::fs::File;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use powerfs::PowerFs;
use tempfile::TempDir;

/// A mount on a fresh temp dir. Field order matters: the filesystem is unmounted before
/// the directory under it is removed.
pub struct Mounted {
    pub fs: PowerFs,
    pub dir: TempDir,
}

impl std::ops::Deref for Mounted {
    type Target = PowerFs;
    fn deref(&self) -> &PowerFs {
        &self.fs
    }
}

/// None (after `try_mount` printed "skipped: no FUSE (...)") where FUSE can't be used.
pub fn mount() -> Option<Mounted> {
    let dir = tempfile::tempdir().expect("temp dir");
    let fs = powerfs::try_mount(dir.path())?;
    Some(Mounted { fs, dir })
}

/// fsync of a directory, which makes its entries durable.
pub fn fsync_dir(dir: &Path) {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .unwrap_or_else(|e| panic!("fsync dir {}: {e}", dir.display()));
}

/// The errno of an I/O result that must have failed.
pub fn errno<T: std::fmt::Debug>(result: io::Result<T>) -> i32 {
    result
        .expect_err("expected an error")
        .raw_os_error()
        .expect("an OS error")
}

/// Polls `f` until it returns Some, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `path` is currently a mount point of this process's namespace.
pub fn is_mount_point(path: &Path) -> bool {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| Path::new(mp) == path)
}

/// Every file and directory under `root`, relative, sorted; directories end in '/'.
pub fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if path.is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &path, out);
            } else {
                let len = path.metadata().map(|m| m.len()).unwrap_or(0);
                out.push(format!("{rel} ({len} bytes)"));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// fsyncs every file and directory under `root` (and `root` itself).
pub fn sync_tree(root: &Path) {
    for entry in std::fs::read_dir(root).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sync_tree(&path);
        } else {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .expect("fsync file");
        }
    }
    fsync_dir(root);
}
