//! The reference's handling of requests, without sockets: registrations, heartbeats,
//! member lists, refusals and saves.

use super::*;

fn keys() -> Keyring {
    Keyring::parse(&"ab".repeat(32)).unwrap()
}

/// A request sealed as a node with the cluster key sends it.
fn request(request: &RefRequest) -> Multipart {
    let body = keys().seal(&[REFERENCE_REQUEST], &proto::encode(request).unwrap());
    vec![b"peer".to_vec(), body]
}

/// The reply, opened (it is sealed).
fn answer(out: Option<Multipart>) -> RefReply {
    let out = out.expect("a reply");
    assert_eq!(out[0], b"peer");
    let body = keys().open(&[REFERENCE_REPLY], &out[1]).unwrap();
    proto::decode(&body).unwrap()
}

#[test]
fn register_heartbeat_members() {
    let now = Now::system();
    let mut reference = Reference::new(
        Registry::new(Duration::from_secs(5)),
        &Config::default(),
        keys(),
    );
    let register = RefRequest::Register {
        stamp: proto::fabric::Stamp::next_of_process(),
        node: "node-1".into(),
        status_addr: "127.0.0.1:7001".into(),
    };
    let RefReply::Registered { rank, members } =
        answer(reference.on_request(request(&register), now))
    else {
        panic!()
    };
    assert_eq!(rank, 1);
    assert_eq!(members.len(), 1);
    assert_eq!(
        answer(reference.on_request(
            request(&RefRequest::Heartbeat {
                stamp: proto::fabric::Stamp::next_of_process(),
                node: "node-1".into()
            }),
            now
        )),
        RefReply::HeartbeatAck { known: true }
    );
    assert_eq!(
        answer(reference.on_request(
            request(&RefRequest::Heartbeat {
                stamp: proto::fabric::Stamp::next_of_process(),
                node: "node-2".into()
            }),
            now
        )),
        RefReply::HeartbeatAck { known: false }
    );
    let RefReply::Members(members) =
        answer(reference.on_request(request(&RefRequest::Members), now))
    else {
        panic!()
    };
    assert_eq!(members[0].node, "node-1");
    assert_eq!(reference.stats().requests, 4);
}

fn register(node: &str) -> RefRequest {
    RefRequest::Register {
        stamp: proto::fabric::Stamp::next_of_process(),
        node: node.into(),
        status_addr: String::new(),
    }
}

fn full_disk() -> StoreError {
    StoreError::Io {
        path: "data/reference/registry.json.tmp".into(),
        source: std::io::Error::from_raw_os_error(28),
    }
}

fn refusal(reply: RefReply) -> proto::Error {
    match reply {
        RefReply::Error(error) => error,
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn a_registry_that_cannot_be_saved_refuses_new_names_and_serves_the_rest() {
    let now = Now::system();
    let started = now.instant;
    let mut reference = Reference::new(
        Registry::new(Duration::from_secs(5)),
        &Config::default(),
        keys(),
    );
    answer(reference.on_request(request(&register("node-1")), now));
    let on_disk = reference.registry().persisted();
    reference.saved(&on_disk);
    assert!(reference.report("e", started, now).registry_saved);

    // node-2 registers in the batch whose save fails: its reply refuses it.
    let pending = reference
        .take(request(&register("node-2")), now, None)
        .unwrap();
    reference.save_failed(&full_disk(), now.instant);
    let error = refusal(answer(reference.answer(pending, now)));
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(
        error.message.starts_with("registry not saved: ")
            && error.message.contains("No space left on device"),
        "{}",
        error.message
    );
    // A new name while unsaved is refused at once, and nothing is added.
    let error = refusal(answer(
        reference.on_request(request(&register("node-3")), now),
    ));
    assert_eq!(error.code, ErrorCode::Unavailable);
    // Retries that fail soon after are counted, not logged each.
    reference.save_failed(&full_disk(), now.instant);
    assert_eq!(reference.save_log.failures, 2);
    assert_eq!(reference.save_log.not_logged, 1);
    assert_eq!(reference.registry().rank("node-2"), None);
    assert_eq!(reference.registry().rank("node-3"), None);

    // Known names, heartbeats and member lists go on.
    let RefReply::Registered { rank, .. } =
        answer(reference.on_request(request(&register("node-1")), now))
    else {
        panic!()
    };
    assert_eq!(rank, 1);
    let heartbeat = RefRequest::Heartbeat {
        stamp: proto::fabric::Stamp::next_of_process(),
        node: "node-1".into(),
    };
    assert_eq!(
        answer(reference.on_request(request(&heartbeat), now)),
        RefReply::HeartbeatAck { known: true }
    );
    let RefReply::Members(members) =
        answer(reference.on_request(request(&RefRequest::Members), now))
    else {
        panic!()
    };
    assert_eq!(members.len(), 1);
    let report = reference.report("e", started, now);
    assert!(!report.registry_saved);
    assert!(report.last_save_error.unwrap().contains("No space left"));

    // Saved again: new names get their ranks, the smallest free one first.
    let on_disk = reference.registry().persisted();
    reference.saved(&on_disk);
    assert_eq!(reference.save_error(), None);
    let RefReply::Registered { rank, .. } =
        answer(reference.on_request(request(&register("node-2")), now))
    else {
        panic!()
    };
    assert_eq!(rank, 2);
    let report = reference.report("e", started, now);
    assert!(report.registry_saved && report.last_save_error.is_none());
}

#[test]
fn malformed_requests_get_bad_request() {
    let now = Now::system();
    let mut reference = Reference::new(
        Registry::new(Duration::from_secs(5)),
        &Config::default(),
        keys(),
    );
    let sealed_junk = keys().seal(&[REFERENCE_REQUEST], b"junk");
    for message in [
        vec![b"peer".to_vec(), sealed_junk],
        vec![b"peer".to_vec()],
        vec![
            b"peer".to_vec(),
            proto::encode(&RefRequest::Members).unwrap(),
            Vec::new(),
        ],
    ] {
        // Refusals of what could not be opened are in clear; the others sealed.
        let out = reference.on_request(message, now).expect("an answer");
        let body = keys()
            .open(&[REFERENCE_REPLY], &out[1])
            .unwrap_or(out[1].clone());
        let RefReply::Error(error) = proto::decode(&body).unwrap() else {
            panic!()
        };
        assert_eq!(error.code, ErrorCode::BadRequest);
    }
    assert_eq!(reference.on_request(vec![], now), None);
    assert_eq!(
        reference.on_request(vec![Vec::new(), b"x".to_vec()], now),
        None
    );
    assert_eq!(reference.stats().malformed, 4);
    assert_eq!(reference.stats().requests, 0);
}

#[test]
fn a_process_without_the_key_gets_no_rank_and_reads_nothing() {
    let now = Now::system();
    let mut reference = Reference::new(
        Registry::new(Duration::from_secs(5)),
        &Config::default(),
        keys(),
    );
    let register = proto::encode(&register("node-9")).unwrap();
    let other = Keyring::parse(&"cd".repeat(32)).unwrap();
    for body in [
        register.clone(),
        other.seal(&[REFERENCE_REQUEST], &register),
    ] {
        let out = reference.take(vec![b"peer".to_vec(), body], now, Some("10.0.0.9"));
        let out = reference.answer(out.unwrap(), now).unwrap();
        // Told why, in clear: nothing of the registry in it.
        let RefReply::Error(error) = proto::decode(&out[1]).unwrap() else {
            panic!("{out:?}")
        };
        assert!(error.message.starts_with("unauthenticated"), "{error}");
    }
    assert_eq!(reference.registry().rank("node-9"), None, "no rank given");
    // A bit flipped in an authentic request: refused as well.
    let mut flipped = keys().seal(&[REFERENCE_REQUEST], &register);
    flipped[40] ^= 1;
    reference.on_request(vec![b"peer".to_vec(), flipped], now);
    assert_eq!(reference.registry().rank("node-9"), None);
    assert_eq!(reference.stats().auth_rejected, 3);
    assert_eq!(reference.stats().requests, 0);
    // Its events are sealed: a subscriber without the key reads nothing.
    let frames = reference.event_frames(now).unwrap();
    assert!(proto::decode::<proto::fabric::MembershipEvent>(&frames[1]).is_err());
    let opened = keys()
        .open(&[MEMBERSHIP_EVENT, &frames[0]], &frames[1])
        .unwrap();
    assert!(proto::decode::<proto::fabric::MembershipEvent>(&opened).is_ok());
}

#[test]
fn config_validation() {
    assert!(Config::default().validate().is_ok());
    let zero = Config {
        expiry_timeout: Duration::ZERO,
        ..Config::default()
    };
    assert!(zero.validate().is_err());
}
