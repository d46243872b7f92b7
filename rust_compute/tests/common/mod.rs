//! Starts the real `rust_compute` binary for black-box tests.
//!
//! Each test file uses a different subset of these helpers.
#![allow(dead_code)]

pub mod corpus;
pub mod scrape;

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use rust_compute::limits::MESSAGE_MAX_BYTES;
use rust_compute::proto::v1::compute_service_client::ComputeServiceClient;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::watch;
use tonic::transport::Channel;

/// Path of the binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_rust_compute");

/// Prefix of the one stdout line that reports the bound address.
pub const LISTENING_PREFIX: &str = "rust_compute listening on ";

/// Generous bound for start-up, shutdown and single calls on a busy CI box.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Every variable the binary reads: cleared so a developer's shell cannot
/// change what a test sees.
pub const CONFIG_VARS: &[&str] = &[
    "NUELL_COMPUTE_ADDR",
    "NUELL_COMPUTE_METRICS_ADDR",
    "NUELL_COMPUTE_SHUTDOWN_GRACE_SECONDS",
    "NUELL_COMPUTE_LOG_LEVEL",
    "NUELL_COMPUTE_WORKERS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
];

/// A `Command` for the binary with a clean configuration environment.
pub fn command() -> Command {
    let mut command = Command::new(BIN);
    for var in CONFIG_VARS {
        command.env_remove(var);
    }
    command
}

/// A bare HTTP/2 client: no deadline enforcement, no retries.
pub type PlainHttp2 = hyper_util::client::legacy::Client<HttpConnector, tonic::body::Body>;

/// A new [`PlainHttp2`] client.
pub fn plain_http2() -> PlainHttp2 {
    let mut connector = HttpConnector::new();
    // As tonic's own channel does: small requests go out at once instead
    // of waiting on delayed ACKs (about 40 ms each on Linux).
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector)
}

/// A running server process, killed if the test ends without stopping it.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// Collects stderr while the process runs, so a chatty log level can
    /// never fill the pipe and stall the server; readable meanwhile.
    stderr: watch::Receiver<String>,
    stderr_done: tokio::task::JoinHandle<()>,
    /// Whatever the process prints on stdout after its first line.
    stdout_rest: tokio::task::JoinHandle<String>,
}

/// What a stopped server left behind.
pub struct Exited {
    pub status: ExitStatus,
    /// Its JSON log lines.
    pub stderr: String,
    /// Its stdout after the `listening on` line (nothing, by contract).
    pub stdout_rest: String,
}

impl Server {
    /// Starts the binary on 127.0.0.1:0 (metrics on 127.0.0.1:0 too, unless
    /// `extra_args` say otherwise) with `extra_args` and waits for its
    /// `listening on` line.
    pub async fn start(extra_args: &[&str]) -> Self {
        Self::start_with_env(extra_args, &[]).await
    }

    /// [`Server::start`] with `env` added to its environment.
    pub async fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = command();
        command.envs(env.iter().copied());
        command.args(["--addr", "127.0.0.1:0"]);
        if !extra_args.contains(&"--metrics-addr") {
            command.args(["--metrics-addr", "127.0.0.1:0"]);
        }
        let mut child = command
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn rust_compute");

        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("listening line within the deadline")
            .expect("read stdout")
            .expect("stdout has a line before closing");
        let addr = line
            .strip_prefix(LISTENING_PREFIX)
            .unwrap_or_else(|| panic!("unexpected first stdout line: {line:?}"))
            .parse()
            .expect("listening line ends with ip:port");
        let stdout_rest = tokio::spawn(collect(lines.into_inner()));
        let (sender, stderr) = watch::channel(String::new());
        let stderr_done = tokio::spawn(collect_lines(
            child.stderr.take().expect("stderr is piped"),
            sender,
        ));
        Server {
            child,
            addr,
            stderr,
            stderr_done,
            stdout_rest,
        }
    }

    /// The stderr written so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr.borrow().clone()
    }

    /// The first JSON log line whose `message` is `message`, waiting for
    /// it to be written.
    pub async fn log_line(&self, message: &str) -> serde_json::Value {
        self.log_line_where(|line| line["message"] == message).await
    }

    /// The first JSON log line that satisfies `wanted`, waiting for it to
    /// be written.
    pub async fn log_line_where(
        &self,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut stderr = self.stderr.clone();
        let find = |text: &str| {
            text.lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .find(|line| wanted(line))
        };
        let found = tokio::time::timeout(PATIENCE, stderr.wait_for(|text| find(text).is_some()))
            .await
            .unwrap_or_else(|_| panic!("no such log line within {PATIENCE:?}"))
            .expect("stderr collector alive");
        find(&found).expect("just found")
    }

    /// Where the metrics endpoint listens, from the `listening` log line.
    pub async fn metrics_addr(&self) -> SocketAddr {
        self.log_line("listening").await["metrics_addr"]
            .as_str()
            .expect("the listening line names metrics_addr")
            .parse()
            .expect("metrics_addr is ip:port")
    }

    /// A connected channel to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("valid uri")
            .connect_timeout(PATIENCE)
            .connect()
            .await
            .expect("connect to rust_compute")
    }

    /// A compute client that accepts messages as large as the server does.
    pub async fn compute(&self) -> ComputeServiceClient<Channel> {
        ComputeServiceClient::new(self.channel().await)
            .max_decoding_message_size(MESSAGE_MAX_BYTES)
            .max_encoding_message_size(usize::MAX)
    }

    /// A compute client that sends `grpc-timeout` but, unlike tonic's own
    /// client, does not give up at the deadline itself: what it reports
    /// is what the server answered.
    pub fn compute_without_local_deadlines(&self) -> ComputeServiceClient<PlainHttp2> {
        let client = plain_http2();
        let origin = format!("http://{}", self.addr).parse().expect("valid uri");
        ComputeServiceClient::with_origin(client, origin)
            .max_decoding_message_size(MESSAGE_MAX_BYTES)
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) {
        let pid = self.child.id().expect("process still running");
        let pid = i32::try_from(pid).expect("pid fits in i32");
        signal::kill(Pid::from_raw(pid), signal).expect("send signal");
    }

    /// Waits for the process to exit and returns its status and the stderr
    /// it wrote (its JSON log lines).
    pub async fn wait(self, deadline: Duration) -> (ExitStatus, String) {
        let exited = self.wait_all(deadline).await;
        (exited.status, exited.stderr)
    }

    /// Waits for the process to exit and returns everything it left.
    pub async fn wait_all(mut self, deadline: Duration) -> Exited {
        let status = tokio::time::timeout(deadline, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("rust_compute did not exit within {deadline:?}"))
            .expect("wait for rust_compute");
        self.stderr_done.await.expect("stderr collector");
        let stderr = self.stderr.borrow().clone();
        let stdout_rest = self.stdout_rest.await.expect("stdout collector");
        Exited {
            status,
            stderr,
            stdout_rest,
        }
    }
}

async fn collect(mut pipe: impl AsyncRead + Unpin) -> String {
    let mut text = String::new();
    // A read error only loses output, which the assertions then report.
    let _ = pipe.read_to_string(&mut text).await;
    text
}

async fn collect_lines(pipe: ChildStderr, text: watch::Sender<String>) {
    let mut lines = BufReader::new(pipe).lines();
    // A read error only loses log text, which the assertions then report.
    while let Ok(Some(line)) = lines.next_line().await {
        text.send_modify(|text| {
            text.push_str(&line);
            text.push('\n');
        });
    }
}
