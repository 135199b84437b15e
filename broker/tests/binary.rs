//! The `broker` binary as an operator runs it: `--help`, flags with env twins, `health`,
//! JSON logs, and a clean exit on SIGTERM and on Ctrl-C (SIGINT).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);
const BINARY: &str = env!("CARGO_BIN_EXE_broker");

fn free_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp://{}", listener.local_addr().unwrap())
}

/// Runs `broker health` until it succeeds.
fn wait_healthy(frontend: &str) {
    let start = Instant::now();
    loop {
        let status = Command::new(BINARY)
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
    let output = Command::new(BINARY).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "Round-robin",
        "BROKER_FRONTEND",
        "BROKER_BACKEND",
        "BROKER_LIVENESS_TIMEOUT",
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
        let child = Command::new(BINARY)
            .env("BROKER_FRONTEND", &frontend)
            .env("BROKER_BACKEND", &backend)
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
    let status = Command::new(BINARY)
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
    let output = Command::new(BINARY)
        .args(["--liveness-timeout", "soon"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let output = Command::new(BINARY)
        .args(["--liveness-timeout", "0s", "--frontend", &free_endpoint()])
        .output()
        .unwrap();
    assert!(!output.status.success(), "a zero timeout is refused");
}
