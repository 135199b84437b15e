//! # e2e — end-to-end tests of paxos-zmq over real processes on loopback
//!
//! [`Cluster`] starts the real binaries — `reference`, `proxy`, `broker` and `node`s —
//! on free loopback ports, each node with its own data folder under one temporary
//! folder, and kills every process it started when dropped (also when a test panics).
//! [`Client`] is a small test client: DEALER sockets to the broker frontend, many
//! sessions multiplexed over them, each request retried with the same `(client_id, seq)`
//! until its deadline.
//!
//! ## Binaries
//! The harness runs the binaries of `$PAXOS_BIN_DIR` if set; otherwise those of the
//! cargo profile the tests were built with (`target/debug` for `cargo test`,
//! `target/release` for `cargo test --release`), which it first brings up to date with
//! one `cargo build --bins -p node -p broker -p proxy -p reference -p bots -p client` (set
//! `E2E_NO_BUILD=1` to skip that). So:
//!
//! ```text
//! cargo test -p e2e                         # functional tests (debug binaries)
//! cargo test -p e2e --release -- --ignored bench --nocapture   # the benchmark
//! ```
//!
//! ## Rules the tests follow
//! No fixed sleep is used as synchronisation: every wait polls a condition (a `/status`
//! answer, a file, a reply) until a deadline, and a test fails with what it last saw.
//! Ports come from the OS (bind port 0, read it, release it).

#![allow(clippy::print_stdout)] // the benchmark prints its table

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use proto::{Consistency, Error, ErrorCode, Op, Reply, Request, Response};
use tokio::sync::oneshot;
use transport::{Kind, Mode, Options, Socket};

pub use node::StatusReport;

pub mod stranger;

/// How long a test waits for a cluster to elect a leader or converge before failing.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Interval between two polls of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Returns when `condition` gives `Some`, polling every [`POLL_INTERVAL`]; panics with
/// `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Ports handed out by [`free_port`]: below Linux's ephemeral range (32768-60999), so
/// that the kernel never gives one of them to an outgoing connection between the test
/// picking it and a process binding it (a busy benchmark opens many connections).
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free TCP port on 127.0.0.1 from [`TEST_PORTS`], each handed out once per test
/// process. It is released at once, so another process may in rare cases take it first.
pub fn free_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let span = u64::from(TEST_PORTS.end - TEST_PORTS.start);
    // Start somewhere that depends on the process, so that test binaries run one after
    // the other do not all try the same ports.
    let offset = u64::from(std::process::id()) * 97;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = TEST_PORTS.start + u16::try_from((offset + n) % span).unwrap_or(0);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?}")
}

/// The folder of the binaries under test (see the crate page).
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PAXOS_BIN_DIR") {
            return PathBuf::from(dir);
        }
        // target/<profile>/deps/e2e-<hash> -> target/<profile>
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current exe: {e}"));
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .unwrap_or_else(|| panic!("unexpected test path {}", exe.display()))
            .to_path_buf();
        if std::env::var_os("E2E_NO_BUILD").is_none() {
            build_binaries(&profile_dir);
        }
        profile_dir
    })
    .clone()
}

fn build_binaries(profile_dir: &Path) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| panic!("no workspace"));
    let target_dir = profile_dir
        .parent()
        .unwrap_or_else(|| panic!("no target dir"));
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(workspace)
        .env("CARGO_TARGET_DIR", target_dir)
        .args(["build", "--bins"])
        .args([
            "-p",
            "node",
            "-p",
            "broker",
            "-p",
            "proxy",
            "-p",
            "reference",
            "-p",
            "bots",
            "-p",
            "client",
        ]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        command.arg("--release");
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo build: {e}"));
    assert!(status.success(), "cargo build of the binaries failed");
}

/// How to start a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Node ids `1..=nodes`.
    pub nodes: u32,
    /// Extra flags for every node.
    pub node_args: Vec<String>,
    /// `RUST_LOG` of the processes.
    pub log: String,
    /// Start the reference service and let the nodes register. Without it, every node's
    /// `node.json` is written beforehand with rank = id (as after an earlier
    /// registration), and the nodes run with the reference down.
    pub reference: bool,
    /// Brokers and proxies: 1 (`broker-1`, `proxy-1`) or a pair (`-1` and `-2` of each).
    pub fabric: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            node_args: Vec::new(),
            log: "info".to_owned(),
            reference: true,
            fabric: 1,
        }
    }
}

/// The endpoints of one broker or proxy: where clients or publishers connect, and
/// where nodes or subscribers do.
#[derive(Debug, Clone)]
pub struct Pair {
    /// Broker frontend (clients) / proxy XSUB (publishers).
    pub frontend: String,
    /// Broker backend (nodes) / proxy XPUB (subscribers).
    pub backend: String,
}

/// The fabric's endpoints. The `String` fields list every broker or proxy, separated by
/// commas, as the binaries take them.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Reference ROUTER.
    pub reference: String,
    /// Proxies' XSUBs (publishers).
    pub proxy_frontend: String,
    /// Proxies' XPUBs (subscribers).
    pub proxy_backend: String,
    /// Brokers' frontends (clients).
    pub broker_frontend: String,
    /// Brokers' backends (nodes).
    pub broker_backend: String,
    /// Each broker, in order (`broker-1`, `broker-2`).
    pub brokers: Vec<Pair>,
    /// Each proxy, in order (`proxy-1`, `proxy-2`).
    pub proxies: Vec<Pair>,
}

impl Endpoints {
    fn new(fabric: usize) -> Endpoints {
        let pair = || Pair {
            frontend: endpoint(free_port()),
            backend: endpoint(free_port()),
        };
        let brokers: Vec<Pair> = (0..fabric).map(|_| pair()).collect();
        let proxies: Vec<Pair> = (0..fabric).map(|_| pair()).collect();
        let join = |pairs: &[Pair], f: fn(&Pair) -> &String| {
            pairs.iter().map(f).cloned().collect::<Vec<_>>().join(",")
        };
        Endpoints {
            reference: endpoint(free_port()),
            proxy_frontend: join(&proxies, |p| &p.frontend),
            proxy_backend: join(&proxies, |p| &p.backend),
            broker_frontend: join(&brokers, |p| &p.frontend),
            broker_backend: join(&brokers, |p| &p.backend),
            brokers,
            proxies,
        }
    }
}

fn endpoint(port: u16) -> String {
    format!("tcp://127.0.0.1:{port}")
}

/// A running cluster of real processes; every process is killed on drop.
#[derive(Debug)]
pub struct Cluster {
    /// The temporary folder: `data/` (the nodes' folders) and `logs/`.
    pub dir: PathBuf,
    /// The endpoints.
    pub endpoints: Endpoints,
    options: ClusterOptions,
    processes: BTreeMap<String, Child>,
    status_ports: BTreeMap<u32, u16>,
    starts: BTreeMap<String, u32>,
    /// Status ports of the reference, brokers and proxies, by name.
    fabric_ports: BTreeMap<String, u16>,
}

/// The cluster key file, in the cluster's folder.
pub const KEY_FILE: &str = "cluster.key";

impl Cluster {
    /// The cluster key file every process of this cluster reads.
    pub fn key_file(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }

    /// Starts reference, proxy, broker and `options.nodes` nodes.
    pub fn start(options: ClusterOptions) -> Cluster {
        let bins = bin_dir();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "paxos-e2e-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("logs")).unwrap_or_else(|e| panic!("{e}"));
        fs::create_dir_all(dir.join("data")).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            (1..=2).contains(&options.fabric),
            "a fabric of 1 or 2 brokers and proxies"
        );
        let endpoints = Endpoints::new(options.fabric);
        assert!(
            bins.join("node").exists(),
            "no node binary in {}",
            bins.display()
        );
        // The cluster key every process is given (CLUSTER_KEY_FILE), made as an operator
        // makes it.
        let keygen = Command::new(bins.join("node"))
            .arg("keygen")
            .arg(dir.join(KEY_FILE))
            .output()
            .unwrap_or_else(|e| panic!("node keygen: {e}"));
        assert!(keygen.status.success(), "node keygen: {keygen:?}");
        let mut cluster = Cluster {
            dir,
            endpoints,
            options: options.clone(),
            processes: BTreeMap::new(),
            status_ports: BTreeMap::new(),
            starts: BTreeMap::new(),
            fabric_ports: BTreeMap::new(),
        };
        for i in 1..=options.fabric {
            cluster.start_proxy(i);
            cluster.start_broker(i);
        }
        if options.reference {
            cluster.start_reference();
        } else {
            cluster.write_identities();
        }
        cluster.wait_fabric_up();
        for id in 1..=options.nodes {
            cluster.start_node(id, &[]);
        }
        cluster
    }

    fn spawn(&mut self, name: &str, binary: &str, args: &[String]) {
        let count = self.starts.entry(name.to_owned()).or_default();
        *count += 1;
        let log_path = self.dir.join("logs").join(format!("{name}.{count}.log"));
        let log = File::create(&log_path).unwrap_or_else(|e| panic!("{e}"));
        let err = log.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(bin_dir().join(binary))
            .args(args)
            .current_dir(&self.dir)
            .env("RUST_LOG", &self.options.log)
            .env("CLUSTER_KEY_FILE", self.dir.join(KEY_FILE))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        self.processes.insert(name.to_owned(), child);
    }

    /// Starts (or restarts) proxy `i` (1-based): `proxy-<i>`.
    pub fn start_proxy(&mut self, i: usize) {
        let pair = self.endpoints.proxies[i - 1].clone();
        let name = format!("proxy-{i}");
        let status = self.fabric_status_addr(&name);
        let args = vec![
            "--frontend".to_owned(),
            pair.frontend,
            "--backend".to_owned(),
            pair.backend,
            // Tests run side by side: no fixed status port.
            "--status-addr".to_owned(),
            status,
        ];
        self.spawn(&name, "proxy", &args);
    }

    /// Starts (or restarts) broker `i` (1-based): `broker-<i>`.
    pub fn start_broker(&mut self, i: usize) {
        let pair = self.endpoints.brokers[i - 1].clone();
        let name = format!("broker-{i}");
        let status = self.fabric_status_addr(&name);
        let args = vec![
            "--frontend".to_owned(),
            pair.frontend,
            "--backend".to_owned(),
            pair.backend,
            "--status-addr".to_owned(),
            status,
        ];
        self.spawn(&name, "broker", &args);
    }

    /// The status address of fabric process `name` (the same at every restart).
    fn fabric_status_addr(&mut self, name: &str) -> String {
        let port = *self
            .fabric_ports
            .entry(name.to_owned())
            .or_insert_with(free_port);
        format!("127.0.0.1:{port}")
    }

    /// Waits until every fabric process started answers on its status port; panics
    /// with its log if one exited (a port taken, say).
    pub fn wait_fabric_up(&mut self) {
        let names: Vec<String> = self.fabric_ports.keys().cloned().collect();
        for name in names {
            let port = self.fabric_ports[&name];
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if node::http_get(addr, "/livez", Duration::from_millis(500))
                    .is_ok_and(|(code, _)| code == 200)
                {
                    break;
                }
                assert!(
                    self.is_running(&name) && Instant::now() < deadline,
                    "{name} did not come up; its log:\n{}",
                    self.log(&name)
                );
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    }

    /// Starts (or restarts) fabric process `name` (`broker-2`, `proxy-1`).
    pub fn start_fabric(&mut self, name: &str) {
        match name.split_once('-') {
            Some(("broker", i)) => self.start_broker(i.parse().unwrap_or(1)),
            Some(("proxy", i)) => self.start_proxy(i.parse().unwrap_or(1)),
            _ => panic!("not a fabric process: {name}"),
        }
    }

    /// Starts (or restarts) the reference service, with its data under `data/`.
    pub fn start_reference(&mut self) {
        let status = self.fabric_status_addr("reference");
        let args = vec![
            "--endpoint".to_owned(),
            self.endpoints.reference.clone(),
            "--proxy".to_owned(),
            self.endpoints.proxy_frontend.clone(),
            "--status-addr".to_owned(),
            status,
            "--data-dir".to_owned(),
            self.dir
                .join("data")
                .join("reference")
                .display()
                .to_string(),
        ];
        self.spawn("reference", "reference", &args);
    }

    /// Writes every node's `node.json` with rank = id, as a registration would have.
    pub fn write_identities(&self) {
        for id in self.ids() {
            let peers: serde_json::Map<String, serde_json::Value> = self
                .ids()
                .into_iter()
                .filter(|&p| p != id)
                .map(|p| (p.to_string(), format!("node-{p}").into()))
                .collect();
            let identity = serde_json::json!({
                "node": format!("node-{id}"),
                "rank": id,
                "peers": peers,
            });
            let dir = self.node_dir(id);
            fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
            fs::write(dir.join("node.json"), identity.to_string())
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// The arguments a node is started with.
    pub fn node_args(&mut self, id: u32, extra: &[&str]) -> Vec<String> {
        let port = *self.status_ports.entry(id).or_insert_with(free_port);
        let mut args: Vec<String> = vec![
            "--id".into(),
            id.to_string(),
            "--cluster-size".into(),
            self.options.nodes.to_string(),
            "--reference".into(),
            self.endpoints.reference.clone(),
            "--proxy-frontend".into(),
            self.endpoints.proxy_frontend.clone(),
            "--proxy-backend".into(),
            self.endpoints.proxy_backend.clone(),
            "--broker".into(),
            self.endpoints.broker_backend.clone(),
            "--data-dir".into(),
            self.dir.join("data").display().to_string(),
            "--status-addr".into(),
            format!("127.0.0.1:{port}"),
        ];
        args.extend(self.options.node_args.iter().cloned());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    /// Starts (or restarts) node `id` with extra flags.
    pub fn start_node(&mut self, id: u32, extra: &[&str]) {
        let args = self.node_args(id, extra);
        self.spawn(&format!("node-{id}"), "node", &args);
    }

    /// The node ids of this cluster.
    pub fn ids(&self) -> Vec<u32> {
        (1..=self.options.nodes).collect()
    }

    /// Node `id`'s folder.
    pub fn node_dir(&self, id: u32) -> PathBuf {
        self.dir.join("data").join(format!("node-{id}"))
    }

    /// Node `id`'s status address.
    pub fn status_addr(&self, id: u32) -> SocketAddr {
        let port = self.status_ports.get(&id).copied().unwrap_or(0);
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Node `id`'s `/status`, if it answers.
    pub fn status(&self, id: u32) -> Option<StatusReport> {
        let (code, body) =
            node::http_get(self.status_addr(id), "/status", Duration::from_secs(2)).ok()?;
        if code != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// A `GET` of `path` on node `id`'s status port (`/metrics`, `/status`), if it answers
    /// 200.
    pub fn node_get(&self, id: u32, path: &str) -> Option<String> {
        let (code, body) =
            node::http_get(self.status_addr(id), path, Duration::from_secs(2)).ok()?;
        (code == 200).then_some(body)
    }

    /// `/status` of fabric process `name` (`reference`, `broker-1`, `proxy-2`), as JSON,
    /// if it answers.
    pub fn fabric_status(&self, name: &str) -> Option<serde_json::Value> {
        let port = *self.fabric_ports.get(name)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let (code, body) = node::http_get(addr, "/status", Duration::from_secs(2)).ok()?;
        if code != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// A `GET` of `path` on fabric process `name`'s status port (`/metrics`), if it
    /// answers 200.
    pub fn fabric_get(&self, name: &str, path: &str) -> Option<String> {
        let port = *self.fabric_ports.get(name)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let (code, body) = node::http_get(addr, path, Duration::from_secs(2)).ok()?;
        (code == 200).then_some(body)
    }

    /// The log of the latest run of process `name` (`node-1`, `broker`, ...).
    pub fn log(&self, name: &str) -> String {
        let count = self.starts.get(name).copied().unwrap_or(1);
        fs::read_to_string(self.dir.join("logs").join(format!("{name}.{count}.log")))
            .unwrap_or_default()
    }

    /// Whether process `name` is still running.
    pub fn is_running(&mut self, name: &str) -> bool {
        self.processes
            .get_mut(name)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits until process `name` exits (within `timeout`); its exit status.
    pub fn wait_exit(&mut self, name: &str, timeout: Duration) -> ExitStatus {
        let child = self
            .processes
            .get_mut(name)
            .unwrap_or_else(|| panic!("no process {name}"));
        wait_for(&format!("{name} to exit"), timeout, || {
            child.try_wait().ok().flatten()
        })
    }

    /// `kill -9` of process `name`, and waits for it.
    pub fn kill(&mut self, name: &str) {
        if let Some(mut child) = self.processes.remove(name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal (`"TERM"`, `"STOP"`, `"CONT"`) to process `name`.
    pub fn signal(&mut self, name: &str, signal: &str) {
        let child = self
            .processes
            .get(name)
            .unwrap_or_else(|| panic!("no process {name}"));
        let status = Command::new("kill")
            .args(["-s", signal, &child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success(), "kill -s {signal} {name} failed");
    }

    /// Graceful stop (SIGTERM) of process `name`; panics unless it exits 0 in time.
    pub fn stop(&mut self, name: &str) {
        self.signal(name, "TERM");
        let status = self.wait_exit(name, Duration::from_secs(30));
        assert!(
            status.success(),
            "{name} exited with {status} on SIGTERM; log:\n{}",
            self.log(name)
        );
        self.processes.remove(name);
    }

    /// Waits until some node leads and every node in `ids` follows it; its id.
    pub fn wait_for_leader(&self, ids: &[u32]) -> u32 {
        wait_for("a leader that every node follows", CONVERGE_TIMEOUT, || {
            let reports: Vec<StatusReport> = ids
                .iter()
                .map(|&id| self.status(id))
                .collect::<Option<_>>()?;
            let leader = reports.iter().find(|r| r.role == "leader")?;
            let all_follow = reports
                .iter()
                .all(|r| r.leader == Some(leader.rank) && r.ready);
            all_follow.then_some(leader.id)
        })
    }

    /// The id of the node that leads now, if any answers as leader.
    pub fn leader(&self, ids: &[u32]) -> Option<u32> {
        ids.iter()
            .filter_map(|&id| self.status(id))
            .find(|r| r.role == "leader")
            .map(|r| r.id)
    }

    /// Waits until every node in `ids` has applied the same slot with the same digest,
    /// at least `min_slot`; returns `(applied_slot, digest)`.
    pub fn wait_converged(&self, ids: &[u32], min_slot: u64) -> (u64, String) {
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        loop {
            let reports: Vec<Option<StatusReport>> =
                ids.iter().map(|&id| self.status(id)).collect();
            if let Some(reports) = reports.iter().cloned().collect::<Option<Vec<_>>>() {
                let first = &reports[0];
                let same = reports.iter().all(|r| {
                    r.applied_slot == first.applied_slot
                        && r.digest == first.digest
                        && r.decided_slot == r.applied_slot
                });
                if same && first.applied_slot >= min_slot {
                    return (first.applied_slot, first.digest.clone());
                }
            }
            if Instant::now() > deadline {
                let seen: Vec<_> = reports
                    .into_iter()
                    .map(|r| r.map(|r| (r.id, r.role, r.applied_slot, r.decided_slot, r.digest)))
                    .collect();
                panic!("nodes {ids:?} did not converge at slot >= {min_slot}: {seen:?}");
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Node `id`'s store.json, parsed.
    pub fn store_json(&self, id: u32) -> serde_json::Value {
        let path = self.node_dir(id).join("store.json");
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.processes) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() || std::env::var_os("E2E_KEEP").is_some() {
            eprintln!(
                "e2e: cluster folder kept for inspection: {}",
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No final answer before the deadline: the command may or may not have taken
    /// effect.
    #[error("no answer before the deadline")]
    Timeout,
    /// The socket closed.
    #[error("client socket closed")]
    Closed,
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

/// One DEALER to the broker frontend, shared by many sessions (replies are matched by
/// `seq`, which is unique per DEALER: session `k` numbers its requests `k << 32 | n`).
#[derive(Debug, Clone)]
pub struct Client {
    sender: transport::Sender,
    waiters: Waiters,
    sessions: Arc<AtomicU64>,
}

impl Client {
    /// Connects to the broker frontend — to the first of a list: this test client has no
    /// failover (the real one, `client::Connection`, has), and prefers the first broker
    /// as the real one does.
    pub async fn connect(broker_frontend: &str) -> Client {
        let broker_frontend = transport::endpoints(broker_frontend)
            .next()
            .unwrap_or(broker_frontend);
        let socket = Socket::open(
            Kind::Dealer,
            Mode::Connect,
            broker_frontend,
            Options::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {broker_frontend}: {e}"));
        let (sender, mut receiver) = socket.split();
        let waiters: Waiters = Arc::default();
        let table = waiters.clone();
        tokio::spawn(async move {
            while let Some(frames) = receiver.recv().await {
                let Some(body) = frames.last() else { continue };
                let Ok(response) = proto::decode::<Response>(body) else {
                    continue;
                };
                let waiter = table
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&response.seq);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(response);
                }
            }
        });
        Client {
            sender,
            waiters,
            sessions: Arc::new(AtomicU64::new(1)),
        }
    }

    /// A new session with a fresh random client id.
    pub fn session(&self) -> Session {
        let index = self.sessions.fetch_add(1, Ordering::Relaxed);
        Session {
            client: self.clone(),
            client_id: rand::random::<u64>() | 1,
            next_seq: index << 32,
            credential: None,
        }
    }
}

/// One client session: a client id and its request numbers.
#[derive(Debug)]
pub struct Session {
    client: Client,
    /// The session's client id.
    pub client_id: u64,
    next_seq: u64,
    /// The chat credential sent with every request (set by [`Session::login`]).
    pub credential: Option<String>,
}

/// Per-attempt timeout of [`Session::call`]: a lost request or reply is retried after it.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

impl Session {
    /// Logs in as `user` with `password` under a fresh credential, which every later
    /// request then carries; returns the login's answer.
    pub async fn login(
        &mut self,
        user: &str,
        password: &str,
        deadline: Instant,
    ) -> Result<Response, CallError> {
        let credential = proto::client::new_credential();
        let previous = self.credential.replace(credential);
        let op = Op::Login {
            user: user.into(),
            password: password.into(),
        };
        let response = self.call(op, Consistency::Linearizable, deadline).await;
        if !matches!(&response, Ok(Response { result: Ok(_), .. })) {
            self.credential = previous;
        }
        response
    }

    /// Sends `op` and retries it with the same `(client_id, seq)` on timeouts and on
    /// `unavailable` / `not_leader` / `overloaded`, until an answer or `deadline`.
    pub async fn call(
        &mut self,
        op: Op,
        consistency: Consistency,
        deadline: Instant,
    ) -> Result<Response, CallError> {
        self.next_seq += 1;
        let seq = self.next_seq;
        let request = Request {
            client_id: self.client_id,
            seq,
            op,
            consistency,
            credential: self.credential.clone(),
        };
        let body = proto::encode(&request).unwrap_or_else(|e| panic!("encode: {e}"));
        loop {
            let now = Instant::now();
            if now >= deadline {
                self.client
                    .waiters
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&seq);
                return Err(CallError::Timeout);
            }
            let (tx, rx) = oneshot::channel();
            self.client
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(seq, tx);
            self.client
                .sender
                .send(vec![body.clone()])
                .await
                .map_err(|_| CallError::Closed)?;
            let wait = ATTEMPT_TIMEOUT.min(deadline - now);
            if let Ok(Ok(response)) = tokio::time::timeout(wait, rx).await {
                let retry = matches!(
                    &response.result,
                    Err(Error {
                        code: ErrorCode::Unavailable | ErrorCode::NotLeader | ErrorCode::Overloaded,
                        ..
                    })
                );
                if !retry {
                    return Ok(response);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// `put key value` (linearizable); `Ok(())` once acknowledged.
    pub async fn put(&mut self, key: &str, value: &str, deadline: Instant) -> Result<(), String> {
        let op = Op::Put {
            key: key.to_owned(),
            value: value.to_owned(),
        };
        match self.call(op, Consistency::Linearizable, deadline).await {
            Ok(Response {
                result: Ok(Reply::Done),
                ..
            }) => Ok(()),
            Ok(other) => Err(format!("put {key}: {:?}", other.result)),
            Err(e) => Err(format!("put {key}: {e}")),
        }
    }

    /// `get key` (linearizable): `Ok(Some(value))`, `Ok(None)` if absent.
    pub async fn get(&mut self, key: &str, deadline: Instant) -> Result<Option<String>, String> {
        let op = Op::Get {
            key: key.to_owned(),
        };
        match self.call(op, Consistency::Linearizable, deadline).await {
            Ok(Response {
                result: Ok(Reply::Value(value)),
                ..
            }) => Ok(Some(value)),
            Ok(Response {
                result:
                    Err(Error {
                        code: ErrorCode::NotFound,
                        ..
                    }),
                ..
            }) => Ok(None),
            Ok(other) => Err(format!("get {key}: {:?}", other.result)),
            Err(e) => Err(format!("get {key}: {e}")),
        }
    }
}

/// Acknowledged writes, to read back after failures.
#[derive(Debug, Default, Clone)]
pub struct Acked(Arc<Mutex<BTreeMap<String, String>>>);

impl Acked {
    /// Records an acknowledged `put key value`.
    pub fn record(&self, key: String, value: String) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, value);
    }

    /// Every acknowledged write.
    pub fn all(&self) -> BTreeMap<String, String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sessions [`lost_writes`] reads with, concurrently.
pub const READ_BACK_SESSIONS: usize = 16;

/// Reads every acknowledged key back (linearizably, from [`READ_BACK_SESSIONS`]
/// sessions at once) and returns the ones whose value is not the acknowledged one.
pub async fn lost_writes(client: &Client, acked: &Acked, deadline: Instant) -> Vec<String> {
    let all: Vec<(String, String)> = acked.all().into_iter().collect();
    let chunk = all.len().div_ceil(READ_BACK_SESSIONS).max(1);
    let tasks: Vec<_> = all
        .chunks(chunk)
        .map(|part| {
            let part = part.to_vec();
            let mut session = client.session();
            tokio::spawn(async move {
                let mut lost = Vec::new();
                for (key, value) in part {
                    match session.get(&key, deadline).await {
                        Ok(Some(found)) if found == value => {}
                        other => lost.push(format!("{key}: acked {value:?}, read {other:?}")),
                    }
                }
                lost
            })
        })
        .collect();
    let mut lost = Vec::new();
    for task in tasks {
        match task.await {
            Ok(part) => lost.extend(part),
            Err(e) => lost.push(format!("reader failed: {e}")),
        }
    }
    lost
}

/// A multi-threaded tokio runtime for a test's clients (the test thread stays free to
/// drive the processes).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// How long one write of a [`Load`] may take, retries included.
pub const LOAD_CALL_DEADLINE: Duration = Duration::from_secs(30);

/// Background writers: `sessions` sessions each putting unique keys in a loop, recording
/// every acknowledged write and when it was acknowledged.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Acknowledged writes.
    pub acked: Acked,
    acks: Arc<Mutex<Vec<Instant>>>,
    /// Writes that got no answer before their deadline (outcome unknown).
    pub unknown: Arc<AtomicU64>,
}

impl Load {
    /// Starts the writers on `runtime`.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        client: &Client,
        sessions: usize,
        prefix: &str,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Acked::default();
        let acks: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let unknown = Arc::new(AtomicU64::new(0));
        let tasks = (0..sessions)
            .map(|n| {
                let mut session = client.session();
                let (stop, acked, acks, unknown) =
                    (stop.clone(), acked.clone(), acks.clone(), unknown.clone());
                let prefix = format!("{prefix}-{n}");
                runtime.spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let key = format!("{prefix}-{i}");
                        let value = format!("{key}-{}", session.client_id);
                        let deadline = Instant::now() + LOAD_CALL_DEADLINE;
                        match session.put(&key, &value, deadline).await {
                            Ok(()) => {
                                acked.record(key, value);
                                acks.lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(Instant::now());
                            }
                            Err(_) => {
                                unknown.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            tasks,
            acked,
            acks,
            unknown,
        }
    }

    /// Acknowledged writes so far.
    pub fn acked_count(&self) -> usize {
        self.acked.len()
    }

    /// Waits until `more` writes beyond the current count are acknowledged.
    pub fn wait_more_acks(&self, more: usize, timeout: Duration) {
        let target = self.acked_count() + more;
        wait_for(&format!("{target} acknowledged writes"), timeout, || {
            (self.acked_count() >= target).then_some(())
        });
    }

    /// The longest time without any acknowledged write after `from` (including the time
    /// from `from` to the first acknowledgement after it).
    pub fn longest_gap_after(&self, from: Instant) -> Duration {
        let mut times: Vec<Instant> = self
            .acks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .filter(|t| *t >= from)
            .collect();
        times.sort();
        let mut previous = from;
        let mut longest = Duration::ZERO;
        for t in times {
            longest = longest.max(t - previous);
            previous = t;
        }
        longest
    }

    /// Stops the writers (each finishes its write in flight) and returns the
    /// acknowledged writes.
    pub fn stop(self, runtime: &tokio::runtime::Runtime) -> Acked {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = runtime.block_on(task);
        }
        self.acked
    }
}
