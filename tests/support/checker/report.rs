//! The verdict on one run: counts, and every property that failed.

use std::fmt;
use std::time::Duration;

use super::{Outcome, Record, Seen};

/// Examples listed per kind of failure.
const EXAMPLES: usize = 5;

/// Counts and the failed properties of one run.
#[derive(Debug, Clone)]
pub struct Report {
    pub name: String,
    pub published: usize,
    pub acked: usize,
    pub refused: usize,
    pub unknown: usize,
    pub delivered: u64,
    pub duplicates: u64,
    pub qos2_resends: u64,
    pub reconnects: u32,
    pub left_open: usize,
    /// The longest a subscriber waited between two new messages.
    pub worst_gap: Duration,
    pub elapsed: Duration,
    pub failures: Vec<String>,
}

impl Report {
    pub(super) fn of(name: &str, rec: &Record, elapsed: Duration) -> Report {
        let outcomes = || rec.sent.values().flat_map(|(_, o)| o);
        let count = |f: fn(&Outcome) -> bool| outcomes().filter(|o| f(o)).count();
        let seen = || rec.seen.values();
        let mut failures = Vec::new();
        for (sub, s) in &rec.seen {
            check_subscriber(sub, s, rec, &mut failures);
        }
        if !rec.sessions_lost.is_empty() {
            failures.push(format!(
                "sessions lost on reconnect: {:?}",
                rec.sessions_lost
            ));
        }
        for e in &rec.errors {
            failures.push(format!("client gave up: {e}"));
        }
        failures.extend(rec.late.iter().cloned());
        for w in rec.watched.iter().filter(|w| w.closed.is_none()) {
            let open = w.since.elapsed().as_secs_f32();
            failures.push(format!(
                "connection still open after {open:.1}s: {}",
                w.what
            ));
        }
        Report {
            name: name.to_string(),
            published: outcomes().count(),
            acked: count(|o| *o == Outcome::Acked),
            refused: count(|o| matches!(o, Outcome::Refused(_))),
            unknown: count(|o| *o == Outcome::Unknown),
            delivered: seen()
                .flat_map(|s| s.count.values())
                .map(|&n| u64::from(n))
                .sum(),
            duplicates: seen()
                .flat_map(|s| s.count.values())
                .map(|&n| u64::from(n.saturating_sub(1)))
                .sum(),
            qos2_resends: seen().map(|s| u64::from(s.qos2_resends)).sum(),
            reconnects: rec.reconnects,
            left_open: rec.watched.len(),
            worst_gap: seen().map(|s| s.worst_gap).max().unwrap_or_default(),
            elapsed,
            failures,
        }
    }
}

/// The delivery properties for one subscriber; failures are appended to `out`.
fn check_subscriber(sub: &str, s: &Seen, rec: &Record, out: &mut Vec<String>) {
    let mut lost = Vec::new();
    let mut twice = Vec::new();
    let mut unacked_twice = Vec::new();
    let mut phantom = Vec::new();
    for (p, (qos, outcomes)) in &rec.sent {
        for (i, o) in outcomes.iter().enumerate() {
            let n = s
                .count
                .get(&(p.clone(), i as u32 + 1))
                .copied()
                .unwrap_or(0);
            let msg = format!("{p}:{} ({o:?}, {n}x)", i + 1);
            match (o, qos, n) {
                (Outcome::Acked, _, 0) => lost.push(msg),
                (Outcome::Acked, 2, 2..) => twice.push(msg),
                (_, 2, 2..) => unacked_twice.push(msg),
                _ => {}
            }
        }
    }
    for (p, seq) in s.count.keys() {
        let published = rec.sent.get(p).map_or(0, |(_, o)| o.len());
        if *seq as usize > published {
            phantom.push(format!("{p}:{seq}"));
        }
    }
    let mut disorder = Vec::new();
    for (p, firsts) in &s.first {
        if let Some(w) = firsts.windows(2).find(|w| w[1] <= w[0]) {
            disorder.push(format!("{p}: {} then {}", w[0], w[1]));
        }
    }
    let wills: Vec<String> = rec
        .wills
        .iter()
        .map(|w| (w, s.wills.get(w).copied().unwrap_or(0)))
        .filter(|&(_, n)| n != 1)
        .map(|(w, n)| format!("{w}: {n}x"))
        .collect();
    let strays: Vec<String> = s.strays.clone();
    for (what, list) in [
        ("acknowledged, never delivered", lost),
        ("acknowledged QoS 2, delivered more than once", twice),
        (
            "unacknowledged QoS 2, delivered more than once",
            unacked_twice,
        ),
        ("delivered, never published", phantom),
        ("first deliveries out of publish order", disorder),
        ("wills not delivered exactly once", wills),
        ("unexpected messages", strays),
    ] {
        if !list.is_empty() {
            let shown: Vec<&String> = list.iter().take(EXAMPLES).collect();
            out.push(format!("{sub}: {what}: {} e.g. {shown:?}", list.len()));
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] published {} (acked {}, refused {}, unknown {}), delivered {}, \
             duplicates {} (+{} QoS 2 resends), reconnects {}, connections left open {}, \
             worst delivery gap {:.1}s, {:.1}s, {}",
            self.name,
            self.published,
            self.acked,
            self.refused,
            self.unknown,
            self.delivered,
            self.duplicates,
            self.qos2_resends,
            self.reconnects,
            self.left_open,
            self.worst_gap.as_secs_f32(),
            self.elapsed.as_secs_f32(),
            match self.failures.len() {
                0 => "all checks passed".to_string(),
                n => format!("{n} FAILED"),
            }
        )
    }
}
