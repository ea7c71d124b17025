//! Invalid settings: the binary exits with code 2 and one stderr line naming the
//! setting, and never starts listening.

use std::process::Output;
use std::time::Duration;

use crate::support::run_raftmq;

/// Runs raftmq with a temp `data_dir` config plus `extra_toml` and `args`; returns its
/// output, killing it (and failing) if it is still running after 10 s.
fn run(extra_toml: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("raftmq.toml");
    let data_dir = dir.path().join("data").display().to_string();
    std::fs::write(&config, format!("data_dir = {data_dir:?}\n{extra_toml}")).expect("config file");
    let config = config.display().to_string();
    let mut all = vec!["--mqtt-addr", "127.0.0.1:0", "--config", &config];
    all.extend_from_slice(args);
    run_raftmq(&all, Duration::from_secs(10))
}

/// Exit code 2 and exactly one non-empty stderr line mentioning `setting` (in snake or
/// kebab case).
fn assert_rejected(out: &Output, setting: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit status; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got:\n{stderr}");
    let kebab = setting.replace('_', "-");
    assert!(
        lines[0].contains(setting) || lines[0].contains(&kebab),
        "stderr does not name {setting}: {}",
        lines[0]
    );
}

#[test]
fn max_inflight_zero_rejected() {
    assert_rejected(&run("", &["--max-inflight", "0"]), "max_inflight");
}

#[test]
fn unknown_queue_policy_rejected() {
    assert_rejected(&run("", &["--queue-policy", "nope"]), "queue_policy");
}

#[test]
fn unknown_config_key_rejected() {
    assert_rejected(&run("no_such_setting = 1\n", &[]), "no_such_setting");
}

#[test]
fn malformed_password_file_rejected_with_its_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("passwords");
    std::fs::write(
        &file,
        "# users
alice:$argon2id$broken
",
    )
    .expect("password file");
    let out = run("", &["--password-file", &file.display().to_string()]);
    assert_rejected(&out, "password_file");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(": line 2: "), "{stderr}");
}

#[test]
fn unreadable_jwt_key_rejected() {
    let out = run(
        "",
        &[
            "--jwt-key-file",
            "/nonexistent/jwt.pem",
            "--jwt-algorithm",
            "ES256",
        ],
    );
    assert_rejected(&out, "jwt_key_file");
}

#[test]
fn invalid_acl_filter_rejected() {
    let acl = "[[acl]]\npermission = \"deny\"\naction = \"all\"\ntopic = \"a/#/b\"\n";
    assert_rejected(&run(acl, &[]), "acl");
}
