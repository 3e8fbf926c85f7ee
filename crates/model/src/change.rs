//! Change events: one watch event about one object.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::{FieldPath, ObjectKey, SCHEMA};

/// What the watch saw happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The object appeared.
    Added,
    /// The object changed.
    Modified,
    /// The object was deleted; `object` is its last state.
    Deleted,
    /// The object was listed after a (re)start or a `410 Gone`; whether it
    /// changed is decided against the ledger's last known state.
    Resync,
}

/// One entry of an object's `metadata.managedFields`, summarized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedField {
    /// The field manager, e.g. `kubectl-edit`, `argocd-controller`.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// When the manager last changed its fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
    /// The subresource written (`status`, `scale`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
    /// The leaf fields this manager owns.
    #[serde(default)]
    pub fields: Vec<FieldPath>,
}

/// One watch event about one object, after churn filtering and secret
/// redaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Schema version, [`SCHEMA`] when written by this build.
    pub schema: u32,
    /// Which object.
    pub key: ObjectKey,
    /// The object's `apiVersion`.
    pub api_version: String,
    /// The incarnation (`metadata.uid`).
    pub uid: String,
    /// `metadata.resourceVersion` after the change.
    pub resource_version: String,
    /// What happened.
    pub kind: ChangeKind,
    /// When the watcher saw it.
    pub observed_at: DateTime<Utc>,
    /// The object after the change, with `metadata.managedFields` removed and
    /// Secret values replaced by digests.
    pub object: Value,
    /// The managedFields summary.
    #[serde(default)]
    pub managed_fields: Vec<ManagedField>,
    /// Owned by a controller (`ownerReferences[].controller: true`).
    #[serde(default)]
    pub derived: bool,
    /// Set when the object was too large for the bus: `object` then holds
    /// only part of it (see [`ChangeEvent::truncated`]) and this describes
    /// the whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncation>,
}

/// The object a truncated [`ChangeEvent`] left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncation {
    /// SHA-256 (lowercase hex) of the whole object as the watcher saw it
    /// (after redaction), serialized as compact JSON.
    pub sha256: String,
    /// The size in bytes of that JSON.
    pub size: u64,
}

/// The metadata fields an identity-only truncation keeps.
const IDENTITY: [&str; 6] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "deletionTimestamp",
];

impl ChangeEvent {
    /// A new event at the current schema version.
    pub fn new(
        key: ObjectKey,
        api_version: impl Into<String>,
        uid: impl Into<String>,
        resource_version: impl Into<String>,
        kind: ChangeKind,
        observed_at: DateTime<Utc>,
        object: Value,
    ) -> Self {
        Self {
            schema: SCHEMA,
            key,
            api_version: api_version.into(),
            uid: uid.into(),
            resource_version: resource_version.into(),
            kind,
            observed_at,
            object,
            managed_fields: Vec::new(),
            derived: false,
            truncated: None,
        }
    }

    /// This event with its object cut down to `apiVersion`, `kind` and
    /// `metadata` (with `identity_only`, to the metadata's name, namespace,
    /// uid, resourceVersion, generation and deletionTimestamp, and the
    /// managers without their fields), and [`truncated`](Self::truncated)
    /// set to the digest and size of the whole object. Truncating a
    /// truncated event keeps the first description.
    pub fn truncated(&self, identity_only: bool) -> ChangeEvent {
        let truncation = self.truncated.clone().unwrap_or_else(|| {
            // Serializing a `Value` cannot fail.
            let json = serde_json::to_vec(&self.object).unwrap_or_default();
            Truncation {
                sha256: hex::encode(Sha256::digest(&json)),
                size: json.len() as u64,
            }
        });
        let mut object = Map::new();
        for field in ["apiVersion", "kind"] {
            if let Some(value) = self.object.get(field) {
                object.insert(field.to_owned(), value.clone());
            }
        }
        if let Some(Value::Object(metadata)) = self.object.get("metadata") {
            let kept = metadata
                .iter()
                .filter(|(name, _)| !identity_only || IDENTITY.contains(&name.as_str()))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            object.insert("metadata".to_owned(), Value::Object(kept));
        }
        let managed_fields = self
            .managed_fields
            .iter()
            .map(|managed| ManagedField {
                fields: if identity_only {
                    Vec::new()
                } else {
                    managed.fields.clone()
                },
                ..managed.clone()
            })
            .collect();
        ChangeEvent {
            object: Value::Object(object),
            managed_fields,
            truncated: Some(truncation),
            ..self.clone()
        }
    }

    /// The key the bus partitions by: the object key's string form,
    /// `cluster/group/kind/namespace/name`, as the ledger keys objects, so
    /// one object's events stay in order, across a delete and re-create
    /// (a new uid) too.
    pub fn bus_key(&self) -> String {
        self.key.to_string()
    }

    /// Identity used to ignore a change the ledger already stored.
    pub fn dedup_id(&self) -> String {
        format!(
            "{}/{}/{}",
            self.key.cluster, self.uid, self.resource_version
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn change_event_round_trips_through_json() {
        let mut event = ChangeEvent::new(
            ObjectKey::new("prod", "apps", "Deployment", "team-a", "web"),
            "apps/v1",
            "u-1",
            "42",
            ChangeKind::Modified,
            DateTime::from_timestamp(1_800_000_000, 0).expect("valid time"),
            json!({"spec": {"replicas": 3}}),
        );
        event.managed_fields.push(ManagedField {
            manager: "kubectl-scale".into(),
            operation: "Update".into(),
            time: None,
            subresource: Some("scale".into()),
            fields: vec!["spec.replicas".parse().expect("path")],
        });
        let text = serde_json::to_string(&event).expect("serializes");
        assert!(text.contains(r#""schema":1"#), "{text}");
        assert!(text.contains(r#""kind":"modified""#), "{text}");
        let back: ChangeEvent = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, event);
        assert_eq!(back.bus_key(), "prod/apps/Deployment/team-a/web");
        assert_eq!(back.dedup_id(), "prod/u-1/42");
        assert!(!text.contains("truncated"), "{text}");
    }

    fn big_config_map() -> ChangeEvent {
        let mut event = ChangeEvent::new(
            ObjectKey::new("prod", "", "ConfigMap", "team-a", "big"),
            "v1",
            "u-9",
            "77",
            ChangeKind::Modified,
            DateTime::from_timestamp(1_800_000_000, 0).expect("valid time"),
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "big", "namespace": "team-a", "uid": "u-9",
                    "resourceVersion": "77", "labels": {"app": "web"},
                    "annotations": {"note": "x".repeat(100)},
                },
                "data": {"blob": "y".repeat(1000)},
            }),
        );
        event.managed_fields.push(ManagedField {
            manager: "kubectl-edit".into(),
            operation: "Update".into(),
            time: None,
            subresource: None,
            fields: vec!["data.blob".parse().expect("path")],
        });
        event
    }

    #[test]
    fn truncation_keeps_the_metadata_and_describes_the_whole_object() {
        let event = big_config_map();
        let whole = serde_json::to_vec(&event.object).expect("json");
        let cut = event.truncated(false);
        let truncation = cut.truncated.clone().expect("marked");
        assert_eq!(truncation.size, whole.len() as u64);
        assert_eq!(truncation.sha256, hex::encode(Sha256::digest(&whole)));
        assert_eq!(truncation.sha256.len(), 64);
        assert_eq!(cut.object["metadata"], event.object["metadata"]);
        assert_eq!(cut.object["kind"], "ConfigMap");
        assert!(cut.object.get("data").is_none());
        assert_eq!(cut.managed_fields, event.managed_fields);
        assert_eq!(
            (&cut.key, &cut.uid, &cut.resource_version, cut.kind),
            (&event.key, &event.uid, &event.resource_version, event.kind)
        );

        let text = serde_json::to_string(&cut).expect("serializes");
        assert!(text.contains(r#""truncated":{"sha256":""#), "{text}");
        let back: ChangeEvent = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, cut);
    }

    #[test]
    fn identity_only_truncation_drops_labels_and_annotations_but_keeps_the_first_digest() {
        let event = big_config_map();
        let first = event.truncated(false);
        let identity = first.truncated(true);
        assert_eq!(identity.truncated, first.truncated);
        let metadata = identity.object["metadata"].as_object().expect("metadata");
        let mut names: Vec<&str> = metadata.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["name", "namespace", "resourceVersion", "uid"]);
        assert_eq!(identity.managed_fields[0].manager, "kubectl-edit");
        assert!(identity.managed_fields[0].fields.is_empty());
    }
}
