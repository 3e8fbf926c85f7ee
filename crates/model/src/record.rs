//! Ledger records: the append-only, hash-chained history.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    AlertRecord, Amendment, Attribution, AuditRecord, ChangeEvent, Commit, Control, Delivery,
    Enforcement, Exemption, Judgement, Revocation, SCHEMA,
};

/// Desired state moved to a new commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GitSync {
    /// Name of the configured source.
    pub source: String,
    /// The new HEAD commit.
    pub commit: Commit,
    /// How many object keys the commit changed.
    pub objects_changed: usize,
}

/// A file in git that could not be parsed; the last good desired state of its
/// objects stays in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitError {
    /// Name of the configured source.
    pub source: String,
    /// The commit holding the bad file.
    pub commit: String,
    /// Path of the file inside the repository.
    pub file: String,
    /// 1-based line of the error, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// The branch of a source was rewritten (force-pushed or reset): the
/// commits applied before that are no longer in its first-parent history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitRewrite {
    /// Name of the configured source.
    pub source: String,
    /// The last commit applied before the rewrite.
    pub from: String,
    /// The branch's new tip.
    pub to: String,
    /// Commits applied before that the new history no longer holds, newest
    /// first. A live state equal to one of them is `drift(rollback)`.
    pub dropped: Vec<Commit>,
}

/// A change in how fetching a source goes: the desired state of its
/// objects is only as fresh as the last good fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitFetch {
    /// Name of the configured source.
    pub source: String,
    /// What happened.
    #[serde(flatten)]
    pub state: GitFetchState,
}

/// How fetching one source goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum GitFetchState {
    /// Fetches fail; the last good desired state stays in force.
    Failing {
        /// The first failed fetch.
        since: DateTime<Utc>,
        /// The error.
        error: String,
    },
    /// Fetches have failed for longer than the source's `max_staleness`:
    /// enforcement and sync pause for its objects, and verdicts about them
    /// are marked `git_stale`.
    Stale {
        /// The first failed fetch.
        since: DateTime<Utc>,
        /// The source's `max_staleness`, e.g. `2m`.
        max_staleness: String,
    },
    /// A fetch succeeded again; objects changed during the outage are
    /// judged again against the head it brought.
    Recovered {
        /// The first failed fetch.
        since: DateTime<Utc>,
        /// The branch's tip now.
        head: String,
    },
}

/// A message on the bus this build refused (it does not decode, or has a
/// schema version this build does not read): kept in the dead-letter topic,
/// recorded here, and only then passed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedMessage {
    /// The topic it was read from.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Why it was refused.
    pub reason: String,
    /// SHA-256 of its payload (the payload itself is foreign data and stays
    /// in the dead-letter topic).
    pub payload_sha256: String,
    /// The payload's size.
    pub payload_bytes: u64,
}

/// What a ledger record says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RecordBody {
    /// A change and its judgement.
    Change {
        /// The change as observed.
        event: ChangeEvent,
        /// How it was judged.
        judgement: Judgement,
    },
    /// Desired state moved to a new commit.
    GitSync(GitSync),
    /// A file in git failed to parse.
    GitError(GitError),
    /// A source's branch was rewritten.
    GitRewrite(GitRewrite),
    /// Fetching a source started failing, went stale or recovered.
    GitFetch(GitFetch),
    /// A revert planned, held or done.
    Enforcement(Enforcement),
    /// A later judgement of an earlier record.
    Amendment(Amendment),
    /// A break-glass exemption was granted.
    Exemption(Exemption),
    /// An exemption was revoked before it expired.
    Revocation(Revocation),
    /// Enforcement was paused or resumed.
    Control(Control),
    /// The actor of an earlier change, learnt later.
    Attribution(Attribution),
    /// A write the apiserver refused (e.g. RBAC), in a watched scope: the
    /// attempt is kept although nothing changed.
    Refused(AuditRecord),
    /// A message on the bus this build refused.
    Rejected(RejectedMessage),
    /// An alert in the outbox: written before it is sent.
    Alert(AlertRecord),
    /// Alerts delivered to a sink.
    Delivery(Delivery),
}

/// One ledger entry before it is sealed into the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerRecord {
    /// Schema version, [`SCHEMA`] when written by this build.
    pub schema: u32,
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When the record was written.
    pub at: DateTime<Utc>,
    /// The content.
    pub body: RecordBody,
}

impl LedgerRecord {
    /// A record at the current schema version.
    pub fn new(seq: u64, at: DateTime<Utc>, body: RecordBody) -> Self {
        Self {
            schema: SCHEMA,
            seq,
            at,
            body,
        }
    }
}

/// A record as stored: its canonical bytes and its place in the hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Hash of the previous record (all zeros before the first).
    #[serde(with = "hex_bytes")]
    pub prev_hash: [u8; 32],
    /// `SHA-256(prev_hash ‖ seq (big-endian) ‖ bytes)`.
    #[serde(with = "hex_bytes")]
    pub hash: [u8; 32],
    /// The record's canonical JSON bytes.
    pub bytes: Vec<u8>,
}

impl Sealed {
    /// Seals canonical `bytes` as record `seq` after `prev_hash`.
    pub fn new(seq: u64, prev_hash: [u8; 32], bytes: Vec<u8>) -> Self {
        let hash = chain_hash(&prev_hash, seq, &bytes);
        Self {
            seq,
            prev_hash,
            hash,
            bytes,
        }
    }

    /// Whether `hash` matches the content.
    pub fn is_intact(&self) -> bool {
        chain_hash(&self.prev_hash, self.seq, &self.bytes) == self.hash
    }
}

/// The chain link: `SHA-256(prev_hash ‖ seq (big-endian) ‖ bytes)`.
pub fn chain_hash(prev_hash: &[u8; 32], seq: u64, bytes: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(seq.to_be_bytes());
    hasher.update(bytes);
    hasher.finalize().into()
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&text, &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_record_round_trips_through_json() {
        let record = LedgerRecord::new(
            7,
            DateTime::from_timestamp(1_800_000_000, 0).expect("valid time"),
            RecordBody::GitError(GitError {
                source: "apps".into(),
                commit: "abc".into(),
                file: "team-a/web.yaml".into(),
                line: Some(3),
                message: "mapping values are not allowed here".into(),
            }),
        );
        let text = serde_json::to_string(&record).expect("serializes");
        assert!(text.contains(r#""type":"git_error""#), "{text}");
        let back: LedgerRecord = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, record);
    }

    #[test]
    fn sealed_records_detect_any_change_to_their_bytes() {
        let first = Sealed::new(1, [0; 32], b"one".to_vec());
        let second = Sealed::new(2, first.hash, b"two".to_vec());
        assert!(first.is_intact() && second.is_intact());
        assert_ne!(first.hash, second.hash);

        let mut tampered = second.clone();
        tampered.bytes = b"tw0".to_vec();
        assert!(!tampered.is_intact());

        let text = serde_json::to_string(&second).expect("serializes");
        let back: Sealed = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, second);
    }
}
