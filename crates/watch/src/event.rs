//! Building a [`ChangeEvent`] from one observed object.

use chrono::{DateTime, Utc};
use model::{ChangeEvent, ChangeKind, ObjectKey};
use serde_json::Value;

use crate::managed::{managed_fields_summary, strip_managed_fields};
use model::churn::is_derived;
use model::redact::DigestKey;

/// An object that cannot become a change event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A field every Kubernetes object carries is missing or not a string.
    #[error(
        "object {object} has no string `{field}`; a change event needs apiVersion, kind, \
         metadata.name, metadata.uid and metadata.resourceVersion, as the apiserver sends them"
    )]
    MissingField {
        /// The object as far as it could be named (`kind namespace/name`).
        object: String,
        /// The missing field, e.g. `metadata.uid`.
        field: &'static str,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds the change event for `obj` as observed at `observed_at`.
///
/// The key comes from the group of `apiVersion`, `kind`, `metadata.namespace`
/// (empty when cluster-scoped) and `metadata.name`. The event carries the
/// managedFields summary, whether a controller owns the object, and the
/// object itself without `metadata.managedFields` and with Secret values
/// replaced by digests keyed with `digest_key`.
pub fn to_change_event(
    cluster: &str,
    kind: ChangeKind,
    mut obj: Value,
    observed_at: DateTime<Utc>,
    digest_key: &DigestKey,
) -> Result<ChangeEvent> {
    let fields = Identity::of(&obj)?;
    let key = ObjectKey::new(
        cluster,
        ObjectKey::group_of(&fields.api_version),
        fields.kind,
        fields.namespace,
        fields.name,
    );
    let managed_fields = managed_fields_summary(&obj);
    let derived = is_derived(&obj);
    strip_managed_fields(&mut obj);
    digest_key.redact_secret(&mut obj);
    let mut event = ChangeEvent::new(
        key,
        fields.api_version,
        fields.uid,
        fields.resource_version,
        kind,
        observed_at,
        obj,
    );
    event.managed_fields = managed_fields;
    event.derived = derived;
    Ok(event)
}

/// The identifying fields of an object, copied out before it is modified.
struct Identity {
    api_version: String,
    kind: String,
    namespace: String,
    name: String,
    uid: String,
    resource_version: String,
}

impl Identity {
    fn of(obj: &Value) -> Result<Self> {
        let text = |pointer: &str| obj.pointer(pointer).and_then(Value::as_str);
        let missing = |field: &'static str| Error::MissingField {
            object: describe(obj),
            field,
        };
        let required = |pointer: &str, field: &'static str| {
            text(pointer)
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| missing(field))
        };
        Ok(Self {
            api_version: required("/apiVersion", "apiVersion")?,
            kind: required("/kind", "kind")?,
            name: required("/metadata/name", "metadata.name")?,
            uid: required("/metadata/uid", "metadata.uid")?,
            resource_version: required("/metadata/resourceVersion", "metadata.resourceVersion")?,
            namespace: text("/metadata/namespace").unwrap_or_default().to_owned(),
        })
    }
}

/// `Kind namespace/name` as far as known; never any other part of the body.
fn describe(obj: &Value) -> String {
    let text = |pointer: &str| obj.pointer(pointer).and_then(Value::as_str).unwrap_or("?");
    let kind = text("/kind");
    let name = text("/metadata/name");
    match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DigestKey {
        DigestKey::from_bytes([3; 32])
    }
    use serde_json::json;

    fn observed() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("valid time")
    }

    fn replica_set() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": "web-abc",
                "namespace": "team-a",
                "uid": "u-1",
                "resourceVersion": "42",
                "ownerReferences": [{"kind": "Deployment", "name": "web", "controller": true}],
                "managedFields": [{
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "fieldsV1": {"f:spec": {"f:replicas": {}}}
                }]
            },
            "spec": {"replicas": 2}
        })
    }

    #[test]
    fn event_carries_key_versions_managers_and_derivation() {
        let event = to_change_event(
            "prod",
            ChangeKind::Modified,
            replica_set(),
            observed(),
            &key(),
        )
        .expect("valid object");
        assert_eq!(event.key.to_string(), "prod/apps/ReplicaSet/team-a/web-abc");
        assert_eq!(event.api_version, "apps/v1");
        assert_eq!(event.uid, "u-1");
        assert_eq!(event.resource_version, "42");
        assert_eq!(event.kind, ChangeKind::Modified);
        assert_eq!(event.observed_at, observed());
        assert!(event.derived);
        assert_eq!(event.managed_fields.len(), 1);
        assert_eq!(event.managed_fields[0].manager, "kube-controller-manager");
        assert_eq!(
            event.managed_fields[0].fields[0].to_string(),
            "spec.replicas"
        );
        assert!(event.object.pointer("/metadata/managedFields").is_none());
        assert_eq!(event.object["spec"], json!({"replicas": 2}));
    }

    #[test]
    fn cluster_scoped_core_objects_have_empty_group_and_namespace() {
        let namespace = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "team-a", "uid": "u-2", "resourceVersion": "7"}
        });
        let event = to_change_event("prod", ChangeKind::Added, namespace, observed(), &key())
            .expect("valid object");
        assert_eq!(event.key.to_string(), "prod/core/Namespace//team-a");
        assert!(!event.derived);
        assert!(event.managed_fields.is_empty());
    }

    #[test]
    fn secrets_leave_as_digests() {
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db", "namespace": "a", "uid": "u-3", "resourceVersion": "9"},
            "stringData": {"password": "hunter2"}
        });
        let event = to_change_event("prod", ChangeKind::Added, secret, observed(), &key())
            .expect("valid object");
        assert_eq!(
            event.object["data"]["password"],
            json!(key().digest(b"hunter2"))
        );
        let text = serde_json::to_string(&event).expect("serializes");
        assert!(!text.contains("hunter2"));
    }

    #[test]
    fn missing_identity_fields_are_named() {
        let mut obj = replica_set();
        obj["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("uid");
        let err = to_change_event("prod", ChangeKind::Added, obj, observed(), &key())
            .expect_err("uid is required");
        assert_eq!(
            err,
            Error::MissingField {
                object: "ReplicaSet team-a/web-abc".into(),
                field: "metadata.uid"
            }
        );
        assert!(err.to_string().contains("metadata.uid"), "{err}");
        let err = to_change_event("prod", ChangeKind::Added, json!([1]), observed(), &key())
            .expect_err("not an object");
        assert!(err.to_string().contains("apiVersion"), "{err}");
    }
}
