//! The executor against the real test apiserver (`cargo xtask env up`).
//! Each test works in its own namespace; the people who change objects are
//! played by the built kubectl with their own credentials, Driftwarden by
//! the executor with the admin client. Kinds resolve from a fixed table
//! ([`KnownKinds`]): discovery itself is the watch crate's, tested there.

use anyhow::{Context, Result, ensure};
use chrono::Utc;
use driftwarden_enforce::{Executor, PlanInput, ResolveKind, Resolving, plan};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ApiResource, Patch, PatchParams, PostParams};
use kube::discovery::Scope;
use kube::{Resource, ResourceExt};
use model::{
    ChangeEvent, ChangeKind, DriftKind, FieldPath, ObjectKey, Outcome, RevertAction, Verdict,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use testenv::{TestEnv, TestNamespace, User, deployment};

const CLUSTER: &str = "e2e";

/// The kinds these tests write, as discovery resolves them; any other kind
/// fails the way the watch crate's discovery says so.
struct KnownKinds;

impl ResolveKind for KnownKinds {
    fn resolve<'a>(&'a self, api_version: &'a str, kind: &'a str) -> Resolving<'a> {
        let resolved = match (api_version, kind) {
            ("v1", "ConfigMap") => Ok((ApiResource::erase::<ConfigMap>(&()), Scope::Namespaced)),
            ("apps/v1", "Deployment") => {
                Ok((ApiResource::erase::<Deployment>(&()), Scope::Namespaced))
            }
            _ => Err(format!(
                "cannot resolve kind `{kind}` of `{api_version}` through discovery; check the \
                 spelling, and for a custom resource that its CRD is installed"
            )
            .into()),
        };
        Box::pin(std::future::ready(resolved))
    }
}

/// A test's namespace, the executor and typed APIs in it.
struct Fixture {
    ns: TestNamespace,
    executor: Executor,
    config_maps: Api<ConfigMap>,
    deployments: Api<Deployment>,
}

impl Fixture {
    async fn new(prefix: &str) -> Result<Self> {
        let env = TestEnv::get();
        let ns = env.fresh_namespace(prefix).await?;
        let client = env.client(User::Admin).await?;
        Ok(Self {
            executor: Executor::new(
                client.clone(),
                KnownKinds,
                model::redact::DigestKey::from_bytes([4; 32]),
            ),
            config_maps: Api::namespaced(client.clone(), &ns.name),
            deployments: Api::namespaced(client, &ns.name),
            ns,
        })
    }

    /// Runs kubectl as Mallory in the test namespace.
    fn mallory(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", &self.ns.name];
        all.extend_from_slice(args);
        TestEnv::get().kubectl_ok(User::Mallory, &all)
    }

    /// The ConfigMap manifest git would declare.
    fn config_map(&self, name: &str, data: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": self.ns.name, "labels": {"app": name}},
            "data": data,
        })
    }

    /// A ConfigMap created in the namespace.
    async fn config_map_object(&self) -> Result<ConfigMap> {
        create(
            &self.config_maps,
            &self.config_map("cfg", json!({"a": "1"})),
        )
        .await
    }

    /// The Deployment manifest git would declare.
    fn deployment(&self, name: &str, replicas: i32) -> Result<Value> {
        let mut manifest = serde_json::to_value(deployment(name, replicas))?;
        manifest["metadata"]["namespace"] = json!(self.ns.name);
        Ok(manifest)
    }
}

/// Creates `manifest` through `api` as the admin.
async fn create<K>(api: &Api<K>, manifest: &Value) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(manifest.clone())?;
    Ok(api.create(&PostParams::default(), &object).await?)
}

/// The change event the watcher would emit for `object`.
fn event_of<K>(object: &K, kind: ChangeKind) -> Result<ChangeEvent>
where
    K: Resource<DynamicType = ()> + Serialize,
{
    let mut value = serde_json::to_value(object)?;
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    let meta = object.meta();
    Ok(ChangeEvent::new(
        ObjectKey::new(
            CLUSTER,
            K::group(&()),
            K::kind(&()),
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().context("object has a name")?,
        ),
        K::api_version(&()),
        meta.uid.clone().context("object has a uid")?,
        meta.resource_version
            .clone()
            .context("object has a resourceVersion")?,
        kind,
        Utc::now(),
        value,
    ))
}

/// The revert of an out-of-band change of `paths`, planned from `last_good`.
fn plan_out_of_band(
    event: &ChangeEvent,
    last_good: &Value,
    paths: &[&str],
) -> Result<RevertAction> {
    let paths = paths
        .iter()
        .map(|p| p.parse::<FieldPath>())
        .collect::<Result<Vec<_>, _>>()?;
    let verdict = Verdict::Drift {
        drift: DriftKind::OutOfBand { paths },
    };
    plan(&PlanInput {
        event,
        verdict: &verdict,
        desired: None,
        last_good: Some(last_good),
        prune: false,
    })
    .context("an inverse patch is planned")
}

fn reverted_version(outcome: &Outcome) -> Result<String> {
    match outcome {
        Outcome::Reverted {
            resource_version: Some(rv),
        } => Ok(rv.clone()),
        other => anyhow::bail!("expected a revert with a resourceVersion, got {other:?}"),
    }
}

fn labels(object: &impl ResourceExt) -> Vec<(String, String)> {
    object
        .labels()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[tokio::test]
async fn apply_reverts_a_changed_config_map_value() -> Result<()> {
    let f = Fixture::new("enforce-apply-cm").await?;
    let desired = f.config_map("cfg", json!({"level": "info"}));
    create(&f.config_maps, &desired).await?;
    f.mallory(&[
        "patch",
        "configmap",
        "cfg",
        "-p",
        r#"{"data":{"level":"debug"}}"#,
    ])?;
    let event = event_of(&f.config_maps.get("cfg").await?, ChangeKind::Modified)?;

    let action = RevertAction::Apply {
        commit: "c1".into(),
    };
    let outcome = f.executor.execute(&event, &action, Some(&desired)).await;

    let rv = reverted_version(&outcome)?;
    let now = f.config_maps.get("cfg").await?;
    ensure!(
        now.data == Some([("level".into(), "info".into())].into()),
        "{now:?}"
    );
    ensure!(
        now.resource_version() == Some(rv),
        "the outcome names the new version"
    );
    Ok(())
}

#[tokio::test]
async fn apply_reverts_a_scaled_deployment() -> Result<()> {
    let f = Fixture::new("enforce-apply-deploy").await?;
    let desired = f.deployment("web", 2)?;
    create(&f.deployments, &desired).await?;
    f.mallory(&["scale", "deployment", "web", "--replicas=5"])?;
    let scaled = f.deployments.get("web").await?;
    ensure!(scaled.spec.as_ref().and_then(|s| s.replicas) == Some(5));
    let event = event_of(&scaled, ChangeKind::Modified)?;

    let action = RevertAction::Apply {
        commit: "c1".into(),
    };
    let outcome = f.executor.execute(&event, &action, Some(&desired)).await;

    reverted_version(&outcome)?;
    let now = f.deployments.get("web").await?;
    ensure!(
        now.spec.as_ref().and_then(|s| s.replicas) == Some(2),
        "{:?}",
        now.spec
    );
    Ok(())
}

#[tokio::test]
async fn apply_never_clobbers_a_newer_write() -> Result<()> {
    let f = Fixture::new("enforce-apply-newer").await?;
    let desired = f.config_map("cfg", json!({"level": "info"}));
    create(&f.config_maps, &desired).await?;
    f.mallory(&[
        "patch",
        "configmap",
        "cfg",
        "-p",
        r#"{"data":{"level":"debug"}}"#,
    ])?;
    let event = event_of(&f.config_maps.get("cfg").await?, ChangeKind::Modified)?;
    // A legitimate write lands between the judgement and the revert.
    f.mallory(&[
        "patch",
        "configmap",
        "cfg",
        "-p",
        r#"{"data":{"level":"trace"}}"#,
    ])?;

    let action = RevertAction::Apply {
        commit: "c1".into(),
    };
    let outcome = f.executor.execute(&event, &action, Some(&desired)).await;

    let Outcome::Superseded { detail } = &outcome else {
        anyhow::bail!("expected superseded, got {outcome:?}");
    };
    ensure!(detail.contains(&event.resource_version), "{detail}");
    let now = f.config_maps.get("cfg").await?;
    ensure!(
        now.data == Some([("level".into(), "trace".into())].into()),
        "the newer state is untouched: {now:?}"
    );
    Ok(())
}

#[tokio::test]
async fn apply_goes_through_when_only_churn_changed_the_object() -> Result<()> {
    let f = Fixture::new("enforce-apply-churn").await?;
    let desired = f.deployment("web", 2)?;
    create(&f.deployments, &desired).await?;
    f.mallory(&["scale", "deployment", "web", "--replicas=5"])?;
    let event = event_of(&f.deployments.get("web").await?, ChangeKind::Modified)?;
    // Controller bookkeeping moves the version on without a real change.
    let status = json!({"status": {"observedGeneration": 7}});
    f.deployments
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await?;

    let action = RevertAction::Apply {
        commit: "c1".into(),
    };
    let outcome = f.executor.execute(&event, &action, Some(&desired)).await;

    reverted_version(&outcome)?;
    let now = f.deployments.get("web").await?;
    ensure!(
        now.spec.as_ref().and_then(|s| s.replicas) == Some(2),
        "{:?}",
        now.spec
    );
    Ok(())
}

#[tokio::test]
async fn patch_reverts_an_added_label() -> Result<()> {
    let f = Fixture::new("enforce-patch-label").await?;
    create(&f.config_maps, &f.config_map("cfg", json!({"a": "1"}))).await?;
    let good = serde_json::to_value(f.config_maps.get("cfg").await?)?;
    f.mallory(&["label", "configmap", "cfg", "owner=mallory"])?;
    let event = event_of(&f.config_maps.get("cfg").await?, ChangeKind::Modified)?;
    let action = plan_out_of_band(&event, &good, &["metadata.labels.owner"])?;

    let outcome = f.executor.execute(&event, &action, None).await;

    let rv = reverted_version(&outcome)?;
    let now = f.config_maps.get("cfg").await?;
    ensure!(
        labels(&now) == [("app".into(), "cfg".into())],
        "{:?}",
        labels(&now)
    );
    ensure!(now.resource_version() == Some(rv));
    Ok(())
}

#[tokio::test]
async fn patch_never_clobbers_a_newer_write() -> Result<()> {
    let f = Fixture::new("enforce-patch-newer").await?;
    create(&f.config_maps, &f.config_map("cfg", json!({"a": "1"}))).await?;
    let good = serde_json::to_value(f.config_maps.get("cfg").await?)?;
    f.mallory(&["label", "configmap", "cfg", "owner=mallory"])?;
    let event = event_of(&f.config_maps.get("cfg").await?, ChangeKind::Modified)?;
    let action = plan_out_of_band(&event, &good, &["metadata.labels.owner"])?;
    f.mallory(&["label", "configmap", "cfg", "team=red"])?;

    let outcome = f.executor.execute(&event, &action, None).await;

    let Outcome::Superseded { detail } = &outcome else {
        anyhow::bail!("expected superseded, got {outcome:?}");
    };
    ensure!(detail.contains(&event.resource_version), "{detail}");
    let now = f.config_maps.get("cfg").await?;
    let labels = labels(&now);
    ensure!(
        labels.contains(&("owner".into(), "mallory".into()))
            && labels.contains(&("team".into(), "red".into())),
        "the newer state is untouched: {labels:?}"
    );
    Ok(())
}

#[tokio::test]
async fn patch_removes_injected_env_vars_by_merge_key_despite_status_updates() -> Result<()> {
    let f = Fixture::new("enforce-patch-env").await?;
    create(&f.deployments, &f.deployment("web", 1)?).await?;
    let good = serde_json::to_value(f.deployments.get("web").await?)?;
    f.mallory(&["set", "env", "deployment/web", "DEBUG=1", "TRACE=1"])?;
    let event = event_of(&f.deployments.get("web").await?, ChangeKind::Modified)?;
    let action = plan_out_of_band(
        &event,
        &good,
        &[
            "spec.template.spec.containers[name=app].env[name=DEBUG]",
            "spec.template.spec.containers[name=app].env[name=TRACE]",
        ],
    )?;
    // Status written after the drift was seen, as controllers do: churn,
    // not a newer write.
    let status = json!({"status": {"collisionCount": 7}});
    f.deployments
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await?;

    let outcome = f.executor.execute(&event, &action, None).await;

    reverted_version(&outcome)?;
    let now = f.deployments.get("web").await?;
    let env = now
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.into_iter().next())
        .and_then(|c| c.env)
        .unwrap_or_default();
    ensure!(env.is_empty(), "{env:?}");
    Ok(())
}

#[tokio::test]
async fn create_recreates_a_deleted_config_map_once() -> Result<()> {
    let f = Fixture::new("enforce-create").await?;
    let desired = f.config_map("cfg", json!({"a": "1"}));
    let before = create(&f.config_maps, &desired).await?;
    f.mallory(&["delete", "configmap", "cfg"])?;
    let event = event_of(&before, ChangeKind::Deleted)?;
    let action = RevertAction::Create {
        commit: "c1".into(),
    };

    let outcome = f.executor.execute(&event, &action, Some(&desired)).await;

    let rv = reverted_version(&outcome)?;
    let now = f.config_maps.get("cfg").await?;
    ensure!(
        now.data == Some([("a".into(), "1".into())].into()),
        "{now:?}"
    );
    ensure!(now.uid() != before.uid(), "a new incarnation");
    ensure!(now.resource_version() == Some(rv));

    let again = f.executor.execute(&event, &action, Some(&desired)).await;
    ensure!(matches!(again, Outcome::Superseded { .. }), "{again:?}");
    Ok(())
}

#[tokio::test]
async fn delete_removes_an_unmanaged_object_when_pruning() -> Result<()> {
    let f = Fixture::new("enforce-delete").await?;
    f.mallory(&["create", "configmap", "stray", "--from-literal=x=1"])?;
    let event = event_of(&f.config_maps.get("stray").await?, ChangeKind::Added)?;
    let action = plan(&PlanInput {
        event: &event,
        verdict: &Verdict::Unmanaged,
        desired: None,
        last_good: None,
        prune: true,
    })
    .context("a delete is planned")?;

    let outcome = f.executor.execute(&event, &action, None).await;

    ensure!(matches!(outcome, Outcome::Reverted { .. }), "{outcome:?}");
    ensure!(f.config_maps.get_opt("stray").await?.is_none(), "deleted");
    Ok(())
}

#[tokio::test]
async fn delete_leaves_a_recreated_incarnation_alone() -> Result<()> {
    let f = Fixture::new("enforce-delete-uid").await?;
    f.mallory(&["create", "configmap", "stray", "--from-literal=x=1"])?;
    let first = f.config_maps.get("stray").await?;
    let event = event_of(&first, ChangeKind::Added)?;
    f.mallory(&["delete", "configmap", "stray"])?;
    f.mallory(&["create", "configmap", "stray", "--from-literal=x=2"])?;
    let action = RevertAction::Delete {
        uid: event.uid.clone(),
    };

    let outcome = f.executor.execute(&event, &action, None).await;

    ensure!(matches!(outcome, Outcome::Superseded { .. }), "{outcome:?}");
    let now = f.config_maps.get("stray").await?;
    ensure!(
        now.uid() != first.uid(),
        "the second incarnation is still there"
    );
    Ok(())
}

#[tokio::test]
async fn an_unknown_kind_fails_with_a_clear_error() -> Result<()> {
    let f = Fixture::new("enforce-unknown").await?;
    let mut event = event_of(&f.config_map_object().await?, ChangeKind::Modified)?;
    event.api_version = "example.invalid/v1".into();
    event.key.kind = "Widget".into();
    let action = RevertAction::Delete {
        uid: event.uid.clone(),
    };

    let outcome = f.executor.execute(&event, &action, None).await;

    let Outcome::Failed { error } = &outcome else {
        anyhow::bail!("expected a failure, got {outcome:?}");
    };
    ensure!(
        error.contains("Widget") && error.contains("discovery"),
        "{error}"
    );
    ensure!(
        f.config_maps.get_opt("cfg").await?.is_some(),
        "the ConfigMap of the same name is untouched"
    );
    Ok(())
}
