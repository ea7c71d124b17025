//! `bench-report DIR`: turns `DIR/raw.jsonl` (written by `benches/compare.sh`) into
//! `summary.md`, `summary.json`, `throughput.svg` and `latency.svg` in the same folder.

mod charts;
mod model;
mod stats;
mod summary;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use charts::{grouped_bars, Bars};
use summary::{RunInfo, ScenarioSummary};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir] = args.as_slice() else {
        bail!("usage: bench-report DIR   (DIR holds raw.jsonl from benches/compare.sh)");
    };
    let dir = PathBuf::from(dir);
    let raw = dir.join("raw.jsonl");
    let text =
        std::fs::read_to_string(&raw).with_context(|| format!("reading {}", raw.display()))?;
    let (runs, problems) = model::parse_lines(&text);
    for p in &problems {
        eprintln!("bench-report: skipped {p}");
    }
    if runs.is_empty() {
        bail!("{} holds no run", raw.display());
    }

    let info = run_info(&dir);
    let scenarios = summary::summarize(&runs);
    write(
        &dir.join("summary.md"),
        summary::markdown(&info, &scenarios, &problems),
    )?;
    let json = serde_json::to_string_pretty(&summary::json(&info, &scenarios))?;
    write(&dir.join("summary.json"), json + "\n")?;
    // A chart with nothing to show is left out rather than failing the report.
    for (name, bars) in [
        ("throughput.svg", throughput_bars(&scenarios)),
        ("latency.svg", latency_bars(&scenarios)),
    ] {
        let path = dir.join(name);
        match bars.map(|b| grouped_bars(&path, &b)) {
            Some(Ok(())) => eprintln!("bench-report: wrote {}", path.display()),
            Some(Err(e)) => eprintln!("bench-report: {name} not written: {e:#}"),
            None => eprintln!("bench-report: {name} not written: no data"),
        }
    }
    eprintln!(
        "bench-report: wrote {} and summary.json",
        dir.join("summary.md").display()
    );
    Ok(())
}

fn write(path: &Path, contents: String) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// Deliveries/s of every scenario that delivers as fast as the broker can: not
/// `connections` (no messages), nor a paced one like `latency` (its rate is fixed).
fn throughput_bars(scenarios: &[ScenarioSummary]) -> Option<Bars<'static>> {
    let paced = |s: &ScenarioSummary| {
        s.params
            .as_ref()
            .and_then(|p| p.get("rate"))
            .is_some_and(|r| !r.is_null())
    };
    let shown: Vec<&ScenarioSummary> = scenarios
        .iter()
        .filter(|s| !paced(s) && s.brokers.iter().any(|b| b.deliveries_per_sec > Some(0.0)))
        .collect();
    let brokers = broker_names(&shown);
    if shown.is_empty() {
        return None;
    }
    let series = brokers
        .into_iter()
        .map(|name| {
            let vals = shown
                .iter()
                .map(|s| {
                    s.brokers
                        .iter()
                        .find(|b| b.broker == name)
                        .and_then(|b| b.deliveries_per_sec)
                })
                .collect();
            (name, vals)
        })
        .collect();
    Some(Bars {
        title: "Deliveries per second (median, log scale)",
        y_label: "deliveries/s",
        groups: shown.iter().map(|s| s.name.clone()).collect(),
        series,
    })
}

/// The latency scenario's percentiles, one group per percentile.
fn latency_bars(scenarios: &[ScenarioSummary]) -> Option<Bars<'static>> {
    let s = scenarios.iter().find(|s| s.name == "latency")?;
    let series: Vec<(String, Vec<Option<f64>>)> = s
        .brokers
        .iter()
        .map(|b| (b.broker.clone(), b.medians.clone()))
        .collect();
    series
        .iter()
        .any(|(_, v)| v.iter().any(Option::is_some))
        .then(|| Bars {
            title: "Publish-to-delivery latency (median over rounds, log scale)",
            y_label: "µs",
            groups: s
                .figures
                .iter()
                .map(|f| f.label.trim_end_matches(" µs").to_string())
                .collect(),
            series,
        })
}

fn broker_names(scenarios: &[&ScenarioSummary]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for b in scenarios.iter().flat_map(|s| &s.brokers) {
        if !names.contains(&b.broker) {
            names.push(b.broker.clone());
        }
    }
    names
}

/// From `DIR/meta.json` (written by compare.sh on the machine that ran the benchmark);
/// without it, from this machine, which is right when the report runs where the runs did.
fn run_info(dir: &Path) -> RunInfo {
    let meta: Value = std::fs::read_to_string(dir.join("meta.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let text = |key: &str| -> Option<String> {
        match meta.get(key)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let extra = meta
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !["date", "nproc", "cpu", "kernel"].contains(&k.as_str()))
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    RunInfo {
        date: text("date").unwrap_or_else(today_utc),
        nproc: text("nproc").unwrap_or_else(|| {
            std::thread::available_parallelism().map_or("?".into(), |n| n.to_string())
        }),
        cpu: text("cpu").unwrap_or_else(cpu_model),
        kernel: text("kernel").unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or("?".into(), |s| s.trim().to_string())
        }),
        extra,
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn today_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// algorithm): avoids a date crate for one fallback line.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_089), (2025, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
