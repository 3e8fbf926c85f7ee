//! The ledger: opening, appending and querying.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use model::{LedgerRecord, ObjectKey, RecordBody};
use serde_json::Value;
use sled::Transactional;
use sled::transaction::TransactionError;

use crate::checkpoint::CheckpointThread;
use crate::codec::{
    decode_head, decode_sealed, decode_u64, encode_head, seal_into, seq_key, time_prefix,
    trailing_seq,
};
use crate::derive::{
    ALERT_PREFIX, EXEMPTION_PREFIX, Subject, dedup_id, derive, git_sync_prefix, time_entry,
};
use crate::state::StoredState;
use crate::{Error, ObjectState, Result};

/// Key of the head entry in the `meta` tree.
pub(crate) const HEAD_KEY: &[u8] = b"head";

/// The append-only, hash-chained ledger (design §4.6).
///
/// Cheap to share behind an `Arc`; appends from several threads are
/// serialized, reads run concurrently with them.
pub struct Ledger {
    path: PathBuf,
    pub(crate) db: sled::Db,
    pub(crate) trees: Trees,
    head: Mutex<Head>,
    /// The thread writing checkpoints, if started; stopped (after a last
    /// checkpoint) when the ledger is dropped.
    pub(crate) checkpoints: Mutex<Option<CheckpointThread>>,
}

/// The sled trees of a ledger.
#[derive(Clone)]
pub(crate) struct Trees {
    /// `seq` → sealed record.
    pub records: sled::Tree,
    /// `ObjectKey::index_bytes ‖ seq` → empty.
    pub by_object: sled::Tree,
    /// `unix nanos ‖ first seq` → last seq: one entry per appended batch,
    /// whose records all share one `at`.
    pub by_time: sled::Tree,
    /// `ObjectKey::index_bytes` → `StoredState` JSON.
    pub objects: sled::Tree,
    /// Partition name → offset (`i64`).
    pub offsets: sled::Tree,
    /// `ChangeEvent::dedup_id` → `seq`.
    pub dedup: sled::Tree,
    /// `head` → `seq ‖ hash` of the last record.
    pub meta: sled::Tree,
}

/// The last record of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Head {
    /// Its sequence number, 0 for an empty ledger.
    pub seq: u64,
    /// Its hash, all zeros for an empty ledger.
    pub hash: [u8; 32],
}

/// What one [`Ledger::append`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Appended {
    /// Sequence numbers of the records written, in the order of the bodies
    /// given (duplicates left out).
    pub seqs: Vec<u64>,
    /// `dedup_id`s of the changes skipped because the ledger (or an earlier
    /// body of the same batch) already holds them.
    pub duplicates: Vec<String>,
}

/// The alert outbox, as the ledger holds it (see [`Ledger::outbox`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outbox {
    /// Alerts not yet delivered to every sink, oldest first.
    pub pending: Vec<Pending>,
    /// Every record up to this one has been routed.
    pub routed_through: u64,
    /// Alert records in the ledger.
    pub alerts: u64,
    /// The opening alert of every drift alerted and not settled yet
    /// (reverted or adopted), by the drift's sequence number.
    pub opened: std::collections::BTreeMap<u64, model::AlertRecord>,
}

/// An alert some sinks still wait for.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Its record's sequence number.
    pub seq: u64,
    /// The alert.
    pub alert: model::AlertRecord,
    /// The sinks it has not been delivered to.
    pub sinks: Vec<String>,
}

/// Tuning of a ledger's storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Bytes of recently used records and indexes kept in memory
    /// (default 1 GiB).
    pub cache_capacity: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cache_capacity: 1 << 30,
        }
    }
}

/// How long opening waits for the file lock of a ledger just closed.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl Ledger {
    /// Opens the ledger in directory `path`, creating it if needed, with
    /// default [`Options`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &Options::default())
    }

    /// Opens the ledger in directory `path`, creating it if needed. Waits up
    /// to a second for the file lock of a ledger closed a moment ago.
    pub fn open_with(path: impl AsRef<Path>, options: &Options) -> Result<Self> {
        let path = path.as_ref();
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_capacity);
        // A ledger just closed in this process lets go of its file lock when
        // sled's background flusher has stopped, a moment later.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match open_db(&config) {
                Ok(db) => break db,
                Err(OpenFailure::Locked) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(OpenFailure::Locked) => {
                    return Err(Error::Locked {
                        path: path.to_path_buf(),
                    });
                }
                Err(OpenFailure::Damaged(reason)) => {
                    return Err(Error::Damaged {
                        path: path.to_path_buf(),
                        reason,
                    });
                }
                Err(OpenFailure::Other(source)) => {
                    return Err(Error::Open {
                        path: path.to_path_buf(),
                        source: source.into(),
                    });
                }
            }
        };
        let damaged = |source: sled::Error| match classify(source) {
            OpenFailure::Damaged(reason) => Error::Damaged {
                path: path.to_path_buf(),
                reason,
            },
            OpenFailure::Locked => Error::Locked {
                path: path.to_path_buf(),
            },
            OpenFailure::Other(source) => Error::Open {
                path: path.to_path_buf(),
                source: source.into(),
            },
        };
        let open = |name: &'static str| db.open_tree(name).map_err(damaged);
        let trees = Trees {
            records: open("records")?,
            by_object: open("by_object")?,
            by_time: open("by_time")?,
            objects: open("objects")?,
            offsets: open("offsets")?,
            dedup: open("dedup")?,
            meta: open("meta")?,
        };
        let head = read_head(&trees.meta).map_err(|err| match err {
            Error::Storage { source, .. } => damaged(source.0),
            Error::Corrupt { reason, .. } => Error::Damaged {
                path: path.to_path_buf(),
                reason: format!("its head entry is unreadable: {reason}"),
            },
            other => other,
        })?;
        tracing::info!(path = %path.display(), head_seq = head.seq, "ledger opened");
        Ok(Self {
            path: path.to_path_buf(),
            db,
            trees,
            head: Mutex::new(head),
            checkpoints: Mutex::new(None),
        })
    }

    /// Seals `bodies` into the chain and stores them, with their index
    /// entries, the object states they change and the consumed bus `offsets`
    /// (partition name, offset), in one transaction.
    ///
    /// Changes whose `dedup_id` the ledger already holds, or that appear twice
    /// in `bodies`, are skipped and listed in [`Appended::duplicates`]; the
    /// offsets are stored even when every body was a duplicate. Nothing is
    /// durable until [`Ledger::flush`].
    pub fn append(&self, bodies: Vec<RecordBody>, offsets: &[(String, i64)]) -> Result<Appended> {
        let mut head = self.lock_head()?;
        self.append_locked(&mut head, bodies, offsets)
    }

    /// [`Ledger::append`] with the append lock held: `head` is the head it
    /// guards.
    pub(crate) fn append_locked(
        &self,
        head: &mut Head,
        bodies: Vec<RecordBody>,
        offsets: &[(String, i64)],
    ) -> Result<Appended> {
        let mut batch = Batch::new(*head, bodies.len());
        let appended = self.prepare(&mut batch, Utc::now(), bodies)?;
        if !appended.seqs.is_empty() || !offsets.is_empty() {
            self.commit(&batch, offsets)?;
        }
        *head = batch.head;
        tracing::debug!(
            records = appended.seqs.len(),
            duplicates = appended.duplicates.len(),
            head_seq = head.seq,
            "ledger batch appended"
        );
        Ok(appended)
    }

    /// Writes everything appended so far to disk (fsync). Call before
    /// committing bus offsets.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map_err(Error::storage("flushing"))?;
        Ok(())
    }

    /// [`Ledger::flush`] for async callers: the disk work runs on the storage
    /// engine's own threads.
    pub async fn flush_async(&self) -> Result<()> {
        self.db
            .flush_async()
            .await
            .map_err(Error::storage("flushing"))?;
        Ok(())
    }

    /// [`Ledger::from_seq`] with the object of each change left out
    /// (`null`): for readers of judgements (reports), several times faster.
    pub fn from_seq_without_objects(
        &self,
        from: u64,
    ) -> impl Iterator<Item = Result<LedgerRecord>> + use<> {
        self.records_from(from, crate::derive::decode_without_object)
    }

    /// Record `seq`, if the ledger holds it.
    pub fn get(&self, seq: u64) -> Result<Option<LedgerRecord>> {
        get_record(&self.trees.records, seq)
    }

    /// Every record about object `key`, oldest first.
    pub fn history(&self, key: &ObjectKey) -> Result<Vec<LedgerRecord>> {
        let prefix = key.index_bytes();
        self.trees
            .by_object
            .scan_prefix(&prefix)
            .keys()
            .map(|entry| {
                let entry = entry.map_err(Error::storage("reading the object index"))?;
                indexed_record(&self.trees.records, "by_object", &entry)
            })
            .collect()
    }

    /// Records from sequence number `from` on, oldest first, read lazily.
    pub fn from_seq(&self, from: u64) -> impl Iterator<Item = Result<LedgerRecord>> + use<> {
        self.records_from(from, |bytes| {
            serde_json::from_slice(bytes).map_err(|err| err.to_string())
        })
    }

    /// The records from sequence number `from` on, each read by `decode`.
    fn records_from(
        &self,
        from: u64,
        decode: fn(&[u8]) -> std::result::Result<LedgerRecord, String>,
    ) -> impl Iterator<Item = Result<LedgerRecord>> + use<> {
        self.trees
            .records
            .range(seq_key(from.max(1))..)
            .map(move |entry| {
                let (key, value) = entry.map_err(Error::storage("reading a record"))?;
                let seq = trailing_seq(&key).ok_or_else(|| {
                    Error::corrupt("records", 0, "a key that is not a sequence number")
                })?;
                let sealed = decode_sealed(&value)
                    .map_err(|reason| Error::corrupt("records", seq, reason))?;
                decode(sealed.bytes).map_err(|reason| Error::corrupt("records", seq, reason))
            })
    }

    /// Records written at or after `from`, oldest first, read lazily.
    pub fn since(&self, from: DateTime<Utc>) -> impl Iterator<Item = Result<LedgerRecord>> + use<> {
        let records = self.trees.records.clone();
        self.trees
            .by_time
            .range(time_prefix(from)..)
            .flat_map(|entry| match time_run(entry) {
                Ok((first, last)) => RunOrError::Run(first..=last),
                Err(err) => RunOrError::Error(Some(err)),
            })
            .map(move |seq| {
                let seq = seq?;
                get_record(&records, seq)?.ok_or_else(|| {
                    Error::corrupt(
                        "by_time",
                        seq,
                        "the index names a record the ledger does not hold",
                    )
                })
            })
    }

    /// Number of records in the chain.
    pub fn len(&self) -> u64 {
        self.current_head().seq
    }

    /// Whether the chain holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sequence number and hash of the last record (`0` and all zeros when
    /// empty).
    pub fn head(&self) -> (u64, [u8; 32]) {
        let head = self.current_head();
        (head.seq, head.hash)
    }

    /// The last stored offset of bus partition `partition`.
    pub fn offset(&self, partition: &str) -> Result<Option<i64>> {
        let Some(value) = self
            .trees
            .offsets
            .get(partition.as_bytes())
            .map_err(Error::storage("reading an offset"))?
        else {
            return Ok(None);
        };
        let bytes = <[u8; 8]>::try_from(value.as_ref())
            .map_err(|_| Error::corrupt("offsets", partition, "the offset is not 8 bytes"))?;
        Ok(Some(i64::from_be_bytes(bytes)))
    }

    /// The latest and last known-good state of object `key`, if it was seen.
    pub fn object_state(&self, key: &ObjectKey) -> Result<Option<ObjectState>> {
        let index = key.index_bytes();
        let Some(stored) = stored_state(&self.trees.objects, &index)? else {
            return Ok(None);
        };
        stored
            .load(|seq| object_at(&self.trees.records, seq))
            .map(Some)
    }

    /// Every object seen, in key order.
    pub fn objects(&self) -> impl Iterator<Item = Result<(ObjectKey, ObjectState)>> + use<> {
        self.stored_states(|_| true)
    }

    /// Objects whose latest drift is not resolved, in key order.
    pub fn open_drifts(&self) -> impl Iterator<Item = Result<(ObjectKey, ObjectState)>> + use<> {
        self.stored_states(|state| state.open_drift.is_some())
    }

    /// The states that pass `filter`, with their object bodies loaded.
    fn stored_states(
        &self,
        filter: fn(&StoredState) -> bool,
    ) -> impl Iterator<Item = Result<(ObjectKey, ObjectState)>> + use<> {
        let records = self.trees.records.clone();
        self.trees
            .objects
            .iter()
            .map(|entry| {
                let (index, value) = entry.map_err(Error::storage("reading object states"))?;
                decode_state(&index, &value)
            })
            .filter(move |state| state.as_ref().map_or(true, filter))
            .map(move |state| {
                let state = state?.load(|seq| object_at(&records, seq))?;
                Ok((state.key.clone(), state))
            })
    }

    /// Exemptions recorded and neither expired nor revoked, oldest first.
    pub fn exemptions(&self) -> Result<Vec<model::Exemption>> {
        Ok(self
            .exemption_records()?
            .into_iter()
            .map(|(_, exemption)| exemption)
            .collect())
    }

    /// [`Ledger::exemptions`], each with the sequence number of its record
    /// (what a revocation names).
    pub fn exemption_records(&self) -> Result<Vec<(u64, model::Exemption)>> {
        let now = Utc::now();
        let mut out: Vec<(u64, model::Exemption)> = Vec::new();
        for entry in self.trees.meta.scan_prefix(EXEMPTION_PREFIX) {
            let (key, _) = entry.map_err(Error::storage("reading the exemption index"))?;
            let record = indexed_record(&self.trees.records, "meta", &key)?;
            match record.body {
                RecordBody::Exemption(exemption) if exemption.until > now => {
                    out.push((record.seq, exemption));
                }
                RecordBody::Revocation(revocation) => {
                    out.retain(|(seq, _)| *seq != revocation.exemption);
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// The alert outbox: every alert record with the sinks it has not been
    /// delivered to yet, and how far routing got (the highest
    /// `routed_through` recorded).
    pub fn outbox(&self) -> Result<Outbox> {
        let mut outbox = Outbox::default();
        let mut pending: std::collections::BTreeMap<u64, (model::AlertRecord, Vec<String>)> =
            std::collections::BTreeMap::new();
        for entry in self.trees.meta.scan_prefix(ALERT_PREFIX) {
            let (key, _) = entry.map_err(Error::storage("reading the outbox index"))?;
            let record = indexed_record(&self.trees.records, "meta", &key)?;
            match record.body {
                RecordBody::Alert(alert) => {
                    outbox.routed_through = outbox.routed_through.max(alert.routed_through);
                    outbox.alerts += 1;
                    match &alert.event {
                        model::AlertEvent::Opened(_) => {
                            outbox.opened.insert(alert.drift_seq, alert.clone());
                        }
                        model::AlertEvent::Updated { action, .. } if action.is_final() => {
                            outbox.opened.remove(&alert.drift_seq);
                        }
                        model::AlertEvent::Updated { .. } => {}
                    }
                    let sinks = alert.sinks.clone();
                    pending.insert(record.seq, (alert, sinks));
                }
                RecordBody::Delivery(delivery) => {
                    for seq in &delivery.alerts {
                        if let Some((_, sinks)) = pending.get_mut(seq) {
                            sinks.retain(|sink| *sink != delivery.sink);
                            if sinks.is_empty() {
                                pending.remove(seq);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        outbox.pending = pending
            .into_iter()
            .map(|(seq, (alert, sinks))| Pending { seq, alert, sinks })
            .collect();
        Ok(outbox)
    }

    /// The commits applied from git source `source`, in the order they were
    /// recorded: where its desired state stands. Written in the same
    /// transaction as the records of those commits, so the desired state
    /// and the verdicts judged against it never disagree after a crash.
    pub fn git_syncs(&self, source: &str) -> Result<Vec<model::GitSync>> {
        let mut out = Vec::new();
        for entry in self.trees.meta.scan_prefix(git_sync_prefix(source)) {
            let (key, _) = entry.map_err(Error::storage("reading the git index"))?;
            let record = indexed_record(&self.trees.records, "meta", &key)?;
            if let RecordBody::GitSync(sync) = record.body {
                out.push(sync);
            }
        }
        Ok(out)
    }

    /// The cached head, also after a panic in another append.
    fn current_head(&self) -> Head {
        *self.head.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the append lock; after a panic in another append the head is
    /// re-read from the database.
    pub(crate) fn lock_head(&self) -> Result<MutexGuard<'_, Head>> {
        match self.head.lock() {
            Ok(guard) => Ok(guard),
            Err(poisoned) => {
                let mut guard = poisoned.into_inner();
                *guard = read_head(&self.trees.meta)?;
                self.head.clear_poison();
                Ok(guard)
            }
        }
    }

    /// Seals the bodies into `batch`, skipping duplicate changes.
    fn prepare(
        &self,
        batch: &mut Batch,
        at: DateTime<Utc>,
        bodies: Vec<RecordBody>,
    ) -> Result<Appended> {
        let mut appended = Appended::default();
        let mut seen = HashSet::new();
        let mut states: HashMap<Vec<u8>, StoredState> = HashMap::new();
        for body in bodies {
            if let Some(id) = dedup_id(Subject::of(&body))
                && (!seen.insert(id.clone()) || self.is_stored_change(&id)?)
            {
                appended.duplicates.push(id);
                continue;
            }
            let seq = batch.next_seq()?;
            let derived = derive(Subject::of(&body), seq, |index| {
                match states.remove(index) {
                    Some(state) => Ok(Some(state)),
                    None => stored_state(&self.trees.objects, index),
                }
            })?;
            if let Some(key) = derived.by_object {
                batch.by_object.push(key);
            }
            if let Some(id) = derived.dedup {
                batch.dedup.push((id, seq_key(seq)));
            }
            if let Some(key) = derived.meta {
                batch.meta.push(key);
            }
            if let Some((index, state)) = derived.state {
                states.insert(index, state);
            }
            appended.seqs.push(batch.seal(at, body)?);
        }
        for (index, state) in states {
            let json = serde_json::to_vec(&state).map_err(|source| Error::Encode {
                what: "an object state",
                source,
            })?;
            batch.objects.push((index, json));
        }
        Ok(appended)
    }

    /// Whether a change with `dedup_id` is already stored.
    fn is_stored_change(&self, dedup_id: &str) -> Result<bool> {
        self.trees
            .dedup
            .contains_key(dedup_id.as_bytes())
            .map_err(Error::storage("reading the dedup index"))
    }

    /// Writes `batch` and `offsets` in one transaction.
    fn commit(&self, batch: &Batch, offsets: &[(String, i64)]) -> Result<()> {
        let t = &self.trees;
        let trees = (
            &t.records,
            &t.by_object,
            &t.by_time,
            &t.objects,
            &t.offsets,
            &t.dedup,
            &t.meta,
        );
        let head = encode_head(batch.head.seq, &batch.head.hash);
        trees
            .transaction(
                |(records, by_object, by_time, objects, offs, dedup, meta)| {
                    for (seq, range) in &batch.records {
                        records.insert(&seq_key(*seq)[..], &batch.arena[range.clone()])?;
                    }
                    for key in &batch.by_object {
                        by_object.insert(key.as_slice(), &[][..])?;
                    }
                    if let Some((first, at)) = batch.first {
                        let (key, last) = time_entry(at, first, batch.head.seq);
                        by_time.insert(&key[..], &last[..])?;
                    }
                    for (key, value) in &batch.objects {
                        objects.insert(key.as_slice(), value.as_slice())?;
                    }
                    for (id, seq) in &batch.dedup {
                        dedup.insert(id.as_bytes(), &seq[..])?;
                    }
                    for (partition, offset) in offsets {
                        offs.insert(partition.as_bytes(), &offset.to_be_bytes()[..])?;
                    }
                    for key in &batch.meta {
                        meta.insert(key.as_slice(), &[][..])?;
                    }
                    meta.insert(HEAD_KEY, &head[..])?;
                    Ok(())
                },
            )
            .map_err(|err: TransactionError<()>| match err {
                TransactionError::Storage(source) => Error::Storage {
                    op: "appending a batch",
                    source: source.into(),
                },
                TransactionError::Abort(()) => {
                    Error::corrupt("records", batch.head.seq, "append aborted")
                }
            })
    }
}

impl Ledger {
    /// Sequence number of the last record stored (0 when none), whatever
    /// the head says.
    pub(crate) fn last_stored_seq(&self) -> Result<u64> {
        let last = self
            .trees
            .records
            .last()
            .map_err(Error::storage("reading the last record"))?;
        Ok(last.and_then(|(key, _)| decode_u64(&key)).unwrap_or(0))
    }

    /// The hash record `seq` is stored with, if it is stored and readable.
    pub(crate) fn stored_hash(&self, seq: u64) -> Result<Option<[u8; 32]>> {
        let value = self
            .trees
            .records
            .get(seq_key(seq))
            .map_err(Error::storage("reading a record"))?;
        Ok(value.and_then(|value| decode_sealed(&value).ok().map(|view| *view.hash)))
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let thread = self
            .checkpoints
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            thread.stop();
        }
    }
}

/// Why sled could not open a database.
enum OpenFailure {
    /// Another process holds its lock.
    Locked,
    /// Its files are damaged: what sled said.
    Damaged(String),
    /// Anything else (permissions, a full disk, ...).
    Other(sled::Error),
}

/// Opens the database, telling a held lock and damaged files apart. sled
/// panics on some damaged files instead of returning an error; that panic
/// is caught here and reported as damage.
fn open_db(config: &sled::Config) -> Result<sled::Db, OpenFailure> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open())) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(err)) => Err(classify(err)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".to_owned());
            Err(OpenFailure::Damaged(format!(
                "the storage engine failed reading its files ({what})"
            )))
        }
    }
}

/// Sorts a sled error met while opening.
fn classify(err: sled::Error) -> OpenFailure {
    match err {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            OpenFailure::Locked
        }
        err @ sled::Error::Corruption { .. } => OpenFailure::Damaged(crate::error::describe(&err)),
        sled::Error::ReportableBug(what) | sled::Error::Unsupported(what) => {
            OpenFailure::Damaged(what)
        }
        other => OpenFailure::Other(other),
    }
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.path)
            .field("head_seq", &self.current_head().seq)
            .finish_non_exhaustive()
    }
}

/// Everything one append writes, built before the transaction.
struct Batch {
    /// The stored values of the records, back to back.
    arena: Vec<u8>,
    /// Each record's sequence number and place in `arena`.
    records: Vec<(u64, std::ops::Range<usize>)>,
    by_object: Vec<Vec<u8>>,
    objects: Vec<(Vec<u8>, Vec<u8>)>,
    dedup: Vec<(String, [u8; 8])>,
    /// Entries of the `meta` tree (the exemption and git indexes).
    meta: Vec<Vec<u8>>,
    /// The head after the records sealed so far.
    head: Head,
    /// The first record sealed and the time all records of the batch share.
    first: Option<(u64, DateTime<Utc>)>,
}

impl Batch {
    fn new(head: Head, capacity: usize) -> Self {
        Self {
            arena: Vec::with_capacity(capacity * 3072),
            records: Vec::with_capacity(capacity),
            by_object: Vec::with_capacity(capacity),
            objects: Vec::new(),
            dedup: Vec::with_capacity(capacity),
            meta: Vec::new(),
            head,
            first: None,
        }
    }

    /// The sequence number the next sealed record gets.
    fn next_seq(&self) -> Result<u64> {
        self.head
            .seq
            .checked_add(1)
            .ok_or_else(|| Error::corrupt("meta", "head", "the sequence number is at its maximum"))
    }

    /// Seals `body` as the next record; returns its sequence number.
    fn seal(&mut self, at: DateTime<Utc>, body: RecordBody) -> Result<u64> {
        let seq = self.next_seq()?;
        let record = LedgerRecord::new(seq, at, body);
        let start = self.arena.len();
        let hash = seal_into(&mut self.arena, &record, &self.head.hash).map_err(|source| {
            Error::Encode {
                what: "a ledger record",
                source,
            }
        })?;
        self.records.push((seq, start..self.arena.len()));
        self.first.get_or_insert((seq, at));
        self.head = Head { seq, hash };
        Ok(seq)
    }
}

/// The head stored in `meta`, or the empty head.
pub(crate) fn read_head(meta: &sled::Tree) -> Result<Head> {
    let Some(value) = meta
        .get(HEAD_KEY)
        .map_err(Error::storage("reading the head"))?
    else {
        return Ok(Head::default());
    };
    let (seq, hash) = decode_head(&value)
        .ok_or_else(|| Error::corrupt("meta", "head", "the head entry is not 40 bytes"))?;
    Ok(Head { seq, hash })
}

/// Record `seq` from the `records` tree.
fn get_record(records: &sled::Tree, seq: u64) -> Result<Option<LedgerRecord>> {
    let Some(value) = records
        .get(seq_key(seq))
        .map_err(Error::storage("reading a record"))?
    else {
        return Ok(None);
    };
    let sealed = decode_sealed(&value).map_err(|reason| Error::corrupt("records", seq, reason))?;
    let record =
        serde_json::from_slice(sealed.bytes).map_err(|err| Error::corrupt("records", seq, err))?;
    Ok(Some(record))
}

/// The record an index entry of `index` points to.
fn indexed_record(records: &sled::Tree, index: &'static str, entry: &[u8]) -> Result<LedgerRecord> {
    let seq = trailing_seq(entry)
        .ok_or_else(|| Error::corrupt(index, format!("{entry:?}"), "index key too short"))?;
    get_record(records, seq)?.ok_or_else(|| {
        Error::corrupt(
            index,
            seq,
            "the index names a record the ledger does not hold",
        )
    })
}

/// The records `first..=last` named by one `by_time` entry.
fn time_run(entry: sled::Result<(sled::IVec, sled::IVec)>) -> Result<(u64, u64)> {
    let (key, value) = entry.map_err(Error::storage("reading the time index"))?;
    let first = trailing_seq(&key);
    let last = decode_u64(&value);
    match (first, last) {
        (Some(first), Some(last)) => Ok((first, last)),
        _ => Err(Error::corrupt(
            "by_time",
            format!("{key:?}"),
            "malformed time index entry",
        )),
    }
}

/// A run of sequence numbers, or the error that stopped reading them.
enum RunOrError {
    Run(std::ops::RangeInclusive<u64>),
    Error(Option<Error>),
}

impl Iterator for RunOrError {
    type Item = Result<u64>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            RunOrError::Run(run) => run.next().map(Ok),
            RunOrError::Error(err) => err.take().map(Err),
        }
    }
}

/// The object state stored under `index_bytes`.
fn stored_state(objects: &sled::Tree, index_bytes: &[u8]) -> Result<Option<StoredState>> {
    let Some(value) = objects
        .get(index_bytes)
        .map_err(Error::storage("reading an object state"))?
    else {
        return Ok(None);
    };
    decode_state(index_bytes, &value).map(Some)
}

/// Decodes an object state stored under `index_bytes`.
fn decode_state(index_bytes: &[u8], value: &[u8]) -> Result<StoredState> {
    serde_json::from_slice(value).map_err(|err| {
        let key = String::from_utf8_lossy(index_bytes).replace('\0', "/");
        Error::corrupt("objects", key, err)
    })
}

/// The object body recorded by change record `seq`.
fn object_at(records: &sled::Tree, seq: u64) -> Result<Value> {
    match get_record(records, seq)? {
        Some(LedgerRecord {
            body: RecordBody::Change { event, .. },
            ..
        }) => Ok(event.object),
        Some(_) => Err(Error::corrupt(
            "objects",
            seq,
            "an object state names a record that is not a change",
        )),
        None => Err(Error::corrupt(
            "objects",
            seq,
            "an object state names a record the ledger does not hold",
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::Duration;
    use model::{Actor, ChangeEvent, ChangeKind, DriftKind, GitError, Judgement, Verdict};
    use serde_json::json;

    /// A change of `web-<name>` at `resource_version`, judged `verdict`.
    pub(crate) fn change(name: &str, resource_version: &str, verdict: Verdict) -> RecordBody {
        let mut event = ChangeEvent::new(
            ObjectKey::new("prod", "apps", "Deployment", "team-a", name),
            "apps/v1",
            format!("uid-{name}"),
            resource_version,
            ChangeKind::Modified,
            DateTime::from_timestamp(1_800_000_000, 0).expect("valid time"),
            json!({"metadata": {"name": name}, "spec": {"replicas": resource_version}}),
        );
        event.managed_fields.clear();
        RecordBody::Change {
            event,
            judgement: Judgement {
                git_stale: false,
                verdict,
                actor: Actor::Unknown {
                    reason: "test".into(),
                },
                desired_commit: None,
                diff: Vec::new(),
            },
        }
    }

    pub(crate) fn authorized() -> Verdict {
        Verdict::Authorized {
            commit: "c0ffee".into(),
        }
    }

    fn drift() -> Verdict {
        Verdict::Drift {
            drift: DriftKind::Modified {
                paths: vec!["spec.replicas".parse().expect("path")],
            },
        }
    }

    fn git_error() -> RecordBody {
        RecordBody::GitError(GitError {
            source: "apps".into(),
            commit: "abc".into(),
            file: "web.yaml".into(),
            line: None,
            message: "bad".into(),
        })
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("prod", "apps", "Deployment", "team-a", name)
    }

    fn open() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path()).expect("opens");
        (dir, ledger)
    }

    #[test]
    fn appended_records_read_back_with_consecutive_seqs() {
        let (_dir, ledger) = open();
        let before = Utc::now();
        let bodies = vec![change("web", "1", authorized()), git_error()];
        let appended = ledger.append(bodies.clone(), &[]).expect("appends");
        assert_eq!(appended.seqs, vec![1, 2]);
        assert!(appended.duplicates.is_empty());
        assert_eq!(ledger.len(), 2);
        for (seq, body) in [1, 2].into_iter().zip(bodies) {
            let record = ledger.get(seq).expect("reads").expect("present");
            assert_eq!(record.seq, seq);
            assert_eq!(record.body, body);
            assert!(record.at >= before);
        }
        assert_eq!(ledger.get(3).expect("reads"), None);
        let more = ledger.append(vec![git_error()], &[]).expect("appends");
        assert_eq!(more.seqs, vec![3]);
    }

    #[test]
    fn each_record_links_to_the_hash_of_the_one_before() {
        let (_dir, ledger) = open();
        ledger
            .append(
                vec![
                    change("a", "1", authorized()),
                    change("b", "1", authorized()),
                ],
                &[],
            )
            .expect("appends");
        ledger.append(vec![git_error()], &[]).expect("appends");
        let mut prev = [0u8; 32];
        for seq in 1..=3 {
            let value = ledger
                .trees
                .records
                .get(seq_key(seq))
                .expect("reads")
                .expect("present");
            let view = decode_sealed(&value).expect("decodes");
            assert_eq!(view.prev_hash, &prev, "record {seq}");
            assert_eq!(*view.hash, model::chain_hash(&prev, seq, view.bytes));
            prev = *view.hash;
        }
        assert_eq!(ledger.head(), (3, prev));
    }

    #[test]
    fn duplicate_changes_are_skipped_within_a_batch_and_across_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let ledger = Ledger::open(dir.path()).expect("opens");
            let appended = ledger
                .append(
                    vec![
                        change("web", "1", authorized()),
                        change("web", "1", drift()),
                    ],
                    &[],
                )
                .expect("appends");
            assert_eq!(appended.seqs, vec![1]);
            assert_eq!(appended.duplicates, vec!["prod/uid-web/1".to_owned()]);
            ledger.flush().expect("flushes");
        }
        let ledger = Ledger::open(dir.path()).expect("reopens");
        assert_eq!(ledger.len(), 1);
        let appended = ledger
            .append(
                vec![
                    change("web", "1", authorized()),
                    change("web", "2", authorized()),
                ],
                &[],
            )
            .expect("appends");
        assert_eq!(appended.seqs, vec![2]);
        assert_eq!(appended.duplicates, vec!["prod/uid-web/1".to_owned()]);
        assert_eq!(ledger.history(&key("web")).expect("history").len(), 2);
        assert!(ledger.verify().expect("verifies").is_ok());
    }

    #[test]
    fn offsets_are_stored_with_the_batch_even_when_all_bodies_are_duplicates() {
        let (_dir, ledger) = open();
        assert_eq!(ledger.offset("changes-0").expect("reads"), None);
        ledger
            .append(
                vec![change("web", "1", authorized())],
                &[("changes-0".into(), 41), ("changes-1".into(), -1)],
            )
            .expect("appends");
        assert_eq!(ledger.offset("changes-0").expect("reads"), Some(41));
        assert_eq!(ledger.offset("changes-1").expect("reads"), Some(-1));
        let appended = ledger
            .append(
                vec![change("web", "1", authorized())],
                &[("changes-0".into(), 42)],
            )
            .expect("appends");
        assert!(appended.seqs.is_empty());
        assert_eq!(ledger.offset("changes-0").expect("reads"), Some(42));
        assert_eq!(ledger.len(), 1);
    }

    #[test]
    fn offsets_and_records_survive_reopen_together() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let ledger = Ledger::open(dir.path()).expect("opens");
            ledger
                .append(
                    vec![change("web", "1", authorized())],
                    &[("changes-0".into(), 7)],
                )
                .expect("appends");
            ledger.flush().expect("flushes");
        }
        let ledger = Ledger::open(dir.path()).expect("reopens");
        assert_eq!(ledger.offset("changes-0").expect("reads"), Some(7));
        assert_eq!(ledger.len(), 1);
        assert_eq!(ledger.head().0, 1);
    }

    #[test]
    fn drift_opens_and_authorized_change_closes_while_last_good_stays() {
        let (_dir, ledger) = open();
        ledger
            .append(vec![change("web", "1", authorized())], &[])
            .expect("appends");
        ledger
            .append(
                vec![change("web", "2", drift()), change("db", "1", drift())],
                &[],
            )
            .expect("appends");

        let state = ledger
            .object_state(&key("web"))
            .expect("reads")
            .expect("present");
        assert_eq!(state.open_drift, Some(2));
        assert_eq!(state.last_good_seq, Some(1));
        assert_eq!(
            state.last_good,
            Some(json!({"metadata": {"name": "web"}, "spec": {"replicas": "1"}}))
        );
        assert_eq!(state.latest_seq, 2);
        assert_eq!(state.verdict, "drift_modified");

        let drifting: Vec<_> = ledger
            .open_drifts()
            .map(|e| e.expect("reads").0.name)
            .collect();
        assert_eq!(drifting, vec!["db".to_owned(), "web".to_owned()]);

        ledger
            .append(vec![change("web", "3", authorized())], &[])
            .expect("appends");
        let state = ledger
            .object_state(&key("web"))
            .expect("reads")
            .expect("present");
        assert_eq!(state.open_drift, None);
        assert_eq!(state.last_good_seq, Some(4));
        assert_eq!(state.resource_version, "3");
        let drifting: Vec<_> = ledger
            .open_drifts()
            .map(|e| e.expect("reads").0.name)
            .collect();
        assert_eq!(drifting, vec!["db".to_owned()]);
        assert_eq!(ledger.objects().count(), 2);
        assert_eq!(ledger.object_state(&key("nope")).expect("reads"), None);
    }

    #[test]
    fn several_changes_to_one_object_in_a_batch_chain_their_state() {
        let (_dir, ledger) = open();
        ledger
            .append(
                vec![
                    change("web", "1", authorized()),
                    change("web", "2", drift()),
                    change("web", "3", Verdict::Unmanaged),
                ],
                &[],
            )
            .expect("appends");
        let state = ledger
            .object_state(&key("web"))
            .expect("reads")
            .expect("present");
        assert_eq!(state.last_good_seq, Some(1));
        assert_eq!(state.open_drift, Some(2));
        assert_eq!(state.latest_seq, 3);
        assert_eq!(state.verdict, "unmanaged");
    }

    #[test]
    fn history_returns_only_the_records_of_one_object_in_order() {
        let (_dir, ledger) = open();
        for rv in 1..=3 {
            let rv = rv.to_string();
            ledger
                .append(
                    vec![
                        change("web", &rv, authorized()),
                        change("web-2", &rv, authorized()),
                        change("we", &rv, authorized()),
                        git_error(),
                    ],
                    &[],
                )
                .expect("appends");
        }
        let history = ledger.history(&key("web")).expect("history");
        let seqs: Vec<u64> = history.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 5, 9]);
        for record in &history {
            let RecordBody::Change { event, .. } = &record.body else {
                panic!("history holds a non-change record {}", record.seq);
            };
            assert_eq!(event.key, key("web"));
        }
        assert!(ledger.history(&key("absent")).expect("history").is_empty());
    }

    #[test]
    fn since_returns_records_written_at_or_after_a_time() {
        let (_dir, ledger) = open();
        ledger.append(vec![git_error()], &[]).expect("appends");
        std::thread::sleep(std::time::Duration::from_millis(5));
        let middle = Utc::now();
        ledger
            .append(vec![git_error(), git_error()], &[])
            .expect("appends");
        let after: Vec<u64> = ledger
            .since(middle)
            .map(|r| r.expect("reads").seq)
            .collect();
        assert_eq!(after, vec![2, 3]);
        let all = ledger.since(middle - Duration::days(1)).count();
        assert_eq!(all, 3);
        assert_eq!(ledger.since(Utc::now() + Duration::seconds(1)).count(), 0);
    }

    #[test]
    fn concurrent_appends_keep_one_unbroken_chain() {
        let (_dir, ledger) = open();
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let ledger = &ledger;
                scope.spawn(move || {
                    for rv in 0..25 {
                        let body = change(&format!("web-{thread}"), &rv.to_string(), authorized());
                        ledger.append(vec![body], &[]).expect("appends");
                    }
                });
            }
        });
        assert_eq!(ledger.len(), 100);
        let report = ledger.verify().expect("verifies");
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(report.records, 100);
    }

    #[test]
    fn ledger_and_its_async_flush_can_cross_threads() {
        fn assert_send_sync<T: Send + Sync>(_: &T) {}
        fn assert_send<T: Send>(_: &T) {}
        let (_dir, ledger) = open();
        assert_send_sync(&ledger);
        let flush = ledger.flush_async();
        assert_send(&flush);
        drop(flush);
        assert!(format!("{ledger:?}").contains("head_seq: 0"));
    }

    #[test]
    fn empty_ledger_has_a_zero_head_and_verifies() {
        let (_dir, ledger) = open();
        assert!(ledger.is_empty());
        assert_eq!(ledger.head(), (0, [0; 32]));
        assert_eq!(
            ledger.append(Vec::new(), &[]).expect("appends"),
            Appended::default()
        );
        let report = ledger.verify().expect("verifies");
        assert!(report.is_ok());
        assert_eq!(report.records, 0);
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused_with_the_path() {
        let (dir, _ledger) = open();
        let err = Ledger::open(dir.path()).expect_err("locked");
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
    }

    fn updated(drift_seq: u64, sinks: &[&str], action: model::AlertAction) -> RecordBody {
        RecordBody::Alert(model::AlertRecord {
            drift_seq,
            sinks: sinks.iter().map(|s| (*s).to_owned()).collect(),
            routed_through: drift_seq + 1,
            event: model::AlertEvent::Updated {
                object: "web".into(),
                action,
                link: None,
            },
        })
    }

    fn delivered(sink: &str, alerts: &[u64]) -> RecordBody {
        RecordBody::Delivery(model::Delivery {
            sink: sink.into(),
            alerts: alerts.to_vec(),
            id: format!("dw-{}-{sink}", alerts[0]),
            attempts: 1,
            digest: false,
        })
    }

    #[test]
    fn the_outbox_owes_each_alert_to_the_sinks_that_have_not_taken_it() {
        let (_dir, ledger) = open();
        assert_eq!(ledger.outbox().expect("reads"), Outbox::default());
        let held = model::AlertAction::Held {
            reason: "grace".into(),
        };
        let reverted = model::AlertAction::Reverted { after_ms: 40 };
        ledger
            .append(
                vec![
                    updated(1, &["chat", "hook"], held),                  // seq 1
                    updated(2, &["chat"], reverted),                      // seq 2
                    delivered("chat", &[1, 2]),                           // seq 3
                    updated(5, &["hook"], model::AlertAction::AuditOnly), // seq 4
                ],
                &[],
            )
            .expect("appends");
        let outbox = ledger.outbox().expect("reads");
        assert_eq!(outbox.alerts, 3);
        assert_eq!(outbox.routed_through, 6);
        let owed: Vec<(u64, Vec<String>)> = outbox
            .pending
            .iter()
            .map(|p| (p.seq, p.sinks.clone()))
            .collect();
        assert_eq!(
            owed,
            [(1, vec!["hook".to_owned()]), (4, vec!["hook".to_owned()])]
        );
        ledger
            .append(vec![delivered("hook", &[1, 4])], &[])
            .expect("appends");
        assert!(ledger.outbox().expect("reads").pending.is_empty());
    }

    #[test]
    fn records_read_without_objects_equal_the_records_but_for_the_object() {
        let (_dir, ledger) = open();
        ledger
            .append(vec![change("web", "1", authorized()), git_error()], &[])
            .expect("appends");
        let whole: Vec<LedgerRecord> = ledger.from_seq(1).map(|r| r.expect("reads")).collect();
        let lean: Vec<LedgerRecord> = ledger
            .from_seq_without_objects(1)
            .map(|r| r.expect("reads"))
            .collect();
        assert_eq!(lean.len(), 2);
        let mut expected = whole.clone();
        if let RecordBody::Change { event, .. } = &mut expected[0].body {
            assert_ne!(event.object, Value::Null);
            event.object = Value::Null;
        }
        assert_eq!(lean, expected);
    }
}
