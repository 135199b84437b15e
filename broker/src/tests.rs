//! Unit tests of [`Broker`](crate::Broker): one message in, what goes out, no sockets.

use super::*;
use crate::run::is_ready;
use proto::{Consistency, Op};

fn request(seq: u64) -> Vec<u8> {
    proto::encode(&Request {
        client_id: 7,
        seq,
        op: Op::Get { key: "k".into() },
        consistency: Consistency::Linearizable,
        credential: None,
    })
    .unwrap()
}

fn keys() -> Keyring {
    Keyring::parse(&"ab".repeat(32)).unwrap()
}

fn test_broker() -> Broker {
    Broker::new(&Config::default(), keys())
}

/// A control message sealed under the cluster key.
fn control(message: NodeToBroker) -> Vec<u8> {
    sealed_control(&proto::encode(&message).unwrap())
}

fn sealed_control(body: &[u8]) -> Vec<u8> {
    keys().seal(&[CONTROL], body)
}

/// The nonce of the challenge `out` sends connection `route`.
fn challenge_to(route: &[u8], out: &Outgoing) -> [u8; proto::fabric::CHALLENGE_NONCE_BYTES] {
    match out {
        Outgoing::BackendAnswer(m) if m.len() == 2 && m[0] == route => {
            proto::fabric::parse_broker_challenge(&m[1]).expect("a challenge")
        }
        other => panic!("no challenge to {route:?}: {other:?}"),
    }
}

/// Node `node` joins on connection `route`: READY, the challenge, its proof.
fn join(broker: &mut Broker, node: &str, route: &[u8], now: Instant) {
    let ready = control(NodeToBroker::Ready { node: node.into() });
    let out = broker.on_backend(vec![route.to_vec(), ready], now, None);
    let nonce = challenge_to(route, &out);
    let proof = control(NodeToBroker::Proof {
        node: node.into(),
        nonce: nonce.to_vec(),
    });
    assert_eq!(
        broker.on_backend(vec![route.to_vec(), proof], now, None),
        Outgoing::Nothing
    );
    assert!(broker.ring().is_live(node.as_bytes(), now));
}

fn response(outgoing: &Outgoing) -> Response {
    match outgoing {
        Outgoing::Frontend(m) | Outgoing::BackendAnswer(m) => proto::decode(&m[1]).unwrap(),
        other => panic!("not an answer: {other:?}"),
    }
}

#[test]
fn a_ping_is_answered_at_once_with_the_live_nodes() {
    let now = Instant::now();
    let mut broker = test_broker();
    let ping = vec![b"c1".to_vec(), BROKER_PING.to_vec()];
    assert_eq!(
        broker.on_frontend(ping.clone(), now),
        Outgoing::Frontend(vec![b"c1".to_vec(), broker_pong(0)])
    );
    join(&mut broker, "node-1", b"r1", now);
    assert_eq!(
        broker.on_frontend(ping, now),
        Outgoing::Frontend(vec![b"c1".to_vec(), broker_pong(1)])
    );
    let stats = broker.stats();
    assert_eq!((stats.pings, stats.requests, stats.malformed), (2, 0, 0));
}

#[test]
fn no_live_node_means_unavailable_with_the_seq() {
    let mut broker = test_broker();
    let out = broker.on_frontend(vec![b"c1".to_vec(), request(42)], Instant::now());
    let Outgoing::Frontend(m) = &out else {
        panic!("{out:?}")
    };
    assert_eq!(m[0], b"c1");
    let r = response(&out);
    assert_eq!(r.seq, 42);
    assert_eq!(r.result.unwrap_err().code, ErrorCode::Unavailable);
    assert_eq!(broker.stats().unavailable, 1);
}

#[test]
fn requests_go_to_nodes_and_replies_come_back() {
    let now = Instant::now();
    let mut broker = test_broker();
    join(&mut broker, "node-1", b"r1", now);
    let body = request(1);
    let out = broker.on_frontend(vec![b"c1".to_vec(), body.clone()], now);
    let Outgoing::Backend(forwarded) = out else {
        panic!("{out:?}")
    };
    assert_eq!(forwarded[..2], [b"r1".to_vec(), b"c1".to_vec()]);
    // Sealed for the node, bound to the client: it opens with the client's frame only.
    assert_ne!(forwarded[2], body);
    assert_eq!(keys().open(&[REQUEST, b"c1"], &forwarded[2]).unwrap(), body);
    assert!(keys().open(&[REQUEST, b"c2"], &forwarded[2]).is_err());
    let sealed = keys().seal(&[REPLY, b"c1"], b"\x01reply");
    let reply = vec![b"r1".to_vec(), b"c1".to_vec(), sealed];
    assert_eq!(
        broker.on_backend(reply, now, None),
        Outgoing::Frontend(vec![b"c1".to_vec(), b"\x01reply".to_vec()])
    );
    let stats = broker.stats();
    assert_eq!(
        (
            stats.requests,
            stats.replies,
            stats.joined,
            stats.challenges
        ),
        (1, 1, 1, 1)
    );
}

#[test]
fn malformed_requests_get_bad_request() {
    let now = Instant::now();
    let mut broker = test_broker();
    join(&mut broker, "node-1", b"r1", now);
    for message in [
        vec![b"c1".to_vec(), request(5), b"extra".to_vec()],
        vec![b"c1".to_vec(), Vec::new()],
        vec![b"c1".to_vec(), b"\x09garbage".to_vec()],
        vec![b"c1".to_vec()],
    ] {
        let out = broker.on_frontend(message, now);
        let r = response(&out);
        assert_eq!(r.result.unwrap_err().code, ErrorCode::BadRequest);
    }
    // The seq is echoed when it can be read.
    let out = broker.on_frontend(vec![b"c1".to_vec(), request(5), b"x".to_vec()], now);
    assert_eq!(response(&out).seq, 5);
    assert_eq!(broker.stats().malformed, 5);
    assert_eq!(broker.stats().requests, 0);
}

#[test]
fn malformed_messages_are_counted_by_socket_and_reason() {
    let now = Instant::now();
    let mut broker = test_broker();
    broker.on_frontend(vec![b"c1".to_vec(), request(1), b"extra".to_vec()], now);
    broker.on_frontend(vec![b"c1".to_vec(), Vec::new()], now);
    broker.on_frontend(vec![b"c1".to_vec(), b"\x09garbage".to_vec()], now);
    broker.on_frontend(vec![b"c1".to_vec(), b"\x01\xc1".to_vec()], now);
    broker.on_backend(vec![b"n".to_vec(); 4], now, None);
    broker.on_backend(vec![b"r1".to_vec(), sealed_control(b"junk")], now, None);
    let unasked = control(NodeToBroker::Proof {
        node: "node-2".into(),
        nonce: vec![7; proto::fabric::CHALLENGE_NONCE_BYTES],
    });
    broker.on_backend(vec![b"r1".to_vec(), unasked], now, None);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &broker.metrics()).unwrap();
    for (socket, reason) in [
        ("frontend", "frames"),
        ("frontend", "empty_body"),
        ("frontend", "version"),
        ("frontend", "undecodable"),
        ("backend", "frames"),
        ("backend", "undecodable"),
        ("backend", "unproved"),
    ] {
        let line =
            format!("broker_malformed_messages_total{{socket=\"{socket}\",reason=\"{reason}\"}} 1");
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }
    assert_eq!(broker.stats().malformed, 7);
    assert!(text.contains("broker_unavailable_total 0"), "{text}");
}

#[test]
fn with_no_node_an_undecodable_request_is_a_bad_request() {
    let mut broker = test_broker();
    let out = broker.on_frontend(vec![b"c1".to_vec(), b"\x01\xc1".to_vec()], Instant::now());
    assert_eq!(
        response(&out).result.unwrap_err().code,
        ErrorCode::BadRequest
    );
}

#[test]
fn only_the_connection_that_answered_its_challenge_is_routed_requests() {
    let now = Instant::now();
    let mut broker = test_broker();
    join(&mut broker, "node-1", b"r1", now);
    // A stranger replays node-1's authentic READY, heartbeat, and its proof of an
    // earlier challenge, from its own connection: it gets challenges, never the route.
    let ready = control(NodeToBroker::Ready {
        node: "node-1".into(),
    });
    let heartbeat = control(NodeToBroker::Heartbeat {
        node: "node-1".into(),
    });
    let nonce = challenge_to(
        b"r1",
        &broker.on_backend(vec![b"r1".to_vec(), ready.clone()], now, None),
    );
    let proof = control(NodeToBroker::Proof {
        node: "node-1".into(),
        nonce: nonce.to_vec(),
    });
    assert_eq!(
        broker.on_backend(vec![b"r1".to_vec(), proof.clone()], now, None),
        Outgoing::Nothing
    );
    for body in [ready, heartbeat.clone()] {
        let out = broker.on_backend(vec![b"evil".to_vec(), body], now, None);
        challenge_to(b"evil", &out);
    }
    assert_eq!(
        broker.on_backend(vec![b"evil".to_vec(), proof.clone()], now, None),
        Outgoing::Nothing
    );
    // Sent again on its own connection, it is only a heartbeat there.
    assert_eq!(
        broker.on_backend(vec![b"r1".to_vec(), proof], now, None),
        Outgoing::Nothing
    );
    for _ in 0..5 {
        let out = broker.on_frontend(vec![b"c1".to_vec(), request(1)], now);
        assert!(
            matches!(out, Outgoing::Backend(ref m) if m[0] == b"r1"),
            "{out:?}"
        );
    }
    // The stranger's heartbeats do not keep node-1 live once the node falls silent.
    let later = now + Config::default().liveness_timeout + Duration::from_millis(1);
    broker.on_backend(vec![b"evil".to_vec(), heartbeat.clone()], later, None);
    assert!(!broker.ring().is_live(b"node-1", later));
    // Its own heartbeat on its route does, as long as it is live.
    let soon = now + Duration::from_millis(900);
    assert_eq!(
        broker.on_backend(vec![b"r1".to_vec(), heartbeat], soon, None),
        Outgoing::Nothing
    );
    assert!(broker.ring().is_live(b"node-1", later));
    assert_eq!(broker.stats().malformed, 1, "the stranger's replayed proof");
    assert_eq!(broker.stats().joined, 1);
}

#[test]
fn a_process_without_the_key_cannot_join_the_ring_nor_answer_a_client() {
    let now = Instant::now();
    let mut broker = test_broker();
    let ready = proto::encode(&NodeToBroker::Ready {
        node: "node-9".into(),
    })
    .unwrap();
    // In clear, and sealed under another key: refused with a reason, never in the ring.
    let other = Keyring::parse(&"cd".repeat(32)).unwrap();
    let foreign = other.seal(&[CONTROL], &ready);
    for body in [ready.clone(), foreign] {
        let out = broker.on_backend(vec![b"node-9".to_vec(), body], now, Some("10.0.0.9"));
        let error = response(&out).result.unwrap_err();
        assert!(error.message.starts_with("unauthenticated"), "{error}");
    }
    assert!(broker.ring().is_empty());
    // A real node joins; a forged reply to one of its clients is dropped.
    join(&mut broker, "node-1", b"node-1", now);
    let Outgoing::Backend(request) = broker.on_frontend(vec![b"c1".to_vec(), request(1)], now)
    else {
        panic!("routed")
    };
    let forged = vec![b"node-1".to_vec(), b"c1".to_vec(), b"\x01ok".to_vec()];
    assert_eq!(broker.on_backend(forged, now, None), Outgoing::Nothing);
    // A bit flipped in an authentic reply: dropped too.
    let mut flipped = keys().seal(&[REPLY, b"c1"], b"\x01ok");
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let reply = vec![b"node-1".to_vec(), b"c1".to_vec(), flipped];
    assert_eq!(broker.on_backend(reply, now, None), Outgoing::Nothing);
    // A reply moved to another client does not open either.
    let moved = keys().seal(&[REPLY, b"c2"], b"\x01ok");
    let reply = vec![b"node-1".to_vec(), b"c1".to_vec(), moved];
    assert_eq!(broker.on_backend(reply, now, None), Outgoing::Nothing);
    assert_eq!(request.len(), 3);
    let stats = broker.stats();
    assert_eq!((stats.auth_rejected, stats.replies), (5, 0));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &broker.metrics()).unwrap();
    for (kind, reason, count) in [
        ("control", "malformed", 1),
        ("control", "unknown_key", 1),
        ("reply", "malformed", 1),
        ("reply", "forged", 2),
    ] {
        let line =
            format!("broker_auth_rejected_total{{kind=\"{kind}\",reason=\"{reason}\"}} {count}");
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }
}

#[test]
fn bad_backend_messages_are_counted_and_never_forwarded() {
    let now = Instant::now();
    let mut broker = test_broker();
    let out = broker.on_backend(vec![b"node-1".to_vec(), b"junk".to_vec()], now, None);
    assert!(matches!(out, Outgoing::BackendAnswer(ref m) if m.len() == 2 && m[0] == b"node-1"));
    assert_eq!(
        broker.on_backend(vec![b"node-1".to_vec()], now, None),
        Outgoing::Nothing
    );
    assert_eq!(
        broker.on_backend(vec![b"n".to_vec(); 4], now, None),
        Outgoing::Nothing
    );
    assert_eq!(
        broker.on_backend(vec![b"n".to_vec(), Vec::new(), b"x".to_vec()], now, None),
        Outgoing::Nothing
    );
    // The junk control message failed authentication; the rest are malformed.
    assert_eq!(broker.stats().auth_rejected, 1);
    assert_eq!(broker.stats().malformed, 3);
    assert_eq!(broker.stats().replies, 0);
}

#[test]
fn expired_nodes_get_nothing_and_return_on_a_proof() {
    let t0 = Instant::now();
    let config = Config::default();
    let mut broker = Broker::new(&config, keys());
    let hb = |n: &str| {
        vec![
            n.as_bytes().to_vec(),
            control(NodeToBroker::Heartbeat { node: n.into() }),
        ]
    };
    join(&mut broker, "node-1", b"node-1", t0);
    join(&mut broker, "node-2", b"node-2", t0);
    let t1 = t0 + config.liveness_timeout + Duration::from_millis(1);
    broker.on_backend(hb("node-1"), t1, None);
    for _ in 0..10 {
        let out = broker.on_frontend(vec![b"c".to_vec(), request(1)], t1);
        assert!(
            matches!(out, Outgoing::Backend(ref m) if m[0] == b"node-1"),
            "{out:?}"
        );
    }
    broker.expire(t1);
    assert_eq!(broker.stats().left, 1);
    // Its heartbeat after expiry earns a challenge; its proof brings it back.
    challenge_to(b"node-2", &broker.on_backend(hb("node-2"), t1, None));
    join(&mut broker, "node-2", b"node-2", t1);
    let targets: Vec<Vec<u8>> = (0..4)
        .map(
            |_| match broker.on_frontend(vec![b"c".to_vec(), request(1)], t1) {
                Outgoing::Backend(m) => m[0].clone(),
                other => panic!("{other:?}"),
            },
        )
        .collect();
    assert_eq!(targets.iter().filter(|t| *t == b"node-2").count(), 2);
}

#[test]
fn config_validation() {
    assert!(Config::default().validate().is_ok());
    let zero = Config {
        liveness_timeout: Duration::ZERO,
        ..Config::default()
    };
    assert_eq!(zero.validate(), Err(ConfigError::Zero("liveness timeout")));
    for bad in ["", "broker 1", &"b".repeat(200)] {
        let named = Config {
            name: bad.to_owned(),
            ..Config::default()
        };
        assert!(
            matches!(named.validate(), Err(ConfigError::Name { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn the_report_lists_live_nodes_in_ring_order_and_the_counters() {
    let t0 = Instant::now();
    let mut broker = test_broker();
    let about = About {
        name: "broker-2".into(),
        frontend: "tcp://127.0.0.1:1".into(),
        backend: "tcp://127.0.0.1:2".into(),
        started: t0,
    };
    let empty = broker.report(&about, t0);
    assert!(empty.live_nodes.is_empty() && !is_ready(&empty));
    for node in ["node-1", "node-2"] {
        join(&mut broker, node, node.as_bytes(), t0);
    }
    broker.on_frontend(vec![b"c1".to_vec(), request(1)], t0);
    let report = broker.report(&about, t0 + Duration::from_millis(250));
    assert_eq!(report.name, "broker-2");
    let mut live = report.live_nodes.clone();
    live.sort();
    assert_eq!(live, ["node-1", "node-2"]);
    assert_eq!((report.requests, report.uptime_ms), (1, 250));
    assert!(is_ready(&report));
    // Silent nodes leave the report as they leave the ring.
    let late = t0 + Config::default().liveness_timeout * 2;
    assert!(broker.report(&about, late).live_nodes.is_empty());
}
