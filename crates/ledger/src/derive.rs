//! The trees derived from the chain, and the one code path that derives them.
//!
//! ```text
//!  record (seq, body) ──derive──┬─▶ by_object  key ‖ seq
//!                               ├─▶ dedup      change id ─▶ seq
//!                               ├─▶ meta       exemption/‹seq›, alert/‹seq›, git/‹source›/‹seq›
//!                               └─▶ objects    key ─▶ StoredState (observe, amend)
//!  runs of records sharing `at` ──▶ by_time    nanos ‖ first seq ─▶ last seq
//! ```
//!
//! [`crate::Ledger::append`] writes these entries as it seals records;
//! `verify` derives them again from the chain and compares them with the
//! stored trees; `repair` rewrites the trees that differ.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use model::{
    Attribution, ChangeEvent, ChangeKind, Enforcement, LedgerRecord, ObjectKey, RecordBody, Verdict,
};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::codec::{object_key, seq_key, time_key};
use crate::state::StoredState;

/// Names of the derived trees, as reported.
pub(crate) const BY_OBJECT: &str = "by_object";
pub(crate) const BY_TIME: &str = "by_time";
pub(crate) const OBJECTS: &str = "objects";
pub(crate) const DEDUP: &str = "dedup";
pub(crate) const META: &str = "meta";

/// Prefix of the exemption index entries in the `meta` tree.
pub(crate) const EXEMPTION_PREFIX: &[u8] = b"exemption/";

/// Prefix of the git sync index entries in the `meta` tree.
pub(crate) const GIT_PREFIX: &[u8] = b"git/";

/// Prefix of the outbox index entries (alerts and their deliveries) in the
/// `meta` tree.
pub(crate) const ALERT_PREFIX: &[u8] = b"alert/";

/// Prefixes of every index kept in the `meta` tree.
pub(crate) const META_PREFIXES: [&[u8]; 3] = [EXEMPTION_PREFIX, GIT_PREFIX, ALERT_PREFIX];

/// Prefix of the `meta` entries indexing the git syncs of `source`.
pub(crate) fn git_sync_prefix(source: &str) -> Vec<u8> {
    let mut key = GIT_PREFIX.to_vec();
    key.extend_from_slice(source.as_bytes());
    key.push(b'/');
    key
}

/// The `meta` key indexing git sync record `seq` of `source`.
pub(crate) fn git_sync_key(source: &str, seq: u64) -> Vec<u8> {
    let mut key = git_sync_prefix(source);
    key.extend_from_slice(&seq_key(seq));
    key
}

/// The `meta` key indexing exemption record `seq`.
pub(crate) fn exemption_key(seq: u64) -> Vec<u8> {
    meta_key(EXEMPTION_PREFIX, seq)
}

/// The `meta` key indexing record `seq` under `prefix`.
fn meta_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&seq_key(seq));
    key
}

/// The `by_time` entry of the records `first..=last`, all written at `at`.
pub(crate) fn time_entry(at: DateTime<Utc>, first: u64, last: u64) -> ([u8; 16], [u8; 8]) {
    (time_key(at, first), seq_key(last))
}

/// What a record says, as far as the derived trees are concerned.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subject<'a> {
    /// A change: the event (its object body may be left out) and its verdict.
    Change {
        event: &'a ChangeEvent,
        verdict: &'a Verdict,
    },
    /// Any other record.
    Other(&'a RecordBody),
}

impl<'a> Subject<'a> {
    /// The subject of a whole record body.
    pub(crate) fn of(body: &'a RecordBody) -> Self {
        match body {
            RecordBody::Change { event, judgement } => Subject::Change {
                event,
                verdict: &judgement.verdict,
            },
            other => Subject::Other(other),
        }
    }
}

/// The change id a record claims in `dedup`, if it is a change.
pub(crate) fn dedup_id(subject: Subject<'_>) -> Option<String> {
    match subject {
        Subject::Change { event, .. } => Some(event.dedup_id()),
        Subject::Other(_) => None,
    }
}

/// What one record adds to the derived trees (`by_time` aside, which
/// indexes runs of records).
#[derive(Debug, Default)]
pub(crate) struct Derived {
    /// Its `by_object` key (the value is empty).
    pub by_object: Option<Vec<u8>>,
    /// Its change id, indexed in `dedup` to its sequence number.
    pub dedup: Option<String>,
    /// Its `meta` index key (the value is empty).
    pub meta: Option<Vec<u8>>,
    /// The object state it leaves: the `objects` key and value.
    pub state: Option<(Vec<u8>, StoredState)>,
}

/// The entries record `seq` about `subject` adds to the derived trees.
/// `previous` gives the state of an object (by index key) before it; it is
/// asked only for changes and amendments.
pub(crate) fn derive<E>(
    subject: Subject<'_>,
    seq: u64,
    previous: impl FnOnce(&[u8]) -> Result<Option<StoredState>, E>,
) -> Result<Derived, E> {
    let mut derived = Derived::default();
    let body = match subject {
        Subject::Change { event, verdict } => {
            let index = event.key.index_bytes();
            let state = StoredState::observe(previous(&index)?, event, verdict, seq);
            derived.by_object = Some(object_key(&index, seq));
            derived.dedup = Some(event.dedup_id());
            derived.state = Some((index, state));
            return Ok(derived);
        }
        Subject::Other(body) => body,
    };
    match body {
        RecordBody::Change { event, judgement } => {
            return derive(
                Subject::Change {
                    event,
                    verdict: &judgement.verdict,
                },
                seq,
                previous,
            );
        }
        RecordBody::Amendment(amendment) => {
            let index = amendment.key.index_bytes();
            derived.by_object = Some(object_key(&index, seq));
            if let Some(state) = previous(&index)? {
                derived.state = Some((index, state.amend(amendment, seq)));
            }
        }
        RecordBody::Enforcement(Enforcement { key, .. })
        | RecordBody::Attribution(Attribution { key, .. }) => {
            derived.by_object = Some(object_key(&key.index_bytes(), seq));
        }
        RecordBody::Exemption(_) | RecordBody::Revocation(_) => {
            derived.meta = Some(exemption_key(seq));
        }
        RecordBody::Alert(_) | RecordBody::Delivery(_) => {
            derived.meta = Some(meta_key(ALERT_PREFIX, seq));
        }
        RecordBody::GitSync(sync) => derived.meta = Some(git_sync_key(&sync.source, seq)),
        // Git errors, rewrites and fetches, controls, refusals and any
        // later kind of record are in no derived tree.
        _ => {}
    }
    Ok(derived)
}

/// A record read for its index entries. A change's object body (most of
/// its bytes) and the rest of its judgement are skipped: its event keeps
/// its key, uid, resource version and kind (the object null, the time the
/// record's).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Indexable {
    /// Its sequence number, as sealed.
    pub seq: u64,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// What it says, enough to derive its index entries.
    pub body: IndexedBody,
}

/// The body of an [`Indexable`] record.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "the large variant is the common one; boxing it costs an allocation per record"
)]
pub(crate) enum IndexedBody {
    /// A change: its event without the object, and its verdict.
    Change {
        event: ChangeEvent,
        verdict: Verdict,
    },
    /// Any other record, whole.
    Other(Box<RecordBody>),
}

impl Indexable {
    /// What the record says, for [`derive`].
    pub(crate) fn subject(&self) -> Subject<'_> {
        match &self.body {
            IndexedBody::Change { event, verdict } => Subject::Change { event, verdict },
            IndexedBody::Other(body) => Subject::of(body.as_ref()),
        }
    }
}

/// Reads a record's canonical bytes for its index entries, or says why
/// they are not a record this build reads.
pub(crate) fn decode_indexable(bytes: &[u8]) -> Result<Indexable, String> {
    match serde_json::from_slice::<LeanRecord<LeanEvent, LeanVerdict>>(bytes) {
        Ok(LeanRecord {
            seq,
            at,
            body: LeanBody(Some((event, LeanVerdict(verdict)))),
        }) => {
            let event = ChangeEvent::new(
                event.key,
                String::new(),
                event.uid,
                event.resource_version,
                event.kind,
                at,
                serde_json::Value::Null,
            );
            Ok(Indexable {
                seq,
                at,
                body: IndexedBody::Change { event, verdict },
            })
        }
        // Any other record is small: read it whole.
        Ok(_) | Err(_) => serde_json::from_slice::<LedgerRecord>(bytes)
            .map(|record| Indexable {
                seq: record.seq,
                at: record.at,
                body: IndexedBody::Other(Box::new(record.body)),
            })
            .map_err(|err| format!("its bytes are not a ledger record this build reads: {err}")),
    }
}

/// A record read without the object of a change: its event as `E` reads
/// it, its judgement as `J` does.
#[derive(Deserialize)]
#[serde(bound = "E: Deserialize<'de>, J: Deserialize<'de>")]
struct LeanRecord<E, J> {
    seq: u64,
    at: DateTime<Utc>,
    body: LeanBody<E, J>,
}

/// The body of a [`LeanRecord`]: a change's event and judgement, or `None`
/// for anything else (read whole afterwards).
struct LeanBody<E, J>(Option<(E, J)>);

/// Record `bytes` with the object of a change left out (`null`): what a
/// reader of judgements needs, in a fraction of the time.
pub(crate) fn decode_without_object(bytes: &[u8]) -> Result<LedgerRecord, String> {
    match serde_json::from_slice::<LeanRecord<EventWithoutObject, model::Judgement>>(bytes) {
        Ok(LeanRecord {
            seq,
            at,
            body: LeanBody(Some((e, judgement))),
        }) => {
            let mut event = ChangeEvent::new(
                e.key,
                e.api_version,
                e.uid,
                e.resource_version,
                e.kind,
                e.observed_at,
                serde_json::Value::Null,
            );
            event.schema = e.schema;
            event.managed_fields = e.managed_fields;
            event.derived = e.derived;
            event.truncated = e.truncated;
            Ok(LedgerRecord {
                schema: model::SCHEMA,
                seq,
                at,
                body: RecordBody::Change { event, judgement },
            })
        }
        Ok(_) | Err(_) => serde_json::from_slice::<LedgerRecord>(bytes)
            .map_err(|err| format!("its bytes are not a ledger record this build reads: {err}")),
    }
}

/// Every field of a change event but its object, which is skipped unread.
#[derive(Deserialize)]
struct EventWithoutObject {
    schema: u32,
    key: ObjectKey,
    api_version: String,
    uid: String,
    resource_version: String,
    kind: ChangeKind,
    observed_at: DateTime<Utc>,
    #[serde(default)]
    managed_fields: Vec<model::ManagedField>,
    #[serde(default)]
    derived: bool,
    #[serde(default)]
    truncated: Option<model::Truncation>,
}

/// The fields of a change event its index entries need.
#[derive(Deserialize)]
struct LeanEvent {
    key: ObjectKey,
    uid: String,
    resource_version: String,
    kind: ChangeKind,
}

impl<'de, E: Deserialize<'de>, J: Deserialize<'de>> Deserialize<'de> for LeanBody<E, J> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(LeanBodyVisitor(std::marker::PhantomData))
    }
}

struct LeanBodyVisitor<E, J>(std::marker::PhantomData<(E, J)>);

impl<'de, E: Deserialize<'de>, J: Deserialize<'de>> Visitor<'de> for LeanBodyVisitor<E, J> {
    type Value = LeanBody<E, J>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a record body")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LeanBody<E, J>, A::Error> {
        // The tag is written first; anything else is read the slow way.
        let is_change = match map.next_key::<Text<'de>>()? {
            Some(key) if key.0 == "type" => map.next_value::<Text<'de>>()?.0 == "change",
            Some(_) => {
                map.next_value::<IgnoredAny>()?;
                false
            }
            None => false,
        };
        if !is_change {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(LeanBody(None));
        }
        let (mut event, mut verdict) = (None, None);
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match &*key.0 {
                "event" => event = Some(map.next_value()?),
                "judgement" => verdict = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(LeanBody(Some((
            event.ok_or_else(|| de::Error::missing_field("event"))?,
            verdict.ok_or_else(|| de::Error::missing_field("judgement"))?,
        ))))
    }
}

/// A string borrowed from the input when it holds no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_str(TextVisitor)
    }
}

/// The verdict of a judgement, read without the rest of it. The verdict's
/// fields are flattened into the judgement's, so the judgement's own fields
/// are passed over and the rest read as the verdict.
struct LeanVerdict(Verdict);

/// The fields of `model::Judgement` besides the flattened verdict.
const JUDGEMENT_FIELDS: [&str; 4] = ["actor", "desired_commit", "diff", "git_stale"];

impl<'de> Deserialize<'de> for LeanVerdict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LeanVerdictVisitor;

        impl<'de> Visitor<'de> for LeanVerdictVisitor {
            type Value = LeanVerdict;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a judgement")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LeanVerdict, A::Error> {
                // The verdict's own entries, copied as they are into a small
                // object of their own.
                let mut verdict = String::with_capacity(96);
                verdict.push('{');
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    if JUDGEMENT_FIELDS.contains(&&*key.0) {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    let value = map.next_value::<&serde_json::value::RawValue>()?;
                    if verdict.len() > 1 {
                        verdict.push(',');
                    }
                    match key.0 {
                        // Borrowed: written without escapes, as it was.
                        Cow::Borrowed(key) => {
                            verdict.push('"');
                            verdict.push_str(key);
                            verdict.push('"');
                        }
                        Cow::Owned(key) => verdict
                            .push_str(&serde_json::to_string(&key).map_err(de::Error::custom)?),
                    }
                    verdict.push(':');
                    verdict.push_str(value.get());
                }
                verdict.push('}');
                serde_json::from_str::<Verdict>(&verdict)
                    .map(LeanVerdict)
                    .map_err(de::Error::custom)
            }
        }

        deserializer.deserialize_map(LeanVerdictVisitor)
    }
}

/// One difference between a derived tree and what the chain says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexDifference {
    /// The tree: `by_object`, `by_time`, `objects`, `dedup` or `meta`.
    pub tree: String,
    /// The entry's key, for people.
    pub key: String,
    /// What the chain says the entry holds (`None`: no such entry).
    pub expected: Option<String>,
    /// What the tree holds (`None`: the entry is missing).
    pub found: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::change;
    use model::{Actor, DriftKind, FieldChange, GitSync, Judgement, PathVerdict};
    use serde_json::json;

    fn sealed_bytes(seq: u64, body: &RecordBody) -> Vec<u8> {
        let record = LedgerRecord::new(seq, Utc::now(), body.clone());
        serde_json::to_vec(&record).expect("serializes")
    }

    fn verdicts() -> Vec<Verdict> {
        vec![
            Verdict::Authorized {
                commit: "c0ffee".into(),
            },
            Verdict::InSync,
            Verdict::Drift {
                drift: DriftKind::Modified {
                    paths: vec!["spec.replicas".parse().expect("path")],
                },
            },
            Verdict::Drift {
                drift: DriftKind::Deleted,
            },
            Verdict::Unmanaged,
            Verdict::Derived,
            Verdict::Allowed {
                rule: "exemption: incident".into(),
            },
            Verdict::Adopted {
                commit: "c2".into(),
                drift_seq: 4,
            },
        ]
    }

    #[test]
    fn a_change_is_read_without_its_object_and_derives_the_same_entries() {
        for verdict in verdicts() {
            let mut body = change("web", "7", verdict.clone());
            if let RecordBody::Change { judgement, .. } = &mut body {
                judgement.actor = Actor::ManagedFields {
                    manager: "kubectl".into(),
                    operation: "Update".into(),
                    time: None,
                };
                judgement.desired_commit = Some("c0ffee".into());
                judgement.git_stale = true;
                judgement.diff = vec![
                    FieldChange::new(
                        "spec.replicas".parse().expect("path"),
                        Some(json!(2)),
                        Some(json!({"verdict": "in_sync"})),
                    )
                    .judged(PathVerdict::Drift),
                ];
            }
            let lean = decode_indexable(&sealed_bytes(3, &body)).expect("decodes");
            assert_eq!(lean.seq, 3);
            let IndexedBody::Change {
                event,
                verdict: read,
            } = &lean.body
            else {
                panic!("not a change: {:?}", lean.body);
            };
            assert_eq!(event.object, serde_json::Value::Null);
            assert_eq!(read, &verdict);
            let RecordBody::Change { event: full, .. } = &body else {
                unreachable!("a change")
            };
            assert_eq!(event.dedup_id(), full.dedup_id());
            let none = |_: &[u8]| Ok::<_, ()>(None);
            let from_lean = derive(lean.subject(), 3, none).expect("derives");
            let from_full = derive(Subject::of(&body), 3, none).expect("derives");
            assert_eq!(from_lean.by_object, from_full.by_object);
            assert_eq!(from_lean.dedup, from_full.dedup);
            assert_eq!(from_lean.state, from_full.state);
            assert!(from_lean.state.is_some());
        }
    }

    #[test]
    fn other_records_are_read_whole() {
        let body = RecordBody::GitSync(GitSync {
            source: "apps".into(),
            commit: model::Commit {
                id: "abc".into(),
                time: Utc::now(),
                author: "a".into(),
                summary: "m".into(),
                refs: Vec::new(),
            },
            objects_changed: 2,
        });
        let lean = decode_indexable(&sealed_bytes(9, &body)).expect("decodes");
        assert_eq!(lean.body, IndexedBody::Other(Box::new(body.clone())));
        let derived = derive(lean.subject(), 9, |_| Ok::<_, ()>(None)).expect("derives");
        assert_eq!(derived.meta, Some(git_sync_key("apps", 9)));
        assert!(decode_indexable(b"[1,2]").is_err());
        let unknown =
            br#"{"schema":1,"seq":2,"at":"2026-01-01T00:00:00Z","body":{"type":"later"}}"#;
        assert!(decode_indexable(unknown).is_err());
    }

    #[test]
    fn a_judgement_without_its_verdict_is_not_read() {
        let judgement = Judgement {
            git_stale: false,
            verdict: Verdict::InSync,
            actor: Actor::Unknown {
                reason: "test".into(),
            },
            desired_commit: None,
            diff: Vec::new(),
        };
        let mut value = serde_json::to_value(&judgement).expect("serializes");
        value.as_object_mut().expect("a map").remove("verdict");
        assert!(serde_json::from_value::<LeanVerdict>(value).is_err());
    }

    #[test]
    fn a_judgement_field_added_later_does_not_change_the_verdict_read() {
        for verdict in verdicts() {
            let judgement = Judgement {
                git_stale: false,
                verdict: verdict.clone(),
                actor: Actor::Unknown {
                    reason: "test".into(),
                },
                desired_commit: None,
                diff: Vec::new(),
            };
            let mut value = serde_json::to_value(&judgement).expect("serializes");
            value
                .as_object_mut()
                .expect("a map")
                .insert("added_later".into(), json!({"nested": [1, "\"x\""]}));
            let text = serde_json::to_string(&value).expect("serializes");
            let read: LeanVerdict = serde_json::from_str(&text).expect("reads");
            assert_eq!(read.0, verdict);
        }
    }
}
