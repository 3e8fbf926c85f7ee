//! Churn: updates that change nothing anyone declared or cares about.
//!
//! Two states of an object are churn of each other when they are equal
//! after ignoring:
//! - `status` (written by controllers through the status subresource);
//! - `metadata.resourceVersion` (changes on every write);
//! - `metadata.managedFields` (timestamps bump on no-op writes);
//! - `metadata.generation` (changes only together with `spec`, which is
//!   compared anyway);
//! - the controller bookkeeping annotations in [`CHURN_ANNOTATIONS`] (an
//!   annotation map left empty by that counts as absent).
//!
//! The watcher keeps only a [`content_digest`] per object, not the object, so
//! the filter costs 32 bytes per watched object.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Annotations controllers rewrite as bookkeeping, never as intent:
/// - `deployment.kubernetes.io/revision`: the Deployment controller's
///   rollout counter, bumped after a template change;
/// - `control-plane.alpha.kubernetes.io/leader`: leader-election record on
///   Endpoints and ConfigMaps, renewed every few seconds;
/// - `endpoints.kubernetes.io/last-change-trigger-time`: the Endpoints
///   controller's timestamp.
pub const CHURN_ANNOTATIONS: &[&str] = &[
    "deployment.kubernetes.io/revision",
    "control-plane.alpha.kubernetes.io/leader",
    "endpoints.kubernetes.io/last-change-trigger-time",
];

const CHURN_METADATA: &[&str] = &["resourceVersion", "managedFields", "generation"];

/// A SHA-256 digest of an object's non-churn content.
pub type ContentDigest = [u8; 32];

/// Whether `current` differs from `previous` only by churn (see the module
/// documentation for what counts).
pub fn is_churn(previous: &Value, current: &Value) -> bool {
    content_digest(previous) == content_digest(current)
}

/// The digest of `obj` with churn left out; equal digests mean the two
/// states differ only by churn. Independent of map key order.
pub fn content_digest(obj: &Value) -> ContentDigest {
    let mut hasher = Sha256::new();
    match obj.as_object() {
        Some(top) => {
            let fields = sorted(top)
                .into_iter()
                .filter(|(name, _)| name.as_str() != "status");
            hash_map_entries(&mut hasher, fields, |name, value, hasher| {
                if name == "metadata" {
                    hash_metadata(hasher, value);
                } else {
                    hash_value(hasher, value);
                }
            });
        }
        None => hash_value(&mut hasher, obj),
    }
    hasher.finalize().into()
}

/// Whether a controller owns `obj` (`ownerReferences[].controller: true`):
/// ReplicaSets of a Deployment, Pods of a ReplicaSet, EndpointSlices.
pub fn is_derived(obj: &Value) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|owners| {
            owners
                .iter()
                .any(|owner| owner.get("controller").and_then(Value::as_bool) == Some(true))
        })
}

fn hash_metadata(hasher: &mut Sha256, metadata: &Value) {
    let Some(metadata) = metadata.as_object() else {
        return hash_value(hasher, metadata);
    };
    let fields = sorted(metadata)
        .into_iter()
        .filter(|(name, value)| match name.as_str() {
            "annotations" => value
                .as_object()
                .is_none_or(|map| map.keys().any(|name| !is_churn_annotation(name))),
            name => !CHURN_METADATA.contains(&name),
        });
    hash_map_entries(hasher, fields, |name, value, hasher| {
        match (name, value.as_object()) {
            ("annotations", Some(annotations)) => {
                let kept = sorted(annotations)
                    .into_iter()
                    .filter(|(name, _)| !is_churn_annotation(name));
                hash_map_entries(hasher, kept, |_, value, hasher| hash_value(hasher, value));
            }
            _ => hash_value(hasher, value),
        }
    });
}

fn is_churn_annotation(name: &str) -> bool {
    CHURN_ANNOTATIONS.contains(&name)
}

fn sorted(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries
}

/// Hashes a map given as sorted entries, each value through `each`.
/// Counts and lengths are written before contents, so no two values share an
/// encoding.
fn hash_map_entries<'a>(
    hasher: &mut Sha256,
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
    mut each: impl FnMut(&str, &Value, &mut Sha256),
) {
    let entries: Vec<_> = entries.collect();
    hasher.update(b"{");
    hasher.update((entries.len() as u64).to_le_bytes());
    for (name, value) in entries {
        hash_str(hasher, name);
        each(name, value, hasher);
    }
}

fn hash_str(hasher: &mut Sha256, text: &str) {
    hasher.update((text.len() as u64).to_le_bytes());
    hasher.update(text.as_bytes());
}

fn hash_value(hasher: &mut Sha256, value: &Value) {
    match value {
        Value::Null => hasher.update(b"n"),
        Value::Bool(true) => hasher.update(b"t"),
        Value::Bool(false) => hasher.update(b"f"),
        Value::Number(number) => {
            hasher.update(b"#");
            hash_str(hasher, &number.to_string());
        }
        Value::String(text) => {
            hasher.update(b"s");
            hash_str(hasher, text);
        }
        Value::Array(items) => {
            hasher.update(b"[");
            hasher.update((items.len() as u64).to_le_bytes());
            for item in items {
                hash_value(hasher, item);
            }
        }
        Value::Object(map) => {
            hash_map_entries(hasher, sorted(map).into_iter(), |_, value, hasher| {
                hash_value(hasher, value)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "team-a",
                "resourceVersion": "100",
                "generation": 3,
                "labels": {"app": "web"},
                "annotations": {"deployment.kubernetes.io/revision": "3", "owner": "team-a"},
                "managedFields": [{"manager": "kubectl", "time": "2026-01-01T00:00:00Z"}],
            },
            "spec": {"replicas": 2},
            "status": {"readyReplicas": 1},
        })
    }

    fn edited(edit: impl FnOnce(&mut Value)) -> Value {
        let mut obj = deployment();
        edit(&mut obj);
        obj
    }

    #[test]
    fn status_resource_version_and_managed_fields_changes_are_churn() {
        let current = edited(|d| {
            d["status"]["readyReplicas"] = json!(2);
            d["metadata"]["resourceVersion"] = json!("101");
            d["metadata"]["managedFields"][0]["time"] = json!("2026-01-01T00:00:09Z");
            d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!("4");
            d["metadata"]["generation"] = json!(4);
        });
        assert!(is_churn(&deployment(), &current));
    }

    #[test]
    fn first_revision_annotation_on_an_object_without_annotations_is_churn() {
        let created = json!({"metadata": {"name": "web"}, "spec": {"replicas": 1}});
        let annotated = json!({
            "metadata": {"name": "web", "annotations": {"deployment.kubernetes.io/revision": "1"}},
            "spec": {"replicas": 1},
        });
        assert!(is_churn(&created, &annotated));
        let other = json!({
            "metadata": {"name": "web", "annotations": {"owner": "x"}},
            "spec": {"replicas": 1},
        });
        assert!(!is_churn(&created, &other));
        let odd = json!({"metadata": {"name": "web", "annotations": "x"}, "spec": {"replicas": 1}});
        assert!(!is_churn(&created, &odd));
    }

    #[test]
    fn spec_label_and_annotation_changes_are_not_churn() {
        let changes: [fn(&mut Value); 5] = [
            |d| d["spec"]["replicas"] = json!(3),
            |d| d["metadata"]["labels"]["tier"] = json!("front"),
            |d| d["metadata"]["annotations"]["owner"] = json!("mallory"),
            |d| d["metadata"]["finalizers"] = json!(["x"]),
            |d| d["data"] = json!({"k": "v"}),
        ];
        for change in changes {
            let current = edited(change);
            assert!(!is_churn(&deployment(), &current), "{current}");
        }
    }

    #[test]
    fn digest_ignores_key_order_but_not_list_order() {
        let a = json!({"spec": {"a": 1, "b": [1, 2]}, "metadata": {"x": "1", "y": "2"}});
        let b = json!({"metadata": {"y": "2", "x": "1"}, "spec": {"b": [1, 2], "a": 1}});
        let c = json!({"metadata": {"y": "2", "x": "1"}, "spec": {"b": [2, 1], "a": 1}});
        assert_eq!(content_digest(&a), content_digest(&b));
        assert_ne!(content_digest(&a), content_digest(&c));
    }

    #[test]
    fn digest_tells_types_and_boundaries_apart() {
        let pairs = [
            (json!({"a": "1"}), json!({"a": 1})),
            (json!({"a": null}), json!({"a": false})),
            (json!({"ab": "c"}), json!({"a": "bc"})),
            (json!({"a": [["x"], []]}), json!({"a": [[], ["x"]]})),
            (json!({"a": {}}), json!({"a": []})),
        ];
        for (left, right) in pairs {
            assert_ne!(
                content_digest(&left),
                content_digest(&right),
                "{left} vs {right}"
            );
        }
    }

    #[test]
    fn status_is_ignored_only_at_the_top_level() {
        let a = json!({"spec": {"status": "on"}});
        let b = json!({"spec": {"status": "off"}});
        assert!(!is_churn(&a, &b));
    }

    #[test]
    fn controller_owned_objects_are_derived() {
        let owned = json!({"metadata": {"ownerReferences": [
            {"kind": "Deployment", "name": "web", "controller": true}
        ]}});
        let referenced = json!({"metadata": {"ownerReferences": [
            {"kind": "ConfigMap", "name": "x"}, {"kind": "Y", "name": "y", "controller": false}
        ]}});
        assert!(is_derived(&owned));
        assert!(!is_derived(&referenced));
        assert!(!is_derived(&deployment()));
    }
}
