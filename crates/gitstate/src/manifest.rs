//! Manifest files: multi-document YAML and JSON into keyed manifests, read
//! as kubectl reads them.
//!
//! ```text
//! bytes ──kubectl's stream reader──▶ documents (JSON objects, or YAML parts: yaml.rs)
//!       ──List items expanded, metadata checked──▶ Declared { key, manifest, at: document + line }
//! ```
//!
//! Like kubectl, the content decides the format, not the file name: a
//! stream whose first non-blank character is `{` is read as JSON objects
//! (and, if that fails before a second object, the rest as YAML); anything
//! else is YAML. Numbers end up as kubectl holds them (`1.0` is `1`).
//!
//! A file is accepted whole or not at all: one bad document makes the file an
//! error, so the last good state of its objects stays in force.

use std::collections::{HashMap, HashSet};
use std::fmt;

use model::ObjectKey;
use serde_json::{Map, Value};

use crate::yaml::{self, Document};

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

/// How far into the stream kubectl looks for the `{` that makes it JSON.
const JSON_SNIFF_BYTES: usize = 4096;

/// Which document of a file, for people: `document 2 (line 14)` or
/// `document 2, item 1 (line 20)` (an item of a `kind: List`), all 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocRef {
    /// 1-based position of the document in the file; documents are the
    /// parts between `---` lines (empty ones count) or the objects of a
    /// JSON stream.
    pub document: usize,
    /// 1-based position in the `items` of a `kind: List` document.
    pub item: Option<usize>,
    /// 1-based line in the file where the document's content starts, or
    /// where the item starts when it is known.
    pub line: usize,
}

impl fmt::Display for DocRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(item) = self.item {
            write!(f, ", item {item}")?;
        }
        write!(f, " (line {})", self.line)
    }
}

/// Why a manifest file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The file's bytes are not UTF-8.
    #[error("the file is not UTF-8 text; save manifests as UTF-8")]
    NotUtf8,
    /// The YAML does not parse, or holds something kubectl refuses (a
    /// value that does not fit its tag, a null key, `.inf`, an anchor bomb).
    #[error("invalid YAML{}: {message}", at_line(*.line))]
    Yaml {
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// The parser's description.
        message: String,
    },
    /// The JSON does not parse.
    #[error("invalid JSON{}: {message}", at_line(*.line))]
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
    /// A `kind: List` document without an `items` sequence, or a list
    /// inside a list.
    #[error("{at} is a List without an `items` sequence of manifests, or a List in a List")]
    BadList {
        /// The document.
        at: DocRef,
    },
    /// A metadata field of the wrong type: kubectl decodes `metadata` into
    /// its typed form and refuses the file.
    #[error(
        "{at}: `{field}` must be {expected}, as kubectl reads metadata; \
         quote values such as yes, on or 8080 that YAML reads as booleans or numbers"
    )]
    BadMetadata {
        /// The document.
        at: DocRef,
        /// The field, as a dotted path.
        field: String,
        /// What it must be.
        expected: &'static str,
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
    /// The 1-based line of the error, when known: where the syntax breaks,
    /// or where the document (or List item) in question starts.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Yaml { line, .. } | Self::Json { line, .. } => *line,
            Self::NotAnObject { at }
            | Self::MissingField { at, .. }
            | Self::BadList { at }
            | Self::BadMetadata { at, .. }
            | Self::NoNamespace { at, .. }
            | Self::DeclaredTwice { at, .. } => Some(at.line),
            Self::NotUtf8 | Self::DeclaredElsewhere { .. } => None,
        }
    }
}

/// ` at line N` when the line is known.
fn at_line(line: Option<usize>) -> String {
    line.map(|line| format!(" at line {line}"))
        .unwrap_or_default()
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

/// Parses one manifest file as kubectl reads it: multi-document YAML, or a
/// stream of JSON objects when the content starts with `{` (whatever the
/// file is called). Empty documents are skipped, the items of a `kind: List`
/// (or a typed list such as `ConfigMapList`) expanded and kustomize build
/// files ignored. Fails on the first bad document.
pub fn parse_file(
    _path: &str,
    bytes: &[u8],
    rules: &KeyRules,
) -> Result<Vec<Declared>, ManifestError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8)?;
    let mut declared: Vec<Declared> = Vec::new();
    for (index, document) in read_documents(text)?.into_iter().enumerate() {
        collect_document(document, index + 1, rules, &mut declared)?;
    }
    reject_repeats(&declared)?;
    Ok(declared)
}

/// The documents of a stream, as kubectl's YAML-or-JSON decoder splits it.
fn read_documents(text: &str) -> Result<Vec<Document>, ManifestError> {
    if looks_like_json(text) {
        read_json_stream(text)
    } else {
        yaml::documents(text, 1).map_err(yaml_error)
    }
}

/// Whether kubectl reads the stream as JSON: its first non-blank
/// character, within the first 4096 bytes, is `{`.
fn looks_like_json(text: &str) -> bool {
    text.char_indices()
        .find(|(_, c)| !c.is_whitespace())
        .is_some_and(|(at, c)| c == '{' && at < JSON_SNIFF_BYTES)
}

/// A stream of JSON objects. Like kubectl, when a value fails to parse
/// before the second one was read, the rest of the stream is read as YAML
/// (so a trailing comma is accepted); when that fails too, the JSON error
/// is reported.
fn read_json_stream(text: &str) -> Result<Vec<Document>, ManifestError> {
    let mut documents = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut end = 0;
    loop {
        let start = end + leading_whitespace(&text[end..]);
        match stream.next() {
            None => return Ok(documents),
            Some(Ok(value)) => {
                end = stream.byte_offset();
                documents.push(Document {
                    line: line_of(text, start),
                    value: kubectl_numbers(value),
                    item_lines: Vec::new(),
                });
            }
            Some(Err(err)) => {
                let json_error = ManifestError::Json {
                    line: (err.line() > 0).then_some(err.line()),
                    message: err.to_string(),
                };
                if documents.len() > 1 {
                    return Err(json_error);
                }
                let rest = end + blank_to_line_end(&text[end..]);
                let yaml =
                    yaml::documents(&text[rest..], line_of(text, rest)).map_err(|_| json_error)?;
                documents.extend(yaml);
                return Ok(documents);
            }
        }
    }
}

/// The byte length of the leading whitespace of `text`.
fn leading_whitespace(text: &str) -> usize {
    text.len() - text.trim_start().len()
}

/// The byte length of the whitespace kubectl skips before switching from
/// JSON to YAML: blanks up to and including the first line break.
fn blank_to_line_end(text: &str) -> usize {
    let mut skipped = 0;
    for c in text.chars() {
        if !c.is_whitespace() {
            break;
        }
        skipped += c.len_utf8();
        if c == '\n' {
            break;
        }
    }
    skipped
}

/// The 1-based line of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    1 + text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
}

/// JSON numbers as kubectl holds them: ints that fit in int64 stay, every
/// other number is a float, and floats print (and so read back) as ints
/// when they are integral.
fn kubectl_numbers(value: Value) -> Value {
    match value {
        Value::Number(number) if number.is_i64() => Value::Number(number),
        Value::Number(number) => yaml::json_number(number.as_f64().unwrap_or(f64::NAN)),
        Value::Array(items) => Value::Array(items.into_iter().map(kubectl_numbers).collect()),
        Value::Object(object) => Value::Object(
            object
                .into_iter()
                .map(|(key, value)| (key, kubectl_numbers(value)))
                .collect(),
        ),
        other => other,
    }
}

fn yaml_error(err: yaml::YamlError) -> ManifestError {
    ManifestError::Yaml {
        line: Some(err.line),
        message: err.message,
    }
}

/// Adds the object(s) of one document: none for an empty document or a
/// kustomize file, each item for a list, else the document itself.
fn collect_document(
    document: Document,
    number: usize,
    rules: &KeyRules,
    out: &mut Vec<Declared>,
) -> Result<(), ManifestError> {
    let at = DocRef {
        document: number,
        item: None,
        line: document.line,
    };
    let Value::Object(object) = document.value else {
        return match document.value {
            Value::Null => Ok(()),
            _ => Err(ManifestError::NotAnObject { at }),
        };
    };
    let api_version = required_str(&object, "apiVersion", at)?.to_owned();
    if ObjectKey::group_of(&api_version) == KUSTOMIZE_GROUP {
        return Ok(());
    }
    let kind = required_str(&object, "kind", at)?.to_owned();
    check_metadata(&object, at)?;
    let Some(item_kind) = list_item_kind(&kind, &object) else {
        out.push(declare(object, at, rules)?);
        return Ok(());
    };
    let Some(Value::Array(items)) = object.get("items") else {
        return Err(ManifestError::BadList { at });
    };
    let known_lines = document.item_lines.len() == items.len();
    for (index, item) in items.iter().enumerate() {
        let at = DocRef {
            item: Some(index + 1),
            line: if known_lines {
                document.item_lines[index]
            } else {
                at.line
            },
            ..at
        };
        let Value::Object(item) = item else {
            return Err(ManifestError::NotAnObject { at });
        };
        let mut item = item.clone();
        inherit_type(&mut item, item_kind, &api_version);
        let kind = item.get("kind").and_then(Value::as_str).unwrap_or_default();
        if list_item_kind(kind, &item).is_some() {
            return Err(ManifestError::BadList { at });
        }
        out.push(declare(item, at, rules)?);
    }
    Ok(())
}

/// The kind of the items when `object` is a list: `kind: List` (items
/// name their own kind), or a typed list such as `ConfigMapList` with
/// `items` (items may leave their kind out). kubectl treats any object
/// with `items` as a list; a GitOps agent does not, so only list kinds are
/// expanded here.
fn list_item_kind<'a>(kind: &'a str, object: &Map<String, Value>) -> Option<&'a str> {
    let item_kind = kind.strip_suffix("List")?;
    let has_items = !matches!(object.get("items"), None | Some(Value::Null));
    (kind == "List" || has_items).then_some(item_kind)
}

/// Gives an item of a typed list without kind and apiVersion those of the
/// list, as kubectl does.
fn inherit_type(item: &mut Map<String, Value>, item_kind: &str, api_version: &str) {
    let unset = |field: &str| {
        item.get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    };
    if unset("kind") && unset("apiVersion") && !item_kind.is_empty() {
        item.insert("kind".to_owned(), Value::from(item_kind));
        item.insert("apiVersion".to_owned(), Value::from(api_version));
    }
}

/// Refuses what kubectl refuses when it decodes `metadata` into its typed
/// form: strings that are not strings (labels and annotations included),
/// counts that are not ints, times that are not RFC 3339. Nulls are
/// accepted anywhere, unknown fields ignored.
fn check_metadata(object: &Map<String, Value>, at: DocRef) -> Result<(), ManifestError> {
    let metadata = match object.get("metadata") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(metadata)) => metadata,
        Some(_) => return Err(bad_metadata(at, "metadata".to_owned(), "a mapping")),
    };
    for (name, value) in metadata {
        let field = format!("metadata.{name}");
        match name.as_str() {
            "name" | "generateName" | "namespace" | "selfLink" | "uid" | "resourceVersion" => {
                expect_string(value, &field, at)?;
            }
            "generation" | "deletionGracePeriodSeconds" => expect_int(value, &field, at)?,
            "creationTimestamp" | "deletionTimestamp" => expect_time(value, &field, at)?,
            "labels" | "annotations" => {
                for (key, value) in expect_mapping(value, &field, at)? {
                    expect_string(value, &format!("{field}.{key}"), at)?;
                }
            }
            "finalizers" => {
                for (index, value) in expect_sequence(value, &field, at)?.iter().enumerate() {
                    expect_string(value, &format!("{field}.{index}"), at)?;
                }
            }
            "ownerReferences" => {
                for (index, owner) in expect_sequence(value, &field, at)?.iter().enumerate() {
                    let field = format!("{field}.{index}");
                    for (name, value) in expect_mapping(owner, &field, at)? {
                        let field = format!("{field}.{name}");
                        match name.as_str() {
                            "apiVersion" | "kind" | "name" | "uid" => {
                                expect_string(value, &field, at)?;
                            }
                            "controller" | "blockOwnerDeletion" => expect_bool(value, &field, at)?,
                            _ => {}
                        }
                    }
                }
            }
            "managedFields" => {
                for (index, entry) in expect_sequence(value, &field, at)?.iter().enumerate() {
                    let field = format!("{field}.{index}");
                    for (name, value) in expect_mapping(entry, &field, at)? {
                        let field = format!("{field}.{name}");
                        match name.as_str() {
                            "manager" | "operation" | "apiVersion" | "fieldsType"
                            | "subresource" => expect_string(value, &field, at)?,
                            "time" => expect_time(value, &field, at)?,
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn bad_metadata(at: DocRef, field: String, expected: &'static str) -> ManifestError {
    ManifestError::BadMetadata {
        at,
        field,
        expected,
    }
}

fn expect_string(value: &Value, field: &str, at: DocRef) -> Result<(), ManifestError> {
    match value {
        Value::Null | Value::String(_) => Ok(()),
        _ => Err(bad_metadata(at, field.to_owned(), "a string")),
    }
}

fn expect_bool(value: &Value, field: &str, at: DocRef) -> Result<(), ManifestError> {
    match value {
        Value::Null | Value::Bool(_) => Ok(()),
        _ => Err(bad_metadata(at, field.to_owned(), "true or false")),
    }
}

fn expect_int(value: &Value, field: &str, at: DocRef) -> Result<(), ManifestError> {
    match value {
        Value::Null => Ok(()),
        Value::Number(number) if number.is_i64() => Ok(()),
        _ => Err(bad_metadata(at, field.to_owned(), "an integer")),
    }
}

fn expect_time(value: &Value, field: &str, at: DocRef) -> Result<(), ManifestError> {
    match value {
        Value::Null => Ok(()),
        Value::String(time) if is_rfc3339(time) => Ok(()),
        _ => Err(bad_metadata(
            at,
            field.to_owned(),
            "an RFC 3339 time such as 2024-05-01T12:00:00Z",
        )),
    }
}

/// The entries of a mapping field (none when it is null).
fn expect_mapping<'a>(
    value: &'a Value,
    field: &str,
    at: DocRef,
) -> Result<impl Iterator<Item = (&'a String, &'a Value)>, ManifestError> {
    match value {
        Value::Null => Ok(None.into_iter().flatten()),
        Value::Object(map) => Ok(Some(map.iter()).into_iter().flatten()),
        _ => Err(bad_metadata(at, field.to_owned(), "a mapping")),
    }
}

/// The items of a sequence field (none when it is null).
fn expect_sequence<'a>(
    value: &'a Value,
    field: &str,
    at: DocRef,
) -> Result<&'a [Value], ManifestError> {
    match value {
        Value::Null => Ok(&[]),
        Value::Array(items) => Ok(items),
        _ => Err(bad_metadata(at, field.to_owned(), "a sequence")),
    }
}

/// Whether `time` parses as Go's `time.RFC3339`:
/// `2006-01-02T15:04:05[.frac](Z|±hh:mm)`.
fn is_rfc3339(time: &str) -> bool {
    let b = time.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    let number = |range: std::ops::Range<usize>| -> u32 {
        time.get(range)
            .and_then(|n| n.parse().ok())
            .unwrap_or(u32::MAX)
    };
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape
        || !(1..=12).contains(&number(5..7))
        || !(1..=31).contains(&number(8..10))
        || number(11..13) > 23
        || number(14..16) > 59
        || number(17..19) > 59
    {
        return false;
    }
    let mut rest = &time[19..];
    if let Some(fraction) = rest.strip_prefix(['.', ',']) {
        let count = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if count == 0 {
            return false;
        }
        rest = &fraction[count..];
    }
    match rest.as_bytes() {
        [b'Z'] => true,
        [sign, h1, h2, b':', m1, m2] => {
            (*sign == b'+' || *sign == b'-') && [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit())
        }
        _ => false,
    }
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
        assert_eq!(declared[1].at.line, 9);
        assert_eq!(declared[0].at.line, 1);
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
        assert_eq!(declared[1].at.line, 1);
    }

    #[test]
    fn yaml_syntax_errors_carry_their_line() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels: [x\n";
        let err = parse_file("a.yaml", text.as_bytes(), &rules()).expect_err("bad yaml");
        assert!(matches!(err, ManifestError::Yaml { .. }), "{err}");
        // The parser notices the unclosed sequence where the input ends.
        assert_eq!(err.line(), Some(6), "{err:?}");
        assert!(
            err.to_string().starts_with("invalid YAML at line 6: "),
            "{err}"
        );
    }

    #[test]
    fn yaml_errors_in_later_documents_carry_the_line_in_the_file() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\nkey: : value\n";
        let err = parse_file("a.yaml", text.as_bytes(), &rules()).expect_err("bad yaml");
        assert_eq!(err.line(), Some(6), "{err}");
    }

    #[test]
    fn json_errors_carry_their_line() {
        // Not YAML either, so the JSON error stands.
        let err = parse_file("a.json", b"{\n\"a\": 1,\n\"b\" 2}", &rules()).expect_err("bad json");
        assert!(matches!(err, ManifestError::Json { .. }), "{err}");
        assert_eq!(err.line(), Some(3), "{err}");
        assert!(err.to_string().contains("at line 3"), "{err}");
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
                    item: None,
                    line: 6,
                },
                field: "metadata.name"
            }
        );
        assert!(err.to_string().contains("document 2 (line 6)"), "{err}");
        assert_eq!(err.line(), Some(6));
        let err = parse_file("b.yaml", b"kind: ConfigMap\n", &rules()).expect_err("no apiVersion");
        assert!(err.to_string().contains("`apiVersion`"), "{err}");
    }

    #[test]
    fn scalars_are_not_manifests() {
        let err = parse_file("a.yaml", b"# c\n\njust text\n", &rules()).expect_err("scalar");
        assert!(matches!(err, ManifestError::NotAnObject { .. }), "{err}");
        assert_eq!(err.line(), Some(3));
    }

    #[test]
    fn namespaced_objects_need_a_namespace_when_there_is_no_default() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n";
        let err = parse_file("a.yaml", text.as_bytes(), &KeyRules::new("prod", ""))
            .expect_err("no namespace");
        assert!(matches!(err, ManifestError::NoNamespace { .. }), "{err}");
        assert_eq!(err.line(), Some(1));
    }

    #[test]
    fn the_same_object_twice_in_one_file_is_an_error() {
        let doc = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n";
        let text = format!("{doc}---\n{doc}");
        let err = parse_file("a.yaml", text.as_bytes(), &rules()).expect_err("repeat");
        assert!(matches!(err, ManifestError::DeclaredTwice { .. }), "{err}");
        assert_eq!(err.line(), Some(6));
        assert!(
            err.to_string().contains("document 2 (line 6)")
                && err.to_string().contains("first in document 1 (line 1)"),
            "{err}"
        );
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
    fn octal_modes_and_yaml_1_1_booleans_read_as_kubectl_reads_them() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  hostNetwork: yes\n  \
                    volumes:\n  - name: v\n    configMap:\n      name: c\n      defaultMode: 0755\n";
        let declared = parse_file("p.yaml", text.as_bytes(), &rules()).expect("parses");
        let spec = &declared[0].manifest["spec"];
        assert_eq!(spec["volumes"][0]["configMap"]["defaultMode"], json!(493));
        assert_eq!(spec["hostNetwork"], json!(true));
    }

    #[test]
    fn metadata_that_kubectl_cannot_decode_is_refused_with_its_line() {
        let cases = [
            ("  labels:\n    enabled: yes\n", "metadata.labels.enabled"),
            (
                "  annotations:\n    replicas: 3\n",
                "metadata.annotations.replicas",
            ),
            (
                "  creationTimestamp: 2024-05-01\n",
                "metadata.creationTimestamp",
            ),
            ("  generation: 1.5\n", "metadata.generation"),
            ("  finalizers: [yes]\n", "metadata.finalizers.0"),
            (
                "  ownerReferences:\n  - controller: maybe\n",
                "metadata.ownerReferences.0.controller",
            ),
        ];
        for (metadata, field) in cases {
            let text = format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n\
                 apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n{metadata}"
            );
            let err = parse_file("a.yaml", text.as_bytes(), &rules()).expect_err(field);
            assert!(
                matches!(&err, ManifestError::BadMetadata { field: f, .. } if f == field),
                "{err}"
            );
            assert_eq!(err.line(), Some(6), "{err}");
        }
        let fine = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels: {a: \"yes\", b: ~}\n  \
                    creationTimestamp: 2024-05-01T12:00:00Z\n  generation: 2\n";
        assert!(parse_file("a.yaml", fine.as_bytes(), &rules()).is_ok());
    }

    #[test]
    fn list_items_carry_their_own_lines() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  \
                    metadata:\n    name: a\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    \
                    labels: {on: yes}\n";
        let err = parse_file("l.yaml", text.as_bytes(), &rules()).expect_err("no name");
        assert_eq!(err.line(), Some(8), "{err}");
        assert!(
            err.to_string().contains("document 1, item 2 (line 8)"),
            "{err}"
        );
    }

    #[test]
    fn typed_lists_are_expanded_and_items_take_the_list_type() {
        let text = "apiVersion: v1\nkind: ConfigMapList\nitems:\n- metadata:\n    name: a\n\
                    - apiVersion: v1\n  kind: Secret\n  metadata:\n    name: b\n";
        let declared = parse_file("l.yaml", text.as_bytes(), &rules()).expect("parses");
        assert_eq!(
            keys(&declared),
            ["prod/core/ConfigMap/team-a/a", "prod/core/Secret/team-a/b"]
        );
        assert_eq!(declared[0].at.line, 4);
        let nested =
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: List\n  items: []\n";
        let err = parse_file("n.yaml", nested.as_bytes(), &rules()).expect_err("nested");
        assert!(matches!(err, ManifestError::BadList { .. }), "{err}");
    }

    #[test]
    fn the_content_decides_between_json_and_yaml() {
        let json_stream = "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"a\"},\n\
                           \"data\": {\"n\": 1.0, \"big\": 9223372036854775808}}\n\
                           {\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"b\"}}\n";
        let declared = parse_file("a.yaml", json_stream.as_bytes(), &rules()).expect("parses");
        assert_eq!(declared.len(), 2);
        assert_eq!(declared[0].manifest["data"]["n"], json!(1));
        assert_eq!(
            declared[0].manifest["data"]["big"],
            json!(9_223_372_036_854_776_000_u64)
        );
        assert_eq!(declared[1].at.line, 3);
        // A .json file that is not JSON is read as YAML, as kubectl does.
        let trailing = "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"c\"},\n\
                        \"data\": {\"mode\": 0755,}}\n";
        let declared = parse_file("c.json", trailing.as_bytes(), &rules()).expect("parses");
        assert_eq!(declared[0].manifest["data"]["mode"], json!(493));
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: d\n";
        assert!(parse_file("d.json", yaml.as_bytes(), &rules()).is_ok());
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
