//! The `client` binary against the fake cluster: one-shot commands, exit codes, JSON
//! output, `status`, `health`, `watch` and the interactive menu (from a pipe).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::process::Stdio;
use std::time::Duration;

use client::fake::{FakeCluster, FakeConfig};
use client::{CallOptions, Connection};
use proto::{Consistency, Op};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// How long a test waits for something that should happen at once.
const DEADLINE: Duration = Duration::from_secs(20);

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn client(fake: &FakeCluster) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_client"));
    command
        .env_clear()
        .env("BROKER", fake.frontend_endpoint())
        .env("PROXY_BACKEND", fake.publisher_endpoint())
        .env("NODES", fake.status_addrs().join(","))
        .env("CLIENT_TIMEOUT", "5s")
        .env("CLIENT_ATTEMPT_TIMEOUT", "200ms")
        .kill_on_drop(true);
    command
}

async fn run(fake: &FakeCluster, args: &[&str]) -> Output {
    let output = tokio::time::timeout(DEADLINE, client(fake).args(args).output())
        .await
        .expect("client did not finish")
        .unwrap();
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

async fn fake() -> FakeCluster {
    FakeCluster::start(FakeConfig::default()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_value_commands_and_exit_codes() {
    let fake = fake().await;

    let out = run(&fake, &["put", "greeting", "hello"]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "OK\n"),
        "{}",
        out.stderr
    );

    let out = run(&fake, &["get", "greeting"]).await;
    assert_eq!((out.code, out.stdout.as_str()), (0, "hello\n"));

    let out = run(&fake, &["get", "greeting", "--local"]).await;
    assert_eq!((out.code, out.stdout.as_str()), (0, "hello\n"));

    let out = run(&fake, &["get", "nothing"]).await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);

    let out = run(&fake, &["cas", "greeting", "bye", "x"]).await;
    assert_eq!(out.code, 3);
    assert!(out.stderr.contains("cas mismatch"), "{}", out.stderr);

    let out = run(&fake, &["cas", "greeting", "hello", "bonjour"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    let out = run(&fake, &["cas", "fresh", "--absent", "new"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run(&fake, &["cas", "fresh", "--absent", "newer"]).await;
    assert_eq!(out.code, 3);

    let out = run(&fake, &["del", "greeting"]).await;
    assert_eq!(out.code, 0);
    let out = run(&fake, &["get", "greeting"]).await;
    assert_eq!(out.code, 2);

    // A usage error is clap's exit code 2 with help on stderr; a bad request is 1.
    let out = run(&fake, &["cas", "k"]).await;
    assert_eq!(out.code, 2);
    let out = run(&fake, &["get", ""]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("key is empty"), "{}", out.stderr);

    // JSON output, errors included, on stdout.
    let out = run(&fake, &["-o", "json", "get", "fresh"]).await;
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["value"], "new");
    assert_eq!(doc["ok"], true);
    assert!(doc["node"].as_str().unwrap().starts_with("node-"));
    let out = run(&fake, &["get", "missing", "-o", "json"]).await;
    assert_eq!(out.code, 2);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["error"], "not_found");

    assert_eq!(fake.store().get("fresh"), Some("new"));
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_commands() {
    let fake = fake().await;
    let alice = ["--password", "alice-pw"];
    for args in [
        &["login", "alice", "--password", "alice-pw"][..],
        &["login", "bob", "--password", "bob-pw"],
        &["create", "general"],
        &["subscribe", "alice", "general", "--password", "alice-pw"],
    ] {
        let out = run(&fake, args).await;
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    }
    let out = run(
        &fake,
        &[&["publish", "alice", "general", "hello", "all"][..], &alice].concat(),
    )
    .await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "posted as message #1\n")
    );
    let out = run(
        &fake,
        &[&["dm", "alice", "bob", "psst"][..], &alice].concat(),
    )
    .await;
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("@bob"), "{}", out.stdout);

    // Exit 4: no login, a wrong password, or another user's credential.
    let out = run(&fake, &["publish", "alice", "general", "forged"]).await;
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains("needs a login"), "{}", out.stderr);
    let out = run(&fake, &["history", "@bob", "--password", "alice-pw"]).await;
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains("wrong password"), "{}", out.stderr);
    let out = run(
        &fake,
        &["login", "alice", "--password", "alice-pw", "-o", "json"],
    )
    .await;
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let credential = doc["credential"].as_str().unwrap().to_owned();
    let as_alice = ["--credential", credential.as_str()];
    let out = run(
        &fake,
        &[&["publish", "bob", "general", "forged"][..], &as_alice].concat(),
    )
    .await;
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains("\"alice\"'s"), "{}", out.stderr);
    let out = run(
        &fake,
        &[&["history", "@bob", "-o", "json"][..], &as_alice].concat(),
    )
    .await;
    assert_eq!(out.code, 4);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()["error"],
        "unauthenticated"
    );
    // The credential speaks for alice without her password.
    let out = run(
        &fake,
        &[
            &["publish", "alice", "general", "with", "a", "credential"][..],
            &as_alice,
        ]
        .concat(),
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    let out = run(&fake, &["users"]).await;
    assert_eq!(out.stdout, "alice\nbob\n");
    let out = run(&fake, &["channels"]).await;
    assert!(out.stdout.contains("general  alice"), "{}", out.stdout);
    let out = run(&fake, &["history", "general"]).await;
    assert!(
        out.stdout.contains("[#general] alice: hello all"),
        "{}",
        out.stdout
    );
    let out = run(
        &fake,
        &["history", "@bob", "-o", "json", "--password", "bob-pw"],
    )
    .await;
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["messages"][0]["text"], "psst");
    let out = run(&fake, &["history", "general", "--since", "2"]).await;
    assert_eq!(out.stdout, "");

    // Not found: a channel that does not exist, or a recipient who never logged in.
    let out = run(
        &fake,
        &[&["subscribe", "alice", "nowhere"][..], &alice].concat(),
    )
    .await;
    assert_eq!(out.code, 2);
    let out = run(
        &fake,
        &[&["dm", "alice", "carol", "hi"][..], &alice].concat(),
    )
    .await;
    assert_eq!(out.code, 2);
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_health_tables() {
    let fake = fake().await;
    let out = run(&fake, &["put", "k", "v"]).await;
    assert_eq!(out.code, 0);

    let out = run(&fake, &["status"]).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("ADDRESS"), "{}", out.stdout);
    for node in ["node-1", "node-2", "node-3"] {
        assert!(out.stdout.contains(node), "{}", out.stdout);
    }
    assert!(out.stdout.contains("leader"), "{}", out.stdout);

    // A node that does not answer: listed as down, exit 1.
    let mut nodes = fake.status_addrs().to_vec();
    nodes.push("127.0.0.1:1".into());
    let out = run(
        &fake,
        &["status", "--nodes", &nodes.join(","), "-o", "json"],
    )
    .await;
    assert_eq!(out.code, 1);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["nodes"][0]["reachable"], true);
    assert_eq!(doc["nodes"][0]["status"]["applied_slot"], 1);
    assert_eq!(doc["nodes"][3]["reachable"], false);

    let out = run(&fake, &["health"]).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("HEALTHY: 3/3"), "{}", out.stdout);
    assert!(fake.store().get(client::status::HEALTH_KEY).is_some());

    // Expecting more nodes than answer is unhealthy.
    let out = run(&fake, &["health", "--nodes", "a,b,c,d", "-o", "json"]).await;
    assert_eq!(out.code, 1);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["nodes"].as_array().unwrap().len(), 3);
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_brokers_are_unavailable_with_exit_1() {
    let fake = fake().await;
    let mut command = client(&fake);
    command
        .env("BROKER", "tcp://127.0.0.1:1,tcp://127.0.0.1:2")
        .env("CLIENT_TIMEOUT", "300ms");
    let started = std::time::Instant::now();
    let output = command.args(["put", "k", "v"]).output().await.unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    // No broker ever answered a ping: nothing was sent, and the error says so.
    assert!(
        stderr.contains("no broker answers (tcp://127.0.0.1:1,tcp://127.0.0.1:2)"),
        "{stderr}"
    );
    assert!(!stderr.contains("may or may not"), "{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "never a hang"
    );
    fake.stop().await;
}

/// Publishes until `line` appears on `reader` (pub/sub drops messages sent before the
/// subscription reached the publisher, so one publish is not enough).
async fn publish_until_seen(
    fake: &FakeCluster,
    reader: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    op: Op,
    expected: &str,
) {
    let connection = Connection::open(fake.frontend_endpoint()).await.unwrap();
    let mut session = connection.session();
    let options = CallOptions::default();
    session.login("alice", "alice-pw", &options).await.unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        session
            .call(op.clone(), Consistency::Linearizable, &options)
            .await
            .unwrap();
        let wait = tokio::time::timeout(Duration::from_millis(200), reader.next_line()).await;
        if let Ok(line) = wait {
            let line = line.unwrap().expect("client exited");
            if line.contains(expected) {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw {expected:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_live_messages() {
    let fake = fake().await;
    for args in [
        &["login", "alice", "--password", "alice-pw"][..],
        &["login", "bob", "--password", "bob-pw"],
        &["create", "general"],
    ] {
        assert_eq!(run(&fake, args).await.code, 0);
    }
    let mut child = client(&fake)
        .args(["watch", "general", "@bob", "--password", "bob-pw"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let publish = Op::Publish {
        user: "alice".into(),
        channel: "general".into(),
        text: "live!".into(),
    };
    publish_until_seen(&fake, &mut lines, publish, "[#general] alice: live!").await;
    let dm = Op::PrivateMessage {
        from: "alice".into(),
        to: "bob".into(),
        text: "for bob".into(),
    };
    publish_until_seen(&fake, &mut lines, dm, "[@bob] alice: for bob").await;
    // A channel whose name only starts like a followed one is not shown.
    assert_eq!(run(&fake, &["create", "general2"]).await.code, 0);
    let other = Op::Publish {
        user: "alice".into(),
        channel: "general2".into(),
        text: "elsewhere".into(),
    };
    let marker = Op::Publish {
        user: "alice".into(),
        channel: "general".into(),
        text: "marker".into(),
    };
    let connection = Connection::open(fake.frontend_endpoint()).await.unwrap();
    let mut session = connection.session();
    let options = CallOptions::default();
    session.login("alice", "alice-pw", &options).await.unwrap();
    session
        .call(other, Consistency::Linearizable, &options)
        .await
        .unwrap();
    publish_until_seen(&fake, &mut lines, marker, "marker").await;
    child.kill().await.unwrap();
    let rest = tokio::time::timeout(DEADLINE, async {
        let mut rest = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push_str(&line);
        }
        rest
    })
    .await
    .unwrap();
    assert!(!rest.contains("elsewhere"), "{rest}");
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_menu_from_a_pipe() {
    let fake = fake().await;
    let mut child = client(&fake)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let script = "alice\nalice-pw\n2\ngeneral\n4\ngeneral\n5\ngeneral\nhello from the menu\n6\nalice\nnote to self\n1\n3\n7\ngeneral\n9\n0\n";
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(script.as_bytes()).await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    for expected in [
        "=== Menu ===",
        "Logged in as alice.",
        "Channel #general created.",
        "Subscribed to #general.",
        "Published as message #1.",
        "Sent as message #1.",
        "Users (1): alice",
        "#general (subscribed): 1 subscriber(s) alice",
        "[#general] alice: hello from the menu",
        "Unknown choice \"9\"",
        "Bye.",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    let store = fake.store();
    assert_eq!(store.stats().users, 1);
    assert_eq!(store.stats().channels, 1);
    fake.stop().await;
}
