//! The replica's side of the write-ahead log: the groups of records the Paxos core hands
//! out go to the WAL writer thread, numbered as the core numbered them — or, while that
//! thread is idle, are committed on the loop at once ([`crate::wal::LoopCommit`]) — and
//! how far they are durable goes back to the core ([`paxos::Replica::persisted`]), which
//! then releases what waited for those records. The node decides nothing about what may
//! leave before which fsync: the core's gate does ([`paxos::gate`]).

use std::collections::VecDeque;

use paxos::{Group, Record};
use tokio::sync::{mpsc, oneshot};

use crate::error::NodeError;
use crate::wal::{LoopCommit, WalProgress, WalRequest};

/// How far the groups are durable, from the writer thread's latest progress report or a
/// commit on the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Durable {
    /// Every group up to this one is durable (or, for groups that needed no fsync,
    /// written).
    pub(crate) group: u64,
    /// A group holding an `Accept` record became durable (the `after-accept-persist`
    /// crash point).
    pub(crate) accept_record: bool,
}

/// The queue to the writer thread, the loop's way past it, and what is on its way.
#[derive(Debug)]
pub(crate) struct Disk {
    requests: mpsc::Sender<WalRequest>,
    loop_commit: LoopCommit,
    /// The last group handed out: to the writer thread, or committed on the loop.
    last_group: u64,
    /// The last group reported durable.
    durable_group: u64,
    /// Groups holding an `Accept` record, not yet durable (bounded by the writer's
    /// queue, [`crate::wal::MAX_WAL_QUEUE`], and the core's held groups).
    accept_groups: VecDeque<u64>,
}

fn stopped() -> NodeError {
    NodeError::Wal("WAL writer stopped".to_owned())
}

impl Disk {
    /// A disk whose writer thread takes `requests`, and which commits on the loop when
    /// `loop_commit` can.
    pub(crate) fn new(requests: mpsc::Sender<WalRequest>, loop_commit: LoopCommit) -> Disk {
        Disk {
            requests,
            loop_commit,
            last_group: 0,
            durable_group: 0,
            accept_groups: VecDeque::new(),
        }
    }

    /// Commits a group here when the writer thread is idle, and then says how far the
    /// groups are durable now; otherwise hands it to the writer (waiting while its queue
    /// is full: back-pressure) and returns `None`: its progress report will tell.
    pub(crate) async fn append(&mut self, group: Group) -> Result<Option<Durable>, NodeError> {
        assert!(
            group.number > self.last_group,
            "group {} handed out after group {}",
            group.number,
            self.last_group
        );
        let after = self.last_group;
        self.last_group = group.number;
        if group
            .records
            .iter()
            .any(|r| matches!(r, Record::Accept { .. }))
        {
            self.accept_groups.push_back(group.number);
        }
        let here = self
            .loop_commit
            .try_commit(after, group.number, group.sync, &group.records)
            .map_err(|e| NodeError::Wal(e.to_string()))?;
        if here {
            let durable = WalProgress {
                durable_seq: group.number,
                error: None,
            };
            return self.progress(&durable).map(Some);
        }
        self.requests
            .send(WalRequest::Append {
                seq: group.number,
                sync: group.sync,
                records: group.records,
            })
            .await
            .map_err(|_| stopped())?;
        Ok(None)
    }

    /// Reads a progress report of the writer: a failed writer stops the node (an fsync
    /// error is never retried: the kernel may have dropped the dirty pages).
    pub(crate) fn progress(&mut self, progress: &WalProgress) -> Result<Durable, NodeError> {
        if let Some(error) = &progress.error {
            return Err(NodeError::Wal(error.clone()));
        }
        assert!(
            progress.durable_seq <= self.last_group,
            "the WAL writer reports group {} durable, but only {} were written",
            progress.durable_seq,
            self.last_group
        );
        self.durable_group = self.durable_group.max(progress.durable_seq);
        let mut accept_record = false;
        while self
            .accept_groups
            .front()
            .is_some_and(|&g| g <= self.durable_group)
        {
            self.accept_groups.pop_front();
            accept_record = true;
        }
        Ok(Durable {
            group: self.durable_group,
            accept_record,
        })
    }

    /// Makes everything handed over durable (at shutdown); returns the last group.
    pub(crate) async fn sync(&mut self) -> Result<u64, NodeError> {
        let (done, wait) = oneshot::channel();
        self.requests
            .send(WalRequest::Sync { done })
            .await
            .map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?.map_err(NodeError::Wal)?;
        self.durable_group = self.last_group;
        self.accept_groups.clear();
        Ok(self.last_group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paxos::{Ballot, Value};

    fn group(number: u64, records: Vec<Record>) -> Group {
        let sync = records.iter().any(Record::gates_outputs);
        Group {
            number,
            records,
            sync,
        }
    }

    fn accept(slot: u64) -> Record {
        Record::Accept {
            slot,
            ballot: Ballot::new(1, 1),
            value: Value::noop(1),
        }
    }

    fn progress(durable_seq: u64) -> WalProgress {
        WalProgress {
            durable_seq,
            error: None,
        }
    }

    #[tokio::test]
    async fn groups_go_to_the_writer_and_durability_comes_back() {
        let (requests, mut writer) = mpsc::channel(8);
        let mut disk = Disk::new(requests, LoopCommit::off(crate::metrics::Metrics::new()));
        disk.append(group(1, vec![accept(1)])).await.unwrap();
        disk.append(group(2, vec![Record::Truncate { upto: 0 }]))
            .await
            .unwrap();
        let Some(WalRequest::Append { seq, sync, .. }) = writer.recv().await else {
            panic!("an append");
        };
        assert_eq!((seq, sync), (1, true));
        let Some(WalRequest::Append { seq, sync, .. }) = writer.recv().await else {
            panic!("an append");
        };
        assert_eq!((seq, sync), (2, false), "a truncation needs no fsync");
        let durable = disk.progress(&progress(1)).unwrap();
        assert_eq!(
            durable,
            Durable {
                group: 1,
                accept_record: true
            }
        );
        let durable = disk.progress(&progress(2)).unwrap();
        assert_eq!(
            durable,
            Durable {
                group: 2,
                accept_record: false
            }
        );
    }

    #[tokio::test]
    async fn a_group_committed_on_the_loop_is_durable_on_return() {
        let dir = std::env::temp_dir().join(format!("node-disk-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let recovery = crate::wal::recover(&dir).unwrap();
        let writer =
            crate::wal::WalWriter::open(&dir, &recovery, crate::wal::DEFAULT_SEGMENT_BYTES)
                .unwrap();
        let wal = crate::wal::spawn(writer, crate::metrics::Metrics::new(), true).unwrap();
        let mut disk = Disk::new(wal.requests.clone(), wal.loop_commit.clone());
        let durable = disk.append(group(1, vec![accept(1)])).await.unwrap();
        assert_eq!(
            durable,
            Some(Durable {
                group: 1,
                accept_record: true
            })
        );
        let durable = disk.append(group(2, vec![Record::Truncate { upto: 0 }]));
        assert_eq!(
            durable.await.unwrap().map(|d| d.group),
            Some(2),
            "a group without fsync too"
        );
        drop((disk, wal.requests));
        wal.thread.join().unwrap();
        let accepted = crate::wal::recover(&dir).unwrap().persisted.accepted;
        assert!(accepted.contains_key(&1));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_failed_writer_stops_the_node() {
        let (requests, writer) = mpsc::channel(8);
        let mut disk = Disk::new(requests, LoopCommit::off(crate::metrics::Metrics::new()));
        let failed = WalProgress {
            durable_seq: 0,
            error: Some("fsync: EIO".to_owned()),
        };
        assert!(matches!(disk.progress(&failed), Err(NodeError::Wal(e)) if e.contains("EIO")));
        drop(writer);
        assert!(disk.append(group(1, vec![accept(1)])).await.is_err());
    }

    #[tokio::test]
    #[should_panic(expected = "only 0 were written")]
    async fn progress_beyond_what_was_written_is_a_bug() {
        let (requests, _writer) = mpsc::channel(8);
        let mut disk = Disk::new(requests, LoopCommit::off(crate::metrics::Metrics::new()));
        let _ = disk.progress(&progress(1));
    }
}
