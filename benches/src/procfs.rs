//! Readings from /proc: the broker's resident memory, our own CPU time, our fd limit.

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
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name, which is parenthesised and may hold spaces.
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut fields = rest.split_whitespace().skip(11);
            let utime: u64 = fields.next()?.parse().ok()?;
            let stime: u64 = fields.next()?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0);
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
