//! The records of a period, in order, decoded by reader threads: decoding
//! a record's JSON (its object skipped unread) is most of a report's cost.
//!
//! ```text
//! reader 0: chunks 0, R, 2R, …  ─┐ bounded channels, records stripped
//! reader 1: chunks 1, R+1, …    ─┼─▶ taken back in chunk order ─▶ consume(record)
//! reader R-1: …                 ─┘
//! ```
//!
//! Memory is bounded by the chunks in flight, never by the records read.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use chrono::{DateTime, Utc};
use ledger::Ledger;
use model::LedgerRecord;

use super::Result;

/// Records per chunk.
const CHUNK: u64 = 2_048;

/// Chunks each reader may have decoded ahead of the consumer.
const AHEAD: usize = 2;

/// One chunk of records, as a reader hands it over.
#[derive(Debug)]
struct Chunk {
    /// The records a report reads, stripped by `keep`.
    records: Vec<LedgerRecord>,
    /// Records read, kept or not.
    read: u64,
    /// The period or the chain ends in this chunk.
    last: bool,
}

/// Hands `consume` every record from `first` to `last` (sequence numbers)
/// written before `until`, in order, as `keep` leaves it (records it
/// returns `None` for are counted but not handed over); decodes them on
/// `readers` threads. Returns how many records were read.
pub(super) fn ordered(
    ledger: &Ledger,
    (first, last): (u64, u64),
    until: DateTime<Utc>,
    readers: usize,
    keep: fn(LedgerRecord) -> Option<LedgerRecord>,
    consume: &mut dyn FnMut(LedgerRecord) -> Result<()>,
) -> Result<u64> {
    if first > last {
        return Ok(0);
    }
    let readers = readers.max(1);
    std::thread::scope(|scope| {
        let mut chunks: Vec<Receiver<Result<Chunk>>> = Vec::with_capacity(readers);
        for reader in 0..readers {
            let (sender, receiver) = sync_channel(AHEAD);
            chunks.push(receiver);
            let start = first + reader as u64 * CHUNK;
            let stride = readers as u64 * CHUNK;
            scope.spawn(move || read(ledger, start, stride, last, until, keep, &sender));
        }
        let mut read = 0;
        for i in 0.. {
            // A reader that hung up has no chunk left: the chain ended.
            let Ok(chunk) = chunks[i % readers].recv() else {
                break;
            };
            let chunk = chunk?;
            read += chunk.read;
            for record in chunk.records {
                consume(record)?;
            }
            if chunk.last {
                break;
            }
        }
        // Dropping the receivers stops the readers still going.
        Ok(read)
    })
}

/// One reader: the chunks starting at `start`, `stride` apart, up to
/// `last`, sent as long as someone takes them.
fn read(
    ledger: &Ledger,
    mut start: u64,
    stride: u64,
    last: u64,
    until: DateTime<Utc>,
    keep: fn(LedgerRecord) -> Option<LedgerRecord>,
    sender: &SyncSender<Result<Chunk>>,
) {
    while start <= last {
        let end = start.saturating_add(CHUNK - 1).min(last);
        let mut chunk = Chunk {
            records: Vec::new(),
            read: 0,
            last: end == last,
        };
        for record in ledger.from_seq_without_objects(start) {
            let record = match record {
                Ok(record) => record,
                Err(err) => {
                    let _ = sender.send(Err(err.into()));
                    return;
                }
            };
            if record.seq > end {
                break;
            }
            if record.at >= until {
                chunk.last = true;
                break;
            }
            chunk.read += 1;
            chunk.records.extend(keep(record));
        }
        let done = chunk.last;
        if sender.send(Ok(chunk)).is_err() || done {
            return;
        }
        start = start.saturating_add(stride);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{ObjectKey, RecordBody, Verdict};

    #[test]
    fn records_come_in_order_once_whatever_the_readers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path()).expect("ledger");
        let total = 3 * CHUNK + 17;
        for batch in (1..=total).collect::<Vec<_>>().chunks(1_000) {
            let bodies = batch
                .iter()
                .map(|i| {
                    let key = ObjectKey::new("prod", "", "ConfigMap", "ns", format!("cm-{i}"));
                    crate::fixtures::change(key, Verdict::InSync, Utc::now())
                })
                .collect();
            ledger.append(bodies, &[]).expect("append");
        }
        let later = Utc::now() + chrono::Duration::seconds(1);
        let odd = |record: LedgerRecord| (record.seq % 2 == 1).then_some(record);
        for readers in [1, 2, 3] {
            for (from, to) in [(1, total), (5, CHUNK + 3), (CHUNK, CHUNK), (7, total + 100)] {
                let mut seen = Vec::new();
                let read = ordered(&ledger, (from, to), later, readers, odd, &mut |r| {
                    assert!(matches!(r.body, RecordBody::Change { .. }));
                    seen.push(r.seq);
                    Ok(())
                })
                .expect("read");
                let last = to.min(total);
                let expected: Vec<u64> = (from..=last).filter(|s| s % 2 == 1).collect();
                assert_eq!(seen, expected, "{readers} readers, {from}..={to}");
                assert_eq!(read, last - from + 1);
            }
        }
        let earlier = ordered(
            &ledger,
            (1, total),
            DateTime::<Utc>::MIN_UTC,
            2,
            Some,
            &mut |_| Ok(()),
        )
        .expect("read");
        assert_eq!(earlier, 0);
    }
}
