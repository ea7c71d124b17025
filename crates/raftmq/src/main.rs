//! The raftmq server: reads its settings (defaults ← file ← flags), starts logging and
//! serves MQTT until SIGINT or SIGTERM.
//!
//! - `cli`: the flags.
//! - `config`: the merged settings, the TOML file and its error messages.
//! - `server`: start-up of a node: listeners, the cluster member, the broker.
//! - `http`: the HTTP API (health, readiness, cluster status and membership, metrics,
//!   the status page, events).
//! - `metrics`: the Prometheus metrics, read from the engine, the cluster and `host`
//!   (this process and the data directory, as the system tells them).
//! - `view`: the whole cluster for the status page, gathered from every member.
//! - `ctl`: `raftmq cluster ...`, the client side of that API.
//! - `passwd`: `raftmq passwd FILE USER`, which edits a password file.
//!
//! Exit status: 0 after a clean stop, 2 for any invalid setting (as clap does for a bad
//! flag), 1 when the broker cannot start or fails while running.

mod cli;
mod config;
mod ctl;
mod host;
mod http;
mod metrics;
mod passwd;
mod server;
mod view;

use std::fmt::Display;
use std::future::Future;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::config::{Secrets, Settings};

/// mimalloc rather than glibc's malloc: 21% fewer instructions per delivered message
/// (callgrind, QoS 0 4 -> 4: 2,057 against 2,612), for about 0.5 KiB more per idle
/// connection. The allocator was a quarter of the hot path's profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process. mimalloc asks for them
/// (`madvise(MADV_HUGEPAGE)` on its arenas), so every first touch of its heap faulted in
/// and zeroed 2 MiB: measured with 5,000 idle clients (`loadgen idle`), 66 MiB of the
/// broker was huge pages and an idle connection cost 5.8 KiB of RSS, against 3.6 KiB
/// without; in a reconnect storm that zeroing was 13% of a survivor's CPU. The process
/// flag takes precedence over madvise, also for the arena mimalloc mapped before main.
fn no_huge_pages() {
    // SAFETY: prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) takes plain integers and only sets
    // a flag of this process; a kernel without it returns an error, which changes nothing.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

pub(crate) const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    no_huge_pages();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return flag_error(e),
    };
    match &cli.command {
        Some(Command::Passwd { file, user }) => return passwd::run(file, user),
        Some(Command::Cluster { action }) => return ctl::run(action),
        None => {}
    }
    if cli.print_default_config {
        return match io::stdout().write_all(Settings::default().to_toml().as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(EXIT_FAILURE, format!("writing the default config: {e}")),
        };
    }
    let settings = match Settings::load(&cli) {
        Ok(settings) => settings,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    // A password file or key that cannot be read is a setting error like any other.
    let auth = match broker_core::Auth::load(&settings.engine) {
        Ok(auth) => std::sync::Arc::new(auth),
        Err(e) => return fail(EXIT_USAGE, e),
    };
    let secrets = match Secrets::load(&settings.cluster, |var| std::env::var(var).ok()) {
        Ok(secrets) => secrets,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    if let Err(e) = init_tracing(settings.log_level) {
        return fail(EXIT_USAGE, e);
    }
    // One thread means the current-thread runtime: it runs woken tasks in the order
    // they were woken, so packets from different connections are handled in arrival
    // order. (A one-worker multi-thread runtime would not: its LIFO slot runs the task
    // woken last first.)
    let mut runtime = match settings.engine.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if n > 0 {
                builder.worker_threads(n);
            }
            builder
        }
    };
    match runtime.enable_all().build() {
        Ok(runtime) => runtime.block_on(server::serve(settings, auth, secrets)),
        Err(e) => fail(EXIT_FAILURE, format!("cannot start the async runtime: {e}")),
    }
}

/// `crate` at `level`, but no more talkative than `ceiling`.
fn quiet(
    krate: &str,
    level: LevelFilter,
    ceiling: LevelFilter,
) -> Result<tracing_subscriber::filter::Directive, String> {
    format!("{krate}={}", level.min(ceiling))
        .parse()
        .map_err(|e| format!("log filter: {e}"))
}

/// RUST_LOG, when set, is a full filter and wins over `--log-level`.
fn init_tracing(level: LevelFilter) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => {
            EnvFilter::try_new(&directives).map_err(|e| format!("RUST_LOG: {e}"))?
        }
        // openraft narrates every vote and membership step at info; our own cluster
        // module logs the events an operator needs (leader and membership changes).
        // rustls narrates each handshake at debug, and warns of some bad peers: our
        // listeners log each refused handshake themselves (the cluster port at most a
        // line per 10 s).
        _ => EnvFilter::default()
            .add_directive(level.into())
            .add_directive(quiet("openraft", level, LevelFilter::WARN)?)
            .add_directive(quiet("sled", level, LevelFilter::WARN)?)
            .add_directive(quiet("rustls", level, LevelFilter::ERROR)?),
    };
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        // Colour codes only help a person watching; they garble log files.
        .with_ansi(io::stderr().is_terminal())
        .with_env_filter(filter)
        .try_init()
        .map_err(|e| format!("cannot start logging: {e}"))
}

/// Resolves on the first SIGINT or SIGTERM.
#[cfg(unix)]
pub(crate) fn shutdown_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::debug!("{name} received, shutting down");
    })
}

/// Calls `reload` on each SIGHUP, from the moment it is installed (SIGHUP's default
/// action would kill the process).
#[cfg(unix)]
pub(crate) fn on_hangup(reload: impl Fn() + Send + 'static) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};

    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP received, reloading");
            reload();
        }
    });
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn on_hangup(_reload: impl Fn() + Send + 'static) -> io::Result<()> {
    Ok(())
}

/// Resolves on Ctrl-C; never, if it cannot be watched (rather than stopping at once).
#[cfg(not(unix))]
pub(crate) fn shutdown_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
}

/// `--help` and `--version` print as clap renders them; every other flag error becomes
/// the one line naming the flag that every other setting error gets.
fn flag_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            fail(EXIT_USAGE, first.trim_start_matches("error: "))
        }
    }
}

/// Reports one line on stderr, whatever the message holds, and gives the exit status.
pub(crate) fn fail(code: u8, message: impl Display) -> ExitCode {
    let message = message.to_string().replace('\n', " ");
    eprintln!("raftmq: error: {message}");
    ExitCode::from(code)
}
