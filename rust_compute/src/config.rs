//! Process configuration: command-line flags, each with an environment
//! variable fallback so the stack runner, compose and Kubernetes can set it
//! without rewriting the command line. Flags win over the environment.
//!
//! Every value is checked here, once, at start-up: a bad value stops the
//! process with one clear line instead of surfacing later as odd behaviour.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Most worker threads accepted. Far beyond any machine this runs on; a
/// bigger value is a typo, and each thread costs memory.
const MAX_WORKERS: u64 = 1024;

/// Longest accepted grace period. Orchestrators kill a pod that takes longer
/// anyway (Kubernetes' default is 30 s); an hour-long value is a typo.
const MAX_GRACE_SECONDS: u64 = 3600;

/// The standard OpenTelemetry variables this service reads (see `trace_export`).
const TRACE_EXPORT_HELP: &str = "\
Trace export (OpenTelemetry, off unless an endpoint is set):
  OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
      http://HOST:PORT of an OTLP/gRPC collector; one SERVER span per call
  OTEL_SDK_DISABLED=true     export nothing even with an endpoint
  OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
      the span's resource (service.name defaults to rust_compute)";

/// Settings of one `rust_compute` process.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "rust_compute",
    version,
    about = "Nuell's text analytics gRPC service (nuell.compute.v1.ComputeService)",
    after_help = TRACE_EXPORT_HELP
)]
pub struct Config {
    /// Address to listen on, as IP:port.
    ///
    /// Loopback by default because only py_gateway calls this service; it
    /// is never exposed at the edge. Port 0 asks the OS for a free port; the
    /// bound address is printed on stdout as `rust_compute listening on
    /// <ip:port>` so tests and the stack runner can find it.
    #[arg(long, env = "NUELL_COMPUTE_ADDR", default_value = "127.0.0.1:50052")]
    pub addr: SocketAddr,

    /// Address of the Prometheus metrics endpoint (`GET /metrics`, plain
    /// HTTP), as IP:port.
    ///
    /// Loopback by default, like the gRPC port: a scraper on the host or in
    /// the pod reads it. Port 0 asks the OS for a free port; the bound
    /// address is logged as `metrics_addr` on the `listening` log line
    /// (stdout keeps its single line).
    #[arg(
        long,
        env = "NUELL_COMPUTE_METRICS_ADDR",
        default_value = "127.0.0.1:9465"
    )]
    pub metrics_addr: SocketAddr,

    /// Seconds to let in-flight calls finish after SIGTERM or SIGINT.
    ///
    /// Health reports NOT_SERVING first so balancers stop sending work; calls
    /// still running when the grace period ends are cut off so a stuck
    /// stream cannot delay a deploy forever.
    #[arg(
        long,
        env = "NUELL_COMPUTE_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(0..=MAX_GRACE_SECONDS)
    )]
    pub shutdown_grace_seconds: u64,

    /// Log filter in `RUST_LOG` syntax, e.g. `info` or `info,rust_compute=debug`.
    ///
    /// Logs are JSON lines on stderr, so stdout carries only the
    /// `listening on` line that tools parse.
    #[arg(
        long,
        env = "NUELL_COMPUTE_LOG_LEVEL",
        default_value = "info",
        value_parser = parse_log_filter
    )]
    pub log_level: String,

    /// Threads that run the text analytics [default: available parallelism].
    ///
    /// All CPU work runs on this dedicated pool, never on the async
    /// threads that serve connections and health checks, so a heavy batch
    /// slows other calls down but cannot stall the server. One thread per
    /// core uses the machine fully; fewer leaves room for neighbours.
    #[arg(
        long,
        env = "NUELL_COMPUTE_WORKERS",
        value_parser = clap::value_parser!(u64).range(1..=MAX_WORKERS)
    )]
    pub workers: Option<u64>,
}

impl Config {
    /// Size of the worker pool: `--workers`, else one thread per core the
    /// process may use.
    pub fn workers(&self) -> usize {
        match self.workers {
            Some(workers) => usize::try_from(workers).unwrap_or(usize::MAX),
            None => std::thread::available_parallelism().map_or(1, usize::from),
        }
    }

    /// The grace period as a [`Duration`].
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

/// Accepts the filter only if `tracing_subscriber` can parse it, so a typo
/// such as `info,foo=loud` is rejected at start-up rather than ignored.
fn parse_log_filter(value: &str) -> Result<String, String> {
    EnvFilter::builder()
        .parse(value)
        .map(|_| value.to_owned())
        .map_err(|error| error.to_string())
}

/// Turns a command-line error into one line: clap's own first line, without
/// its usage block, naming the environment variable when that is where the
/// bad value came from (clap's message names only the flag).
pub fn usage_error_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let first = rendered
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match env_source(error) {
        Some(var) => format!("{first} (value taken from {var}; see --help)"),
        None => format!("{first} (see --help)"),
    }
}

/// The environment variable that supplied the rejected value, if the flag
/// itself was not on the command line.
fn env_source(error: &clap::Error) -> Option<String> {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue};

    let Some(ContextValue::String(invalid)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let command = Config::command();
    let arg = command.get_arguments().find(|arg| {
        arg.get_long()
            .is_some_and(|long| invalid.starts_with(&format!("--{long} ")))
    })?;
    let flag = format!("--{}", arg.get_long()?);
    let flag_given = std::env::args_os().any(|given| {
        given.to_str().is_some_and(|given| {
            given == flag
                || given
                    .strip_prefix(&flag)
                    .is_some_and(|rest| rest.starts_with('='))
        })
    });
    let var = arg.get_env()?.to_string_lossy().into_owned();
    (!flag_given && std::env::var_os(&var).is_some()).then_some(var)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("rust_compute").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        use clap::CommandFactory;
        Config::command().debug_assert();
    }

    #[test]
    fn flags_override_defaults() {
        let config = parse(&[
            "--addr",
            "0.0.0.0:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--shutdown-grace-seconds",
            "3",
            "--log-level",
            "debug,h2=info",
            "--workers",
            "3",
        ])
        .expect("valid flags");
        assert_eq!(config.workers(), 3);
        assert_eq!(config.addr, "0.0.0.0:0".parse().expect("addr"));
        assert_eq!(config.metrics_addr, "127.0.0.1:0".parse().expect("addr"));
        assert_eq!(config.shutdown_grace(), Duration::from_secs(3));
        assert_eq!(config.log_level, "debug,h2=info");
    }

    #[test]
    fn workers_default_to_the_available_cores() {
        if std::env::var_os("NUELL_COMPUTE_WORKERS").is_some() {
            return; // the environment chose; nothing default to check
        }
        let config = parse(&[]).expect("no flags");
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(config.workers(), cores);
    }

    #[test]
    fn usage_errors_become_one_line() {
        let error = parse(&["--addr", "nope"]).expect_err("invalid address");
        let line = usage_error_line(&error);
        assert!(!line.contains('\n'), "{line:?}");
        assert!(
            line.contains("'nope'") && line.contains("--addr"),
            "{line:?}"
        );
    }

    #[test]
    fn rejects_bad_values() {
        for args in [
            &["--addr", "localhost"][..],
            &["--addr", "127.0.0.1:99999"],
            &["--metrics-addr", "localhost:9465"],
            &["--metrics-addr", ":9465"],
            &["--shutdown-grace-seconds", "-1"],
            &["--shutdown-grace-seconds", "3601"],
            &["--log-level", "info,foo=loud"],
            &["--workers", "0"],
            &["--workers", "1025"],
            &["--workers", "many"],
        ] {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
    }
}
