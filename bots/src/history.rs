//! Recording a history file: one JSON operation per line (DESIGN.md *History format*),
//! written by one thread behind a bounded queue.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use lincheck::{Operation, write_operation};
use tokio::sync::mpsc;

/// Operations queued for the writer thread; a full queue makes clients wait (the disk
/// sets the pace instead of memory growing).
pub const HISTORY_QUEUE_CAPACITY: usize = 65_536;
/// Most operations one history holds (a few hundred MB of JSON, and about the most the
/// checker handles in reasonable time). A load run stops issuing key operations there.
pub const MAX_HISTORY_OPERATIONS: u64 = 5_000_000;

/// One monotonic clock for every client of a run: nanoseconds since the run started.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Clock {
        Clock {
            base: Instant::now(),
        }
    }

    /// Nanoseconds since the start (saturates after 584 years).
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Why an operation could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The history already holds [`MAX_HISTORY_OPERATIONS`].
    #[error("the history is full ({MAX_HISTORY_OPERATIONS} operations)")]
    Full,
    /// The writer thread stopped (after a write error, reported by
    /// [`HistoryRecorder::finish`]).
    #[error("the history writer stopped")]
    Stopped,
    /// Creating or writing the file failed.
    #[error("history file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Where clients send their operations; cheap to clone.
#[derive(Debug, Clone)]
pub struct HistorySink {
    tx: mpsc::Sender<Operation>,
    reserved: Arc<AtomicU64>,
}

impl HistorySink {
    /// Claims room for one more operation. Called **before** the operation is issued:
    /// an operation that could not be recorded must not happen, or the history would
    /// miss an effect and a correct run could check as not linearizable.
    pub fn reserve(&self) -> Result<(), HistoryError> {
        let before = self.reserved.fetch_add(1, Ordering::Relaxed);
        if before >= MAX_HISTORY_OPERATIONS {
            self.reserved.fetch_sub(1, Ordering::Relaxed);
            return Err(HistoryError::Full);
        }
        Ok(())
    }

    /// Queues a (reserved) operation, waiting while the queue is full.
    pub async fn record(&self, operation: Operation) -> Result<(), HistoryError> {
        self.tx
            .send(operation)
            .await
            .map_err(|_| HistoryError::Stopped)
    }
}

/// The writer of one history file.
#[derive(Debug)]
pub struct HistoryRecorder {
    sink: HistorySink,
    writer: JoinHandle<std::io::Result<u64>>,
    path: PathBuf,
}

impl HistoryRecorder {
    /// Creates (or truncates) `path` and starts the writer thread.
    pub fn create(path: &Path) -> Result<HistoryRecorder, HistoryError> {
        let io_error = |source| HistoryError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::create(path).map_err(io_error)?;
        let (tx, mut rx) = mpsc::channel::<Operation>(HISTORY_QUEUE_CAPACITY);
        let writer = std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || {
                let mut out = BufWriter::new(file);
                let mut written = 0u64;
                while let Some(operation) = rx.blocking_recv() {
                    write_operation(&mut out, &operation)?;
                    written += 1;
                }
                let file = out.into_inner().map_err(|e| e.into_error())?;
                file.sync_all()?;
                Ok(written)
            })
            .map_err(io_error)?;
        Ok(HistoryRecorder {
            sink: HistorySink {
                tx,
                reserved: Arc::new(AtomicU64::new(0)),
            },
            writer,
            path: path.to_owned(),
        })
    }

    /// A handle for clients.
    pub fn sink(&self) -> HistorySink {
        self.sink.clone()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the queue, waits until every queued operation is written, flushes and
    /// fsyncs the file; returns how many operations it holds. Blocks: call it after the
    /// clients (and their sinks) are gone, from a blocking context.
    pub fn finish(self) -> Result<u64, HistoryError> {
        let HistoryRecorder { sink, writer, path } = self;
        drop(sink);
        match writer.join() {
            Ok(result) => result.map_err(|source| HistoryError::Io { path, source }),
            Err(_) => Err(HistoryError::Io {
                path,
                source: std::io::Error::other("the history writer panicked"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lincheck::{OpKind, Outcome, Output};

    #[tokio::test]
    async fn records_are_written_in_order_and_parse_back() {
        let path = std::env::temp_dir().join(format!("bots-history-{}.jsonl", std::process::id()));
        let recorder = HistoryRecorder::create(&path).unwrap();
        let sink = recorder.sink();
        let clock = Clock::start();
        for n in 0..100u64 {
            sink.reserve().unwrap();
            let call = clock.now_ns();
            sink.record(Operation {
                client: n % 3,
                op: OpKind::Get,
                key: format!("k{n}"),
                value: None,
                expected: None,
                output: Some(Output::Value(None)),
                outcome: Outcome::Ok,
                call,
                return_: Some(clock.now_ns()),
            })
            .await
            .unwrap();
        }
        drop(sink);
        let written = tokio::task::spawn_blocking(move || recorder.finish())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(written, 100);
        let ops =
            lincheck::parse_history(std::io::BufReader::new(File::open(&path).unwrap())).unwrap();
        assert_eq!(ops.len(), 100);
        assert_eq!(ops[42].key, "k42");
        assert!(ops.windows(2).all(|w| w[0].call <= w[1].call));
        std::fs::remove_file(&path).unwrap();
    }
}
