//! Inverse patches: RFC 6902 operations that take a live object back to its
//! last known-good state on chosen fields only.
//!
//! Paths name list elements by merge key (`containers[name=web]`); they are
//! resolved to positions in the live object as each operation is planned, so
//! every operation is computed against the object as the operations before
//! it leave it (JSON patch applies operations in order).

use std::collections::BTreeSet;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchError, PatchOperation, RemoveOperation, ReplaceOperation};
use model::{FieldPath, Segment};
use serde_json::{Map, Value};

/// Why no inverse patch could be planned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The field holds a Secret value, which change events carry only as a
    /// digest: restoring it would write the digest.
    #[error(
        "field `{path}` of a Secret holds a redacted value that cannot be restored from the \
         ledger; restore it by hand or declare it in git"
    )]
    SecretValue {
        /// The field.
        path: FieldPath,
    },
    /// An operation did not apply to the object being restored.
    #[error("cannot restore field `{path}`")]
    Apply {
        /// The field.
        path: FieldPath,
        /// What the patch library said.
        #[source]
        source: PatchError,
    },
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Fields of the object root the server owns or that name the object.
const SERVER_OWNED_AT_ROOT: &[&str] = &["apiVersion", "kind", "status"];
/// Fields of `metadata` the server owns or that name the object.
const SERVER_OWNED_IN_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];
/// The annotation `kubectl apply` writes; in a Secret it holds the values.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The operations that take `live` back to `good` on `paths` (and nothing
/// else). Server-owned fields (`status`, `metadata.resourceVersion`,
/// `metadata.managedFields`, ...) are never part of the patch.
pub(crate) fn inverse_patch(
    live: &Value,
    good: &Value,
    paths: &[FieldPath],
) -> Result<Vec<PatchOperation>> {
    let mut wanted = Vec::new();
    for path in paths {
        expand(path, live, good, &mut wanted);
    }
    if (is_secret(live) || is_secret(good))
        && let Some(path) = wanted.iter().find(|p| holds_secret_value(p))
    {
        return Err(Error::SecretValue { path: path.clone() });
    }
    let mut working = live.clone();
    let mut ops = Vec::new();
    // Descending order restores `args[2]` before `args[1]`, so positions
    // named by index do not shift under later operations.
    for path in outermost(wanted).iter().rev() {
        let Some(op) = restore(&working, good, path) else {
            continue;
        };
        json_patch::patch(&mut working, std::slice::from_ref(&op)).map_err(|source| {
            Error::Apply {
                path: path.clone(),
                source,
            }
        })?;
        ops.push(op);
    }
    Ok(ops)
}

/// Adds `path` to `out`, unless the server owns it; a path that contains
/// server-owned fields (the root, `metadata`) is replaced by its children.
fn expand(path: &FieldPath, live: &Value, good: &Value, out: &mut Vec<FieldPath>) {
    if is_server_owned(path) {
        return;
    }
    if !contains_server_owned(path) {
        out.push(path.clone());
        return;
    }
    let names: BTreeSet<&String> = [resolve(live, &path.0), resolve(good, &path.0)]
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(Map::keys)
        .collect();
    for name in names {
        expand(&path.field(name.as_str()), live, good, out);
    }
}

fn is_server_owned(path: &FieldPath) -> bool {
    match path.0.as_slice() {
        [Segment::Field(name), ..] if SERVER_OWNED_AT_ROOT.contains(&name.as_str()) => true,
        [Segment::Field(metadata), Segment::Field(name), ..] => {
            metadata == "metadata" && SERVER_OWNED_IN_METADATA.contains(&name.as_str())
        }
        _ => false,
    }
}

fn contains_server_owned(path: &FieldPath) -> bool {
    match path.0.as_slice() {
        [] => true,
        [Segment::Field(name)] => name == "metadata",
        _ => false,
    }
}

fn is_secret(object: &Value) -> bool {
    object.get("kind").and_then(Value::as_str) == Some("Secret")
}

/// Whether `path` overlaps a field that change events carry redacted.
fn holds_secret_value(path: &FieldPath) -> bool {
    let field = |name: &str| Segment::Field(name.to_owned());
    let redacted = [
        vec![field("data")],
        vec![field("stringData")],
        vec![field("metadata"), field("annotations"), field(LAST_APPLIED)],
    ];
    redacted
        .iter()
        .any(|r| path.0.starts_with(r) || r.starts_with(&path.0))
}

/// The paths sorted, without duplicates and without paths inside another
/// (restoring the outer one restores them).
fn outermost(mut paths: Vec<FieldPath>) -> Vec<FieldPath> {
    paths.sort();
    paths.dedup();
    paths
        .iter()
        .filter(|p| !paths.iter().any(|q| q != *p && p.starts_with(q)))
        .cloned()
        .collect()
}

/// The operation that restores `path` in `doc` to its value in `good`, if
/// they differ.
fn restore(doc: &Value, good: &Value, path: &FieldPath) -> Option<PatchOperation> {
    let target = resolve(good, &path.0);
    let found = locate(doc, &path.0);
    if found.depth == path.0.len() {
        return match target {
            Some(value) if value == found.node => None,
            Some(value) => Some(PatchOperation::Replace(ReplaceOperation {
                path: found.pointer,
                value: value.clone(),
            })),
            None => Some(PatchOperation::Remove(RemoveOperation {
                path: found.pointer,
            })),
        };
    }
    target?;
    add(found, good, &path.0)
}

/// The operation that adds the missing part of `path` below the deepest
/// node `found` that exists, with only the fields `path` names.
fn add(found: Located<'_>, good: &Value, path: &[Segment]) -> Option<PatchOperation> {
    let anchor = resolve(good, &path[..found.depth])?;
    let rest = &path[found.depth..];
    let mut pointer = found.pointer;
    let op = match (rest.first()?, found.node) {
        (Segment::Field(name), Value::Object(_)) => {
            pointer.push_back(name.as_str());
            add_op(pointer, child_value(anchor, rest)?)
        }
        (Segment::Key(_), Value::Array(_)) => {
            pointer.push_back("-");
            add_op(pointer, child_value(anchor, rest)?)
        }
        (Segment::Index(index), Value::Array(items)) => {
            pointer.push_back((*index).min(items.len()));
            add_op(pointer, child_value(anchor, rest)?)
        }
        // The live object has a different shape here: replace the node.
        _ => PatchOperation::Replace(ReplaceOperation {
            path: pointer,
            value: restrict(anchor, rest)?,
        }),
    };
    Some(op)
}

fn add_op(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

/// `value` reduced to the fields along `rest` (the whole value at its end).
fn restrict(value: &Value, rest: &[Segment]) -> Option<Value> {
    let Some(first) = rest.first() else {
        return Some(value.clone());
    };
    let child = child_value(value, rest)?;
    Some(match first {
        Segment::Field(name) => Value::Object(Map::from_iter([(name.clone(), child)])),
        Segment::Key(_) | Segment::Index(_) => Value::Array(vec![child]),
    })
}

/// The child of `value` named by the first segment of `rest`, reduced to the
/// fields along the others; a list element keeps its merge keys.
fn child_value(value: &Value, rest: &[Segment]) -> Option<Value> {
    let (first, below) = rest.split_first()?;
    let (_, child) = step(value, first)?;
    let mut out = restrict(child, below)?;
    if let (Segment::Key(keys), Value::Object(out), Value::Object(element)) =
        (first, &mut out, child)
    {
        for (name, _) in keys {
            if let Some(key) = element.get(name) {
                out.insert(name.clone(), key.clone());
            }
        }
    }
    Some(out)
}

/// How far a path resolves in a document.
#[derive(Debug)]
struct Located<'v> {
    /// The pointer to the deepest node found.
    pointer: PointerBuf,
    /// How many segments resolved.
    depth: usize,
    /// The deepest node found.
    node: &'v Value,
}

fn locate<'v>(doc: &'v Value, path: &[Segment]) -> Located<'v> {
    let mut located = Located {
        pointer: PointerBuf::root(),
        depth: 0,
        node: doc,
    };
    for segment in path {
        let Some((token, child)) = step(located.node, segment) else {
            break;
        };
        located.pointer.push_back(token);
        located.depth += 1;
        located.node = child;
    }
    located
}

/// The value at `path`, if present and not null.
fn resolve<'v>(doc: &'v Value, path: &[Segment]) -> Option<&'v Value> {
    path.iter()
        .try_fold(doc, |node, segment| step(node, segment).map(|(_, v)| v))
        .filter(|v| !v.is_null())
}

/// One step down: the child of `node` that `segment` names and its pointer
/// token; `None` when absent or null.
fn step<'v>(node: &'v Value, segment: &Segment) -> Option<(String, &'v Value)> {
    let (token, child) = match segment {
        Segment::Field(name) => (name.clone(), node.as_object()?.get(name)?),
        Segment::Key(keys) => {
            let items = node.as_array()?;
            let index = find_element(items, keys)?;
            (index.to_string(), items.get(index)?)
        }
        Segment::Index(index) => (index.to_string(), node.as_array()?.get(*index)?),
    };
    (!child.is_null()).then_some((token, child))
}

/// The position of the element whose merge keys are `keys`. A key the
/// apiserver defaults (`protocol`) may be absent from an element: when no
/// element matches exactly, the one element whose present keys match counts.
fn find_element(items: &[Value], keys: &[(String, String)]) -> Option<usize> {
    let exact = |item: &Value| {
        keys.iter()
            .all(|(name, text)| item.get(name).is_some_and(|v| key_is(v, text)))
    };
    if let Some(index) = items.iter().position(exact) {
        return Some(index);
    }
    let loose = |item: &Value| {
        let present: Vec<_> = keys
            .iter()
            .filter_map(|(name, text)| item.get(name).map(|v| (v, text)))
            .collect();
        !present.is_empty() && present.iter().all(|(v, text)| key_is(v, text))
    };
    let mut candidates = items.iter().enumerate().filter(|(_, item)| loose(item));
    let (index, _) = candidates.next()?;
    candidates.next().is_none().then_some(index)
}

/// Whether a merge key's value is written `text` in a path selector.
fn key_is(value: &Value, text: &str) -> bool {
    match value {
        Value::String(value) => value == text,
        Value::Number(number) => number.to_string() == text,
        Value::Bool(flag) => text.parse() == Ok(*flag),
        Value::Null | Value::Array(_) | Value::Object(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(text: &str) -> FieldPath {
        text.parse().expect("test paths are well formed")
    }

    fn inverse(live: &Value, good: &Value, paths: &[&str]) -> Value {
        let paths: Vec<FieldPath> = paths.iter().map(|p| path(p)).collect();
        let ops = inverse_patch(live, good, &paths).expect("a patch is planned");
        serde_json::to_value(ops).expect("operations serialize")
    }

    /// Applies `patch` to `live` and returns the result.
    fn applied(live: &Value, patch: &Value) -> Value {
        let patch: json_patch::Patch =
            serde_json::from_value(patch.clone()).expect("an RFC 6902 patch");
        let mut doc = live.clone();
        json_patch::patch(&mut doc, &patch).expect("the patch applies");
        doc
    }

    fn deployment(env: Value) -> Value {
        json!({"kind": "Deployment", "spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "image": "envoy"},
            {"name": "web", "image": "nginx", "env": env},
        ]}}}})
    }

    #[test]
    fn an_added_label_is_removed() {
        let good = json!({"metadata": {"labels": {"app": "web"}}});
        let live = json!({"metadata": {"labels": {"app": "web", "owner": "mallory"}}});
        let patch = inverse(&live, &good, &["metadata.labels.owner"]);
        assert_eq!(
            patch,
            json!([{"op": "remove", "path": "/metadata/labels/owner"}])
        );
        assert_eq!(applied(&live, &patch), good);
    }

    #[test]
    fn a_changed_env_var_is_replaced_at_its_position_by_merge_key() {
        let good = deployment(json!([
            {"name": "A", "value": "1"},
            {"name": "DEBUG", "value": "0"},
        ]));
        let live = deployment(json!([
            {"name": "A", "value": "1"},
            {"name": "DEBUG", "value": "1"},
        ]));
        let patch = inverse(
            &live,
            &good,
            &["spec.template.spec.containers[name=web].env[name=DEBUG].value"],
        );
        assert_eq!(
            patch,
            json!([{"op": "replace",
                    "path": "/spec/template/spec/containers/1/env/1/value",
                    "value": "0"}])
        );
        assert_eq!(applied(&live, &patch), good);
    }

    #[test]
    fn an_injected_env_var_is_removed_by_merge_key() {
        let good = deployment(json!([{"name": "A", "value": "1"}]));
        let live = deployment(json!([
            {"name": "DEBUG", "value": "1"},
            {"name": "A", "value": "1"},
        ]));
        let patch = inverse(
            &live,
            &good,
            &["spec.template.spec.containers[name=web].env[name=DEBUG]"],
        );
        assert_eq!(
            patch,
            json!([{"op": "remove", "path": "/spec/template/spec/containers/1/env/0"}])
        );
        assert_eq!(applied(&live, &patch), good);
    }

    #[test]
    fn several_removed_elements_of_one_list_leave_the_right_ones() {
        let good = deployment(json!([{"name": "A", "value": "1"}]));
        let live = deployment(json!([
            {"name": "X", "value": "1"},
            {"name": "A", "value": "1"},
            {"name": "Y", "value": "1"},
        ]));
        let env = "spec.template.spec.containers[name=web].env";
        let patch = inverse(
            &live,
            &good,
            &[&format!("{env}[name=X]"), &format!("{env}[name=Y]")],
        );
        assert_eq!(applied(&live, &patch), good);
    }

    #[test]
    fn a_removed_env_var_is_appended_back() {
        let good = deployment(json!([
            {"name": "A", "value": "1"},
            {"name": "B", "value": "2"},
        ]));
        let live = deployment(json!([{"name": "A", "value": "1"}]));
        let patch = inverse(
            &live,
            &good,
            &["spec.template.spec.containers[name=web].env[name=B]"],
        );
        assert_eq!(
            patch,
            json!([{"op": "add", "path": "/spec/template/spec/containers/1/env/-",
                    "value": {"name": "B", "value": "2"}}])
        );
        assert_eq!(applied(&live, &patch), good);
    }

    #[test]
    fn a_removed_annotation_is_added_back() {
        let good = json!({"metadata": {"annotations": {"team": "a", "oncall": "b"}}});
        let live = json!({"metadata": {"annotations": {"team": "a"}}});
        let patch = inverse(&live, &good, &["metadata.annotations.oncall"]);
        assert_eq!(
            patch,
            json!([{"op": "add", "path": "/metadata/annotations/oncall", "value": "b"}])
        );
        assert_eq!(applied(&live, &patch), good);
    }

    #[test]
    fn a_missing_parent_is_added_with_only_the_named_fields() {
        let good = json!({"metadata": {"annotations": {"a": "1", "b": "2", "c": "3"}}});
        let live = json!({"metadata": {}});
        let patch = inverse(
            &live,
            &good,
            &["metadata.annotations.a", "metadata.annotations.b"],
        );
        assert_eq!(
            applied(&live, &patch),
            json!({"metadata": {"annotations": {"a": "1", "b": "2"}}})
        );
    }

    #[test]
    fn a_field_inside_a_removed_container_comes_back_with_the_merge_key() {
        let good = json!({"spec": {"containers": [
            {"name": "web", "image": "nginx", "env": [{"name": "A", "value": "1"}]},
        ]}});
        let live = json!({"spec": {"containers": []}});
        let patch = inverse(&live, &good, &["spec.containers[name=web].env[name=A]"]);
        assert_eq!(
            patch,
            json!([{"op": "add", "path": "/spec/containers/-",
                    "value": {"name": "web", "env": [{"name": "A", "value": "1"}]}}])
        );
    }

    #[test]
    fn keys_with_slash_and_tilde_are_escaped() {
        let good = json!({"metadata": {"labels": {"app": "web"}, "annotations": {"a~b": "1"}}});
        let live = json!({"metadata": {
            "labels": {"app": "web", "app.kubernetes.io/owner": "x"},
            "annotations": {"a~b": "2"},
        }});
        let patch = inverse(
            &live,
            &good,
            &[
                r#"metadata.labels["app.kubernetes.io/owner"]"#,
                r#"metadata.annotations["a~b"]"#,
            ],
        );
        assert_eq!(
            patch,
            json!([
                {"op": "remove", "path": "/metadata/labels/app.kubernetes.io~1owner"},
                {"op": "replace", "path": "/metadata/annotations/a~0b", "value": "1"},
            ])
        );
        assert_eq!(applied(&live, &patch), good);
    }

    #[test]
    fn server_owned_fields_are_never_patched() {
        let good = json!({"metadata": {"resourceVersion": "1", "labels": {"a": "1"}},
                          "status": {"ready": 1}});
        let live = json!({"metadata": {"resourceVersion": "9", "labels": {"a": "2"},
                                       "managedFields": [{"manager": "x"}]},
                          "status": {"ready": 0}});
        let patch = inverse(
            &live,
            &good,
            &[
                "metadata.resourceVersion",
                "metadata.managedFields",
                "status.ready",
                "metadata",
            ],
        );
        assert_eq!(
            patch,
            json!([{"op": "replace", "path": "/metadata/labels", "value": {"a": "1"}}])
        );
    }

    #[test]
    fn ports_match_when_the_defaulted_protocol_is_absent() {
        let good = json!({"spec": {"ports": [{"containerPort": 80, "name": "http"}]}});
        let live = json!({"spec": {"ports": [{"containerPort": 80, "name": "evil"}]}});
        let patch = inverse(
            &live,
            &good,
            &["spec.ports[containerPort=80,protocol=TCP].name"],
        );
        assert_eq!(
            patch,
            json!([{"op": "replace", "path": "/spec/ports/0/name", "value": "http"}])
        );
    }

    #[test]
    fn unchanged_and_absent_fields_need_no_operation() {
        let good = json!({"metadata": {"labels": {"a": "1"}}});
        let patch = inverse(&good, &good, &["metadata.labels.a", "metadata.labels.zz"]);
        assert_eq!(patch, json!([]));
    }

    #[test]
    fn redacted_secret_values_are_not_restored() {
        let good = json!({"kind": "Secret", "data": {"token": "sha256:aa"}});
        let live = json!({"kind": "Secret", "data": {"token": "sha256:bb"}});
        let err = inverse_patch(&live, &good, &[path("data.token")]).expect_err("refused");
        assert!(matches!(err, Error::SecretValue { .. }), "{err}");
        assert!(err.to_string().contains("data.token"), "{err}");
        // Labels of a Secret are ordinary fields.
        let good = json!({"kind": "Secret", "metadata": {"labels": {}}});
        let live = json!({"kind": "Secret", "metadata": {"labels": {"x": "1"}}});
        assert_eq!(
            inverse(&live, &good, &["metadata.labels.x"]),
            json!([{"op": "remove", "path": "/metadata/labels/x"}])
        );
    }
}
