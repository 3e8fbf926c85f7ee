//! Checking and rebuilding the derived trees against the chain.
//!
//! ```text
//!  chain walk ──derive──▶ Expected ─┐
//!                                   ├─▶ compare ─▶ differences (tree, key, expected, found)
//!  stored trees ──read──▶ Stored ───┘                  │
//!                                           repair: clear and rewrite those trees
//! ```
//!
//! `by_object` and `dedup` hold an entry per record: they are compared by a
//! keyed fingerprint (a sum of SipHash values under a key chosen afresh for
//! each check, which someone editing the files cannot know), so memory stays
//! small; only when a fingerprint differs are their entries checked one by
//! one against the records they name, to name the differences. `objects`,
//! `by_time` and the `meta` index entries are compared entry by entry.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::hash::BuildHasher as _;

use chrono::DateTime;

use crate::codec::{decode_sealed, decode_u64, seq_key, trailing_seq};
use crate::derive::{
    BY_OBJECT, BY_TIME, DEDUP, Derived, IndexDifference, Indexable, META, META_PREFIXES, OBJECTS,
    decode_indexable, derive, time_entry,
};
use crate::state::StoredState;
use crate::store::Trees;
use crate::verify::MAX_PROBLEMS;
use crate::{Error, Ledger, Result};

/// An order-independent fingerprint of a set of entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Fingerprint {
    sum: u64,
    count: u64,
}

impl Fingerprint {
    fn add(&mut self, hasher: &RandomState, key: &[u8], value: &[u8]) {
        self.sum = self.sum.wrapping_add(hasher.hash_one((key, value)));
        self.count += 1;
    }
}

/// A growable set of sequence numbers.
#[derive(Debug, Default)]
struct SeqSet(Vec<u64>);

impl SeqSet {
    fn insert(&mut self, seq: u64) {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }

    fn contains(&self, seq: u64) -> bool {
        self.0
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().enumerate().flat_map(|(word, bits)| {
            (0..64u64)
                .filter(move |bit| bits & (1 << bit) != 0)
                .map(move |bit| word as u64 * 64 + bit)
        })
    }
}

/// What the chain says the derived trees hold, gathered record by record.
#[derive(Debug)]
pub(crate) struct Expected {
    hasher: RandomState,
    states: HashMap<Vec<u8>, StoredState>,
    by_object: Fingerprint,
    dedup: Fingerprint,
    /// Records that add a `by_object` entry.
    by_object_seqs: SeqSet,
    /// Records that add a `dedup` entry.
    dedup_seqs: SeqSet,
    meta: BTreeSet<Vec<u8>>,
    /// `by_time` entries, one per run of consecutive records sharing `at`.
    runs: Vec<([u8; 16], [u8; 8])>,
    /// The run being gathered: its time, first and last record.
    run: Option<(DateTime<chrono::Utc>, u64, u64)>,
}

impl Expected {
    pub(crate) fn new(hasher: RandomState) -> Self {
        Self {
            hasher,
            states: HashMap::new(),
            by_object: Fingerprint::default(),
            dedup: Fingerprint::default(),
            by_object_seqs: SeqSet::default(),
            dedup_seqs: SeqSet::default(),
            meta: BTreeSet::new(),
            runs: Vec::new(),
            run: None,
        }
    }

    /// Adds the entries record `seq` derives.
    pub(crate) fn add(&mut self, seq: u64, record: &Indexable) {
        let states = &mut self.states;
        let Ok(derived) = derive(record.subject(), seq, |index| {
            Ok::<_, Infallible>(states.remove(index))
        });
        if let Some(key) = &derived.by_object {
            self.by_object.add(&self.hasher, key, &[]);
            self.by_object_seqs.insert(seq);
        }
        if let Some(id) = &derived.dedup {
            self.dedup.add(&self.hasher, id.as_bytes(), &seq_key(seq));
            self.dedup_seqs.insert(seq);
        }
        if let Some(key) = derived.meta {
            self.meta.insert(key);
        }
        if let Some((index, state)) = derived.state {
            self.states.insert(index, state);
        }
        match &mut self.run {
            Some((at, _, last)) if *at == record.at && *last + 1 == seq => *last = seq,
            run => {
                if let Some((at, first, last)) = run.take() {
                    self.runs.push(time_entry(at, first, last));
                }
                *run = Some((record.at, seq, seq));
            }
        }
    }

    /// Ends the last run.
    fn finish(&mut self) {
        if let Some((at, first, last)) = self.run.take() {
            self.runs.push(time_entry(at, first, last));
        }
        self.runs.sort_unstable();
    }
}

/// The large stored trees, read (in parallel with the chain walk) into
/// fingerprints under the same key, or why they cannot be read.
#[derive(Debug)]
pub(crate) struct Stored {
    by_object: Result<Fingerprint, String>,
    dedup: Result<Fingerprint, String>,
}

impl Stored {
    pub(crate) fn read(trees: &Trees, hasher: &RandomState) -> Self {
        let fingerprint = |tree: &sled::Tree| -> Result<Fingerprint, String> {
            let mut out = Fingerprint::default();
            for entry in tree.iter() {
                let (key, value) = entry.map_err(|err| crate::error::describe(&err))?;
                out.add(hasher, &key, &value);
            }
            Ok(out)
        };
        Self {
            by_object: fingerprint(&trees.by_object),
            dedup: fingerprint(&trees.dedup),
        }
    }
}

/// Differences found, at most [`MAX_PROBLEMS`] kept, all counted per tree.
#[derive(Debug, Default)]
pub(crate) struct Differences {
    pub list: Vec<IndexDifference>,
    /// Trees that could not be read, and what the storage said.
    pub unreadable: Vec<(String, String)>,
    pub counts: BTreeMap<String, u64>,
}

impl Differences {
    /// Notes that `tree` could not be read (wholly compared) because of
    /// `err`: the storage is damaged there.
    fn unreadable(&mut self, tree: &str, err: &Error) {
        let reason = match err {
            Error::Storage { op, source } => format!("{op}: {}", crate::error::describe(&source.0)),
            other => other.to_string(),
        };
        *self.counts.entry(tree.to_owned()).or_default() += 1;
        self.unreadable.push((tree.to_owned(), reason));
    }

    fn push(&mut self, tree: &str, key: String, expected: Option<String>, found: Option<String>) {
        *self.counts.entry(tree.to_owned()).or_default() += 1;
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(IndexDifference {
                tree: tree.to_owned(),
                key,
                expected,
                found,
            });
        }
    }

    /// How many differences in all.
    pub(crate) fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Compares what the chain says with the stored trees. A tree the storage
/// cannot read is noted as such, and the others are still compared.
pub(crate) fn compare(trees: &Trees, mut expected: Expected, stored: Stored) -> Differences {
    expected.finish();
    let mut out = Differences::default();
    for (tree, want, found) in [
        (BY_OBJECT, expected.by_object, stored.by_object),
        (DEDUP, expected.dedup, stored.dedup),
    ] {
        let found = match found {
            Ok(found) if found == want => continue,
            Ok(found) => found,
            Err(reason) => {
                *out.counts.entry(tree.to_owned()).or_default() += 1;
                out.unreadable.push((tree.to_owned(), reason));
                continue;
            }
        };
        let before = out.total();
        let named = if tree == BY_OBJECT {
            name_by_object(trees, &expected.by_object_seqs, &mut out)
        } else {
            name_dedup(trees, &expected.dedup_seqs, &mut out)
        };
        if let Err(err) = named {
            out.unreadable(tree, &err);
        } else if out.total() == before {
            // Entries can differ without one being wrong on its own, e.g. a
            // record indexed twice.
            out.push(
                tree,
                "(all entries)".into(),
                Some(format!("{} entries", want.count)),
                Some(format!("{} entries", found.count)),
            );
        }
    }
    if let Err(err) = compare_objects(trees, expected.states, &mut out) {
        out.unreadable(OBJECTS, &err);
    }
    if let Err(err) = compare_by_time(trees, &expected.runs, &mut out) {
        out.unreadable(BY_TIME, &err);
    }
    if let Err(err) = compare_meta(trees, &expected.meta, &mut out) {
        out.unreadable(META, &err);
    }
    out
}

/// The entries record `seq` derives, read on its own (its object state
/// aside, which depends on the records before it).
fn derive_one(records: &sled::Tree, seq: u64) -> Result<Option<Derived>> {
    let Some(value) = records
        .get(seq_key(seq))
        .map_err(Error::storage("reading a record to verify an index"))?
    else {
        return Ok(None);
    };
    let Ok(view) = decode_sealed(&value) else {
        return Ok(None);
    };
    let Ok(record) = decode_indexable(view.bytes) else {
        return Ok(None);
    };
    let Ok(derived) = derive(record.subject(), seq, |_| Ok::<_, Infallible>(None));
    Ok(Some(derived))
}

/// Names the `by_object` entries that differ: each stored entry is checked
/// against the record it names, then the records left without one.
fn name_by_object(trees: &Trees, expected: &SeqSet, out: &mut Differences) -> Result<()> {
    let mut seen = SeqSet::default();
    for entry in trees.by_object.iter() {
        let (key, value) = entry.map_err(Error::storage("reading the object index to verify"))?;
        let seq = trailing_seq(&key);
        let derived = match seq {
            Some(seq) => derive_one(&trees.records, seq)?.and_then(|d| d.by_object),
            None => None,
        };
        match (seq, derived) {
            (Some(seq), Some(derived)) if *derived == *key => {
                seen.insert(seq);
                if !value.is_empty() {
                    out.push(
                        BY_OBJECT,
                        object_entry(&key),
                        Some(String::new()),
                        Some(bytes_for_people(&value)),
                    );
                }
            }
            _ => out.push(
                BY_OBJECT,
                object_entry(&key),
                None,
                Some(bytes_for_people(&value)),
            ),
        }
    }
    for seq in expected.iter().filter(|seq| !seen.contains(*seq)) {
        if let Some(key) = derive_one(&trees.records, seq)?.and_then(|d| d.by_object) {
            out.push(BY_OBJECT, object_entry(&key), Some(String::new()), None);
        }
    }
    Ok(())
}

/// Names the `dedup` entries that differ, pairing an entry pointing at the
/// wrong record with the record it should point at.
fn name_dedup(trees: &Trees, expected: &SeqSet, out: &mut Differences) -> Result<()> {
    let mut seen = SeqSet::default();
    let mut wrong: BTreeMap<String, String> = BTreeMap::new();
    let mut wrong_beyond_cap = 0u64;
    for entry in trees.dedup.iter() {
        let (key, value) = entry.map_err(Error::storage("reading the dedup index to verify"))?;
        let id = String::from_utf8_lossy(&key).into_owned();
        let seq = decode_u64(&value);
        let derived = match seq {
            Some(seq) => derive_one(&trees.records, seq)?.and_then(|d| d.dedup),
            None => None,
        };
        match (seq, derived) {
            (Some(seq), Some(derived)) if derived == id => seen.insert(seq),
            _ if wrong.len() < MAX_PROBLEMS => {
                wrong.insert(id, seq_for_people(&value));
            }
            _ => wrong_beyond_cap += 1,
        }
    }
    for seq in expected.iter().filter(|seq| !seen.contains(*seq)) {
        if let Some(id) = derive_one(&trees.records, seq)?.and_then(|d| d.dedup) {
            let found = wrong.remove(&id);
            out.push(DEDUP, id, Some(format!("record {seq}")), found);
        }
    }
    for (id, found) in wrong {
        out.push(DEDUP, id, None, Some(found));
    }
    for _ in 0..wrong_beyond_cap {
        out.push(DEDUP, String::new(), None, None);
    }
    Ok(())
}

/// Compares the stored object states with the derived ones.
fn compare_objects(
    trees: &Trees,
    mut expected: HashMap<Vec<u8>, StoredState>,
    out: &mut Differences,
) -> Result<()> {
    for entry in trees.objects.iter() {
        let (key, value) = entry.map_err(Error::storage("reading object states to verify"))?;
        let want = expected.remove(key.as_ref());
        let found = serde_json::from_slice::<StoredState>(&value);
        match (&want, &found) {
            (Some(want), Ok(found)) if want == found => {}
            _ => out.push(
                OBJECTS,
                index_for_people(&key),
                want.as_ref().map(state_for_people),
                Some(match &found {
                    Ok(state) => state_for_people(state),
                    Err(err) => format!("unreadable: {err}"),
                }),
            ),
        }
    }
    let mut missing: Vec<_> = expected.into_iter().collect();
    missing.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (key, state) in missing {
        out.push(
            OBJECTS,
            index_for_people(&key),
            Some(state_for_people(&state)),
            None,
        );
    }
    Ok(())
}

/// Compares the stored time index with the runs of the chain. Consecutive
/// stored entries of one time that continue each other are one run: two
/// batches appended in the same nanosecond.
fn compare_by_time(
    trees: &Trees,
    expected: &[([u8; 16], [u8; 8])],
    out: &mut Differences,
) -> Result<()> {
    let mut stored: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for entry in trees.by_time.iter() {
        let (key, value) = entry.map_err(Error::storage("reading the time index to verify"))?;
        if let Some((last_key, last_value)) = stored.last_mut()
            && key.len() == 16
            && last_key.len() == 16
            && key[..8] == last_key[..8]
            && trailing_seq(&key)
                .zip(decode_u64(last_value))
                .is_some_and(|(first, last)| first == last + 1)
            && value.len() == 8
        {
            *last_value = value.to_vec();
            continue;
        }
        stored.push((key.to_vec(), value.to_vec()));
    }
    let mut stored = stored.into_iter().peekable();
    let mut expected = expected.iter().peekable();
    loop {
        let order = match (stored.peek(), expected.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((found, _)), Some((want, _))) => found.as_slice().cmp(want.as_slice()),
        };
        match order {
            std::cmp::Ordering::Less => {
                if let Some((key, value)) = stored.next() {
                    out.push(
                        BY_TIME,
                        time_for_people(&key),
                        None,
                        Some(run_for_people(&key, &value)),
                    );
                }
            }
            std::cmp::Ordering::Greater => {
                if let Some((key, value)) = expected.next() {
                    out.push(
                        BY_TIME,
                        time_for_people(key),
                        Some(run_for_people(key, value)),
                        None,
                    );
                }
            }
            std::cmp::Ordering::Equal => {
                if let (Some((key, found)), Some((_, want))) = (stored.next(), expected.next())
                    && found.as_slice() != want.as_slice()
                {
                    out.push(
                        BY_TIME,
                        time_for_people(&key),
                        Some(run_for_people(&key, want)),
                        Some(run_for_people(&key, &found)),
                    );
                }
            }
        }
    }
    Ok(())
}

/// Compares the index entries in `meta` (exemptions, git syncs, outbox).
fn compare_meta(trees: &Trees, expected: &BTreeSet<Vec<u8>>, out: &mut Differences) -> Result<()> {
    let mut found = BTreeSet::new();
    for prefix in META_PREFIXES {
        for entry in trees.meta.scan_prefix(prefix) {
            let (key, value) = entry.map_err(Error::storage("reading the meta index to verify"))?;
            let key = key.to_vec();
            if !expected.contains(&key) {
                out.push(
                    META,
                    meta_for_people(&key),
                    None,
                    Some(bytes_for_people(&value)),
                );
            } else if !value.is_empty() {
                out.push(
                    META,
                    meta_for_people(&key),
                    Some(String::new()),
                    Some(bytes_for_people(&value)),
                );
            }
            found.insert(key);
        }
    }
    for key in expected.difference(&found) {
        out.push(META, meta_for_people(key), Some(String::new()), None);
    }
    Ok(())
}

/// What [`Ledger::repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Repaired {
    /// The trees rebuilt (none when every tree agreed with the chain).
    pub trees: Vec<String>,
    /// How many entries differed from what the chain says.
    pub differences: u64,
    /// How many entries were written.
    pub entries_written: u64,
    /// The `control` record saying so, when anything was rebuilt.
    pub record: Option<u64>,
}

impl Ledger {
    /// Rebuilds every derived tree that differs from the chain (`objects`,
    /// `dedup`, `by_object`, `by_time`, the `meta` indexes) from the chain,
    /// and records that as a `control` record (`repaired`). Refuses
    /// ([`Error::ChainBroken`]) unless the chain itself verifies, against
    /// `checkpoint` too when given. Appends wait meanwhile. Not atomic: a
    /// repair cut short leaves differences that `verify` names and another
    /// repair rebuilds.
    pub fn repair(
        &self,
        checkpoint: Option<&crate::Checkpoint>,
        trusted: Option<&crate::PublicKey>,
    ) -> Result<Repaired> {
        let mut head = self.lock_head()?;
        let report = self.verify_locked(checkpoint, trusted)?;
        if !report.chain_ok() {
            let first = report
                .problems
                .iter()
                .find(|p| !p.is_index())
                .map_or_else(|| "(not listed)".to_owned(), ToString::to_string);
            return Err(Error::ChainBroken {
                problems: report.problem_count - report.index_differences.values().sum::<u64>(),
                first,
            });
        }
        let differences: u64 = report.index_differences.values().sum();
        if differences == 0 {
            return Ok(Repaired::default());
        }
        let trees: BTreeSet<String> = report.index_differences.keys().cloned().collect();
        let entries_written = rebuild(&self.trees, &trees)?;
        self.flush()?;
        let trees: Vec<String> = trees.into_iter().collect();
        let body = model::RecordBody::Control(model::Control::Repaired {
            trees: trees.clone(),
            differences,
        });
        let appended = self.append_locked(&mut head, vec![body], &[])?;
        self.flush()?;
        tracing::warn!(
            ?trees,
            differences,
            entries_written,
            "ledger indexes rebuilt from the chain"
        );
        Ok(Repaired {
            trees,
            differences,
            entries_written,
            record: appended.seqs.first().copied(),
        })
    }
}

/// Rewrites the derived trees named in `which` from the chain (which the
/// caller verified): each is cleared and filled again. Returns how many
/// entries were written.
pub(crate) fn rebuild(trees: &Trees, which: &BTreeSet<String>) -> Result<u64> {
    let wants = |tree: &str| which.contains(tree);
    let clear = |tree: &sled::Tree| tree.clear().map_err(Error::storage("clearing an index"));
    if wants(BY_OBJECT) {
        clear(&trees.by_object)?;
    }
    if wants(DEDUP) {
        clear(&trees.dedup)?;
    }
    if wants(OBJECTS) {
        clear(&trees.objects)?;
    }
    if wants(BY_TIME) {
        clear(&trees.by_time)?;
    }
    if wants(META) {
        let mut batch = sled::Batch::default();
        for prefix in META_PREFIXES {
            for key in trees.meta.scan_prefix(prefix).keys() {
                batch.remove(key.map_err(Error::storage("reading the meta index"))?);
            }
        }
        trees
            .meta
            .apply_batch(batch)
            .map_err(Error::storage("clearing the meta index"))?;
    }

    let mut writer = Writer::default();
    let mut states: HashMap<Vec<u8>, StoredState> = HashMap::new();
    let mut runs = Vec::new();
    let mut run: Option<(DateTime<chrono::Utc>, u64, u64)> = None;
    for entry in trees.records.iter() {
        let (key, value) = entry.map_err(Error::storage("reading records to rebuild"))?;
        let seq = decode_u64(&key).ok_or_else(|| Error::corrupt("records", "?", "stray key"))?;
        let view =
            decode_sealed(&value).map_err(|reason| Error::corrupt("records", seq, reason))?;
        let record = decode_indexable(view.bytes)
            .map_err(|reason| Error::corrupt("records", seq, reason))?;
        let Ok(derived) = derive(record.subject(), seq, |index| {
            Ok::<_, Infallible>(states.remove(index))
        });
        if wants(BY_OBJECT)
            && let Some(key) = derived.by_object
        {
            writer.put(&trees.by_object, key, Vec::new())?;
        }
        if wants(DEDUP)
            && let Some(id) = derived.dedup
        {
            writer.put(&trees.dedup, id.into_bytes(), seq_key(seq).to_vec())?;
        }
        if wants(META)
            && let Some(key) = derived.meta
        {
            writer.put(&trees.meta, key, Vec::new())?;
        }
        if let Some((index, state)) = derived.state {
            states.insert(index, state);
        }
        match &mut run {
            Some((at, _, last)) if *at == record.at && *last + 1 == seq => *last = seq,
            run => {
                if let Some((at, first, last)) = run.take() {
                    runs.push(time_entry(at, first, last));
                }
                *run = Some((record.at, seq, seq));
            }
        }
    }
    if let Some((at, first, last)) = run {
        runs.push(time_entry(at, first, last));
    }
    if wants(BY_TIME) {
        for (key, value) in runs {
            writer.put(&trees.by_time, key.to_vec(), value.to_vec())?;
        }
    }
    if wants(OBJECTS) {
        for (index, state) in states {
            let json = serde_json::to_vec(&state).map_err(|source| Error::Encode {
                what: "an object state",
                source,
            })?;
            writer.put(&trees.objects, index, json)?;
        }
    }
    writer.finish()
}

/// Writes entries in batches of a bounded size, per tree.
#[derive(Default)]
struct Writer {
    pending: Vec<(sled::Tree, sled::Batch, usize)>,
    written: u64,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("written", &self.written)
            .finish()
    }
}

/// Entries per batch written while rebuilding.
const REBUILD_BATCH: usize = 10_000;

impl Writer {
    fn put(&mut self, tree: &sled::Tree, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        let at = match self
            .pending
            .iter()
            .position(|(t, _, _)| t.name() == tree.name())
        {
            Some(at) => at,
            None => {
                self.pending.push((tree.clone(), sled::Batch::default(), 0));
                self.pending.len() - 1
            }
        };
        let (tree, batch, len) = &mut self.pending[at];
        batch.insert(key, value);
        *len += 1;
        self.written += 1;
        if *len >= REBUILD_BATCH {
            tree.apply_batch(std::mem::take(batch))
                .map_err(Error::storage("rebuilding an index"))?;
            *len = 0;
        }
        Ok(())
    }

    fn finish(self) -> Result<u64> {
        for (tree, batch, _) in self.pending {
            tree.apply_batch(batch)
                .map_err(Error::storage("rebuilding an index"))?;
        }
        Ok(self.written)
    }
}

/// An object index key (`cluster\0group\0kind\0namespace\0name\0`) as
/// `cluster/group/kind/namespace/name`.
fn index_for_people(index: &[u8]) -> String {
    let text = String::from_utf8_lossy(index);
    text.strip_suffix('\0').unwrap_or(&text).replace('\0', "/")
}

/// A `by_object` key: the object and the record.
fn object_entry(key: &[u8]) -> String {
    match (key.len().checked_sub(8), trailing_seq(key)) {
        (Some(split), Some(seq)) => format!("{} #{seq}", index_for_people(&key[..split])),
        _ => bytes_for_people(key),
    }
}

/// A `meta` index key: its prefix and the record.
fn meta_for_people(key: &[u8]) -> String {
    match (key.len().checked_sub(8), trailing_seq(key)) {
        (Some(split), Some(seq)) => format!("{}#{seq}", String::from_utf8_lossy(&key[..split])),
        _ => bytes_for_people(key),
    }
}

/// A `by_time` key: the time and the first record.
fn time_for_people(key: &[u8]) -> String {
    let nanos = key
        .get(..8)
        .and_then(decode_u64)
        .map(|v| (v ^ (1 << 63)) as i64);
    match (nanos, trailing_seq(key)) {
        (Some(nanos), Some(first)) if key.len() == 16 => {
            format!(
                "{} from #{first}",
                DateTime::from_timestamp_nanos(nanos).to_rfc3339()
            )
        }
        _ => bytes_for_people(key),
    }
}

/// A `by_time` value: the run of records it names.
fn run_for_people(key: &[u8], value: &[u8]) -> String {
    match (trailing_seq(key), decode_u64(value)) {
        (Some(first), Some(last)) => format!("records {first}..={last}"),
        _ => bytes_for_people(value),
    }
}

/// A `dedup` value: the record it names.
fn seq_for_people(value: &[u8]) -> String {
    match decode_u64(value) {
        Some(seq) => format!("record {seq}"),
        None => bytes_for_people(value),
    }
}

/// An object state, in short.
fn state_for_people(state: &StoredState) -> String {
    let seq = |s: Option<u64>| s.map_or_else(|| "none".to_owned(), |s| format!("#{s}"));
    format!(
        "latest {}{}, last good {}, open drift {}, verdict {}",
        if state.latest.present { "" } else { "deleted " },
        seq(Some(state.latest.seq)),
        seq(state.last_good.map(|g| g.seq)),
        seq(state.open_drift),
        state.verdict
    )
}

/// Bytes as text when they are, else hex.
fn bytes_for_people(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => text.to_owned(),
        _ => format!("0x{}", ::hex::encode(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{object_key, time_key};
    use crate::derive::{exemption_key, git_sync_key};
    use crate::store::tests::{authorized, change};
    use crate::{Problem, VerifyReport};
    use chrono::Utc;
    use model::{
        Amendment, Commit, DriftKind, Enforcement, Exemption, ExemptionScope, GitSync, Mode,
        ObjectKey, Outcome, RecordBody, RevertAction, Verdict,
    };

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("prod", "apps", "Deployment", "team-a", name)
    }

    fn drift() -> Verdict {
        Verdict::Drift {
            drift: DriftKind::Modified {
                paths: vec!["spec.replicas".parse().expect("path")],
            },
        }
    }

    fn judged(change: RecordBody) -> model::Judgement {
        match change {
            RecordBody::Change { judgement, .. } => judgement,
            _ => unreachable!("a change"),
        }
    }

    /// A ledger with every kind of indexed record, over several batches:
    /// web good at 1, drifted at 3 (then adopted at 6); db good at 2; an
    /// enforcement (4), an exemption (5) and a git sync (7).
    fn ledger() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path()).expect("opens");
        let batches = vec![
            vec![
                change("web", "1", authorized()),
                change("db", "1", authorized()),
            ],
            vec![
                change("web", "2", drift()),
                RecordBody::Enforcement(Enforcement {
                    key: key("web"),
                    drift_seq: 3,
                    mode: Mode::DryRun,
                    policy: "team-a".into(),
                    action: RevertAction::Apply {
                        commit: "c1".into(),
                    },
                    outcome: Outcome::WouldRevert,
                }),
                RecordBody::Exemption(Exemption {
                    scope: ExemptionScope::Object { key: key("db") },
                    from: Utc::now(),
                    until: Utc::now() + chrono::Duration::hours(1),
                    reason: "incident".into(),
                    granted_by: "oncall".into(),
                }),
            ],
            vec![
                RecordBody::Amendment(Amendment {
                    key: key("web"),
                    amends: 3,
                    judgement: judged(change(
                        "web",
                        "2",
                        Verdict::Adopted {
                            commit: "c2".into(),
                            drift_seq: 3,
                        },
                    )),
                }),
                RecordBody::GitSync(GitSync {
                    source: "apps".into(),
                    commit: Commit {
                        id: "c2".into(),
                        time: Utc::now(),
                        author: "dev <dev@example.com>".into(),
                        summary: "adopt".into(),
                        refs: Vec::new(),
                    },
                    objects_changed: 1,
                }),
            ],
        ];
        for batch in batches {
            ledger.append(batch, &[]).expect("appends");
            // Batches a moment apart get their own time index entries.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let report = ledger.verify().expect("verifies");
        assert!(report.is_ok(), "{:?}", report.problems);
        (dir, ledger)
    }

    fn differences(report: &VerifyReport) -> Vec<(String, String, Option<String>, Option<String>)> {
        report
            .problems
            .iter()
            .map(|p| match p {
                Problem::IndexDiffers {
                    tree,
                    key,
                    expected,
                    found,
                } => (tree.clone(), key.clone(), expected.clone(), found.clone()),
                other => panic!("not an index difference: {other}"),
            })
            .collect()
    }

    /// Repairs, checks the repair was recorded, and that all agrees again.
    fn repair_and_reverify(ledger: &Ledger, trees: &[&str]) {
        let repaired = ledger.repair(None, None).expect("repairs");
        assert_eq!(repaired.trees, trees);
        assert!(repaired.differences > 0);
        let seq = repaired.record.expect("recorded");
        let record = ledger.get(seq).expect("reads").expect("present");
        assert!(
            matches!(
                &record.body,
                RecordBody::Control(model::Control::Repaired { trees: t, .. }) if t == trees
            ),
            "{record:?}"
        );
        let report = ledger.verify().expect("verifies");
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(
            ledger.repair(None, None).expect("repairs"),
            Repaired::default()
        );
    }

    #[test]
    fn a_removed_dedup_entry_is_named_and_repair_stops_the_duplicate_again() {
        let (_dir, ledger) = ledger();
        ledger
            .trees
            .dedup
            .remove(b"prod/uid-web/2")
            .expect("removes");
        let report = ledger.verify().expect("verifies");
        assert_eq!(
            differences(&report),
            [(
                DEDUP.to_owned(),
                "prod/uid-web/2".to_owned(),
                Some("record 3".to_owned()),
                None
            )]
        );
        assert_eq!(report.index_differences.get(DEDUP), Some(&1));
        assert!(report.chain_ok());
        assert!(
            report.problems[0].to_string().contains("index `dedup`"),
            "{}",
            report.problems[0]
        );
        repair_and_reverify(&ledger, &[DEDUP]);
        let again = ledger
            .append(vec![change("web", "2", drift())], &[])
            .expect("appends");
        assert_eq!(again.duplicates, vec!["prod/uid-web/2".to_owned()]);
    }

    #[test]
    fn a_dedup_entry_pointing_elsewhere_is_one_difference() {
        let (_dir, ledger) = ledger();
        ledger
            .trees
            .dedup
            .insert(b"prod/uid-web/2", &seq_key(1)[..])
            .expect("writes");
        let report = ledger.verify().expect("verifies");
        assert_eq!(
            differences(&report),
            [(
                DEDUP.to_owned(),
                "prod/uid-web/2".to_owned(),
                Some("record 3".to_owned()),
                Some("record 1".to_owned())
            )]
        );
        repair_and_reverify(&ledger, &[DEDUP]);
    }

    #[test]
    fn a_changed_last_good_seq_is_named_and_repaired() {
        let (_dir, ledger) = ledger();
        let index = key("db").index_bytes();
        let value = ledger
            .trees
            .objects
            .get(&index)
            .expect("reads")
            .expect("present");
        let mut state: StoredState = serde_json::from_slice(&value).expect("decodes");
        assert_eq!(state.last_good.map(|g| g.seq), Some(2));
        // Steering a revert: the known-good state becomes web's record 1.
        state.last_good = Some(crate::state::Snapshot {
            seq: 1,
            present: true,
        });
        ledger
            .trees
            .objects
            .insert(&index, serde_json::to_vec(&state).expect("encodes"))
            .expect("writes");
        let report = ledger.verify().expect("verifies");
        let found = differences(&report);
        assert_eq!(found.len(), 1, "{found:?}");
        let (tree, key_text, expected, found) = &found[0];
        assert_eq!(tree, OBJECTS);
        assert_eq!(key_text, "prod/apps/Deployment/team-a/db");
        assert!(
            expected
                .as_deref()
                .is_some_and(|e| e.contains("last good #2")),
            "{expected:?}"
        );
        assert!(
            found.as_deref().is_some_and(|f| f.contains("last good #1")),
            "{found:?}"
        );
        repair_and_reverify(&ledger, &[OBJECTS]);
        let state = ledger
            .object_state(&key("db"))
            .expect("reads")
            .expect("present");
        assert_eq!(state.last_good_seq, Some(2));
    }

    #[test]
    fn a_removed_object_state_is_named() {
        let (_dir, ledger) = ledger();
        ledger
            .trees
            .objects
            .remove(key("web").index_bytes())
            .expect("removes");
        let report = ledger.verify().expect("verifies");
        let found = differences(&report);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, OBJECTS);
        assert_eq!(found[0].3, None);
        repair_and_reverify(&ledger, &[OBJECTS]);
    }

    #[test]
    fn a_removed_by_object_entry_is_named_and_history_is_whole_again() {
        let (_dir, ledger) = ledger();
        ledger
            .trees
            .by_object
            .remove(object_key(&key("web").index_bytes(), 4))
            .expect("removes");
        assert_eq!(ledger.history(&key("web")).expect("history").len(), 3);
        let report = ledger.verify().expect("verifies");
        assert_eq!(
            differences(&report),
            [(
                BY_OBJECT.to_owned(),
                "prod/apps/Deployment/team-a/web #4".to_owned(),
                Some(String::new()),
                None
            )]
        );
        repair_and_reverify(&ledger, &[BY_OBJECT]);
        assert_eq!(ledger.history(&key("web")).expect("history").len(), 4);
    }

    #[test]
    fn a_by_object_entry_added_is_named() {
        let (_dir, ledger) = ledger();
        ledger
            .trees
            .by_object
            .insert(object_key(&key("db").index_bytes(), 3), &[][..])
            .expect("writes");
        let report = ledger.verify().expect("verifies");
        assert_eq!(
            differences(&report),
            [(
                BY_OBJECT.to_owned(),
                "prod/apps/Deployment/team-a/db #3".to_owned(),
                None,
                Some(String::new())
            )]
        );
        repair_and_reverify(&ledger, &[BY_OBJECT]);
    }

    #[test]
    fn a_changed_by_time_entry_is_named() {
        let (_dir, ledger) = ledger();
        let entries: Vec<_> = ledger
            .trees
            .by_time
            .iter()
            .map(|e| e.expect("reads"))
            .collect();
        assert_eq!(entries.len(), 3);
        // The second batch (records 3..=5) now claims to end at 4.
        let (key, _) = &entries[1];
        ledger
            .trees
            .by_time
            .insert(key, &seq_key(4)[..])
            .expect("writes");
        let report = ledger.verify().expect("verifies");
        let found = differences(&report);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, BY_TIME);
        assert!(found[0].1.ends_with("from #3"), "{found:?}");
        assert_eq!(found[0].2.as_deref(), Some("records 3..=5"));
        assert_eq!(found[0].3.as_deref(), Some("records 3..=4"));
        repair_and_reverify(&ledger, &[BY_TIME]);
    }

    #[test]
    fn two_batches_of_one_instant_are_one_run() {
        let (_dir, ledger) = ledger();
        let entries: Vec<_> = ledger
            .trees
            .by_time
            .iter()
            .map(|e| e.expect("reads"))
            .collect();
        // Split the second batch in two entries of the same time.
        let (key, _) = &entries[1];
        let at = DateTime::from_timestamp_nanos(
            (decode_u64(&key[..8]).expect("time") ^ (1 << 63)) as i64,
        );
        ledger.trees.by_time.remove(key).expect("removes");
        ledger
            .trees
            .by_time
            .insert(&time_key(at, 3)[..], &seq_key(3)[..])
            .expect("writes");
        ledger
            .trees
            .by_time
            .insert(&time_key(at, 4)[..], &seq_key(5)[..])
            .expect("writes");
        let report = ledger.verify().expect("verifies");
        assert!(report.is_ok(), "{:?}", report.problems);
    }

    #[test]
    fn exemption_and_git_index_entries_added_are_named() {
        let (_dir, ledger) = ledger();
        // An exemption nobody granted, and a git sync never recorded.
        ledger
            .trees
            .meta
            .insert(exemption_key(1), &[][..])
            .expect("writes");
        ledger
            .trees
            .meta
            .insert(git_sync_key("apps", 2), &[][..])
            .expect("writes");
        ledger
            .trees
            .meta
            .remove(git_sync_key("apps", 7))
            .expect("removes");
        let report = ledger.verify().expect("verifies");
        let found = differences(&report);
        assert_eq!(
            found,
            [
                (
                    META.to_owned(),
                    "exemption/#1".to_owned(),
                    None,
                    Some(String::new())
                ),
                (
                    META.to_owned(),
                    "git/apps/#2".to_owned(),
                    None,
                    Some(String::new())
                ),
                (
                    META.to_owned(),
                    "git/apps/#7".to_owned(),
                    Some(String::new()),
                    None
                ),
            ]
        );
        assert_eq!(ledger.exemptions().expect("reads").len(), 1);
        repair_and_reverify(&ledger, &[META]);
        assert_eq!(ledger.exemptions().expect("reads").len(), 1);
        assert_eq!(ledger.git_syncs("apps").expect("reads").len(), 1);
        assert_eq!(ledger.head().0, 8);
    }

    #[test]
    fn several_trees_are_repaired_at_once() {
        let (_dir, ledger) = ledger();
        ledger.trees.dedup.clear().expect("clears");
        ledger.trees.by_object.clear().expect("clears");
        let report = ledger.verify().expect("verifies");
        assert_eq!(report.index_differences.get(DEDUP), Some(&3));
        assert_eq!(report.index_differences.get(BY_OBJECT), Some(&5));
        repair_and_reverify(&ledger, &[BY_OBJECT, DEDUP]);
    }

    #[test]
    fn repair_refuses_a_broken_chain() {
        let (_dir, ledger) = ledger();
        ledger.trees.dedup.clear().expect("clears");
        let mut value = ledger
            .trees
            .records
            .get(seq_key(2))
            .expect("reads")
            .expect("present")
            .to_vec();
        let at = value.len() - 10;
        value[at] ^= 1;
        ledger
            .trees
            .records
            .insert(seq_key(2), value)
            .expect("writes");
        let err = ledger.repair(None, None).expect_err("refused");
        assert!(
            matches!(err, Error::ChainBroken { problems: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("record 2 was altered"), "{err}");
        assert!(ledger.trees.dedup.is_empty());
    }

    #[test]
    fn fingerprints_differ_for_any_edit_and_agree_for_the_same_entries() {
        let hasher = RandomState::new();
        let (mut a, mut b) = (Fingerprint::default(), Fingerprint::default());
        a.add(&hasher, b"k1", b"v");
        a.add(&hasher, b"k2", b"v");
        b.add(&hasher, b"k2", b"v");
        b.add(&hasher, b"k1", b"v");
        assert_eq!(a, b);
        let mut c = Fingerprint::default();
        c.add(&hasher, b"k1", b"v");
        c.add(&hasher, b"k2", b"w");
        assert_ne!(a, c);
        let mut set = SeqSet::default();
        set.insert(3);
        set.insert(130);
        assert!(set.contains(3) && set.contains(130) && !set.contains(4));
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![3, 130]);
    }
}
