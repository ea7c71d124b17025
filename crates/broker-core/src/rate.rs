//! Rates: a token bucket (connection admission, a client's inbound rate) and a pacer
//! that hands out evenly spaced send slots (push pacing). Both are plain state; the
//! callers decide whether to wait, refuse or stop reading.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::PacingRule;
use crate::topic;

/// Tokens refill at `rate` per second up to `burst`. Taking may go into debt: the
/// answer is then when the debt is paid, which is how long the taker should wait.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket. `rate` must be above 0; `burst` is at least one token.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Bucket {
        let burst = burst.max(1.0);
        Bucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes `n` tokens if there are that many.
    pub fn try_take(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens, into debt if need be: `None` when none was owed, else the
    /// instant the bucket is back to zero.
    pub fn take(&mut self, n: f64, now: Instant) -> Option<Instant> {
        self.refill(now);
        self.tokens -= n;
        (self.tokens < 0.0).then(|| now + Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

/// Evenly spaced slots, `rate` per second: each reservation gets the first free slot,
/// so K takers are served over (K - 1) / rate seconds, in the order they asked.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Instant,
}

impl Pacer {
    pub fn new(rate: u32, now: Instant) -> Pacer {
        Pacer {
            interval: Duration::from_secs_f64(1.0 / f64::from(rate.max(1))),
            next: now,
        }
    }

    /// The slot reserved for one send: now if the pacer is idle, else after the last
    /// reserved one.
    pub fn reserve(&mut self, now: Instant) -> Instant {
        let slot = self.next.max(now);
        self.next = slot + self.interval;
        slot
    }
}

/// The `[[pacing]]` rules of a node, each with its pacer.
#[derive(Debug, Default)]
pub struct Pacing {
    rules: Vec<(String, Mutex<Pacer>)>,
}

impl Pacing {
    pub fn new(rules: &[PacingRule]) -> Pacing {
        let now = Instant::now();
        Pacing {
            rules: rules
                .iter()
                .map(|r| (r.topic.clone(), Mutex::new(Pacer::new(r.rate, now))))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The slot of one delivery of a message on `topic`, from the first rule that
    /// matches it; `None` when no rule does.
    pub fn slot(&self, topic: &str, now: Instant) -> Option<Instant> {
        let (_, pacer) = self.rules.iter().find(|(f, _)| topic::matches(f, topic))?;
        Some(pacer.lock().unwrap_or_else(|e| e.into_inner()).reserve(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_spends_its_burst_then_owes() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10.0, 2.0, t0);
        assert!(b.try_take(1.0, t0));
        assert!(b.try_take(1.0, t0));
        assert!(!b.try_take(1.0, t0), "burst spent");
        // 0.05 s later half a token is back: taking one owes half, paid 0.05 s later.
        let t1 = t0 + Duration::from_millis(50);
        let paid = b.take(1.0, t1).expect("in debt");
        assert!((paid - t1).as_secs_f64() > 0.049 && (paid - t1).as_secs_f64() < 0.051);
        // After a long pause the bucket holds its burst, no more.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(b.take(2.0, t2), None);
        assert!(b.take(1.0, t2).is_some());
    }

    #[test]
    fn pacer_spaces_reservations() {
        let t0 = Instant::now();
        let mut p = Pacer::new(100, t0);
        let slots: Vec<Instant> = (0..5).map(|_| p.reserve(t0)).collect();
        assert_eq!(slots[0], t0);
        assert_eq!(slots[4] - t0, Duration::from_millis(40));
        // Idle for a while: the next taker goes at once.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(p.reserve(later), later);
    }
}
