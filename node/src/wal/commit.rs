//! Group commit: who runs the [`WalWriter`] for a group — the writer thread, or the
//! node's loop itself when the thread has nothing to do.
//!
//! **The writer thread** ([`spawn`]) takes every queued group ([`WalRequest::Append`]),
//! appends them all, fsyncs once if any asks for it, and reports the last one
//! ([`WalProgress`]). While the disk works on one group the replica keeps stepping and the
//! next group gathers in the queue: under load, that is where group commit comes from.
//!
//! **The loop commits when the thread is idle** ([`LoopCommit::try_commit`]). A group
//! handed to an idle thread costs two thread wake-ups — the thread's, then the loop's on
//! the progress report — with nothing to overlap them. On this project's 2-vCPU machines
//! waking a thread asleep on the other vCPU takes 20–30 µs (`docs/architecture.md`, *Where
//! the hops' time goes*), so a lone client's write paid ~50 µs at each replica, a third
//! of an `fdatasync`. So when every group handed to the thread is written and its lock
//! is free, the loop appends and syncs the group itself and learns on the spot that it
//! is durable. A group handed over while the thread syncs another goes to the thread.
//!
//! What that costs: the loop blocks for the fsync, and what arrives meanwhile waits in
//! the sockets and joins the next turn. A lone write waits for its fsync anyway. Under
//! load the loop ends up syncing most groups itself, one turn's batch each, and loses
//! the overlap of stepping with the disk; on two cores that cost nothing measurable —
//! the wake-ups it saves are CPU the other processes use (`docs/architecture.md`, *One
//! client's write: the WAL hand-off*). The risk is a slow fsync: the loop is silent
//! while it lasts, heartbeats included, and a leader silent for an election timeout
//! (200 ms) is replaced. A disk whose last fsync took longer than
//! [`LOOP_COMMIT_MAX_FSYNC`] gets every group on the thread, those that need no fsync
//! too, until an fsync there is fast again, so the loop waits for at most one slow fsync
//! in a row (the slowest seen here in ~100,000 under load: 51–102 ms). The loop also
//! leaves the thread every group that would close the active segment or grow it
//! ([`WalWriter::append_in_place`]): a rotation syncs a file and a folder, a growth a
//! megabyte of zeros, and neither belongs on the loop. `--wal-loop-commit false` sends
//! every group to the thread.
//!
//! **Order.** Groups reach the log in their numbers' order: the thread notes the last
//! group it wrote under the same lock, and the loop commits a group only when that is
//! the group it handed over last, so a group never overtakes one still queued.

use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use paxos::Record;
use tokio::sync::{mpsc, oneshot, watch};

use super::WalError;
use super::writer::WalWriter;
use crate::metrics::Metrics;

/// Most append requests queued for the writer thread. The node stops taking new input
/// while this many groups wait for the disk (back-pressure instead of growing memory).
pub const MAX_WAL_QUEUE: usize = 4096;

/// The loop commits a group itself only while the last fsync took at most this long (a
/// healthy one takes 0.1–0.3 ms here): it never blocks twice in a row on a slow disk.
pub const LOOP_COMMIT_MAX_FSYNC: Duration = Duration::from_millis(10);

/// A request to the writer thread.
#[derive(Debug)]
pub enum WalRequest {
    /// Append a `Ready`'s records; `seq` numbers it for [`WalProgress::durable_seq`].
    Append {
        /// Sequence number of this group (increasing).
        seq: u64,
        /// Whether any of these records must be durable before the group is
        /// acknowledged; groups without such records are written and acknowledged
        /// without an fsync of their own.
        sync: bool,
        /// The records.
        records: Vec<Record>,
    },
    /// Make everything appended durable, then answer (shutdown).
    Sync {
        /// Answered once synced.
        done: oneshot::Sender<Result<(), String>>,
    },
}

/// How far the writer thread has come.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalProgress {
    /// Every record of the groups up to this one that asked to be durable (`sync` in
    /// [`WalRequest::Append`], as the core's [`paxos::Group::sync`] says) is durable.
    pub durable_seq: u64,
    /// The writer failed and stopped: the node must stop too (an fsync error is never
    /// retried: the kernel may have dropped the dirty pages).
    pub error: Option<String>,
}

/// The writer and what it has done, shared by the thread and the loop.
#[derive(Debug)]
struct Shared {
    writer: WalWriter,
    /// The last group written (and synced, if it asked to be).
    written: u64,
    /// How long the last fsync took.
    last_fsync: Duration,
}

impl Shared {
    /// Appends `records`; `in_place`: only if no rotation or growth is due (the loop's
    /// way). `false`: nothing was written.
    fn append(
        &mut self,
        records: &[Record],
        in_place: bool,
        metrics: &Metrics,
    ) -> Result<bool, WalError> {
        let bytes = if in_place {
            match self.writer.append_in_place(records)? {
                Some(bytes) => bytes,
                None => return Ok(false),
            }
        } else {
            self.writer.append(records)?
        };
        metrics.wal_bytes.inc_by(bytes);
        metrics.wal_records.inc_by(records.len() as u64);
        Ok(true)
    }

    fn sync(&mut self, record_count: u64, metrics: &Metrics) -> Result<(), WalError> {
        let started = Instant::now();
        let result = self.writer.sync();
        self.last_fsync = started.elapsed();
        metrics
            .wal_fsync_seconds
            .observe(self.last_fsync.as_secs_f64());
        result?;
        metrics.wal_group_records.observe(record_count as f64);
        Ok(())
    }
}

/// The node's side of the writer thread.
#[derive(Debug)]
pub struct WalHandle {
    /// Queue of requests (bounded by [`MAX_WAL_QUEUE`]).
    pub requests: mpsc::Sender<WalRequest>,
    /// Progress reports.
    pub progress: watch::Receiver<WalProgress>,
    /// The thread, joined at shutdown.
    pub thread: std::thread::JoinHandle<()>,
    /// The loop's way past the thread while it is idle.
    pub loop_commit: LoopCommit,
}

/// Commits a group on the calling thread when the writer thread is idle (module page).
#[derive(Debug, Clone)]
pub struct LoopCommit {
    /// `None`: turned off, every group goes to the thread.
    shared: Option<Arc<Mutex<Shared>>>,
    metrics: Metrics,
}

impl LoopCommit {
    /// One that never commits: every group goes to the thread.
    pub fn off(metrics: Metrics) -> LoopCommit {
        LoopCommit {
            shared: None,
            metrics,
        }
    }

    /// Appends group `seq` (and fsyncs it when `sync`) on the calling thread, if the
    /// writer thread is idle — it has written group `after`, the last one handed to it,
    /// and holds no lock — and the disk is quick: the last fsync took at most
    /// [`LOOP_COMMIT_MAX_FSYNC`], and the group fits in the active segment's allocated
    /// space (no rotation, no growth). `Ok(true)`: the group is durable (written, when
    /// it needs no fsync). `Ok(false)`: nothing was done; queue the group for the thread.
    pub fn try_commit(
        &self,
        after: u64,
        seq: u64,
        sync: bool,
        records: &[Record],
    ) -> Result<bool, WalError> {
        let Some(shared) = &self.shared else {
            return Ok(false);
        };
        let mut shared = match shared.try_lock() {
            Ok(shared) => shared,
            Err(TryLockError::WouldBlock) => return Ok(false),
            Err(TryLockError::Poisoned(_)) => return Err(panicked()),
        };
        if shared.written != after {
            return Ok(false);
        }
        // A slow disk may stall a plain write too (a page under writeback waits for it).
        if shared.last_fsync > LOOP_COMMIT_MAX_FSYNC {
            return Ok(false);
        }
        if !shared.append(records, true, &self.metrics)? {
            return Ok(false);
        }
        if sync {
            shared.sync(records.len() as u64, &self.metrics)?;
            self.metrics.wal_loop_fsyncs.inc();
        }
        shared.written = seq;
        Ok(true)
    }
}

fn panicked() -> WalError {
    WalError::Panicked("the WAL writer thread panicked".to_owned())
}

fn lock(shared: &Mutex<Shared>) -> Result<MutexGuard<'_, Shared>, WalError> {
    shared.lock().map_err(|_| panicked())
}

/// Starts the writer thread: it takes every queued group, appends them all, syncs once
/// if any asks for it (its `sync` flag), and reports the last group's sequence number.
/// With `loop_commit`, the handle's [`LoopCommit`] lets the loop commit while it is idle.
pub fn spawn(
    writer: WalWriter,
    metrics: Metrics,
    loop_commit: bool,
) -> Result<WalHandle, WalError> {
    let shared = Arc::new(Mutex::new(Shared {
        writer,
        written: 0,
        last_fsync: Duration::ZERO,
    }));
    let (requests, mut rx) = mpsc::channel::<WalRequest>(MAX_WAL_QUEUE);
    let (progress_tx, progress) = watch::channel(WalProgress::default());
    let thread_shared = Arc::clone(&shared);
    let thread_metrics = metrics.clone();
    let thread = std::thread::Builder::new()
        .name("wal".to_owned())
        .spawn(move || {
            let mut batch = Vec::new();
            while let Some(first) = rx.blocking_recv() {
                batch.push(first);
                while batch.len() < MAX_WAL_QUEUE {
                    match rx.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                let written = lock(&thread_shared)
                    .and_then(|mut shared| write_group(&mut shared, &mut batch, &thread_metrics));
                match written {
                    Ok(Some(seq)) => progress_tx.send_modify(|p| p.durable_seq = seq),
                    Ok(None) => {}
                    Err(error) => {
                        let message = error.to_string();
                        tracing::error!(%message, "WAL writer failed; the node stops");
                        progress_tx.send_modify(|p| p.error = Some(message));
                        return;
                    }
                }
            }
        })
        .map_err(|source| WalError::Io {
            path: "<wal thread>".into(),
            source,
        })?;
    let loop_commit = LoopCommit {
        shared: loop_commit.then_some(shared),
        metrics,
    };
    Ok(WalHandle {
        requests,
        progress,
        thread,
        loop_commit,
    })
}

/// Writes one batch of requests; returns the highest sequence number it made durable.
fn write_group(
    shared: &mut Shared,
    batch: &mut Vec<WalRequest>,
    metrics: &Metrics,
) -> Result<Option<u64>, WalError> {
    let mut last_seq = None;
    let mut sync = false;
    let mut records = 0u64;
    let mut waiting = Vec::new();
    for request in batch.drain(..) {
        match request {
            WalRequest::Append {
                seq,
                sync: s,
                records: r,
            } => {
                sync |= s;
                records += r.len() as u64;
                shared.append(&r, false, metrics)?;
                last_seq = Some(seq);
            }
            WalRequest::Sync { done } => {
                sync = true;
                waiting.push(done);
            }
        }
    }
    if sync && let Err(error) = shared.sync(records, metrics) {
        for done in waiting {
            let _ = done.send(Err(error.to_string()));
        }
        return Err(error);
    }
    if let Some(seq) = last_seq {
        shared.written = seq;
    }
    for done in waiting {
        let _ = done.send(Ok(()));
    }
    Ok(last_seq)
}

#[cfg(test)]
mod tests {
    use super::super::recovery::recover;
    use super::super::test_util::{accept, decide, temp_dir};
    use super::super::writer::{DEFAULT_SEGMENT_BYTES, MIN_SEGMENT_BYTES};
    use super::*;

    fn shared(name: &str) -> (std::path::PathBuf, Shared) {
        let dir = temp_dir(name);
        let recovery = recover(&dir).unwrap();
        let writer = WalWriter::open(&dir, &recovery, DEFAULT_SEGMENT_BYTES).unwrap();
        let shared = Shared {
            writer,
            written: 0,
            last_fsync: Duration::ZERO,
        };
        (dir, shared)
    }

    fn count(metrics: &Metrics, name: &str) -> String {
        let text = metrics.encode();
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {text}"))
            .to_owned()
    }

    #[test]
    fn only_groups_that_ask_for_it_are_synced() {
        let (_dir, mut shared) = shared("sync-flag");
        let metrics = Metrics::new();
        // The flag decides, not the records: gating records without it are not synced.
        let mut batch = vec![WalRequest::Append {
            seq: 1,
            sync: false,
            records: vec![accept(1), decide(1)],
        }];
        assert_eq!(
            write_group(&mut shared, &mut batch, &metrics).unwrap(),
            Some(1)
        );
        assert_eq!(
            count(&metrics, "paxos_wal_fsync_seconds_count"),
            "paxos_wal_fsync_seconds_count 0"
        );
        // One flagged group makes the whole batch synced, once.
        let mut batch = vec![
            WalRequest::Append {
                seq: 2,
                sync: true,
                records: vec![decide(2)],
            },
            WalRequest::Append {
                seq: 3,
                sync: false,
                records: vec![decide(3)],
            },
        ];
        assert_eq!(
            write_group(&mut shared, &mut batch, &metrics).unwrap(),
            Some(3)
        );
        assert_eq!(
            count(&metrics, "paxos_wal_fsync_seconds_count"),
            "paxos_wal_fsync_seconds_count 1"
        );
        assert_eq!(shared.written, 3);
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Hands group `seq`, one `Accept` for slot `seq` to sync, to the writer thread.
    async fn hand_over(handle: &WalHandle, seq: u64) {
        handle
            .requests
            .send(WalRequest::Append {
                seq,
                sync: true,
                records: vec![accept(seq)],
            })
            .await
            .unwrap();
    }

    #[test]
    fn the_writer_thread_reports_durable_groups() {
        let dir = temp_dir("thread");
        let recovery = recover(&dir).unwrap();
        let writer = WalWriter::open(&dir, &recovery, DEFAULT_SEGMENT_BYTES).unwrap();
        let handle = spawn(writer, Metrics::new(), false).unwrap();
        runtime().block_on(async {
            for seq in 1..=20 {
                hand_over(&handle, seq).await;
            }
            let mut progress = handle.progress.clone();
            progress.wait_for(|p| p.durable_seq == 20).await.unwrap();
            let (done, wait) = oneshot::channel();
            handle
                .requests
                .send(WalRequest::Sync { done })
                .await
                .unwrap();
            wait.await.unwrap().unwrap();
        });
        // Turned off, the loop never commits.
        assert!(
            !handle
                .loop_commit
                .try_commit(20, 21, true, &[accept(21)])
                .unwrap()
        );
        drop(handle.requests);
        handle.thread.join().unwrap();
        assert_eq!(recover(&dir).unwrap().persisted.accepted.len(), 20);
    }

    #[test]
    fn the_loop_commits_while_the_thread_is_idle_and_never_past_a_queued_group() {
        let dir = temp_dir("loop-commit");
        let recovery = recover(&dir).unwrap();
        let writer = WalWriter::open(&dir, &recovery, DEFAULT_SEGMENT_BYTES).unwrap();
        let metrics = Metrics::new();
        let handle = spawn(writer, metrics.clone(), true).unwrap();
        let commit = &handle.loop_commit;
        let shared = Arc::clone(commit.shared.as_ref().unwrap());
        // Idle: groups 1 to 3 are committed here, durable on return.
        assert!(commit.try_commit(0, 1, true, &[accept(1)]).unwrap());
        assert!(commit.try_commit(1, 2, false, &[decide(9)]).unwrap());
        assert!(commit.try_commit(2, 3, true, &[accept(2)]).unwrap());
        assert_eq!(
            count(&metrics, "paxos_wal_loop_fsyncs_total"),
            "paxos_wal_loop_fsyncs_total 2"
        );
        assert_eq!(recover(&dir).unwrap().persisted.accepted.len(), 2);
        // While the thread holds the lock (busy), the loop leaves even the next group.
        let held = shared.lock().unwrap();
        assert!(
            !commit.try_commit(3, 4, true, &[accept(3)]).unwrap(),
            "locked"
        );
        // Group 4 went to the thread; until it is written, group 5 may not overtake it.
        runtime().block_on(async {
            handle
                .requests
                .send(WalRequest::Append {
                    seq: 4,
                    sync: true,
                    records: vec![accept(3)],
                })
                .await
                .unwrap();
        });
        assert!(
            !commit.try_commit(4, 5, false, &[decide(10)]).unwrap(),
            "group 4 queued"
        );
        drop(held);
        runtime().block_on(async {
            let mut progress = handle.progress.clone();
            progress.wait_for(|p| p.durable_seq == 4).await.unwrap();
        });
        // Written by the thread: the loop may go on, but never with a group whose
        // predecessor it has not seen written.
        assert!(
            !commit.try_commit(5, 6, true, &[accept(5)]).unwrap(),
            "group 5 unseen"
        );
        assert!(commit.try_commit(4, 5, true, &[accept(4)]).unwrap());
        // A slow last fsync sends the next groups to the thread, those that need no
        // fsync too.
        shared.lock().unwrap().last_fsync = LOOP_COMMIT_MAX_FSYNC * 2;
        assert!(
            !commit.try_commit(5, 6, true, &[accept(5)]).unwrap(),
            "slow disk"
        );
        assert!(
            !commit.try_commit(5, 6, false, &[decide(11)]).unwrap(),
            "slow disk, no fsync"
        );
        drop(handle.requests);
        handle.thread.join().unwrap();
        let accepted = recover(&dir).unwrap().persisted.accepted;
        assert_eq!(
            accepted.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
    }

    #[test]
    fn the_loop_leaves_rotation_and_growth_to_the_thread() {
        let dir = temp_dir("loop-rotation");
        let recovery = recover(&dir).unwrap();
        let writer = WalWriter::open(&dir, &recovery, MIN_SEGMENT_BYTES).unwrap();
        let metrics = Metrics::new();
        let handle = spawn(writer, metrics.clone(), true).unwrap();
        let commit = &handle.loop_commit;
        let shared = Arc::clone(commit.shared.as_ref().unwrap());
        let segments = || shared.lock().unwrap().writer.segments();
        // The loop fills the segment's allocated space, then declines the group that
        // would run past it, writing nothing.
        let mut seq = 0;
        while commit
            .try_commit(seq, seq + 1, true, &[accept(seq + 1)])
            .unwrap()
        {
            seq += 1;
            assert!(seq < 100, "a 4 KiB segment never fills");
        }
        assert!(seq > 3, "the first groups fit in place: {seq}");
        assert_eq!(segments().len(), 1);
        assert_eq!(
            recover(&dir).unwrap().persisted.accepted.len(),
            seq as usize
        );
        // The thread writes it past the end; the next one, which must close the
        // segment, the loop leaves to the thread too, which begins the next segment.
        let to_thread = |seq: u64| {
            runtime().block_on(async {
                hand_over(&handle, seq).await;
                let mut progress = handle.progress.clone();
                progress.wait_for(|p| p.durable_seq == seq).await.unwrap();
            })
        };
        to_thread(seq + 1);
        seq += 1;
        assert_eq!(segments().len(), 1);
        assert!(
            !commit
                .try_commit(seq, seq + 1, true, &[accept(seq + 1)])
                .unwrap(),
            "rotation due"
        );
        to_thread(seq + 1);
        seq += 1;
        assert_eq!(segments().len(), 2, "rotated");
        // ... and the loop goes on in the new one.
        assert!(
            commit
                .try_commit(seq, seq + 1, true, &[accept(seq + 1)])
                .unwrap()
        );
        drop(handle.requests);
        handle.thread.join().unwrap();
        assert_eq!(
            recover(&dir).unwrap().persisted.accepted.len(),
            seq as usize + 1
        );
    }
}
