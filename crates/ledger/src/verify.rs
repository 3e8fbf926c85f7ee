//! Verification of the hash chain.
//!
//! The walk streams the `records` tree once, in sequence order, and keeps only
//! the previous record's hash: memory stays flat however long the chain.

use std::fmt;

use model::chain_hash;
use serde::{Deserialize, Serialize};

use crate::codec::{SealedView, decode_head, decode_sealed, decode_u64, hex};
use crate::store::{HEAD_KEY, Head};
use crate::{Error, Ledger, Result};

/// At most this many problems are kept in a report; the rest are counted.
pub const MAX_PROBLEMS: usize = 1000;

/// One way the stored chain departs from an honest one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// Record `seq`'s hash does not recompute: its bytes, its sequence number
    /// or its `prev_hash` were changed after it was written.
    Altered {
        /// The record.
        seq: u64,
    },
    /// Records after `after` and before `next` are missing (removed).
    Missing {
        /// The last record before the gap (0 when the gap starts the chain).
        after: u64,
        /// The first record after the gap.
        next: u64,
    },
    /// The record stored as `seq` is record `found`: records were moved.
    Reordered {
        /// Where the record is stored.
        seq: u64,
        /// The sequence number sealed inside it.
        found: u64,
    },
    /// Record `seq` is intact but its `prev_hash` is not the hash of the
    /// record before it: that record was replaced by one with a new hash.
    BrokenLink {
        /// The record whose link is broken.
        seq: u64,
    },
    /// Record `seq` cannot be read as a sealed ledger record.
    Unreadable {
        /// The record.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// An entry whose key is not a sequence number follows record `after`.
    StrayEntry {
        /// The last record before the entry (0 at the start).
        after: u64,
    },
    /// The stored head does not name the last record: records were removed
    /// from the end, or the head was rewritten.
    HeadMismatch {
        /// Sequence number the head names.
        head_seq: u64,
        /// Hash the head names, hex.
        head_hash: String,
        /// Sequence number of the last record found.
        last_seq: u64,
        /// Hash of the last record found, hex.
        last_hash: String,
    },
    /// The stored head cannot be read.
    HeadUnreadable,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Altered { seq } => {
                write!(f, "record {seq} was altered: its hash does not recompute")
            }
            Problem::Missing { after, next } => {
                write!(
                    f,
                    "records {}..={} are missing",
                    after + 1,
                    next.saturating_sub(1)
                )
            }
            Problem::Reordered { seq, found } => {
                write!(f, "record {found} is stored in place of record {seq}")
            }
            Problem::BrokenLink { seq } => write!(
                f,
                "record {seq} does not link to record {}: the earlier record was replaced",
                seq.saturating_sub(1)
            ),
            Problem::Unreadable { seq, reason } => {
                write!(f, "record {seq} is unreadable: {reason}")
            }
            Problem::StrayEntry { after } => {
                write!(f, "an entry that is not a record follows record {after}")
            }
            Problem::HeadMismatch {
                head_seq, last_seq, ..
            } if head_seq != last_seq => write!(
                f,
                "the head names record {head_seq} but the last record is {last_seq}: records were removed from the end"
            ),
            Problem::HeadMismatch { head_seq, .. } => {
                write!(f, "the head's hash does not match record {head_seq}")
            }
            Problem::HeadUnreadable => f.write_str("the stored head is unreadable"),
        }
    }
}

/// The outcome of [`Ledger::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Records checked.
    pub records: u64,
    /// Sequence number of the last record found (0 when none).
    pub last_seq: u64,
    /// Problems in chain order, at most [`MAX_PROBLEMS`].
    pub problems: Vec<Problem>,
    /// How many problems were found in all.
    pub problem_count: u64,
}

impl VerifyReport {
    /// Whether the chain is intact.
    pub fn is_ok(&self) -> bool {
        self.problem_count == 0
    }
}

impl Ledger {
    /// Walks the whole chain from record 1 and reports every record that was
    /// altered, removed, moved or relinked, and a head that does not match
    /// the last record. Storage failures are errors; tampering is not.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut walk = Walk::default();
        for entry in self.trees.records.iter() {
            let (key, value) = entry.map_err(Error::storage("reading records to verify"))?;
            walk.visit(&key, &value);
        }
        let head = self
            .trees
            .meta
            .get(HEAD_KEY)
            .map_err(Error::storage("reading the head to verify"))?;
        let head = match head {
            None => Some(Head::default()),
            Some(value) => decode_head(&value).map(|(seq, hash)| Head { seq, hash }),
        };
        let report = walk.finish(head);
        tracing::info!(
            records = report.records,
            problems = report.problem_count,
            "ledger verified"
        );
        Ok(report)
    }
}

/// The previous record of the walk.
#[derive(Debug, Clone, Copy)]
struct Prev {
    seq: u64,
    hash: [u8; 32],
    /// Whether it passed every check; links to an unsound record are not
    /// reported again.
    sound: bool,
}

/// State of one walk over the chain.
#[derive(Debug, Default)]
struct Walk {
    prev: Option<Prev>,
    records: u64,
    problems: Vec<Problem>,
    problem_count: u64,
}

impl Walk {
    /// Checks one stored entry, given in key order.
    fn visit(&mut self, key: &[u8], value: &[u8]) {
        let last = self.prev.map_or(0, |p| p.seq);
        let Some(seq) = decode_u64(key) else {
            self.report(Problem::StrayEntry { after: last });
            return;
        };
        self.records += 1;
        let contiguous = seq == last + 1;
        if !contiguous {
            self.report(Problem::Missing {
                after: last,
                next: seq,
            });
        }
        let (hash, sound) = match check_record(seq, value) {
            Ok(view) => {
                let expected = self.prev.map_or([0; 32], |p| p.hash);
                let linked_to_sound = self.prev.is_none_or(|p| p.sound);
                let broken = contiguous && linked_to_sound && *view.prev_hash != expected;
                if broken {
                    self.report(Problem::BrokenLink { seq });
                }
                (*view.hash, !broken)
            }
            Err((hash, problem)) => {
                self.report(problem);
                (hash, false)
            }
        };
        self.prev = Some(Prev { seq, hash, sound });
    }

    /// Compares the stored head with the last record and ends the walk.
    fn finish(mut self, head: Option<Head>) -> VerifyReport {
        let last = self.prev.map_or(Head::default(), |p| Head {
            seq: p.seq,
            hash: p.hash,
        });
        match head {
            None => self.report(Problem::HeadUnreadable),
            Some(head) if head != last => self.report(Problem::HeadMismatch {
                head_seq: head.seq,
                head_hash: hex(&head.hash),
                last_seq: last.seq,
                last_hash: hex(&last.hash),
            }),
            Some(_) => {}
        }
        VerifyReport {
            records: self.records,
            last_seq: last.seq,
            problems: self.problems,
            problem_count: self.problem_count,
        }
    }

    fn report(&mut self, problem: Problem) {
        self.problem_count += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(problem);
        }
    }
}

/// Checks that the value stored as `seq` is an intact record sealed as
/// `seq`. On failure, returns the stored hash (zeros when unreadable) and the
/// problem.
fn check_record(seq: u64, value: &[u8]) -> Result<SealedView<'_>, ([u8; 32], Problem)> {
    let view =
        decode_sealed(value).map_err(|reason| ([0; 32], Problem::Unreadable { seq, reason }))?;
    let inner = sealed_seq(view.bytes);
    // A moved record is intact under its own sequence number.
    let sealed_as = inner.unwrap_or(seq);
    if chain_hash(view.prev_hash, sealed_as, view.bytes) != *view.hash {
        return Err((*view.hash, Problem::Altered { seq }));
    }
    match inner {
        None => Err((
            *view.hash,
            Problem::Unreadable {
                seq,
                reason: "its bytes are not a ledger record".into(),
            },
        )),
        Some(found) if found != seq => Err((*view.hash, Problem::Reordered { seq, found })),
        Some(_) => Ok(view),
    }
}

/// The sequence number inside a record's canonical bytes, if they are a
/// ledger record.
fn sealed_seq(bytes: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Envelope {
        seq: u64,
    }
    serde_json::from_slice::<Envelope>(bytes)
        .ok()
        .map(|e| e.seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_head, encode_sealed, seq_key};
    use crate::store::tests::{authorized, change};
    use model::Sealed;

    /// A ledger of `n` records about five objects.
    fn ledger_of(n: u64) -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path()).expect("opens");
        let bodies = (0..n)
            .map(|i| change(&format!("web-{}", i % 5), &i.to_string(), authorized()))
            .collect();
        ledger.append(bodies, &[]).expect("appends");
        (dir, ledger)
    }

    fn stored(ledger: &Ledger, seq: u64) -> Vec<u8> {
        ledger
            .trees
            .records
            .get(seq_key(seq))
            .expect("reads")
            .expect("present")
            .to_vec()
    }

    fn put(ledger: &Ledger, seq: u64, value: &[u8]) {
        ledger
            .trees
            .records
            .insert(seq_key(seq), value)
            .expect("writes");
    }

    fn problems(ledger: &Ledger) -> Vec<Problem> {
        let report = ledger.verify().expect("verifies");
        assert_eq!(report.problem_count, report.problems.len() as u64);
        report.problems
    }

    #[test]
    fn an_honest_ledger_verifies() {
        let (_dir, ledger) = ledger_of(10);
        let report = ledger.verify().expect("verifies");
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(report.records, 10);
        assert_eq!(report.last_seq, 10);
    }

    #[test]
    fn an_altered_record_is_named() {
        let (_dir, ledger) = ledger_of(10);
        let mut value = stored(&ledger, 4);
        let at = value.len() - 20;
        value[at] ^= 0x01;
        put(&ledger, 4, &value);
        assert_eq!(problems(&ledger), vec![Problem::Altered { seq: 4 }]);
    }

    #[test]
    fn a_record_rewritten_with_a_fresh_hash_breaks_the_next_link() {
        let (_dir, ledger) = ledger_of(10);
        let value = stored(&ledger, 4);
        let view = decode_sealed(&value).expect("decodes");
        let forged = String::from_utf8(view.bytes.to_vec())
            .expect("utf-8")
            .replace("c0ffee", "evil00");
        put(
            &ledger,
            4,
            &encode_sealed(&Sealed::new(4, *view.prev_hash, forged.into_bytes())),
        );
        assert_eq!(problems(&ledger), vec![Problem::BrokenLink { seq: 5 }]);
    }

    #[test]
    fn a_removed_record_is_named_as_a_gap() {
        let (_dir, ledger) = ledger_of(10);
        ledger.trees.records.remove(seq_key(6)).expect("removes");
        assert_eq!(
            problems(&ledger),
            vec![Problem::Missing { after: 5, next: 7 }]
        );
    }

    #[test]
    fn removed_first_records_are_named_as_a_gap_at_the_start() {
        let (_dir, ledger) = ledger_of(10);
        ledger.trees.records.remove(seq_key(1)).expect("removes");
        ledger.trees.records.remove(seq_key(2)).expect("removes");
        assert_eq!(
            problems(&ledger),
            vec![Problem::Missing { after: 0, next: 3 }]
        );
    }

    #[test]
    fn two_swapped_records_are_named() {
        let (_dir, ledger) = ledger_of(10);
        let (three, four) = (stored(&ledger, 3), stored(&ledger, 4));
        put(&ledger, 3, &four);
        put(&ledger, 4, &three);
        assert_eq!(
            problems(&ledger),
            vec![
                Problem::Reordered { seq: 3, found: 4 },
                Problem::Reordered { seq: 4, found: 3 }
            ]
        );
    }

    #[test]
    fn a_truncated_tail_is_named_by_the_head() {
        let (_dir, ledger) = ledger_of(10);
        ledger.trees.records.remove(seq_key(10)).expect("removes");
        ledger.trees.records.remove(seq_key(9)).expect("removes");
        let found = problems(&ledger);
        assert!(
            matches!(
                found.as_slice(),
                [Problem::HeadMismatch {
                    head_seq: 10,
                    last_seq: 8,
                    ..
                }]
            ),
            "{found:?}"
        );
        assert!(
            found[0].to_string().contains("removed from the end"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn a_rewritten_head_is_named() {
        let (_dir, ledger) = ledger_of(3);
        ledger
            .trees
            .meta
            .insert(HEAD_KEY, &encode_head(3, &[9; 32])[..])
            .expect("writes");
        let found = problems(&ledger);
        assert!(
            matches!(
                found.as_slice(),
                [Problem::HeadMismatch {
                    head_seq: 3,
                    last_seq: 3,
                    ..
                }]
            ),
            "{found:?}"
        );
        ledger
            .trees
            .meta
            .insert(HEAD_KEY, &b"short"[..])
            .expect("writes");
        assert_eq!(problems(&ledger), vec![Problem::HeadUnreadable]);
    }

    #[test]
    fn unreadable_values_and_stray_keys_are_named() {
        let (_dir, ledger) = ledger_of(5);
        put(&ledger, 2, b"junk");
        ledger
            .trees
            .records
            .insert(b"stray-key", &b""[..])
            .expect("writes");
        let found = problems(&ledger);
        assert!(
            matches!(found[0], Problem::Unreadable { seq: 2, .. }),
            "{found:?}"
        );
        assert_eq!(found[1], Problem::StrayEntry { after: 5 });
        assert_eq!(found.len(), 2, "{found:?}");
    }

    #[test]
    fn intact_bytes_that_are_not_a_record_are_unreadable() {
        let (_dir, ledger) = ledger_of(3);
        let value = stored(&ledger, 2);
        let view = decode_sealed(&value).expect("decodes");
        put(
            &ledger,
            2,
            &encode_sealed(&Sealed::new(2, *view.prev_hash, b"[1,2]".to_vec())),
        );
        let found = problems(&ledger);
        assert!(
            matches!(found[0], Problem::Unreadable { seq: 2, .. }),
            "{found:?}"
        );
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn reports_keep_at_most_the_cap_and_count_the_rest() {
        let mut walk = Walk::default();
        for seq in 0..(MAX_PROBLEMS as u64 + 10) {
            walk.visit(&seq_key(seq * 2 + 2), b"junk");
        }
        let report = walk.finish(Some(Head::default()));
        assert_eq!(report.problems.len(), MAX_PROBLEMS);
        assert!(report.problem_count > MAX_PROBLEMS as u64);
        assert!(!report.is_ok());
    }
}
