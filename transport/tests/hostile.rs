//! Hostile peers against the default (libzmq) backend: the defects that rule the pure-Rust
//! backend out for servers must not exist here (see docs/transport.md).
//!
//! The same scenarios against the pure-Rust backend are `#[ignore]`d reproductions of its
//! defects: `cargo test -p transport --features zeromq-rs --test hostile -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::io::Write;
use std::time::{Duration, Instant};

use transport::{Backend, Forwarder, Kind, Mode, Options, Socket};

const DEADLINE: Duration = Duration::from_secs(10);

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// A ZMTP 3.0 greeting (NULL mechanism) and READY command of a DEALER, then the 9-byte
/// header of a frame that claims to be 1 TiB long.
fn one_tebibyte_frame_header() -> Vec<u8> {
    let mut bytes = vec![0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0x7F, 3, 0];
    let mut mechanism = b"NULL".to_vec();
    mechanism.resize(20, 0);
    bytes.extend(mechanism);
    bytes.push(0); // as-server
    bytes.extend([0u8; 31]); // filler
    let mut ready = vec![5];
    ready.extend(b"READY");
    ready.push(11);
    ready.extend(b"Socket-Type");
    ready.extend(6u32.to_be_bytes());
    ready.extend(b"DEALER");
    bytes.push(0x04); // command, short
    bytes.push(u8::try_from(ready.len()).unwrap());
    bytes.extend(ready);
    bytes.push(0x02); // message frame, long size, last
    bytes.extend((1u64 << 40).to_be_bytes());
    bytes
}

#[cfg(feature = "libzmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_survives_a_one_tebibyte_frame_header() {
    tebibyte_frame_header(Backend::Libzmq).await;
}

#[cfg(feature = "zeromq-rs")]
#[ignore = "reproduces a known defect of zeromq 0.7: the process aborts (docs/transport.md)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeromq_rs_router_and_a_one_tebibyte_frame_header() {
    tebibyte_frame_header(Backend::ZeromqRs).await;
}

async fn tebibyte_frame_header(backend: Backend) {
    let mut router = Socket::open_with(
        backend,
        Kind::Router,
        Mode::Bind,
        "tcp://127.0.0.1:0",
        Options::default(),
    )
    .await
    .unwrap();
    let address = router.endpoint().trim_start_matches("tcp://").to_owned();
    let rss_before = rss_bytes();
    let mut attackers = Vec::new();
    for _ in 0..8 {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream.write_all(&one_tebibyte_frame_header()).unwrap();
        let _ = stream.write_all(&[0xAB; 4096]);
        attackers.push(stream);
    }
    // The router still answers a well-behaved peer.
    let mut dealer = Socket::open_with(
        backend,
        Kind::Dealer,
        Mode::Connect,
        router.endpoint(),
        Options::default(),
    )
    .await
    .unwrap();
    dealer.send(vec![b"still there?".to_vec()]).await.unwrap();
    let request = tokio::time::timeout(DEADLINE, router.recv())
        .await
        .unwrap()
        .unwrap();
    router
        .send(vec![request[0].clone(), b"yes".to_vec()])
        .await
        .unwrap();
    let reply = tokio::time::timeout(DEADLINE, dealer.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, vec![b"yes".to_vec()]);
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(grown < 64 * 1024 * 1024, "memory grew by {grown} bytes");
}

#[cfg(feature = "libzmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_does_not_delay_the_others() {
    stalled_subscriber(Backend::Libzmq).await;
}

#[cfg(feature = "zeromq-rs")]
#[ignore = "reproduces a known defect of zeromq 0.7: XPUB blocks every subscriber (docs/transport.md)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeromq_rs_a_stalled_subscriber_blocks_the_others() {
    stalled_subscriber(Backend::ZeromqRs).await;
}

async fn stalled_subscriber(backend: Backend) {
    let forwarder = Forwarder::start(
        backend,
        "tcp://127.0.0.1:0",
        "tcp://127.0.0.1:0",
        Options::default(),
    )
    .await
    .unwrap();
    let publisher = Socket::open_with(
        backend,
        Kind::Pub,
        Mode::Connect,
        forwarder.frontend_endpoint(),
        Options::default(),
    )
    .await
    .unwrap();
    // Never read from this one: its channel, its receive queue and its TCP buffers fill,
    // then the forwarder must drop its messages rather than block.
    let stalled_options = Options {
        channel_capacity: 8,
        recv_hwm: 8,
        ..Options::default()
    }
    .subscribe(b"t".to_vec());
    let _stalled = Socket::open_with(
        backend,
        Kind::Sub,
        Mode::Connect,
        forwarder.backend_endpoint(),
        stalled_options,
    )
    .await
    .unwrap();
    let mut healthy = Socket::open_with(
        backend,
        Kind::Sub,
        Mode::Connect,
        forwarder.backend_endpoint(),
        Options::default().subscribe(b"t".to_vec()),
    )
    .await
    .unwrap();
    // Wait until both subscriptions reached the forwarder.
    let start = Instant::now();
    while forwarder.stats().snapshot().2 < 2 {
        assert!(start.elapsed() < DEADLINE, "subscriptions never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Warm up past the slow-joiner window.
    loop {
        publisher
            .send(vec![b"t".to_vec(), b"warm".to_vec()])
            .await
            .unwrap();
        if tokio::time::timeout(Duration::from_millis(50), healthy.recv())
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "healthy subscriber never joined"
        );
    }
    // Flood far past every buffer of the stalled subscriber while the healthy one reads.
    // (Publishers drop too when the flood outruns the reader: only the probes below count.)
    let payload = vec![0u8; 1024];
    let reader = tokio::spawn(async move {
        let mut got = 0u64;
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(500), healthy.recv()).await
        {
            got += 1;
        }
        (got, healthy)
    });
    // Paced so that the publisher's own queue never overflows: every message reaches the
    // forwarder, which must keep forwarding although one subscriber reads nothing.
    let base = forwarder.stats().snapshot().0;
    for i in 1..=60_000u64 {
        publisher
            .send(vec![b"t".to_vec(), payload.clone()])
            .await
            .unwrap();
        if i % 500 == 0 {
            let start = Instant::now();
            while forwarder.stats().snapshot().0 + 1000 < base + i {
                assert!(
                    start.elapsed() < DEADLINE,
                    "the forwarder stalled after {i} messages"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    let (got, mut healthy) = reader.await.unwrap();
    assert!(got > 0);
    let stalled_forwarded = forwarder.stats().snapshot().0;
    assert!(
        stalled_forwarded > 59_000,
        "the flood went through the forwarder: {stalled_forwarded}"
    );
    // The stalled subscriber's queues are full now; each new message still reaches the
    // healthy one at once.
    for i in 0..20u32 {
        let probe = format!("probe-{i}").into_bytes();
        let sent = Instant::now();
        publisher
            .send(vec![b"t".to_vec(), probe.clone()])
            .await
            .unwrap();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(2), healthy.recv())
                .await
                .expect("probe delayed: the stalled subscriber blocks the others")
                .unwrap();
            if message[1] == probe {
                break;
            }
        }
        assert!(sent.elapsed() < Duration::from_secs(2));
    }
    forwarder.stop().await;
}

/// Publishes 1 KiB messages as fast as possible to one subscriber that never reads, and
/// returns how much the process grew.
async fn memory_behind_a_stalled_subscriber(backend: Backend) -> u64 {
    let publisher = Socket::open_with(
        backend,
        Kind::Pub,
        Mode::Bind,
        "tcp://127.0.0.1:0",
        Options::default(),
    )
    .await
    .unwrap();
    let stalled_options = Options {
        channel_capacity: 8,
        recv_hwm: 8,
        ..Options::default()
    }
    .subscribe(b"t".to_vec());
    let mut stalled = Socket::open_with(
        backend,
        Kind::Sub,
        Mode::Connect,
        publisher.endpoint(),
        stalled_options,
    )
    .await
    .unwrap();
    // Past the slow-joiner window: one message arrives, then the subscriber stops reading.
    let start = Instant::now();
    loop {
        publisher
            .send(vec![b"t".to_vec(), b"warm".to_vec()])
            .await
            .unwrap();
        if tokio::time::timeout(Duration::from_millis(50), stalled.recv())
            .await
            .is_ok()
        {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "subscriber never joined");
    }
    let before = rss_bytes();
    let payload = vec![7u8; 1024];
    for i in 0..300_000u32 {
        publisher
            .send(vec![b"t".to_vec(), payload.clone()])
            .await
            .unwrap();
        if i % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Let the queues settle, then measure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    rss_bytes().saturating_sub(before)
}

#[cfg(feature = "libzmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_costs_bounded_memory() {
    // 300 MB were published; the high-water marks bound what is queued.
    let grown = memory_behind_a_stalled_subscriber(Backend::Libzmq).await;
    assert!(
        grown < 96 * 1024 * 1024,
        "memory grew by {} MiB",
        grown >> 20
    );
}

#[cfg(feature = "zeromq-rs")]
#[ignore = "reproduces a known defect of zeromq 0.7: a PUB queue grows without bound (docs/transport.md)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeromq_rs_a_stalled_subscriber_costs_unbounded_memory() {
    let grown = memory_behind_a_stalled_subscriber(Backend::ZeromqRs).await;
    assert!(
        grown < 96 * 1024 * 1024,
        "memory grew by {} MiB",
        grown >> 20
    );
}

#[cfg(feature = "zeromq-rs")]
#[ignore = "reproduces a known defect of zeromq 0.7: a DEALER never reconnects (docs/transport.md)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeromq_rs_dealer_reconnects_after_the_router_restarts() {
    let backend = Backend::ZeromqRs;
    let router = Socket::open_with(
        backend,
        Kind::Router,
        Mode::Bind,
        "tcp://127.0.0.1:0",
        Options::default(),
    )
    .await
    .unwrap();
    let endpoint = router.endpoint().to_owned();
    let dealer = Socket::open_with(
        backend,
        Kind::Dealer,
        Mode::Connect,
        &endpoint,
        Options::default(),
    )
    .await
    .unwrap();
    drop(router);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut router = Socket::open_with(
        backend,
        Kind::Router,
        Mode::Bind,
        &endpoint,
        Options::default(),
    )
    .await
    .unwrap();
    let start = Instant::now();
    loop {
        let _ = dealer.sender.try_send(vec![b"ping".to_vec()]);
        if tokio::time::timeout(Duration::from_millis(100), router.recv())
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the DEALER never reconnected to the restarted ROUTER"
        );
    }
}
