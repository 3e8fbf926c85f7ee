//! The watcher and the audit parser against the real test apiserver
//! (`cargo xtask env up`). Each test works in its own namespace; people are
//! played by the built kubectl with their own credentials.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use driftwarden_watch::{DigestKey, KnownObject, WatchSpec, discovery, parse_audit_batch, watch};
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
            WatchSpec::new(CLUSTER, test_key())
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

    let digest = test_key().digest(canary.as_bytes());
    assert_eq!(added.object["data"]["password"], json!(digest));
    assert_eq!(modified.object["data"]["token"], json!(digest));
    let annotation = &added.object["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"];
    assert!(
        annotation
            .as_str()
            .is_some_and(|a| a.starts_with("hmac-sha256:")),
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

/// A namespaced CRD `Widget` in a group of its own (CRDs are cluster-wide
/// and tests run in parallel); deleted when dropped.
struct WidgetCrd {
    group: String,
}

impl WidgetCrd {
    fn new() -> Self {
        Self {
            group: format!("w{}.watch.driftwarden.test", testenv::unique_suffix()),
        }
    }

    fn name(&self) -> String {
        format!("widgets.{}", self.group)
    }

    fn api_version(&self) -> String {
        format!("{}/v1", self.group)
    }

    /// Creates the CRD as the admin and waits until it is established.
    fn create(&self) -> Result<()> {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": self.name()},
            "spec": {
                "group": self.group,
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "properties": {"spec": {
                            "type": "object",
                            "properties": {"size": {"type": "integer"}}
                        }}
                    }}
                }]
            }
        });
        let (_dir, path) = manifest(&crd)?;
        let env = TestEnv::get();
        env.kubectl_ok(User::Admin, &["create", "-f", path_text(&path)?])?;
        let target = format!("crd/{}", self.name());
        env.kubectl_ok(
            User::Admin,
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                &target,
            ],
        )?;
        Ok(())
    }

    /// Deletes the CRD (and so every widget) and waits until it is gone.
    fn delete(&self) -> Result<()> {
        let target = format!("crd/{}", self.name());
        TestEnv::get().kubectl_ok(User::Admin, &["delete", &target, "--timeout=60s"])?;
        Ok(())
    }

    /// Creates widget `name` in `ns` as the admin, through the API (kubectl
    /// would first wait for its own discovery cache to learn the new kind).
    async fn create_widget(&self, ns: &str, name: &str) -> Result<()> {
        let resource = kube::discovery::ApiResource {
            group: self.group.clone(),
            version: "v1".into(),
            api_version: self.api_version(),
            kind: "Widget".into(),
            plural: "widgets".into(),
        };
        let client = TestEnv::get().client(User::Admin).await?;
        let widgets: kube::Api<kube::api::DynamicObject> =
            kube::Api::namespaced_with(client, ns, &resource);
        let widget: kube::api::DynamicObject = serde_json::from_value(json!({
            "apiVersion": self.api_version(),
            "kind": "Widget",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"size": 1}
        }))?;
        widgets
            .create(&kube::api::PostParams::default(), &widget)
            .await?;
        Ok(())
    }
}

impl Drop for WidgetCrd {
    fn drop(&mut self) {
        let target = format!("crd/{}", self.name());
        let _ = TestEnv::get().kubectl(
            User::Admin,
            &["delete", &target, "--ignore-not-found", "--wait=false"],
        );
    }
}

type Items = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<ChangeEvent, driftwarden_watch::watcher::Error>> + Send>,
>;

/// Every item `items` yields within `within`.
async fn items_within(
    items: &mut Items,
    within: Duration,
) -> Vec<Result<ChangeEvent, driftwarden_watch::watcher::Error>> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(item)) = tokio::time::timeout_at(deadline, items.next()).await {
        out.push(item);
    }
    out
}

/// What came before the event a test waited for.
#[derive(Debug, Default)]
struct Before {
    events: Vec<ChangeEvent>,
    errors: Vec<driftwarden_watch::watcher::Error>,
}

/// The first event about `name`; fails after [`EVENT_TIMEOUT`]. Other
/// events and errors on the way are returned beside it.
async fn event_about(items: &mut Items, name: &str) -> Result<(ChangeEvent, Before)> {
    let mut before = Before::default();
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, items.next()).await {
            Ok(Some(Ok(event))) if event.key.name == name => return Ok((event, before)),
            Ok(Some(Ok(event))) => before.events.push(event),
            Ok(Some(Err(err))) => before.errors.push(err),
            Ok(None) => bail!("the watch stream ended"),
            Err(_) => bail!("no event about {name} within {EVENT_TIMEOUT:?}; before: {before:?}"),
        }
    }
}

#[tokio::test]
async fn custom_resource_is_watched_once_its_crd_arrives_and_again_after_it_returns() -> Result<()>
{
    use driftwarden_watch::watcher::Error as WatchError;

    let ns = namespace("watch-crd").await?;
    let crd = WidgetCrd::new();
    let spec = WatchSpec::new(CLUSTER, test_key())
        .kind(crd.api_version(), "Widget")
        .namespace(&ns.name);
    let client = TestEnv::get().client(User::Admin).await?;
    let mut items: Items = Box::pin(watch(client, spec));

    let first = tokio::time::timeout(EVENT_TIMEOUT, items.next())
        .await
        .context("nothing from a kind without its CRD")?
        .context("the watch stream ended")?;
    let Err(err) = first else {
        bail!("expected an error, got {first:?}");
    };
    ensure!(matches!(err, WatchError::Unresolved { .. }), "{err:?}");
    let text = format!("{:#}", anyhow::Error::new(err));
    ensure!(
        text.contains("Widget") && text.contains("retrying"),
        "{text}"
    );
    let quiet = items_within(&mut items, Duration::from_secs(2)).await;
    ensure!(quiet.is_empty(), "retries are quiet: {quiet:?}");

    let created = std::time::Instant::now();
    crd.create()?;
    crd.create_widget(&ns.name, "first").await?;
    let (event, before) = event_about(&mut items, "first").await?;
    let delay = created.elapsed();
    ensure!(before.errors.is_empty(), "{before:?}");
    ensure!(
        matches!(event.kind, ChangeKind::Added | ChangeKind::Resync),
        "{:?}",
        event.kind
    );
    ensure!(event.key.group == crd.group && event.key.kind == "Widget");
    eprintln!("CRD created → first widget watched: {delay:?}");
    ensure!(delay < Duration::from_secs(10), "{delay:?}");

    // Deleting the CRD deletes the widget; the watcher then fails, reports
    // that once and backs off.
    crd.delete()?;
    let after_delete = items_within(&mut items, Duration::from_secs(4)).await;
    let errors = after_delete.iter().filter(|item| item.is_err()).count();
    ensure!(errors <= 1, "errors reported once: {after_delete:?}");

    let recreated = std::time::Instant::now();
    crd.create()?;
    crd.create_widget(&ns.name, "second").await?;
    let (event, before) = event_about(&mut items, "second").await?;
    let back = recreated.elapsed();
    eprintln!("CRD created again → widget watched: {back:?}");
    ensure!(
        matches!(event.kind, ChangeKind::Added | ChangeKind::Resync),
        "{:?}",
        event.kind
    );
    // A CRD change cuts the watcher's backoff short.
    ensure!(back < Duration::from_secs(5), "{back:?}");
    // The widget went with its CRD; the watcher learns it from its fresh
    // listing once the CRD is back (that listing may have the second one).
    let after = items_within(&mut items, Duration::from_secs(1)).await;
    let deleted = after_delete
        .iter()
        .chain(&after)
        .filter_map(|item| item.as_ref().ok())
        .chain(&before.events)
        .any(|e| e.key.name == "first" && e.kind == ChangeKind::Deleted);
    ensure!(
        deleted,
        "the first widget's deletion: {after_delete:?} {before:?} {after:?}"
    );
    Ok(())
}

/// The digest key of the watches these tests run.
fn test_key() -> DigestKey {
    DigestKey::from_bytes([5; 32])
}
