//! List semantics: which lists are matched element by element by merge key,
//! as server-side apply merges them, and which are compared whole.
//!
//! The caller builds the rules from the apiserver's OpenAPI v3 documents
//! (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
//! `x-kubernetes-patch-merge-key`) and hands them over as data;
//! [`ListSemantics::builtin`] is the fallback for core workload kinds.
//!
//! A rule's pattern is either a path of field names from the object's root
//! (`spec.template.spec.containers`; list selectors are not written) or
//! `*.NAME`, which matches a list field called `NAME` anywhere. Path rules win
//! over name rules; a list no rule names is compared whole.

use std::collections::HashMap;

use model::{FieldPath, PathError, Segment};
use serde_json::Value;

use crate::normalize::scalars_equal;

/// A list rule that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pattern is not a field path.
    #[error(
        "list rule `{pattern}` is not a field path: write it like `spec.template.spec.containers` \
         or `*.containers`"
    )]
    Pattern {
        /// The pattern as given.
        pattern: String,
        /// Why it does not parse.
        #[source]
        source: PathError,
    },
    /// The pattern names no field.
    #[error(
        "list rule `{pattern}` names no field: write a path like `spec.ports` or `*.containers`"
    )]
    Empty {
        /// The pattern as given.
        pattern: String,
    },
    /// A `*.NAME` rule with more than one field.
    #[error("list rule `{pattern}` matches by field name, so it names one field: write `*.NAME`")]
    NameRule {
        /// The pattern as given.
        pattern: String,
    },
    /// A map list without merge keys.
    #[error(
        "list rule `{pattern}` is a map list without merge keys: give at least one key \
         (e.g. `name`), or make the list atomic"
    )]
    NoKeys {
        /// The pattern as given.
        pattern: String,
    },
}

/// Result of building list semantics.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One merge key of a map list.
#[derive(Debug, Clone, PartialEq)]
pub struct MapKey {
    /// The key field, e.g. `name` or `containerPort`.
    pub name: String,
    /// The value the apiserver defaults the key to when absent (`protocol` → `TCP`).
    pub default: Option<Value>,
}

impl MapKey {
    /// A key without a default.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            default: None,
        }
    }

    /// This key, taking `default` when an element leaves it out.
    pub fn with_default(mut self, default: impl Into<Value>) -> Self {
        self.default = Some(default.into());
        self
    }
}

/// How a list is compared.
#[derive(Debug, Clone, PartialEq)]
pub enum ListType {
    /// Compared whole, position by position (`x-kubernetes-list-type: atomic`,
    /// and any list no rule names).
    Atomic,
    /// A set of scalars (`x-kubernetes-list-type: set`): order does not matter,
    /// and elements other writers added are not declared.
    Set,
    /// Objects matched by merge keys (`x-kubernetes-list-type: map`, or a
    /// `x-kubernetes-patch-merge-key`).
    Map(Vec<MapKey>),
}

impl ListType {
    /// A map list keyed by the given fields, none defaulted.
    pub fn map<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::Map(keys.into_iter().map(MapKey::new).collect())
    }
}

/// The list semantics of one kind (or of all kinds, for the fallback table).
#[derive(Debug, Clone, Default)]
pub struct ListSemantics {
    /// Path rules, indexed by their last field name.
    by_path: HashMap<String, Vec<(Vec<String>, ListType)>>,
    /// Name rules (`*.NAME`).
    by_name: HashMap<String, ListType>,
}

static ATOMIC: ListType = ListType::Atomic;

impl ListSemantics {
    /// Semantics from `(pattern, list type)` rules; a later rule for the same
    /// pattern replaces an earlier one.
    pub fn from_rules<I, P>(rules: I) -> Result<Self>
    where
        I: IntoIterator<Item = (P, ListType)>,
        P: AsRef<str>,
    {
        let mut semantics = Self::default();
        for (pattern, list) in rules {
            semantics.insert(pattern.as_ref(), list)?;
        }
        Ok(semantics)
    }

    /// Adds one rule, replacing any earlier rule for the same pattern.
    pub fn insert(&mut self, pattern: &str, list: ListType) -> Result<()> {
        if matches!(&list, ListType::Map(keys) if keys.is_empty()) {
            return Err(Error::NoKeys {
                pattern: pattern.to_owned(),
            });
        }
        if let Some(name) = pattern.strip_prefix("*.") {
            let name = single_field(pattern, name)?;
            self.by_name.insert(name, list);
            return Ok(());
        }
        let fields = field_names(pattern, pattern)?;
        let Some(last) = fields.last().cloned() else {
            return Err(Error::Empty {
                pattern: pattern.to_owned(),
            });
        };
        let rules = self.by_path.entry(last).or_default();
        match rules.iter_mut().find(|(path, _)| *path == fields) {
            Some(rule) => rule.1 = list,
            None => rules.push((fields, list)),
        }
        Ok(())
    }

    /// These semantics, completed by `fallback` for every pattern they do not
    /// name themselves: OpenAPI-derived rules first, the built-in table after.
    pub fn with_fallback(mut self, fallback: &ListSemantics) -> Self {
        for (last, rules) in &fallback.by_path {
            let own = self.by_path.entry(last.clone()).or_default();
            for (path, list) in rules {
                if !own.iter().any(|(p, _)| p == path) {
                    own.push((path.clone(), list.clone()));
                }
            }
        }
        for (name, list) in &fallback.by_name {
            self.by_name
                .entry(name.clone())
                .or_insert_with(|| list.clone());
        }
        self
    }

    /// The built-in fallback for core workload kinds: containers, volumes,
    /// env, mounts and ports by their merge keys, tolerations atomic.
    pub fn builtin() -> Self {
        let tcp = || MapKey::new("protocol").with_default("TCP");
        let by_name = [
            ("containers", ListType::map(["name"])),
            ("initContainers", ListType::map(["name"])),
            ("ephemeralContainers", ListType::map(["name"])),
            ("volumes", ListType::map(["name"])),
            ("env", ListType::map(["name"])),
            ("volumeMounts", ListType::map(["mountPath"])),
            ("volumeDevices", ListType::map(["devicePath"])),
            ("imagePullSecrets", ListType::map(["name"])),
            ("hostAliases", ListType::map(["ip"])),
            ("conditions", ListType::map(["type"])),
            (
                "topologySpreadConstraints",
                ListType::map(["topologyKey", "whenUnsatisfiable"]),
            ),
            ("envFrom", ListType::Atomic),
            ("tolerations", ListType::Atomic),
            (
                "ports",
                ListType::Map(vec![MapKey::new("containerPort"), tcp()]),
            ),
        ];
        let service_ports = (
            vec!["spec".to_owned(), "ports".to_owned()],
            ListType::Map(vec![MapKey::new("port"), tcp()]),
        );
        Self {
            by_path: HashMap::from([("ports".to_owned(), vec![service_ports])]),
            by_name: by_name
                .into_iter()
                .map(|(name, list)| (name.to_owned(), list))
                .collect(),
        }
    }

    /// How the list at `path` is compared; list selectors in `path` are ignored.
    pub fn list_type(&self, path: &FieldPath) -> &ListType {
        self.lookup(path.0.iter().filter_map(|segment| match segment {
            Segment::Field(name) => Some(name.as_str()),
            Segment::Key(_) | Segment::Index(_) => None,
        }))
    }

    /// How the list whose field names from the root are `fields` is compared.
    pub(crate) fn lookup<'f, I>(&self, fields: I) -> &ListType
    where
        I: DoubleEndedIterator<Item = &'f str> + Clone,
    {
        let Some(last) = fields.clone().next_back() else {
            return &ATOMIC;
        };
        let by_path = self.by_path.get(last).and_then(|rules| {
            rules
                .iter()
                .find(|(path, _)| path.iter().map(String::as_str).eq(fields.clone()))
        });
        match by_path {
            Some((_, list)) => list,
            None => self.by_name.get(last).unwrap_or(&ATOMIC),
        }
    }
}

fn single_field(pattern: &str, name: &str) -> Result<String> {
    match field_names(pattern, name)?.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::Empty {
            pattern: pattern.to_owned(),
        }),
        _ => Err(Error::NameRule {
            pattern: pattern.to_owned(),
        }),
    }
}

/// The field names of `text`, list selectors dropped; errors name `pattern`.
fn field_names(pattern: &str, text: &str) -> Result<Vec<String>> {
    let path: FieldPath = text.parse().map_err(|source| Error::Pattern {
        pattern: pattern.to_owned(),
        source,
    })?;
    Ok(path
        .0
        .into_iter()
        .filter_map(|segment| match segment {
            Segment::Field(name) => Some(name),
            Segment::Key(_) | Segment::Index(_) => None,
        })
        .collect())
}

/// The value of merge key `key` in list element `element`, or its default.
pub(crate) fn key_value<'v>(element: &'v Value, key: &'v MapKey) -> Option<&'v Value> {
    match element.get(&key.name) {
        None | Some(Value::Null) => key.default.as_ref(),
        found => found,
    }
}

/// Whether `element` is an object carrying every merge key.
pub(crate) fn keyable(element: &Value, keys: &[MapKey]) -> bool {
    element.is_object() && keys.iter().all(|key| key_value(element, key).is_some())
}

/// Whether two list elements have equal merge keys.
pub(crate) fn same_key(a: &Value, b: &Value, keys: &[MapKey]) -> bool {
    keys.iter()
        .all(|key| match (key_value(a, key), key_value(b, key)) {
            (Some(x), Some(y)) => scalars_equal(x, y),
            _ => false,
        })
}

/// The merge key of `element` as path selector text.
pub(crate) fn key_text(element: &Value, key: &MapKey) -> String {
    match key_value(element, key) {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
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
    fn builtin_matches_containers_anywhere_by_name() {
        let lists = ListSemantics::builtin();
        for list in [
            "spec.containers",
            "spec.template.spec.containers",
            "spec.jobTemplate.spec.template.spec.containers",
        ] {
            assert_eq!(
                lists.list_type(&path(list)),
                &ListType::map(["name"]),
                "{list}"
            );
        }
    }

    #[test]
    fn service_ports_and_container_ports_have_different_keys() {
        let lists = ListSemantics::builtin();
        let ListType::Map(service) = lists.list_type(&path("spec.ports")) else {
            panic!("service ports are a map list");
        };
        assert_eq!(service[0].name, "port");
        let ListType::Map(container) =
            lists.list_type(&path("spec.template.spec.containers[name=web].ports"))
        else {
            panic!("container ports are a map list");
        };
        assert_eq!(container[0].name, "containerPort");
        assert_eq!(container[1].default, Some(json!("TCP")));
    }

    #[test]
    fn unnamed_lists_and_tolerations_are_atomic() {
        let lists = ListSemantics::builtin();
        assert_eq!(
            lists.list_type(&path("spec.template.spec.containers[name=web].args")),
            &ListType::Atomic
        );
        assert_eq!(
            lists.list_type(&path("spec.template.spec.tolerations")),
            &ListType::Atomic
        );
        assert_eq!(lists.list_type(&FieldPath::root()), &ListType::Atomic);
    }

    #[test]
    fn path_rules_win_over_name_rules_and_fallback_fills_gaps() {
        let openapi = ListSemantics::from_rules([
            ("spec.template.spec.containers", ListType::map(["image"])),
            ("spec.widgets[name=x].parts", ListType::Set),
        ])
        .expect("rules are valid");
        let lists = openapi.with_fallback(&ListSemantics::builtin());
        assert_eq!(
            lists.list_type(&path("spec.template.spec.containers")),
            &ListType::map(["image"])
        );
        assert_eq!(
            lists.list_type(&path("spec.containers")),
            &ListType::map(["name"])
        );
        assert_eq!(
            lists.list_type(&path("spec.widgets[name=a].parts")),
            &ListType::Set
        );
    }

    #[test]
    fn bad_rules_are_refused_with_the_pattern_named() {
        let no_keys = ListSemantics::from_rules([("spec.items", ListType::Map(vec![]))])
            .expect_err("a map list needs keys");
        assert!(no_keys.to_string().contains("spec.items"), "{no_keys}");
        let bad =
            ListSemantics::from_rules([("spec..items", ListType::Atomic)]).expect_err("not a path");
        assert!(bad.to_string().contains("spec..items"), "{bad}");
        let empty =
            ListSemantics::from_rules([("", ListType::Atomic)]).expect_err("names no field");
        assert!(empty.to_string().contains("names no field"), "{empty}");
        let nested = ListSemantics::from_rules([("*.a.b", ListType::Atomic)])
            .expect_err("a name rule is one field");
        assert!(nested.to_string().contains("*.a.b"), "{nested}");
    }

    #[test]
    fn absent_protocol_defaults_to_tcp_when_matching_ports() {
        let keys = [
            MapKey::new("containerPort"),
            MapKey::new("protocol").with_default("TCP"),
        ];
        let declared = json!({"containerPort": 80});
        let live = json!({"containerPort": "80", "protocol": "TCP"});
        assert!(keyable(&declared, &keys));
        assert!(same_key(&declared, &live, &keys));
        assert!(!same_key(
            &declared,
            &json!({"containerPort": 80, "protocol": "UDP"}),
            &keys
        ));
        assert_eq!(key_text(&declared, &keys[1]), "TCP");
        assert_eq!(key_text(&declared, &keys[0]), "80");
        assert!(!keyable(&json!({"protocol": "TCP"}), &keys));
    }
}
