//! The closed loop: subscribers report how far each publisher's messages have reached
//! them, and each publisher sends only while its slowest sink is within the window.
//!
//! A sink is one subscriber, or a whole `$share` group (whose members each get a part).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

pub struct Flow {
    publishers: Vec<PublisherFlow>,
    /// Group members each see a subset, so their progress is a count, not a position.
    shared: bool,
    /// Set while the load phase runs; slow subscribers throttle only then.
    publishing: AtomicBool,
}

struct PublisherFlow {
    sent: AtomicU64,
    notify: Notify,
    sinks: Vec<Slot>,
}

/// One (publisher, sink) pair; aligned so that subscribers on different cores do not
/// share a cache line.
#[derive(Default)]
#[repr(align(64))]
struct Slot {
    count: AtomicU64,
    /// One past the highest sequence number received.
    next: AtomicU64,
    closed: AtomicBool,
}

impl Flow {
    pub fn new(publishers: usize, sinks: usize, shared: bool) -> Flow {
        let publishers = (0..publishers)
            .map(|_| PublisherFlow {
                sent: AtomicU64::new(0),
                notify: Notify::new(),
                sinks: (0..sinks).map(|_| Slot::default()).collect(),
            })
            .collect();
        Flow {
            publishers,
            shared,
            publishing: AtomicBool::new(true),
        }
    }

    /// A subscriber received `count` more messages from `publisher`, the highest being
    /// `next - 1`. Wakes the publisher in case it waits for room in its window.
    pub fn advance(&self, publisher: usize, sink: usize, count: u64, next: u64) {
        let p = &self.publishers[publisher];
        let slot = &p.sinks[sink];
        slot.count.fetch_add(count, Relaxed);
        slot.next.fetch_max(next, Relaxed);
        p.notify.notify_one();
    }

    /// The sink's connection ended: publishers stop waiting for it.
    pub fn close(&self, sink: usize) {
        for p in &self.publishers {
            p.sinks[sink].closed.store(true, Relaxed);
            p.notify.notify_one();
        }
    }

    /// How many of `publisher`'s messages its slowest open sink has received (by position
    /// for a single subscriber, so that a lost QoS 0 message does not shrink the window).
    pub fn slowest(&self, publisher: usize) -> u64 {
        let progress = |s: &Slot| match (s.closed.load(Relaxed), self.shared) {
            (true, _) => u64::MAX,
            (false, true) => s.count.load(Relaxed),
            (false, false) => s.next.load(Relaxed),
        };
        let sinks = &self.publishers[publisher].sinks;
        sinks.iter().map(progress).min().unwrap_or(u64::MAX)
    }

    pub fn notified(&self, publisher: usize) -> Notified<'_> {
        self.publishers[publisher].notify.notified()
    }

    pub fn set_sent(&self, publisher: usize, sent: u64) {
        self.publishers[publisher].sent.store(sent, Relaxed);
    }

    pub fn total_sent(&self) -> u64 {
        self.publishers.iter().map(|p| p.sent.load(Relaxed)).sum()
    }

    /// Every open sink has as many messages as were sent (duplicates aside): nothing is
    /// left to drain.
    pub fn all_delivered(&self) -> bool {
        self.publishers.iter().all(|p| {
            let sent = p.sent.load(Relaxed);
            (p.sinks.iter()).all(|s| s.closed.load(Relaxed) || s.count.load(Relaxed) >= sent)
        })
    }

    pub fn is_shared(&self) -> bool {
        self.shared
    }

    pub fn publishing(&self) -> bool {
        self.publishing.load(Relaxed)
    }

    pub fn stop_publishing(&self) {
        self.publishing.store(false, Relaxed);
    }
}
