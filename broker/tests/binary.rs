//! The `broker` binary as an operator runs it: `--help`, flags with env twins, `health`,
//! JSON logs, and a clean exit on SIGTERM and on Ctrl-C (SIGINT).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);
const BINARY: &str = env!("CARGO_BIN_EXE_broker");

/// A cluster key file for the tests' brokers (written once per test process).
fn key_file() -> &'static std::path::Path {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("broker-test-{}.key", std::process::id()));
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        path
    })
}

/// The broker binary, with the cluster key in its environment.
fn broker() -> Command {
    let mut command = Command::new(BINARY);
    command.env("CLUSTER_KEY_FILE", key_file());
    command
}

fn free_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp://{}", listener.local_addr().unwrap())
}

/// Runs `broker health` until it succeeds.
fn wait_healthy(frontend: &str) {
    let start = Instant::now();
    loop {
        let status = broker()
            .args(["health", "--frontend", frontend, "--timeout", "500ms"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        if status.success() {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the broker never became healthy"
        );
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(mut child: Child) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < DEADLINE, "the broker did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn help_explains_the_flags_and_their_env_twins() {
    let output = broker().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "Round-robin",
        "BROKER_FRONTEND",
        "BROKER_BACKEND",
        "BROKER_LIVENESS_TIMEOUT",
        "BROKER_STATUS_ADDR",
        "BROKER_NAME",
        "LOG_FORMAT",
        "health",
    ] {
        assert!(help.contains(expected), "--help lacks {expected}:\n{help}");
    }
}

#[test]
fn runs_from_env_answers_health_and_stops_cleanly_on_sigterm_and_sigint() {
    for signal_name in ["TERM", "INT"] {
        let (frontend, backend) = (free_endpoint(), free_endpoint());
        let child = broker()
            .env("BROKER_FRONTEND", &frontend)
            .env("BROKER_BACKEND", &backend)
            .env("BROKER_STATUS_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_healthy(&frontend);
        signal(&child, signal_name);
        let output = wait_exit(child);
        let logs = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{signal_name}: {:?}\n{logs}",
            output.status
        );
        // JSON logs: one object per line.
        assert!(
            logs.lines().all(|line| line.starts_with('{')),
            "not JSON logs:\n{logs}"
        );
        assert!(logs.contains("broker stopped"), "{logs}");
    }
}

#[test]
fn health_fails_when_no_broker_answers() {
    let status = broker()
        .args([
            "health",
            "--frontend",
            &free_endpoint(),
            "--timeout",
            "200ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
}

#[test]
fn a_bad_flag_is_refused() {
    let output = broker()
        .args(["--liveness-timeout", "soon"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let output = broker()
        .args(["--liveness-timeout", "0s", "--frontend", &free_endpoint()])
        .output()
        .unwrap();
    assert!(!output.status.success(), "a zero timeout is refused");
    let output = broker()
        .args(["--status-addr", "localhost:http"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "a status address is ip:port");
}

#[test]
fn a_taken_status_port_stops_the_broker_with_an_error_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = broker()
        .args([
            "--frontend",
            &free_endpoint(),
            "--backend",
            &free_endpoint(),
        ])
        .args(["--status-addr", &addr])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(
        logs.contains(&format!("cannot bind the status port {addr}")),
        "{logs}"
    );
}

#[test]
fn the_status_port_answers_with_the_name() {
    let (frontend, backend) = (free_endpoint(), free_endpoint());
    let status = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = status.local_addr().unwrap();
    drop(status);
    let child = broker()
        .args(["--frontend", &frontend, "--backend", &backend])
        .args(["--status-addr", &addr.to_string(), "--name", "broker-2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_healthy(&frontend);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (code, body) = runtime
        .block_on(service::http::get(addr, "/status", DEADLINE))
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let report: proto::report::BrokerReport = serde_json::from_str(&body).unwrap();
    assert_eq!(report.name, "broker-2");
    assert_eq!(report.frontend, frontend);
    let (code, _) = runtime
        .block_on(service::http::get(addr, "/readyz", DEADLINE))
        .unwrap();
    assert_eq!(code, 503, "no node: not ready");
    signal(&child, "TERM");
    let output = wait_exit(child);
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{logs}");
    assert!(
        logs.contains("broker-2"),
        "the name is in the logs:\n{logs}"
    );
}

#[test]
fn without_the_cluster_key_the_broker_says_so_and_stops() {
    let output = Command::new(BINARY)
        .args([
            "--frontend",
            &free_endpoint(),
            "--backend",
            &free_endpoint(),
        ])
        .args(["--status-addr", "127.0.0.1:0"])
        .env_remove("CLUSTER_KEY_FILE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("no cluster key: give --key-file"), "{logs}");
    let missing = std::env::temp_dir().join("no-such-broker.key");
    let output = Command::new(BINARY)
        .args([
            "--frontend",
            &free_endpoint(),
            "--backend",
            &free_endpoint(),
        ])
        .args(["--status-addr", "127.0.0.1:0"])
        .env("CLUSTER_KEY_FILE", &missing)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("does not exist"), "{logs}");
}
