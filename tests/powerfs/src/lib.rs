//! powerfs: a test-only FUSE filesystem that simulates power loss.
//!
//! It behaves like a disk under a page cache, with POSIX's promises and no more: data and
//! size of a file are durable only after `fsync`/`fdatasync` of that file, and directory
//! entries (create, mkdir, unlink, rmdir, rename) only after `fsync` of the directory that
//! holds them. [`PowerFs::power_loss`] throws away everything else and kills every handle
//! opened before it (they get EIO from then on), so a test can run real processes on the
//! mount, "cut the power", restart them and see what survived.
//!
//! Everything lives in memory; files are opened with direct I/O and the kernel is told to
//! cache no attributes or entries, so that nothing the kernel keeps can survive a cut (and
//! `sync_file_range(2)`, which only writes back the page cache, has no effect at all).
//!
//! Limits, on purpose or because FUSE draws them:
//! - Metadata (mode, owner, times) is not crash-modelled: it survives a cut as it is.
//! - Locks are the kernel's own (`flock`, `fcntl`; we implement no lock requests). A lock
//!   taken through a handle from before a cut stays held until that handle is closed, as
//!   killing the process that holds it does.
//! - `fstat` on a dead handle still answers: the kernel sends getattr without the handle.
//! - Regular files and directories only: no hard or symbolic links, device nodes, fifos,
//!   xattrs or `RENAME_EXCHANGE`; no shared writable `mmap` (direct I/O).
//! - The model is strict: a rename between two directories of which only the source's is
//!   fsynced loses the file in a cut, and if only the target's is, it shows up in both.
//!
//! ```no_run
//! # fn demo(dir: &std::path::Path) {
//! let Some(fs) = powerfs::try_mount(dir) else { return };
//! std::fs::write(fs.path().join("f"), b"lost").unwrap();
//! let report = fs.power_loss();
//! eprintln!("{report}");
//! assert!(!fs.path().join("f").exists());
//! # }
//! ```

mod fuse;
mod model;

use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, Config, MountOption, SessionACL};

pub use model::{PowerLossReport, Stats};

/// A mounted powerfs. Dropping it unmounts (lazily when still in use, so it never hangs).
pub struct PowerFs {
    mountpoint: PathBuf,
    state: Arc<Mutex<model::State>>,
    session: Option<BackgroundSession>,
}

impl std::fmt::Debug for PowerFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerFs")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

impl PowerFs {
    /// Mounts an empty filesystem at `mountpoint` (an existing empty directory).
    ///
    /// Err is a one-line reason when FUSE cannot be used here: no `/dev/fuse`, no
    /// `fusermount3` for a non-root user, or the mount refused.
    pub fn mount(mountpoint: &Path) -> Result<PowerFs, String> {
        // Check the usual reasons first, to name them instead of a bare errno.
        // SAFETY: geteuid/getegid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let root = uid == 0;
        if !Path::new("/dev/fuse").exists() {
            return Err("no /dev/fuse".into());
        }
        if root {
            // Root mounts with mount(2) on an fd of its own.
            if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/fuse") {
                return Err(format!("cannot open /dev/fuse: {e}"));
            }
        } else if !in_path("fusermount3") && !in_path("fusermount") {
            // Anyone else goes through the setuid helper, which opens /dev/fuse itself.
            return Err("not root and no fusermount3 in PATH (apt-get install fuse3)".into());
        }
        if !mountpoint.is_dir() {
            return Err(format!(
                "mountpoint {} is not a directory",
                mountpoint.display()
            ));
        }

        let state = Arc::new(Mutex::new(model::State::new(uid, gid)));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("powerfs".into()),
            MountOption::Subtype("powerfs".into()),
            // The kernel checks modes itself, so we need no access logic.
            MountOption::DefaultPermissions,
        ];
        // Root mounts with allow_other, so broker processes running as other users work
        // too. A non-root mount through fusermount3 would need user_allow_other for that.
        config.acl = if root {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        // One serving thread: every request takes the state lock anyway.
        config.n_threads = Some(1);
        let ops = fuse::Ops {
            state: state.clone(),
        };
        // Returns once the kernel's INIT is answered: the mount is usable right away.
        let session = fuser::spawn_mount(ops, mountpoint, &config)
            .map_err(|e| format!("mount at {} refused: {e}", mountpoint.display()))?;
        Ok(PowerFs {
            mountpoint: mountpoint.to_path_buf(),
            state,
            session: Some(session),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The power cut: every file's data and size and every directory's entries go back to
    /// what was last made durable; files and directories no durable entry reaches are gone;
    /// every file or directory handle opened before this call fails with EIO from now on,
    /// while handles opened afterwards work normally.
    pub fn power_loss(&self) -> PowerLossReport {
        fuse::lock(&self.state).power_loss()
    }

    /// Counts of the requests that reached the filesystem so far.
    pub fn stats(&self) -> Stats {
        fuse::lock(&self.state).stats.clone()
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        // A lazy unmount always succeeds at once: the mount leaves the namespace now and
        // the kernel ends the session when its last open file closes. A plain umount would
        // fail with EBUSY while, say, a killed broker's child still holds a file open.
        if let Err(e) = lazy_unmount(&self.mountpoint) {
            eprintln!("powerfs: unmounting {}: {e}", self.mountpoint.display());
        }
        // Usually nothing is open and the serving thread ends within milliseconds.
        let deadline = Instant::now() + Duration::from_secs(1);
        while !session.guard.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if session.guard.is_finished() {
            let _ = session.join();
        } else {
            // Still serving someone's open files: let the thread run on, detached. Dropping
            // the session instead would try a second (plain) umount of the path.
            std::mem::forget(session);
        }
    }
}

/// Mounts for a test, or prints `skipped: no FUSE (<reason>)` to stderr and returns None:
/// `let Some(fs) = powerfs::try_mount(dir) else { return };`
pub fn try_mount(mountpoint: &Path) -> Option<PowerFs> {
    match PowerFs::mount(mountpoint) {
        Ok(fs) => Some(fs),
        Err(reason) => {
            eprintln!("skipped: no FUSE ({reason})");
            None
        }
    }
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn lazy_unmount(mountpoint: &Path) -> Result<(), String> {
    let c_path = CString::new(mountpoint.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: a valid NUL-terminated path; umount2 reads it only during the call.
    if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EPERM) {
        return Err(err.to_string());
    }
    // Not root: the setuid helper may unmount what the user mounted.
    let helper = if in_path("fusermount3") {
        "fusermount3"
    } else {
        "fusermount"
    };
    let out = Command::new(helper)
        .args(["-u", "-z", "--"])
        .arg(mountpoint)
        .output()
        .map_err(|e| format!("{helper}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{helper} -u -z: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
