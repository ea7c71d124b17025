//! Runs grouped by scenario and broker, reduced to medians over rounds, and written as
//! markdown and JSON.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use crate::model::Run;
use crate::stats::{median, ratio};

/// The broker every ratio is taken against.
pub const REFERENCE: &str = "raftmq";

/// The order the loadgen's scenarios are usually run in; others follow as first seen.
const SCENARIO_ORDER: [&str; 20] = [
    "qos0",
    "qos1",
    "durable",
    "fanout",
    "fanin",
    "fanin-shared",
    "latency",
    "latency-durable",
    "overload",
    "connections",
    "idle",
    "idle-max",
    "latency-3n",
    "latency-durable-3n",
    "durable-3n",
    "connections-3n",
    "tls-qos0",
    "tls-qos1",
    "tls-connections",
    "tls-idle",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// A headline figure of a scenario: how to read it from a run and how to print it.
#[derive(Clone, Copy)]
pub struct Figure {
    pub key: &'static str,
    pub label: &'static str,
    pub better: Better,
    pub get: fn(&Run) -> Option<f64>,
    pub fmt: fn(f64) -> String,
}

fn deliveries(r: &Run) -> Option<f64> {
    r.deliveries_per_sec
}

const DELIVERIES: Figure = Figure {
    key: "deliveries_per_sec",
    label: "deliveries/s",
    better: Better::Higher,
    get: deliveries,
    fmt: fmt_int,
};

const THROUGHPUT: [Figure; 1] = [DELIVERIES];

const LATENCY: [Figure; 4] = [
    Figure {
        key: "p50_us",
        label: "p50 µs",
        better: Better::Lower,
        get: |r| r.latency_us.as_ref()?.p50,
        fmt: fmt_int,
    },
    Figure {
        key: "p99_us",
        label: "p99 µs",
        better: Better::Lower,
        get: |r| r.latency_us.as_ref()?.p99,
        fmt: fmt_int,
    },
    Figure {
        key: "p999_us",
        label: "p99.9 µs",
        better: Better::Lower,
        get: |r| r.latency_us.as_ref()?.p999,
        fmt: fmt_int,
    },
    Figure {
        key: "max_us",
        label: "max µs",
        better: Better::Lower,
        get: |r| r.latency_us.as_ref()?.max,
        fmt: fmt_int,
    },
];

/// The publisher's wait for a PUBACK (for persistent sessions: for durability).
const ACK: [Figure; 2] = [
    Figure {
        key: "ack_p50_us",
        label: "PUBACK p50 µs",
        better: Better::Lower,
        get: |r| r.ack_latency_us.as_ref()?.p50,
        fmt: fmt_int,
    },
    Figure {
        key: "ack_p99_us",
        label: "PUBACK p99 µs",
        better: Better::Lower,
        get: |r| r.ack_latency_us.as_ref()?.p99,
        fmt: fmt_int,
    },
];

/// `latency-durable`: the PUBACK first, then the end-to-end latency.
const LATENCY_DURABLE: [Figure; 4] = [ACK[0], ACK[1], LATENCY[0], LATENCY[1]];

/// `durable`: deliveries, and the PUBACK's wait.
const DURABLE: [Figure; 3] = [DELIVERIES, ACK[0], ACK[1]];

const CONNECTIONS: [Figure; 3] = [
    Figure {
        key: "connects_per_sec",
        label: "connects/s",
        better: Better::Higher,
        get: |r| r.connections.as_ref()?.connects_per_sec,
        fmt: fmt_int,
    },
    Figure {
        key: "established",
        label: "established",
        better: Better::Higher,
        get: |r| r.connections.as_ref()?.established.map(|n| n as f64),
        fmt: fmt_int,
    },
    Figure {
        key: "rss_per_connection_kib",
        label: "KiB/connection",
        better: Better::Lower,
        get: |r| r.rss_per_connection_kib,
        fmt: fmt_1,
    },
];

const OVERLOAD: [Figure; 3] = [
    Figure {
        key: "peak_rss_mib",
        label: "peak RSS MiB",
        better: Better::Lower,
        get: |r| r.broker_rss_kib.as_ref()?.max.map(|k| k / 1024.0),
        fmt: fmt_1,
    },
    Figure {
        key: "lost",
        label: "lost",
        better: Better::Lower,
        get: |r| r.lost.map(|n| n as f64),
        fmt: fmt_int,
    },
    DELIVERIES,
];

/// `idle`: the memory an idle connection holds is the headline, connects/s a side note
/// (the clients are opened a few at a time, not as fast as possible).
const IDLE: [Figure; 4] = [
    Figure {
        key: "rss_per_connection_kib",
        label: "KiB/connection",
        better: Better::Lower,
        get: |r| r.rss_per_connection_kib,
        fmt: fmt_1,
    },
    Figure {
        key: "kernel_socket_kib_per_connection",
        label: "kernel KiB/connection (both ends)",
        better: Better::Lower,
        get: |r| r.kernel_socket_kib_per_connection,
        fmt: fmt_1,
    },
    Figure {
        key: "established",
        label: "established",
        better: Better::Higher,
        get: |r| r.connections.as_ref()?.established.map(|n| n as f64),
        fmt: fmt_int,
    },
    Figure {
        key: "connects_per_sec",
        label: "connects/s",
        better: Better::Higher,
        get: |r| r.connections.as_ref()?.connects_per_sec,
        fmt: fmt_int,
    },
];

/// The figures of a scenario; tls-<scenario>, <scenario>-3n (against three nodes) and
/// idle-max (idle at the machine's limit) have those of <scenario>.
pub fn figures_for(scenario: &str) -> &'static [Figure] {
    let base = scenario.strip_prefix("tls-").unwrap_or(scenario);
    match base.strip_suffix("-3n").unwrap_or(base) {
        "latency" => &LATENCY,
        "latency-durable" => &LATENCY_DURABLE,
        "durable" => &DURABLE,
        "connections" => &CONNECTIONS,
        "idle" | "idle-max" => &IDLE,
        "overload" => &OVERLOAD,
        _ => &THROUGHPUT,
    }
}

pub struct BrokerSummary {
    pub broker: String,
    pub runs: usize,
    pub ok: usize,
    /// Aligned with the scenario's figures.
    pub medians: Vec<Option<f64>>,
    /// raftmq / this broker, aligned with the figures; all `None` for raftmq itself.
    pub ratios: Vec<Option<f64>>,
    /// Always computed, whatever the headline figures: the throughput chart needs it.
    pub deliveries_per_sec: Option<f64>,
    /// Sums over the successful runs.
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub loadgen_cpu_pct: Option<f64>,
    /// "round N: message", one per failed run (not counted).
    pub errors: Vec<String>,
    /// "round N: message", one per counted run that the loadgen flagged (losses).
    pub flags: Vec<String>,
}

pub struct ScenarioSummary {
    pub name: String,
    pub params: Option<Value>,
    pub figures: &'static [Figure],
    pub brokers: Vec<BrokerSummary>,
}

/// Scenarios in the usual order; brokers with raftmq first, then as first seen.
pub fn summarize(runs: &[Run]) -> Vec<ScenarioSummary> {
    let mut scenarios: Vec<String> = Vec::new();
    let mut brokers: Vec<String> = Vec::new();
    for r in runs {
        if !scenarios.contains(&r.scenario) {
            scenarios.push(r.scenario.clone());
        }
        if !brokers.contains(&r.broker) {
            brokers.push(r.broker.clone());
        }
    }
    let rank = |s: &String| {
        SCENARIO_ORDER
            .iter()
            .position(|o| o == s)
            .unwrap_or(SCENARIO_ORDER.len())
    };
    // Stable: unknown scenarios keep their first-seen order after the known ones.
    scenarios.sort_by_key(rank);
    brokers.sort_by_key(|b| b != REFERENCE);

    scenarios
        .into_iter()
        .map(|name| {
            let figures = figures_for(&name);
            let of_scenario: Vec<&Run> = runs.iter().filter(|r| r.scenario == name).collect();
            let params = of_scenario
                .iter()
                .find(|r| r.measured() && r.params.is_some())
                .or_else(|| of_scenario.iter().find(|r| r.params.is_some()))
                .and_then(|r| r.params.clone());
            let mut summaries: Vec<BrokerSummary> = brokers
                .iter()
                .filter_map(|b| {
                    let mine: Vec<&Run> = of_scenario
                        .iter()
                        .copied()
                        .filter(|r| &r.broker == b)
                        .collect();
                    (!mine.is_empty()).then(|| broker_summary(b, &mine, figures))
                })
                .collect();
            fill_ratios(&mut summaries);
            ScenarioSummary {
                name,
                params,
                figures,
                brokers: summaries,
            }
        })
        .collect()
}

fn broker_summary(broker: &str, runs: &[&Run], figures: &[Figure]) -> BrokerSummary {
    let ok: Vec<&Run> = runs.iter().copied().filter(|r| r.measured()).collect();
    let messages = |keep: fn(&Run) -> bool| -> Vec<String> {
        runs.iter()
            .filter(|r| keep(r))
            .filter_map(|r| {
                let e = r.error.as_ref()?;
                Some(match r.round {
                    Some(n) => format!("round {n}: {e}"),
                    None => e.clone(),
                })
            })
            .collect()
    };
    let median_of = |get: &dyn Fn(&Run) -> Option<f64>| {
        median(&ok.iter().filter_map(|r| get(r)).collect::<Vec<_>>())
    };
    let sum_of = |get: fn(&Run) -> Option<u64>| ok.iter().filter_map(|r| get(r)).sum();
    BrokerSummary {
        broker: broker.to_string(),
        runs: runs.len(),
        ok: ok.len(),
        medians: figures.iter().map(|f| median_of(&f.get)).collect(),
        ratios: vec![None; figures.len()],
        deliveries_per_sec: median_of(&deliveries),
        lost: sum_of(|r| r.lost),
        duplicated: sum_of(|r| r.duplicated),
        reordered: sum_of(|r| r.reordered),
        loadgen_cpu_pct: median_of(&|r| r.loadgen_cpu_pct),
        errors: messages(|r| !r.measured()),
        flags: messages(Run::is_loss_verdict),
    }
}

fn fill_ratios(brokers: &mut [BrokerSummary]) {
    let Some(reference) = brokers.iter().find(|b| b.broker == REFERENCE) else {
        return;
    };
    let ours = reference.medians.clone();
    for b in brokers.iter_mut().filter(|b| b.broker != REFERENCE) {
        b.ratios = ours
            .iter()
            .zip(&b.medians)
            .map(|(&o, &p)| ratio(o, p))
            .collect();
    }
}

/// What the header of the summary says about where and how the runs were made.
pub struct RunInfo {
    pub date: String,
    pub nproc: String,
    pub cpu: String,
    pub kernel: String,
    /// Anything else `compare.sh` recorded (rounds, duration, versions, commit).
    pub extra: Vec<(String, String)>,
}

pub fn markdown(info: &RunInfo, scenarios: &[ScenarioSummary], problems: &[String]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Broker comparison\n");
    let _ = writeln!(md, "- Date: {}", info.date);
    let _ = writeln!(
        md,
        "- Machine: {} CPUs, {}, Linux {}",
        info.nproc, info.cpu, info.kernel
    );
    for (k, v) in &info.extra {
        let label = match k.as_str() {
            "brokers" => "Brokers",
            "rounds" => "Rounds",
            "duration_s" => "Seconds per run",
            "fd_limit" => "Open files limit",
            other => other,
        };
        let _ = writeln!(md, "- {label}: {v}");
    }
    let _ = writeln!(
        md,
        "\nEach figure is the median over the rounds counted (those that ran to the end; \
         a run the loadgen flagged for lost acknowledged messages counts, since the losses \
         are what it measured). `raftmq/peer` divides \
         raftmq's median by the peer's: above 1 raftmq is higher, which is better for \
         throughput and connects/s and worse for latency, memory and losses. Lost, dup and \
         reordered are totals over the rounds counted; loadgen CPU is the load \
         generator's own median use (near 100% × its threads means the client, not the \
         broker, may be the limit)."
    );
    for s in scenarios {
        write_scenario(&mut md, s);
    }
    if !problems.is_empty() {
        let _ = writeln!(md, "\n## Unreadable lines in raw.jsonl\n");
        for p in problems {
            let _ = writeln!(md, "- {p}");
        }
    }
    md
}

fn write_scenario(md: &mut String, s: &ScenarioSummary) {
    let _ = writeln!(md, "\n## {}\n", s.name);
    if let Some(p) = s.params.as_ref().and_then(describe_params) {
        let _ = writeln!(md, "Parameters: {p}\n");
    }
    let mut header = vec!["broker".to_string(), "runs counted".to_string()];
    for f in s.figures {
        let arrow = match f.better {
            Better::Higher => "↑",
            Better::Lower => "↓",
        };
        header.push(format!("{} {arrow}", f.label));
        header.push("raftmq/peer".to_string());
    }
    header.extend(["lost Σ", "dup Σ", "reordered Σ", "loadgen CPU %"].map(String::from));
    let _ = writeln!(md, "| {} |", header.join(" | "));
    let aligns: Vec<&str> = header
        .iter()
        .enumerate()
        .map(|(i, _)| if i == 0 { "---" } else { "---:" })
        .collect();
    let _ = writeln!(md, "| {} |", aligns.join(" | "));
    for b in &s.brokers {
        let mut row = vec![b.broker.clone(), format!("{}/{}", b.ok, b.runs)];
        for (i, f) in s.figures.iter().enumerate() {
            row.push(b.medians[i].map_or("n/a".into(), f.fmt));
            row.push(if b.broker == REFERENCE {
                "—".into()
            } else {
                b.ratios[i].map_or("n/a".into(), |r| format!("{r:.2}"))
            });
        }
        let has_ok = b.ok > 0;
        for n in [b.lost, b.duplicated, b.reordered] {
            row.push(if has_ok {
                fmt_int(n as f64)
            } else {
                "n/a".into()
            });
        }
        row.push(b.loadgen_cpu_pct.map_or("n/a".into(), fmt_int));
        let _ = writeln!(md, "| {} |", row.join(" | "));
    }
    write_list(md, s, "Flagged by the loadgen (counted above)", |b| {
        &b.flags
    });
    write_list(md, s, "Failed runs (not counted)", |b| &b.errors);
}

fn write_list(
    md: &mut String,
    s: &ScenarioSummary,
    title: &str,
    list: fn(&BrokerSummary) -> &[String],
) {
    let lines: Vec<String> = s
        .brokers
        .iter()
        .flat_map(|b| list(b).iter().map(move |e| format!("{}, {e}", b.broker)))
        .collect();
    if !lines.is_empty() {
        let _ = writeln!(md, "\n{title}:\n");
        for l in lines {
            // One line per message: a multi-line one would break the list.
            let _ = writeln!(md, "- {}", l.replace('\n', " "));
        }
    }
}

/// `publishers=4, subscribers=4, ...`, leaving out what the scenario does not set.
fn describe_params(params: &Value) -> Option<String> {
    let map = params.as_object()?;
    let parts: Vec<String> = map
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

pub fn json(info: &RunInfo, scenarios: &[ScenarioSummary]) -> Value {
    let mut out = Map::new();
    for s in scenarios {
        let mut brokers = Map::new();
        for b in &s.brokers {
            let mut medians = Map::new();
            let mut ratios = Map::new();
            for (i, f) in s.figures.iter().enumerate() {
                medians.insert(f.key.into(), json!(b.medians[i]));
                if b.broker != REFERENCE {
                    ratios.insert(f.key.into(), json!(b.ratios[i]));
                }
            }
            brokers.insert(
                b.broker.clone(),
                json!({
                    "runs": b.runs,
                    "ok": b.ok,
                    "median": medians,
                    "raftmq_over_peer": if b.broker == REFERENCE { Value::Null } else { ratios.into() },
                    "deliveries_per_sec": b.deliveries_per_sec,
                    "lost": b.lost,
                    "duplicated": b.duplicated,
                    "reordered": b.reordered,
                    "loadgen_cpu_pct": b.loadgen_cpu_pct,
                    "errors": b.errors,
                    "flags": b.flags,
                }),
            );
        }
        out.insert(
            s.name.clone(),
            json!({ "params": s.params, "brokers": brokers }),
        );
    }
    let extra: Map<String, Value> = info
        .extra
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "date": info.date,
        "machine": { "nproc": info.nproc, "cpu": info.cpu, "kernel": info.kernel },
        "run": extra,
        "scenarios": out,
    })
}

/// Whole numbers with thousands separators: 1234567.8 -> "1,234,568".
pub fn fmt_int(v: f64) -> String {
    let n = v.round();
    let digits = format!("{}", n.abs() as u64);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0.0 {
        out.insert(0, '-');
    }
    out
}

fn fmt_1(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{parse_lines, Latency};

    fn run(scenario: &str, broker: &str, round: u32, dps: f64) -> Run {
        Run {
            scenario: scenario.into(),
            broker: broker.into(),
            round: Some(round),
            deliveries_per_sec: Some(dps),
            lost: Some(1),
            duplicated: Some(0),
            reordered: Some(2),
            loadgen_cpu_pct: Some(50.0 + round as f64),
            ..Run::default()
        }
    }

    fn failed(scenario: &str, broker: &str, round: u32) -> Run {
        Run {
            scenario: scenario.into(),
            broker: broker.into(),
            round: Some(round),
            error: Some("broker did not start".into()),
            ..Run::default()
        }
    }

    #[test]
    fn medians_ratios_and_totals() {
        let runs = vec![
            run("qos1", "mosquitto", 1, 100.0),
            run("qos1", "raftmq", 1, 300.0),
            run("qos1", "raftmq", 2, 100.0),
            run("qos1", "raftmq", 3, 200.0),
            run("qos1", "mosquitto", 2, 50.0),
            failed("qos1", "mosquitto", 3),
            run("qos0", "raftmq", 1, 10.0),
        ];
        let s = summarize(&runs);
        // Known order, whatever order the lines came in.
        assert_eq!(s[0].name, "qos0");
        assert_eq!(s[1].name, "qos1");
        let qos1 = &s[1];
        assert_eq!(qos1.brokers[0].broker, "raftmq");
        let (ours, moss) = (&qos1.brokers[0], &qos1.brokers[1]);
        assert_eq!(ours.medians, vec![Some(200.0)]);
        assert_eq!(ours.ratios, vec![None]);
        // The failed round counts as a run but not in the median: (100 + 50) / 2.
        assert_eq!((moss.ok, moss.runs), (2, 3));
        assert_eq!(moss.medians, vec![Some(75.0)]);
        assert_eq!(moss.ratios[0].map(|r| (r * 1000.0).round()), Some(2667.0));
        assert_eq!((ours.lost, ours.reordered, moss.lost), (3, 6, 2));
        assert_eq!(ours.loadgen_cpu_pct, Some(52.0));
        assert_eq!(moss.errors, vec!["round 3: broker did not start"]);
    }

    #[test]
    fn no_reference_no_ratio_and_all_failed() {
        let runs = vec![
            run("qos0", "mosquitto", 1, 5.0),
            failed("qos0", "rumqttd", 1),
        ];
        let s = summarize(&runs);
        let b = &s[0].brokers;
        assert_eq!(b[0].ratios, vec![None]);
        assert_eq!(b[1].medians, vec![None]);
        let md = markdown(
            &RunInfo {
                date: "2025-01-01".into(),
                nproc: "2".into(),
                cpu: "cpu".into(),
                kernel: "6".into(),
                extra: vec![],
            },
            &s,
            &[],
        );
        assert!(
            md.contains("| rumqttd | 0/1 | n/a | n/a | n/a | n/a | n/a | n/a |"),
            "{md}"
        );
        assert!(
            md.contains("- rumqttd, round 1: broker did not start"),
            "{md}"
        );
    }

    #[test]
    fn flagged_runs_count_and_are_listed() {
        let mut lossy = run("overload", "raftmq", 1, 300.0);
        lossy.delivered = Some(10);
        lossy.lost = Some(5);
        lossy.error = Some("LOST 5 ACKNOWLEDGED MESSAGES".into());
        let s = summarize(&[lossy, failed("overload", "raftmq", 2)]);
        let b = &s[0].brokers[0];
        assert_eq!((b.ok, b.runs, b.lost), (1, 2, 5));
        assert_eq!(b.deliveries_per_sec, Some(300.0));
        assert_eq!(b.flags, vec!["round 1: LOST 5 ACKNOWLEDGED MESSAGES"]);
        assert_eq!(b.errors, vec!["round 2: broker did not start"]);
        let md = markdown(
            &RunInfo {
                date: "d".into(),
                nproc: "2".into(),
                cpu: "c".into(),
                kernel: "k".into(),
                extra: vec![],
            },
            &s,
            &[],
        );
        let flagged = md.find("Flagged by the loadgen").expect(&md);
        let failed = md.find("Failed runs").expect(&md);
        assert!(flagged < failed);
    }

    #[test]
    fn latency_figures_and_json() {
        let lat = |broker: &str, p50: f64| Run {
            scenario: "latency".into(),
            broker: broker.into(),
            latency_us: Some(Latency {
                p50: Some(p50),
                p99: Some(p50 * 10.0),
                p999: None,
                max: Some(p50 * 100.0),
            }),
            ..Run::default()
        };
        let s = summarize(&[lat("raftmq", 100.0), lat("rumqttd", 50.0)]);
        let peer = &s[0].brokers[1];
        assert_eq!(peer.ratios, vec![Some(2.0), Some(2.0), None, Some(2.0)]);
        let info = RunInfo {
            date: "d".into(),
            nproc: "2".into(),
            cpu: "c".into(),
            kernel: "k".into(),
            extra: vec![("rounds".into(), "1".into())],
        };
        let j = json(&info, &s);
        assert_eq!(
            j["scenarios"]["latency"]["brokers"]["rumqttd"]["median"]["p50_us"],
            json!(50.0)
        );
        assert_eq!(
            j["scenarios"]["latency"]["brokers"]["rumqttd"]["raftmq_over_peer"]["p99_us"],
            json!(2.0)
        );
        assert!(j["scenarios"]["latency"]["brokers"]["raftmq"]["raftmq_over_peer"].is_null());
        assert_eq!(j["run"]["rounds"], json!("1"));
    }

    #[test]
    fn params_line_leaves_out_nulls() {
        let (runs, _) = parse_lines(
            r#"{"scenario":"qos0","broker":"raftmq","params":{"publishers":4,"rate":null,"open_loop":false}}"#,
        );
        let s = summarize(&runs);
        assert_eq!(
            describe_params(s[0].params.as_ref().unwrap()).unwrap(),
            "open_loop=false, publishers=4"
        );
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(fmt_int(0.4), "0");
        assert_eq!(fmt_int(999.0), "999");
        assert_eq!(fmt_int(1000.0), "1,000");
        assert_eq!(fmt_int(1234567.8), "1,234,568");
        assert_eq!(fmt_int(-4321.0), "-4,321");
    }
}
