//! The reference service over loopback, running in this process through
//! [`reference::run`]: stable ranks across a restart on the same data folder, expiry,
//! membership events, a corrupt registry file, hostile peers, health, the status port.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

#[path = "../../broker/tests/common/hostile.rs"]
mod hostile;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hostile::{fuzz_seed, hostile_message, one_tebibyte_frame_header, rss_bytes, tcp_address};
use proto::ErrorCode;
use proto::fabric::{Member, MembershipEvent, RefReply, RefRequest};
use rand::SeedableRng;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use transport::{Kind, Mode, Options, Socket};

const DEADLINE: Duration = Duration::from_secs(10);
/// Held by the tests that measure the memory of the whole process.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fresh folder under the system's temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "reference-test-{name}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The reference on a free port, publishing to a SUB socket that this test binds (a PUB
/// may connect to a bound SUB as well as to the proxy).
struct TestReference {
    endpoint: String,
    /// The status port (HTTP).
    status: std::net::SocketAddr,
    events: Socket,
    shutdown: CancellationToken,
    task: JoinHandle<Result<reference::Stats, reference::ReferenceError>>,
}

impl TestReference {
    async fn start(data_dir: &Path, config: reference::Config) -> TestReference {
        let events = Socket::open(
            Kind::Sub,
            Mode::Bind,
            "tcp://127.0.0.1:0",
            Options::default().subscribe(proto::topic::MEMBERSHIP),
        )
        .await
        .unwrap();
        let (registry, store) = reference::open_registry(data_dir, config.expiry_timeout).unwrap();
        let (router, publisher) = reference::bind("tcp://127.0.0.1:0", events.endpoint())
            .await
            .unwrap();
        let endpoint = router.endpoint().to_owned();
        let status = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let status_addr = status.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let sockets = reference::Sockets {
            router,
            publisher,
            status,
        };
        let task = tokio::spawn(reference::run(
            sockets,
            registry,
            store,
            config,
            keys(),
            shutdown.clone(),
        ));
        TestReference {
            endpoint,
            status: status_addr,
            events,
            shutdown,
            task,
        }
    }

    async fn stop(self) -> reference::Stats {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the reference stops on shutdown")
            .unwrap()
            .unwrap()
    }

    async fn get(&self, path: &str) -> (u16, String) {
        service::http::get(self.status, path, DEADLINE)
            .await
            .unwrap()
    }

    async fn report(&self) -> proto::report::ReferenceReport {
        let (code, body) = self.get("/status").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn node(&self) -> NodeClient {
        NodeClient(
            Socket::open(
                Kind::Dealer,
                Mode::Connect,
                &self.endpoint,
                Options::default(),
            )
            .await
            .unwrap(),
        )
    }

    /// The next membership event that satisfies `wanted`.
    async fn event_where(&mut self, wanted: impl Fn(&MembershipEvent) -> bool) -> MembershipEvent {
        let start = Instant::now();
        loop {
            let message = tokio::time::timeout(DEADLINE, self.events.recv())
                .await
                .expect("a membership event in time")
                .unwrap();
            assert_eq!(message[0], proto::topic::MEMBERSHIP.as_bytes());
            let body = keys()
                .open(&[proto::fabric::MEMBERSHIP_EVENT, &message[0]], &message[1])
                .expect("events are sealed");
            let event: MembershipEvent = proto::decode(&body).unwrap();
            if wanted(&event) {
                return event;
            }
            assert!(start.elapsed() < DEADLINE, "no such event: last {event:?}");
        }
    }
}

/// The cluster key of the tests' reference and nodes.
fn keys() -> proto::seal::Keyring {
    proto::seal::Keyring::parse(&"ab".repeat(32)).unwrap()
}

/// A request as a node with the cluster key sends it.
fn sealed(request: &RefRequest) -> Vec<u8> {
    keys().seal(
        &[proto::fabric::REFERENCE_REQUEST],
        &proto::encode(request).unwrap(),
    )
}

struct NodeClient(Socket);

impl NodeClient {
    async fn ask(&mut self, request: &RefRequest) -> RefReply {
        self.0.send(vec![sealed(request)]).await.unwrap();
        let message = tokio::time::timeout(DEADLINE, self.0.recv())
            .await
            .expect("an answer in time")
            .unwrap();
        assert_eq!(message.len(), 1);
        let body = keys()
            .open(&[proto::fabric::REFERENCE_REPLY], &message[0])
            .expect("replies are sealed");
        proto::decode(&body).unwrap()
    }

    async fn register(&mut self, node: &str) -> u32 {
        match self
            .ask(&RefRequest::Register {
                stamp: proto::fabric::Stamp::next_of_process(),
                node: node.into(),
                status_addr: format!("127.0.0.1:7{node}"),
            })
            .await
        {
            RefReply::Registered { rank, members } => {
                assert!(
                    members
                        .iter()
                        .any(|m| m.node == node && m.rank == rank && m.alive)
                );
                rank
            }
            other => panic!("not registered: {other:?}"),
        }
    }

    async fn heartbeat(&mut self, node: &str) -> bool {
        match self
            .ask(&RefRequest::Heartbeat {
                stamp: proto::fabric::Stamp::next_of_process(),
                node: node.into(),
            })
            .await
        {
            RefReply::HeartbeatAck { known } => known,
            other => panic!("{other:?}"),
        }
    }

    async fn members(&mut self) -> Vec<Member> {
        match self.ask(&RefRequest::Members).await {
            RefReply::Members(members) => members,
            other => panic!("{other:?}"),
        }
    }
}

fn alive(members: &[Member], node: &str) -> Option<bool> {
    members.iter().find(|m| m.node == node).map(|m| m.alive)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_reference_gives_a_re_registered_name_the_same_rank() {
    let data = TempDir::new("restart");
    let first = TestReference::start(data.path(), reference::Config::default()).await;
    let mut node = first.node().await;
    for (name, rank) in [("node-a", 1), ("node-b", 2), ("node-c", 3)] {
        assert_eq!(node.register(name).await, rank);
    }
    let first_stats = first.stop().await;
    assert!(first_stats.saves >= 3, "{first_stats:?}");

    // Same folder, new process state, new port.
    let mut second = TestReference::start(data.path(), reference::Config::default()).await;
    let mut node = second.node().await;
    // Known names, nobody alive yet: a heartbeat is told to register again.
    let members = node.members().await;
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| !m.alive), "{members:?}");
    assert!(!node.heartbeat("node-b").await);
    assert_eq!(node.register("node-b").await, 2);
    assert_eq!(
        node.register("node-new").await,
        4,
        "a new name gets the next free rank"
    );
    assert_eq!(node.register("node-a").await, 1);
    assert!(node.heartbeat("node-b").await);
    // The event published after the restart moved past every epoch of the first run.
    let event = second
        .event_where(|e| alive(&e.members, "node-a") == Some(true))
        .await;
    assert!(event.epoch > 3, "{event:?}");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_member_is_reported_as_gone_and_published() {
    let data = TempDir::new("expiry");
    let config = reference::Config {
        expiry_timeout: Duration::from_millis(300),
        publish_interval: Duration::from_millis(100),
        ..reference::Config::default()
    };
    let mut service = TestReference::start(data.path(), config).await;
    let mut node = service.node().await;
    assert_eq!(node.register("node-1").await, 1);
    assert_eq!(node.register("node-2").await, 2);
    let joined = service
        .event_where(|e| e.members.len() == 2 && e.members.iter().all(|m| m.alive))
        .await;

    // node-1 keeps heartbeating (registering again if a stall of this busy machine made
    // it lapse, as a real node does), node-2 falls silent.
    let start = Instant::now();
    let members = loop {
        if !node.heartbeat("node-1").await {
            assert_eq!(node.register("node-1").await, 1);
        }
        let members = node.members().await;
        if alive(&members, "node-2") == Some(false) && alive(&members, "node-1") == Some(true) {
            break members;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "node-2 never expired: {members:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let gone = members.iter().find(|m| m.node == "node-2").unwrap();
    assert_eq!(gone.rank, 2, "a gone member keeps its rank");
    assert!(gone.last_heartbeat_unix_ms > 0);

    // The change is published with a higher epoch.
    let event = service
        .event_where(|e| alive(&e.members, "node-2") == Some(false))
        .await;
    assert!(event.epoch > joined.epoch, "{event:?} after {joined:?}");
    let (_, metrics) = service.get("/metrics").await;
    assert!(
        !metrics.contains("reference_expirations_total 0"),
        "the expiry is counted:\n{metrics}"
    );

    // It is told to register again, and comes back with its rank.
    assert!(!node.heartbeat("node-2").await);
    assert_eq!(node.register("node-2").await, 2);
    let back = service
        .event_where(|e| alive(&e.members, "node-2") == Some(true))
        .await;
    assert!(back.epoch > event.epoch);
    let stats = service.stop().await;
    assert!(stats.published >= 3, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_is_republished_periodically_without_changes() {
    let data = TempDir::new("periodic");
    let config = reference::Config {
        publish_interval: Duration::from_millis(50),
        ..reference::Config::default()
    };
    let mut service = TestReference::start(data.path(), config).await;
    let mut node = service.node().await;
    node.register("node-1").await;
    let first = service.event_where(|e| e.members.len() == 1).await;
    // Several more copies of the same epoch arrive with nothing changing.
    for _ in 0..3 {
        let again = service.event_where(|_| true).await;
        assert_eq!(again.epoch, first.epoch);
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_registry_file_is_a_clear_error() {
    let data = TempDir::new("corrupt");
    let file = data.path().join(reference::store::FILE_NAME);
    std::fs::write(&file, b"{\"format\": 1, \"members\": [oops").unwrap();
    let error = reference::open_registry(data.path(), Duration::from_secs(5)).unwrap_err();
    assert!(
        error.to_string().contains(&file.display().to_string()),
        "{error}"
    );
    assert!(matches!(
        error,
        reference::store::StoreError::Corrupt { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_answered_bad_request() {
    let data = TempDir::new("malformed");
    let service = TestReference::start(data.path(), reference::Config::default()).await;
    let mut node = service.node().await;
    for message in [vec![b"junk".to_vec()], vec![Vec::new(), Vec::new()]] {
        node.0.send(message).await.unwrap();
        let reply = tokio::time::timeout(DEADLINE, node.0.recv())
            .await
            .unwrap()
            .unwrap();
        let RefReply::Error(error) = proto::decode(&reply[0]).unwrap() else {
            panic!("not an error")
        };
        assert_eq!(error.code, ErrorCode::BadRequest);
    }
    assert!(node.members().await.is_empty());
    let stats = service.stop().await;
    // The junk failed authentication before anything was decoded; two body frames are
    // malformed before that.
    assert_eq!((stats.malformed, stats.auth_rejected), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_survives_hostile_peers_with_flat_memory() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let seed = fuzz_seed();
    let data = TempDir::new("hostile");
    let service = TestReference::start(data.path(), reference::Config::default()).await;
    let mut node = service.node().await;
    node.register("node-1").await;
    let rss_before = rss_bytes();
    assert!(rss_before > 0, "VmRSS is readable");

    let mut attackers = Vec::new();
    for _ in 0..8 {
        let mut stream = std::net::TcpStream::connect(tcp_address(&service.endpoint)).unwrap();
        stream.write_all(&one_tebibyte_frame_header()).unwrap();
        let _ = stream.write_all(&[0xAB; 4096]);
        attackers.push(stream);
    }
    let valid = vec![
        sealed(&RefRequest::Register {
            stamp: proto::fabric::Stamp::next_of_process(),
            node: "node-x".into(),
            status_addr: String::new(),
        }),
        sealed(&RefRequest::Heartbeat {
            stamp: proto::fabric::Stamp::next_of_process(),
            node: "node-1".into(),
        }),
        sealed(&RefRequest::Members),
    ];
    let socket = Socket::open(
        Kind::Dealer,
        Mode::Connect,
        &service.endpoint,
        Options::default(),
    )
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
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..10_000 {
        tx.send(hostile_message(&mut rng, &valid)).await.unwrap();
    }
    for _ in 0..20 {
        let mut junk = std::net::TcpStream::connect(tcp_address(&service.endpoint)).unwrap();
        let mut bytes = vec![0u8; rand::Rng::random_range(&mut rng, 1..4096)];
        rand::Rng::fill(&mut rng, &mut bytes[..]);
        let _ = junk.write_all(&bytes);
    }
    let answers = drain.await.unwrap();

    // Still answering, with its registry intact, while the attackers hold on.
    assert!(node.heartbeat("node-1").await);
    let members = node.members().await;
    assert_eq!(members.iter().find(|m| m.node == "node-1").unwrap().rank, 1);
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(grown < 64 * 1024 * 1024, "memory grew by {grown} bytes");
    drop(attackers);
    let stats = service.stop().await;
    eprintln!("answers {answers}; {stats:?}");
    assert!(stats.malformed + stats.auth_rejected > 1000, "{stats:?}");
    assert!(answers > 5000, "{answers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_when_the_reference_runs_and_fails_when_not() {
    let data = TempDir::new("health");
    let service = TestReference::start(data.path(), reference::Config::default()).await;
    let mut node = service.node().await;
    node.register("node-1").await;
    let health = reference::health(&service.endpoint, DEADLINE, Some(&keys()))
        .await
        .unwrap();
    assert!(
        matches!(health, reference::Health::Members(ref m) if m.len() == 1),
        "{health:?}"
    );
    // Without the key, the refusal is the proof of life (and shows no member).
    let health = reference::health(&service.endpoint, DEADLINE, None)
        .await
        .unwrap();
    assert_eq!(health, reference::Health::Refused);
    let endpoint = service.endpoint.clone();
    service.stop().await;
    let error = reference::health(&endpoint, Duration::from_millis(300), None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, reference::HealthError::Timeout(_)),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_port_shows_members_and_epoch() {
    let data = TempDir::new("status");
    let service = TestReference::start(data.path(), reference::Config::default()).await;
    assert_eq!(service.get("/livez").await, (200, "ok\n".into()));
    assert_eq!(service.get("/readyz").await, (200, "ready\n".into()));
    assert_eq!(service.get("/nothing").await.0, 404);
    let empty = service.report().await;
    assert_eq!(empty.endpoint, service.endpoint);
    assert!(empty.members.is_empty());
    assert!(empty.registry_saved && empty.last_save_error.is_none());
    let mut node = service.node().await;
    assert_eq!(node.register("node-1").await, 1);
    assert_eq!(node.register("node-2").await, 2);
    let report = service.report().await;
    let members: Vec<_> = report
        .members
        .iter()
        .map(|m| (m.node.as_str(), m.rank, m.alive))
        .collect();
    assert_eq!(members, [("node-1", 1, true), ("node-2", 2, true)]);
    assert!(
        report
            .members
            .iter()
            .all(|m| m.last_heartbeat_ms_ago.is_some())
    );
    assert!(report.epoch > empty.epoch, "{report:?}");
    // Once every rank is taken, a new name is refused, and counted with its reason.
    for i in 3..=proto::limits::MAX_MEMBERS {
        node.register(&format!("n-{i}")).await;
    }
    let refused = node
        .ask(&RefRequest::Register {
            stamp: proto::fabric::Stamp::next_of_process(),
            node: "one-too-many".into(),
            status_addr: String::new(),
        })
        .await;
    assert!(matches!(refused, RefReply::Error(_)), "{refused:?}");
    let mut raw = service.node().await;
    raw.0.send(vec![b"junk".to_vec()]).await.unwrap();
    let _ = raw.0.recv().await;
    let (code, metrics) = service.get("/metrics").await;
    assert_eq!(code, 200);
    for line in [
        "reference_members 64",
        "reference_members_alive 64",
        "reference_expirations_total 0",
        "reference_registrations_total 64",
        "reference_refused_registrations_total{reason=\"full\"} 1",
        "reference_refused_registrations_total{reason=\"invalid\"} 0",
        // Junk does not open under the cluster key: refused before it is decoded.
        "reference_malformed_requests_total 0",
        "reference_auth_rejected_total{reason=\"malformed\"} 1",
        "reference_registry_save_failures_total 0",
        "reference_requests_total",
        "reference_registry_saves_total",
        "reference_membership_events_total",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    service.stop().await;
}

/// Waits until `/status` says whether the registry is saved.
async fn wait_saved(service: &TestReference, saved: bool) -> proto::report::ReferenceReport {
    let start = Instant::now();
    loop {
        let report = service.report().await;
        if report.registry_saved == saved {
            return report;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "never saved={saved}: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A full disk, without root or a small tmpfs: the store writes `registry.json.tmp` and
/// renames it over `registry.json`, so a `registry.json.tmp` that is a symbolic link to
/// `/dev/full` makes every write fail with ENOSPC, as a full file system does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_names_and_serves_the_rest_until_saving_works_again() {
    let data = TempDir::new("full-disk");
    let config = reference::Config {
        publish_interval: Duration::from_millis(100),
        ..reference::Config::default()
    };
    let mut service = TestReference::start(data.path(), config).await;
    let mut node = service.node().await;
    assert_eq!(node.register("node-1").await, 1);
    wait_saved(&service, true).await;

    let temporary = data
        .path()
        .join(format!("{}.tmp", reference::store::FILE_NAME));
    std::os::unix::fs::symlink("/dev/full", &temporary).unwrap();
    // A new name: its rank cannot be put on disk, so it is refused, and the reason says so.
    let refused = node
        .ask(&RefRequest::Register {
            stamp: proto::fabric::Stamp::next_of_process(),
            node: "node-2".into(),
            status_addr: String::new(),
        })
        .await;
    let RefReply::Error(error) = refused else {
        panic!("registered on a full disk: {refused:?}")
    };
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(
        error.message.starts_with("registry not saved: ")
            && error.message.contains("No space left on device"),
        "{}",
        error.message
    );
    let report = wait_saved(&service, false).await;
    let reason = report.last_save_error.unwrap();
    assert!(reason.contains("No space left on device"), "{reason}");
    assert_eq!(
        report.members.len(),
        1,
        "node-2 holds no rank: {:?}",
        report.members
    );

    // Known names, heartbeats, member lists and membership events go on.
    assert_eq!(node.register("node-1").await, 1);
    assert!(node.heartbeat("node-1").await);
    let members = node.members().await;
    assert_eq!(alive(&members, "node-1"), Some(true));
    assert_eq!(alive(&members, "node-2"), None);
    service
        .event_where(|e| alive(&e.members, "node-1") == Some(true))
        .await;
    // Still refused while the disk is full (retries keep failing in the background).
    let again = node
        .ask(&RefRequest::Register {
            stamp: proto::fabric::Stamp::next_of_process(),
            node: "node-3".into(),
            status_addr: String::new(),
        })
        .await;
    assert!(
        matches!(&again, RefReply::Error(e) if e.code == ErrorCode::Unavailable),
        "{again:?}"
    );
    let (_, metrics) = service.get("/metrics").await;
    assert!(
        !metrics.contains("reference_registry_save_failures_total 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("reference_refused_registrations_total{reason=\"not_saved\"} 2"),
        "{metrics}"
    );
    assert!(!service.task.is_finished(), "the reference keeps running");
    let before = std::fs::read(data.path().join(reference::store::FILE_NAME)).unwrap();
    assert!(!String::from_utf8_lossy(&before).contains("node-2"));

    // The disk has room again: the next retry saves, and a new name gets its rank.
    std::fs::remove_file(&temporary).unwrap();
    let report = wait_saved(&service, true).await;
    assert_eq!(report.last_save_error, None);
    assert_eq!(node.register("node-2").await, 2);
    let store = reference::store::Store::open(data.path()).unwrap();
    let on_disk = store.load().unwrap().unwrap();
    let ranks: Vec<_> = on_disk
        .members
        .iter()
        .map(|m| (m.node.as_str(), m.rank))
        .collect();
    assert_eq!(ranks, [("node-1", 1), ("node-2", 2)]);
    service.stop().await;

    // And a restarted reference gives both their ranks back.
    let second = TestReference::start(data.path(), reference::Config::default()).await;
    let mut node = second.node().await;
    assert_eq!(node.register("node-2").await, 2);
    assert_eq!(node.register("node-1").await, 1);
    second.stop().await;
}
