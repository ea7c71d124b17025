//! The result of one failover run: one JSON line (the script's input) and a table.

use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use super::publisher::Acks;
use super::subscriber::Progress;
use super::{lock, missing, FailoverCli};
use crate::procfs::ProcUse;
use crate::report::round;

/// Runs with more subscribers than this leave `per_subscriber` out of the JSON line.
const PER_SUBSCRIBER_MAX: usize = 100;

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub kind: String,
    pub victim: String,
    pub survivors: Vec<String>,
    pub subscribers: u32,
    pub interval_ms: u64,
    /// Wall-clock time of the SIGKILL, to line up with the nodes' logs.
    pub killed_at_unix_ms: Option<u64>,
    /// T0 to the last subscriber's first message after reconnecting.
    pub failover_ms: Option<f64>,
    /// The same for the median subscriber, and for the first one.
    pub median_ms: Option<f64>,
    pub first_ms: Option<f64>,
    /// T0 to the last subscriber's CONNACK, and to the last one noticing the loss.
    pub connack_max_ms: Option<f64>,
    /// The reconnect storm: T0 to the last CONNACK with session present (None unless
    /// every subscriber got one), the median and 99th percentile subscriber, and
    /// subscribers / resume_ms.
    pub resume_ms: Option<f64>,
    pub resume_p50_ms: Option<f64>,
    pub resume_p99_ms: Option<f64>,
    pub resumes_per_sec: Option<f64>,
    /// The survivors (--survivor-pid) from T0 until every subscriber resumed.
    pub survivor_use: Vec<ProcUse>,
    /// This load generator over the same time.
    pub loadgen_use: Option<ProcUse>,
    pub detect_max_ms: Option<f64>,
    pub resumed: u32,
    pub session_present_violations: u32,
    /// Connect attempts after the kill, over all subscribers; the failed ones are
    /// `reconnect_attempts - resumed` (when every one resumed once).
    pub reconnect_attempts: u32,
    pub published: u64,
    pub acked: u64,
    pub unacked: u64,
    /// Messages below this were published before every subscription had reached the
    /// publisher's node, and are not counted.
    pub counted_from_seq: u32,
    /// Acknowledged messages, from `counted_from_seq` on, that a subscriber never
    /// received: summed over subscribers, and how many subscribers missed any.
    pub lost: u64,
    pub lost_subscribers: u32,
    pub duplicated: u64,
    pub max_ack_ms: f64,
    /// Left out past `PER_SUBSCRIBER_MAX` subscribers, to keep the line short.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_subscriber: Vec<SubscriberOut>,
    pub error: Option<String>,
    #[serde(skip)]
    pub t0: Option<Instant>,
    /// Distinct first failures of reconnect attempts, for the table.
    #[serde(skip)]
    pub failures: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SubscriberOut {
    pub detect_ms: Option<f64>,
    pub connack_ms: Option<f64>,
    pub resumed_ms: Option<f64>,
    pub resumed_on: Option<String>,
    pub attempts: u32,
    pub disconnects: u32,
    pub lost: u64,
}

impl Report {
    pub fn new(cli: &FailoverCli) -> Report {
        Report {
            scenario: "failover",
            kind: cli.kind.clone(),
            victim: cli.victim.clone(),
            survivors: cli.survivors.clone(),
            subscribers: cli.subscribers,
            interval_ms: cli.interval_ms,
            killed_at_unix_ms: None,
            failover_ms: None,
            median_ms: None,
            first_ms: None,
            connack_max_ms: None,
            resume_ms: None,
            resume_p50_ms: None,
            resume_p99_ms: None,
            resumes_per_sec: None,
            survivor_use: Vec::new(),
            loadgen_use: None,
            detect_max_ms: None,
            resumed: 0,
            session_present_violations: 0,
            reconnect_attempts: 0,
            published: 0,
            acked: 0,
            unacked: 0,
            counted_from_seq: 0,
            lost: 0,
            lost_subscribers: 0,
            duplicated: 0,
            max_ack_ms: 0.0,
            per_subscriber: Vec::new(),
            error: None,
            t0: None,
            failures: Vec::new(),
        }
    }

    /// Fills the figures in from what the clients recorded.
    pub fn tally(&mut self, progress: &[Arc<Mutex<Progress>>], acks: &Mutex<Acks>) {
        let acks = lock(acks);
        (self.published, self.acked) = (acks.sent, acks.acked.len());
        (self.unacked, self.max_ack_ms) = (acks.unacked, round(acks.max_ack_ms, 1));
        let since = |at: Option<Instant>| match (at, self.t0) {
            (Some(at), Some(t0)) => Some(round(ms_between(t0, at), 1)),
            _ => None,
        };
        let mut out = Vec::with_capacity(progress.len());
        for p in progress {
            let p = lock(p);
            let lost = match self.t0 {
                Some(_) => missing(&acks.acked, &p.seen, self.counted_from_seq),
                None => 0,
            };
            self.lost += lost;
            self.lost_subscribers += u32::from(lost > 0);
            self.duplicated += p.duplicated;
            self.session_present_violations += p.present_violations;
            self.reconnect_attempts += p.attempts;
            if let Some(f) = &p.first_failure {
                if !self.failures.contains(f) {
                    self.failures.push(f.clone());
                }
            }
            out.push(SubscriberOut {
                detect_ms: since(p.lost_at),
                connack_ms: since(p.connack_at),
                resumed_ms: since(p.resumed_at),
                resumed_on: p.resumed_on.map(|a| a.to_string()),
                attempts: p.attempts,
                disconnects: p.disconnects,
                lost,
            });
        }
        let mut resumed: Vec<f64> = out.iter().filter_map(|s| s.resumed_ms).collect();
        resumed.sort_by(f64::total_cmp);
        self.resumed = resumed.len() as u32;
        self.first_ms = resumed.first().copied();
        self.median_ms = median(&resumed);
        if resumed.len() == out.len() {
            self.failover_ms = resumed.last().copied();
        }
        let max = |f: fn(&SubscriberOut) -> Option<f64>| out.iter().filter_map(f).reduce(f64::max);
        self.connack_max_ms = max(|s| s.connack_ms);
        self.detect_max_ms = max(|s| s.detect_ms);
        let mut present: Vec<f64> = (out.iter().zip(progress))
            .filter(|(_, p)| lock(p).present_violations == 0)
            .filter_map(|(s, _)| s.connack_ms)
            .collect();
        present.sort_by(f64::total_cmp);
        self.resume_p50_ms = percentile(&present, 0.50);
        self.resume_p99_ms = percentile(&present, 0.99);
        if present.len() == out.len() {
            self.resume_ms = present.last().copied();
            self.resumes_per_sec = self
                .resume_ms
                .map(|ms| round(out.len() as f64 / (ms.max(1e-3) / 1e3), 0));
        }
        if out.len() <= PER_SUBSCRIBER_MAX {
            self.per_subscriber = out;
        }
    }

    /// Turns a loss or a violation into the run's error, so that the exit status says it.
    pub fn judge(&mut self) {
        let mut problems = Vec::new();
        if self.lost > 0 {
            problems.push(format!(
                "LOST {} acknowledged messages ({} subscribers missed some)",
                self.lost, self.lost_subscribers
            ));
        }
        if self.session_present_violations > 0 {
            problems.push(format!(
                "{} reconnects without session present",
                self.session_present_violations
            ));
        }
        if !problems.is_empty() {
            let problems = problems.join("; ");
            eprintln!("!!!!!!!! {problems} !!!!!!!!");
            self.error = Some(match self.error.take() {
                Some(e) => format!("{e}; {problems}"),
                None => problems,
            });
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }

    pub fn table(&self) -> String {
        let mut t = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(t, "  {k:<22} {v}");
        };
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
        row(
            "scenario",
            format!("failover ({}) of {}", self.kind, self.victim),
        );
        row(
            "clients",
            format!(
                "{} persistent subscribers, QoS 1 every {} ms",
                self.subscribers, self.interval_ms
            ),
        );
        row("failover (last)", ms(self.failover_ms));
        row(
            "median / first",
            format!("{} / {}", ms(self.median_ms), ms(self.first_ms)),
        );
        row("last CONNACK", ms(self.connack_max_ms));
        row(
            "resumed, present",
            format!(
                "{} (p50 {} p99 {}), {} resumes/s",
                ms(self.resume_ms),
                ms(self.resume_p50_ms),
                ms(self.resume_p99_ms),
                self.resumes_per_sec
                    .map_or("-".to_string(), |r| format!("{r:.0}"))
            ),
        );
        for u in &self.survivor_use {
            row(
                "survivor during storm",
                format!(
                    "pid {}: RSS {} -> peak {} MiB, {:.2} CPU s",
                    u.pid,
                    u.rss_start_kib / 1024,
                    u.rss_peak_kib / 1024,
                    u.cpu_secs
                ),
            );
        }
        if let Some(u) = &self.loadgen_use {
            row("loadgen during storm", format!("{:.2} CPU s", u.cpu_secs));
        }
        row("last loss noticed", ms(self.detect_max_ms));
        row(
            "resumed / attempts",
            format!("{} / {}", self.resumed, self.reconnect_attempts),
        );
        row(
            "published / acked",
            format!(
                "{} / {} (max PUBACK wait {:.1} ms)",
                self.published, self.acked, self.max_ack_ms
            ),
        );
        row(
            "lost / dup",
            format!(
                "{} / {} (from seq {})",
                self.lost, self.duplicated, self.counted_from_seq
            ),
        );
        row(
            "no session present",
            self.session_present_violations.to_string(),
        );
        for f in &self.failures {
            row("failed attempt", f.clone());
        }
        if let Some(e) = &self.error {
            row("ERROR", e.clone());
        }
        t
    }
}

fn ms_between(from: Instant, to: Instant) -> f64 {
    match to.checked_duration_since(from) {
        Some(d) => d.as_secs_f64() * 1e3,
        None => -(from.duration_since(to).as_secs_f64() * 1e3),
    }
}

/// The `q` quantile of sorted values (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some(round((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0, 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, 2.0, 9.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), Some(3.0));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
