//! Signed checkpoints: the chain head anchored outside the database.
//!
//! ```text
//!  ledger head (seq, hash) ──flush──▶ sign (Ed25519, checkpoint.key)
//!      ──▶ one JSON line appended to checkpoints.jsonl (fsync)
//!      ──▶ on_checkpoint(&Checkpoint)   (e.g. publish to the bus)
//! ```
//!
//! Someone who can edit the database can also recompute every hash of the
//! chain, and damage to sled's files can make it drop the last records without
//! a word. A checkpoint names how long the chain was and what its head hash
//! was, signed with a key kept outside the database: `verify` compares the
//! chain with the latest one and names records lost from the end or altered.
//! The ledger is flushed before each checkpoint, so a crash never leaves a
//! checkpoint naming records that were not on disk.

use std::fmt;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::codec::hex;
use crate::store::read_head;
use crate::{Error, Ledger, Result};

/// Name of the key file created beside the ledger (in `data_dir`).
pub const KEY_FILE: &str = "checkpoint.key";

/// Name of the append-only checkpoint file beside the ledger (in `data_dir`).
pub const LOG_FILE: &str = "checkpoints.jsonl";

/// How often a running ledger is checkpointed unless told otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// What is signed, before the sequence number, head hash and time: the
/// signature of one thing is never valid for another.
const SIGNING_DOMAIN: &[u8] = b"driftwarden checkpoint v1\n";

/// How far back from the end of a checkpoint file a valid line is looked for.
const TAIL_BYTES: u64 = 1 << 20;

/// What can go wrong with checkpoints and their key.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The key file cannot be used.
    #[error("checkpoint signing key: {0}")]
    Key(#[from] crate::secret::SecretFileError),
    /// The checkpoint file could not be read or written.
    #[error("cannot use the checkpoint file `{path}`: {source}")]
    LogIo {
        /// The checkpoint file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The thread writing checkpoints could not be started.
    #[error("cannot start the checkpoint thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A checkpoint is not signed as it says, or not by the key expected.
    #[error("the checkpoint of record {seq} is not valid: {reason}")]
    BadSignature {
        /// The record it names.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
}

/// A signed statement that the chain held `seq` records ending in hash
/// `head` at time `at`. One line of `checkpoints.jsonl`, and what is
/// published to the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Sequence number of the last record (the chain's length).
    pub seq: u64,
    /// Hash of that record, hex.
    pub head: String,
    /// When it was signed.
    pub at: DateTime<Utc>,
    /// The Ed25519 public key that signed it, hex.
    pub public_key: String,
    /// Ed25519 signature of the domain, `seq`, `head` and `at`, hex.
    pub signature: String,
}

impl Checkpoint {
    /// The head hash as bytes, if it is 64 hex digits.
    pub fn head_hash(&self) -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        ::hex::decode_to_slice(&self.head, &mut out).ok()?;
        Some(out)
    }

    /// Checks the signature against the key the checkpoint names and, when
    /// given, that this key is `trusted` (the ledger's own key).
    pub fn verify(&self, trusted: Option<&PublicKey>) -> Result<(), CheckpointError> {
        let bad = |reason: String| CheckpointError::BadSignature {
            seq: self.seq,
            reason,
        };
        let mut key = [0u8; 32];
        ::hex::decode_to_slice(&self.public_key, &mut key)
            .map_err(|_| bad("its public key is not 64 hex digits".into()))?;
        let key = VerifyingKey::from_bytes(&key)
            .map_err(|err| bad(format!("its public key is not an Ed25519 key: {err}")))?;
        if let Some(trusted) = trusted
            && trusted.0 != key
        {
            return Err(bad(format!(
                "it is signed by key {}, not by this ledger's key {trusted}",
                self.public_key
            )));
        }
        let mut signature = [0u8; 64];
        ::hex::decode_to_slice(&self.signature, &mut signature)
            .map_err(|_| bad("its signature is not 128 hex digits".into()))?;
        let head = self
            .head_hash()
            .ok_or_else(|| bad("its head hash is not 64 hex digits".into()))?;
        key.verify_strict(
            &signed_bytes(self.seq, &head, self.at),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| bad("the signature does not verify: the checkpoint was altered".into()))
    }
}

/// The bytes a checkpoint's signature covers.
fn signed_bytes(seq: u64, head: &[u8; 32], at: DateTime<Utc>) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNING_DOMAIN.len() + 8 + 32 + 12);
    out.extend_from_slice(SIGNING_DOMAIN);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(head);
    out.extend_from_slice(&at.timestamp().to_be_bytes());
    out.extend_from_slice(&at.timestamp_subsec_nanos().to_be_bytes());
    out
}

/// A checkpoint public key: whose signatures `verify` trusts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// The Ed25519 key that signs checkpoints: 64 hex digits in a file only its
/// owner may read.
pub struct CheckpointKey {
    key: SigningKey,
}

impl fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointKey")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

impl CheckpointKey {
    /// Reads the key in `path`, creating it (mode 0600, random) when there is
    /// no such file.
    pub fn load_or_create(path: &Path) -> Result<Self, CheckpointError> {
        let secret = crate::secret::read_or_create(path, "checkpoint signing key")?;
        Ok(Self {
            key: SigningKey::from_bytes(&secret),
        })
    }

    /// Reads the key in `path`, refusing a file that others may read.
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let secret = crate::secret::read(path)?;
        Ok(Self {
            key: SigningKey::from_bytes(&secret),
        })
    }

    /// The public half, which verifies this key's checkpoints.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

    /// A checkpoint of a chain of `seq` records ending in `head`, signed now.
    pub fn sign(&self, seq: u64, head: &[u8; 32]) -> Checkpoint {
        self.sign_at(seq, head, Utc::now())
    }

    /// A checkpoint signed as of `at`.
    fn sign_at(&self, seq: u64, head: &[u8; 32], at: DateTime<Utc>) -> Checkpoint {
        let signature = self.key.sign(&signed_bytes(seq, head, at));
        Checkpoint {
            seq,
            head: hex(head),
            at,
            public_key: self.public_key().to_string(),
            signature: ::hex::encode(signature.to_bytes()),
        }
    }
}

/// The public key of the checkpoint key in `path`, if that file exists.
pub fn trusted_key(path: &Path) -> Result<Option<PublicKey>, CheckpointError> {
    if !path.exists() {
        return Ok(None);
    }
    CheckpointKey::load(path).map(|key| Some(key.public_key()))
}

/// The last checkpoint in file `path` (the last line that parses; a line
/// torn by a crash is passed over), or `None` when there is no file or no
/// checkpoint in it.
pub fn latest(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    let io = |source| CheckpointError::LogIo {
        path: path.to_path_buf(),
        source,
    };
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(io(err)),
    };
    let len = file.metadata().map_err(io)?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).map_err(io)?;
    Ok(tail
        .split(|b| *b == b'\n')
        .rev()
        .find_map(|line| serde_json::from_slice::<Checkpoint>(line).ok()))
}

/// Appends `checkpoint` as one line to file `path` and syncs it to disk.
pub fn append(path: &Path, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::LogIo {
        path: path.to_path_buf(),
        source,
    };
    let mut line = serde_json::to_vec(checkpoint).map_err(|err| io(err.into()))?;
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
        .map_err(io)?;
    // A line torn by a crash is ended first, so the new one stands alone.
    let len = file.metadata().map_err(io)?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1)).map_err(io)?;
        file.read_exact(&mut last).map_err(io)?;
        if last[0] != b'\n' {
            line.insert(0, b'\n');
        }
    }
    file.write_all(&line).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Called with every checkpoint written (e.g. to publish it).
type OnCheckpoint = Arc<dyn Fn(&Checkpoint) + Send + Sync>;

/// Signs the head of one ledger into a checkpoint file. Cheap to clone.
#[derive(Clone)]
pub struct Checkpointer {
    db: sled::Db,
    meta: sled::Tree,
    key: Arc<CheckpointKey>,
    log: PathBuf,
    /// Sequence number and head hash (hex) of the last checkpoint written
    /// or found in the file.
    last: Arc<Mutex<Option<(u64, String)>>>,
    on_checkpoint: Option<OnCheckpoint>,
}

impl fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpointer")
            .field("log", &self.log)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// The checkpoint file this writes to.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The public key of its checkpoints.
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// Calls `f` with every checkpoint written from now on, after it is on
    /// disk (e.g. to publish it to the bus). `f` runs on the thread that
    /// wrote it and should not block.
    pub fn on_checkpoint(mut self, f: impl Fn(&Checkpoint) + Send + Sync + 'static) -> Self {
        self.on_checkpoint = Some(Arc::new(f));
        self
    }

    /// Flushes the ledger, then signs its head and appends the checkpoint
    /// to the file (synced), whether or not the head moved since the last.
    pub fn checkpoint_now(&self) -> Result<Checkpoint> {
        // The head is read before the flush, so the flush covers it.
        let head = read_head(&self.meta)?;
        self.db
            .flush()
            .map_err(Error::storage("flushing before a checkpoint"))?;
        let checkpoint = self.key.sign(head.seq, &head.hash);
        append(&self.log, &checkpoint)?;
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((checkpoint.seq, checkpoint.head.clone()));
        tracing::debug!(seq = checkpoint.seq, log = %self.log.display(), "ledger checkpoint written");
        if let Some(on_checkpoint) = &self.on_checkpoint {
            on_checkpoint(&checkpoint);
        }
        Ok(checkpoint)
    }

    /// [`Checkpointer::checkpoint_now`] when the head moved since the last
    /// checkpoint (in this process or in the file); `None` otherwise.
    pub fn checkpoint_if_moved(&self) -> Result<Option<Checkpoint>> {
        let head = read_head(&self.meta)?;
        let moved = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_none_or(|(seq, hash)| *seq != head.seq || *hash != hex(&head.hash));
        if moved && head.seq > 0 {
            self.checkpoint_now().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// A thread writing checkpoints at an interval; stopping it writes a last one.
pub(crate) struct CheckpointThread {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl CheckpointThread {
    /// Starts checkpointing with `checkpointer` every `interval`.
    fn start(checkpointer: Checkpointer, interval: Duration) -> Result<Self> {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ledger-checkpoints".into())
            .spawn(move || {
                loop {
                    let last = match stopped.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => false,
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
                    };
                    if let Err(err) = checkpointer.checkpoint_if_moved() {
                        tracing::error!(error = %err, "cannot write a ledger checkpoint");
                    }
                    if last {
                        break;
                    }
                }
            })
            .map_err(|source| Error::Checkpoint(CheckpointError::Thread(source)))?;
        Ok(Self { stop, thread })
    }

    /// Stops the thread after it wrote a last checkpoint.
    pub(crate) fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::error!("the ledger checkpoint thread panicked");
        }
    }
}

impl Ledger {
    /// A checkpointer signing this ledger's head with `key` into file `log`
    /// (`data_dir/checkpoints.jsonl` beside the ledger, by convention). It
    /// shares the ledger's database, which stays open while it lives.
    pub fn checkpointer(
        &self,
        key: CheckpointKey,
        log: impl Into<PathBuf>,
    ) -> Result<Checkpointer> {
        let log = log.into();
        let last = latest(&log)?.map(|c| (c.seq, c.head));
        Ok(Checkpointer {
            db: self.db.clone(),
            meta: self.trees.meta.clone(),
            key: Arc::new(key),
            log,
            last: Arc::new(Mutex::new(last)),
            on_checkpoint: None,
        })
    }

    /// Checkpoints with `checkpointer` every `interval` on a thread of its
    /// own, and once more when the ledger is closed (dropped). A second call
    /// replaces the first.
    pub fn start_checkpoints(&self, checkpointer: Checkpointer, interval: Duration) -> Result<()> {
        let thread = CheckpointThread::start(checkpointer, interval)?;
        let previous = self
            .checkpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(thread);
        if let Some(previous) = previous {
            previous.stop();
        }
        Ok(())
    }

    /// How this ledger's chain stands against `checkpoint` (whose signature
    /// the caller checked): cheap, it reads only the head and one record.
    pub fn check_against_checkpoint(&self, checkpoint: &Checkpoint) -> Result<CheckpointStatus> {
        let last = self.last_stored_seq()?.min(self.len());
        if last < checkpoint.seq {
            return Ok(CheckpointStatus::Behind {
                from: last + 1,
                to: checkpoint.seq,
            });
        }
        if checkpoint.seq == 0 {
            return Ok(CheckpointStatus::Matches);
        }
        let found = self.stored_hash(checkpoint.seq)?;
        Ok(match (found, checkpoint.head_hash()) {
            (Some(found), Some(signed)) if found == signed => CheckpointStatus::Matches,
            (found, _) => CheckpointStatus::Altered {
                seq: checkpoint.seq,
                found: found.map(|h| hex(&h)),
            },
        })
    }
}

/// What [`Ledger::accept_truncation`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedTruncation {
    /// The first record lost.
    pub from: u64,
    /// The last record lost: the old checkpoint's.
    pub to: u64,
    /// The `control` record naming the loss. The chain goes on from its
    /// last record, so this record and the ones after it take the lost
    /// sequence numbers.
    pub record: u64,
    /// The checkpoint signed after it.
    pub checkpoint: Checkpoint,
}

impl Ledger {
    /// Accepts that the records after the chain's end, up to the one
    /// `checkpoint` names, are lost: records a `control` record
    /// (`truncation_accepted`) naming them, then signs a fresh checkpoint
    /// with `checkpointer`, so the chain goes on from its last record.
    /// `checkpoint` must be valid (the caller checks its signature); a chain
    /// not simply shorter than it is refused ([`Error::NotTruncated`]).
    pub fn accept_truncation(
        &self,
        checkpoint: &Checkpoint,
        checkpointer: &Checkpointer,
    ) -> Result<AcceptedTruncation> {
        let mut head = self.lock_head()?;
        let last = self.last_stored_seq()?.min(head.seq);
        if last >= checkpoint.seq {
            drop(head);
            return Err(Error::NotTruncated {
                status: self.check_against_checkpoint(checkpoint)?,
            });
        }
        let hash = match last {
            0 => [0; 32],
            last => self
                .stored_hash(last)?
                .ok_or_else(|| Error::corrupt("records", last, "the last record is unreadable"))?,
        };
        *head = crate::store::Head { seq: last, hash };
        let body = model::RecordBody::Control(model::Control::TruncationAccepted {
            from: last + 1,
            to: checkpoint.seq,
            checkpoint_at: checkpoint.at,
            checkpoint_head: checkpoint.head.clone(),
        });
        let appended = self.append_locked(&mut head, vec![body], &[])?;
        let record = appended.seqs.first().copied().unwrap_or(last + 1);
        let fresh = checkpointer.checkpoint_now()?;
        tracing::warn!(
            from = last + 1,
            to = checkpoint.seq,
            record,
            "records lost from the end of the ledger accepted"
        );
        Ok(AcceptedTruncation {
            from: last + 1,
            to: checkpoint.seq,
            record,
            checkpoint: fresh,
        })
    }
}

/// How a chain stands against a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CheckpointStatus {
    /// The checkpoint's record is in the chain with the hash it signed (the
    /// chain may have grown since).
    Matches,
    /// The chain ends before the checkpoint's record: records `from..=to`
    /// are lost.
    Behind {
        /// The first record lost.
        from: u64,
        /// The checkpoint's record.
        to: u64,
    },
    /// The checkpoint's record `seq` is not the one signed: the chain was
    /// altered at or before it.
    Altered {
        /// The checkpoint's record.
        seq: u64,
        /// Its hash in the chain, hex (`None` when it is unreadable).
        found: Option<String>,
    },
}

impl fmt::Display for CheckpointStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointStatus::Matches => f.write_str("the chain matches its last checkpoint"),
            CheckpointStatus::Behind { from, to } => write!(
                f,
                "{} record(s) lost from the end: the chain ends at record {} but its last \
                 checkpoint names record {to} (records {from}..={to} are gone)",
                to - from + 1,
                from - 1
            ),
            CheckpointStatus::Altered { seq, .. } => write!(
                f,
                "record {seq} was altered: its hash is not the one its checkpoint signed"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn key() -> CheckpointKey {
        CheckpointKey {
            key: SigningKey::from_bytes(&[7; 32]),
        }
    }

    #[test]
    fn a_checkpoint_verifies_and_any_edit_breaks_it() {
        let key = key();
        let checkpoint = key.sign(42, &[3; 32]);
        checkpoint.verify(None).expect("valid");
        checkpoint
            .verify(Some(&key.public_key()))
            .expect("signed by the key");
        let mut edited = checkpoint.clone();
        edited.seq = 41;
        let err = edited.verify(None).expect_err("altered");
        assert!(err.to_string().contains("does not verify"), "{err}");
        let mut edited = checkpoint.clone();
        edited.at += chrono::Duration::nanoseconds(1);
        edited.verify(None).expect_err("altered time");
        let mut edited = checkpoint;
        edited.head = hex(&[4; 32]);
        edited.verify(None).expect_err("altered head");
    }

    #[test]
    fn a_checkpoint_signed_by_another_key_is_not_trusted() {
        let other = CheckpointKey {
            key: SigningKey::from_bytes(&[8; 32]),
        };
        let checkpoint = other.sign(1, &[0; 32]);
        checkpoint.verify(None).expect("valid on its own");
        let err = checkpoint
            .verify(Some(&key().public_key()))
            .expect_err("untrusted");
        assert!(
            err.to_string().contains("not by this ledger's key"),
            "{err}"
        );
    }

    #[test]
    fn checkpoints_round_trip_through_the_file_and_a_torn_line_is_passed_over() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(LOG_FILE);
        assert_eq!(latest(&path).expect("reads"), None);
        let first = key().sign(1, &[1; 32]);
        append(&path, &first).expect("appends");
        let second = key().sign(2, &[2; 32]);
        append(&path, &second).expect("appends");
        assert_eq!(latest(&path).expect("reads"), Some(second.clone()));
        // A crash mid-write leaves half a line.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("opens");
        file.write_all(br#"{"seq":3,"he"#).expect("writes");
        assert_eq!(latest(&path).expect("reads"), Some(second));
        let third = key().sign(3, &[3; 32]);
        append(&path, &third).expect("appends");
        assert_eq!(latest(&path).expect("reads"), Some(third));
        let text = std::fs::read_to_string(&path).expect("reads");
        assert_eq!(text.lines().count(), 4, "{text}");
    }

    #[test]
    fn a_key_is_created_owner_only_and_read_back_the_same() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(KEY_FILE);
        assert_eq!(trusted_key(&path).expect("no key"), None);
        let created = CheckpointKey::load_or_create(&path).expect("creates");
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let again = CheckpointKey::load_or_create(&path).expect("reads");
        assert_eq!(created.public_key(), again.public_key());
        assert_eq!(
            trusted_key(&path).expect("reads"),
            Some(created.public_key())
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = CheckpointKey::load(&path).expect_err("exposed");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&path, "not a key\n").expect("writes");
        let err = CheckpointKey::load(&path).expect_err("garbage");
        assert!(err.to_string().contains("64 hex digits"), "{err}");
    }
}
