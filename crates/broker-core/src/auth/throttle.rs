//! Failed-login throttling: each source address that keeps failing waits longer for
//! its refusal (none for the first failure, then 100 ms doubling up to 5 s), which
//! slows password guessing without touching anyone else. An address quiet for a
//! minute starts over. The table is capped: when full, quiet addresses go first, then
//! the one that failed longest ago.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Delay after the second failure in a row; each further failure doubles it.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay.
const MAX_DELAY: Duration = Duration::from_secs(5);
/// An address that has not failed for this long starts over.
const QUIET: Duration = Duration::from_secs(60);
/// Addresses remembered at most (about 50 bytes each).
pub const MAX_ADDRESSES: usize = 10_000;

#[derive(Debug)]
struct Entry {
    failures: u32,
    last: Instant,
}

#[derive(Debug)]
pub struct Throttle {
    table: Mutex<HashMap<IpAddr, Entry>>,
    cap: usize,
}

impl Throttle {
    pub fn new(cap: usize) -> Throttle {
        Throttle {
            table: Mutex::new(HashMap::new()),
            cap: cap.max(1),
        }
    }

    /// Counts a failure from `ip` at `now`; the delay its refusal should wait.
    pub fn fail(&self, ip: IpAddr, now: Instant) -> Duration {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.contains_key(&ip) && table.len() >= self.cap {
            make_room(&mut table, self.cap, now);
        }
        let entry = table.entry(ip).or_insert(Entry {
            failures: 0,
            last: now,
        });
        if now.saturating_duration_since(entry.last) >= QUIET {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last = now;
        if entry.failures == 2 {
            // Once per burst: the first failure of an address may be a typo.
            tracing::warn!(%ip, "repeated failed logins: delaying further refusals");
        }
        delay_after(entry.failures)
    }

    /// Addresses remembered now.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops the quiet addresses; if none is, the one that failed longest ago.
fn make_room(table: &mut HashMap<IpAddr, Entry>, cap: usize, now: Instant) {
    table.retain(|_, e| now.saturating_duration_since(e.last) < QUIET);
    if table.len() >= cap {
        let oldest = table.iter().min_by_key(|(_, e)| e.last).map(|(ip, _)| *ip);
        if let Some(ip) = oldest {
            table.remove(&ip);
        }
    }
}

/// 0 for the first failure, then 100 ms, 200 ms, 400 ms … up to `MAX_DELAY`.
pub fn delay_after(failures: u32) -> Duration {
    match failures {
        0 | 1 => Duration::ZERO,
        n => FIRST_DELAY
            .saturating_mul(1 << (n - 2).min(16))
            .min(MAX_DELAY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn delay_doubles_up_to_the_cap() {
        let ms = |n| delay_after(n).as_millis();
        assert_eq!([ms(1), ms(2), ms(3), ms(4), ms(5)], [0, 100, 200, 400, 800]);
        assert_eq!(ms(8), 5000);
        assert_eq!(ms(u32::MAX), 5000);
    }

    #[test]
    fn each_address_counts_alone_and_quiet_ones_start_over() {
        let t = Throttle::new(100);
        let start = Instant::now();
        assert_eq!(t.fail(ip(1), start), Duration::ZERO);
        assert_eq!(t.fail(ip(1), start), Duration::from_millis(100));
        assert_eq!(t.fail(ip(1), start), Duration::from_millis(200));
        assert_eq!(t.fail(ip(2), start), Duration::ZERO, "another address");
        let later = start + QUIET;
        assert_eq!(t.fail(ip(1), later), Duration::ZERO, "after a quiet minute");
        assert_eq!(t.fail(ip(1), later), Duration::from_millis(100));
    }

    #[test]
    fn the_table_is_capped() {
        let t = Throttle::new(3);
        let start = Instant::now();
        for n in 0..3 {
            t.fail(ip(n), start + Duration::from_secs(u64::from(n)));
        }
        t.fail(ip(9), start + Duration::from_secs(10));
        assert_eq!(t.len(), 3);
        // ip(0) failed longest ago and went; ip(1) still counts.
        assert_eq!(t.fail(ip(1), start + Duration::from_secs(11)), FIRST_DELAY);
        assert_eq!(
            t.fail(ip(0), start + Duration::from_secs(12)),
            Duration::ZERO
        );
        // Quiet addresses go first, all of them.
        t.fail(ip(5), start + QUIET + Duration::from_secs(30));
        assert!(t.len() <= 3);
    }
}
