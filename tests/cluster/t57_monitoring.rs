//! Watching a cluster while nodes die: the status page (served by any node, read by a
//! headless Chromium), `GET /events`, and the `$SYS/cluster/...` topics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::support::client::{v5, Client};
use crate::support::cluster::{http_get, Cluster, CLUSTER_TIMEOUT};

/// Debian's package `chromium` (`.ci/run` installs it).
const CHROMIUM: &str = "/usr/bin/chromium";
/// Bound on one Chromium run.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// A headless Chromium that loads a page, lets its scripts run and its fetches finish
/// (virtual time), then prints the DOM or takes a screenshot.
struct Browser {
    /// Its profile directory (one per test: parallel browsers must not share one).
    profile: PathBuf,
}

impl Browser {
    /// None (after printing "skipped: no chromium") where Chromium is not installed.
    fn new(dir: &Path) -> Option<Browser> {
        if !Path::new(CHROMIUM).exists() {
            eprintln!("skipped: no chromium ({CHROMIUM}; apt-get install chromium)");
            return None;
        }
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).expect("chromium profile dir");
        Some(Browser { profile })
    }

    /// Chromium's stdout after loading `url` with `action` (`--dump-dom`, …); killed
    /// after [`BROWSER_TIMEOUT`].
    async fn run(&self, url: &str, action: &str) -> String {
        let out_path = self.profile.with_extension("out");
        let out = std::fs::File::create(&out_path).expect("chromium output file");
        let mut cmd = Command::new(CHROMIUM);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1400,900",
            // Time enough for the first refresh's fetch and render; virtual time waits
            // for the network.
            "--virtual-time-budget=1500",
        ])
        .arg(format!("--user-data-dir={}", self.profile.display()))
        .arg(action)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn chromium");
        let deadline = Instant::now() + BROWSER_TIMEOUT;
        while child.try_wait().expect("try_wait").is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium still running after {BROWSER_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::fs::read_to_string(&out_path).unwrap_or_default()
    }

    async fn dump_dom(&self, url: &str) -> String {
        self.run(url, "--dump-dom").await
    }

    async fn screenshot(&self, url: &str, file: &Path) {
        self.run(url, &format!("--screenshot={}", file.display()))
            .await;
    }
}

/// The page as the test reads it: each node row's (id, state, role), the leader and the
/// events' kinds and texts.
#[derive(Debug, Default)]
struct Page {
    rows: Vec<(u64, String, String)>,
    leader: Option<u64>,
    events: Vec<(String, String)>,
}

/// The value of attribute `name` at the start of `tag` (the text after `<tr` …).
fn attr(tag: &str, name: &str) -> Option<String> {
    let tag = &tag[..tag.find('>')?];
    let at = format!(" {tag}").find(&format!(" {name}=\""))? + name.len() + 2;
    let len = tag[at..].find('"')?;
    Some(tag[at..at + len].to_string())
}

fn parse(dom: &str) -> Page {
    let rows = dom
        .split("<tr ")
        .skip(1)
        .filter_map(|tag| {
            let id = attr(tag, "data-node-id")?.parse().ok()?;
            Some((id, attr(tag, "data-state")?, attr(tag, "data-role")?))
        })
        .collect();
    let leader = dom
        .split("id=\"leader\"")
        .nth(1)
        .and_then(|rest| attr(rest, "data-leader"))
        .and_then(|l| l.parse().ok());
    let events = dom
        .split("<li ")
        .skip(1)
        .filter_map(|tag| {
            let kind = attr(tag, "data-kind")?;
            let text = tag.split("<span>").nth(1)?.split('<').next()?.to_string();
            Some((kind, text))
        })
        .collect();
    Page {
        rows,
        leader,
        events,
    }
}

/// Loads the page from `url` until `check` holds (bounded); on timeout, saves a
/// screenshot in the cluster's temp dir (kept on failure), prints its path and panics.
async fn wait_for_page(
    c: &Cluster,
    browser: &Browser,
    url: &str,
    what: &str,
    check: impl Fn(&Page) -> bool,
) -> Page {
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    let mut last = String::new();
    loop {
        let dom = browser.dump_dom(url).await;
        let page = parse(&dom);
        if check(&page) {
            return page;
        }
        last = if dom.is_empty() { last } else { dom };
        if Instant::now() >= deadline {
            let shot = c.dir().join("status-page.png");
            browser.screenshot(url, &shot).await;
            eprintln!("status page screenshot: {}", shot.display());
            panic!(
                "the status page at {url} never showed {what}; last: {:?}\n{last}",
                parse(&last)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// From a surviving node, the page lists the three nodes and the leader; once a
/// follower is SIGKILLed it shows that node down and the node-down event.
#[tokio::test]
async fn status_page_shows_a_dead_follower() {
    let cluster = Cluster::empty();
    let Some(browser) = Browser::new(cluster.dir()) else {
        return;
    };
    let mut c = Cluster::start_with(3, cluster).await;
    let leader = c.wait_leader().await;
    let victim = (1..=3).find(|&i| i != leader).expect("a follower");
    let watched = (1..=3)
        .find(|&i| i != leader && i != victim)
        .expect("another");
    let url = format!("http://{}/", c.node(watched).http_addr());

    let page = wait_for_page(&c, &browser, &url, "three nodes up and the leader", |p| {
        p.rows.len() == 3 && p.rows.iter().all(|r| r.1 == "up") && p.leader == Some(leader)
    })
    .await;
    let roles: Vec<&str> = page.rows.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "leader").count(),
        1,
        "{page:?}"
    );

    c.kill(victim);
    let down = format!("node {victim} declared down");
    let page = wait_for_page(&c, &browser, &url, "the killed node down", |p| {
        p.rows.iter().any(|r| r.0 == victim && r.1 == "down")
            && p.events.iter().any(|e| e.0 == "node_down" && e.1 == down)
    })
    .await;
    let up: Vec<u64> = page
        .rows
        .iter()
        .filter(|r| r.1 == "up")
        .map(|r| r.0)
        .collect();
    assert_eq!(up.len(), 2, "{page:?}");
    assert!(!up.contains(&victim), "{page:?}");
}

/// `GET /events` of a survivor shows the leader change after the leader is killed:
/// from the old leader to the new one, in a later term; `?since=` pages through.
#[tokio::test]
async fn events_show_a_leader_change() {
    let mut c = Cluster::start(3).await;
    let old = c.wait_leader().await;
    let survivors: Vec<u64> = (1..=3).filter(|&i| i != old).collect();
    let witness = survivors[0];
    let addr = c.node(witness).http_addr();
    let events = |path: String| async move {
        let (code, body) = http_get(addr, &path).await.expect("GET /events");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<Value>(&body).expect("events JSON")
    };
    let first = events("/events".into()).await;
    assert_eq!(first[0]["kind"], "node_started", "{first}");
    assert_eq!(first[0]["seq"], 1, "{first}");
    let term = c.status(old).await["term"].as_u64().expect("term");

    c.kill(old);
    let new = c.wait_leader_of(&survivors).await;
    let mut change = Value::Null;
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    while change.is_null() {
        assert!(Instant::now() < deadline, "no leader change in /events");
        let all = events("/events".into()).await;
        change = all
            .as_array()
            .expect("an array")
            .iter()
            .find(|e| e["kind"] == "leader_changed" && e["to"] == new && e["from"] == old)
            .cloned()
            .unwrap_or(Value::Null);
        if change.is_null() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(change["term"].as_u64() > Some(term), "{change}");
    assert!(
        change["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{change}"
    );
    assert_eq!(change["seen_by"], witness);
    let seq = change["seq"].as_u64().expect("seq");
    let after = events(format!("/events?since={seq}")).await;
    assert!(
        after
            .as_array()
            .expect("an array")
            .iter()
            .all(|e| e["seq"].as_u64() > Some(seq)),
        "{after}"
    );
}

/// A node's `$SYS/cluster/...`: its role, the leader, and the members, a killed one
/// shown down once the cluster has declared it so.
#[tokio::test]
async fn sys_cluster_topics_describe_the_cluster() {
    let cluster = Cluster::empty().with_flag("sys-interval-secs", 1);
    let mut c = Cluster::start_with(3, cluster).await;
    let first_leader = c.wait_leader().await;
    let watched = (1..=3).find(|&i| i != first_leader).expect("a follower");
    let mut sub = v5("sys-cluster").connect(c.node(watched).mqtt).await;
    assert_eq!(sub.subscribe("$SYS/cluster/#", 0).await, [0]);

    // Values are published as they change, which they do as the node learns them. On a
    // loaded machine the leader may still move after the first election; what the topics
    // must show is the leader the node itself reports, and the role that follows from it.
    let mut seen = HashMap::new();
    let sys = |topic: &str| format!("$SYS/cluster/{topic}");
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    let leader = loop {
        let reported = c.leader(watched).await;
        let role = |l: u64| if l == watched { "leader" } else { "follower" };
        if let Some(l) = reported.filter(|&l| {
            seen.get(&sys("leader")) == Some(&l.to_string())
                && seen.get(&sys("role")).map(String::as_str) == Some(role(l))
        }) {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "$SYS/cluster never showed the leader node {watched} reports ({reported:?}): {seen:?}"
        );
        if let Some(m) = sub.try_recv(Duration::from_millis(500)).await {
            let payload = String::from_utf8_lossy(&m.payload).into_owned();
            seen.insert(m.topic, payload);
        }
    };
    let victim = (1..=3)
        .find(|&i| i != leader && i != watched)
        .expect("a follower other than the watched node");
    let term_set = |v: &str| v.parse::<u64>().is_ok_and(|t| t > 0);
    expect_sys(&mut sub, &mut seen, &sys("term"), term_set).await;
    let members = |v: &str| serde_json::from_str::<Value>(v).unwrap_or_default();
    let all_up = |v: &str| {
        members(v).as_array().is_some_and(|m| {
            m.len() == 3 && m.iter().all(|n| n["state"] == "up" && n["voter"] == true)
        })
    };
    expect_sys(&mut sub, &mut seen, &sys("members"), all_up).await;

    c.kill(victim);
    let victim_down = |v: &str| {
        members(v)
            .as_array()
            .is_some_and(|m| m.iter().any(|n| n["id"] == victim && n["state"] == "down"))
    };
    expect_sys(&mut sub, &mut seen, &sys("members"), victim_down).await;
}

/// Reads `sub`'s messages into `seen` (latest payload by topic) until `topic`'s
/// satisfies `want`; panics after [`CLUSTER_TIMEOUT`].
async fn expect_sys(
    sub: &mut Client,
    seen: &mut HashMap<String, String>,
    topic: &str,
    want: impl Fn(&str) -> bool,
) {
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    while !seen.get(topic).is_some_and(|v| want(v)) {
        assert!(
            Instant::now() < deadline,
            "{topic} never as expected; last {:?}",
            seen.get(topic)
        );
        if let Some(m) = sub.try_recv(Duration::from_millis(500)).await {
            let payload = String::from_utf8_lossy(&m.payload).into_owned();
            seen.insert(m.topic, payload);
        }
    }
}
