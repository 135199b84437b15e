//! Functional tests of the transport, run over every backend compiled in
//! (`cargo test -p transport --features zeromq-rs` runs both).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::time::{Duration, Instant};

use transport::{Backend, Forwarder, Kind, Mode, Multipart, Options, Socket};

const DEADLINE: Duration = Duration::from_secs(10);

async fn open(
    backend: Backend,
    kind: Kind,
    mode: Mode,
    endpoint: &str,
    options: Options,
) -> Socket {
    Socket::open_with(backend, kind, mode, endpoint, options)
        .await
        .unwrap()
}

async fn recv_within(socket: &mut Socket, within: Duration) -> Option<Multipart> {
    tokio::time::timeout(within, socket.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_dealer_round_trip_with_identity() {
    for backend in Backend::all() {
        let mut router = open(
            backend,
            Kind::Router,
            Mode::Bind,
            "tcp://127.0.0.1:0",
            Options::default(),
        )
        .await;
        assert!(
            !router.endpoint().ends_with(":0"),
            "port 0 resolved: {}",
            router.endpoint()
        );
        let mut dealer = open(
            backend,
            Kind::Dealer,
            Mode::Connect,
            router.endpoint(),
            Options::default().identity(b"node-7".to_vec()),
        )
        .await;
        dealer.send(vec![b"hello".to_vec()]).await.unwrap();
        let message = recv_within(&mut router, DEADLINE)
            .await
            .expect("router receives");
        assert_eq!(
            message,
            vec![b"node-7".to_vec(), b"hello".to_vec()],
            "{backend:?}"
        );
        router
            .send(vec![b"node-7".to_vec(), b"world".to_vec()])
            .await
            .unwrap();
        let reply = recv_within(&mut dealer, DEADLINE)
            .await
            .expect("dealer receives");
        assert_eq!(reply, vec![b"world".to_vec()], "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_messages_arrive_in_order() {
    for backend in Backend::all() {
        let mut router = open(
            backend,
            Kind::Router,
            Mode::Bind,
            "tcp://127.0.0.1:0",
            Options::default(),
        )
        .await;
        let dealer = open(
            backend,
            Kind::Dealer,
            Mode::Connect,
            router.endpoint(),
            Options::default(),
        )
        .await;
        let count = 20_000u32;
        let sender = dealer.sender.clone();
        let producer = tokio::spawn(async move {
            for i in 0..count {
                sender.send(vec![i.to_be_bytes().to_vec()]).await.unwrap();
            }
        });
        for expected in 0..count {
            let message = recv_within(&mut router, DEADLINE)
                .await
                .expect("message arrives");
            assert_eq!(message[1], expected.to_be_bytes().to_vec(), "{backend:?}");
        }
        producer.await.unwrap();
    }
}

/// Publishes `message` until `subscriber` receives something, to get past the
/// "slow joiner" window of pub/sub (a subscription takes a moment to reach the publisher).
async fn publish_until_received(
    publisher: &Socket,
    subscriber: &mut Socket,
    message: Multipart,
) -> Multipart {
    let start = Instant::now();
    loop {
        publisher.send(message.clone()).await.unwrap();
        if let Some(received) = recv_within(subscriber, Duration::from_millis(50)).await {
            return received;
        }
        assert!(start.elapsed() < DEADLINE, "subscriber never received");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarder_delivers_subscribed_topics_only() {
    for backend in Backend::all() {
        let forwarder = Forwarder::start(
            backend,
            "tcp://127.0.0.1:0",
            "tcp://127.0.0.1:0",
            Options::default(),
        )
        .await
        .unwrap();
        let publisher = open(
            backend,
            Kind::Pub,
            Mode::Connect,
            forwarder.frontend_endpoint(),
            Options::default(),
        )
        .await;
        let mut subscriber = open(
            backend,
            Kind::Sub,
            Mode::Connect,
            forwarder.backend_endpoint(),
            Options::default().subscribe(b"chan.general".to_vec()),
        )
        .await;
        let received = publish_until_received(
            &publisher,
            &mut subscriber,
            vec![b"chan.general".to_vec(), b"hi".to_vec()],
        )
        .await;
        assert_eq!(received[0], b"chan.general");
        // Drain repeats of the warm-up message, then check that another topic is filtered
        // out while the subscribed one still flows.
        while recv_within(&mut subscriber, Duration::from_millis(100))
            .await
            .is_some()
        {}
        publisher
            .send(vec![b"chan.other".to_vec(), b"no".to_vec()])
            .await
            .unwrap();
        publisher
            .send(vec![b"chan.general".to_vec(), b"yes".to_vec()])
            .await
            .unwrap();
        let next = recv_within(&mut subscriber, DEADLINE)
            .await
            .expect("subscribed topic");
        assert_eq!(
            next,
            vec![b"chan.general".to_vec(), b"yes".to_vec()],
            "{backend:?}"
        );
        // `chan.other` never left the publisher: the subscription filter travelled upstream.
        let (messages, bytes, subscriptions) = forwarder.stats().snapshot();
        assert!(
            messages >= 2 && bytes > 0 && subscriptions >= 1,
            "{messages} {bytes} {subscriptions}"
        );
        // Counted by the kind of their topic: every message is of one kind.
        let stats = forwarder.stats();
        let kinds = proto::topic::Kind::ALL.map(|kind| stats.of_kind(kind));
        assert_eq!(
            kinds.iter().sum::<u64>(),
            messages,
            "{backend:?}: {kinds:?}"
        );
        assert_eq!(
            stats.of_kind(proto::topic::Kind::Chan),
            messages,
            "{kinds:?}"
        );
        assert_eq!(stats.dropped(), 0);
        forwarder.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_and_unsubscribe_at_run_time() {
    for backend in Backend::all() {
        let publisher = open(
            backend,
            Kind::Pub,
            Mode::Bind,
            "tcp://127.0.0.1:0",
            Options::default(),
        )
        .await;
        let mut subscriber = open(
            backend,
            Kind::Sub,
            Mode::Connect,
            publisher.endpoint(),
            Options::default(),
        )
        .await;
        subscriber
            .sender
            .subscribe(b"user.ana".to_vec())
            .await
            .unwrap();
        let received = publish_until_received(
            &publisher,
            &mut subscriber,
            vec![b"user.ana".to_vec(), b"x".to_vec()],
        )
        .await;
        assert_eq!(received[0], b"user.ana");
        subscriber
            .sender
            .unsubscribe(b"user.ana".to_vec())
            .await
            .unwrap();
        // After the unsubscription reaches the publisher, nothing more arrives.
        tokio::time::sleep(Duration::from_millis(300)).await;
        while recv_within(&mut subscriber, Duration::from_millis(50))
            .await
            .is_some()
        {}
        for _ in 0..10 {
            publisher
                .send(vec![b"user.ana".to_vec(), b"y".to_vec()])
                .await
                .unwrap();
        }
        assert!(
            recv_within(&mut subscriber, Duration::from_millis(300))
                .await
                .is_none(),
            "{backend:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subscriber_connects_to_a_list_of_publishers() {
    for backend in Backend::all() {
        let first = open(
            backend,
            Kind::Pub,
            Mode::Bind,
            "tcp://127.0.0.1:0",
            Options::default(),
        )
        .await;
        let second = open(
            backend,
            Kind::Pub,
            Mode::Bind,
            "tcp://127.0.0.1:0",
            Options::default(),
        )
        .await;
        let list = format!("{},{}", first.endpoint(), second.endpoint());
        let mut subscriber = open(
            backend,
            Kind::Sub,
            Mode::Connect,
            &list,
            Options::default().subscribe(b"t".to_vec()),
        )
        .await;
        assert_eq!(subscriber.endpoint(), list);
        // Each publisher's messages arrive (earlier copies of the other's may come first).
        for (publisher, body) in [(&first, b"one".to_vec()), (&second, b"two".to_vec())] {
            let start = Instant::now();
            loop {
                let message = vec![b"t".to_vec(), body.clone()];
                if publish_until_received(publisher, &mut subscriber, message).await[1] == body {
                    break;
                }
                assert!(
                    start.elapsed() < DEADLINE,
                    "{backend:?}: never received {body:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_only_for_sub_sockets() {
    let router = Socket::bind(Kind::Router, "tcp://127.0.0.1:0")
        .await
        .unwrap();
    assert!(router.sender.subscribe(b"x".to_vec()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_endpoint_is_a_typed_error() {
    for backend in Backend::all() {
        let error = Socket::open_with(
            backend,
            Kind::Router,
            Mode::Bind,
            "nonsense",
            Options::default(),
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("nonsense"), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dealer_reconnects_after_the_router_restarts() {
    // libzmq only: the pure-Rust backend never reconnects (docs/transport.md).
    #[cfg(feature = "libzmq")]
    {
        let backend = Backend::Libzmq;
        let router = open(
            backend,
            Kind::Router,
            Mode::Bind,
            "tcp://127.0.0.1:0",
            Options::default(),
        )
        .await;
        let endpoint = router.endpoint().to_owned();
        let mut dealer = open(
            backend,
            Kind::Dealer,
            Mode::Connect,
            &endpoint,
            Options::default(),
        )
        .await;
        drop(router);
        // Rebinding the same port may take a moment while the old socket closes.
        let start = Instant::now();
        let mut router = loop {
            match Socket::open_with(
                backend,
                Kind::Router,
                Mode::Bind,
                &endpoint,
                Options::default(),
            )
            .await
            {
                Ok(router) => break router,
                Err(_) if start.elapsed() < DEADLINE => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("rebind: {e}"),
            }
        };
        let start = Instant::now();
        loop {
            dealer.send(vec![b"ping".to_vec()]).await.unwrap();
            if let Some(message) = recv_within(&mut router, Duration::from_millis(100)).await {
                router
                    .send(vec![message[0].clone(), b"pong".to_vec()])
                    .await
                    .unwrap();
                break;
            }
            assert!(start.elapsed() < DEADLINE, "dealer never reconnected");
        }
        let reply = recv_within(&mut dealer, DEADLINE)
            .await
            .expect("reply after reconnect");
        assert_eq!(reply, vec![b"pong".to_vec()]);
    }
}

/// A libzmq DEALER with high-water marks of `hwm` messages.
#[cfg(feature = "libzmq")]
async fn small_dealer(mode: Mode, endpoint: &str, hwm: i32) -> Socket {
    let options = Options {
        send_hwm: hwm,
        recv_hwm: hwm,
        ..Options::default()
    };
    open(Backend::Libzmq, Kind::Dealer, mode, endpoint, options).await
}

/// One socket whose sending and receiving halves live in different tasks, with
/// high-water marks small enough that both directions fill up and drain thousands of
/// times. libzmq's signalling descriptor is edge-triggered and any call on the socket
/// may consume an edge meant for the other half: a lost wake-up shows here as a stall.
#[cfg(feature = "libzmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_halves_in_different_tasks_under_backpressure() {
    let echo = small_dealer(Mode::Bind, "tcp://127.0.0.1:0", 4).await;
    let client = small_dealer(Mode::Connect, echo.endpoint(), 4).await;
    let (echo_tx, mut echo_rx) = echo.split();
    let echo_task = tokio::spawn(async move {
        while let Some(message) = echo_rx.recv().await {
            if echo_tx.send(message).await.is_err() {
                break;
            }
        }
    });
    let (tx, mut rx) = client.split();
    let count = 20_000u32;
    let producer = tokio::spawn(async move {
        for i in 0..count {
            tx.send(vec![i.to_be_bytes().to_vec()]).await.unwrap();
        }
        tx
    });
    for expected in 0..count {
        let message = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("echo {expected} never arrived: a lost wake-up"))
            .expect("socket open");
        assert_eq!(message, vec![expected.to_be_bytes().to_vec()]);
    }
    let _tx = producer.await.unwrap();
    echo_task.abort();
}

/// `try_send` reports a full queue instead of waiting, and succeeds again once the peer
/// has read.
#[cfg(feature = "libzmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_send_says_full_then_recovers() {
    // A bound DEALER with no peer yet has nowhere to queue: full at once.
    let mut server = small_dealer(Mode::Bind, "tcp://127.0.0.1:0", 2).await;
    assert!(matches!(
        server.sender.try_send(vec![b"early".to_vec()]),
        Err(transport::TransportError::Full)
    ));
    let client = small_dealer(Mode::Connect, server.endpoint(), 2).await;
    // Fill the client's queues (its pipe, the TCP buffers, the server's pipe) until full.
    let mut sent = 0u32;
    let start = Instant::now();
    loop {
        match client
            .sender
            .try_send(vec![sent.to_be_bytes().to_vec(), vec![0; 64 * 1024]])
        {
            Ok(()) => sent += 1,
            Err(transport::TransportError::Full) => break,
            Err(e) => panic!("unexpected {e}"),
        }
        assert!(
            start.elapsed() < DEADLINE,
            "never full after {sent} messages"
        );
    }
    assert!(sent > 0);
    // Read everything: every message arrives in order, and the sender has room again.
    for expected in 0..sent {
        let message = recv_within(&mut server, DEADLINE).await.expect("arrives");
        assert_eq!(message[0], expected.to_be_bytes().to_vec());
    }
    tokio::time::timeout(DEADLINE, client.send(vec![b"again".to_vec(), Vec::new()]))
        .await
        .expect("room again")
        .unwrap();
    let message = recv_within(&mut server, DEADLINE).await.expect("arrives");
    assert_eq!(message[0], b"again".to_vec());
}

/// Waits until the forwarder counts this many publishers and subscribers.
async fn wait_connected(forwarder: &Forwarder, wanted: (u64, u64)) {
    let start = Instant::now();
    while forwarder.stats().connected() != wanted {
        assert!(
            start.elapsed() < DEADLINE,
            "never {wanted:?} connected: {:?}",
            forwarder.stats().connected()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarder_counts_its_peers_and_stopping_it_leaves_libzmq_working() {
    for round in 0..3 {
        let forwarder = Forwarder::start(
            Backend::Libzmq,
            "tcp://127.0.0.1:0",
            "tcp://127.0.0.1:0",
            Options::default(),
        )
        .await
        .unwrap();
        wait_connected(&forwarder, (0, 0)).await;
        let publisher = open(
            Backend::Libzmq,
            Kind::Pub,
            Mode::Connect,
            forwarder.frontend_endpoint(),
            Options::default(),
        )
        .await;
        let mut subscribers = Vec::new();
        for _ in 0..2 {
            let options = Options::default().subscribe(b"x".to_vec());
            let endpoint = forwarder.backend_endpoint();
            subscribers
                .push(open(Backend::Libzmq, Kind::Sub, Mode::Connect, endpoint, options).await);
        }
        wait_connected(&forwarder, (1, 2)).await;
        publish_until_received(&publisher, &mut subscribers[0], vec![b"x".to_vec()]).await;
        drop(subscribers.pop());
        wait_connected(&forwarder, (1, 1)).await;
        // A subscriber that reads nothing, so that the forwarder's XPUB still holds messages
        // for it when it stops: the closed socket lingers, its connections with it.
        let stalled = Options {
            recv_hwm: 1,
            ..Options::default()
        }
        .subscribe(b"x".to_vec());
        let endpoint = forwarder.backend_endpoint();
        subscribers.push(open(Backend::Libzmq, Kind::Sub, Mode::Connect, endpoint, stalled).await);
        wait_connected(&forwarder, (1, 2)).await;
        let before = forwarder.stats().snapshot().0;
        let start = Instant::now();
        while forwarder.stats().snapshot().0 < before + 1000 {
            assert!(start.elapsed() < DEADLINE, "the flood did not go through");
            publisher
                .send(vec![b"x".to_vec(), vec![0; 64 * 1024]])
                .await
                .unwrap();
        }
        // Stopped with peers connected, which leave while its sockets linger: their
        // disconnections are events for monitors whose reading end is gone. libzmq must
        // not wait on them (the next round and the round trip below would hang: its I/O
        // thread is shared by every socket of the process).
        forwarder.stop().await;
        drop((publisher, subscribers));
        let mut router = open(
            Backend::Libzmq,
            Kind::Router,
            Mode::Bind,
            "tcp://127.0.0.1:0",
            Options::default(),
        )
        .await;
        let dealer = open(
            Backend::Libzmq,
            Kind::Dealer,
            Mode::Connect,
            router.endpoint(),
            Options::default().identity(b"d".to_vec()),
        )
        .await;
        dealer.send(vec![b"ping".to_vec()]).await.unwrap();
        let received = recv_within(&mut router, DEADLINE).await;
        assert_eq!(
            received,
            Some(vec![b"d".to_vec(), b"ping".to_vec()]),
            "round {round}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_can_name_the_address_a_message_came_from() {
    let mut router = open(
        Backend::default(),
        Kind::Router,
        Mode::Bind,
        "tcp://127.0.0.1:0",
        Options::default().peer_address(),
    )
    .await;
    let dealer = open(
        Backend::default(),
        Kind::Dealer,
        Mode::Connect,
        router.endpoint(),
        Options::default(),
    )
    .await;
    assert_eq!(router.receiver.last_peer_address(), None);
    dealer.send(vec![b"hello".to_vec()]).await.unwrap();
    let message = recv_within(&mut router, DEADLINE).await.unwrap();
    assert_eq!(message[1], b"hello");
    let peer = router.receiver.last_peer_address().unwrap();
    assert!(peer.starts_with("127.0.0.1"), "{peer}");
}
