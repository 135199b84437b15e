//! Let no one in: a stranger without the cluster key, on every port of a running cluster
//! under load, tries what issue 13 found possible before frames were sealed:
//!
//! - it publishes forged `Prepare`, `Accept`, `Decide`, `Accepted` and `Promise` envelopes
//!   on the proxy, in the names and ranks of the real nodes, in clear and sealed under a
//!   key of its own;
//! - it announces READY (and heartbeats) on the broker's backend as `node-9`;
//! - it registers at the reference;
//! - it subscribes to every topic and reads what crosses the proxy;
//! - it flips a bit of an authentic frame, and replays authentic frames as they were:
//!   Accepts on the proxy, and a real node's READY, heartbeat and proof on the broker's
//!   backend (under that node's name) and its registration and heartbeat at the
//!   reference, as a recording of the wire would hold them.
//!
//! Nothing is applied, no client request reaches it, no rank is given, it reads nothing
//! of the data, and the cluster keeps writing: no acknowledged write is lost, the
//! replicas converge, and every refusal is counted by reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a test

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use e2e::stranger::{
    self, FORGED_KEY, FORGED_LAMPORT, FORGED_ROUND, Listener, Victim, forgeries, is_refusal,
    own_bodies, sealed_under,
};
use e2e::{Client, Cluster, ClusterOptions, Load, bin_dir, lost_writes, runtime, wait_for};
use proto::fabric::{
    BROKER_CONTROL, NodeToBroker, REFERENCE_REPLY, REFERENCE_REQUEST, RefReply, RefRequest, Stamp,
};
use proto::seal::Keyring;
use proto::topic;
use transport::Multipart;

/// The prefix of the load's keys and values: what the stranger must not read.
const LOAD_PREFIX: &str = "attackload";

fn victims(cluster: &Cluster) -> Vec<Victim> {
    cluster
        .ids()
        .into_iter()
        .map(|id| {
            let status = cluster.status(id).expect("status");
            Victim {
                name: status.node,
                rank: status.rank,
                decided: status.decided_slot,
            }
        })
        .collect()
}

/// Sum of a counter family's samples in a Prometheus text whose labels contain every
/// one of `labels`.
fn counter(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, x| sum + x)
}

/// Node-side refusals of peer frames with `reason`, summed over the cluster.
fn peer_refusals(cluster: &Cluster, reason: &str) -> f64 {
    let reason = format!("reason=\"{reason}\"");
    cluster
        .ids()
        .into_iter()
        .filter_map(|id| cluster.node_get(id, "/metrics"))
        .map(|text| {
            counter(
                &text,
                "paxos_auth_rejected_total",
                &["from=\"peer\"", &reason],
            )
        })
        .sum()
}

/// The round of a ballot as `/status` shows it (`round.rank`).
fn round(ballot: &str) -> u64 {
    ballot
        .split('.')
        .next()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_stranger_without_the_key_gets_in_nowhere() {
    let mut cluster = Cluster::start(ClusterOptions::default());
    let ids = cluster.ids();
    cluster.wait_for_leader(&ids);
    let runtime = runtime();
    let client = runtime.block_on(Client::connect(&cluster.endpoints.broker_frontend));
    let load = Load::start(&runtime, &client, 8, LOAD_PREFIX);
    load.wait_more_acks(100, Duration::from_secs(30));
    let endpoints = cluster.endpoints.clone();

    // The stranger reads every topic on the proxy, and poses as node-9 on the broker's
    // backend (READY, then heartbeats, in clear and under its own key).
    let keys = stranger::strangers_key();
    let listener = runtime
        .block_on(Listener::start(&endpoints.proxy_backend))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let impostor = {
        let (backend, keys, stop) = (
            endpoints.brokers[0].backend.clone(),
            keys.clone(),
            stop.clone(),
        );
        runtime.spawn(async move { stranger::pose_as_node(&backend, &keys, stop).await })
    };

    // It replays node-1's authentic control frames on the broker's backend from its own
    // connection, under node-1's name: READY, heartbeat, and a proof of a challenge.
    let cluster_keys =
        Keyring::parse(&std::fs::read_to_string(cluster.key_file()).unwrap()).unwrap();
    let recorded: Vec<Vec<u8>> = [
        NodeToBroker::Ready {
            node: "node-1".into(),
        },
        NodeToBroker::Heartbeat {
            node: "node-1".into(),
        },
        NodeToBroker::Proof {
            node: "node-1".into(),
            nonce: vec![3; proto::fabric::CHALLENGE_NONCE_BYTES],
        },
    ]
    .iter()
    .map(|m| cluster_keys.seal(&[BROKER_CONTROL], &proto::encode(m).unwrap()))
    .collect();
    let replayer = {
        let (backend, stop) = (endpoints.brokers[0].backend.clone(), stop.clone());
        runtime.spawn(
            async move { stranger::replay_as_node(&backend, "node-1", recorded, stop).await },
        )
    };

    // It publishes forgeries on the proxy for 3 s, in clear and under its own key.
    let clear = forgeries(&victims(&cluster));
    let foreign = sealed_under(&keys, &clear);
    let own = own_bodies(&[&clear, &foreign]);
    let all: Vec<Multipart> = clear.iter().chain(&foreign).cloned().collect();
    runtime
        .block_on(stranger::publish(
            &endpoints.proxy_frontend,
            &all,
            60,
            Duration::from_millis(50),
        ))
        .unwrap();

    // It registers at the reference, in clear and under its own key.
    let answers = runtime
        .block_on(stranger::register(&endpoints.reference, &keys))
        .unwrap();
    println!("the reference answered the stranger: {answers:?}");
    assert!(answers.iter().all(is_refusal), "{answers:?}");

    // It replays node-1's registration (with another status address) and heartbeat as
    // recorded earlier in the run: refused as stale, node-1's entry unchanged.
    let early = Stamp { boot_us: 1, seq: 1 };
    let replays: Vec<Vec<u8>> = [
        RefRequest::Register {
            node: "node-1".into(),
            status_addr: "10.9.9.9:1".into(),
            stamp: early,
        },
        RefRequest::Heartbeat {
            node: "node-1".into(),
            stamp: early,
        },
    ]
    .iter()
    .map(|r| cluster_keys.seal(&[REFERENCE_REQUEST], &proto::encode(r).unwrap()))
    .collect();
    let answers = runtime
        .block_on(stranger::replay_to_reference(
            &endpoints.reference,
            &replays,
        ))
        .unwrap();
    for answer in &answers {
        let body = cluster_keys
            .open(&[REFERENCE_REPLY], answer.as_deref().expect("an answer"))
            .unwrap();
        let reply: RefReply = proto::decode(&body).unwrap();
        println!("the reference answered a replay: {reply:?}");
        assert!(
            matches!(&reply, RefReply::Error(e) if e.message.contains("stale")),
            "{reply:?}"
        );
    }

    // A bit flipped in authentic frames, then authentic frames replayed as they were.
    let authentic: Vec<Multipart> = {
        listener
            .frames()
            .iter()
            .filter(|f| f.len() == 3 && !own.contains(&f[2]))
            .filter(|f| f[0].starts_with(topic::PAXOS_ACCEPT.as_bytes()))
            .take(2_000)
            .cloned()
            .collect()
    };
    assert!(
        authentic.len() > 50,
        "the stranger saw {} authentic Accepts",
        authentic.len()
    );
    let forged_before = peer_refusals(&cluster, "forged");
    let flipped: Vec<Multipart> = authentic
        .iter()
        .take(200)
        .map(|frames| {
            let mut flipped = frames.clone();
            let last = flipped[2].len() - 1;
            flipped[2][last] ^= 0x01;
            flipped
        })
        .collect();
    runtime
        .block_on(stranger::publish(
            &endpoints.proxy_frontend,
            &flipped,
            1,
            Duration::ZERO,
        ))
        .unwrap();
    wait_for(
        "the nodes to refuse the flipped frames as forged",
        Duration::from_secs(10),
        || (peer_refusals(&cluster, "forged") > forged_before).then_some(()),
    );
    runtime
        .block_on(stranger::publish(
            &endpoints.proxy_frontend,
            &authentic,
            2,
            Duration::from_millis(100),
        ))
        .unwrap();
    println!(
        "replayed {} authentic Accepts twice; flipped 200",
        authentic.len()
    );

    // The cluster kept writing through all of it.
    load.wait_more_acks(200, Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    listener.stop();
    let handed = runtime.block_on(impostor).unwrap().unwrap();
    let handed_to_replayer = runtime.block_on(replayer).unwrap().unwrap();
    let unknown = load.unknown.load(Ordering::Relaxed);
    let acked = load.stop(&runtime);
    println!(
        "{} writes acknowledged, {unknown} without an answer",
        acked.len()
    );
    let lost = runtime.block_on(lost_writes(
        &client,
        &acked,
        Instant::now() + Duration::from_secs(60),
    ));
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let (slot, digest) = cluster.wait_converged(&ids, 1);
    println!("converged at slot {slot}, digest {digest}");

    // No forged ballot or clock was taken.
    for id in &ids {
        let status = cluster.status(*id).unwrap();
        assert!(round(&status.promised) < FORGED_ROUND, "{status:?}");
        assert!(status.lamport < FORGED_LAMPORT, "{status:?}");
    }

    // The broker handed the impostor nothing, nor the replayer of node-1's frames, and
    // does not count the impostor live.
    assert_eq!(handed, 0, "a stranger was handed requests");
    assert_eq!(
        handed_to_replayer, 0,
        "a replay of node-1's READY was handed requests"
    );
    let broker = cluster.fabric_status("broker-1").unwrap();
    println!("broker auth: {}", broker["auth"]);
    assert!(
        !broker["live_nodes"].to_string().contains("node-9"),
        "{broker}"
    );
    assert!(broker["auth"]["rejected"].as_u64().unwrap() > 0, "{broker}");

    // The reference gave it no rank, and counted the replays as stale.
    let reference = cluster.fabric_status("reference").unwrap();
    println!("reference auth: {}", reference["auth"]);
    assert!(!reference["members"].to_string().contains("node-9"));
    let metrics = cluster.fabric_get("reference", "/metrics").unwrap();
    let stale = counter(&metrics, "reference_stale_requests_total", &[]);
    assert!(stale >= 2.0, "{stale} stale requests counted");
    // The broker challenged the replayer and counted its proof as unproved.
    let metrics = cluster.fabric_get("broker-1", "/metrics").unwrap();
    let unproved = counter(
        &metrics,
        "broker_malformed_messages_total",
        &["reason=\"unproved\""],
    );
    println!(
        "broker: {} challenges, {unproved} unproved proofs",
        counter(&metrics, "broker_challenges_total", &[])
    );
    assert!(unproved > 0.0, "{metrics}");
    assert!(reference["auth"]["rejected"].as_u64().unwrap() >= 2);

    // It read nothing: every body it saw but its own is sealed, and none holds the data.
    let findings = stranger::examine(&listener.frames(), &own, LOAD_PREFIX.as_bytes());
    println!("what the stranger read: {findings:?}");
    assert!(findings.seen > 100, "{findings:?}");
    assert_eq!(
        (findings.unsealed, findings.envelopes, findings.readable),
        (0, 0, 0),
        "{findings:?}"
    );

    // Every kind of refusal was counted.
    // (`malformed`: not sealed at all.)
    for reason in ["malformed", "unknown_key", "forged"] {
        let count = peer_refusals(&cluster, reason);
        println!("peer frames refused as {reason}: {count}");
        assert!(count > 0.0, "no refusal counted as {reason}");
    }

    // Nothing forged was applied: the replicas' state, flushed by a graceful stop.
    for id in &ids {
        cluster.stop(&format!("node-{id}"));
        let store = cluster.store_json(*id).to_string();
        assert!(!store.contains(FORGED_KEY), "node {id} applied a forgery");
        assert!(
            store.contains(LOAD_PREFIX),
            "node {id}'s store.json holds no data"
        );
    }
}

#[test]
fn a_node_with_another_key_or_none_stops_at_start_and_says_why() {
    let mut cluster = Cluster::start(ClusterOptions::default());
    cluster.wait_for_leader(&cluster.ids());
    let other_key = cluster.dir.join("other.key");
    std::fs::write(&other_key, Keyring::generate_line() + "\n").unwrap();
    let missing = cluster.dir.join("no-such.key");
    for (key_file, expect) in [(&other_key, "cluster key"), (&missing, "no-such.key")] {
        let args = cluster.node_args(4, &[]);
        let started = Instant::now();
        let output = Command::new(bin_dir().join("node"))
            .args(&args)
            .current_dir(&cluster.dir)
            .env("CLUSTER_KEY_FILE", key_file)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        println!(
            "node-4 with {}: {:?} after {:?}:\n{stderr}",
            key_file.display(),
            output.status,
            started.elapsed()
        );
        assert!(!output.status.success());
        assert!(stderr.contains(expect), "{stderr}");
    }
    // The reference gave the node with the wrong key no rank.
    let reference = cluster.fabric_status("reference").unwrap();
    assert!(!reference["members"].to_string().contains("node-4"));
}

#[test]
fn keygen_makes_a_private_key_whatever_the_environment_and_never_overwrites_one() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("paxos-keygen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let file = dir.join("cluster.key");
    let keygen = || {
        Command::new(bin_dir().join("node"))
            .arg("keygen")
            .arg(&file)
            // A node's environment, as in a shell that runs one (it once made clap ask
            // for --id).
            .env("DATA_DIR", &dir)
            .env("STATUS_ADDR", "127.0.0.1:7001")
            .output()
            .unwrap()
    };
    let made = keygen();
    assert!(made.status.success(), "{made:?}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first = std::fs::read_to_string(&file).unwrap();
    assert!(Keyring::parse(&first).is_ok(), "{first}");
    let again = keygen();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists"),
        "{again:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        first,
        "overwritten"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
