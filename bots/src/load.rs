//! `bots load`: concurrent client sessions issuing a mix of operations.
//!
//! Each of `--clients` tasks owns one [`Session`] (sessions share a few DEALER
//! [`Connection`]s) and issues one operation at a time, as fast as answers come or at
//! its share of `--rate`. Keys are `<prefix>0 .. <prefix><keys-1>`, drawn uniformly; a
//! recorded run takes a fresh prefix, because a history assumes every key starts absent
//! and is written by nobody else (an earlier run, or the steady bot of `on.sh`). A put and a
//! CAS write a unique value `c<client>-s<n>-<random>` padded to `--value-size`; a CAS
//! expects the last value any client saw for that key (absent if none is cached).
//!
//! Counting: an operation that was answered — a get of an absent key and a CAS mismatch
//! included — counts in `ops` and in the latency histogram (microseconds, the whole call
//! with its retries). An operation that failed counts under `errors` by kind, and also
//! under `unknown` when it may have taken effect.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use client::{CallError, CallOptions, Connection, Session};
use hdrhistogram::Histogram;
use proto::limits::{MAX_TEXT_BYTES, MAX_VALUE_BYTES};
use proto::{Consistency, Op};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use crate::history::{Clock, HistoryError, HistoryRecorder, HistorySink};
use crate::mix::{LoadOp, Mix, Rate};

mod outcome;
pub use crate::report::LoadReport;
use outcome::{CasCache, Ended, classify, history_operation, update_cache};

/// Most concurrent clients.
pub const MAX_CLIENTS: usize = 4096;
/// Most DEALER connections.
pub const MAX_CONNECTIONS: usize = 64;
/// Most distinct keys.
pub const MAX_KEYS: u64 = 10_000_000;
/// Bytes of values the CAS cache keeps (last value seen per key); beyond it, entries are
/// evicted and those CASes expect absence.
pub const CAS_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Prefix of the load keys of a run without a history.
pub const KEY_PREFIX: &str = "key-";
/// Longest `--key-prefix`: room is left for the key number within the key limit.
pub const MAX_KEY_PREFIX_BYTES: usize = 256;
/// Prefix of the user a run's publishes speak as (`load-<run tag>`, registered with a
/// random password at the start of the run).
pub const LOAD_USER_PREFIX: &str = "load-";
/// The channel load publishes on.
pub const LOAD_CHANNEL: &str = "load";
/// Largest recorded latency; longer ones are recorded as this.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;
/// How often the progress line is redrawn on a terminal.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Least overall deadline of the setup calls (the load's user and channel): they are not
/// measured, and a run must not fail because one of them met a busy moment.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a progress line is written when stderr is not a terminal (a log file).
pub const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Broker frontend.
    pub broker: String,
    /// Concurrent sessions.
    pub clients: usize,
    /// DEALER connections the sessions share.
    pub connections: usize,
    /// How long to run; `None`: until shutdown.
    pub duration: Option<Duration>,
    /// Operation weights.
    pub mix: Mix,
    /// Distinct keys.
    pub keys: u64,
    /// Keys are `<key_prefix><n>`. A recorded run needs keys nobody else writes, since a
    /// history assumes every key starts absent: see [`key_prefix_for`].
    pub key_prefix: String,
    /// Bytes of each written value (at least the length of its unique tag).
    pub value_size: usize,
    /// Record key operations to this file.
    pub history: Option<PathBuf>,
    /// Total operations per second across clients; `None`: as fast as answered.
    pub rate: Option<Rate>,
    /// Request deadlines.
    pub options: CallOptions,
    /// Print the progress line on stderr.
    pub progress: bool,
}

/// Why a load run could not run (or its history is not usable).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A socket could not be opened.
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    /// Creating the load user and channel failed.
    #[error("setting up the load channel: {0}")]
    Setup(CallError),
    /// The history could not be written: it is incomplete and must not be checked.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The latency histogram could not be created.
    #[error("latency histogram: {0}")]
    Histogram(String),
}

impl LoadConfig {
    /// Checks every bound.
    pub fn validate(&self) -> Result<(), LoadError> {
        let fail = |message: String| Err(LoadError::Config(message));
        if !(1..=MAX_CLIENTS).contains(&self.clients) {
            return fail(format!("--clients must be 1..={MAX_CLIENTS}"));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return fail(format!("--connections must be 1..={MAX_CONNECTIONS}"));
        }
        if !(1..=MAX_KEYS).contains(&self.keys) {
            return fail(format!("--keys must be 1..={MAX_KEYS}"));
        }
        if self.key_prefix.len() > MAX_KEY_PREFIX_BYTES {
            return fail(format!("--key-prefix is over {MAX_KEY_PREFIX_BYTES} bytes"));
        }
        if !(1..=MAX_VALUE_BYTES).contains(&self.value_size) {
            return fail(format!("--value-size must be 1..={MAX_VALUE_BYTES}"));
        }
        if self.options.attempt_timeout.is_zero() || self.options.timeout.is_zero() {
            return fail("timeouts must be above 0".into());
        }
        Ok(())
    }
}

/// Counters the progress line reads while the run goes.
#[derive(Debug, Default)]
struct Live {
    ops: AtomicU64,
    errors: AtomicU64,
    unknown: AtomicU64,
}

/// What one client counted.
#[derive(Debug, Clone)]
struct ClientStats {
    latency_us: Histogram<u64>,
    ops: u64,
    by_op: BTreeMap<&'static str, u64>,
    errors: BTreeMap<String, u64>,
    unknown: u64,
    not_found: u64,
    cas_mismatch: u64,
    retried: u64,
    history_error: Option<String>,
}

impl ClientStats {
    fn new(histogram: Histogram<u64>) -> ClientStats {
        ClientStats {
            latency_us: histogram,
            ops: 0,
            by_op: BTreeMap::new(),
            errors: BTreeMap::new(),
            unknown: 0,
            not_found: 0,
            cas_mismatch: 0,
            retried: 0,
            history_error: None,
        }
    }

    /// Adds one client's counts to these.
    fn merge(&mut self, stats: ClientStats) {
        if self.latency_us.add(&stats.latency_us).is_err() {
            tracing::warn!("a client's latency histogram does not merge");
        }
        self.ops += stats.ops;
        self.unknown += stats.unknown;
        self.not_found += stats.not_found;
        self.cas_mismatch += stats.cas_mismatch;
        self.retried += stats.retried;
        for (op, count) in stats.by_op {
            *self.by_op.entry(op).or_insert(0) += count;
        }
        for (kind, count) in stats.errors {
            *self.errors.entry(kind).or_insert(0) += count;
        }
        if let Some(error) = stats.history_error {
            self.history_error.get_or_insert(error);
        }
    }
}

/// The key prefix of a run: the one asked for, else [`KEY_PREFIX`] without a history,
/// else a fresh `run-<random>-` so that a recorded run starts from absent keys that no
/// earlier run and no concurrent bot touches (a history assumes an empty register).
pub fn key_prefix_for(asked: Option<String>, recording: bool) -> String {
    match asked {
        Some(prefix) => prefix,
        None if recording => format!("run-{:08x}-", rand::random::<u32>()),
        None => KEY_PREFIX.to_owned(),
    }
}

/// A unique value: `c<client>-s<n>-<random>`, padded with `.` to `size` bytes.
fn unique_value(client: usize, n: u64, rng: &mut StdRng, size: usize) -> String {
    let mut value = format!("c{client}-s{n}-{:08x}", rng.random::<u32>());
    if value.len() < size {
        value.extend(std::iter::repeat_n('.', size - value.len()));
    }
    value
}

/// Everything the client tasks share.
struct Run {
    config: LoadConfig,
    clock: Clock,
    live: Live,
    cas_cache: CasCache,
    history: Option<HistorySink>,
    stop: CancellationToken,
    /// The user publishes speak as (empty without publishes).
    chat_user: String,
    /// The mix has CASes (only they read the cache).
    uses_cas: bool,
}

async fn client_task(
    index: usize,
    mut session: Session,
    run: Arc<Run>,
    histogram: Histogram<u64>,
) -> ClientStats {
    let config = &run.config;
    let mut stats = ClientStats::new(histogram);
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let mut ticker = config.rate.map(|rate| {
        let mut ticker = tokio::time::interval(rate.interval(config.clients));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    });
    let mut n: u64 = 0;
    while !run.stop.is_cancelled() {
        if let Some(ticker) = ticker.as_mut() {
            tokio::select! {
                () = run.stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
        }
        n += 1;
        let kind = config.mix.pick(rng.random_range(0..config.mix.total()));
        let key_index = rng.random_range(0..config.keys);
        let key = format!("{}{key_index}", config.key_prefix);
        let op = match kind {
            LoadOp::Put => Op::Put {
                key,
                value: unique_value(index, n, &mut rng, config.value_size),
            },
            LoadOp::Get => Op::Get { key },
            LoadOp::Delete => Op::Delete { key },
            LoadOp::Cas => Op::Cas {
                key,
                expected: run.cas_cache.get(key_index),
                new: unique_value(index, n, &mut rng, config.value_size),
            },
            LoadOp::Publish => {
                let mut text = unique_value(index, n, &mut rng, config.value_size);
                text.truncate(MAX_TEXT_BYTES);
                Op::Publish {
                    user: run.chat_user.clone(),
                    channel: LOAD_CHANNEL.to_owned(),
                    text,
                }
            }
        };
        let recorded = kind != LoadOp::Publish && run.history.is_some();
        if recorded
            && let Some(history) = &run.history
            && let Err(error) = history.reserve()
        {
            // Full: end the run rather than issue an operation the history would miss.
            tracing::warn!(%error, "ending the run");
            run.stop.cancel();
            break;
        }
        let call_ns = run.clock.now_ns();
        let started = Instant::now();
        let result = session
            .call(op.clone(), Consistency::Linearizable, &config.options)
            .await;
        let latency = started.elapsed();
        let return_ns = run.clock.now_ns();
        let ended = classify(&op, result, &mut stats, latency);
        // Only a CAS reads the cache: without one in the mix, keeping it is wasted work.
        if run.uses_cas {
            update_cache(&run.cas_cache, key_index, &op, &ended);
        }
        match &ended {
            Ended::Answered(_) => {
                stats.ops += 1;
                *stats.by_op.entry(kind.name()).or_insert(0) += 1;
                run.live.ops.fetch_add(1, Ordering::Relaxed);
            }
            Ended::Failed(error) => {
                *stats.errors.entry(error.kind().to_owned()).or_insert(0) += 1;
                run.live.errors.fetch_add(1, Ordering::Relaxed);
                if !error.certainly_not_applied() {
                    stats.unknown += 1;
                    run.live.unknown.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if recorded
            && let Some(history) = &run.history
            && let Some(operation) = history_operation(index, &op, &ended, call_ns, return_ns)
            && let Err(error) = history.record(operation).await
        {
            stats.history_error = Some(error.to_string());
            run.stop.cancel();
            break;
        }
    }
    stats
}

/// Registers this run's load user (with a random password) and creates the channel
/// (idempotent), so that publishes can succeed; returns the user and its credential.
async fn set_up_chat(
    connection: &Connection,
    options: &CallOptions,
) -> Result<(String, String), CallError> {
    let mut session = connection.session();
    let user = format!("{LOAD_USER_PREFIX}{:04x}", rand::random::<u16>());
    session
        .login(&user, &proto::client::new_credential(), options)
        .await?;
    let op = Op::CreateChannel {
        channel: LOAD_CHANNEL.to_owned(),
    };
    session.call(op, Consistency::Linearizable, options).await?;
    let credential = session.credential().unwrap_or_default().to_owned();
    Ok((user, credential))
}

/// Prints the progress line until `stop`.
async fn progress(run: Arc<Run>, started: Instant, stop: CancellationToken) {
    let terminal = std::io::stderr().is_terminal();
    let interval = if terminal {
        PROGRESS_INTERVAL
    } else {
        PROGRESS_LOG_INTERVAL
    };
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut last_ops = 0;
    let mut last_at = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let ops = run.live.ops.load(Ordering::Relaxed);
        let now = Instant::now();
        let rate = (ops - last_ops) as f64 / now.duration_since(last_at).as_secs_f64().max(1e-9);
        (last_ops, last_at) = (ops, now);
        let line = format!(
            "{:>6.1}s  ops {ops}  ops/s {rate:.0}  errors {}  unknown {}",
            started.elapsed().as_secs_f64(),
            run.live.errors.load(Ordering::Relaxed),
            run.live.unknown.load(Ordering::Relaxed),
        );
        let mut stderr = std::io::stderr().lock();
        // Progress is a courtesy: a closed stderr must not stop the run.
        let _ = if terminal {
            write!(stderr, "\r{line}\x1b[K")
        } else {
            writeln!(stderr, "{line}")
        };
        let _ = stderr.flush();
    }
    if terminal {
        let _ = writeln!(std::io::stderr());
    }
}

/// Runs the load until `config.duration` passes or `shutdown` is cancelled, then waits
/// for the operations in flight, flushes the history and returns the report.
pub async fn run_load(
    config: LoadConfig,
    shutdown: CancellationToken,
) -> Result<LoadReport, LoadError> {
    config.validate()?;
    let histogram = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)
        .map_err(|e| LoadError::Histogram(e.to_string()))?;
    let (connections, chat) = connect(&config).await?;
    let (chat_user, chat_credential) = chat.unzip();
    let recorder = match &config.history {
        Some(path) => Some(HistoryRecorder::create(path)?),
        None => None,
    };
    let stop = shutdown.child_token();
    let run = Arc::new(Run {
        clock: Clock::start(),
        live: Live::default(),
        cas_cache: CasCache::new(config.value_size),
        history: recorder.as_ref().map(HistoryRecorder::sink),
        stop: stop.clone(),
        chat_user: chat_user.unwrap_or_default(),
        uses_cas: config.mix.has(LoadOp::Cas),
        config,
    });
    let started = Instant::now();
    if let Some(duration) = run.config.duration {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(duration) => stop.cancel(),
                () = stop.cancelled() => {}
            }
        });
    }
    let progress_stop = CancellationToken::new();
    let progress_task = run
        .config
        .progress
        .then(|| tokio::spawn(progress(run.clone(), started, progress_stop.clone())));
    let tasks: Vec<_> = (0..run.config.clients)
        .map(|index| {
            let mut session = connections[index % connections.len()].session();
            session.use_credential(chat_credential.clone());
            tokio::spawn(client_task(index, session, run.clone(), histogram.clone()))
        })
        .collect();
    let mut total = ClientStats::new(histogram);
    for task in tasks {
        match task.await {
            Ok(stats) => total.merge(stats),
            Err(error) => {
                // A client task panicked: a bug; its operations are missing from the
                // counts (and the history, which is therefore not trustworthy).
                let error = format!("a client task failed: {error}");
                total.history_error.get_or_insert(error);
            }
        }
    }
    let elapsed = started.elapsed();
    stop.cancel();
    progress_stop.cancel();
    if let Some(task) = progress_task {
        let _ = task.await;
    }
    let mix = run.config.mix.to_string();
    let clients = run.config.clients;
    let keys = run.config.keys;
    let key_prefix = run.config.key_prefix.clone();
    drop(run);
    let failovers = connections.iter().map(|c| c.stats().failovers).sum();
    let overloaded = connections.iter().map(|c| c.stats().overloaded).sum();
    let history = match recorder {
        Some(recorder) => Some(finish_history(recorder, total.history_error).await?),
        None => None,
    };
    Ok(LoadReport {
        clients,
        mix,
        keys,
        key_prefix,
        ops: total.ops,
        by_op: total.by_op,
        elapsed,
        latency_us: total.latency_us,
        errors: total.errors,
        unknown: total.unknown,
        not_found: total.not_found,
        cas_mismatch: total.cas_mismatch,
        retried: total.retried,
        failovers,
        overloaded,
        history,
    })
}

/// Opens the run's connections and, when the mix publishes, signs up the chat user its
/// clients post as (its name and credential).
async fn connect(
    config: &LoadConfig,
) -> Result<(Vec<Connection>, Option<(String, String)>), LoadError> {
    let mut connections = Vec::with_capacity(config.connections);
    for _ in 0..config.connections {
        connections.push(Connection::open(&config.broker).await?);
    }
    if !config.mix.has(LoadOp::Publish) {
        return Ok((connections, None));
    }
    let setup = CallOptions {
        timeout: config.options.timeout.max(SETUP_TIMEOUT),
        ..config.options
    };
    let chat = set_up_chat(&connections[0], &setup)
        .await
        .map_err(LoadError::Setup)?;
    Ok((connections, Some(chat)))
}

/// Writes out the rest of the history; a client's failure to record makes the whole
/// history untrustworthy, and that is the error.
async fn finish_history(
    recorder: HistoryRecorder,
    client_error: Option<String>,
) -> Result<(PathBuf, u64), LoadError> {
    let path = recorder.path().to_owned();
    let written = tokio::task::spawn_blocking(move || recorder.finish())
        .await
        .map_err(|e| HistoryError::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })??;
    if let Some(error) = client_error {
        return Err(HistoryError::Io {
            path,
            source: std::io::Error::other(error),
        }
        .into());
    }
    Ok((path, written))
}

#[cfg(test)]
mod tests;
