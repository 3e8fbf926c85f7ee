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

use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope};

/// A kind that does not resolve. Each variant says what to do.
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
