//! loadgen: runs one scenario against an MQTT broker; a table on stderr, one JSON line
//! on stdout. `loadgen --help` lists the scenarios and their defaults; `loadgen failover`
//! has flags of its own (`loadgen failover --help`).

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;
use raftmq_benches::failover::{self, FailoverCli};
use raftmq_benches::sessions::{self, SessionsCli};
use raftmq_benches::{run, Cli};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "failover") {
        // clap takes "failover" as the program name of its own parser.
        let cli = FailoverCli::parse_from(&args[1..]);
        return block_on(async move {
            let report = failover::run(&cli).await;
            (report.table(), report.json(), report.error.is_none())
        });
    }
    if args.get(1).is_some_and(|a| a == "sessions") {
        let cli = SessionsCli::parse_from(&args[1..]);
        return block_on(async move {
            let report = sessions::run(&cli).await;
            (report.table(), report.json(), report.error.is_none())
        });
    }
    let cli = Cli::parse();
    block_on(async move {
        let report = run(&cli).await;
        (report.table(), report.json(), report.error.is_none())
    })
}

/// Runs a scenario to its (table, JSON line, success) and prints them.
fn block_on(scenario: impl std::future::Future<Output = (String, String, bool)>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("loadgen: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (table, json, ok) = runtime.block_on(scenario);
    eprint!("{table}");
    println!("{json}");
    // Lingering client tasks must not hold the exit up.
    runtime.shutdown_background();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
