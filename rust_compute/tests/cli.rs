//! Start-up failures: a bad setting or a busy port ends the process with one
//! clear line on stderr and a non-zero exit, never a panic or backtrace.

mod common;

use std::net::TcpListener;
use std::process::Output;

use common::command;

async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = command();
    command.args(args).envs(env.iter().copied());
    tokio::time::timeout(common::PATIENCE, command.output())
        .await
        .expect("rust_compute exits on its own")
        .expect("run rust_compute")
}

/// The stderr of a failed start, checked to be exactly one line.
fn single_stderr_line(output: &Output) -> String {
    assert!(
        output.stdout.is_empty(),
        "stdout: {:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8(output.stderr.clone()).expect("utf-8 stderr");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one line, got {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr:?}");
    lines[0].to_owned()
}

#[tokio::test]
async fn invalid_flag_values_exit_2_with_one_line() {
    for (args, mentions) in [
        (&["--addr", "not-an-address"][..], "not-an-address"),
        (&["--addr", "127.0.0.1:70000"], "127.0.0.1:70000"),
        (&["--metrics-addr", "nowhere"], "nowhere"),
        (
            &["--shutdown-grace-seconds", "soon"],
            "--shutdown-grace-seconds",
        ),
        (&["--shutdown-grace-seconds", "86400"], "86400"),
        (&["--log-level", "info,h2=loud"], "--log-level"),
        (&["--no-such-flag"], "--no-such-flag"),
    ] {
        let output = run(args, &[]).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let line = single_stderr_line(&output);
        assert!(line.starts_with("rust_compute: "), "{args:?}: {line}");
        assert!(line.contains(mentions), "{args:?}: {line}");
    }
}

#[tokio::test]
async fn invalid_environment_value_names_the_variable() {
    let output = run(&[], &[("NUELL_COMPUTE_SHUTDOWN_GRACE_SECONDS", "ten")]).await;
    assert_eq!(output.status.code(), Some(2));
    let line = single_stderr_line(&output);
    assert!(line.contains("'ten'"), "{line}");
    assert!(
        line.contains("NUELL_COMPUTE_SHUTDOWN_GRACE_SECONDS"),
        "{line}"
    );
}

#[tokio::test]
async fn busy_port_exits_1_naming_the_address() {
    let holder = TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let busy = holder.local_addr().expect("held address").to_string();

    let output = run(&["--addr", &busy], &[]).await;
    assert_eq!(output.status.code(), Some(1));
    let line = single_stderr_line(&output);
    assert!(line.contains(&busy), "{line}");
    assert!(line.contains("already in use"), "{line}");
    assert!(line.contains("--addr"), "says how to pick another: {line}");
}

#[tokio::test]
async fn busy_metrics_port_exits_1_naming_the_address() {
    let holder = TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let busy = holder.local_addr().expect("held address").to_string();

    let output = run(&["--addr", "127.0.0.1:0", "--metrics-addr", &busy], &[]).await;
    assert_eq!(output.status.code(), Some(1));
    let line = single_stderr_line(&output);
    assert!(line.starts_with("rust_compute: metrics address "), "{line}");
    assert!(line.contains(&busy), "{line}");
    assert!(line.contains("already in use"), "{line}");
    assert!(
        line.contains("--metrics-addr"),
        "says how to pick another: {line}"
    );

    // The same from the environment.
    let output = run(
        &["--addr", "127.0.0.1:0"],
        &[("NUELL_COMPUTE_METRICS_ADDR", &busy)],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(single_stderr_line(&output).contains(&busy));
}

#[tokio::test]
async fn help_exits_0_and_documents_the_environment() {
    let output = run(&["--help"], &[]).await;
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8(output.stdout).expect("utf-8 help");
    for var in common::CONFIG_VARS {
        assert!(help.contains(var), "--help lacks {var}");
    }
}
