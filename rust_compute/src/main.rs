//! The `rust_compute` binary. Everything but process plumbing lives in the
//! library; see its crate documentation for the layout.
//!
//! Exit codes: 0 after a clean shutdown (or `--help`), 2 for invalid
//! configuration, 1 when the server cannot start or fails. Every failure is
//! one line on stderr, never a panic or a backtrace.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rust_compute::config::{self, Config};
use rust_compute::{logging, server};

/// How long to wait for leftover runtime work once the server has returned;
/// the grace period has already been spent by then.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(error) => return usage_error(&error),
    };
    if let Err(error) = logging::init(&config.log_level) {
        eprintln!("rust_compute: cannot start logging: {error}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rust_compute: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };

    let result = runtime.block_on(server::run(&config));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rust_compute: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `--help`/`--version` as clap renders them, and any real error as
/// the single line [`config::usage_error_line`] makes of it.
fn usage_error(error: &clap::Error) -> ExitCode {
    if !error.use_stderr() {
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    eprintln!("rust_compute: {}", config::usage_error_line(error));
    ExitCode::from(2)
}
