//! Verification of the hash chain, of the trees derived from it, and of
//! the chain against its last signed checkpoint.
//!
//! ```text
//!  records ──walk (hash, link, decode)──┬─▶ chain problems, head
//!                                       └─▶ Expected ─┐
//!  by_object, dedup ──read (2nd thread)──▶ Stored ────┴─▶ index differences
//!  checkpoint (seq, head, signature) ──▶ records lost from the end, record altered
//! ```
//!
//! The walk streams the `records` tree once, in sequence order, keeping the
//! previous record's hash and the derived object states; the large indexes
//! are compared by keyed fingerprints, so memory stays small however long
//! the chain. Appends wait while a verification runs, so it sees one state.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, mpsc};

use chrono::{DateTime, Utc};
use model::chain_hash;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, PublicKey};
use crate::codec::{decode_head, decode_sealed, decode_u64, hex};
use crate::derive::{Indexable, decode_indexable};
use crate::indexes::{self, Expected, Stored};
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
    /// The storage failed reading the records after `after`: its files are
    /// damaged there. The walk stopped; records after it may be lost.
    StorageDamaged {
        /// The last record read.
        after: u64,
        /// What the storage said.
        reason: String,
    },
    /// Records `from..=to` are gone from the end of the chain: its last
    /// checkpoint names record `to`.
    Lost {
        /// The first record lost.
        from: u64,
        /// The last record lost: the checkpoint's.
        to: u64,
        /// When that checkpoint was signed.
        checkpoint_at: DateTime<Utc>,
    },
    /// Record `seq` is not the one its checkpoint signed: it, or the chain
    /// up to it, was rewritten.
    CheckpointMismatch {
        /// The checkpoint's record.
        seq: u64,
        /// The hash signed, hex.
        signed: String,
        /// The hash in the chain, hex (`None` when the record is absent or
        /// unreadable).
        found: Option<String>,
    },
    /// The checkpoint compared with is not valid: altered, or signed by
    /// another key.
    CheckpointInvalid {
        /// The record it names.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// A tree derived from the chain disagrees with it (`objects`,
    /// `dedup`, `by_object`, `by_time`, `meta`).
    IndexDiffers {
        /// The tree.
        tree: String,
        /// The entry's key, for people.
        key: String,
        /// What the chain says the entry holds (`None`: no such entry).
        expected: Option<String>,
        /// What the tree holds (`None`: the entry is missing).
        found: Option<String>,
    },
    /// A derived tree cannot be read (wholly): the storage is damaged there.
    IndexUnreadable {
        /// The tree.
        tree: String,
        /// What the storage said.
        reason: String,
    },
}

impl Problem {
    /// Whether this is a difference of a derived tree, which
    /// [`Ledger::repair`] can rebuild, rather than a problem of the chain.
    pub fn is_index(&self) -> bool {
        matches!(
            self,
            Problem::IndexDiffers { .. } | Problem::IndexUnreadable { .. }
        )
    }
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
            Problem::StorageDamaged { after, reason } => write!(
                f,
                "the storage is damaged after record {after}: {reason}; records after it cannot be read"
            ),
            Problem::Lost {
                from,
                to,
                checkpoint_at,
            } => write!(
                f,
                "{} record(s) lost from the end: records {from}..={to} are gone (the chain ends at \
                 record {}, its checkpoint of {} names record {to})",
                to - from + 1,
                from.saturating_sub(1),
                checkpoint_at.to_rfc3339()
            ),
            Problem::CheckpointMismatch { seq, signed, found } => write!(
                f,
                "record {seq} was altered: its hash {} is not {signed}, the one its checkpoint signed",
                found
                    .as_deref()
                    .unwrap_or("(none: the record is missing or unreadable)")
            ),
            Problem::CheckpointInvalid { seq, reason } => {
                write!(f, "the checkpoint of record {seq} is not valid: {reason}")
            }
            Problem::IndexUnreadable { tree, reason } => write!(
                f,
                "index `{tree}` cannot be read, its storage is damaged: {reason}"
            ),
            Problem::IndexDiffers {
                tree,
                key,
                expected,
                found,
            } => {
                let side = |v: &Option<String>| match v.as_deref() {
                    None => "no entry".to_owned(),
                    Some("") => "an entry".to_owned(),
                    Some(v) => v.to_owned(),
                };
                write!(
                    f,
                    "index `{tree}` differs from the chain at {key}: the chain says {}, the tree holds {}",
                    side(expected),
                    side(found)
                )
            }
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
    /// How many entries of each derived tree differ from the chain (every
    /// one counted).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub index_differences: BTreeMap<String, u64>,
    /// The checkpoint the chain was compared with, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
}

impl VerifyReport {
    /// Whether the chain, its indexes and its checkpoint all agree.
    pub fn is_ok(&self) -> bool {
        self.problem_count == 0
    }

    /// Adds a problem, listed while fewer than [`MAX_PROBLEMS`] are.
    fn push(&mut self, problem: Problem) {
        self.problem_count += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(problem);
        }
    }

    /// Whether the chain itself (and its checkpoint) is sound: every
    /// problem, if any, is an index difference.
    pub fn chain_ok(&self) -> bool {
        self.problem_count == self.index_differences.values().sum::<u64>()
    }
}

impl Ledger {
    /// [`Ledger::verify_with`] without a checkpoint.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.verify_with(None, None)
    }

    /// Walks the whole chain from record 1 and reports every record that
    /// was altered, removed, moved or relinked, a head that does not match
    /// the last record, and every entry of a derived tree (`objects`,
    /// `dedup`, `by_object`, `by_time`, the `meta` indexes) that differs
    /// from what the chain says. Given a `checkpoint`, also checks its
    /// signature (and that `trusted` signed it, when given) and reports
    /// records lost from the end or a record that is not the one it signed.
    ///
    /// Appends wait until it is done. Storage failures reading the records
    /// are reported as damage; tampering is never an error.
    pub fn verify_with(
        &self,
        checkpoint: Option<&Checkpoint>,
        trusted: Option<&PublicKey>,
    ) -> Result<VerifyReport> {
        let _appends = self.lock_head()?;
        self.verify_locked(checkpoint, trusted)
    }

    /// [`Ledger::verify_with`], the append lock held.
    pub(crate) fn verify_locked(
        &self,
        checkpoint: Option<&Checkpoint>,
        trusted: Option<&PublicKey>,
    ) -> Result<VerifyReport> {
        let hasher = RandomState::new();
        let mut walk = Walk::default();
        let (mut anchor, mut invalid) = (None, None);
        if let Some(checkpoint) = checkpoint {
            match checkpoint.verify(trusted) {
                Ok(()) => anchor = Some(Anchor::new(checkpoint)),
                Err(err) => {
                    invalid = Some(Problem::CheckpointInvalid {
                        seq: checkpoint.seq,
                        reason: match err {
                            crate::CheckpointError::BadSignature { reason, .. } => reason,
                            other => other.to_string(),
                        },
                    })
                }
            }
        }
        let (complete, expected, stored) = std::thread::scope(|scope| {
            let stored = scope.spawn(|| Stored::read(&self.trees, &hasher));
            // Decoding records and deriving their index entries run on a
            // second thread, a chunk behind the walk reading and hashing.
            let (to_decoder, chunks) = mpsc::sync_channel::<Arc<Vec<Entry>>>(PIPELINE);
            let (decoded_tx, decoded) = mpsc::sync_channel::<Vec<Decoded>>(PIPELINE);
            let decoder_hasher = hasher.clone();
            let decoder = scope.spawn(move || {
                let mut expected = Expected::new(decoder_hasher);
                for chunk in chunks {
                    let seqs = chunk
                        .iter()
                        .map(|(key, value)| {
                            let record = decode_record(value)?;
                            if let Some(seq) = decode_u64(key) {
                                expected.add(seq, &record);
                            }
                            Ok(record.seq)
                        })
                        .collect();
                    if decoded_tx.send(seqs).is_err() {
                        break;
                    }
                }
                expected
            });
            let mut entries = self.trees.records.iter();
            let mut pending = VecDeque::new();
            let mut complete = true;
            let mut reading = true;
            while reading || !pending.is_empty() {
                if reading {
                    let mut chunk = Vec::with_capacity(CHUNK);
                    for entry in entries.by_ref().take(CHUNK) {
                        match entry {
                            Ok(entry) => chunk.push(entry),
                            Err(err) => {
                                walk.damaged = Some(crate::error::describe(&err));
                                complete = false;
                                break;
                            }
                        }
                    }
                    reading = chunk.len() == CHUNK && complete;
                    if !chunk.is_empty() {
                        let chunk = Arc::new(chunk);
                        if to_decoder.send(chunk.clone()).is_err() {
                            break;
                        }
                        let hashes: Vec<_> = chunk.iter().map(|(k, v)| rehash(k, v)).collect();
                        pending.push_back((chunk, hashes));
                    }
                    if reading && pending.len() < PIPELINE {
                        continue;
                    }
                }
                let Some((chunk, hashes)) = pending.pop_front() else {
                    break;
                };
                let Ok(seqs) = decoded.recv() else {
                    break;
                };
                for (((key, value), hash), seq) in chunk.iter().zip(hashes).zip(seqs) {
                    walk.visit(key, value, hash, seq);
                    if let (Some(anchor), Some(prev)) = (&mut anchor, walk.prev) {
                        anchor.see(prev.seq, prev.hash);
                    }
                }
            }
            drop(to_decoder);
            let expected = decoder.join();
            if let Some(reason) = walk.damaged.take() {
                let after = walk.prev.map_or(0, |p| p.seq);
                walk.report(Problem::StorageDamaged { after, reason });
            }
            let stored = stored.join();
            // Chunks left unchecked mean the decoding thread stopped.
            (complete && pending.is_empty(), expected, stored)
        });
        let expected =
            expected.map_err(|_| Error::corrupt("records", "?", "the decoding thread panicked"))?;
        let stored =
            stored.map_err(|_| Error::corrupt("by_object", "?", "the index reader panicked"))?;
        let head = self
            .trees
            .meta
            .get(HEAD_KEY)
            .map_err(Error::storage("reading the head to verify"))?;
        let head = match head {
            None => Some(Head::default()),
            Some(value) => decode_head(&value).map(|(seq, hash)| Head { seq, hash }),
        };
        let last_seq = walk.prev.map_or(0, |p| p.seq);
        // Past damage, the head cannot be compared with a last record.
        let head = match walk.prev {
            Some(prev) if !complete => Some(Head {
                seq: prev.seq,
                hash: prev.hash,
            }),
            None if !complete => Some(Head::default()),
            _ => head,
        };
        let mut report = walk.finish(head);
        if let Some(problem) = invalid {
            report.push(problem);
        }
        if let Some(anchor) = anchor {
            anchor.finish(last_seq, &mut report);
        }
        // A walk cut short by damage derives too little to compare with.
        if complete {
            let differences = indexes::compare(&self.trees, expected, stored);
            let listed = differences.list.len() + differences.unreadable.len();
            let total = differences.total();
            for (tree, reason) in differences.unreadable {
                report.push(Problem::IndexUnreadable { tree, reason });
            }
            for difference in differences.list {
                report.push(Problem::IndexDiffers {
                    tree: difference.tree,
                    key: difference.key,
                    expected: difference.expected,
                    found: difference.found,
                });
            }
            // Differences past the cap were counted, not listed.
            report.problem_count += total - listed as u64;
            report.index_differences = differences.counts;
        }
        report.checkpoint = checkpoint.cloned();
        tracing::info!(
            records = report.records,
            problems = report.problem_count,
            "ledger verified"
        );
        Ok(report)
    }
}

/// A stored entry of the `records` tree.
type Entry = (sled::IVec, sled::IVec);

/// What the decoding thread says of an entry: the sequence number sealed
/// in its record, or why it is not a record.
type Decoded = Result<u64, String>;

/// Entries handed to the decoding thread at a time.
const CHUNK: usize = 64;

/// Chunks in flight between the walk and the decoding thread.
const PIPELINE: usize = 4;

/// The hash of the record stored as `key`, recomputed as sealed under that
/// sequence number (`None` when the entry cannot be read as one).
fn rehash(key: &[u8], value: &[u8]) -> Option<[u8; 32]> {
    let seq = decode_u64(key)?;
    let view = decode_sealed(value).ok()?;
    Some(chain_hash(view.prev_hash, seq, view.bytes))
}

/// A stored value decoded for its index entries.
fn decode_record(value: &[u8]) -> Result<Indexable, String> {
    decode_sealed(value).and_then(|view| decode_indexable(view.bytes))
}

/// A valid checkpoint the chain is compared with.
#[derive(Debug)]
struct Anchor {
    seq: u64,
    signed: [u8; 32],
    at: DateTime<Utc>,
    /// The hash of the checkpoint's record in the chain, once walked past.
    found: Option<[u8; 32]>,
}

impl Anchor {
    fn new(checkpoint: &Checkpoint) -> Self {
        Self {
            seq: checkpoint.seq,
            signed: checkpoint.head_hash().unwrap_or_default(),
            at: checkpoint.at,
            found: None,
        }
    }

    /// Notes the hash of record `seq` as the walk passes it.
    fn see(&mut self, seq: u64, hash: [u8; 32]) {
        if seq == self.seq {
            self.found = Some(hash);
        }
    }

    /// Reports records lost from the end, or the checkpoint's record
    /// differing from the one signed.
    fn finish(self, last_seq: u64, report: &mut VerifyReport) {
        if self.seq == 0 {
            return;
        }
        if last_seq < self.seq {
            report.push(Problem::Lost {
                from: last_seq + 1,
                to: self.seq,
                checkpoint_at: self.at,
            });
        } else if self.found != Some(self.signed) {
            report.push(Problem::CheckpointMismatch {
                seq: self.seq,
                signed: hex(&self.signed),
                found: self.found.filter(|h| *h != [0; 32]).map(|h| hex(&h)),
            });
        }
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
    /// What the storage said when reading the records failed.
    damaged: Option<String>,
    records: u64,
    problems: Vec<Problem>,
    problem_count: u64,
}

impl Walk {
    /// Checks one stored entry, given in key order, with its hash as
    /// recomputed under its key ([`rehash`]) and the sequence number sealed
    /// in its record ([`decode_record`]).
    fn visit(&mut self, key: &[u8], value: &[u8], rehashed: Option<[u8; 32]>, record: Decoded) {
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
        let view = match decode_sealed(value) {
            Ok(view) => view,
            Err(reason) => {
                self.report(Problem::Unreadable { seq, reason });
                self.prev = Some(Prev {
                    seq,
                    hash: [0; 32],
                    sound: false,
                });
                return;
            }
        };
        // A moved record is intact under its own sequence number.
        let sealed_as = *record.as_ref().unwrap_or(&seq);
        let rehashed = match rehashed {
            Some(hash) if sealed_as == seq => hash,
            _ => chain_hash(view.prev_hash, sealed_as, view.bytes),
        };
        let sound = if rehashed != *view.hash {
            self.report(Problem::Altered { seq });
            false
        } else {
            match &record {
                Err(reason) => {
                    self.report(Problem::Unreadable {
                        seq,
                        reason: reason.clone(),
                    });
                    false
                }
                Ok(found) if *found != seq => {
                    self.report(Problem::Reordered { seq, found: *found });
                    false
                }
                Ok(_) => {
                    let expected = self.prev.map_or([0; 32], |p| p.hash);
                    let linked_to_sound = self.prev.is_none_or(|p| p.sound);
                    let broken = contiguous && linked_to_sound && *view.prev_hash != expected;
                    if broken {
                        self.report(Problem::BrokenLink { seq });
                    }
                    !broken
                }
            }
        };
        self.prev = Some(Prev {
            seq,
            hash: *view.hash,
            sound,
        });
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
            index_differences: BTreeMap::new(),
            checkpoint: None,
        }
    }

    fn report(&mut self, problem: Problem) {
        self.problem_count += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(problem);
        }
    }
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

    /// The problems of the chain itself (index differences left out).
    fn problems(ledger: &Ledger) -> Vec<Problem> {
        let report = ledger.verify().expect("verifies");
        assert_eq!(report.problem_count, report.problems.len() as u64);
        report
            .problems
            .into_iter()
            .filter(|p| !p.is_index())
            .collect()
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
            let (key, value) = (seq_key(seq * 2 + 2), b"junk");
            walk.visit(
                &key,
                value,
                rehash(&key, value),
                decode_record(value).map(|r| r.seq),
            );
        }
        let report = walk.finish(Some(Head::default()));
        assert_eq!(report.problems.len(), MAX_PROBLEMS);
        assert!(report.problem_count > MAX_PROBLEMS as u64);
        assert!(!report.is_ok());
    }
}
