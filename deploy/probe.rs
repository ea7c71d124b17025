//! `raftmq-probe`: the image's health check and name-resolution check. The image is
//! `FROM scratch` (no shell, no curl), so this std-only program is compiled with
//! `rustc` by `deploy/build.sh` and copied in beside `raftmq`, linked against the same
//! glibc and NSS modules.
//!
//! - `raftmq-probe http://HOST:PORT/PATH`: one GET; exit 0 on a 200 answer, else 1
//!   (the `HEALTHCHECK` asks `http://127.0.0.1:8080/ready`).
//! - `raftmq-probe resolve NAME...`: resolves each name with `getaddrinfo`, as `raftmq`
//!   does for `--join` and its peers, and prints the addresses; exit 1 if one fails.
//! - `raftmq-probe nofile`: prints the open-file limit, soft and hard (what the
//!   container runtime gave; `deploy/up.sh` uses it to fit `ulimits` to the engine).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// Well inside the health check's own timeout, so a hung node reads as unhealthy.
const TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("resolve") if args.len() > 1 => resolve(&args[1..]),
        Some("nofile") if args.len() == 1 => nofile(),
        Some(url) if url.starts_with("http://") && args.len() == 1 => get(url),
        _ => Err("usage: raftmq-probe http://HOST:PORT/PATH | resolve NAME... | nofile".into()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftmq-probe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn resolve(names: &[String]) -> Result<(), String> {
    for name in names {
        let addrs: Vec<SocketAddr> = (name.as_str(), 0)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {name}: {e}"))?
            .collect();
        let ips: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
        println!("{name} {}", ips.join(" "));
    }
    Ok(())
}

fn nofile() -> Result<(), String> {
    let limits = std::fs::read_to_string("/proc/self/limits")
        .map_err(|e| format!("/proc/self/limits: {e}"))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or("/proc/self/limits has no 'Max open files'")?;
    let values: Vec<&str> = line["Max open files".len()..]
        .split_whitespace()
        .take(2)
        .collect();
    println!("{}", values.join(" "));
    Ok(())
}

fn get(url: &str) -> Result<(), String> {
    let rest = &url["http://".len()..];
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {authority}"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("{url}: {e}"))?;
    stream.set_read_timeout(Some(TIMEOUT)).ok();
    stream.set_write_timeout(Some(TIMEOUT)).ok();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{url}: {e}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("{url}: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    let status_line = answer.lines().next().unwrap_or("");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").trim();
    match status_line.split_whitespace().nth(1) {
        Some("200") => {
            println!("{body}");
            Ok(())
        }
        Some(code) => Err(format!("{url} answered {code}: {body}")),
        None => Err(format!("{url}: no HTTP answer")),
    }
}
