//! loadgen: runs one scenario against an MQTT broker; a table on stderr, one JSON line
//! on stdout. `loadgen --help` lists the scenarios and their defaults.

use std::process::ExitCode;

use clap::Parser;
use raftmq_benches::{run, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    let report = runtime.block_on(run(&cli));
    eprint!("{}", report.table());
    println!("{}", report.json());
    // Lingering client tasks must not hold the exit up.
    runtime.shutdown_background();
    if report.error.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
