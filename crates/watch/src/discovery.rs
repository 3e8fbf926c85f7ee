//! Kinds resolved through discovery: an `(apiVersion, kind)` pair as
//! config and manifests write it, to the API resource that serves it and
//! whether it is namespaced.
//!
//! ```text
//! ("apps/v1", "Deployment") ──parse──▶ group, version ──discovery──▶ (ApiResource, Scope)
//! ```
//!
//! The watcher resolves every kind it watches here; the binary resolves
//! the kinds the enforcement executor writes here too. Each call asks the
//! apiserver: a caller that resolves a kind often keeps the answer.
//!
//! [`cluster_scoped_kinds`] lists every cluster-scoped `(group, kind)` the
//! apiserver serves, built-in or custom, for whoever must tell a
//! cluster-scoped manifest from a namespaced one; ask again when
//! [`crate::crds::CrdChanges`] says the CRDs changed.

use std::collections::BTreeSet;

use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};

/// A kind that does not resolve, or discovery that cannot be read. Each
/// variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An `apiVersion` that is neither `version` nor `group/version`.
    #[error(
        "apiVersion `{api_version}` of kind `{kind}` is malformed; write `v1` or `group/version`, \
         e.g. `apps/v1`"
    )]
    ApiVersion {
        /// The apiVersion as given.
        api_version: String,
        /// The kind it was given with.
        kind: String,
    },
    /// The apiserver's discovery documents could not be read.
    #[error(
        "cannot read the apiserver's discovery documents (`/api`, `/apis`); check that the \
         apiserver answers and that RBAC allows `get` on those paths"
    )]
    Documents {
        /// What the apiserver said.
        #[source]
        source: kube::Error,
    },
    /// Discovery does not know the kind.
    #[error(
        "cannot resolve kind `{kind}` of `{api_version}` through discovery; check the spelling, \
         and for a custom resource that its CRD is installed and serves that version"
    )]
    Discovery {
        /// The apiVersion looked up.
        api_version: String,
        /// The kind looked up.
        kind: String,
        /// What the apiserver said.
        #[source]
        source: kube::Error,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The API resource serving `kind` of `api_version` (e.g. `apps/v1`,
/// `Deployment`) and its scope, as the apiserver's discovery reports them.
pub async fn resolve(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
) -> Result<(ApiResource, Scope)> {
    let gvk = group_version_kind(api_version, kind)?;
    let (resource, capabilities) =
        kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|source| Error::Discovery {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
                source,
            })?;
    Ok((resource, capabilities.scope))
}

/// Every cluster-scoped kind the apiserver serves, as `(group, kind)` pairs
/// sorted and without duplicates; the group is empty for the core group
/// (as in [`model::ObjectKey`]), e.g. `("", "Namespace")`,
/// `("rbac.authorization.k8s.io", "ClusterRole")`, and a cluster-scoped
/// CRD's `(spec.group, spec.names.kind)` once it is established.
///
/// Reads aggregated discovery (two requests; Kubernetes 1.30+), falling back
/// to one request per group version on older apiservers. Subresources are
/// not kinds and are left out.
pub async fn cluster_scoped_kinds(client: &kube::Client) -> Result<Vec<(String, String)>> {
    let discovery = match Discovery::new(client.clone()).run_aggregated().await {
        Ok(discovery) => discovery,
        Err(aggregated) => {
            tracing::debug!(error = ?aggregated, "no aggregated discovery; asking each group version");
            Discovery::new(client.clone())
                .run()
                .await
                .map_err(|source| Error::Documents { source })?
        }
    };
    Ok(cluster_scoped(discovery.groups().map(|group| {
        let resources = group
            .versions()
            .flat_map(|version| group.versioned_resources(version))
            .collect::<Vec<_>>();
        (group.name().to_owned(), resources)
    })))
}

/// The cluster-scoped `(group, kind)` pairs among `groups`' resources (every
/// version of each group), sorted and deduplicated.
fn cluster_scoped(
    groups: impl IntoIterator<Item = (String, Vec<(ApiResource, ApiCapabilities)>)>,
) -> Vec<(String, String)> {
    let mut kinds = BTreeSet::new();
    for (group, resources) in groups {
        for (resource, capabilities) in resources {
            if capabilities.scope == Scope::Cluster && !resource.plural.contains('/') {
                kinds.insert((group.clone(), resource.kind));
            }
        }
    }
    kinds.into_iter().collect()
}

/// Splits `v1` into the core group and `v1`, `apps/v1` into `apps` and `v1`.
fn group_version_kind(api_version: &str, kind: &str) -> Result<GroupVersionKind> {
    match api_version.split('/').collect::<Vec<_>>().as_slice() {
        [version] if !version.is_empty() => Ok(GroupVersionKind::gvk("", version, kind)),
        [group, version] if !group.is_empty() && !version.is_empty() => {
            Ok(GroupVersionKind::gvk(group, version, kind))
        }
        _ => Err(Error::ApiVersion {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        scope: Scope,
    ) -> (ApiResource, ApiCapabilities) {
        let api_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        let resource = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version,
            kind: kind.into(),
            plural: plural.into(),
        };
        let capabilities = ApiCapabilities {
            scope,
            subresources: Vec::new(),
            operations: vec!["get".into(), "list".into(), "watch".into()],
        };
        (resource, capabilities)
    }

    #[test]
    fn cluster_scoped_kinds_are_group_and_kind_of_every_version_once() {
        let groups = vec![
            (
                String::new(),
                vec![
                    resource("", "v1", "Namespace", "namespaces", Scope::Cluster),
                    resource("", "v1", "Namespace", "namespaces/status", Scope::Cluster),
                    resource("", "v1", "ConfigMap", "configmaps", Scope::Namespaced),
                    resource("", "v1", "Node", "nodes", Scope::Cluster),
                ],
            ),
            (
                "widgets.example.com".to_owned(),
                vec![
                    resource(
                        "widgets.example.com",
                        "v1",
                        "Gadget",
                        "gadgets",
                        Scope::Cluster,
                    ),
                    resource(
                        "widgets.example.com",
                        "v1beta1",
                        "Gadget",
                        "gadgets",
                        Scope::Cluster,
                    ),
                    resource(
                        "widgets.example.com",
                        "v1beta1",
                        "Sprocket",
                        "sprockets",
                        Scope::Cluster,
                    ),
                    resource(
                        "widgets.example.com",
                        "v1",
                        "Widget",
                        "widgets",
                        Scope::Namespaced,
                    ),
                ],
            ),
        ];
        let pair = |group: &str, kind: &str| (group.to_owned(), kind.to_owned());
        assert_eq!(
            cluster_scoped(groups),
            vec![
                pair("", "Namespace"),
                pair("", "Node"),
                pair("widgets.example.com", "Gadget"),
                pair("widgets.example.com", "Sprocket"),
            ]
        );
    }

    #[test]
    fn core_and_grouped_api_versions_split_into_group_and_version() {
        let core = group_version_kind("v1", "ConfigMap").expect("core");
        assert_eq!((core.group.as_str(), core.version.as_str()), ("", "v1"));
        let apps = group_version_kind("apps/v1", "Deployment").expect("grouped");
        assert_eq!((apps.group.as_str(), apps.version.as_str()), ("apps", "v1"));
        assert_eq!(apps.kind, "Deployment");
    }

    #[test]
    fn malformed_api_versions_are_refused_with_the_expected_form() {
        for malformed in ["", "/v1", "apps/", "a/b/c"] {
            let err = group_version_kind(malformed, "Widget").expect_err(malformed);
            assert!(
                matches!(err, Error::ApiVersion { .. }),
                "{malformed}: {err}"
            );
            let text = err.to_string();
            assert!(
                text.contains("Widget") && text.contains("group/version"),
                "{text}"
            );
        }
    }
}
