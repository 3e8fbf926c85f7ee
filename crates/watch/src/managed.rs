//! `metadata.managedFields`: who owns which fields, summarized as leaf paths.
//!
//! A `fieldsV1` entry is a tree whose keys name path elements the way
//! server-side apply does: `f:<name>` a map field, `k:<json object>` a list
//! element chosen by its merge keys, `v:<json>` an element of a set of
//! values, `i:<n>` a list position, and `.` the node itself. Each leaf of the
//! tree becomes one [`FieldPath`].

use chrono::{DateTime, Utc};
use model::{FieldPath, ManagedField, Segment};
use serde_json::{Map, Value};

/// The merge-key name a set element (`v:` in `fieldsV1`) is written with:
/// `metadata.finalizers[value=example.com/protect]`.
pub const SET_ELEMENT_KEY: &str = "value";

/// Summarizes every `metadata.managedFields` entry of `obj`: manager,
/// operation, time, subresource and the leaf paths it owns (sorted).
///
/// Lenient by design: an entry without a manager or operation gets an empty
/// string, an unparsable time is `None`, and a path element this function
/// does not understand is kept as a plain field named by the raw element, so
/// nothing is lost and nothing panics. Objects without managed fields give an
/// empty list.
pub fn managed_fields_summary(obj: &Value) -> Vec<ManagedField> {
    let Some(entries) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    entries.iter().map(summarize_entry).collect()
}

/// Removes `metadata.managedFields` from `obj`, if present.
pub fn strip_managed_fields(obj: &mut Value) {
    if let Some(metadata) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
}

fn summarize_entry(entry: &Value) -> ManagedField {
    let text = |name: &str| entry.get(name).and_then(Value::as_str);
    let mut fields = Vec::new();
    if let Some(tree) = entry.get("fieldsV1").and_then(Value::as_object) {
        collect_leaves(&mut Vec::new(), tree, &mut fields);
    }
    fields.sort();
    fields.dedup();
    ManagedField {
        manager: text("manager").unwrap_or_default().to_owned(),
        operation: text("operation").unwrap_or_default().to_owned(),
        time: text("time")
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
        subresource: text("subresource")
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        fields,
    }
}

/// Walks `tree`, keeping the path to it in `at` (pushed and popped in place,
/// so only leaves allocate a path of their own).
fn collect_leaves(at: &mut Vec<Segment>, tree: &Map<String, Value>, out: &mut Vec<FieldPath>) {
    for (element, child) in tree {
        if element == "." {
            out.push(FieldPath(at.clone()));
            continue;
        }
        at.push(segment(element));
        match child.as_object() {
            Some(children) if !children.is_empty() => collect_leaves(at, children, out),
            _ => out.push(FieldPath(at.clone())),
        }
        at.pop();
    }
}

/// The path segment of one `fieldsV1` element.
fn segment(element: &str) -> Segment {
    let parsed = match element.split_at_checked(2) {
        Some(("f:", name)) => Some(Segment::Field(name.to_owned())),
        Some(("k:", keys)) => merge_keys(keys).map(Segment::Key),
        Some(("v:", value)) => serde_json::from_str::<Value>(value)
            .ok()
            .map(|value| Segment::Key(vec![(SET_ELEMENT_KEY.to_owned(), scalar_text(&value))])),
        Some(("i:", index)) => index.parse().ok().map(Segment::Index),
        _ => None,
    };
    parsed.unwrap_or_else(|| Segment::Field(element.to_owned()))
}

/// The entries of a `k:` element's JSON object, values as text.
fn merge_keys(json: &str) -> Option<Vec<(String, String)>> {
    let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(json) else {
        return None;
    };
    Some(
        keys.iter()
            .map(|(name, value)| (name.clone(), scalar_text(value)))
            .collect(),
    )
}

/// A string as itself, anything else as its JSON text (`80`, `true`).
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment_with_managed_fields() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "managedFields": [
                    {
                        "manager": "kubectl-client-side-apply",
                        "operation": "Update",
                        "apiVersion": "apps/v1",
                        "time": "2026-01-02T03:04:05Z",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {
                            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                            "f:spec": {
                                "f:replicas": {},
                                "f:template": {"f:spec": {"f:containers": {
                                    "k:{\"name\":\"web\"}": {
                                        ".": {},
                                        "f:image": {},
                                        "f:name": {},
                                        "f:ports": {
                                            "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                                                ".": {},
                                                "f:containerPort": {}
                                            }
                                        }
                                    }
                                }}}
                            }
                        }
                    },
                    {
                        "manager": "kube-controller-manager",
                        "operation": "Update",
                        "subresource": "status",
                        "time": "2026-01-02T03:04:06Z",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:status": {"f:replicas": {}}}
                    }
                ]
            },
            "spec": {"replicas": 2}
        })
    }

    fn paths(field: &ManagedField) -> Vec<String> {
        field.fields.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn fields_v1_flattens_into_leaf_paths_with_merge_keys() {
        let summary = managed_fields_summary(&deployment_with_managed_fields());
        assert_eq!(summary.len(), 2);
        let apply = &summary[0];
        assert_eq!(apply.manager, "kubectl-client-side-apply");
        assert_eq!(apply.operation, "Update");
        assert_eq!(apply.subresource, None);
        assert_eq!(apply.time, DateTime::from_timestamp(1_767_323_045, 0));
        let mut expected = vec![
            "metadata.labels",
            "metadata.labels.app",
            "spec.replicas",
            "spec.template.spec.containers[name=web]",
            "spec.template.spec.containers[name=web].image",
            "spec.template.spec.containers[name=web].name",
            "spec.template.spec.containers[name=web].ports[containerPort=80,protocol=TCP]",
            "spec.template.spec.containers[name=web].ports[containerPort=80,protocol=TCP].containerPort",
        ];
        expected.sort();
        let mut got = paths(apply);
        got.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn subresource_entries_keep_their_subresource() {
        let summary = managed_fields_summary(&deployment_with_managed_fields());
        let status = &summary[1];
        assert_eq!(status.manager, "kube-controller-manager");
        assert_eq!(status.subresource.as_deref(), Some("status"));
        assert_eq!(paths(status), vec!["status.replicas"]);
    }

    #[test]
    fn set_elements_and_indexes_become_segments_that_round_trip() {
        let obj = json!({"metadata": {"managedFields": [{
            "manager": "m",
            "operation": "Apply",
            "fieldsV1": {
                "f:metadata": {"f:finalizers": {"v:\"example.com/protect\"": {}}},
                "f:spec": {"f:args": {"i:2": {}}, "f:ports": {"v:8080": {}}}
            }
        }]}});
        let summary = managed_fields_summary(&obj);
        let got = paths(&summary[0]);
        assert_eq!(
            got,
            vec![
                r#"metadata.finalizers[value="example.com/protect"]"#,
                "spec.args[2]",
                "spec.ports[value=8080]",
            ]
        );
        for text in got {
            let parsed: FieldPath = text.parse().expect("summary paths parse back");
            assert_eq!(parsed.to_string(), text);
        }
    }

    #[test]
    fn malformed_elements_are_kept_raw_instead_of_panicking() {
        let obj = json!({"metadata": {"managedFields": [
            {"manager": "m", "operation": "Update", "time": "yesterday",
             "fieldsV1": {"k:{broken": {}, "i:minus": {}, "weird": {}}},
            {"fieldsV1": "not an object"},
            "not an entry"
        ]}});
        let summary = managed_fields_summary(&obj);
        assert_eq!(summary.len(), 3);
        assert_eq!(summary[0].time, None);
        assert_eq!(
            paths(&summary[0]),
            vec![r#"["i:minus"]"#, r#"["k:{broken"]"#, "weird"]
        );
        assert_eq!(summary[1].manager, "");
        assert!(summary[1].fields.is_empty());
        assert!(summary[2].fields.is_empty());
    }

    #[test]
    fn objects_without_managed_fields_have_an_empty_summary() {
        assert!(managed_fields_summary(&json!({"metadata": {}})).is_empty());
        assert!(managed_fields_summary(&json!("scalar")).is_empty());
    }

    #[test]
    fn strip_removes_only_managed_fields() {
        let mut obj = deployment_with_managed_fields();
        strip_managed_fields(&mut obj);
        assert_eq!(obj["metadata"], json!({"name": "web"}));
        assert_eq!(obj["spec"], json!({"replicas": 2}));
        let mut scalar = json!(1);
        strip_managed_fields(&mut scalar);
        assert_eq!(scalar, json!(1));
    }
}
