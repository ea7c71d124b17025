//! The result of a `loadgen sessions` run: one JSON line (the script's input) and a
//! table on stderr.

use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::queue::Outcome;
use super::{Plan, SessionsCli};
use crate::report::round;

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub broker: String,
    pub brokers: Vec<String>,
    /// The tag in the client ids (`sess-<prefix>-<i>`) and topics.
    pub prefix: String,
    /// `own` (sessions/<prefix>/<i>) or `shared` (queue/<prefix>/#).
    pub filter: &'static str,
    pub in_flight: u32,
    /// Sessions asked for, created (SUBACK received) and failed (retries exhausted or
    /// cut by the time limit).
    pub sessions: u32,
    pub created: u32,
    pub failed: u32,
    /// Created sessions whose last CONNACK said "session present" (a retry after a
    /// half-done attempt, or a prefix used before).
    pub present: u32,
    /// Attempts beyond the first, over all sessions.
    pub retried: u32,
    /// Wall time of the creation, first connect to last session done.
    pub elapsed_s: f64,
    pub sessions_per_sec: f64,
    /// One session's creation, its first connect attempt to its SUBACK.
    pub create_ms: Option<Percentiles>,
    pub loadgen_cpu_pct: f64,
    /// Messages queued in every session (`--queued`), published and acknowledged.
    pub queued: u32,
    pub published: u32,
    pub acked: u32,
    pub publish_elapsed_s: Option<f64>,
    /// Writing a queued PUBLISH to its PUBACK.
    pub puback_ms: Option<Percentiles>,
    pub first_error: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// From a histogram of microseconds, in milliseconds.
    fn of_us(h: &Histogram<u64>) -> Option<Percentiles> {
        let ms = |us: u64| round(us as f64 / 1e3, 2);
        (!h.is_empty()).then(|| Percentiles {
            p50: ms(h.value_at_quantile(0.5)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        })
    }
}

impl Report {
    pub fn new(cli: &SessionsCli) -> Report {
        Report {
            scenario: "sessions",
            broker: (cli.label.clone()).unwrap_or_else(|| cli.brokers.join(",")),
            brokers: cli.brokers.clone(),
            prefix: String::new(),
            filter: "",
            in_flight: cli.in_flight,
            sessions: cli.sessions,
            created: 0,
            failed: 0,
            present: 0,
            retried: 0,
            elapsed_s: 0.0,
            sessions_per_sec: 0.0,
            create_ms: None,
            loadgen_cpu_pct: 0.0,
            queued: cli.queued,
            published: 0,
            acked: 0,
            publish_elapsed_s: None,
            puback_ms: None,
            first_error: None,
            error: None,
        }
    }

    pub fn plan(&mut self, plan: &Plan) {
        self.prefix = plan.prefix.clone();
        self.filter = plan.filter.name();
    }

    pub fn creation_outcome(&mut self, elapsed: Duration, took: &Histogram<u64>) {
        let secs = elapsed.as_secs_f64();
        self.elapsed_s = round(secs, 3);
        self.sessions_per_sec = round(f64::from(self.created) / secs.max(1e-9), 1);
        self.create_ms = Percentiles::of_us(took);
    }

    pub fn queued_outcome(&mut self, out: &Outcome) {
        (self.published, self.acked) = (out.published, out.acked);
        self.publish_elapsed_s = Some(round(out.elapsed.as_secs_f64(), 3));
        self.puback_ms = Percentiles::of_us(&out.puback_us);
    }

    /// Failed sessions make the run fail, so that the exit status says it.
    pub fn judge(&mut self) {
        if self.failed > 0 && self.error.is_none() {
            let first = self.first_error.as_deref().unwrap_or("?");
            self.error = Some(format!(
                "{} of {} sessions failed; the first: {first}",
                self.failed, self.sessions
            ));
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }

    pub fn table(&self) -> String {
        let mut t = String::new();
        let pct = |p: &Option<Percentiles>| match p {
            Some(p) => format!("p50 {} ms, p99 {} ms, max {} ms", p.p50, p.p99, p.max),
            None => "-".into(),
        };
        let _ = writeln!(t, "scenario        sessions ({} filter)", self.filter);
        let _ = writeln!(t, "brokers         {}", self.brokers.join(" "));
        let _ = writeln!(
            t,
            "sessions        {} created, {} failed, of {} ({} in flight)",
            self.created, self.failed, self.sessions, self.in_flight
        );
        let _ = writeln!(
            t,
            "elapsed         {:.1} s: {:.0} sessions/s",
            self.elapsed_s, self.sessions_per_sec
        );
        let _ = writeln!(t, "per session     {}", pct(&self.create_ms));
        let _ = writeln!(
            t,
            "retries         {} (session present on {})",
            self.retried, self.present
        );
        let _ = writeln!(t, "loadgen CPU     {:.1} %", self.loadgen_cpu_pct);
        if self.queued > 0 {
            let _ = writeln!(
                t,
                "queued          {} published, {} acknowledged of {} in {} s",
                self.published,
                self.acked,
                self.queued,
                self.publish_elapsed_s
                    .map_or("-".into(), |s| format!("{s:.1}"))
            );
            let _ = writeln!(t, "PUBACK          {}", pct(&self.puback_ms));
        }
        if let Some(e) = &self.first_error {
            let _ = writeln!(t, "first failure   {e}");
        }
        if let Some(e) = &self.error {
            let _ = writeln!(t, "ERROR           {e}");
        }
        t
    }
}
