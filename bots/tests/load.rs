//! `bots load`, `bots check` and `bots chat` against the fake cluster (one real
//! `store::Store` behind a ROUTER, with lost requests, lost and delayed replies,
//! refusals and swallowed requests).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bots::chat::{ChatConfig, Say, run_chat};
use bots::load::{LoadConfig, run_load};
use client::CallOptions;
use client::fake::{FakeCluster, FakeConfig};
use lincheck::{Outcome, Output, Verdict};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(60);

fn temp_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}.jsonl", std::process::id()))
}

fn faulty() -> FakeConfig {
    FakeConfig {
        drop_request_percent: 3,
        drop_reply_percent: 3,
        unavailable_percent: 3,
        swallow_percent: 1,
        max_reply_delay: Duration::from_millis(3),
        seed: 11,
        ..FakeConfig::default()
    }
}

fn load_config(fake: &FakeCluster, history: Option<PathBuf>) -> LoadConfig {
    LoadConfig {
        broker: fake.frontend_endpoint().to_owned(),
        clients: 16,
        connections: 2,
        duration: Some(Duration::from_secs(2)),
        mix: "put=35,get=35,cas=15,delete=5,publish=10".parse().unwrap(),
        // Few keys: many operations per key, so the check has something to chew on.
        keys: 20,
        key_prefix: bots::load::key_prefix_for(None, history.is_some()),
        value_size: 32,
        history,
        rate: None,
        options: CallOptions {
            attempt_timeout: Duration::from_millis(40),
            timeout: Duration::from_millis(250),
        },
        progress: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_run_records_a_linearizable_history() {
    let fake = FakeCluster::start(faulty()).await.unwrap();
    let path = temp_path("faulty-history");
    let report = run_load(
        load_config(&fake, Some(path.clone())),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let stats = fake.stats();
    fake.stop().await;

    assert!(report.ops > 500, "{}", report.table());
    assert!(report.retried > 0, "{}", report.table());
    assert!(
        report.unknown > 0,
        "swallowed requests must end unknown: {}",
        report.table()
    );
    assert!(
        report.cas_mismatch + report.not_found > 0,
        "{}",
        report.table()
    );
    assert!(
        stats.swallowed > 0 && stats.dropped_replies > 0,
        "{stats:?}"
    );
    let (history_path, recorded) = report.history.clone().unwrap();
    assert_eq!(history_path, path);

    let file = std::fs::File::open(&path).unwrap();
    let ops = lincheck::parse_history(std::io::BufReader::new(file)).unwrap();
    assert_eq!(ops.len() as u64, recorded);
    let publishes = report.by_op.get("publish").copied().unwrap_or(0);
    assert!(
        recorded >= report.ops - publishes,
        "every answered key op is recorded"
    );
    assert!(ops.iter().any(|op| op.outcome == Outcome::Unknown));
    assert!(
        ops.iter()
            .all(|op| op.outcome != Outcome::Unknown || op.return_.is_none())
    );
    assert!(ops.iter().any(|op| op.output == Some(Output::Bool(false))));
    // Written values are unique.
    let mut values: Vec<&String> = ops.iter().filter_map(|op| op.value.as_ref()).collect();
    let written = values.len();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), written);

    let verdict = lincheck::check(&ops, &lincheck::CheckOptions::default());
    assert_eq!(verdict, Verdict::Linearizable);

    // The same file through the binary.
    let output = Command::new(env!("CARGO_BIN_EXE_bots"))
        .args(["check", path.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("LINEARIZABLE"), "{stdout}");

    // The check has teeth: make one read see a value nobody wrote.
    let mut tampered = ops.clone();
    let read = tampered
        .iter_mut()
        .find(|op| op.outcome == Outcome::Ok && matches!(op.output, Some(Output::Value(Some(_)))))
        .unwrap();
    read.output = Some(Output::Value(Some("never-written".into())));
    let key = read.key.clone();
    match lincheck::check(&tampered, &lincheck::CheckOptions::default()) {
        Verdict::NotLinearizable(violation) => assert_eq!(violation.key, key),
        other => panic!("tampered history judged {other:?}"),
    }
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_run_is_not_polluted_by_earlier_load() {
    // A steady unrecorded load (like on.sh's bot) fills the default keys first; a
    // history taken afterwards must not start from those values.
    let fake = FakeCluster::start(FakeConfig::default()).await.unwrap();
    let mut steady = load_config(&fake, None);
    steady.duration = Some(Duration::from_millis(500));
    steady.mix = "put=1".parse().unwrap();
    let report = run_load(steady, CancellationToken::new()).await.unwrap();
    assert_eq!(report.key_prefix, bots::load::KEY_PREFIX);
    assert!(report.ops > 0);

    let path = temp_path("after-steady-history");
    let mut recorded = load_config(&fake, Some(path.clone()));
    recorded.duration = Some(Duration::from_millis(500));
    let report = run_load(recorded, CancellationToken::new()).await.unwrap();
    assert!(
        report.key_prefix.starts_with("run-"),
        "{}",
        report.key_prefix
    );
    let ops = lincheck::parse_history(std::io::BufReader::new(std::fs::File::open(&path).unwrap()))
        .unwrap();
    assert!(ops.iter().all(|op| op.key.starts_with(&report.key_prefix)));
    assert_eq!(
        lincheck::check(&ops, &lincheck::CheckOptions::default()),
        Verdict::Linearizable
    );
    std::fs::remove_file(&path).unwrap();
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_the_documented_json() {
    let fake = FakeCluster::start(FakeConfig::default()).await.unwrap();
    let output = tokio::time::timeout(
        DEADLINE,
        Command::new(env!("CARGO_BIN_EXE_bots"))
            .args([
                "--broker",
                fake.frontend_endpoint(),
                "load",
                "--clients",
                "4",
                "--duration",
                "1s",
                "--keys",
                "10",
                "--value-size",
                "16",
                "--json",
            ])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for field in ["ops", "errors", "unknown"] {
        assert!(doc[field].is_u64(), "{field} in {doc}");
    }
    for field in ["ops_per_sec", "p50_ms", "p99_ms", "p999_ms"] {
        assert!(doc[field].is_f64(), "{field} in {doc}");
    }
    assert!(doc["ops"].as_u64().unwrap() > 0);
    assert_eq!(doc["errors"], 0);
    assert!(doc["p50_ms"].as_f64().unwrap() <= doc["p999_ms"].as_f64().unwrap());
    // Progress goes to stderr (not a terminal here: one line per 10 s, so maybe none).
    assert!(!stdout.contains("ops/s "), "{stdout}");
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_with_a_complete_history() {
    let fake = FakeCluster::start(FakeConfig {
        max_reply_delay: Duration::from_millis(2),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let path = temp_path("sigterm-history");
    let child = Command::new(env!("CARGO_BIN_EXE_bots"))
        .args([
            "--broker",
            fake.frontend_endpoint(),
            "load",
            "--clients",
            "8",
            "--keys",
            "10",
            "--history",
            path.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // No --duration: it runs until signalled. Wait until it has done real work.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while fake.stats().replies < 200 {
        assert!(tokio::time::Instant::now() < deadline, "no load arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("p99.9 latency"), "{stdout}");
    assert!(stdout.contains("history"), "{stdout}");
    let verdict = lincheck::check_file(&path).unwrap();
    assert_eq!(verdict, Verdict::Linearizable);
    let ops = lincheck::parse_history(std::io::BufReader::new(std::fs::File::open(&path).unwrap()))
        .unwrap();
    assert!(ops.len() >= 100, "{}", ops.len());
    fake.stop().await;
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_bots_post_and_see_live_deliveries() {
    let fake = FakeCluster::start(FakeConfig::default()).await.unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let shutdown = CancellationToken::new();
    let say: Say = {
        let lines = lines.clone();
        let shutdown = shutdown.clone();
        Arc::new(move |line: String| {
            let mut lines = lines.lock().unwrap();
            lines.push(line);
            let delivered = lines.iter().filter(|l| l.starts_with("  << ")).count();
            let dms = lines.iter().filter(|l| l.contains(" -> @")).count();
            if delivered >= 5 && dms >= 1 {
                shutdown.cancel();
            }
        })
    };
    let config = ChatConfig {
        broker: fake.frontend_endpoint().to_owned(),
        proxy: fake.publisher_endpoint().to_owned(),
        bots: 3,
        rate: "20/s".parse().unwrap(),
        channels: 2,
        duration: Some(DEADLINE),
        options: CallOptions::default(),
    };
    let report = tokio::time::timeout(DEADLINE * 2, run_chat(config, say, shutdown.clone()))
        .await
        .unwrap()
        .unwrap();
    assert!(
        shutdown.is_cancelled(),
        "stopped by the deadline, not by deliveries: {report}"
    );
    let joined = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("logged in and joined #"))
        .count();
    assert_eq!(joined, 3);
    assert!(report.posts > 0 && report.private_messages > 0, "{report}");
    assert_eq!(report.errors, 0, "{report}");
    assert!(report.delivered >= 5, "{report}");
    let store = fake.store();
    assert_eq!(store.stats().users, 3);
    assert_eq!(store.stats().channels, 2);
    fake.stop().await;
}
