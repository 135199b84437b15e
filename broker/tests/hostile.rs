//! Hostile peers on both broker sockets, with the broker running in this process: 10,000
//! random and mutated messages, raw non-ZMTP bytes, and ZMTP frame headers that claim
//! 1 TiB. The broker must keep serving valid requests with flat memory.
//!
//! Replay a failing run with `FUZZ_SEED=<seed printed on stderr>`.
//! These tests measure the memory of the whole test process, so they take [`ONE_AT_A_TIME`]
//! rather than run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod common;

use std::io::Write;
use std::time::Duration;

use common::hostile::{
    fuzz_seed, hostile_message, one_tebibyte_frame_header, rss_bytes, tcp_address,
};
use common::{DEADLINE, TestBroker, wait_until};
use proto::fabric::NodeToBroker;
use proto::{Consistency, Op, Request};
use rand::SeedableRng;
use transport::{Backend, Kind, Mode, Options, Socket};

/// Held by each test of this file: they measure the memory of the whole process.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MESSAGES_PER_SOCKET: usize = 10_000;
/// Memory growth allowed over the whole attack: buffers and allocator slack, far below
/// what an attacker could make an unbounded broker allocate.
const RSS_GROWTH_MAX_BYTES: u64 = 64 * 1024 * 1024;

fn valid_bodies() -> Vec<Vec<u8>> {
    let request = |op| {
        proto::encode(&Request {
            client_id: 9,
            seq: 77,
            op,
            consistency: Consistency::Linearizable,
            credential: None,
        })
        .unwrap()
    };
    vec![
        request(Op::Put {
            key: "key".into(),
            value: "value".into(),
        }),
        request(Op::Noop),
        request(Op::Cas {
            key: "k".into(),
            expected: Some("a".into()),
            new: "b".into(),
        }),
        proto::encode(&NodeToBroker::Ready {
            node: "node-9".into(),
        })
        .unwrap(),
        proto::encode(&NodeToBroker::Heartbeat {
            node: "node-1".into(),
        })
        .unwrap(),
    ]
}

/// Sends `count` hostile messages on a fresh DEALER to `endpoint` while draining what
/// comes back; returns how many answers arrived.
async fn flood(endpoint: &str, seed: u64, count: usize) -> u64 {
    let socket = Socket::open(Kind::Dealer, Mode::Connect, endpoint, Options::default())
        .await
        .unwrap();
    let (tx, mut rx) = socket.split();
    let drain = tokio::spawn(async move {
        let mut answers = 0u64;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            answers += 1;
        }
        answers
    });
    let valid = valid_bodies();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..count {
        tx.send(hostile_message(&mut rng, &valid)).await.unwrap();
    }
    drain.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_survives_random_and_mutated_frames_on_both_sockets() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let seed = fuzz_seed();
    let broker = TestBroker::start(Backend::default(), broker::Config::default()).await;
    let node = broker.node("node-1", Duration::from_millis(100)).await;
    let mut client = broker.client().await;
    wait_until("the node serves", async || {
        client.call().await.result.is_ok()
    })
    .await;
    let rss_before = rss_bytes();
    assert!(rss_before > 0, "VmRSS is readable");

    let (front_answers, back_answers) = tokio::join!(
        flood(&broker.frontend, seed, MESSAGES_PER_SOCKET),
        flood(&broker.backend, seed ^ 0x5555, MESSAGES_PER_SOCKET),
    );
    // Raw bytes that are not ZMTP at all.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for endpoint in [&broker.frontend, &broker.backend] {
        for _ in 0..20 {
            let mut stream = std::net::TcpStream::connect(tcp_address(endpoint)).unwrap();
            let mut junk = vec![0u8; rand::Rng::random_range(&mut rng, 1..4096)];
            rand::Rng::fill(&mut rng, &mut junk[..]);
            let _ = stream.write_all(&junk);
        }
    }

    // Still serving, and the node is still in the ring.
    for _ in 0..10 {
        let response = client.call().await;
        assert!(response.result.is_ok(), "{response:?}");
    }
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(grown < RSS_GROWTH_MAX_BYTES, "memory grew by {grown} bytes");
    node.stop().await;
    let stats = broker.stop().await;
    eprintln!("answers: frontend {front_answers}, backend {back_answers}; {stats:?}");
    // Most hostile messages are malformed and the frontend ones are answered.
    assert!(stats.malformed > MESSAGES_PER_SOCKET as u64, "{stats:?}");
    assert!(
        front_answers > (MESSAGES_PER_SOCKET / 2) as u64,
        "{front_answers}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_survives_one_tebibyte_frame_headers_with_flat_memory() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let broker = TestBroker::start(Backend::default(), broker::Config::default()).await;
    let node = broker.node("node-1", Duration::from_millis(100)).await;
    let mut client = broker.client().await;
    wait_until("the node serves", async || {
        client.call().await.result.is_ok()
    })
    .await;
    let rss_before = rss_bytes();
    assert!(rss_before > 0, "VmRSS is readable");
    let mut attackers = Vec::new();
    for endpoint in [&broker.frontend, &broker.backend] {
        for _ in 0..8 {
            let mut stream = std::net::TcpStream::connect(tcp_address(endpoint)).unwrap();
            stream.write_all(&one_tebibyte_frame_header()).unwrap();
            let _ = stream.write_all(&[0xAB; 4096]);
            attackers.push(stream);
        }
    }
    // Valid requests are still answered while the attackers hold their connections open.
    for _ in 0..10 {
        let response = tokio::time::timeout(DEADLINE, client.call()).await.unwrap();
        assert!(response.result.is_ok(), "{response:?}");
    }
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(grown < RSS_GROWTH_MAX_BYTES, "memory grew by {grown} bytes");
    drop(attackers);
    node.stop().await;
    broker.stop().await;
}
