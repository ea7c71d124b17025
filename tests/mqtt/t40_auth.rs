//! Client authentication: the password file, JWT passwords, `%c`/`%u` access rules,
//! reload on SIGHUP, the failed-login throttle and `raftmq passwd`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use broker_core::auth::hash_password;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::support::client::{Ev, Opts};
use crate::support::codec::Version;
use crate::support::{wait_until, Broker, RECV_TIMEOUT};

both!(
    password_logins,
    hs256_token_logins,
    es256_token_login,
    pattern_rules_use_the_authenticated_names,
);

/// The CONNACK code of a refusal: the 5.0 reason code, or its 3.1.1 return code.
fn refused_with(v: Version, v5: u8) -> u8 {
    match (v, v5) {
        (Version::V5, code) => code,
        (Version::V4, 0x86) => 0x04,
        (Version::V4, 0x87) => 0x05,
        (Version::V4, code) => panic!("no 3.1.1 code for {code:#x}"),
    }
}

/// Connects and returns the failing CONNACK code; panics if accepted or not refused
/// with a CONNACK.
async fn refusal(opts: Opts, broker: &Broker) -> u8 {
    let id = opts.id.clone();
    match opts.try_connect(broker.addr).await {
        Ok(_) => panic!("{id:?} was accepted"),
        Err(Ev::ConnAck { code, .. }) => code,
        Err(other) => panic!("{id:?} was not refused with a CONNACK: {other:?}"),
    }
}

/// A password file of `users` (name, password) in `dir`.
fn password_file(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("passwords");
    let mut text = String::from("# test users\n");
    for (user, password) in users {
        let hash = hash_password(password.as_bytes()).expect("hash");
        text.push_str(&format!("{user}:{hash}\n"));
    }
    std::fs::write(&path, text).expect("password file");
    path
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn hs256(secret: &[u8], sub: &str, exp: u64) -> String {
    let claims = json!({"sub": sub, "exp": exp});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("token")
}

/// Right password accepted; wrong password and unknown user refused as bad
/// credentials; no credentials refused as not authorized.
async fn password_logins(v: Version) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = password_file(dir.path(), &[("alice", "wonderland")]);
    let broker = Broker::opts()
        .set("password-file", file.display())
        .start()
        .await;
    let alice = Opts::new(v, "a1").login("alice", "wonderland");
    alice.connect(broker.addr).await;
    let wrong = Opts::new(v, "a2").login("alice", "Wonderland");
    assert_eq!(refusal(wrong, &broker).await, refused_with(v, 0x86));
    let unknown = Opts::new(v, "m1").login("mallory", "wonderland");
    assert_eq!(refusal(unknown, &broker).await, refused_with(v, 0x86));
    let anonymous = Opts::new(v, "anon");
    assert_eq!(refusal(anonymous, &broker).await, refused_with(v, 0x87));
    assert!(
        broker.stderr().contains("repeated failed logins"),
        "the throttle's warning is logged"
    );
}

/// HS256: a valid token logs in as its `sub`; expired, badly signed or for another
/// username it is refused.
async fn hs256_token_logins(v: Version) {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("jwt.key");
    std::fs::write(&key, "shared-secret\n").expect("key file");
    let broker = Broker::opts()
        .set("jwt-key-file", key.display())
        .start()
        .await;
    let good = hs256(b"shared-secret", "dev-1", now() + 300);
    Opts::new(v, "d1")
        .login("dev-1", &good)
        .connect(broker.addr)
        .await;
    let expired = hs256(b"shared-secret", "dev-1", now() - 600);
    let opts = Opts::new(v, "d2").login("dev-1", &expired);
    assert_eq!(refusal(opts, &broker).await, refused_with(v, 0x86));
    let forged = hs256(b"guessed-secret", "dev-1", now() + 300);
    let opts = Opts::new(v, "d3").login("dev-1", &forged);
    assert_eq!(refusal(opts, &broker).await, refused_with(v, 0x86));
    let opts = Opts::new(v, "d4").login("dev-2", &good);
    assert_eq!(refusal(opts, &broker).await, refused_with(v, 0x86));
    assert_eq!(
        refusal(Opts::new(v, "d5"), &broker).await,
        refused_with(v, 0x87)
    );
}

/// ES256 with a PEM public key (a test key pair in tests/mqtt/keys).
async fn es256_token_login(v: Version) {
    let dir = tempfile::tempdir().expect("temp dir");
    let public = dir.path().join("es256.pem");
    std::fs::write(&public, include_str!("keys/es256-public.pem")).expect("key file");
    let broker = Broker::opts()
        .set("jwt-key-file", public.display())
        .set("jwt-algorithm", "ES256")
        .start()
        .await;
    let key = EncodingKey::from_ec_pem(include_bytes!("keys/es256-private.pem")).expect("key");
    let claims = json!({"sub": "ec-dev", "exp": now() + 300});
    let token = encode(&Header::new(Algorithm::ES256), &claims, &key).expect("token");
    Opts::new(v, "e1")
        .login("ec-dev", &token)
        .connect(broker.addr)
        .await;
    let hs = hs256(b"whatever", "ec-dev", now() + 300);
    let opts = Opts::new(v, "e2").login("ec-dev", &hs);
    assert_eq!(refusal(opts, &broker).await, refused_with(v, 0x86));
}

const PATTERN_RULES: &str = r##"
[[acl]]
permission = "allow"
action = "publish"
topic = "devices/%c/#"

[[acl]]
permission = "allow"
action = "publish"
topic = "users/%u/#"

[[acl]]
permission = "deny"
action = "publish"
topic = "#"
"##;

/// A device publishes under its own client id and its own username, not another's;
/// a client id with a wildcard gets nothing from the pattern.
async fn pattern_rules_use_the_authenticated_names(v: Version) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = password_file(dir.path(), &[("alice", "pw"), ("watch", "pw")]);
    let broker = Broker::opts()
        .set("password-file", file.display())
        .config(PATTERN_RULES)
        .start()
        .await;
    let mut sub = Opts::new(v, "watcher")
        .login("watch", "pw")
        .connect(broker.addr)
        .await;
    sub.subscribe("#", 1).await;
    let mut dev = Opts::new(v, "dev1")
        .login("alice", "pw")
        .connect(broker.addr)
        .await;
    let denied = if v == Version::V5 { 0x87 } else { 0 };
    assert_eq!(dev.publish("devices/dev1/t", 1, false, b"own id").await, 0);
    assert_eq!(
        dev.publish("devices/dev2/t", 1, false, b"other id").await,
        denied
    );
    assert_eq!(dev.publish("users/alice/t", 1, false, b"own name").await, 0);
    assert_eq!(
        dev.publish("users/bob/t", 1, false, b"other name").await,
        denied
    );
    let mut wild = Opts::new(v, "+")
        .login("alice", "pw")
        .connect(broker.addr)
        .await;
    assert_eq!(wild.publish("devices/x/t", 1, false, b"wild").await, denied);
    dev.publish("devices/dev1/end", 1, false, b"end").await;
    let got: Vec<Vec<u8>> = sub
        .recv_until(b"end")
        .await
        .into_iter()
        .map(|m| m.payload)
        .collect();
    assert_eq!(got, [b"own id".to_vec(), b"own name".to_vec()]);
}

/// SIGHUP reloads the file: a new user can log in, a connected client stays; a broken
/// file is refused on reload with a warning and the old users stay.
#[tokio::test]
async fn sighup_reloads_the_password_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = password_file(dir.path(), &[("alice", "pw")]);
    let broker = Broker::opts()
        .set("password-file", file.display())
        .start()
        .await;
    let mut alice = Opts::new(Version::V5, "alice")
        .login("alice", "pw")
        .connect(broker.addr)
        .await;
    alice.subscribe("news", 1).await;
    let bob = || Opts::new(Version::V5, "bob").login("bob", "builder");
    assert_eq!(refusal(bob(), &broker).await, 0x86);

    password_file(dir.path(), &[("alice", "pw"), ("bob", "builder")]);
    broker.hangup();
    let addr = broker.addr;
    wait_until(
        "bob accepted after SIGHUP",
        RECV_TIMEOUT,
        Duration::from_millis(100),
        || async move { bob().try_connect(addr).await.is_ok() },
    )
    .await;
    let mut bob = bob().connect(broker.addr).await;
    bob.publish("news", 1, false, b"reloaded").await;
    assert_eq!(
        alice.recv().await.payload,
        b"reloaded",
        "alice is still connected"
    );

    std::fs::write(&file, "alice has no hash\n").expect("broken file");
    broker.hangup();
    wait_until(
        "the reload warning",
        RECV_TIMEOUT,
        Duration::from_millis(50),
        || {
            let log = broker.stderr();
            async move { log.contains("keeping the previous users") && log.contains("line 1") }
        },
    )
    .await;
    Opts::new(Version::V4, "bob2")
        .login("bob", "builder")
        .connect(broker.addr)
        .await;
}

/// Wrong passwords from one address wait longer and longer for their refusal, while a
/// right password from the same address is not held up.
#[tokio::test]
async fn failed_logins_are_delayed_more_and_more() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = password_file(dir.path(), &[("alice", "pw")]);
    let broker = Broker::opts()
        .set("password-file", file.display())
        .start()
        .await;
    let mut took = Vec::new();
    for i in 0..6 {
        let start = Instant::now();
        let opts = Opts::new(Version::V4, &format!("g{i}")).login("alice", "guess");
        assert_eq!(refusal(opts, &broker).await, 0x04);
        took.push(start.elapsed());
    }
    // Expected about 0, 100, 200, 400, 800, 1600 ms plus the hash check: asserted
    // loosely, as growth.
    for pair in took[1..].windows(2) {
        assert!(pair[1] + Duration::from_millis(50) >= pair[0], "{took:?}");
    }
    assert!(took[5] >= took[1] + Duration::from_millis(1000), "{took:?}");
    assert!(took[5] < Duration::from_secs(5), "{took:?}");

    // The next refusal is held for about 3 s; meanwhile alice logs in at once.
    let slow = tokio::spawn(refusal_time(broker.addr));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    Opts::new(Version::V4, "alice")
        .login("alice", "pw")
        .connect(broker.addr)
        .await;
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    let held = slow.await.expect("join");
    assert!(held >= Duration::from_millis(2000), "{held:?}");
}

async fn refusal_time(addr: std::net::SocketAddr) -> Duration {
    let start = Instant::now();
    let result = Opts::new(Version::V4, "g-last")
        .login("alice", "guess")
        .try_connect(addr)
        .await;
    assert!(
        matches!(result, Err(Ev::ConnAck { code: 0x04, .. })),
        "refused"
    );
    start.elapsed()
}

/// `raftmq passwd` reads the password from stdin, creates the file with mode 0600, and
/// the broker accepts the new user; running it again changes the password.
#[tokio::test]
async fn passwd_subcommand_then_login() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("users");
    passwd(&file, "carol", "first\n");
    let mode = std::fs::metadata(&file).expect("file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    passwd(&file, "dave", "dave-pw\n");
    passwd(&file, "carol", "second\r\n");
    let text = std::fs::read_to_string(&file).expect("file");
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        !text.contains("second"),
        "the password itself is not stored"
    );

    let broker = Broker::opts()
        .set("password-file", file.display())
        .start()
        .await;
    let carol = |pw: &str| Opts::new(Version::V5, "carol").login("carol", pw);
    carol("second").connect(broker.addr).await;
    assert_eq!(refusal(carol("first"), &broker).await, 0x86);
    Opts::new(Version::V4, "dave")
        .login("dave", "dave-pw")
        .connect(broker.addr)
        .await;
}

/// Runs `raftmq passwd FILE USER` with `stdin`; panics unless it succeeds.
fn passwd(file: &Path, user: &str, stdin: &str) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_raftmq"))
        .arg("passwd")
        .arg(file)
        .arg(user)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn raftmq passwd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write the password");
    let out = child.wait_with_output().expect("raftmq passwd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "raftmq passwd {user}: {stderr}");
}
