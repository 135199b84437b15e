//! The `proxy` binary as an operator runs it: `--help`, flags with env twins, `health`,
//! and a clean exit on SIGTERM and on Ctrl-C (SIGINT).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);
const BINARY: &str = env!("CARGO_BIN_EXE_proxy");

fn free_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp://{}", listener.local_addr().unwrap())
}

fn health(frontend: &str, backend: &str, timeout: &str) -> bool {
    Command::new(BINARY)
        .args([
            "health",
            "--frontend",
            frontend,
            "--backend",
            backend,
            "--timeout",
            timeout,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Collects the child's stderr as it comes.
fn collect_logs(child: &mut Child) -> Arc<Mutex<String>> {
    let logs = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut logs = sink.lock().unwrap();
            logs.push_str(&line);
            logs.push('\n');
        }
    });
    logs
}

fn wait_for_log(logs: &Mutex<String>, text: &str) {
    let start = Instant::now();
    while !logs.lock().unwrap().contains(text) {
        assert!(start.elapsed() < DEADLINE, "never logged {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(mut child: Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < DEADLINE, "the proxy did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn help_explains_the_flags_and_their_env_twins() {
    let output = Command::new(BINARY).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "XSUB/XPUB",
        "PROXY_FRONTEND",
        "PROXY_BACKEND",
        "PROXY_STATS_INTERVAL",
        "PROXY_STATUS_ADDR",
        "PROXY_NAME",
        "LOG_FORMAT",
        "health",
    ] {
        assert!(help.contains(expected), "--help lacks {expected}:\n{help}");
    }
}

#[test]
fn runs_from_env_answers_health_and_stops_cleanly_on_sigterm_and_sigint() {
    for signal in ["TERM", "INT"] {
        let (frontend, backend) = (free_endpoint(), free_endpoint());
        let mut child = Command::new(BINARY)
            .env("PROXY_FRONTEND", &frontend)
            .env("PROXY_BACKEND", &backend)
            .env("PROXY_STATS_INTERVAL", "100ms")
            .env("PROXY_STATUS_ADDR", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = collect_logs(&mut child);
        let start = Instant::now();
        while !health(&frontend, &backend, "1s") {
            assert!(start.elapsed() < DEADLINE, "the proxy never became healthy");
        }
        wait_for_log(&logs, "proxy counters");
        let killed = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = wait_exit(child);
        assert!(
            status.success(),
            "{signal}: {status:?}\n{}",
            logs.lock().unwrap()
        );
        wait_for_log(&logs, "proxy stopped");
    }
}

#[test]
fn health_fails_when_no_proxy_runs() {
    assert!(!health(&free_endpoint(), &free_endpoint(), "300ms"));
}

#[test]
fn a_taken_status_port_stops_the_proxy_with_an_error_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = Command::new(BINARY)
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
fn the_name_is_in_the_logs() {
    let (frontend, backend) = (free_endpoint(), free_endpoint());
    let mut child = Command::new(BINARY)
        .args(["--frontend", &frontend, "--backend", &backend])
        .args(["--status-addr", "127.0.0.1:0", "--name", "proxy-2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = collect_logs(&mut child);
    wait_for_log(&logs, "proxy running");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(wait_exit(child).success());
    wait_for_log(&logs, "proxy stopped");
    assert!(logs.lock().unwrap().contains("proxy-2"));
}
