//! The executor: performs a planned revert against the kube-apiserver and
//! says what came of it.
//!
//! ```text
//! Apply  ──▶ server-side apply, field manager `driftwarden`, forced, with
//!            the judged resourceVersion as precondition (none for a sync)
//! Patch  ──▶ JSON patch led by a `test` of the planned resourceVersion
//! Create ──▶ create; already there again      ──▶ superseded
//! Delete ──▶ delete with a uid precondition; another incarnation ──▶ superseded
//! ```
//!
//! The executor does no discovery of its own: whoever builds it gives it a
//! [`ResolveKind`] that finds a kind's API resource (the binary resolves
//! through the watch crate's discovery, each kind once). A kind that does not
//! resolve fails the revert with the resolver's error, which names the kind
//! and says what to do.
//!
//! A newer write is never clobbered: it is judged on its own. Errors carry
//! the apiserver's message only (for Secrets not even that, as it may quote
//! values); objects and manifests are never logged.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use kube::discovery::{ApiResource, Scope};
use model::{ChangeEvent, Outcome, RevertAction};
use serde::Serialize;
use serde_json::{Value, json};
use tracing::Instrument as _;

/// The field manager of every write Driftwarden makes.
pub const FIELD_MANAGER: &str = "driftwarden";

/// Metadata the server owns, stripped from a manifest before it is written.
const SERVER_METADATA: &[&str] = &[
    "resourceVersion",
    "uid",
    "managedFields",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

/// Write attempts while only churn changes the object under the revert (a
/// Deployment mid-rollout gets several status updates a second).
const WRITE_ATTEMPTS: u32 = 8;

/// The pause before the second attempt; it doubles for each one after.
const FIRST_RETRY: std::time::Duration = std::time::Duration::from_millis(25);

/// How a guarded write failed: the apiserver said no, or it never got sent.
#[derive(Debug)]
enum Guarded {
    Kube(kube::Error),
    Other(Error),
}

impl From<kube::Error> for Guarded {
    fn from(err: kube::Error) -> Self {
        Self::Kube(err)
    }
}

impl From<Error> for Guarded {
    fn from(err: Error) -> Self {
        Self::Other(err)
    }
}

/// Why a revert could not be performed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kind does not resolve to an API resource; the resolver's error
    /// names the kind and says what to do.
    #[error(transparent)]
    Kind(ResolveError),
    /// The kind is namespaced but the key has no namespace.
    #[error("{key} is of a namespaced kind but its key has no namespace")]
    NoNamespace {
        /// The object's key.
        key: String,
    },
    /// Apply and Create need the desired manifest.
    #[error("no desired manifest was given to {verb} {key}")]
    NoManifest {
        /// The object's key.
        key: String,
        /// `apply` or `create`.
        verb: &'static str,
    },
    /// The desired manifest is not an object.
    #[error("the desired manifest of {key} is not a Kubernetes object")]
    Manifest {
        /// The object's key.
        key: String,
        /// Why it does not deserialize.
        #[source]
        source: serde_json::Error,
    },
    /// The planned patch is not a list of RFC 6902 operations.
    #[error("the planned patch of {key} is not an RFC 6902 patch")]
    Patch {
        /// The object's key.
        key: String,
        /// Why it does not deserialize.
        #[source]
        source: serde_json::Error,
    },
    /// Controllers kept changing the object between attempts.
    #[error(
        "{key} kept changing under the revert ({attempts} attempts, each time only status or \
         controller bookkeeping); it is reverted when its next change is seen"
    )]
    Churning {
        /// The object's key.
        key: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The apiserver refused the write.
    #[error("{verb} of {key} failed: {detail}")]
    Rejected {
        /// The object's key.
        key: String,
        /// `apply`, `patch`, `create`, `delete`.
        verb: &'static str,
        /// The apiserver's reason and message.
        detail: String,
    },
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A resolved kind: the API resource serving it and whether it is
/// namespaced.
pub type Resolved = (ApiResource, Scope);

/// Why a kind does not resolve: the resolver's own error, its message naming
/// the kind and saying what to do.
pub type ResolveError = Box<dyn std::error::Error + Send + Sync>;

/// What [`ResolveKind::resolve`] returns.
pub type Resolving<'a> = Pin<Box<dyn Future<Output = Result<Resolved, ResolveError>> + Send + 'a>>;

/// Finds the API resource of a kind for the [`Executor`]. Called for every
/// revert: an implementation that asks the apiserver keeps its answers.
pub trait ResolveKind: Send + Sync {
    /// The resource serving `kind` of `api_version` (e.g. `apps/v1`,
    /// `Deployment`) and its scope.
    fn resolve<'a>(&'a self, api_version: &'a str, kind: &'a str) -> Resolving<'a>;
}

/// Performs reverts through a kube client, finding each kind's API resource
/// through a [`ResolveKind`].
pub struct Executor {
    client: kube::Client,
    kinds: Box<dyn ResolveKind>,
    digest_key: model::redact::DigestKey,
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("field_manager", &FIELD_MANAGER)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// An executor writing through `client` as field manager `driftwarden`,
    /// resolving kinds through `kinds`.
    pub fn new(
        client: kube::Client,
        kinds: impl ResolveKind + 'static,
        digest_key: model::redact::DigestKey,
    ) -> Self {
        Self {
            client,
            kinds: Box::new(kinds),
            digest_key,
        }
    }

    /// Performs `action` on the object of `event`. `manifest` is the desired
    /// manifest for [`RevertAction::Apply`] and [`RevertAction::Create`].
    pub async fn execute(
        &self,
        event: &ChangeEvent,
        action: &RevertAction,
        manifest: Option<&Value>,
    ) -> Outcome {
        let span = tracing::info_span!("revert", key = %event.key, verb = verb(action));
        let result = match action {
            RevertAction::Apply { .. } => {
                self.apply(event, manifest).instrument(span.clone()).await
            }
            RevertAction::Patch {
                patch,
                resource_version,
            } => {
                self.patch(event, patch, resource_version)
                    .instrument(span.clone())
                    .await
            }
            RevertAction::Create { .. } => {
                self.create(event, manifest).instrument(span.clone()).await
            }
            RevertAction::Delete { uid } => self.delete(event, uid).instrument(span.clone()).await,
        };
        result.unwrap_or_else(|err| {
            span.in_scope(|| tracing::warn!(error = %err, "revert failed"));
            Outcome::Failed {
                error: err.to_string(),
            }
        })
    }

    /// Server-side apply of the desired manifest. A revert carries the
    /// `resourceVersion` it judged, so a newer write makes the apply fail
    /// and is judged on its own; a sync (no judged version) applies git.
    async fn apply(&self, event: &ChangeEvent, manifest: Option<&Value>) -> Result<Outcome> {
        let body = self.manifest(event, manifest, "apply")?;
        let api = self.api_for_manifest(event, &body).await?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        if event.resource_version.is_empty() {
            return match api
                .patch(&event.key.name, &params, &Patch::Apply(&body))
                .await
            {
                Ok(object) => Ok(reverted(&object)),
                Err(err) => Err(rejected(event, "apply", &err)),
            };
        }
        let planned = event.resource_version.as_str();
        self.guarded(event, &api, "apply", planned, |version| {
            let mut body = body.clone();
            if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.insert("resourceVersion".to_owned(), Value::String(version));
            }
            let (api, params) = (api.clone(), params.clone());
            let name = event.key.name.clone();
            async move { api.patch(&name, &params, &Patch::Apply(&body)).await }
        })
        .await
    }

    async fn patch(
        &self,
        event: &ChangeEvent,
        patch: &Value,
        resource_version: &str,
    ) -> Result<Outcome> {
        let api = self.api(event, &event.api_version, &event.key.kind).await?;
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let guarded_patch = |version: String| {
            let patch = guarded(patch, &version).map_err(|source| {
                Guarded::Other(Error::Patch {
                    key: event.key.to_string(),
                    source,
                })
            });
            let (api, params) = (api.clone(), params.clone());
            let name = event.key.name.clone();
            async move {
                api.patch(&name, &params, &patch?)
                    .await
                    .map_err(Guarded::Kube)
            }
        };
        self.guarded(event, &api, "patch", resource_version, guarded_patch)
            .await
    }

    /// Writes with `write(version)`, a write that fails unless the object is
    /// still at `version`, starting at the version the revert was planned
    /// against. When the object moved on only by churn (status, revision
    /// annotations) the write is tried again at the new version; when it
    /// really changed, the revert is superseded: the newer write is judged
    /// on its own, never clobbered.
    async fn guarded<F, Fut, E>(
        &self,
        event: &ChangeEvent,
        api: &Api<DynamicObject>,
        verb: &'static str,
        planned: &str,
        mut write: F,
    ) -> Result<Outcome>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = std::result::Result<DynamicObject, E>>,
        E: Into<Guarded>,
    {
        let mut expected = planned.to_owned();
        let mut pause = FIRST_RETRY;
        for _ in 0..WRITE_ATTEMPTS {
            let err = match write(expected.clone()).await.map_err(Into::into) {
                Ok(object) => return Ok(reverted(&object)),
                Err(Guarded::Kube(err)) => err,
                Err(Guarded::Other(err)) => return Err(err),
            };
            // A failed precondition is a 409, a failed `test` a 422 with a
            // generic message: tell them apart from a bad write by looking
            // at the object.
            if !matches!(status_code(&err), Some(404 | 409 | 422)) {
                return Err(rejected(event, verb, &err));
            }
            // Let a burst of controller updates pass before looking.
            tokio::time::sleep(pause).await;
            pause *= 2;
            let current = match api.get_opt(&event.key.name).await {
                Ok(Some(current)) => current,
                Ok(None) => return Ok(deleted_since(event)),
                Err(_) => return Err(rejected(event, verb, &err)),
            };
            let current_version = current
                .metadata
                .resource_version
                .clone()
                .unwrap_or_default();
            if current_version == expected {
                return Err(rejected(event, verb, &err));
            }
            if !only_churn_since(&current, &event.object, &self.digest_key) {
                return Ok(Outcome::Superseded {
                    detail: format!(
                        "changed again (resourceVersion {current_version}, the revert was \
                         planned against {planned}); the newer write is judged on its own"
                    ),
                });
            }
            tracing::debug!(resource_version = %current_version, "retrying after churn");
            expected = current_version;
        }
        Err(Error::Churning {
            key: event.key.to_string(),
            attempts: WRITE_ATTEMPTS,
        })
    }

    async fn create(&self, event: &ChangeEvent, manifest: Option<&Value>) -> Result<Outcome> {
        let body = self.manifest(event, manifest, "create")?;
        let api = self.api_for_manifest(event, &body).await?;
        let object: DynamicObject =
            serde_json::from_value(body).map_err(|source| Error::Manifest {
                key: event.key.to_string(),
                source,
            })?;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        match api.create(&params, &object).await {
            Ok(object) => Ok(reverted(&object)),
            Err(err) if status_code(&err) == Some(409) => Ok(Outcome::Superseded {
                detail: format!(
                    "exists again ({}); the newer incarnation is judged on its own",
                    detail(event, &err)
                ),
            }),
            Err(err) => Err(rejected(event, "create", &err)),
        }
    }

    async fn delete(&self, event: &ChangeEvent, uid: &str) -> Result<Outcome> {
        let api = self.api(event, &event.api_version, &event.key.kind).await?;
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&event.key.name, &params).await {
            Ok(result) => Ok(Outcome::Reverted {
                resource_version: result.left().and_then(|o| o.metadata.resource_version),
            }),
            Err(err) if status_code(&err) == Some(404) => Ok(Outcome::Superseded {
                detail: "already deleted".to_owned(),
            }),
            Err(err) if status_code(&err) == Some(409) => Ok(Outcome::Superseded {
                detail: format!(
                    "another incarnation took its place ({}); it is judged on its own",
                    detail(event, &err)
                ),
            }),
            Err(err) => Err(rejected(event, "delete", &err)),
        }
    }

    /// The manifest to write, without server-owned fields.
    fn manifest(
        &self,
        event: &ChangeEvent,
        manifest: Option<&Value>,
        verb: &'static str,
    ) -> Result<Value> {
        let mut body = manifest.cloned().ok_or_else(|| Error::NoManifest {
            key: event.key.to_string(),
            verb,
        })?;
        strip_server_fields(&mut body);
        Ok(body)
    }

    /// The API of the manifest's own `apiVersion` and `kind` (those of the
    /// event when the manifest lacks them).
    async fn api_for_manifest(
        &self,
        event: &ChangeEvent,
        manifest: &Value,
    ) -> Result<Api<DynamicObject>> {
        let field = |name| manifest.get(name).and_then(Value::as_str);
        match (field("apiVersion"), field("kind")) {
            (Some(api_version), Some(kind)) => self.api(event, api_version, kind).await,
            _ => self.api(event, &event.api_version, &event.key.kind).await,
        }
    }

    async fn api(
        &self,
        event: &ChangeEvent,
        api_version: &str,
        kind: &str,
    ) -> Result<Api<DynamicObject>> {
        let (resource, scope) = self
            .kinds
            .resolve(api_version, kind)
            .await
            .map_err(Error::Kind)?;
        let client = self.client.clone();
        match scope {
            Scope::Cluster => Ok(Api::all_with(client, &resource)),
            Scope::Namespaced if event.key.namespace.is_empty() => Err(Error::NoNamespace {
                key: event.key.to_string(),
            }),
            Scope::Namespaced => Ok(Api::namespaced_with(
                client,
                &event.key.namespace,
                &resource,
            )),
        }
    }
}

/// `apply`, `patch`, `create`, `delete`.
fn verb(action: &RevertAction) -> &'static str {
    match action {
        RevertAction::Apply { .. } => "apply",
        RevertAction::Patch { .. } => "patch",
        RevertAction::Create { .. } => "create",
        RevertAction::Delete { .. } => "delete",
    }
}

/// `patch` led by a test that the object is still at `resource_version`.
fn guarded(patch: &Value, resource_version: &str) -> serde_json::Result<Patch<Value>> {
    let mut ops = vec![json!({
        "op": "test",
        "path": "/metadata/resourceVersion",
        "value": resource_version,
    })];
    ops.extend(serde_json::from_value::<Vec<Value>>(patch.clone())?);
    Ok(Patch::Json(serde_json::from_value(Value::Array(ops))?))
}

fn strip_server_fields(manifest: &mut Value) {
    let Some(object) = manifest.as_object_mut() else {
        return;
    };
    object.remove("status");
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for name in SERVER_METADATA {
            metadata.remove(*name);
        }
    }
}

/// Whether `current` differs from the `seen` state (a change event's
/// object, Secret values as digests) only by churn, as the watcher counts it.
fn only_churn_since(
    current: &impl Serialize,
    seen: &Value,
    digest_key: &model::redact::DigestKey,
) -> bool {
    let Ok(mut current) = serde_json::to_value(current) else {
        return false;
    };
    digest_key.redact_secret(&mut current);
    model::churn::is_churn(&current, seen)
}

fn reverted(object: &DynamicObject) -> Outcome {
    Outcome::Reverted {
        resource_version: object.metadata.resource_version.clone(),
    }
}

fn deleted_since(event: &ChangeEvent) -> Outcome {
    Outcome::Superseded {
        detail: format!("{} was deleted before the revert", event.key.name),
    }
}

fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn rejected(event: &ChangeEvent, verb: &'static str, err: &kube::Error) -> Error {
    Error::Rejected {
        key: event.key.to_string(),
        verb,
        detail: detail(event, err),
    }
}

/// What the apiserver said; for a Secret only the reason and code, since
/// validation messages may quote values.
fn detail(event: &ChangeEvent, err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) if event.key.kind == "Secret" => format!(
            "{} ({}); the message is withheld for Secrets",
            status.reason, status.code
        ),
        kube::Error::Api(status) => {
            format!("{}: {} ({})", status.reason, status.message, status.code)
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> model::redact::DigestKey {
        model::redact::DigestKey::from_bytes([2; 32])
    }

    #[test]
    fn manifests_lose_server_owned_fields_before_they_are_written() {
        let mut manifest = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cfg", "resourceVersion": "5", "uid": "u",
                         "managedFields": [], "creationTimestamp": "2020-01-01T00:00:00Z",
                         "labels": {"app": "web"}},
            "data": {"a": "1"},
            "status": {},
        });
        strip_server_fields(&mut manifest);
        assert_eq!(
            manifest,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "cfg", "labels": {"app": "web"}},
                   "data": {"a": "1"}})
        );
    }

    #[test]
    fn status_and_controller_bookkeeping_are_churn() {
        let seen = json!({
            "metadata": {"resourceVersion": "1", "generation": 1, "labels": {"x": "1"}},
            "spec": {"replicas": 1},
        });
        let later = json!({
            "metadata": {"resourceVersion": "2", "generation": 1, "labels": {"x": "1"},
                         "annotations": {"deployment.kubernetes.io/revision": "2"},
                         "managedFields": [{"manager": "kube-controller-manager"}]},
            "spec": {"replicas": 1},
            "status": {"replicas": 1},
        });
        assert!(only_churn_since(&later, &seen, &key()));
        let mut changed = later.clone();
        changed["metadata"]["labels"]["x"] = json!("2");
        assert!(!only_churn_since(&changed, &seen, &key()));
    }

    #[test]
    fn secret_values_are_compared_as_digests() {
        let mut seen = json!({"kind": "Secret", "metadata": {"labels": {"x": "1"}},
                              "data": {"token": "c2VjcmV0"}});
        let current = seen.clone();
        key().redact_secret(&mut seen);
        assert!(only_churn_since(&current, &seen, &key()));
        let mut rotated = current.clone();
        rotated["data"]["token"] = json!("bmV3");
        assert!(!only_churn_since(&rotated, &seen, &key()));
    }

    #[test]
    fn patches_are_led_by_a_resource_version_test() {
        let planned = json!([{"op": "remove", "path": "/metadata/labels/x"}]);
        let Patch::Json(patch) = guarded(&planned, "41").expect("valid patch") else {
            panic!("a JSON patch");
        };
        assert_eq!(
            serde_json::to_value(&patch).expect("serializes"),
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "41"},
                {"op": "remove", "path": "/metadata/labels/x"},
            ])
        );
        assert!(guarded(&json!({"op": "remove"}), "41").is_err());
    }

    /// A resolver that knows no kind.
    struct NoKinds;

    impl ResolveKind for NoKinds {
        fn resolve<'a>(&'a self, api_version: &'a str, kind: &'a str) -> Resolving<'a> {
            let err = format!("kind `{kind}` of `{api_version}` is not served; install its CRD");
            Box::pin(std::future::ready(Err(err.into())))
        }
    }

    #[tokio::test]
    async fn a_kind_that_does_not_resolve_fails_the_revert_with_the_resolvers_error() {
        // Nothing listens there: the revert must fail before any request.
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URL"));
        let client = kube::Client::try_from(config).expect("a client");
        let executor = Executor::new(client, NoKinds, key());
        let event = ChangeEvent::new(
            model::ObjectKey::new("c", "example.invalid", "Widget", "ns", "w"),
            "example.invalid/v1",
            "uid-1",
            "7",
            model::ChangeKind::Modified,
            chrono::Utc::now(),
            json!({}),
        );
        let action = RevertAction::Delete {
            uid: "uid-1".to_owned(),
        };

        let outcome = executor.execute(&event, &action, None).await;

        assert_eq!(
            outcome,
            Outcome::Failed {
                error: "kind `Widget` of `example.invalid/v1` is not served; install its CRD"
                    .to_owned()
            }
        );
    }
}
