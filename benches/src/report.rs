//! The result of a run: the one-line JSON contract the comparison script parses (field
//! names and order are part of it: new fields go at the end) and the readable table on
//! stderr.

use std::fmt::Write;

use serde::Serialize;

use crate::cli::Params;
use crate::procfs::RssReport;

#[derive(Debug, Serialize)]
pub struct Report {
    /// tls-<scenario> over TLS.
    pub scenario: String,
    pub broker: String,
    pub params: ParamsOut,
    pub elapsed_s: f64,
    pub published: u64,
    pub acked: u64,
    pub delivered: u64,
    pub expected: u64,
    pub deliveries_per_sec: f64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub latency_us: Option<Latency>,
    pub connections: Option<Connections>,
    pub broker_rss_kib: Option<RssReport>,
    pub rss_per_connection_kib: Option<f64>,
    pub loadgen_cpu_pct: f64,
    pub error: Option<String>,
    /// QoS 1/2 runs: microseconds from writing a PUBLISH to its PUBACK (PUBCOMP at
    /// QoS 2), over every acknowledged message, as the publishers saw it.
    pub ack_latency_us: Option<Latency>,
    /// connections and idle: what the kernel holds for each connection's sockets
    /// (buffers and socket objects, `procfs::kernel_socket_kib`; on loopback both the
    /// client's and the broker's end), beside the broker's RSS.
    pub kernel_socket_kib_per_connection: Option<f64>,
    /// Extra lines for the table only (stalls, disconnects, unacknowledged messages).
    #[serde(skip)]
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ParamsOut {
    pub publishers: u32,
    pub subscribers: u32,
    pub qos: u8,
    pub payload: u32,
    pub window: u64,
    pub inflight: u16,
    pub open_loop: bool,
    pub rate: Option<u64>,
    pub duration_s: f64,
    pub connections: Option<u32>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Connections {
    pub target: u32,
    pub established: u32,
    pub failed: u32,
    pub connects_per_sec: f64,
}

impl ParamsOut {
    pub fn new(p: &Params) -> ParamsOut {
        ParamsOut {
            publishers: p.publishers,
            subscribers: p.subscribers,
            qos: p.qos,
            payload: p.payload,
            window: p.window,
            inflight: p.inflight,
            open_loop: p.open_loop,
            rate: p.rate,
            duration_s: p.duration_s,
            connections: p.connections,
        }
    }
}

impl Report {
    /// An empty report for `params`, to be filled in by the scenario.
    pub fn new(params: &Params, broker: String) -> Report {
        Report {
            scenario: params.name.clone(),
            broker,
            params: ParamsOut::new(params),
            elapsed_s: 0.0,
            published: 0,
            acked: 0,
            delivered: 0,
            expected: 0,
            deliveries_per_sec: 0.0,
            lost: 0,
            duplicated: 0,
            reordered: 0,
            latency_us: None,
            connections: None,
            broker_rss_kib: None,
            rss_per_connection_kib: None,
            loadgen_cpu_pct: 0.0,
            error: None,
            ack_latency_us: None,
            kernel_socket_kib_per_connection: None,
            notes: Vec::new(),
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }

    /// The human-readable summary.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(t, "  {k:<22} {v}");
        };
        let p = &self.params;
        row("scenario", format!("{} on {}", self.scenario, self.broker));
        if let Some(c) = &self.connections {
            row("connections", format!("{} of {}", c.established, c.target));
            row("failed", c.failed.to_string());
            row("connects/s", format!("{:.0}", c.connects_per_sec));
        } else {
            row(
                "clients",
                format!(
                    "{} pub -> {} sub, QoS {}, {} B, {}",
                    p.publishers,
                    p.subscribers,
                    p.qos,
                    p.payload,
                    match (p.rate, p.open_loop) {
                        (Some(r), _) => format!("{r} msgs/s per publisher"),
                        (None, true) => "open loop".to_string(),
                        (None, false) => format!("closed loop W={}", p.window),
                    }
                ),
            );
            row("elapsed", format!("{:.2} s", self.elapsed_s));
            row(
                "published / acked",
                format!("{} / {}", self.published, self.acked),
            );
            row(
                "delivered / expected",
                format!("{} / {}", self.delivered, self.expected),
            );
            row("deliveries/s", format!("{:.0}", self.deliveries_per_sec));
            row(
                "lost / dup / reorder",
                format!("{} / {} / {}", self.lost, self.duplicated, self.reordered),
            );
        }
        if let Some(l) = &self.latency_us {
            row(
                "latency us",
                format!("p50 {} p99 {} p99.9 {} max {}", l.p50, l.p99, l.p999, l.max),
            );
        }
        if let Some(l) = &self.ack_latency_us {
            let ack = if p.qos == 2 { "PUBCOMP" } else { "PUBACK" };
            row(
                &format!("{ack} latency us"),
                format!("p50 {} p99 {} p99.9 {} max {}", l.p50, l.p99, l.p999, l.max),
            );
        }
        if let Some(r) = &self.broker_rss_kib {
            row(
                "broker RSS KiB",
                format!("idle {} max {} end {}", r.idle, r.max, r.end),
            );
        }
        if let Some(k) = self.rss_per_connection_kib {
            row("RSS per connection", format!("{k:.2} KiB"));
        }
        if let Some(k) = self.kernel_socket_kib_per_connection {
            row("kernel, both ends", format!("{k:.2} KiB per connection"));
        }
        row(
            "loadgen CPU",
            format!("{:.1}% of one core", self.loadgen_cpu_pct),
        );
        for note in &self.notes {
            row("note", note.clone());
        }
        if let Some(e) = &self.error {
            row("ERROR", e.clone());
        }
        t
    }
}

/// Rounds for the JSON: more digits would only be noise.
pub fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Params};
    use clap::Parser;

    #[test]
    fn new_fields_come_after_the_old_ones() {
        let cli = Cli::try_parse_from(["loadgen", "qos1", "--broker", "b:1"]).unwrap();
        let mut report = Report::new(&Params::resolve(&cli), "b".into());
        report.ack_latency_us = Some(Latency {
            p50: 1,
            p99: 2,
            p999: 3,
            max: 4,
        });
        let json = report.json();
        let at = |key: &str| json.find(&format!("\"{key}\":")).expect(key);
        assert!(at("loadgen_cpu_pct") < at("error") && at("error") < at("ack_latency_us"));
        assert!(at("ack_latency_us") < at("kernel_socket_kib_per_connection"));
        assert!(json.ends_with(r#""kernel_socket_kib_per_connection":null}"#));
    }
}
