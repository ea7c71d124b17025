//! What the operating system says about this process (`/proc/self`) and about the data
//! directory (its size, and its file system's room), for `/metrics`. Linux only: on
//! another system, or when a file cannot be read, a reading is `None` and its metrics
//! are left out.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// This process, as `/proc/self` tells it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Process {
    /// User and system CPU time.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    /// Since the Unix epoch.
    pub start_time_seconds: f64,
    pub open_fds: u64,
    /// The soft limit on open file descriptors (`ulimit -n`).
    pub max_fds: u64,
}

impl Process {
    pub fn read() -> Option<Process> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let boot_time: f64 = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        // SAFETY: sysconf only reads a configuration value.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if ticks <= 0 || page <= 0 {
            return None;
        }
        let (ticks, page) = (ticks as f64, page as u64);
        // The command name, in parentheses, may hold spaces: fields count from after it,
        // where field 3 of proc_pid_stat(5) (state) is index 0.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
        let fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        Some(Process {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            start_time_seconds: boot_time + field(22)? as f64 / ticks,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)? * page,
            open_fds: fds,
            max_fds: max_fds()?,
        })
    }
}

fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass, which outlives the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0).then_some(limit.rlim_cur)
}

/// The data directory: what it holds, and the room on its file system.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disk {
    /// The files under the directory, added up (`None` if it cannot be read).
    pub dir_bytes: Option<u64>,
    /// The file system's size, and what is free for an unprivileged user (`df`'s
    /// "Avail"), from statvfs(3).
    pub fs_size_bytes: Option<u64>,
    pub fs_free_bytes: Option<u64>,
}

impl Disk {
    pub fn read(dir: &Path) -> Disk {
        let (fs_size_bytes, fs_free_bytes) = match statvfs(dir) {
            Some((size, free)) => (Some(size), Some(free)),
            None => (None, None),
        };
        Disk {
            dir_bytes: dir_size(dir),
            fs_size_bytes,
            fs_free_bytes,
        }
    }
}

/// Adds up the sizes of the files under `dir`, not following symbolic links. A file
/// removed while we walk (sled rewrites its files) is skipped.
fn dir_size(dir: &Path) -> Option<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    let mut first = true;
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(_) if !first => continue,
            Err(_) => return None,
        };
        first = false;
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    Some(total)
}

/// (size, available) bytes of the file system holding `path`.
fn statvfs(path: &Path) -> Option<(u64, u64)> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data, for which all zeroes is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a struct that outlive the call.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let unit = st.f_frsize as u64;
    Some((st.f_blocks as u64 * unit, st.f_bavail as u64 * unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_read() {
        let p = Process::read().expect("/proc/self");
        assert!(p.resident_bytes > 0 && p.virtual_bytes >= p.resident_bytes);
        assert!(p.open_fds >= 3, "stdin, stdout, stderr at least: {p:?}");
        assert!(p.max_fds >= p.open_fds);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(p.start_time_seconds > now - 3600.0 && p.start_time_seconds <= now + 1.0);
    }

    #[test]
    fn the_data_dir_is_measured() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("sub/b"), [0u8; 24]).unwrap();
        let disk = Disk::read(dir.path());
        assert_eq!(disk.dir_bytes, Some(1024));
        let (size, free) = (disk.fs_size_bytes.unwrap(), disk.fs_free_bytes.unwrap());
        assert!(size > 0 && free <= size, "{disk:?}");
        assert_eq!(Disk::read(&dir.path().join("missing")).dir_bytes, None);
    }
}
