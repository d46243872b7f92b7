//! Starts the real `rust_compute` binary for black-box tests.
//!
//! Each test file uses a different subset of these helpers.
#![allow(dead_code)]

pub mod corpus;

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use rust_compute::limits::MESSAGE_MAX_BYTES;
use rust_compute::proto::v1::compute_service_client::ComputeServiceClient;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
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
    "NUELL_COMPUTE_SHUTDOWN_GRACE_SECONDS",
    "NUELL_COMPUTE_LOG_LEVEL",
    "NUELL_COMPUTE_WORKERS",
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

/// A running server process, killed if the test ends without stopping it.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// Collects stderr while the process runs, so a chatty log level can
    /// never fill the pipe and stall the server.
    stderr: tokio::task::JoinHandle<String>,
}

impl Server {
    /// Starts the binary on 127.0.0.1:0 with `extra_args` and waits for its
    /// `listening on` line.
    pub async fn start(extra_args: &[&str]) -> Self {
        let mut child = command()
            .args(["--addr", "127.0.0.1:0"])
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
        let stderr = tokio::spawn(collect(child.stderr.take().expect("stderr is piped")));
        Server {
            child,
            addr,
            stderr,
        }
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
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
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
    pub async fn wait(mut self, deadline: Duration) -> (ExitStatus, String) {
        let status = tokio::time::timeout(deadline, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("rust_compute did not exit within {deadline:?}"))
            .expect("wait for rust_compute");
        let stderr = self.stderr.await.expect("stderr collector");
        (status, stderr)
    }
}

async fn collect(mut pipe: ChildStderr) -> String {
    let mut text = String::new();
    // A read error only loses log text, which the assertions then report.
    let _ = pipe.read_to_string(&mut text).await;
    text
}
