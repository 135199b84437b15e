//! Unit tests of `http.rs`.

use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;

use super::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Report {
    name: String,
    ready: bool,
}

const WAIT: Duration = Duration::from_secs(5);

struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    answering: tokio::task::JoinHandle<()>,
}

/// A server whose loop answers with `report` (readiness from its flag) and whose
/// metrics hold one counter.
async fn start(report: Report, limits: Limits) -> Server {
    let mut registry = Registry::with_prefix("test");
    let counter = Counter::<u64>::default();
    counter.inc_by(3);
    registry.register("things", "Things counted", counter);
    let (port, mut queries) = status_port(Arc::new(registry), |r: &Report| r.ready);
    let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, port.with_limits(limits), shutdown.clone()));
    let answering = tokio::spawn(async move {
        while let Some(query) = queries.recv().await {
            query.answer(report.clone());
        }
    });
    Server {
        addr,
        shutdown,
        server,
        answering,
    }
}

impl Server {
    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(WAIT, self.server).await;
        result.unwrap().unwrap().unwrap();
        self.answering.abort();
    }
}

#[tokio::test]
async fn serves_status_readyz_livez_metrics_and_404() {
    let report = Report {
        name: "broker-1".into(),
        ready: true,
    };
    let server = start(report.clone(), Limits::default()).await;
    let (code, body) = get(server.addr, "/status", WAIT).await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(serde_json::from_str::<Report>(&body).unwrap(), report);
    assert_eq!(
        get(server.addr, "/readyz", WAIT).await.unwrap(),
        (200, "ready\n".into())
    );
    assert_eq!(
        get(server.addr, "/livez", WAIT).await.unwrap(),
        (200, "ok\n".into())
    );
    let (code, body) = get(server.addr, "/metrics", WAIT).await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("test_things_total 3"), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert_eq!(get(server.addr, "/nothing", WAIT).await.unwrap().0, 404);
    assert_eq!(get(server.addr, "/", WAIT).await.unwrap().0, 404);
    server.stop().await;
}

#[tokio::test]
async fn metrics_have_the_openmetrics_content_type() {
    let server = start(
        Report {
            name: "x".into(),
            ready: true,
        },
        Limits::default(),
    )
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let head = raw.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(
        head.contains(&format!("content-type: {METRICS_CONTENT_TYPE}")),
        "{head}"
    );
    server.stop().await;
}

#[tokio::test]
async fn not_ready_is_503_and_a_silent_loop_is_busy() {
    let server = start(
        Report {
            name: "proxy-2".into(),
            ready: false,
        },
        Limits::default(),
    )
    .await;
    assert_eq!(
        get(server.addr, "/readyz", WAIT).await.unwrap(),
        (503, "not ready\n".into())
    );
    // The loop is gone: nobody answers, and liveness is still the server's own.
    let Server {
        addr,
        shutdown,
        server,
        answering,
    } = server;
    answering.abort();
    let _ = answering.await;
    assert_eq!(get(addr, "/status", WAIT).await.unwrap().0, 503);
    assert_eq!(get(addr, "/readyz", WAIT).await.unwrap().0, 503);
    assert_eq!(get(addr, "/livez", WAIT).await.unwrap().0, 200);
    shutdown.cancel();
    tokio::time::timeout(WAIT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn idle_connections_give_their_slot_back() {
    let limits = Limits {
        max_connections: 2,
        idle_timeout: Duration::from_millis(300),
    };
    let server = start(
        Report {
            name: "x".into(),
            ready: true,
        },
        limits,
    )
    .await;
    // Two connections that never finish their request take both slots.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(b"GET /livez HTTP/1.0\r\n").await.unwrap();
        idle.push(stream);
    }
    // A third request waits for a slot, and gets one once the idle ones are closed.
    let started = std::time::Instant::now();
    assert_eq!(get(server.addr, "/livez", WAIT).await.unwrap().0, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "answered at once: the limit did not hold ({:?})",
        started.elapsed()
    );
    for mut stream in idle {
        let mut rest = Vec::new();
        // Closed by the server: the read ends (with or without an error).
        let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest))
            .await
            .unwrap();
    }
    server.stop().await;
}

#[tokio::test]
async fn stopping_does_not_wait_for_idle_connections() {
    let server = start(
        Report {
            name: "x".into(),
            ready: true,
        },
        Limits::default(),
    )
    .await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /status HTTP/1.0\r\n").await.unwrap();
    let started = std::time::Instant::now();
    server.stop().await;
    assert!(started.elapsed() < SHUTDOWN_GRACE + Duration::from_secs(1));
}

#[tokio::test]
async fn a_taken_port_is_an_error_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let error = bind(addr).await.unwrap_err();
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
}
