//! The wire format: what travels on the bus, on which topic, under which key.
//!
//! Values are JSON objects tagged with `type` (`change` or `audit`) and
//! carrying the inner type's `schema` version:
//!
//! ```text
//! {"type":"change","schema":1,"key":{...},"uid":"...","resource_version":"42",...}
//! ```

use std::fmt;

use model::{AuditRecord, ChangeEvent, SCHEMA};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Topic of change events, after the prefix.
pub const CHANGES_TOPIC: &str = "driftwarden.changes.v1";
/// Topic of audit records, after the prefix.
pub const AUDIT_TOPIC: &str = "driftwarden.audit.v1";
/// Topic of payloads a consumer refused (see [`Rejected`]), after the prefix.
pub const DEAD_LETTER_TOPIC: &str = "driftwarden.deadletter.v1";
/// Topic of signed ledger checkpoints (see [`crate::TopicPublisher`]),
/// after the prefix.
pub const CHECKPOINTS_TOPIC: &str = "driftwarden.checkpoints.v1";
/// Topic of the SIEM stream: one message per verdict, Driftwarden's JSON.
pub const VERDICTS_TOPIC: &str = "driftwarden.verdicts.v1";
/// Topic of the SIEM stream as OCSF events, where configured.
pub const VERDICTS_OCSF_TOPIC: &str = "driftwarden.verdicts.ocsf.v1";

/// Kafka's longest topic name; the prefix leaves room for the longest suffix.
const MAX_TOPIC_LEN: usize = 249;

/// One message on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// A watch event about one object.
    Change(ChangeEvent),
    /// A Kubernetes audit record of one write request.
    Audit(AuditRecord),
}

impl Message {
    /// The key the bus partitions by, so that one object's messages stay in
    /// order: the object key `cluster/group/kind/namespace/name` for changes
    /// (so a delete and a re-create, with a new uid, stay in order too), and
    /// `cluster/group/resource/namespace/name` for audit records (`core` for
    /// the core group, an empty namespace for cluster-scoped objects).
    pub fn key(&self) -> String {
        match self {
            Self::Change(event) => event.bus_key(),
            Self::Audit(record) => {
                let object = &record.object;
                let group = if object.group.is_empty() {
                    "core"
                } else {
                    &object.group
                };
                format!(
                    "{}/{}/{}/{}/{}",
                    record.cluster, group, object.resource, object.namespace, object.name
                )
            }
        }
    }

    /// The topic this message goes to.
    pub fn topic<'t>(&self, topics: &'t Topics) -> &'t str {
        match self {
            Self::Change(_) => &topics.changes,
            Self::Audit(_) => &topics.audit,
        }
    }

    /// The JSON payload of this message.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|source| Error::Encode {
            key: self.key(),
            source,
        })
    }

    /// Reads a payload found at `position`. Fails, naming the position, on
    /// an empty payload, an unknown schema version or anything that is not a
    /// message.
    pub fn decode(payload: &[u8], position: &Position) -> Result<Self> {
        if payload.is_empty() {
            return Err(Error::EmptyPayload {
                position: position.clone(),
            });
        }
        let decode_error = |source| Error::Decode {
            position: position.clone(),
            source,
        };
        let version: SchemaVersion = serde_json::from_slice(payload).map_err(decode_error)?;
        if let Some(version) = version.schema
            && version != SCHEMA
        {
            return Err(Error::UnknownSchema {
                position: position.clone(),
                version,
                expected: SCHEMA,
            });
        }
        serde_json::from_slice(payload).map_err(decode_error)
    }
}

/// Just the version of a payload, read before the rest.
#[derive(Deserialize)]
struct SchemaVersion {
    schema: Option<u32>,
}

/// The topic names in use, with their prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Where change events go.
    pub changes: String,
    /// Where audit records go.
    pub audit: String,
    /// Where refused payloads go; never consumed by Driftwarden.
    pub dead_letter: String,
    /// Where signed ledger checkpoints go; read back by `verify` only.
    pub checkpoints: String,
    /// The SIEM stream: one message per verdict.
    pub verdicts: String,
    /// The SIEM stream as OCSF events.
    pub verdicts_ocsf: String,
}

impl Topics {
    /// The topics under `prefix`, which is prepended as given (include a
    /// separator, e.g. `staging.`). An empty prefix gives the plain names.
    pub fn new(prefix: &str) -> Result<Self> {
        let longest = [
            CHANGES_TOPIC,
            AUDIT_TOPIC,
            DEAD_LETTER_TOPIC,
            CHECKPOINTS_TOPIC,
            VERDICTS_TOPIC,
            VERDICTS_OCSF_TOPIC,
        ]
        .map(str::len)
        .into_iter()
        .max()
        .unwrap_or_default();
        let max = MAX_TOPIC_LEN - longest;
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if prefix.len() > max || !prefix.chars().all(allowed) {
            return Err(Error::InvalidPrefix {
                prefix: prefix.to_owned(),
                max,
            });
        }
        Ok(Self {
            changes: format!("{prefix}{CHANGES_TOPIC}"),
            audit: format!("{prefix}{AUDIT_TOPIC}"),
            dead_letter: format!("{prefix}{DEAD_LETTER_TOPIC}"),
            checkpoints: format!("{prefix}{CHECKPOINTS_TOPIC}"),
            verdicts: format!("{prefix}{VERDICTS_TOPIC}"),
            verdicts_ocsf: format!("{prefix}{VERDICTS_OCSF_TOPIC}"),
        })
    }

    /// The topics a correlator consumes: changes and audit records.
    pub fn consumed(&self) -> [&str; 2] {
        [&self.changes, &self.audit]
    }

    /// Every topic Driftwarden creates: the consumed ones, the dead-letter
    /// topic, the checkpoint topic and the SIEM topics.
    pub fn all(&self) -> [&str; 6] {
        [
            &self.changes,
            &self.audit,
            &self.dead_letter,
            &self.checkpoints,
            &self.verdicts,
            &self.verdicts_ocsf,
        ]
    }

    /// The topics with one partition, in order: checkpoints and verdicts.
    pub fn single_partition(&self) -> [&str; 3] {
        [&self.checkpoints, &self.verdicts, &self.verdicts_ocsf]
    }
}

/// Where a message sits in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// The topic, with its prefix.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The message's offset in the partition.
    pub offset: i64,
}

impl Position {
    /// A stable name of the partition, e.g. `driftwarden.changes.v1/3`, under
    /// which the ledger keeps the offsets it has durably written.
    pub fn partition_name(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// A message received from the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The message.
    pub message: Message,
    /// Where it sits in Kafka; `None` on the embedded bus.
    pub position: Option<Position>,
}

/// A payload on the bus this build refuses to read: not JSON, not a
/// message, empty, or of a `schema` other than [`model::SCHEMA`]. Only
/// Kafka carries such payloads (someone else wrote them); the embedded bus
/// never does.
#[derive(Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Where it sits.
    pub position: Position,
    /// Why it was refused, in one line without the position, e.g.
    /// `schema version 99, but this build reads version 1`.
    pub reason: String,
    /// Its key, as sent (`None` when it had none).
    pub key: Option<Vec<u8>>,
    /// Its payload, as sent (empty when it had none).
    pub payload: Vec<u8>,
}

impl fmt::Debug for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The payload may be large and is foreign data: its size is enough.
        f.debug_struct("Rejected")
            .field("position", &self.position)
            .field("reason", &self.reason)
            .field("key", &self.key.as_deref().map(String::from_utf8_lossy))
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

/// One item handed out by [`Consumer::receive`](crate::Consumer::receive),
/// in the order of the bus.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "messages are nearly every item: boxing them would cost an allocation each"
)]
pub enum Received {
    /// A message this build reads.
    Message(Delivery),
    /// A payload this build refuses: record it, dead-letter it, then commit
    /// its position.
    Rejected(Rejected),
}

impl Received {
    /// Where the item sits in Kafka; `None` for messages of the embedded
    /// bus.
    pub fn position(&self) -> Option<&Position> {
        match self {
            Self::Message(delivery) => delivery.position.as_ref(),
            Self::Rejected(rejected) => Some(&rejected.position),
        }
    }
}

/// Why `err`, a decoding error of [`Message::decode`], refused a payload:
/// its message without the position.
pub(crate) fn reason(err: &Error) -> String {
    match err {
        Error::EmptyPayload { .. } => "empty payload".to_owned(),
        Error::UnknownSchema {
            version, expected, ..
        } => format!("schema version {version}, but this build reads version {expected}"),
        Error::Decode { source, .. } => format!("not a message this build reads: {source}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use model::{AuditObjectRef, AuditUser, ChangeKind, ObjectKey};
    use serde_json::json;

    use super::*;

    fn change() -> Message {
        Message::Change(ChangeEvent::new(
            ObjectKey::new("prod", "apps", "Deployment", "team-a", "web"),
            "apps/v1",
            "u-1",
            "42",
            ChangeKind::Modified,
            DateTime::from_timestamp(1_800_000_000, 0).expect("valid time"),
            json!({"spec": {"replicas": 3}}),
        ))
    }

    fn audit() -> Message {
        Message::Audit(AuditRecord::new(
            "a-1",
            "prod",
            AuditUser {
                username: "alice".into(),
                groups: vec![],
            },
            "patch",
            AuditObjectRef {
                resource: "configmaps".into(),
                namespace: "team-a".into(),
                name: "cfg".into(),
                ..AuditObjectRef::default()
            },
            DateTime::from_timestamp(1_800_000_000, 0).expect("valid time"),
        ))
    }

    fn at() -> Position {
        Position {
            topic: "t.driftwarden.changes.v1".into(),
            partition: 3,
            offset: 17,
        }
    }

    #[test]
    fn messages_round_trip_through_the_wire_format() {
        for message in [change(), audit()] {
            let payload = message.encode().expect("encodes");
            let back = Message::decode(&payload, &at()).expect("decodes");
            assert_eq!(back, message);
        }
    }

    #[test]
    fn payload_is_tagged_and_carries_the_schema_version() {
        let payload = change().encode().expect("encodes");
        let value: serde_json::Value = serde_json::from_slice(&payload).expect("json");
        assert_eq!(value["type"], "change");
        assert_eq!(value["schema"], 1);
        let payload = audit().encode().expect("encodes");
        let value: serde_json::Value = serde_json::from_slice(&payload).expect("json");
        assert_eq!(value["type"], "audit");
        assert_eq!(value["schema"], 1);
    }

    #[test]
    fn unknown_schema_version_is_rejected_with_its_version_and_position() {
        let mut value: serde_json::Value =
            serde_json::from_slice(&change().encode().expect("encodes")).expect("json");
        value["schema"] = json!(2);
        let payload = serde_json::to_vec(&value).expect("json");
        let err = Message::decode(&payload, &at()).expect_err("version 2 is unknown");
        assert!(
            matches!(
                err,
                Error::UnknownSchema {
                    version: 2,
                    expected: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("schema version 2"), "{text}");
        assert!(text.contains("t.driftwarden.changes.v1/3@17"), "{text}");
        assert_eq!(err.position(), Some(&at()));
    }

    #[test]
    fn garbage_payload_is_an_error_naming_its_position() {
        for payload in [
            &b"\x00\xffnot json"[..],
            b"{\"type\":\"nope\",\"schema\":1}",
            b"[]",
        ] {
            let err = Message::decode(payload, &at()).expect_err("garbage is rejected");
            assert!(matches!(err, Error::Decode { .. }), "{err:?}");
            assert!(
                err.to_string().contains("t.driftwarden.changes.v1/3@17"),
                "{err}"
            );
            assert_eq!(err.position(), Some(&at()));
        }
    }

    #[test]
    fn payload_without_schema_is_rejected() {
        let mut value: serde_json::Value =
            serde_json::from_slice(&audit().encode().expect("encodes")).expect("json");
        value.as_object_mut().expect("object").remove("schema");
        let payload = serde_json::to_vec(&value).expect("json");
        let err = Message::decode(&payload, &at()).expect_err("schema is required");
        assert!(err.to_string().contains("schema"), "{err}");
    }

    #[test]
    fn empty_payload_is_rejected() {
        let err = Message::decode(b"", &at()).expect_err("empty is rejected");
        assert!(matches!(err, Error::EmptyPayload { .. }), "{err:?}");
    }

    #[test]
    fn keys_keep_one_object_on_one_partition() {
        assert_eq!(change().key(), "prod/apps/Deployment/team-a/web");
        assert_eq!(audit().key(), "prod/core/configmaps/team-a/cfg");
    }

    #[test]
    fn a_re_created_object_keeps_the_key_of_its_first_incarnation() {
        let Message::Change(first) = change() else {
            unreachable!("change() is a change")
        };
        let mut deleted = first.clone();
        deleted.kind = ChangeKind::Deleted;
        let mut again = first.clone();
        again.uid = "u-2".into();
        again.kind = ChangeKind::Added;
        let keys: Vec<String> = [first, deleted, again]
            .into_iter()
            .map(|event| Message::Change(event).key())
            .collect();
        assert!(keys.iter().all(|key| key == &keys[0]), "{keys:?}");

        let cluster_scoped = ChangeEvent::new(
            ObjectKey::new("prod", "", "Namespace", "", "team-a"),
            "v1",
            "u-ns",
            "7",
            ChangeKind::Added,
            DateTime::from_timestamp(1_800_000_000, 0).expect("valid time"),
            json!({}),
        );
        assert_eq!(
            Message::Change(cluster_scoped).key(),
            "prod/core/Namespace//team-a"
        );
    }

    #[test]
    fn topics_carry_the_prefix_and_messages_pick_theirs() {
        let topics = Topics::new("test-7.").expect("valid prefix");
        assert_eq!(topics.changes, "test-7.driftwarden.changes.v1");
        assert_eq!(topics.audit, "test-7.driftwarden.audit.v1");
        assert_eq!(topics.dead_letter, "test-7.driftwarden.deadletter.v1");
        assert_eq!(topics.checkpoints, "test-7.driftwarden.checkpoints.v1");
        assert_eq!(change().topic(&topics), topics.changes);
        assert_eq!(audit().topic(&topics), topics.audit);
        assert_eq!(
            topics.consumed(),
            [topics.changes.as_str(), topics.audit.as_str()]
        );
        assert_eq!(topics.all().len(), 6);
        assert!(topics.all().contains(&topics.dead_letter.as_str()));
        assert!(topics.all().contains(&topics.checkpoints.as_str()));
    }

    #[test]
    fn the_longest_prefix_leaves_room_for_every_topic() {
        let longest = "p".repeat(MAX_TOPIC_LEN - VERDICTS_OCSF_TOPIC.len());
        let topics = Topics::new(&longest).expect("fits");
        assert!(topics.all().iter().all(|t| t.len() <= MAX_TOPIC_LEN));
        assert!(Topics::new(&format!("{longest}p")).is_err());
    }

    #[test]
    fn rejection_reasons_say_why_without_the_position() {
        let mut value: serde_json::Value =
            serde_json::from_slice(&change().encode().expect("encodes")).expect("json");
        value["schema"] = json!(99);
        let unknown = serde_json::to_vec(&value).expect("json");
        let cases: [(&[u8], &str); 4] = [
            (b"", "empty payload"),
            (
                &unknown,
                "schema version 99, but this build reads version 1",
            ),
            (b"not json", "not a message this build reads: expected"),
            (
                b"{\"type\":\"nope\",\"schema\":1}",
                "not a message this build reads: unknown variant `nope`",
            ),
        ];
        for (payload, expected) in cases {
            let err = Message::decode(payload, &at()).expect_err("refused");
            let reason = reason(&err);
            assert!(
                reason.starts_with(expected),
                "{reason} should start with {expected}"
            );
            assert!(!reason.contains("@17"), "{reason} repeats the position");
        }
    }

    #[test]
    fn rejected_debug_shows_the_payload_size_not_the_payload() {
        let rejected = Rejected {
            position: at(),
            reason: "empty payload".into(),
            key: Some(b"k".to_vec()),
            payload: b"secret-ish foreign bytes".to_vec(),
        };
        let shown = format!("{rejected:?}");
        assert!(shown.contains("payload_bytes: 24"), "{shown}");
        assert!(!shown.contains("foreign"), "{shown}");
        assert_eq!(Received::Rejected(rejected).position(), Some(&at()));
        let delivery = Delivery {
            message: change(),
            position: None,
        };
        assert_eq!(Received::Message(delivery).position(), None);
    }

    #[test]
    fn prefix_with_characters_kafka_refuses_is_rejected() {
        for prefix in ["has space.", "slash/", "ünicode."] {
            let err = Topics::new(prefix).expect_err("invalid prefix");
            assert!(err.to_string().contains(prefix), "{err}");
        }
        assert!(Topics::new(&"a".repeat(300)).is_err());
    }

    #[test]
    fn partition_name_is_topic_and_partition() {
        assert_eq!(at().partition_name(), "t.driftwarden.changes.v1/3");
        assert_eq!(at().to_string(), "t.driftwarden.changes.v1/3@17");
    }
}
