//! Readings from /proc: the broker's resident memory, our own CPU time, our fd limit,
//! and the memory and CPU of other processes over a window ([`ProcSampler`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Clock ticks per second in /proc/<pid>/stat. USER_HZ is 100 on every Linux ABI we run
/// on, and asking sysconf would need libc for one constant.
const TICKS_PER_SEC: f64 = 100.0;
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// VmRSS of `pid` in KiB, `None` if the process is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Our own user + system CPU time so far.
pub fn cpu_time() -> Duration {
    let ticks = cpu_ticks(std::process::id()).unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / TICKS_PER_SEC)
}

/// CPU use since `since` (a `cpu_time` reading taken at `started`) as % of one core.
pub fn cpu_pct(since: Duration, started: Instant) -> f64 {
    let wall = started.elapsed().as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    cpu_time().saturating_sub(since).as_secs_f64() / wall * 100.0
}

/// Our soft limit on open files, from /proc/self/limits.
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RssReport {
    pub idle: u64,
    pub max: u64,
    pub end: u64,
}

/// Samples the broker's RSS every 100 ms from the moment it is started, before any
/// client connects (that first reading is `idle`).
pub struct RssSampler {
    pid: u32,
    idle: u64,
    max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    pub fn start(pid: u32) -> anyhow::Result<RssSampler> {
        let idle =
            rss_kib(pid).ok_or_else(|| anyhow::anyhow!("cannot read VmRSS of broker pid {pid}"))?;
        let max = Arc::new(AtomicU64::new(idle));
        let stop = Arc::new(AtomicBool::new(false));
        let (task_max, task_stop) = (max.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            while !task_stop.load(Relaxed) {
                tick.tick().await;
                if let Some(kib) = rss_kib(pid) {
                    task_max.fetch_max(kib, Relaxed);
                }
            }
        });
        Ok(RssSampler {
            pid,
            idle,
            max,
            stop,
        })
    }

    /// The reading taken before any client connected.
    pub fn idle(&self) -> u64 {
        self.idle
    }

    /// The current reading, also counted towards the maximum.
    pub fn now(&self) -> u64 {
        let kib = rss_kib(self.pid).unwrap_or(0);
        self.max.fetch_max(kib, Relaxed);
        kib
    }

    pub fn finish(self) -> RssReport {
        let end = self.now();
        self.stop.store(true, Relaxed);
        RssReport {
            idle: self.idle,
            max: self.max.load(Relaxed),
            end,
        }
    }
}

/// User + system CPU ticks of `pid` so far, `None` if the process is gone.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is parenthesised and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// What one process used between `ProcSampler::start` and `finish`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcUse {
    pub pid: u32,
    pub rss_start_kib: u64,
    pub rss_peak_kib: u64,
    pub cpu_secs: f64,
}

/// Reads /proc/PID/stat and /proc/PID/status of some processes every 100 ms on its own
/// thread (a busy runtime would sample late): peak RSS and CPU time used meanwhile.
pub struct ProcSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<ProcUse>>,
}

impl ProcSampler {
    pub fn start(pids: &[u32]) -> ProcSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let (pids, flag) = (pids.to_vec(), stop.clone());
        let thread = std::thread::spawn(move || {
            let ticks0: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p).unwrap_or(0)).collect();
            let mut out: Vec<ProcUse> = pids
                .iter()
                .map(|&pid| {
                    let rss = rss_kib(pid).unwrap_or(0);
                    ProcUse {
                        pid,
                        rss_start_kib: rss,
                        rss_peak_kib: rss,
                        cpu_secs: 0.0,
                    }
                })
                .collect();
            loop {
                for (u, t0) in out.iter_mut().zip(&ticks0) {
                    u.rss_peak_kib = u.rss_peak_kib.max(rss_kib(u.pid).unwrap_or(0));
                    if let Some(t) = cpu_ticks(u.pid) {
                        u.cpu_secs = t.saturating_sub(*t0) as f64 / TICKS_PER_SEC;
                    }
                }
                if flag.load(Relaxed) {
                    return out;
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        ProcSampler { stop, thread }
    }

    /// Stops sampling after one last reading.
    pub fn finish(self) -> Vec<ProcUse> {
        self.stop.store(true, Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The kernel's memory for TCP sockets, in KiB: their buffers (`mem` pages of the TCP
/// line in /proc/net/sockstat) plus the slab objects of the sockets themselves (`TCP`,
/// `TCPv6` and `sock_inode_cache` in /proc/slabinfo, active objects × size, where that
/// file is readable: root only). On loopback both ends of a connection count.
pub fn kernel_socket_kib() -> Option<u64> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let tcp = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let fields: Vec<&str> = tcp.split_whitespace().collect();
    let mem_pages: u64 = fields
        .iter()
        .position(|f| *f == "mem")
        .and_then(|i| fields.get(i + 1)?.parse().ok())?;
    let mut bytes = mem_pages * 4096;
    if let Ok(slabs) = std::fs::read_to_string("/proc/slabinfo") {
        for line in slabs.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if matches!(f.first(), Some(&("TCP" | "TCPv6" | "sock_inode_cache"))) {
                let active: u64 = f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
                let size: u64 = f.get(3).and_then(|v| v.parse().ok()).unwrap_or(0);
                bytes += active * size;
            }
        }
    }
    Some(bytes / 1024)
}
