//! Object keys: which object a change, a manifest or a record is about.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Identifies an object independently of its incarnation (`uid`).
///
/// Written as `cluster/group/kind/namespace/name`, with `core` for the core
/// API group and an empty segment for cluster-scoped objects:
/// `prod/apps/Deployment/team-a/web`, `prod/core/Namespace//team-a`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    /// Name of the cluster as configured.
    pub cluster: String,
    /// API group, empty for the core group.
    pub group: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Object name.
    pub name: String,
}

/// A string that is not an object key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The key does not have five `/`-separated segments.
    #[error(
        "object key `{0}` must have five segments: cluster/group/kind/namespace/name \
         (group `core` for the core API group, empty namespace for cluster-scoped objects)"
    )]
    Segments(String),
    /// A segment that must not be empty is empty.
    #[error("object key `{key}` has an empty {segment}")]
    Empty {
        /// The key as given.
        key: String,
        /// Which segment is empty.
        segment: &'static str,
    },
}

impl ObjectKey {
    /// Whether the key names a core Secret, whose values are compared and
    /// stored only as digests.
    pub fn is_secret(&self) -> bool {
        self.group.is_empty() && self.kind == "Secret"
    }

    /// Builds a key; `group` is the API group (`""` or `"core"` for core).
    pub fn new(
        cluster: impl Into<String>,
        group: impl Into<String>,
        kind: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        let group = group.into();
        Self {
            cluster: cluster.into(),
            group: if group == "core" {
                String::new()
            } else {
                group
            },
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The group part of an `apiVersion` (`apps/v1` → `apps`, `v1` → ``).
    pub fn group_of(api_version: &str) -> &str {
        api_version.rsplit_once('/').map_or("", |(group, _)| group)
    }

    /// The key as bytes that sort by cluster, group, kind, namespace, name;
    /// used as an index prefix. Segments are separated by `0x00`, which no
    /// Kubernetes name contains.
    pub fn index_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.to_string().len() + 1);
        for part in [
            &self.cluster,
            &self.group,
            &self.kind,
            &self.namespace,
            &self.name,
        ] {
            out.extend_from_slice(part.as_bytes());
            out.push(0);
        }
        out
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(
            f,
            "{}/{}/{}/{}/{}",
            self.cluster, group, self.kind, self.namespace, self.name
        )
    }
}

impl FromStr for ObjectKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let [cluster, group, kind, namespace, name] = parts.as_slice() else {
            return Err(KeyError::Segments(s.to_owned()));
        };
        for (segment, value) in [("cluster", cluster), ("kind", kind), ("name", name)] {
            if value.is_empty() {
                return Err(KeyError::Empty {
                    key: s.to_owned(),
                    segment,
                });
            }
        }
        Ok(Self::new(*cluster, *group, *kind, *namespace, *name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_through_its_string_form() {
        for text in [
            "prod/apps/Deployment/team-a/web",
            "prod/core/Namespace//team-a",
        ] {
            let key: ObjectKey = text.parse().expect("valid key");
            assert_eq!(key.to_string(), text);
        }
    }

    #[test]
    fn core_group_is_stored_empty() {
        let key: ObjectKey = "c/core/ConfigMap/ns/cfg".parse().expect("valid key");
        assert_eq!(key.group, "");
        assert_eq!(ObjectKey::group_of("v1"), "");
        assert_eq!(ObjectKey::group_of("apps/v1"), "apps");
    }

    #[test]
    fn malformed_keys_name_the_problem() {
        let err = "apps/Deployment/web"
            .parse::<ObjectKey>()
            .expect_err("malformed key");
        assert!(err.to_string().contains("five segments"), "{err}");
        let err = "c/apps/Deployment/ns/"
            .parse::<ObjectKey>()
            .expect_err("malformed key");
        assert_eq!(
            err,
            KeyError::Empty {
                key: "c/apps/Deployment/ns/".into(),
                segment: "name"
            }
        );
    }

    #[test]
    fn index_bytes_do_not_collide_across_segments() {
        let a = ObjectKey::new("c", "", "Kind", "ab", "c");
        let b = ObjectKey::new("c", "", "Kind", "a", "bc");
        assert_ne!(a.index_bytes(), b.index_bytes());
    }
}
