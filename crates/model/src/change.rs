//! Change events: one watch event about one object.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
}

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
    }
}
