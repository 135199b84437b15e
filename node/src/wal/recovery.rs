//! Reading a WAL back at start-up: [`recover`] folds every record into the state the
//! acceptor had, and decides, for every bad record, whether it is a torn tail (cut off,
//! the node starts) or corruption (the node refuses to start).
//!
//! Kept apart from the writer because it is the one place that throws away bytes the
//! writer meant as records, and the rules for doing so (see the module page) must be
//! read in one piece: only the last segment can have a torn tail, only when no valid frame follows
//! the damage, and a zero tail from a record boundary is preallocated space, not damage.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use paxos::{Persisted, Slot};

use super::format::{
    Bad, SEGMENT_MAGIC, parse_record, parse_segment_name, slot_of, valid_frame_after,
};
use super::{WalError, io_error};

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Its index (the number in its name).
    pub index: u64,
    /// Its path.
    pub path: PathBuf,
    /// The highest slot any of its records names (0 if none).
    pub max_slot: Slot,
    /// Its length in bytes.
    pub bytes: u64,
}

/// A torn final record that recovery cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    /// The segment file.
    pub path: PathBuf,
    /// Where the file was cut.
    pub offset: u64,
    /// Bytes dropped.
    pub discarded_bytes: u64,
    /// What was wrong with the record.
    pub reason: String,
}

/// What [`recover`] found.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// Every record folded with [`Persisted::apply`].
    pub persisted: Persisted,
    /// The segments, in index order.
    pub segments: Vec<SegmentInfo>,
    /// Records read.
    pub records: u64,
    /// The torn tail cut off, if there was one.
    pub torn: Option<Torn>,
}

/// The segments of `dir`, in index order (other files are ignored).
pub(super) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        if let Some(index) = entry.file_name().to_str().and_then(parse_segment_name) {
            segments.push((index, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Reads the WAL in `dir` (created if missing), folds every record, cuts a torn tail off
/// the last segment, and fails on corruption anywhere else.
pub fn recover(dir: &Path) -> Result<Recovery, WalError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let listed = list_segments(dir)?;
    let mut recovery = Recovery {
        persisted: Persisted::default(),
        segments: Vec::new(),
        records: 0,
        torn: None,
    };
    let count = listed.len();
    for (n, (index, path)) in listed.into_iter().enumerate() {
        let mut data = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(io_error(&path))?;
        let scan = scan_segment(&path, &data, n + 1 == count, &mut recovery)?;
        let bytes = match scan.torn {
            Some(torn) => {
                let kept = cut_off(&path, &torn)?;
                recovery.torn = Some(torn);
                kept
            }
            None => scan.records_end as u64,
        };
        recovery.segments.push(SegmentInfo {
            index,
            path,
            max_slot: scan.max_slot,
            bytes,
        });
    }
    Ok(recovery)
}

/// What reading one segment found.
struct Scan {
    /// The highest slot its records name.
    max_slot: Slot,
    /// Where its records end: before a zero tail, or at the end of the file.
    records_end: usize,
    /// A tail a crash during a write left, to cut off.
    torn: Option<Torn>,
}

/// Folds the records of one segment's `data` into `recovery`. A damaged end is a torn
/// tail in the `last` segment — unless a valid record follows it — and corruption in any
/// other; a damaged record payload is corruption anywhere.
fn scan_segment(
    path: &Path,
    data: &[u8],
    last: bool,
    recovery: &mut Recovery,
) -> Result<Scan, WalError> {
    let corrupt = |offset: usize, reason: String| WalError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let cut = |offset: usize, reason: String| -> Result<Torn, WalError> {
        if !last {
            return Err(corrupt(offset, reason));
        }
        Ok(Torn {
            path: path.to_path_buf(),
            offset: offset as u64,
            discarded_bytes: (data.len() - offset) as u64,
            reason,
        })
    };
    let mut scan = Scan {
        max_slot: 0,
        records_end: data.len(),
        torn: None,
    };
    if !data.starts_with(SEGMENT_MAGIC) {
        if !SEGMENT_MAGIC.starts_with(data) {
            return Err(corrupt(0, "not a WAL segment (bad magic)".to_owned()));
        }
        // A segment whose creation was cut short: nothing in it.
        scan.torn = Some(cut(0, "segment header is incomplete".to_owned())?);
        return Ok(scan);
    }
    let mut pos = SEGMENT_MAGIC.len();
    while pos < data.len() {
        match parse_record(data, pos) {
            Ok((record, next)) => {
                scan.max_slot = scan.max_slot.max(slot_of(&record));
                recovery.persisted.apply(&record);
                recovery.records += 1;
                pos = next;
            }
            Err(Bad::Payload(reason)) => return Err(corrupt(pos, reason)),
            Err(Bad::Frame(_)) if data[pos..].iter().all(|&b| b == 0) => {
                // Preallocated space after the last record (see the module page).
                scan.records_end = pos;
                break;
            }
            Err(Bad::Frame(reason)) if valid_frame_after(data, pos) => {
                return Err(corrupt(pos, reason));
            }
            Err(Bad::Frame(reason)) => {
                scan.torn = Some(cut(pos, reason)?);
                break;
            }
        }
    }
    Ok(scan)
}

/// Cuts `torn`'s tail off the segment at `path`, durably; returns the bytes kept. A
/// segment cut inside its header is rewritten as an empty segment.
fn cut_off(path: &Path, torn: &Torn) -> Result<u64, WalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(path))?;
    let kept = if torn.offset == 0 {
        file.set_len(0).map_err(io_error(path))?;
        (&file).write_all(SEGMENT_MAGIC).map_err(io_error(path))?;
        SEGMENT_MAGIC.len() as u64
    } else {
        file.set_len(torn.offset).map_err(io_error(path))?;
        torn.offset
    };
    file.sync_all().map_err(io_error(path))?;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use paxos::{Ballot, Record};

    use super::super::format::{RECORD_HEADER_BYTES, check_frame, record_offsets, records_end};
    use super::super::test_util::{accept, decide, temp_dir, value, wal_with};
    use super::super::writer::{
        DEFAULT_SEGMENT_BYTES, MIN_SEGMENT_BYTES, PREALLOC_BYTES, WalWriter,
    };
    use super::*;

    #[test]
    fn records_survive_a_restart() {
        let records = vec![
            Record::Round { round: 3 },
            Record::Promise {
                ballot: Ballot::new(3, 2),
            },
            accept(1),
            decide(1),
            accept(2),
        ];
        let (dir, _) = wal_with("restart", &records);
        let recovery = recover(&dir).unwrap();
        assert!(recovery.torn.is_none());
        assert_eq!(recovery.persisted.round, 3);
        assert_eq!(recovery.persisted.promised, Ballot::new(3, 2));
        assert_eq!(recovery.persisted.decided[&1], value(1));
        assert_eq!(recovery.persisted.accepted[&2].1, value(2));
        // Reopening begins a new segment with a checkpoint; nothing is lost.
        let writer = WalWriter::open(&dir, &recovery, DEFAULT_SEGMENT_BYTES).unwrap();
        assert_eq!(writer.segments().len(), recovery.segments.len() + 1);
        drop(writer);
        let again = recover(&dir).unwrap();
        assert_eq!(again.persisted, recovery.persisted);
    }

    #[test]
    fn a_torn_tail_is_cut_off() {
        let (dir, path) = wal_with("torn", &[accept(1), accept(2), accept(3)]);
        let len = records_end(&fs::read(&path).unwrap());
        // Cut the last record in its middle, as a crash during the write would.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 20)
            .unwrap();
        let recovery = recover(&dir).unwrap();
        let torn = recovery.torn.expect("the tail is torn");
        assert_eq!(torn.path, path);
        assert!(recovery.persisted.accepted.contains_key(&2));
        assert!(!recovery.persisted.accepted.contains_key(&3));
        assert_eq!(fs::metadata(&path).unwrap().len(), torn.offset);
        // Recovering again finds a clean log.
        assert!(recover(&dir).unwrap().torn.is_none());
    }

    #[test]
    fn a_garbage_tail_is_cut_off() {
        let (dir, path) = wal_with("garbage-tail", &[accept(1), accept(2)]);
        let len = records_end(&fs::read(&path).unwrap());
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        // A complete-looking header claiming a small payload whose CRC is wrong, then
        // zeros: what a filesystem can leave after a crash that extended the file.
        file.write_all_at(&[16, 0, 0, 0, 1, 2, 3, 4], len).unwrap();
        file.write_all_at(&[0; 64], len + 8).unwrap();
        drop(file);
        let recovery = recover(&dir).unwrap();
        assert_eq!(recovery.torn.unwrap().offset, len);
        assert_eq!(recovery.persisted.accepted.len(), 2);
    }

    #[test]
    fn the_preallocated_tail_is_not_damage() {
        let dir = temp_dir("prealloc");
        let recovery = recover(&dir).unwrap();
        let mut writer = WalWriter::open(&dir, &recovery, DEFAULT_SEGMENT_BYTES).unwrap();
        for slot in 1..=50 {
            writer.append(&[accept(slot)]).unwrap();
            writer.sync().unwrap();
        }
        let active = writer.segments().last().unwrap().clone();
        drop(writer);
        let on_disk = fs::metadata(&active.path).unwrap().len();
        assert!(on_disk >= PREALLOC_BYTES, "grown ahead: {on_disk} bytes");
        assert!(active.bytes < on_disk, "zeros after the records");
        assert_eq!(records_end(&fs::read(&active.path).unwrap()), active.bytes);
        // Every record comes back, with no torn tail and no change to the file.
        let recovery = recover(&dir).unwrap();
        assert!(recovery.torn.is_none());
        assert_eq!(recovery.persisted.accepted.len(), 50);
        assert_eq!(recovery.segments.last().unwrap().bytes, active.bytes);
        assert_eq!(fs::metadata(&active.path).unwrap().len(), on_disk);
        // Zeros *between* records are damage, not preallocation.
        let mut data = fs::read(&active.path).unwrap();
        let offsets = record_offsets(&data);
        let second = offsets[offsets.len() - 2] as usize;
        let last = offsets[offsets.len() - 1] as usize;
        data[second..last].fill(0);
        fs::write(&active.path, &data).unwrap();
        match recover(&dir).unwrap_err() {
            WalError::Corrupt { offset, .. } => assert_eq!(offset, second as u64),
            other => panic!("expected corruption, got {other}"),
        }
    }

    #[test]
    fn corruption_in_the_middle_names_file_and_offset() {
        let (dir, path) = wal_with("corrupt", &[accept(1), accept(2), accept(3)]);
        let mut data = fs::read(&path).unwrap();
        // Find the second data record: after the magic, the 3 checkpoint records and
        // the first accept.
        let mut pos = SEGMENT_MAGIC.len();
        for _ in 0..4 {
            pos = check_frame(&data, pos).unwrap();
        }
        data[pos + RECORD_HEADER_BYTES + 5] ^= 0xff;
        fs::write(&path, &data).unwrap();
        let error = recover(&dir).unwrap_err();
        match &error {
            WalError::Corrupt {
                path: p, offset, ..
            } => {
                assert_eq!(p, &path);
                assert_eq!(*offset, pos as u64);
            }
            other => panic!("expected corruption, got {other}"),
        }
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(&format!("offset {pos}")), "{message}");
        // The file was not modified.
        assert_eq!(fs::read(&path).unwrap(), data);
    }

    #[test]
    fn damage_in_an_older_segment_is_corruption_even_at_its_end() {
        let dir = temp_dir("old-segment");
        let recovery = recover(&dir).unwrap();
        let mut writer = WalWriter::open(&dir, &recovery, MIN_SEGMENT_BYTES).unwrap();
        for slot in 1..=100 {
            writer.append(&[accept(slot)]).unwrap();
        }
        writer.sync().unwrap();
        let segments = writer.segments();
        assert!(segments.len() > 2, "the writer rotated");
        drop(writer);
        let first = &segments[0].path;
        let len = fs::metadata(first).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(first)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        assert!(matches!(
            recover(&dir),
            Err(WalError::Corrupt { path, .. }) if &path == first
        ));
    }
}
