//! A cluster no outsider can change (issue 12): the cluster port decodes nothing from a
//! peer that has not proved the cluster secret, and the HTTP endpoints that change the
//! membership need the admin token. Everything goes over real sockets; the harness
//! starts every node with a secret and a token (tests/support/cluster.rs).

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::cluster::{
    free_addrs, http_get, http_post, members_of, Cluster, CLUSTER_TIMEOUT, POLL,
};
use crate::support::run_raftmq;

/// `Request::Remove { id: 3 }` as a frame: length 2, variant 5, id 3.
pub(crate) const REMOVE_3: [u8; 6] = [0, 0, 0, 2, 5, 3];
/// Bound on the node closing a refused connection (its handshake timeout is 5 s).
const CLOSE: Duration = Duration::from_secs(10);

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits (bounded) until the node closes `stream`: reads, discarding, to EOF or a reset.
pub(crate) async fn closed_by_node<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut buf = [0; 1024];
    let read_to_end = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(CLOSE, read_to_end).await.is_ok()
}

/// The dialer's half of the handshake (crates/cluster/src/handshake.rs), written from
/// its description: HELLO, then the listener's PROOF, then our FINISH.
pub(crate) struct Dialer {
    secret: Vec<u8>,
    client: [u8; 32],
}

const MAGIC: &[u8] = b"RMQC\x01";

impl Dialer {
    pub(crate) fn new(secret: &[u8], seed: u8) -> Dialer {
        let client = std::array::from_fn(|i| seed.wrapping_add(i as u8));
        Dialer {
            secret: secret.to_vec(),
            client,
        }
    }

    pub(crate) fn hello(&self) -> Vec<u8> {
        [MAGIC, &self.client].concat()
    }

    fn mac(&self, tag: &str, server: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).unwrap();
        mac.update(tag.as_bytes());
        mac.update(&self.client);
        mac.update(server);
        mac.finalize().into_bytes().to_vec()
    }

    /// Sends HELLO and reads the PROOF: the server nonce, and whether the listener's MAC
    /// is the one our secret gives.
    pub(crate) async fn start<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
    ) -> ([u8; 32], bool) {
        stream.write_all(&self.hello()).await.unwrap();
        let mut proof = [0; 5 + 32 + 32];
        stream.read_exact(&mut proof).await.unwrap();
        assert_eq!(&proof[..5], MAGIC);
        let server: [u8; 32] = proof[5..37].try_into().unwrap();
        let genuine = self.mac("raftmq cluster v1 listener", &server) == proof[37..];
        (server, genuine)
    }

    pub(crate) fn finish(&self, server: &[u8]) -> Vec<u8> {
        self.mac("raftmq cluster v1 dialer", server)
    }
}

pub(crate) async fn dial(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr)
        .await
        .expect("connect to the cluster port")
}

async fn secret_of(c: &Cluster) -> Vec<u8> {
    let text = std::fs::read_to_string(c.secret_file()).unwrap();
    text.trim().as_bytes().to_vec()
}

pub(crate) async fn assert_three_voters(c: &Cluster) {
    c.wait_leader().await;
    for id in 1..=3 {
        let s = c.status(id).await;
        assert_eq!(
            members_of(&s),
            (vec![1, 2, 3], vec![1, 2, 3]),
            "node {id}: {s}"
        );
    }
}

/// The 6 bytes, sent raw to every node's cluster port: closed, nothing removed.
#[tokio::test]
async fn a_raw_remove_frame_changes_nothing() {
    let c = Cluster::start(3).await;
    for id in 1..=3 {
        let mut s = dial(c.node(id).listen).await;
        s.write_all(&REMOVE_3).await.unwrap();
        assert!(closed_by_node(&mut s).await, "node {id} kept the socket");
    }
    assert_three_voters(&c).await;
    assert!(c.node(1).log().contains("refused"), "the refusal is logged");
}

/// A handshake with another secret: the node's proof does not match ours, and our
/// proof does not pass; a frame after it is never decoded.
#[tokio::test]
async fn a_wrong_secret_is_refused() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    let mut s = dial(c.node(leader).listen).await;
    let impostor = Dialer::new(b"not the cluster secret at all", 1);
    let (server, genuine) = impostor.start(&mut s).await;
    assert!(
        !genuine,
        "the node's proof must not verify under another secret"
    );
    let _ = s.write_all(&impostor.finish(&server)).await;
    let _ = s.write_all(&REMOVE_3).await;
    assert!(closed_by_node(&mut s).await);
    assert_three_voters(&c).await;

    // A whole node with another secret cannot join.
    let other = c.dir().join("other.secret");
    std::fs::write(&other, "another secret, 32 bytes long...").unwrap();
    let [mqtt, cluster, http] = free_addrs(c.ip(4)).map(|a| a.to_string());
    let data_dir = c.dir().join("intruder").display().to_string();
    let join = c.node(1).cluster.to_string();
    #[rustfmt::skip]
    let out = run_raftmq(
        &["--node-id", "4", "--mqtt-addr", &mqtt, "--cluster-addr", &cluster,
          "--http-addr", &http, "--data-dir", &data_dir, "--join", &join,
          "--join-timeout-secs", "2",
          "--cluster-secret-file", other.to_str().unwrap()],
        CLUSTER_TIMEOUT,
    );
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cannot join") && err.contains("cluster secret"),
        "{err}"
    );
    assert_three_voters(&c).await;
}

/// A genuine dialer's messages, replayed on a new connection: the node's new nonce
/// makes the old proof worthless.
#[tokio::test]
async fn a_replayed_handshake_is_refused() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    let addr = c.node(leader).listen;
    let genuine = Dialer::new(&secret_of(&c).await, 7);

    let mut s = dial(addr).await;
    let (server, ok) = genuine.start(&mut s).await;
    assert!(ok, "the node proves the secret we know");
    let finish = genuine.finish(&server);
    s.write_all(&finish).await.unwrap();
    // Authenticated: a frame is answered (node 99 is no member, so nothing changes).
    s.write_all(&[0, 0, 0, 2, 5, 99]).await.unwrap();
    let len = tokio::time::timeout(CLOSE, s.read_u32()).await;
    assert!(matches!(len, Ok(Ok(n)) if n > 0), "no answer: {len:?}");
    drop(s);

    let mut replay = dial(addr).await;
    replay.write_all(&genuine.hello()).await.unwrap();
    let mut proof = [0; 69];
    replay.read_exact(&mut proof).await.unwrap();
    assert_ne!(proof[5..37], server, "a fresh nonce per connection");
    let _ = replay.write_all(&finish).await;
    let _ = replay.write_all(&REMOVE_3).await;
    assert!(closed_by_node(&mut replay).await);
    assert_three_voters(&c).await;
}

/// Kilobytes of resident memory of `pid`, from /proc: (VmRSS, VmHWM).
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        let kb = line.split_whitespace().nth(1).unwrap();
        kb.parse::<u64>().unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// 50 sockets announcing 64 MiB frames (and sending some of it): all closed, and the
/// node's peak resident memory grows by less than a few MB.
#[tokio::test]
async fn announced_huge_frames_cost_nothing() {
    let c = Cluster::start(1).await;
    let pid = c.pid(1);
    let (_, peak_before) = memory(pid);
    let mut sockets = Vec::new();
    for _ in 0..50 {
        let mut s = dial(c.node(1).listen).await;
        let mut frame = (64u32 << 20).to_be_bytes().to_vec();
        frame.resize(64 * 1024, 0xAB);
        let _ = s.write_all(&frame).await;
        sockets.push(s);
    }
    for (i, s) in sockets.iter_mut().enumerate() {
        assert!(closed_by_node(s).await, "socket {i} still open");
    }
    let (rss, peak) = memory(pid);
    let grown = peak.saturating_sub(peak_before);
    assert!(
        grown < 8 * 1024,
        "peak RSS grew by {grown} KiB (now {rss} KiB)"
    );
    assert!(c.is_ready(1).await);
}

/// The admin endpoints: 401 without the token or with another, and nothing changes;
/// with it (through `raftmq cluster`), node 3 is removed.
#[tokio::test]
async fn admin_endpoints_need_the_token() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    let http = c.node(leader).http;
    for path in ["/cluster/remove/3", "/cluster/leave"] {
        for token in [None, Some("cluster 0 admin token but wrong")] {
            let (code, body) = http_post(http, path, token).await.unwrap();
            assert_eq!(code, 401, "{path} {token:?}: {body}");
        }
    }
    assert_three_voters(&c).await;

    let token = c.token_file().display().to_string();
    let http = http.to_string();
    let out = c.run(
        &[
            "cluster",
            "remove",
            "3",
            "--http",
            &http,
            "--admin-token-file",
            &token,
        ],
        CLUSTER_TIMEOUT,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    c.wait_voters(&[1, 2], &[1, 2]).await;
}

/// A node without a cluster secret refuses --join at once, saying how to set one.
#[tokio::test]
async fn join_without_a_secret_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data").display().to_string();
    #[rustfmt::skip]
    let out = run_raftmq(
        &["--node-id", "2", "--mqtt-addr", "127.0.0.1:0", "--cluster-addr", "127.0.0.1:0",
          "--http-addr", "127.0.0.1:0", "--data-dir", &data_dir, "--join", "127.0.0.1:1"],
        CLUSTER_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--cluster-secret-file"), "{err}");
    assert!(
        !std::path::Path::new(&data_dir).exists(),
        "refused before any state"
    );
}

/// A node started with no secret, SIGKILLed on drop.
struct Unsecured {
    child: std::process::Child,
    cluster: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Unsecured {
    /// MQTT and HTTP on 127.0.0.1, the cluster port on every address. The cluster port
    /// is picked free on the wildcard address (a port free on 127.0.0.1 may be taken on
    /// another 127.0.0.x by a parallel test), and a node that exits at once (its port
    /// taken after all) is started again on new ports.
    async fn start() -> Unsecured {
        for _ in 0..3 {
            if let Some(node) = Unsecured::try_start().await {
                return node;
            }
        }
        panic!("a node without a secret did not start in 3 attempts");
    }

    async fn try_start() -> Option<Unsecured> {
        let dir = tempfile::tempdir().expect("temp dir");
        let [mqtt, _, http] = free_addrs("127.0.0.1".parse().unwrap());
        let wildcard = std::net::TcpListener::bind("0.0.0.0:0")
            .and_then(|l| l.local_addr())
            .expect("a free wildcard port");
        let cluster = SocketAddr::from(([127, 0, 0, 1], wildcard.port()));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_raftmq"))
            .args([
                "--mqtt-addr",
                &mqtt.to_string(),
                "--http-addr",
                &http.to_string(),
            ])
            .args(["--cluster-addr", &wildcard.to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn raftmq");
        let mut node = Unsecured {
            child,
            cluster,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + CLUSTER_TIMEOUT;
        loop {
            if matches!(http_get(http, "/ready").await, Ok((200, _))) {
                return Some(node);
            }
            if !matches!(node.child.try_wait(), Ok(None)) {
                return None;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the node was not ready in {CLUSTER_TIMEOUT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Unsecured {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This machine's address on its default route, if it has one that is not loopback.
fn outside_ip() -> Option<std::net::IpAddr> {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    probe.connect("10.255.255.255:9").ok()?; // no packet is sent
    let ip = probe.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// Without a secret: a loopback peer still goes through the handshake (with the
/// well-known empty key), so a raw frame is not decoded; any other peer is closed on.
#[tokio::test]
async fn without_a_secret_only_loopback_peers_talk() {
    let node = Unsecured::start().await;
    let mut raw = dial(node.cluster).await;
    raw.write_all(&REMOVE_3).await.unwrap();
    assert!(closed_by_node(&mut raw).await);

    let mut s = dial(node.cluster).await;
    let local = Dialer::new(b"", 3);
    let (server, ok) = local.start(&mut s).await;
    assert!(ok, "the well-known key");
    s.write_all(&local.finish(&server)).await.unwrap();
    s.write_all(&[0, 0, 0, 2, 5, 99]).await.unwrap();
    let len = tokio::time::timeout(CLOSE, s.read_u32()).await;
    assert!(matches!(len, Ok(Ok(n)) if n > 0), "no answer: {len:?}");

    let Some(ip) = outside_ip() else {
        eprintln!("skipped the outside peer: no non-loopback address");
        return;
    };
    let mut outside = dial(SocketAddr::new(ip, node.cluster.port())).await;
    let _ = outside.write_all(&local.hello()).await;
    let mut buf = [0; 1];
    let got = tokio::time::timeout(CLOSE, outside.read(&mut buf)).await;
    assert!(matches!(got, Ok(Ok(0) | Err(_))), "{ip}: {got:?}");
}
