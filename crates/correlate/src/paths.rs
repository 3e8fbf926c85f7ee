//! Field paths while walking objects, and matching of paths against
//! prefixes (ignored paths, owned fields).

use model::{FieldPath, Segment};
use serde_json::Value;

use crate::lists::{MapKey, key_text};

/// One step of a path under construction, borrowed from the values walked,
/// so that walking allocates nothing until a difference is found.
#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    Field(&'a str),
    Key(&'a Value, &'a [MapKey]),
}

/// The path from the object's root to the value being walked.
#[derive(Debug, Default)]
pub(crate) struct Trail<'a> {
    steps: Vec<Step<'a>>,
}

/// Fields that change on every write or belong to the server, never compared.
const CHURN_AT_ROOT: &[&str] = &["apiVersion", "kind", "status"];
const CHURN_IN_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
];
const CHURN_IN_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
];

impl<'a> Trail<'a> {
    pub(crate) fn push_field(&mut self, name: &'a str) {
        self.steps.push(Step::Field(name));
    }

    pub(crate) fn push_key(&mut self, element: &'a Value, keys: &'a [MapKey]) {
        self.steps.push(Step::Key(element, keys));
    }

    pub(crate) fn pop(&mut self) {
        self.steps.pop();
    }

    /// The field names from the root, list selectors skipped.
    pub(crate) fn fields(&self) -> impl DoubleEndedIterator<Item = &'a str> + Clone + '_ {
        self.steps.iter().filter_map(|step| match step {
            Step::Field(name) => Some(*name),
            Step::Key(..) => None,
        })
    }

    /// Whether field `name` under the current position is churn: server-owned
    /// metadata, `status`, the last-applied and revision annotations.
    pub(crate) fn is_churn(&self, name: &str) -> bool {
        match self.steps.as_slice() {
            [] => CHURN_AT_ROOT.contains(&name),
            [Step::Field("metadata")] => CHURN_IN_METADATA.contains(&name),
            [Step::Field("metadata"), Step::Field("annotations")] => {
                CHURN_IN_ANNOTATIONS.contains(&name)
            }
            _ => false,
        }
    }

    /// The current position as a [`FieldPath`].
    pub(crate) fn to_path(&self) -> FieldPath {
        FieldPath(
            self.steps
                .iter()
                .map(|step| match step {
                    Step::Field(name) => Segment::Field((*name).to_owned()),
                    Step::Key(element, keys) => Segment::Key(
                        keys.iter()
                            .map(|key| (key.name.clone(), key_text(element, key)))
                            .collect(),
                    ),
                })
                .collect(),
        )
    }
}

/// Whether `path` equals `prefix` or lies inside it. Merge-key selectors match
/// whatever order their keys are written in.
pub fn is_within(path: &FieldPath, prefix: &FieldPath) -> bool {
    path.0.len() >= prefix.0.len()
        && path
            .0
            .iter()
            .zip(&prefix.0)
            .all(|(a, b)| segments_match(a, b))
}

/// Whether one path lies inside the other.
pub(crate) fn overlaps(a: &FieldPath, b: &FieldPath) -> bool {
    is_within(a, b) || is_within(b, a)
}

/// Whether `manifest` has a value at `path` (list elements chosen by their
/// merge keys, compared as text: `containerPort=8080` matches `8080`).
pub(crate) fn declares(manifest: &Value, path: &FieldPath) -> bool {
    let mut here = manifest;
    for segment in &path.0 {
        let next = match (segment, here) {
            (Segment::Field(name), Value::Object(map)) => map.get(name),
            (Segment::Index(i), Value::Array(items)) => items.get(*i),
            (Segment::Key(keys), Value::Array(items)) => items.iter().find(|item| {
                keys.iter().all(|(k, v)| {
                    item.get(k).is_some_and(|value| match value {
                        Value::String(text) => text == v,
                        Value::Number(number) => {
                            v.parse::<serde_json::Number>().ok().as_ref() == Some(number)
                        }
                        Value::Bool(flag) => v.parse::<bool>().ok() == Some(*flag),
                        _ => false,
                    })
                })
            }),
            _ => None,
        };
        match next {
            Some(value) => here = value,
            None => return false,
        }
    }
    true
}

fn segments_match(a: &Segment, b: &Segment) -> bool {
    match (a, b) {
        (Segment::Key(x), Segment::Key(y)) => {
            x.len() == y.len() && x.iter().all(|pair| y.contains(pair))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(text: &str) -> FieldPath {
        text.parse().expect("test paths are well formed")
    }

    #[test]
    fn a_manifest_declares_paths_through_maps_and_merge_keys() {
        let manifest = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "env": [{"name": "DEBUG", "value": "1"}],
             "ports": [{"containerPort": 8080, "protocol": "TCP"}]}
        ]}}}});
        let declared = |p: &str| declares(&manifest, &path(p));
        assert!(declared(
            "spec.template.spec.containers[name=web].env[name=DEBUG]"
        ));
        assert!(declared(
            "spec.template.spec.containers[name=web].ports[containerPort=8080,protocol=TCP]"
        ));
        assert!(!declared(
            "spec.template.spec.containers[name=web].env[name=OTHER]"
        ));
        assert!(!declared("spec.replicas"));
    }

    #[test]
    fn paths_lie_within_their_prefixes_whatever_the_key_order() {
        let port = path("spec.ports[protocol=TCP,port=80].targetPort");
        assert!(is_within(&port, &path("spec.ports[port=80,protocol=TCP]")));
        assert!(is_within(&port, &path("spec")));
        assert!(is_within(&port, &port));
        assert!(!is_within(&path("spec"), &port));
        assert!(!is_within(&port, &path("spec.ports[port=81,protocol=TCP]")));
        assert!(overlaps(&path("spec"), &port));
        assert!(!overlaps(&path("metadata"), &port));
    }

    #[test]
    fn trail_builds_paths_with_merge_keys_and_defaults() {
        let element = json!({"containerPort": 80});
        let keys = [
            MapKey::new("containerPort"),
            MapKey::new("protocol").with_default("TCP"),
        ];
        let mut trail = Trail::default();
        trail.push_field("spec");
        trail.push_field("ports");
        trail.push_key(&element, &keys);
        trail.push_field("name");
        assert_eq!(
            trail.to_path().to_string(),
            "spec.ports[containerPort=80,protocol=TCP].name"
        );
        assert_eq!(
            trail.fields().collect::<Vec<_>>(),
            ["spec", "ports", "name"]
        );
        trail.pop();
        trail.pop();
        assert_eq!(trail.to_path().to_string(), "spec.ports");
    }

    #[test]
    fn churn_is_recognized_only_where_it_lives() {
        let mut trail = Trail::default();
        assert!(trail.is_churn("status"));
        assert!(!trail.is_churn("spec"));
        trail.push_field("metadata");
        assert!(trail.is_churn("resourceVersion"));
        assert!(trail.is_churn("managedFields"));
        assert!(!trail.is_churn("labels"));
        trail.push_field("annotations");
        assert!(trail.is_churn("kubectl.kubernetes.io/last-applied-configuration"));
        assert!(!trail.is_churn("team"));
        trail.pop();
        trail.pop();
        trail.push_field("spec");
        assert!(!trail.is_churn("status"));
    }
}
