//! `GET /metrics` for tests: the text is parsed line by line as the Prometheus text
//! format (0.0.4) says — every line a `# HELP`/`# TYPE` comment or a sample
//! `name{label="value",...} value`, every sample under a `# TYPE` of its family, no
//! series twice — and samples are looked up by name and labels. [`promtool`] runs
//! Prometheus's own checks where it is installed (Debian's `prometheus` package; .ci/run
//! installs it).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::cluster::http_get;

/// A sample's labels, in the text's order.
type Labels = Vec<(String, String)>;

/// One scrape: its text and its samples.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
    /// `name{k="v",...}` (labels sorted) → value.
    samples: HashMap<String, f64>,
}

impl Scrape {
    /// Scrapes `http` (a node's HTTP address); panics unless it answers 200 with text
    /// that parses.
    pub async fn of(http: SocketAddr) -> Scrape {
        let (code, text) = http_get(http, "/metrics")
            .await
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        assert_eq!(code, 200, "GET /metrics: {text}");
        Scrape::parse(&text).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"))
    }

    pub fn parse(text: &str) -> Result<Scrape, String> {
        if !text.ends_with('\n') {
            return Err("the text does not end with a newline".into());
        }
        let mut types: HashMap<String, String> = HashMap::new();
        let mut samples = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let at = |e: String| format!("line {}: {e}: {line:?}", i + 1);
            if let Some(comment) = line.strip_prefix('#') {
                parse_comment(comment, &mut types).map_err(at)?;
                continue;
            }
            let (name, labels, value) = parse_sample(line).map_err(at)?;
            let family = family_of(&name, &types)
                .ok_or_else(|| at(format!("{name} has no # TYPE before it")))?;
            let is_bucket = types[family] == "histogram" && name.ends_with("_bucket");
            if is_bucket && !labels.iter().any(|(k, _)| k == "le") {
                return Err(at("a histogram bucket without le".into()));
            }
            let key = series_key(&name, &labels);
            if samples.insert(key.clone(), value).is_some() {
                return Err(at(format!("{key} twice")));
            }
        }
        Ok(Scrape {
            text: text.to_string(),
            samples,
        })
    }

    /// The sample `name{labels}`, if present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.get(&series_key(name, &labels)).copied()
    }

    /// The sample `name{labels}`; panics naming it when it is missing.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{}", self.text))
    }

    /// Every metric family named by a `# TYPE` line, with the sample names it covers
    /// (a histogram's `_bucket`, `_sum`, `_count`).
    pub fn names(&self) -> HashSet<String> {
        let mut names = HashSet::new();
        for line in self.text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split(' ');
                let (name, kind) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                names.insert(name.to_string());
                if kind == "histogram" {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
            }
        }
        names
    }
}

fn parse_comment(comment: &str, types: &mut HashMap<String, String>) -> Result<(), String> {
    let mut words = comment.trim_start().splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("HELP"), Some(name), _) => valid_name(name),
        (Some("TYPE"), Some(name), Some(kind)) => {
            valid_name(name)?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(format!("unknown type {kind}"));
            }
            if types.insert(name.into(), kind.into()).is_some() {
                return Err(format!("a second # TYPE for {name}"));
            }
            Ok(())
        }
        (Some("HELP" | "TYPE"), ..) => Err("incomplete HELP or TYPE".into()),
        _ => Ok(()),
    }
}

/// `name{labels} value [timestamp]`.
fn parse_sample(line: &str) -> Result<(String, Labels, f64), String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    valid_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let mut fields = rest
        .strip_prefix(' ')
        .ok_or("no space before the value")?
        .split(' ');
    let value = match fields.next().unwrap_or("") {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok((name.to_string(), labels, value))
}

/// `k="v",...}` and what follows the `}`.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s.find('=').ok_or("a label without =")?;
        let key = &s[..eq];
        let key_ok = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !key_ok {
            return Err(format!("bad label name {key:?}"));
        }
        let mut chars = s[eq + 1..]
            .strip_prefix('"')
            .ok_or("unquoted label value")?
            .char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        s = &s[eq + 1..][end + 2..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

fn valid_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    ok.then_some(()).ok_or(format!("bad metric name {name:?}"))
}

/// The family a sample belongs to: its own name, or a histogram's or summary's.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|s| name.strip_suffix(s))
        .find(|f| {
            matches!(
                types.get(*f).map(String::as_str),
                Some("histogram" | "summary")
            )
        })
}

fn series_key(name: &str, labels: &[(String, String)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

/// `promtool` from PATH, or None (the caller prints "skipped: no promtool").
pub fn promtool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file())
}

/// Runs `promtool args...` (with `stdin` on its standard input); Err with its output
/// when it fails.
pub fn run_promtool(promtool: &Path, args: &[&str], stdin: &str) -> Result<String, String> {
    let mut child = Command::new(promtool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn promtool: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .map_err(|e| format!("promtool stdin: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("promtool: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.success() {
        true => Ok(text),
        false => Err(format!(
            "promtool {args:?} failed ({}):\n{text}",
            out.status
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_takes_the_format_and_refuses_what_is_not() {
        let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n\
                    # TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n";
        let s = Scrape::parse(good).unwrap();
        assert_eq!(s.value("a_total", &[("y", "q\""), ("x", "1")]), 3.0);
        assert_eq!(s.value("h_count", &[]), 2.0);
        for bad in [
            "a 1\n",                            // no TYPE
            "# TYPE a gauge\na 1",              // no final newline
            "# TYPE a gauge\na{x=1} 1\n",       // unquoted label value
            "# TYPE a gauge\na one\n",          // not a number
            "# TYPE a gauge\na 1\na 2\n",       // the same series twice
            "# TYPE a gauge\n# TYPE a gauge\n", // two TYPEs
            "# TYPE 1a gauge\n",                // bad name
            "# TYPE h histogram\nh_bucket 1\n", // a bucket without le
        ] {
            assert!(Scrape::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
