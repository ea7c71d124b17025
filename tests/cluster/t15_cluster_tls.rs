//! Mutual TLS on the cluster port (issue 12): with `--cluster-tls-*`, every cluster
//! connection is TLS 1.3 first, each node presenting a certificate of the cluster CA
//! (DNS raftmq-cluster) and checking the other's; the secret handshake and the frames
//! run inside. Certificates are made at test time (tests/support/certs.rs). The nodes of
//! the TLS-only clusters have no cluster secret: TLS is what authenticates them, so a
//! client certificate the listener does not check would let anyone in.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::support::certs::{CertFiles, Pki};
use crate::support::client::v4;
use crate::support::cluster::{free_addrs, recv_data, wait_route, Cluster, CLUSTER_TIMEOUT};
use crate::support::run_raftmq;
use crate::t15_cluster_security::{
    assert_three_voters, closed_by_node, dial, stderr, Dialer, REMOVE_3,
};

/// Bound on one read from a node.
const READ: Duration = Duration::from_secs(10);

/// The cluster TLS flags of a node with `files`, trusting the CA of `ca`.
fn tls_flags(files: &CertFiles, ca: &Path) -> Vec<String> {
    [
        "--cluster-tls-cert-file",
        files.cert.to_str().unwrap(),
        "--cluster-tls-key-file",
        files.key.to_str().unwrap(),
        "--cluster-tls-ca-file",
        ca.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

/// An empty cluster whose node `i` gets its own certificate `node-i` of `pki`.
fn with_tls(cluster: Cluster, pki: &Arc<Pki>) -> Cluster {
    let pki = pki.clone();
    cluster.with_node_args(move |id| {
        tls_flags(&pki.cluster_node(&format!("node-{id}")), &pki.ca_file())
    })
}

/// A raw TLS connection to a cluster port, as `client` configures it.
async fn tls_dial(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = rustls::pki_types::ServerName::try_from("raftmq-cluster").unwrap();
    TlsConnector::from(client)
        .connect(name, dial(addr).await)
        .await
}

/// Three nodes with cluster TLS and no secret form a cluster; a publish on node 1
/// reaches a subscriber on node 3; the cluster elects a new leader when its leader is
/// killed, and takes the node back when it restarts.
#[tokio::test]
async fn a_tls_cluster_forms_replicates_and_recovers() {
    let pki = Arc::new(Pki::new());
    let mut c = Cluster::start_with(3, with_tls(Cluster::empty().without_secret(), &pki)).await;
    assert_three_voters(&c).await;
    assert!(
        c.node(2).log().contains("mutual TLS"),
        "{}",
        c.node(2).log()
    );

    let mut sub = v4("tls-sub").connect(c.node(3).mqtt).await;
    assert_eq!(sub.subscribe("tls/#", 1).await, [1]);
    let mut publisher = v4("tls-pub").connect(c.node(1).mqtt).await;
    wait_route(&mut publisher, &mut sub, "tls/probe").await;
    publisher.publish("tls/a", 1, false, b"across TLS").await;
    let m = recv_data(&mut sub).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("tls/a", &b"across TLS"[..])
    );

    let leader = c.wait_leader().await;
    c.kill(leader);
    let others: Vec<u64> = (1..=3).filter(|&i| i != leader).collect();
    c.wait_leader_of(&others).await;
    c.restart(leader).await;
    assert_three_voters(&c).await;
}

/// A node of another CA: its own process cannot join (it refuses the cluster's
/// certificate, and the cluster logs its alert); a TLS client trusting the cluster CA
/// (which is public) but presenting another CA's certificate, or none, is closed on
/// before the secret handshake, so its Remove frame is never read. Membership stays.
#[tokio::test]
async fn a_certificate_of_another_ca_is_refused() {
    let pki = Arc::new(Pki::new());
    let c = Cluster::start_with(3, with_tls(Cluster::empty().without_secret(), &pki)).await;
    let leader = c.wait_leader().await;
    let other = Pki::new();

    // The intruder's node: its own CA for everything.
    let intruder = other.cluster_node("intruder");
    let [mqtt, cluster, http] = free_addrs(c.ip(4)).map(|a| a.to_string());
    let data_dir = c.dir().join("intruder").display().to_string();
    let join = c.node(leader).cluster.to_string();
    #[rustfmt::skip]
    let mut args: Vec<String> = [
        "--node-id", "4", "--mqtt-addr", &mqtt, "--cluster-addr", &cluster,
        "--http-addr", &http, "--data-dir", &data_dir, "--join", &join,
        "--join-timeout-secs", "2",
    ]
    .map(String::from)
    .to_vec();
    args.extend(tls_flags(&intruder, &other.ca_file()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_raftmq(&args, CLUSTER_TIMEOUT);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot join") && err.contains("TLS"), "{err}");
    // Both test CAs have the same name: the signature is what fails.
    assert!(err.contains("invalid peer certificate"), "{err}");
    c.wait_until(
        "the leader to log the refusal",
        CLUSTER_TIMEOUT,
        |c| async move {
            c.node(leader)
                .log()
                .contains("refused: TLS: received fatal alert")
        },
    )
    .await;

    // A client that trusts the cluster CA: with a certificate of another CA, with
    // none, and (the control) with one of the cluster's CA.
    let foreign = other.cluster_node("foreign");
    let member = pki.cluster_node("raw-member");
    let cases = [
        ("another CA's certificate", Some(&foreign), false),
        ("no certificate", None, false),
        ("the cluster CA's certificate", Some(&member), true),
    ];
    for (what, cert, admitted) in cases {
        let addr = c.node(leader).listen;
        let mut s = match tls_dial(addr, pki.client_config(cert)).await {
            Ok(s) => s,
            Err(e) => {
                assert!(!admitted, "{what}: {e}");
                continue;
            }
        };
        // No cluster secret: the handshake's well-known empty key.
        let dialer = Dialer::new(b"", 9);
        s.write_all(&dialer.hello()).await.unwrap();
        let mut proof = [0; 5 + 32 + 32];
        let read = tokio::time::timeout(READ, s.read_exact(&mut proof)).await;
        if !admitted {
            assert!(matches!(read, Ok(Err(_))), "{what}: {read:?}");
            let _ = s.write_all(&REMOVE_3).await;
            assert!(closed_by_node(&mut s).await, "{what}");
            continue;
        }
        read.expect("an answer").expect("the proof");
        let server: [u8; 32] = proof[5..37].try_into().unwrap();
        s.write_all(&dialer.finish(&server)).await.unwrap();
        // Remove node 99: no member, so nothing changes, but an answer comes.
        s.write_all(&[0, 0, 0, 2, 5, 99]).await.unwrap();
        let len = tokio::time::timeout(READ, s.read_u32()).await;
        assert!(
            matches!(len, Ok(Ok(n)) if n > 0),
            "{what}: no answer: {len:?}"
        );
    }
    assert_three_voters(&c).await;
}

/// Plain TCP to a TLS cluster port (here with a secret too): the Remove frame,
/// garbage, and a plain node's handshake are each closed on, and a node without
/// cluster TLS cannot join; membership and leader stay.
#[tokio::test]
async fn plain_tcp_to_a_tls_cluster_port_changes_nothing() {
    let pki = Arc::new(Pki::new());
    let c = Cluster::start_with(3, with_tls(Cluster::empty(), &pki)).await;
    let leader = c.wait_leader().await;
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let hello = Dialer::new(b"any secret at all", 1).hello();
    for id in 1..=3 {
        for (what, bytes) in [
            ("Remove frame", &REMOVE_3[..]),
            ("garbage", &garbage),
            ("HELLO", &hello),
        ] {
            let mut s = dial(c.node(id).listen).await;
            let _ = s.write_all(bytes).await;
            assert!(
                closed_by_node(&mut s).await,
                "node {id} kept the socket after {what}"
            );
        }
    }
    assert_three_voters(&c).await;
    assert_eq!(c.wait_leader().await, leader, "no election either");
    assert!(
        c.node(1).log().contains("refused: TLS: "),
        "the refusal is logged"
    );

    // A whole node with the secret but without TLS.
    let [mqtt, cluster, http] = free_addrs(c.ip(4)).map(|a| a.to_string());
    let data_dir = c.dir().join("plain").display().to_string();
    let join = c.node(1).cluster.to_string();
    let secret = c.secret_file().display().to_string();
    #[rustfmt::skip]
    let out = run_raftmq(
        &["--node-id", "4", "--mqtt-addr", &mqtt, "--cluster-addr", &cluster,
          "--http-addr", &http, "--data-dir", &data_dir, "--join", &join,
          "--join-timeout-secs", "2", "--cluster-secret-file", &secret],
        CLUSTER_TIMEOUT,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot join"), "{err}");
    assert_three_voters(&c).await;
}

/// Some of the three files, or a certificate without the cluster's name: refused at
/// start-up on one line (exit 2), naming what is wrong, before any state is made.
#[tokio::test]
async fn incomplete_or_wrong_tls_settings_stop_the_start() {
    let pki = Pki::new();
    let node = pki.cluster_node("node");
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data").display().to_string();
    let (cert, key, ca) = (
        node.cert.display().to_string(),
        node.key.display().to_string(),
        pki.ca_file().display().to_string(),
    );
    #[rustfmt::skip]
    let base = [
        "--mqtt-addr", "127.0.0.1:0", "--cluster-addr", "127.0.0.1:0",
        "--http-addr", "127.0.0.1:0", "--data-dir", &data_dir,
    ];
    let run = |more: &[&str]| {
        let args: Vec<&str> = base.iter().chain(more).copied().collect();
        let out = run_raftmq(&args, CLUSTER_TIMEOUT);
        assert_eq!(out.status.code(), Some(2), "{more:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    };
    let err = run(&["--cluster-tls-cert-file", &cert]);
    assert!(
        err.contains("cluster_tls_key_file, cluster_tls_ca_file: missing")
            && err.contains("needs all three"),
        "{err}"
    );
    let err = run(&[
        "--cluster-tls-cert-file",
        &cert,
        "--cluster-tls-key-file",
        &key,
    ]);
    assert!(err.contains("cluster_tls_ca_file: missing"), "{err}");
    let err = run(&["--cluster-tls-ca-file", &ca]);
    assert!(
        err.contains("cluster_tls_cert_file, cluster_tls_key_file: missing"),
        "{err}"
    );

    // A certificate for 127.0.0.1 / localhost, not raftmq-cluster.
    let server = pki.server("server");
    let server_cert = server.cert.display().to_string();
    let server_key = server.key.display().to_string();
    let err = run(&[
        "--cluster-tls-cert-file",
        &server_cert,
        "--cluster-tls-key-file",
        &server_key,
        "--cluster-tls-ca-file",
        &ca,
    ]);
    assert!(
        err.contains("DNS:raftmq-cluster") && err.contains("server.pem"),
        "{err}"
    );
    assert!(!Path::new(&data_dir).exists(), "refused before any state");
}
