//! The WAL's bytes on disk: segment names, the magic, record framing (length and
//! CRC32C) and walking the frames of a segment.
//!
//! Kept apart from the writer and from recovery so that both read and write one
//! definition of the format: a record the writer frames is, byte for byte, what
//! recovery checks. Nothing here opens, grows or cuts a file; the tools and tests that
//! inspect a WAL on purpose ([`record_offsets`], [`records_end`]) use it without either.

use paxos::{Record, Slot};

use super::WalError;

/// First bytes of every segment file (format version in the last byte).
pub const SEGMENT_MAGIC: &[u8; 8] = b"PXZWAL\x00\x01";
/// Bytes of a record header: length and CRC32C.
pub const RECORD_HEADER_BYTES: usize = 8;
/// Largest record payload accepted on read. A record holds at most one Paxos value, which
/// fits in a frame ([`proto::limits::MAX_FRAME_BYTES`]); anything larger is damage.
pub const MAX_RECORD_BYTES: usize = 4 * proto::limits::MAX_FRAME_BYTES;

/// The file name of segment `index`.
pub fn segment_name(index: u64) -> String {
    format!("{index:020}.wal")
}

/// The index of a segment file named by [`segment_name`]; `None` for any other file, so
/// that strays in the folder are ignored rather than read as log.
pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Encodes one record with its header into `out`.
pub fn encode_record(record: &Record, out: &mut Vec<u8>) -> Result<(), WalError> {
    let payload = rmp_serde::to_vec_named(record).map_err(|e| WalError::Encode(e.to_string()))?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&len| len as usize <= MAX_RECORD_BYTES)
        .ok_or_else(|| WalError::Encode(format!("record of {} bytes", payload.len())))?;
    let len_bytes = len.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), &payload);
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// Why the bytes at some offset are not a valid record.
pub(super) enum Bad {
    /// Damaged framing: maybe a torn write.
    Frame(String),
    /// The frame checks out but the payload does not decode: never a torn write.
    Payload(String),
}

/// Parses the record at `pos`: `Ok((record, next_pos))`.
pub(super) fn parse_record(data: &[u8], pos: usize) -> Result<(Record, usize), Bad> {
    let end = check_frame(data, pos).map_err(Bad::Frame)?;
    let record = rmp_serde::from_slice(&data[pos + RECORD_HEADER_BYTES..end])
        .map_err(|e| Bad::Payload(format!("the record does not decode: {e}")))?;
    Ok((record, end))
}

/// Checks the frame (length and CRC) at `pos`; returns where it ends.
pub(super) fn check_frame(data: &[u8], pos: usize) -> Result<usize, String> {
    let header = data
        .get(pos..pos + RECORD_HEADER_BYTES)
        .ok_or_else(|| format!("{} bytes left, a header needs 8", data.len() - pos))?;
    let len_bytes = [header[0], header[1], header[2], header[3]];
    let len = u32::from_le_bytes(len_bytes) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > MAX_RECORD_BYTES {
        return Err(format!(
            "record length {len} is not in 1..={MAX_RECORD_BYTES}"
        ));
    }
    let end = pos + RECORD_HEADER_BYTES + len;
    let payload = data.get(pos + RECORD_HEADER_BYTES..end).ok_or_else(|| {
        format!(
            "record of {len} bytes runs past the end of the file ({} bytes left)",
            data.len() - pos - RECORD_HEADER_BYTES
        )
    })?;
    if crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload) != crc {
        return Err("CRC32C mismatch".to_owned());
    }
    Ok(end)
}

/// Whether any valid record frame starts after `pos`: then the damage at `pos` is not a
/// torn tail but corruption in the middle of the log.
pub(super) fn valid_frame_after(data: &[u8], pos: usize) -> bool {
    (pos + 1..data.len().saturating_sub(RECORD_HEADER_BYTES)).any(|p| check_frame(data, p).is_ok())
}

/// The byte offsets of the valid records of a segment file's contents, up to the first
/// damaged one (for tools and tests that inspect or damage a WAL on purpose).
pub fn record_offsets(segment: &[u8]) -> Vec<u64> {
    walk_frames(segment).0
}

/// Where the valid records of a segment file's contents end (where a preallocated zero
/// tail, or damage, begins); 0 for a file that is not a segment.
pub fn records_end(segment: &[u8]) -> u64 {
    walk_frames(segment).1
}

/// The offsets of a segment's valid records and where they end.
fn walk_frames(segment: &[u8]) -> (Vec<u64>, u64) {
    let mut offsets = Vec::new();
    if !segment.starts_with(SEGMENT_MAGIC) {
        return (offsets, 0);
    }
    let mut pos = SEGMENT_MAGIC.len();
    while let Ok(end) = check_frame(segment, pos) {
        offsets.push(pos as u64);
        pos = end;
    }
    (offsets, pos as u64)
}

/// The slot a record names, 0 for those that name none: what decides whether a segment
/// is covered by a truncation and may be deleted.
pub(super) fn slot_of(record: &Record) -> Slot {
    match record {
        Record::Accept { slot, .. } | Record::Decide { slot, .. } => *slot,
        Record::Promise { .. } | Record::Round { .. } | Record::Truncate { .. } => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{accept, decide};
    use super::*;

    #[test]
    fn segment_names_round_trip_and_strays_are_ignored() {
        for index in [1, 42, u64::MAX] {
            assert_eq!(parse_segment_name(&segment_name(index)), Some(index));
        }
        assert_eq!(segment_name(1), "00000000000000000001.wal");
        for stray in [
            "1.wal",
            "0000000000000000000x.wal",
            "00000000000000000001.tmp",
        ] {
            assert_eq!(parse_segment_name(stray), None, "{stray}");
        }
    }

    #[test]
    fn frames_walk_and_any_damage_stops_them() {
        let mut segment = SEGMENT_MAGIC.to_vec();
        for record in [accept(1), decide(1), accept(2)] {
            encode_record(&record, &mut segment).unwrap();
        }
        let offsets = record_offsets(&segment);
        assert_eq!(offsets.len(), 3);
        assert_eq!(offsets[0], SEGMENT_MAGIC.len() as u64);
        assert_eq!(records_end(&segment), segment.len() as u64);
        let Ok((record, next)) = parse_record(&segment, offsets[1] as usize) else {
            panic!("the second record parses");
        };
        assert_eq!(record, decide(1));
        assert_eq!(next as u64, offsets[2]);
        assert_eq!(slot_of(&record), 1);
        // A flipped length bit fails the CRC too: the walk stops at that record.
        let mut damaged = segment.clone();
        damaged[offsets[1] as usize] ^= 0x01;
        assert_eq!(record_offsets(&damaged), offsets[..1]);
        assert_eq!(records_end(&damaged), offsets[1]);
        assert!(valid_frame_after(&damaged, offsets[1] as usize));
        // Not a segment at all.
        assert_eq!(records_end(&segment[1..]), 0);
    }
}
