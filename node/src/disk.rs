//! The replica's side of the write-ahead log: the groups of records the Paxos core hands
//! out go to the WAL writer thread, numbered as the core numbered them, and the writer's
//! progress goes back to the core ([`paxos::Replica::persisted`]), which then releases
//! what waited for those records. The node decides nothing about what may leave before
//! which fsync: the core's gate does ([`paxos::gate`]).

use std::collections::VecDeque;

use paxos::{Group, Record};
use tokio::sync::{mpsc, oneshot};

use crate::error::NodeError;
use crate::wal::{WalProgress, WalRequest};

/// What the writer's latest progress report means for the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Durable {
    /// Every group up to this one is durable (or, for groups that needed no fsync,
    /// written).
    pub(crate) group: u64,
    /// A group holding an `Accept` record became durable (the `after-accept-persist`
    /// crash point).
    pub(crate) accept_record: bool,
}

/// The queue to the writer thread and what is on its way.
#[derive(Debug)]
pub(crate) struct Disk {
    requests: mpsc::Sender<WalRequest>,
    /// The last group handed to the writer.
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
    /// A disk whose writer thread takes `requests`.
    pub(crate) fn new(requests: mpsc::Sender<WalRequest>) -> Disk {
        Disk {
            requests,
            last_group: 0,
            durable_group: 0,
            accept_groups: VecDeque::new(),
        }
    }

    /// Hands a group to the writer (waits while its queue is full: back-pressure).
    pub(crate) async fn append(&mut self, group: Group) -> Result<(), NodeError> {
        assert!(
            group.number > self.last_group,
            "group {} handed out after group {}",
            group.number,
            self.last_group
        );
        self.last_group = group.number;
        if group
            .records
            .iter()
            .any(|r| matches!(r, Record::Accept { .. }))
        {
            self.accept_groups.push_back(group.number);
        }
        self.requests
            .send(WalRequest::Append {
                seq: group.number,
                sync: group.sync,
                records: group.records,
            })
            .await
            .map_err(|_| stopped())
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
        let mut disk = Disk::new(requests);
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
    async fn a_failed_writer_stops_the_node() {
        let (requests, writer) = mpsc::channel(8);
        let mut disk = Disk::new(requests);
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
        let mut disk = Disk::new(requests);
        let _ = disk.progress(&progress(1));
    }
}
