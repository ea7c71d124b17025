//! `GET /metrics` on a live broker: the text parses and passes `promtool check metrics`
//! (where promtool is installed), the counters move with real traffic (by listener, by
//! QoS, bytes, refusals by reason, drops by reason), the gauges count what the broker
//! holds, and the Prometheus files in deploy/prometheus/ pass promtool and name only
//! metrics the broker exports.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::client::{Ev, Opts};
use crate::support::codec::Version;
use crate::support::metrics::{promtool, run_promtool, Scrape};
use crate::support::{free_addr, needs_raftmq, wait_until, Broker, RECV_TIMEOUT};

/// Messages each test publishes.
const N: usize = 20;
const PAYLOAD: usize = 100;

fn password_file(dir: &Path) -> PathBuf {
    let path = dir.join("passwords");
    let hash = broker_core::auth::hash_password(b"wonderland").expect("hash");
    std::fs::write(&path, format!("alice:{hash}\n")).expect("password file");
    path
}

/// How much `name{labels}` grew from `before` to `after` (a missing sample is 0).
fn delta(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.value(name, labels) - before.get(name, labels).unwrap_or(0.0)
}

/// N QoS 1 messages to two subscribers (one over TCP, one over WebSocket) and a wrong
/// password: received grows by N, sent by 2N, bytes by at least the payloads, each
/// listener by its connections, and the refusal is counted as bad credentials.
#[tokio::test]
async fn counters_follow_traffic() {
    needs_raftmq("GET /metrics");
    let dir = tempfile::tempdir().expect("temp dir");
    let ws = free_addr();
    let broker = Broker::opts()
        .set("password-file", password_file(dir.path()).display())
        .set("ws-addr", ws)
        .start()
        .await;
    // The harness's readiness probe (a TCP connect, closed at once) may be accepted
    // after the broker answers HTTP: start counting once it was, and is closed.
    let http = broker.http;
    wait_until(
        "the probe counted and closed",
        RECV_TIMEOUT,
        Duration::from_millis(50),
        || async move {
            let s = Scrape::of(http).await;
            s.value("raftmq_connections_accepted_total", &[("listener", "tcp")]) >= 1.0
                && s.value("raftmq_connections_open", &[("listener", "tcp")]) == 0.0
        },
    )
    .await;
    let before = Scrape::of(broker.http).await;
    let alice = |id: &str, v: Version| Opts::new(v, id).login("alice", "wonderland");
    let mut subscribers = [
        alice("sub-tcp", Version::V4).connect(broker.addr).await,
        alice("sub-ws", Version::V5).ws().connect(ws).await,
    ];
    for s in subscribers.iter_mut() {
        assert_eq!(s.subscribe("metrics/t", 1).await, vec![1]);
    }
    let mut publisher = alice("pub", Version::V5).connect(broker.addr).await;
    for i in 0..N {
        let payload = vec![b'0' + (i % 10) as u8; PAYLOAD];
        assert_eq!(publisher.publish("metrics/t", 1, false, &payload).await, 0);
    }
    for s in subscribers.iter_mut() {
        for _ in 0..N {
            assert_eq!(s.recv().await.payload.len(), PAYLOAD);
        }
    }
    let wrong = Opts::new(Version::V4, "mallory").login("alice", "Wonderland");
    match wrong.try_connect(broker.addr).await {
        Err(Ev::ConnAck { code: 0x04, .. }) => {}
        other => panic!(
            "a wrong password was not refused as such: {:?}",
            other.err()
        ),
    }

    // Each count above was made before the client saw its effect: no waiting needed,
    // but for the refused connection's socket, closed just after its CONNACK.
    let after = Scrape::of(broker.http).await;
    let d = |name: &str, labels: &[(&str, &str)]| delta(&before, &after, name, labels);
    let n = N as f64;
    assert_eq!(d("raftmq_messages_received_total", &[("qos", "1")]), n);
    assert_eq!(d("raftmq_messages_received_total", &[("qos", "0")]), 0.0);
    assert_eq!(d("raftmq_messages_sent_total", &[("qos", "1")]), 2.0 * n);
    let (received, sent) = (
        d("raftmq_received_bytes_total", &[]),
        d("raftmq_sent_bytes_total", &[]),
    );
    assert!(
        received >= n * PAYLOAD as f64,
        "received bytes grew by {received}, less than the payloads published"
    );
    assert!(
        sent >= 2.0 * n * PAYLOAD as f64,
        "sent bytes grew by {sent}, less than the payloads delivered"
    );
    let accepted = |l| d("raftmq_connections_accepted_total", &[("listener", l)]);
    assert_eq!(
        (accepted("tcp"), accepted("ws"), accepted("tls")),
        (3.0, 1.0, 0.0)
    );
    let refusals = |r| d("raftmq_connects_refused_total", &[("reason", r)]);
    assert_eq!(refusals("bad_credentials"), 1.0);
    assert_eq!(refusals("not_authorized"), 0.0);
    assert_eq!(after.value("raftmq_sessions", &[("state", "online")]), 3.0);
    assert_eq!(after.value("raftmq_clients_connected", &[]), 3.0);
    assert_eq!(after.value("raftmq_subscriptions", &[]), 2.0);
    assert_eq!(after.value("raftmq_raft_is_leader", &[]), 1.0);
    assert!(after.value("raftmq_raft_commit_latency_seconds_count", &[]) >= 1.0);
    assert!(after.value("process_resident_memory_bytes", &[]) > 0.0);
    assert!(after.value("raftmq_data_dir_bytes", &[]) > 0.0);

    wait_until(
        "the refused connection to close",
        RECV_TIMEOUT,
        Duration::from_millis(50),
        || async {
            let now = Scrape::of(broker.http).await;
            let open = |l| now.value("raftmq_connections_open", &[("listener", l)]);
            open("tcp") == 2.0 && open("ws") == 1.0
        },
    )
    .await;
}

/// A message larger than a 5.0 subscriber's Maximum Packet Size is dropped as too
/// large; a retained message and an offline persistent session show in the gauges.
#[tokio::test]
async fn drops_and_gauges() {
    needs_raftmq("GET /metrics");
    let broker = Broker::start().await;
    let mut small = Opts::new(Version::V5, "small")
        .max_packet_size(100)
        .connect(broker.addr)
        .await;
    assert_eq!(small.subscribe("metrics/big", 0).await, vec![0]);
    let away = Opts::new(Version::V4, "away")
        .persistent()
        .connect(broker.addr)
        .await;
    away.disconnect().await;
    let mut publisher = Opts::new(Version::V4, "pub").connect(broker.addr).await;
    publisher
        .publish("metrics/big", 1, false, &[b'x'; 200])
        .await;
    publisher
        .publish("metrics/retained", 1, true, b"kept")
        .await;
    wait_until(
        "the drop and the offline session to show",
        RECV_TIMEOUT,
        Duration::from_millis(50),
        || async {
            let s = Scrape::of(broker.http).await;
            s.value("raftmq_messages_dropped_total", &[("reason", "too_large")]) == 1.0
                && s.value("raftmq_sessions", &[("state", "offline")]) == 1.0
        },
    )
    .await;
    let s = Scrape::of(broker.http).await;
    assert_eq!(s.value("raftmq_retained_messages", &[]), 1.0);
    assert!(s.value("raftmq_retained_bytes", &[]) >= 4.0);
    for reason in ["queue_full", "qos0_outbox_full", "expired", "rate_limited"] {
        assert_eq!(
            s.value("raftmq_messages_dropped_total", &[("reason", reason)]),
            0.0,
            "{reason}"
        );
    }
    small.expect_nothing(crate::support::QUIET).await;
}

/// The text of a broker that has seen traffic passes `promtool check metrics`
/// (Prometheus's own parser and lints).
#[tokio::test]
async fn promtool_accepts_the_text() {
    needs_raftmq("GET /metrics");
    let Some(promtool) = promtool() else {
        println!("skipped: no promtool");
        return;
    };
    let broker = Broker::start().await;
    let mut c = Opts::new(Version::V4, "c").connect(broker.addr).await;
    c.subscribe("t", 2).await;
    c.publish("t", 2, true, b"x").await;
    c.recv().await;
    let scrape = Scrape::of(broker.http).await;
    if let Err(e) = run_promtool(&promtool, &["check", "metrics"], &scrape.text) {
        panic!("{e}\n{}", scrape.text);
    }
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus")
}

/// deploy/prometheus: the scrape config and the alert rules pass promtool (their unit
/// tests included), and every `raftmq_`/`process_` metric the rules name is one a
/// broker exports.
#[tokio::test]
async fn deploy_files_pass_promtool_and_name_real_metrics() {
    needs_raftmq("GET /metrics");
    let dir = deploy_dir();
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).expect("alerts.yml");
    let broker = Broker::start().await;
    let exported = Scrape::of(broker.http).await.names();
    let mut named: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("raftmq_") || w.starts_with("process_"))
        .collect();
    named.sort();
    named.dedup();
    assert!(!named.is_empty());
    for name in named {
        assert!(
            exported.contains(name),
            "alerts.yml names {name}, which /metrics does not export"
        );
    }
    let Some(promtool) = promtool() else {
        println!("skipped: no promtool");
        return;
    };
    let path = |f: &str| dir.join(f).display().to_string();
    for args in [
        vec!["check", "config", &path("prometheus.yml")],
        vec!["check", "rules", &path("alerts.yml")],
        vec!["test", "rules", &path("alerts_test.yml")],
    ] {
        if let Err(e) = run_promtool(&promtool, &args, "") {
            panic!("{e}");
        }
    }
}
