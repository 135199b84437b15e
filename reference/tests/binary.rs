//! The `reference` binary as an operator runs it: `--help`, flags with env twins,
//! `health`, a clean exit on SIGTERM and on Ctrl-C (SIGINT), and a clear failure on a
//! corrupt registry file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);
const BINARY: &str = env!("CARGO_BIN_EXE_reference");

/// A cluster key file for the tests' references (written once per test process).
fn key_file() -> &'static std::path::Path {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("reference-test-{}.key", std::process::id()));
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        path
    })
}

/// The reference binary, with the cluster key in its environment.
fn reference() -> Command {
    let mut command = Command::new(BINARY);
    command.env("CLUSTER_KEY_FILE", key_file());
    command
}

fn free_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp://{}", listener.local_addr().unwrap())
}

fn temp_dir(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "reference-bin-{name}-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&path).unwrap();
    path
}

fn health(endpoint: &str, timeout: &str) -> bool {
    // `--reference` is the alias the docker healthcheck uses.
    reference()
        .args(["health", "--reference", endpoint, "--timeout", timeout])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn wait_exit(mut child: Child) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < DEADLINE, "the reference did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn help_explains_the_flags_and_their_env_twins() {
    let output = reference().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "rank",
        "REFERENCE_BIND",
        "PROXY_FRONTEND",
        "REFERENCE_DATA_DIR",
        "REFERENCE_EXPIRY_TIMEOUT",
        "REFERENCE_PUBLISH_INTERVAL",
        "REFERENCE_STATUS_ADDR",
        "LOG_FORMAT",
        "health",
    ] {
        assert!(help.contains(expected), "--help lacks {expected}:\n{help}");
    }
}

#[test]
fn runs_from_env_answers_health_and_stops_cleanly_on_sigterm_and_sigint() {
    for signal in ["TERM", "INT"] {
        let data = temp_dir("run");
        let endpoint = free_endpoint();
        let child = reference()
            .env("REFERENCE_BIND", &endpoint)
            // No proxy there: the events are dropped, the service runs all the same.
            .env("PROXY_FRONTEND", free_endpoint())
            .env("REFERENCE_DATA_DIR", &data)
            .env("REFERENCE_STATUS_ADDR", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !health(&endpoint, "500ms") {
            assert!(
                start.elapsed() < DEADLINE,
                "the reference never became healthy"
            );
        }
        let killed = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let output = wait_exit(child);
        let logs = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{signal}: {:?}\n{logs}",
            output.status
        );
        assert!(logs.contains("reference stopped"), "{logs}");
        std::fs::remove_dir_all(data).unwrap();
    }
}

#[test]
fn a_corrupt_registry_file_stops_it_with_an_error_naming_the_file() {
    let data = temp_dir("corrupt");
    let file = data.join(reference::store::FILE_NAME);
    std::fs::write(&file, b"not json at all").unwrap();
    let child = reference()
        .args(["--endpoint", &free_endpoint(), "--proxy", &free_endpoint()])
        .args(["--status-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_exit(child);
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{logs}");
    assert!(logs.contains(&file.display().to_string()), "{logs}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"not json at all",
        "the damaged file is left for the operator"
    );
    std::fs::remove_dir_all(data).unwrap();
}

#[test]
fn health_fails_when_no_reference_runs() {
    assert!(!health(&free_endpoint(), "200ms"));
}

#[test]
fn a_taken_status_port_stops_it_with_an_error_naming_it() {
    let data = temp_dir("taken");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = reference()
        .args(["--endpoint", &free_endpoint(), "--proxy", &free_endpoint()])
        .args(["--status-addr", &addr])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(
        logs.contains(&format!("cannot bind the status port {addr}")),
        "{logs}"
    );
    std::fs::remove_dir_all(data).unwrap();
}
