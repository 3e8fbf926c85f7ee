//! The watcher and the audit parser against the real test apiserver
//! (`cargo xtask env up`). Each test works in its own namespace; people are
//! played by the built kubectl with their own credentials.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use driftwarden_watch::{
    KnownObject, WatchSpec, discovery, parse_audit_batch, secret_digest, watch,
};
use futures::StreamExt;
use kube::discovery::Scope;
use model::{ChangeEvent, ChangeKind};
use serde_json::{Value, json};
use testenv::{TestEnv, TestNamespace, User};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const CLUSTER: &str = "e2e";

/// The ConfigMap a controller publishes into every namespace at its own
/// pace; the tests ignore it so that their own objects are all they see.
const CA_BUNDLE: &str = "kube-root-ca.crt";

/// How long an expected event may take (it normally takes milliseconds).
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A watcher running in the background, its events in a channel.
struct Watching {
    events: mpsc::Receiver<Result<ChangeEvent, String>>,
    task: JoinHandle<()>,
}

impl Watching {
    /// Watches ConfigMaps, Secrets, Deployments and ReplicaSets in `namespace`
    /// as the admin, with `configure` applied to the spec.
    async fn start(
        namespace: &str,
        configure: impl FnOnce(WatchSpec) -> WatchSpec,
    ) -> Result<Self> {
        let spec = configure(
            WatchSpec::new(CLUSTER)
                .kind("v1", "ConfigMap")
                .kind("v1", "Secret")
                .kind("apps/v1", "Deployment")
                .kind("apps/v1", "ReplicaSet")
                .namespace(namespace),
        );
        let client = TestEnv::get().client(User::Admin).await?;
        let (tx, events) = mpsc::channel(1024);
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(watch(client, spec));
            while let Some(item) = stream.next().await {
                if item.as_ref().is_ok_and(|event| event.key.name == CA_BUNDLE) {
                    continue;
                }
                let item = item.map_err(|err| format!("{:#}", anyhow::Error::new(err)));
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        });
        Ok(Self { events, task })
    }

    /// The next event; fails on a watch error or after [`EVENT_TIMEOUT`].
    async fn next(&mut self) -> Result<ChangeEvent> {
        match tokio::time::timeout(EVENT_TIMEOUT, self.events.recv()).await {
            Ok(Some(Ok(event))) => Ok(event),
            Ok(Some(Err(err))) => bail!("watch error: {err}"),
            Ok(None) => bail!("the watch stream ended"),
            Err(_) => bail!("no change event within {EVENT_TIMEOUT:?}"),
        }
    }

    /// The next event about the object named `name`; events about other
    /// objects are returned alongside, in arrival order.
    async fn next_for(&mut self, name: &str) -> Result<(ChangeEvent, Vec<ChangeEvent>)> {
        let mut others = Vec::new();
        loop {
            let event = self.next().await?;
            if event.key.name == name {
                return Ok((event, others));
            }
            others.push(event);
        }
    }

    /// Every event arriving within `quiet` (the watcher is live, so a write
    /// shows up within milliseconds).
    async fn drain_for(&mut self, quiet: Duration) -> Result<Vec<ChangeEvent>> {
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + quiet;
        while let Ok(item) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            match item {
                Some(Ok(event)) => events.push(event),
                Some(Err(err)) => bail!("watch error: {err}"),
                None => bail!("the watch stream ended"),
            }
        }
        Ok(events)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fresh namespace where alice may edit too (she has `edit` only in her
/// team's namespace otherwise).
async fn namespace(prefix: &str) -> Result<TestNamespace> {
    let env = TestEnv::get();
    let ns = env.fresh_namespace(prefix).await?;
    env.kubectl_ok(
        User::Admin,
        &[
            "-n",
            &ns.name,
            "create",
            "rolebinding",
            "alice-edit",
            "--clusterrole=edit",
            "--user=alice",
        ],
    )?;
    Ok(ns)
}

fn kubectl(user: User, ns: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    TestEnv::get().kubectl_ok(user, &all)
}

fn resource_version(ns: &str, what: &str) -> Result<String> {
    kubectl(
        User::Admin,
        ns,
        &["get", what, "-o", "jsonpath={.metadata.resourceVersion}"],
    )
}

/// A manifest file for `kubectl apply -f`.
fn manifest(value: &Value) -> Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("manifest.json");
    std::fs::write(&path, serde_json::to_vec(value)?)?;
    Ok((dir, path))
}

fn path_text(path: &std::path::Path) -> Result<&str> {
    path.to_str().context("temporary path is not UTF-8")
}

fn managers(event: &ChangeEvent) -> Vec<&str> {
    event
        .managed_fields
        .iter()
        .map(|m| m.manager.as_str())
        .collect()
}

/// Starts a watcher once `marker` exists, and returns when the watcher has
/// listed it: later writes then arrive as watch events, not in the listing.
async fn start_after_listing(ns: &str, record_derived: bool) -> Result<Watching> {
    kubectl(User::Admin, ns, &["create", "configmap", "marker"])?;
    let mut watching = Watching::start(ns, |spec| spec.record_derived(record_derived)).await?;
    let (listed, _) = watching.next_for("marker").await?;
    ensure!(
        listed.kind == ChangeKind::Resync,
        "marker came as {:?}",
        listed.kind
    );
    Ok(watching)
}

#[tokio::test]
async fn config_map_created_patched_and_edited_yields_added_then_modified_with_managers()
-> Result<()> {
    let ns = namespace("watch-cm").await?;
    let mut watching = start_after_listing(&ns.name, false).await?;

    kubectl(
        User::Alice,
        &ns.name,
        &["create", "configmap", "cfg", "--from-literal=k=v1"],
    )?;
    let created_rv = resource_version(&ns.name, "configmap/cfg")?;
    let (added, _) = watching.next_for("cfg").await?;
    assert_eq!(added.kind, ChangeKind::Added);
    assert_eq!(
        added.key.to_string(),
        format!("{CLUSTER}/core/ConfigMap/{}/cfg", ns.name)
    );
    assert_eq!(added.api_version, "v1");
    assert_eq!(added.resource_version, created_rv);
    assert_eq!(added.object["data"], json!({"k": "v1"}));
    assert!(
        managers(&added).contains(&"kubectl-create"),
        "{:?}",
        added.managed_fields
    );
    assert!(added.object.pointer("/metadata/managedFields").is_none());
    assert!(!added.derived);

    kubectl(
        User::Alice,
        &ns.name,
        &[
            "patch",
            "configmap",
            "cfg",
            "--type=merge",
            "-p",
            r#"{"data":{"k":"v2"}}"#,
        ],
    )?;
    let patched_rv = resource_version(&ns.name, "configmap/cfg")?;
    let (modified, _) = watching.next_for("cfg").await?;
    assert_eq!(modified.kind, ChangeKind::Modified);
    assert_eq!(modified.uid, added.uid);
    assert_eq!(modified.resource_version, patched_rv);
    assert_eq!(modified.object["data"], json!({"k": "v2"}));
    let patch = modified
        .managed_fields
        .iter()
        .find(|m| m.manager == "kubectl-patch")
        .context("a kubectl-patch manager entry")?;
    assert_eq!(patch.operation, "Update");
    assert!(
        patch.fields.iter().any(|f| f.to_string() == "data.k"),
        "{:?}",
        patch.fields
    );

    // `kubectl edit` with an editor that rewrites the value in place.
    let env = TestEnv::get();
    let edit = std::process::Command::new(&env.kubectl)
        .arg("--kubeconfig")
        .arg(env.kubeconfig(User::Alice))
        .args(["-n", &ns.name, "edit", "configmap", "cfg"])
        .env("KUBE_EDITOR", "sed -i -e s/v2/v3/")
        .output()?;
    ensure!(
        edit.status.success(),
        "kubectl edit failed: {}",
        String::from_utf8_lossy(&edit.stderr)
    );
    let (edited, _) = watching.next_for("cfg").await?;
    assert_eq!(edited.kind, ChangeKind::Modified);
    assert_eq!(edited.object["data"], json!({"k": "v3"}));
    assert!(
        managers(&edited).contains(&"kubectl-edit"),
        "{:?}",
        edited.managed_fields
    );
    Ok(())
}

#[tokio::test]
async fn ownership_only_and_status_only_writes_yield_no_event() -> Result<()> {
    let ns = namespace("watch-churn").await?;
    let mut watching = start_after_listing(&ns.name, false).await?;

    // A server-side apply of identical content by another manager changes
    // only managedFields: the object gets a new resourceVersion, no event.
    kubectl(
        User::Mallory,
        &ns.name,
        &["create", "configmap", "cfg", "--from-literal=k=v"],
    )?;
    let (added, _) = watching.next_for("cfg").await?;
    let same = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": ns.name},
        "data": {"k": "v"}
    });
    let (_dir, path) = manifest(&same)?;
    kubectl(
        User::Mallory,
        &ns.name,
        &[
            "apply",
            "--server-side",
            "--field-manager=co-owner",
            "-f",
            path_text(&path)?,
        ],
    )?;
    let after_apply = resource_version(&ns.name, "configmap/cfg")?;
    assert_ne!(
        after_apply, added.resource_version,
        "the apply must have written something"
    );

    // The Deployment controller writes status and the revision annotation.
    kubectl(
        User::Mallory,
        &ns.name,
        &[
            "create",
            "deployment",
            "web",
            "--image=registry.invalid/app:1",
        ],
    )?;
    let (deployment, _) = watching.next_for("web").await?;
    assert_eq!(deployment.kind, ChangeKind::Added);
    let name = ns.name.clone();
    testenv::eventually(
        EVENT_TIMEOUT,
        "controller writes the deployment status",
        || {
            let observed = kubectl(
                User::Admin,
                &name,
                &[
                    "get",
                    "deployment/web",
                    "-o",
                    "jsonpath={.status.observedGeneration}",
                ],
            );
            async move { Ok((!observed?.is_empty()).then_some(())) }
        },
    )
    .await?;
    let controller_rv = resource_version(&ns.name, "deployment/web")?;
    assert_ne!(controller_rv, deployment.resource_version);

    let late = watching.drain_for(Duration::from_secs(2)).await?;
    let late: Vec<String> = late
        .iter()
        .map(|e| format!("{:?} {}", e.kind, e.key))
        .collect();
    assert!(late.is_empty(), "churn leaked through: {late:?}");
    Ok(())
}

#[tokio::test]
async fn secret_values_never_leave_the_watcher() -> Result<()> {
    let ns = namespace("watch-secret").await?;
    let mut watching = start_after_listing(&ns.name, false).await?;
    let canary = format!("canary-{}", testenv::unique_suffix());
    let encoded = base64::engine::general_purpose::STANDARD.encode(&canary);

    // Client-side apply stores the whole manifest, canary included, in the
    // last-applied annotation.
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": ns.name},
        "stringData": {"password": canary}
    });
    let (_dir, path) = manifest(&secret)?;
    kubectl(User::Mallory, &ns.name, &["apply", "-f", path_text(&path)?])?;
    let (added, _) = watching.next_for("db").await?;
    let patch = json!({"stringData": {"token": canary}}).to_string();
    kubectl(
        User::Mallory,
        &ns.name,
        &["patch", "secret", "db", "--type=merge", "-p", &patch],
    )?;
    let (modified, _) = watching.next_for("db").await?;

    let digest = secret_digest(canary.as_bytes());
    assert_eq!(added.object["data"]["password"], json!(digest));
    assert_eq!(modified.object["data"]["token"], json!(digest));
    let annotation = &added.object["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"];
    assert!(
        annotation
            .as_str()
            .is_some_and(|a| a.starts_with("sha256:")),
        "{annotation}"
    );
    for event in [&added, &modified] {
        let text = serde_json::to_string(event)?;
        assert!(!text.contains(&canary), "plaintext canary in {text}");
        assert!(!text.contains(&encoded), "base64 canary in {text}");
    }
    Ok(())
}

#[tokio::test]
async fn deletion_yields_deleted() -> Result<()> {
    let ns = namespace("watch-delete").await?;
    let mut watching = start_after_listing(&ns.name, false).await?;
    kubectl(User::Mallory, &ns.name, &["create", "configmap", "doomed"])?;
    let (added, _) = watching.next_for("doomed").await?;
    kubectl(User::Mallory, &ns.name, &["delete", "configmap", "doomed"])?;
    let (deleted, _) = watching.next_for("doomed").await?;
    assert_eq!(deleted.kind, ChangeKind::Deleted);
    assert_eq!(deleted.uid, added.uid);
    assert_eq!(deleted.key, added.key);
    assert_ne!(deleted.resource_version, added.resource_version);
    Ok(())
}

#[tokio::test]
async fn restarted_watcher_resyncs_and_reports_deletions_while_stopped() -> Result<()> {
    let ns = namespace("watch-restart").await?;
    for name in ["kept", "removed"] {
        kubectl(User::Mallory, &ns.name, &["create", "configmap", name])?;
    }
    let mut first = Watching::start(&ns.name, |spec| spec).await?;
    let mut known = Vec::new();
    while known.len() < 2 {
        let event = first.next().await?;
        assert_eq!(event.kind, ChangeKind::Resync, "{}", event.key);
        known.push(event);
    }
    drop(first);
    let removed = known
        .iter()
        .find(|e| e.key.name == "removed")
        .context("the listing had `removed`")?
        .clone();

    kubectl(User::Mallory, &ns.name, &["delete", "configmap", "removed"])?;
    kubectl(
        User::Mallory,
        &ns.name,
        &["label", "configmap", "kept", "edited=while-stopped"],
    )?;
    let kept_rv = resource_version(&ns.name, "configmap/kept")?;

    let mut second = Watching::start(&ns.name, |spec| {
        spec.known(known.iter().map(KnownObject::from))
    })
    .await?;
    let mut events = vec![second.next().await?, second.next().await?];
    events.sort_by(|a, b| a.key.name.cmp(&b.key.name));
    let [kept, gone] = events.as_slice() else {
        bail!("expected two events");
    };
    assert_eq!(
        (kept.kind, kept.key.name.as_str()),
        (ChangeKind::Resync, "kept")
    );
    assert_eq!(kept.resource_version, kept_rv);
    assert_eq!(
        kept.object["metadata"]["labels"]["edited"],
        json!("while-stopped")
    );
    assert_eq!(
        (gone.kind, gone.key.name.as_str()),
        (ChangeKind::Deleted, "removed")
    );
    assert_eq!(gone.uid, removed.uid);
    assert_eq!(gone.key, removed.key);
    assert_ne!(gone.resource_version, removed.resource_version);
    let quiet = second.drain_for(Duration::from_secs(1)).await?;
    assert!(quiet.is_empty(), "{quiet:?}");
    Ok(())
}

#[tokio::test]
async fn replica_sets_of_a_deployment_are_skipped_or_marked_derived() -> Result<()> {
    let ns = namespace("watch-derived").await?;
    let mut skipping = start_after_listing(&ns.name, false).await?;
    let mut recording = Watching::start(&ns.name, |spec| spec.record_derived(true)).await?;
    recording.next_for("marker").await?;

    kubectl(
        User::Mallory,
        &ns.name,
        &[
            "create",
            "deployment",
            "web",
            "--image=registry.invalid/app:1",
        ],
    )?;
    let replica_set = loop {
        let event = recording.next().await?;
        if event.key.kind == "ReplicaSet" {
            break event;
        }
    };
    assert!(replica_set.derived, "{}", replica_set.key);
    assert_eq!(replica_set.key.group, "apps");

    let seen = skipping.drain_for(Duration::from_secs(2)).await?;
    let kinds: Vec<&str> = seen.iter().map(|e| e.key.kind.as_str()).collect();
    assert!(kinds.contains(&"Deployment"), "{kinds:?}");
    assert!(!kinds.contains(&"ReplicaSet"), "{kinds:?}");
    Ok(())
}

#[tokio::test]
async fn audit_record_of_a_patch_joins_the_watch_event() -> Result<()> {
    let env = TestEnv::get();
    let ns = namespace("watch-audit").await?;
    let mut watching = start_after_listing(&ns.name, false).await?;
    kubectl(
        User::Alice,
        &ns.name,
        &["create", "configmap", "cfg", "--from-literal=k=v1"],
    )?;
    watching.next_for("cfg").await?;
    let mut audit_log = env.audit_log()?;

    kubectl(
        User::Alice,
        &ns.name,
        &[
            "patch",
            "configmap",
            "cfg",
            "--type=merge",
            "-p",
            r#"{"data":{"k":"v2"}}"#,
        ],
    )?;
    let (modified, _) = watching.next_for("cfg").await?;
    let name = ns.name.clone();
    let raw = audit_log
        .wait_for(EVENT_TIMEOUT, move |event| {
            event["verb"] == "patch"
                && event["stage"] == "ResponseComplete"
                && event["objectRef"]["namespace"] == json!(name)
                && event["objectRef"]["name"] == "cfg"
        })
        .await?;
    let body = json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [raw]});
    let records = parse_audit_batch(CLUSTER, body.to_string().as_bytes())?;
    let [record] = records.as_slice() else {
        bail!("expected one record, got {}", records.len());
    };
    assert_eq!(record.user.username, "alice");
    assert_eq!(record.verb, "patch");
    assert_eq!(record.object.resource, "configmaps");
    assert_eq!(record.object.uid, modified.uid);
    assert_eq!(
        record.response_resource_version.as_deref(),
        Some(modified.resource_version.as_str())
    );
    assert_eq!(record.response_code, 200);
    assert!(
        record.user_agent.starts_with("kubectl"),
        "{}",
        record.user_agent
    );
    Ok(())
}

#[tokio::test]
async fn kinds_resolve_through_discovery_and_an_unknown_one_says_what_to_do() -> Result<()> {
    let client = TestEnv::get().client(User::Admin).await?;

    let (deployments, scope) = discovery::resolve(&client, "apps/v1", "Deployment").await?;
    ensure!(
        deployments.plural == "deployments" && scope == Scope::Namespaced,
        "{deployments:?} {scope:?}"
    );
    let (_, scope) = discovery::resolve(&client, "v1", "Namespace").await?;
    ensure!(scope == Scope::Cluster, "{scope:?}");

    let err = discovery::resolve(&client, "example.invalid/v1", "Widget")
        .await
        .err()
        .context("Widget is not served")?;
    ensure!(matches!(err, discovery::Error::Discovery { .. }), "{err:?}");
    let text = err.to_string();
    ensure!(
        text.contains("`Widget`") && text.contains("discovery") && text.contains("CRD"),
        "{text}"
    );
    Ok(())
}
