//! One line of `raw.jsonl`: a loadgen result, or the error line `compare.sh` writes in
//! its place when a broker or the loadgen failed.
//!
//! Every field is optional so that an error line (which carries only the scenario, the
//! broker, the round and the error) and any later addition to the loadgen's output both
//! still parse.

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Run {
    pub scenario: String,
    pub broker: String,
    /// Added by `compare.sh`; absent when a line came straight from the loadgen.
    pub round: Option<u32>,
    pub params: Option<Value>,
    pub elapsed_s: Option<f64>,
    pub published: Option<u64>,
    pub acked: Option<u64>,
    pub delivered: Option<u64>,
    pub expected: Option<u64>,
    pub deliveries_per_sec: Option<f64>,
    pub lost: Option<u64>,
    pub duplicated: Option<u64>,
    pub reordered: Option<u64>,
    pub latency_us: Option<Latency>,
    pub connections: Option<Connections>,
    pub broker_rss_kib: Option<Rss>,
    pub rss_per_connection_kib: Option<f64>,
    pub loadgen_cpu_pct: Option<f64>,
    pub error: Option<String>,
    pub ack_latency_us: Option<Latency>,
    pub kernel_socket_kib_per_connection: Option<f64>,
}

impl Run {
    /// Whether the run's figures count. The loadgen also sets `error` for a verdict on a
    /// complete run (acknowledged QoS 1 messages that never arrived): those figures are
    /// the measurement, most of all in `overload`, so such a run counts and is flagged.
    pub fn measured(&self) -> bool {
        self.error.is_none() || self.is_loss_verdict()
    }

    /// An error that reports losses the counts carry, rather than a failed run.
    pub fn is_loss_verdict(&self) -> bool {
        let lost = self.lost.unwrap_or(0) > 0 && self.delivered.unwrap_or(0) > 0;
        lost && self
            .error
            .as_ref()
            .is_some_and(|e| e.to_ascii_lowercase().contains("lost"))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Connections {
    pub target: Option<u64>,
    pub established: Option<u64>,
    pub failed: Option<u64>,
    pub connects_per_sec: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Rss {
    pub idle: Option<f64>,
    pub max: Option<f64>,
    pub end: Option<f64>,
}

/// Parses `raw.jsonl`. Blank lines are skipped; a line that does not parse (a run cut off
/// mid-write, say) is reported by its number and skipped, so one bad line cannot hide the
/// rest of a long comparison.
pub fn parse_lines(text: &str) -> (Vec<Run>, Vec<String>) {
    let mut runs = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<Run>(line) {
            Ok(run) if run.scenario.is_empty() || run.broker.is_empty() => {
                problems.push(format!("line {}: no scenario or broker", i + 1))
            }
            Ok(run) => runs.push(run),
            Err(e) => problems.push(format!("line {}: {e}", i + 1)),
        }
    }
    (runs, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loadgen_and_error_lines() {
        let text = r#"
{"scenario":"qos0","broker":"raftmq","round":1,"params":{"qos":0},"deliveries_per_sec":49.1,"lost":0,"duplicated":0,"reordered":0,"latency_us":null,"connections":null,"broker_rss_kib":{"idle":100,"max":200,"end":150},"loadgen_cpu_pct":87.5,"error":null,"future_field":[1,2]}

{"scenario":"qos0","broker":"mosquitto","round":1,"error":"broker did not accept TCP within 10 s"}
not json
{"broker":"x"}
"#;
        let (runs, problems) = parse_lines(text);
        assert_eq!(runs.len(), 2);
        assert!(runs[0].measured());
        assert_eq!(runs[0].deliveries_per_sec, Some(49.1));
        assert_eq!(runs[0].broker_rss_kib.as_ref().unwrap().max, Some(200.0));
        assert!(!runs[1].measured());
        assert_eq!(runs[1].round, Some(1));
        assert_eq!(problems.len(), 2);
        assert!(problems[0].starts_with("line 5:"), "{problems:?}");
    }

    #[test]
    fn a_loss_verdict_still_counts() {
        let (runs, _) = parse_lines(
            r#"{"scenario":"overload","broker":"raftmq","delivered":10,"lost":5,"error":"LOST 5 ACKNOWLEDGED MESSAGES"}
{"scenario":"overload","broker":"raftmq","delivered":0,"lost":0,"error":"connect: refused"}
{"scenario":"overload","broker":"raftmq","delivered":0,"lost":40,"error":"LOST 40 ACKNOWLEDGED MESSAGES"}"#,
        );
        assert!(runs[0].measured() && runs[0].is_loss_verdict());
        assert!(!runs[1].measured());
        // Nothing delivered at all: the broker did not work, whatever the message says.
        assert!(!runs[2].measured());
    }
}
