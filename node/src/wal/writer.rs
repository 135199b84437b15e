//! Appending to the WAL: [`WalWriter`] (appends and fsyncs, preallocation, rotation with
//! checkpoints, deletion behind truncation). Who runs it for a group — the writer thread
//! or the node's loop — is `commit.rs`'s.
//!
//! Kept apart from recovery because the two never run together: recovery reads a WAL
//! once at start-up, then the writer owns the folder alone and never reads what it
//! wrote. Everything that decides what reaches the disk, and when it is durable, is
//! here; how the bytes are laid out is in `format.rs`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use paxos::{Ballot, Record, Round, Slot};

use super::format::{SEGMENT_MAGIC, encode_record, segment_name};
use super::recovery::{Recovery, SegmentInfo};
use super::{WalError, io_error};

/// The active segment is grown by this many zero bytes (at most up to the segment size)
/// whenever a group would run past its end: group commits then overwrite allocated
/// blocks, and their `fdatasync` has no size to journal.
pub const PREALLOC_BYTES: u64 = 1024 * 1024;

/// Default size after which a segment is closed and a new one begun.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Smallest segment size accepted (smaller would mostly hold checkpoints).
pub const MIN_SEGMENT_BYTES: u64 = 4096;
/// Makes a folder's entries (new, renamed or deleted files) durable.
pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Appends records to the active segment, closes full segments and deletes covered ones.
#[derive(Debug)]
pub struct WalWriter {
    dir: PathBuf,
    segment_max_bytes: u64,
    active: File,
    active_info: SegmentInfo,
    /// Length of the active file: records up to `active_info.bytes`, zeros after.
    allocated: u64,
    closed: Vec<SegmentInfo>,
    promised: Ballot,
    round: Round,
    truncated_upto: Slot,
    durable_truncated_upto: Slot,
    buffer: Vec<u8>,
}

impl WalWriter {
    /// Opens the WAL for appending after [`recover`]: begins a new segment (never appends
    /// behind a recovered tail) with a checkpoint of `recovery.persisted`.
    pub fn open(
        dir: &Path,
        recovery: &Recovery,
        segment_max_bytes: u64,
    ) -> Result<WalWriter, WalError> {
        let next_index = recovery.segments.last().map_or(1, |s| s.index + 1);
        let persisted = &recovery.persisted;
        let (active, active_info) = create_segment(
            dir,
            next_index,
            persisted.promised,
            persisted.round,
            persisted.truncated_upto,
        )?;
        let mut writer = WalWriter {
            dir: dir.to_path_buf(),
            segment_max_bytes: segment_max_bytes.max(MIN_SEGMENT_BYTES),
            allocated: active_info.bytes,
            active,
            active_info,
            closed: recovery.segments.clone(),
            promised: persisted.promised,
            round: persisted.round,
            truncated_upto: persisted.truncated_upto,
            durable_truncated_upto: persisted.truncated_upto,
            buffer: Vec::new(),
        };
        // Grown now, at start-up, so the first groups fit in place (`append_in_place`).
        writer.preallocate(writer.allocated)?;
        writer.delete_covered()?;
        Ok(writer)
    }

    /// Size after which the active segment is closed.
    pub fn segment_max_bytes(&self) -> u64 {
        self.segment_max_bytes
    }

    /// Every segment, closed ones first, the active one last.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let mut all = self.closed.clone();
        all.push(self.active_info.clone());
        all
    }

    /// Writes `records` to the active segment (not yet durable: see [`WalWriter::sync`]),
    /// first closing a full segment or growing the active one if it must. Returns the
    /// bytes written.
    pub fn append(&mut self, records: &[Record]) -> Result<u64, WalError> {
        let written = self.write(records, true)?;
        Ok(written.unwrap_or_default())
    }

    /// Writes `records` like [`WalWriter::append`] only if they fit in the space already
    /// allocated: no rotation, no growth, so nothing but the write itself (what the loop
    /// may do, `commit.rs`). `None`: nothing was written.
    pub fn append_in_place(&mut self, records: &[Record]) -> Result<Option<u64>, WalError> {
        self.write(records, false)
    }

    fn write(&mut self, records: &[Record], may_grow: bool) -> Result<Option<u64>, WalError> {
        if records.is_empty() {
            return Ok(Some(0));
        }
        if self.active_info.bytes >= self.segment_max_bytes {
            if !may_grow {
                return Ok(None);
            }
            self.rotate()?;
        }
        self.buffer.clear();
        for record in records {
            encode_record(record, &mut self.buffer)?;
        }
        let end = self.active_info.bytes + self.buffer.len() as u64;
        if end > self.allocated {
            if !may_grow {
                return Ok(None);
            }
            self.preallocate(end)?;
        }
        for record in records {
            self.note(record);
        }
        self.active
            .write_all_at(&self.buffer, self.active_info.bytes)
            .map_err(io_error(&self.active_info.path))?;
        self.active_info.bytes = end;
        Ok(Some(self.buffer.len() as u64))
    }

    /// Grows the active file with zeros to at least `end`: by [`PREALLOC_BYTES`], up to
    /// the segment size (a group never waits for more than its own bytes past it). The
    /// zeros are synced here, so the next group's `fdatasync` flushes that group alone —
    /// wherever it runs, the loop included.
    fn preallocate(&mut self, end: u64) -> Result<(), WalError> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let target = (self.allocated + PREALLOC_BYTES)
            .min(self.segment_max_bytes)
            .max(end);
        let mut at = self.allocated;
        while at < target {
            let n = (target - at).min(ZEROS.len() as u64) as usize;
            self.active
                .write_all_at(&ZEROS[..n], at)
                .map_err(io_error(&self.active_info.path))?;
            at += n as u64;
        }
        self.active
            .sync_data()
            .map_err(io_error(&self.active_info.path))?;
        self.allocated = target;
        Ok(())
    }

    /// Makes every appended record durable (one `fdatasync`), then deletes the segments a
    /// durable truncation covers.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.active
            .sync_data()
            .map_err(io_error(&self.active_info.path))?;
        self.durable_truncated_upto = self.truncated_upto;
        self.delete_covered()
    }

    fn note(&mut self, record: &Record) {
        match record {
            Record::Promise { ballot } => self.promised = self.promised.max(*ballot),
            Record::Accept { slot, ballot, .. } => {
                self.promised = self.promised.max(*ballot);
                self.active_info.max_slot = self.active_info.max_slot.max(*slot);
            }
            Record::Decide { slot, .. } => {
                self.active_info.max_slot = self.active_info.max_slot.max(*slot);
            }
            Record::Round { round } => self.round = self.round.max(*round),
            Record::Truncate { upto } => self.truncated_upto = self.truncated_upto.max(*upto),
        }
    }

    /// Closes the active segment (durably) and begins the next with a checkpoint.
    fn rotate(&mut self) -> Result<(), WalError> {
        // The closed segment keeps its records only, not the zeros after them.
        self.active
            .set_len(self.active_info.bytes)
            .and_then(|()| self.active.sync_all())
            .map_err(io_error(&self.active_info.path))?;
        self.durable_truncated_upto = self.truncated_upto;
        let (file, info) = create_segment(
            &self.dir,
            self.active_info.index + 1,
            self.promised,
            self.round,
            self.truncated_upto,
        )?;
        self.active = file;
        self.allocated = info.bytes;
        let old = std::mem::replace(&mut self.active_info, info);
        self.closed.push(old);
        // Grown at once, so the groups after this one fit in place.
        self.preallocate(self.allocated)?;
        self.delete_covered()
    }

    /// Deletes the closed segments whose every slot a durable truncation covers. Their
    /// promises and rounds are in the checkpoint of every later segment.
    fn delete_covered(&mut self) -> Result<(), WalError> {
        let upto = self.durable_truncated_upto;
        let (delete, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.closed)
            .into_iter()
            .partition(|s| s.max_slot <= upto);
        self.closed = keep;
        if delete.is_empty() {
            return Ok(());
        }
        for segment in &delete {
            fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
        }
        sync_dir(&self.dir)
    }
}

/// Creates segment `index` with the magic and a checkpoint, durably (file and folder).
fn create_segment(
    dir: &Path,
    index: u64,
    promised: Ballot,
    round: Round,
    truncated_upto: Slot,
) -> Result<(File, SegmentInfo), WalError> {
    let path = dir.join(segment_name(index));
    // Not in append mode: records are written at their offsets, over preallocated zeros.
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    let mut bytes = SEGMENT_MAGIC.to_vec();
    for record in [
        Record::Promise { ballot: promised },
        Record::Round { round },
        Record::Truncate {
            upto: truncated_upto,
        },
    ] {
        encode_record(&record, &mut bytes)?;
    }
    file.write_all(&bytes).map_err(io_error(&path))?;
    file.sync_all().map_err(io_error(&path))?;
    sync_dir(dir)?;
    let info = SegmentInfo {
        index,
        path,
        max_slot: 0,
        bytes: bytes.len() as u64,
    };
    Ok((file, info))
}

#[cfg(test)]
mod tests {
    use paxos::Ballot;

    use super::super::recovery::{list_segments, recover};
    use super::super::test_util::{accept, decide, temp_dir};
    use super::*;

    #[test]
    fn segments_rotate_with_checkpoints_and_are_deleted_behind_truncation() {
        let dir = temp_dir("rotate");
        let recovery = recover(&dir).unwrap();
        let mut writer = WalWriter::open(&dir, &recovery, MIN_SEGMENT_BYTES).unwrap();
        writer
            .append(&[
                Record::Round { round: 7 },
                Record::Promise {
                    ballot: Ballot::new(7, 3),
                },
            ])
            .unwrap();
        for slot in 1..=200 {
            writer.append(&[accept(slot), decide(slot)]).unwrap();
        }
        writer.sync().unwrap();
        let before = writer.segments().len();
        assert!(before > 5);
        writer.append(&[Record::Truncate { upto: 150 }]).unwrap();
        writer.sync().unwrap();
        let after = writer.segments();
        assert!(after.len() < before, "covered segments were deleted");
        assert!(after.iter().all(|s| s.path.exists()));
        let on_disk = list_segments(&dir).unwrap().len();
        assert_eq!(on_disk, after.len());
        drop(writer);
        // What is left still holds the promise, the round and every slot after 150.
        let recovery = recover(&dir).unwrap();
        assert_eq!(recovery.persisted.promised, Ballot::new(7, 3));
        assert_eq!(recovery.persisted.round, 7);
        assert_eq!(recovery.persisted.truncated_upto, 150);
        for slot in 151..=200 {
            assert!(
                recovery.persisted.decided.contains_key(&slot),
                "slot {slot}"
            );
        }
    }
}
