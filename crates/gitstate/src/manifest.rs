//! Manifest files: multi-document YAML and JSON into keyed manifests.
//!
//! A file is accepted whole or not at all: one bad document makes the file an
//! error, so the last good state of its objects stays in force.

use std::collections::{HashMap, HashSet};
use std::fmt;

use model::ObjectKey;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Kinds that are cluster-scoped in every Kubernetes cluster, as
/// `(API group, kind)`; the core group is empty.
const BUILTIN_CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("networking.k8s.io", "IngressClass"),
    ("node.k8s.io", "RuntimeClass"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "VolumeAttachment"),
];

/// API group of build-time documents (`Kustomization`, `Component`) that
/// are never applied to a cluster; files may hold them beside manifests.
const KUSTOMIZE_GROUP: &str = "kustomize.config.k8s.io";

/// Which document of a file, for people: `document 2` or
/// `document 2, item 1` (an item of a `kind: List`), both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocRef {
    /// 1-based position of the document in the file.
    pub document: usize,
    /// 1-based position in the `items` of a `kind: List` document.
    pub item: Option<usize>,
}

impl fmt::Display for DocRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(item) = self.item {
            write!(f, ", item {item}")?;
        }
        Ok(())
    }
}

/// Why a manifest file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The file's bytes are not UTF-8.
    #[error("the file is not UTF-8 text; save manifests as UTF-8")]
    NotUtf8,
    /// The YAML does not parse.
    #[error("invalid YAML: {message}")]
    Yaml {
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// The parser's description.
        message: String,
    },
    /// The JSON does not parse.
    #[error("invalid JSON: {message}")]
    Json {
        /// 1-based line of the error.
        line: Option<usize>,
        /// The parser's description.
        message: String,
    },
    /// A document is a scalar or a sequence.
    #[error("{at} is not a mapping; a manifest is a mapping with apiVersion, kind and metadata")]
    NotAnObject {
        /// The document.
        at: DocRef,
    },
    /// A required field is missing, empty or not a string.
    #[error(
        "{at} has no `{field}` string; every manifest needs apiVersion, kind and metadata.name"
    )]
    MissingField {
        /// The document.
        at: DocRef,
        /// The field, as a dotted path.
        field: &'static str,
    },
    /// A `kind: List` document without an `items` sequence.
    #[error("{at} is a List without an `items` sequence of manifests")]
    BadList {
        /// The document.
        at: DocRef,
    },
    /// A namespaced object without a namespace, and no default to fill in.
    #[error(
        "{at} ({key}) has no metadata.namespace and the source has no default namespace; \
         set one in the manifest or in the source"
    )]
    NoNamespace {
        /// The document.
        at: DocRef,
        /// The object's key, with an empty namespace.
        key: Box<ObjectKey>,
    },
    /// One file declares the same object twice.
    #[error("{at} declares {key} again (first in {first}); declare each object once")]
    DeclaredTwice {
        /// The object.
        key: Box<ObjectKey>,
        /// The repeated declaration.
        at: DocRef,
        /// The first declaration.
        first: DocRef,
    },
    /// Another file already declares the object.
    #[error("{key} is already declared in `{other}`; declare each object in one file only")]
    DeclaredElsewhere {
        /// The object.
        key: Box<ObjectKey>,
        /// The file that declares it.
        other: String,
    },
}

impl ManifestError {
    /// The 1-based line of the error, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Yaml { line, .. } | Self::Json { line, .. } => *line,
            _ => None,
        }
    }
}

/// How manifests become object keys: the cluster they belong to, the
/// namespace of namespaced objects that name none, and which kinds are
/// cluster-scoped.
#[derive(Debug, Clone)]
pub struct KeyRules {
    cluster: String,
    default_namespace: String,
    /// Cluster-scoped kinds: kind → API groups.
    cluster_scoped: HashMap<String, HashSet<String>>,
}

impl KeyRules {
    /// Rules for `cluster`, filling in `default_namespace` (may be empty:
    /// then every namespaced manifest must name its namespace), with the
    /// built-in cluster-scoped kinds.
    pub fn new(cluster: impl Into<String>, default_namespace: impl Into<String>) -> Self {
        let rules = Self {
            cluster: cluster.into(),
            default_namespace: default_namespace.into(),
            cluster_scoped: HashMap::new(),
        };
        rules.with_cluster_scoped(BUILTIN_CLUSTER_SCOPED.iter().copied())
    }

    /// Adds cluster-scoped kinds as `(API group, kind)`, e.g. from API
    /// discovery or for custom resources; the core group is `""`.
    pub fn with_cluster_scoped<G, K>(mut self, kinds: impl IntoIterator<Item = (G, K)>) -> Self
    where
        G: Into<String>,
        K: Into<String>,
    {
        for (group, kind) in kinds {
            self.cluster_scoped
                .entry(kind.into())
                .or_default()
                .insert(group.into());
        }
        self
    }

    /// Whether objects of `kind` in API `group` are cluster-scoped.
    pub fn is_cluster_scoped(&self, group: &str, kind: &str) -> bool {
        self.cluster_scoped
            .get(kind)
            .is_some_and(|groups| groups.contains(group))
    }
}

/// One object declared by a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    /// The object's key.
    pub key: ObjectKey,
    /// The manifest, with `metadata.namespace` filled in for namespaced
    /// objects and removed for cluster-scoped ones.
    pub manifest: Value,
    /// Where in the file.
    pub at: DocRef,
}

/// Whether a repository path names a manifest file: a `.yaml`, `.yml` or
/// `.json` file outside hidden directories (`.github/`, `.gitlab-ci.yml`
/// and the like are tool configuration, not cluster objects).
pub fn is_manifest_path(path: &str) -> bool {
    let hidden = path.split('/').any(|part| part.starts_with('.'));
    let Some((_, extension)) = path.rsplit_once('.') else {
        return false;
    };
    let extension = extension.to_ascii_lowercase();
    !hidden && matches!(extension.as_str(), "yaml" | "yml" | "json")
}

/// Parses one manifest file: multi-document YAML, or JSON when `path` ends
/// in `.json`. Empty documents are skipped, `kind: List` items expanded and
/// kustomize build files ignored. Fails on the first bad document.
pub fn parse_file(
    path: &str,
    bytes: &[u8],
    rules: &KeyRules,
) -> Result<Vec<Declared>, ManifestError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8)?;
    let documents = if path.to_ascii_lowercase().ends_with(".json") {
        vec![parse_json(text)?]
    } else {
        parse_yaml(text)?
    };
    let mut declared: Vec<Declared> = Vec::new();
    for (index, document) in documents.into_iter().enumerate() {
        let at = DocRef {
            document: index + 1,
            item: None,
        };
        collect_document(document, at, rules, &mut declared)?;
    }
    reject_repeats(&declared)?;
    Ok(declared)
}

/// The documents of a YAML stream, with merge keys (`<<`) applied.
fn parse_yaml(text: &str) -> Result<Vec<Value>, ManifestError> {
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let mut value = serde_norway::Value::deserialize(document).map_err(yaml_error)?;
        value.apply_merge().map_err(yaml_error)?;
        let value = serde_json::to_value(value).map_err(|err| ManifestError::Yaml {
            line: None,
            message: err.to_string(),
        })?;
        documents.push(value);
    }
    Ok(documents)
}

/// A YAML error with its 1-based line.
fn yaml_error(err: serde_norway::Error) -> ManifestError {
    ManifestError::Yaml {
        line: err.location().map(|location| location.line()),
        message: err.to_string(),
    }
}

/// One JSON document.
fn parse_json(text: &str) -> Result<Value, ManifestError> {
    serde_json::from_str(text).map_err(|err| ManifestError::Json {
        line: (err.line() > 0).then_some(err.line()),
        message: err.to_string(),
    })
}

/// Adds the object(s) of one document: none for an empty document or a
/// kustomize file, each item for a `kind: List`, else the document itself.
fn collect_document(
    document: Value,
    at: DocRef,
    rules: &KeyRules,
    out: &mut Vec<Declared>,
) -> Result<(), ManifestError> {
    let Value::Object(object) = document else {
        return match document {
            Value::Null => Ok(()),
            _ => Err(ManifestError::NotAnObject { at }),
        };
    };
    let api_version = required_str(&object, "apiVersion", at)?;
    if ObjectKey::group_of(api_version) == KUSTOMIZE_GROUP {
        return Ok(());
    }
    if required_str(&object, "kind", at)? != "List" {
        out.push(declare(object, at, rules)?);
        return Ok(());
    }
    let Some(Value::Array(items)) = object.get("items") else {
        return Err(ManifestError::BadList { at });
    };
    for (index, item) in items.iter().enumerate() {
        let at = DocRef {
            item: Some(index + 1),
            ..at
        };
        let Value::Object(item) = item else {
            return Err(ManifestError::NotAnObject { at });
        };
        out.push(declare(item.clone(), at, rules)?);
    }
    Ok(())
}

/// A non-empty string field of `object`.
fn required_str<'a>(
    object: &'a Map<String, Value>,
    field: &'static str,
    at: DocRef,
) -> Result<&'a str, ManifestError> {
    match object.get(field) {
        Some(Value::String(text)) if !text.is_empty() => Ok(text),
        _ => Err(ManifestError::MissingField { at, field }),
    }
}

/// Keys one object and settles its namespace.
fn declare(
    mut object: Map<String, Value>,
    at: DocRef,
    rules: &KeyRules,
) -> Result<Declared, ManifestError> {
    let api_version = required_str(&object, "apiVersion", at)?.to_owned();
    let kind = required_str(&object, "kind", at)?.to_owned();
    let group = ObjectKey::group_of(&api_version).to_owned();
    let missing_name = ManifestError::MissingField {
        at,
        field: "metadata.name",
    };
    let Some(Value::Object(metadata)) = object.get_mut("metadata") else {
        return Err(missing_name);
    };
    let name = match metadata.get("name") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        _ => return Err(missing_name),
    };
    let namespace = if rules.is_cluster_scoped(&group, &kind) {
        metadata.remove("namespace");
        String::new()
    } else {
        settle_namespace(metadata, rules, at)?
    };
    let key = ObjectKey::new(&rules.cluster, group, kind, namespace, name);
    if key.namespace.is_empty() && !rules.is_cluster_scoped(&key.group, &key.kind) {
        return Err(ManifestError::NoNamespace {
            at,
            key: Box::new(key),
        });
    }
    Ok(Declared {
        key,
        manifest: Value::Object(object),
        at,
    })
}

/// The namespace of a namespaced object: its own, else the default, which
/// is then written into the manifest. Empty when neither is set.
fn settle_namespace(
    metadata: &mut Map<String, Value>,
    rules: &KeyRules,
    at: DocRef,
) -> Result<String, ManifestError> {
    match metadata.get("namespace") {
        Some(Value::String(namespace)) if !namespace.is_empty() => return Ok(namespace.clone()),
        None | Some(Value::Null | Value::String(_)) => {}
        Some(_) => {
            return Err(ManifestError::MissingField {
                at,
                field: "metadata.namespace",
            });
        }
    }
    if !rules.default_namespace.is_empty() {
        metadata.insert(
            "namespace".to_owned(),
            Value::String(rules.default_namespace.clone()),
        );
    }
    Ok(rules.default_namespace.clone())
}

/// Fails when two documents of one file declare the same key.
fn reject_repeats(declared: &[Declared]) -> Result<(), ManifestError> {
    let mut seen = std::collections::HashMap::new();
    for object in declared {
        if let Some(first) = seen.insert(&object.key, object.at) {
            return Err(ManifestError::DeclaredTwice {
                key: Box::new(object.key.clone()),
                at: object.at,
                first,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> KeyRules {
        KeyRules::new("prod", "team-a")
    }

    fn keys(declared: &[Declared]) -> Vec<String> {
        declared.iter().map(|d| d.key.to_string()).collect()
    }

    #[test]
    fn multi_document_yaml_declares_each_document() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\n\
                    ---\n# only a comment\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n";
        let declared = parse_file("web.yaml", text.as_bytes(), &rules()).expect("parses");
        assert_eq!(
            keys(&declared),
            [
                "prod/apps/Deployment/shop/web",
                "prod/core/Service/team-a/web"
            ]
        );
        assert_eq!(declared[1].at.document, 3);
    }

    #[test]
    fn default_namespace_is_written_into_the_manifest() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  a: b\n";
        let declared = parse_file("cfg.yml", text.as_bytes(), &rules()).expect("parses");
        assert_eq!(declared[0].key.namespace, "team-a");
        assert_eq!(
            declared[0].manifest["metadata"]["namespace"],
            json!("team-a")
        );
        assert_eq!(declared[0].manifest["data"], json!({"a": "b"}));
    }

    #[test]
    fn cluster_scoped_kinds_have_no_namespace() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n\
                    apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: r\n  namespace: x\n";
        let declared = parse_file("ns.yaml", text.as_bytes(), &rules()).expect("parses");
        assert_eq!(
            keys(&declared),
            [
                "prod/core/Namespace//shop",
                "prod/rbac.authorization.k8s.io/ClusterRole//r"
            ]
        );
        assert!(declared[1].manifest["metadata"].get("namespace").is_none());
    }

    #[test]
    fn extra_cluster_scoped_kinds_can_be_added() {
        let text = "apiVersion: cert-manager.io/v1\nkind: ClusterIssuer\nmetadata:\n  name: le\n";
        let plain = parse_file("i.yaml", text.as_bytes(), &rules()).expect("parses");
        assert_eq!(plain[0].key.namespace, "team-a");
        let rules = rules().with_cluster_scoped([("cert-manager.io", "ClusterIssuer")]);
        let scoped = parse_file("i.yaml", text.as_bytes(), &rules).expect("parses");
        assert_eq!(scoped[0].key.namespace, "");
    }

    #[test]
    fn json_objects_and_list_items_are_declared() {
        let text = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b", "namespace": "x"}}
        ]}"#;
        let declared = parse_file("all.JSON", text.as_bytes(), &rules()).expect("parses");
        assert_eq!(
            keys(&declared),
            ["prod/core/ConfigMap/team-a/a", "prod/core/Secret/x/b"]
        );
        assert_eq!(declared[1].at.item, Some(2));
    }

    #[test]
    fn yaml_syntax_errors_carry_their_line() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels: [x\n";
        let err = parse_file("a.yaml", text.as_bytes(), &rules()).expect_err("bad yaml");
        assert!(matches!(err, ManifestError::Yaml { .. }), "{err}");
        // The parser notices the unclosed sequence where the input ends.
        assert_eq!(err.line(), Some(6), "{err:?}");
    }

    #[test]
    fn yaml_errors_in_later_documents_carry_the_line_in_the_file() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\nkey: : value\n";
        let err = parse_file("a.yaml", text.as_bytes(), &rules()).expect_err("bad yaml");
        assert_eq!(err.line(), Some(6), "{err}");
    }

    #[test]
    fn json_errors_carry_their_line() {
        let err = parse_file("a.json", b"{\n\"a\": 1,\n}", &rules()).expect_err("bad json");
        assert_eq!(err.line(), Some(3), "{err}");
    }

    #[test]
    fn missing_identity_fields_name_the_document() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {}\n";
        let err = parse_file("a.yaml", text.as_bytes(), &rules()).expect_err("no name");
        assert_eq!(
            err,
            ManifestError::MissingField {
                at: DocRef {
                    document: 2,
                    item: None
                },
                field: "metadata.name"
            }
        );
        assert!(err.to_string().contains("document 2"), "{err}");
        let err = parse_file("b.yaml", b"kind: ConfigMap\n", &rules()).expect_err("no apiVersion");
        assert!(err.to_string().contains("`apiVersion`"), "{err}");
    }

    #[test]
    fn scalars_are_not_manifests() {
        let err = parse_file("a.yaml", b"just text\n", &rules()).expect_err("scalar");
        assert!(matches!(err, ManifestError::NotAnObject { .. }), "{err}");
    }

    #[test]
    fn namespaced_objects_need_a_namespace_when_there_is_no_default() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n";
        let err = parse_file("a.yaml", text.as_bytes(), &KeyRules::new("prod", ""))
            .expect_err("no namespace");
        assert!(matches!(err, ManifestError::NoNamespace { .. }), "{err}");
    }

    #[test]
    fn the_same_object_twice_in_one_file_is_an_error() {
        let doc = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n";
        let text = format!("{doc}---\n{doc}");
        let err = parse_file("a.yaml", text.as_bytes(), &rules()).expect_err("repeat");
        assert!(matches!(err, ManifestError::DeclaredTwice { .. }), "{err}");
    }

    #[test]
    fn merge_keys_are_applied() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels: &l {app: web}\n\
                    data:\n  <<: *l\n  extra: x\n";
        let declared = parse_file("a.yaml", text.as_bytes(), &rules()).expect("parses");
        assert_eq!(
            declared[0].manifest["data"],
            json!({"app": "web", "extra": "x"})
        );
    }

    #[test]
    fn kustomize_build_files_are_not_objects() {
        let text = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml]\n";
        let declared = parse_file("kustomization.yaml", text.as_bytes(), &rules()).expect("parses");
        assert!(declared.is_empty());
    }

    #[test]
    fn non_utf8_files_are_rejected() {
        let err = parse_file("a.yaml", &[0xff, 0xfe, 0x00], &rules()).expect_err("binary");
        assert_eq!(err, ManifestError::NotUtf8);
    }

    #[test]
    fn manifest_paths_are_yaml_or_json_outside_hidden_directories() {
        assert!(is_manifest_path("apps/web.yaml"));
        assert!(is_manifest_path("web.YML"));
        assert!(is_manifest_path("a/b/c.json"));
        assert!(!is_manifest_path("README.md"));
        assert!(!is_manifest_path("yaml"));
        assert!(!is_manifest_path(".github/workflows/ci.yaml"));
        assert!(!is_manifest_path(".gitlab-ci.yml"));
    }
}
