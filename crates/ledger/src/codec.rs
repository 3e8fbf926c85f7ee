//! Byte layouts of the ledger's keys and values.
//!
//! Numbers are big-endian so that sled's byte order is numeric order.

use chrono::{DateTime, Utc};
#[cfg(test)]
use model::Sealed;
use model::{LedgerRecord, chain_hash};

/// Leading byte of a stored sealed record; bumped if the layout changes.
pub(crate) const SEALED_FORMAT: u8 = 1;

/// `format ‖ prev_hash ‖ hash`, the fixed part of a stored sealed record.
const SEALED_HEADER: usize = 1 + 32 + 32;

/// Length of the head entry in `meta`: `seq ‖ hash`.
const HEAD_LEN: usize = 8 + 32;

/// The key of record `seq` in `records`.
pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Reads a big-endian `u64` from exactly eight bytes.
pub(crate) fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// Reads the sequence number at the end of an index key.
pub(crate) fn trailing_seq(key: &[u8]) -> Option<u64> {
    let start = key.len().checked_sub(8)?;
    decode_u64(&key[start..])
}

/// Nanoseconds since the epoch as bytes that sort by time, negative times
/// included (the sign bit is flipped). Times outside the range of `i64`
/// nanoseconds (before 1677, after 2262) are clamped.
pub(crate) fn time_prefix(at: DateTime<Utc>) -> [u8; 8] {
    let nanos = at.timestamp_nanos_opt().unwrap_or(if at.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    });
    ((nanos as u64) ^ (1 << 63)).to_be_bytes()
}

/// The key of record `seq` written at `at` in `by_time`.
pub(crate) fn time_key(at: DateTime<Utc>, seq: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&time_prefix(at));
    out[8..].copy_from_slice(&seq.to_be_bytes());
    out
}

/// The key of record `seq` about the object with `index_bytes` in `by_object`.
pub(crate) fn object_key(index_bytes: &[u8], seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(index_bytes.len() + 8);
    out.extend_from_slice(index_bytes);
    out.extend_from_slice(&seq.to_be_bytes());
    out
}

/// Seals `record` after `prev_hash` straight into its stored form, appended
/// to `out`: the same bytes as
/// `encode_sealed(&Sealed::new(seq, prev_hash, serde_json::to_vec(record)))`
/// without intermediate buffers. Returns the record's hash; on error `out`
/// is left as it was.
pub(crate) fn seal_into(
    out: &mut Vec<u8>,
    record: &LedgerRecord,
    prev_hash: &[u8; 32],
) -> Result<[u8; 32], serde_json::Error> {
    let start = out.len();
    out.push(SEALED_FORMAT);
    out.extend_from_slice(prev_hash);
    out.extend_from_slice(&[0; 32]);
    if let Err(err) = serde_json::to_writer(&mut *out, record) {
        out.truncate(start);
        return Err(err);
    }
    let hash = chain_hash(prev_hash, record.seq, &out[start + SEALED_HEADER..]);
    out[start + 1 + 32..start + SEALED_HEADER].copy_from_slice(&hash);
    Ok(hash)
}

/// A sealed record as stored: `format ‖ prev_hash ‖ hash ‖ bytes` (the
/// sequence number is the key).
#[cfg(test)]
pub(crate) fn encode_sealed(sealed: &Sealed) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEALED_HEADER + sealed.bytes.len());
    out.push(SEALED_FORMAT);
    out.extend_from_slice(&sealed.prev_hash);
    out.extend_from_slice(&sealed.hash);
    out.extend_from_slice(&sealed.bytes);
    out
}

/// A stored sealed record, borrowed from the stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SealedView<'a> {
    /// Hash of the previous record.
    pub prev_hash: &'a [u8; 32],
    /// This record's hash.
    pub hash: &'a [u8; 32],
    /// The record's canonical bytes.
    pub bytes: &'a [u8],
}

/// Splits a stored sealed record, or says why it cannot be.
pub(crate) fn decode_sealed(value: &[u8]) -> Result<SealedView<'_>, String> {
    let Some((&format, rest)) = value.split_first() else {
        return Err("the stored value is empty".into());
    };
    if format != SEALED_FORMAT {
        return Err(format!(
            "unknown record format {format} (this build reads format {SEALED_FORMAT})"
        ));
    }
    let (Some(prev_hash), Some(hash), Some(bytes)) =
        (rest.get(..32), rest.get(32..64), rest.get(64..))
    else {
        return Err(format!(
            "the stored value is {} bytes, shorter than the {SEALED_HEADER}-byte header",
            value.len()
        ));
    };
    Ok(SealedView {
        prev_hash: prev_hash.try_into().map_err(|_| "bad prev_hash")?,
        hash: hash.try_into().map_err(|_| "bad hash")?,
        bytes,
    })
}

/// The head entry: `seq ‖ hash`.
pub(crate) fn encode_head(seq: u64, hash: &[u8; 32]) -> [u8; HEAD_LEN] {
    let mut out = [0u8; HEAD_LEN];
    out[..8].copy_from_slice(&seq.to_be_bytes());
    out[8..].copy_from_slice(hash);
    out
}

/// Reads the head entry.
pub(crate) fn decode_head(value: &[u8]) -> Option<(u64, [u8; 32])> {
    if value.len() != HEAD_LEN {
        return None;
    }
    let seq = decode_u64(&value[..8])?;
    let hash = value[8..].try_into().ok()?;
    Some((seq, hash))
}

/// Lower-case hex of a hash, for people.
pub(crate) fn hex(hash: &[u8; 32]) -> String {
    use std::fmt::Write;
    hash.iter().fold(String::with_capacity(64), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_keys_sort_by_time_including_before_the_epoch() {
        let times = [
            DateTime::from_timestamp(-5, 0).expect("time"),
            DateTime::from_timestamp(0, 0).expect("time"),
            DateTime::from_timestamp(0, 1).expect("time"),
            DateTime::from_timestamp(1_800_000_000, 0).expect("time"),
        ];
        let keys: Vec<_> = times.iter().map(|t| time_key(*t, 1)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(time_key(times[1], 1) < time_key(times[1], 2));
    }

    #[test]
    fn sealed_records_round_trip_through_their_stored_layout() {
        let sealed = Sealed::new(3, [7; 32], b"{\"seq\":3}".to_vec());
        let stored = encode_sealed(&sealed);
        let view = decode_sealed(&stored).expect("decodes");
        assert_eq!(view.prev_hash, &sealed.prev_hash);
        assert_eq!(view.hash, &sealed.hash);
        assert_eq!(view.bytes, sealed.bytes.as_slice());
    }

    #[test]
    fn sealing_in_place_matches_sealing_the_serialized_record() {
        let record = LedgerRecord::new(
            5,
            DateTime::from_timestamp(1_800_000_000, 0).expect("time"),
            model::RecordBody::GitError(model::GitError {
                source: "apps".into(),
                commit: "abc".into(),
                file: "web.yaml".into(),
                line: Some(2),
                message: "bad".into(),
            }),
        );
        let bytes = serde_json::to_vec(&record).expect("serializes");
        let expected = Sealed::new(5, [3; 32], bytes);
        let mut out = b"earlier".to_vec();
        let hash = seal_into(&mut out, &record, &[3; 32]).expect("seals");
        assert_eq!(&out[..7], b"earlier");
        assert_eq!(out[7..], encode_sealed(&expected));
        assert_eq!(hash, expected.hash);
    }

    #[test]
    fn short_or_unknown_sealed_values_are_rejected_with_a_reason() {
        assert!(decode_sealed(&[]).expect_err("empty").contains("empty"));
        assert!(
            decode_sealed(&[SEALED_FORMAT, 1, 2])
                .expect_err("short")
                .contains("header")
        );
        assert!(
            decode_sealed(&[9; 80])
                .expect_err("format")
                .contains("format 9")
        );
    }

    #[test]
    fn index_keys_end_with_their_sequence_number() {
        assert_eq!(trailing_seq(&object_key(b"prod\0apps\0", 42)), Some(42));
        assert_eq!(trailing_seq(&time_key(Utc::now(), 7)), Some(7));
        assert_eq!(trailing_seq(b"short"), None);
    }

    #[test]
    fn head_round_trips_and_rejects_wrong_lengths() {
        let head = encode_head(9, &[1; 32]);
        assert_eq!(decode_head(&head), Some((9, [1; 32])));
        assert_eq!(decode_head(&head[..39]), None);
        assert_eq!(hex(&[0xab; 32]).len(), 64);
        assert!(hex(&[0xab; 32]).starts_with("abab"));
    }
}
