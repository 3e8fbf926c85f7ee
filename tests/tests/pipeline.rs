//! End to end, the way people work: a GitOps-managed app (Deployment `web`,
//! its ConfigMap and Service) lives in a real git repository served as
//! `file://` and is applied by the `gitops` user with server-side apply;
//! people change it with the built kubectl under their own kubeconfig; a
//! Driftwarden started in-process on the real apiserver judges every change.
//! Each test asserts the exact verdict (and paths) the ledger records.
//!
//! Every scenario runs on both buses: `<scenario>_embedded` and
//! `<scenario>_kafka` (topics under the test's own prefix, its own group).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use driftwarden::run::{Role, Running};
use driftwarden_e2e::git::GitRepo;
use driftwarden_e2e::scenario::{
    BusSettings, Found, Settings, describe, key, records, wait_change, wait_record,
};
use driftwarden_e2e::{
    TestEnv, TestNamespace, User, eventually, logs, read_topic, topic_prefix, unique_suffix,
};
use ledger::Ledger;
use model::{
    Actor, ChangeEvent, ChangeKind, DriftKind, FieldPath, Judgement, ObjectKey, RecordBody, Verdict,
};
use serde_json::Value;
use tempfile::TempDir;

/// How long one verdict may take to appear.
const VERDICT: Duration = Duration::from_secs(30);

/// How long the cluster may take to settle (rollouts, revisions).
const SETTLE: Duration = Duration::from_secs(60);

const DEPLOYMENT_FILE: &str = "apps/web/deployment.yaml";
const CONFIG_MAP_FILE: &str = "apps/web/configmap.yaml";
const SERVICE_FILE: &str = "apps/web/service.yaml";
const APP_FILES: [&str; 3] = [DEPLOYMENT_FILE, CONFIG_MAP_FILE, SERVICE_FILE];

const IMAGE_1: &str = "registry.invalid/shop/web:1.0.0";
const IMAGE_2: &str = "registry.invalid/shop/web:1.1.0";

/// The path of the web container's image.
const IMAGE_PATH: &str = "spec.template.spec.containers[name=web].image";

/// Which bus a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bus {
    Embedded,
    Kafka,
}

fn deployment_yaml(namespace: &str, replicas: u32, image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {namespace}
  labels:
    app: web
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: {image}
          ports:
            - containerPort: 8080
          envFrom:
            - configMapRef:
                name: web-config
"
    )
}

fn config_map_yaml(namespace: &str, greeting: &str) -> String {
    format!(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: {namespace}
  labels:
    app: web
data:
  greeting: {greeting}
  LOG_LEVEL: info
"
    )
}

fn service_yaml(namespace: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {namespace}
  labels:
    app: web
spec:
  selector:
    app: web
  ports:
    - name: http
      port: 80
      targetPort: 8080
"
    )
}

/// One test's world: its namespace, its git repository, its Driftwarden.
struct Scenario {
    env: &'static TestEnv,
    ns: TestNamespace,
    repo: GitRepo,
    /// Commit ids, oldest first.
    commits: Vec<String>,
    settings: Settings,
    _data: TempDir,
    running: Option<Running>,
    ledger: Option<Arc<Ledger>>,
}

impl Scenario {
    /// The app committed and applied by `gitops` (and rolled out), then
    /// Driftwarden started and its first records in.
    async fn new(bus: Bus, name: &str) -> Result<Scenario> {
        logs::capture();
        let env = TestEnv::get();
        let ns = env.fresh_namespace(name).await?;
        ns.grant(User::Alice, "edit")?;
        let repo = GitRepo::new()?;
        repo.write(DEPLOYMENT_FILE, &deployment_yaml(&ns.name, 2, IMAGE_1))?;
        repo.write(CONFIG_MAP_FILE, &config_map_yaml(&ns.name, "hello"))?;
        repo.write(SERVICE_FILE, &service_yaml(&ns.name))?;
        let first = repo.commit("web: first release (SHOP-1)")?;
        let data = tempfile::Builder::new().prefix("e2e-data-").tempdir()?;
        let bus = match bus {
            Bus::Embedded => BusSettings::Embedded,
            Bus::Kafka => BusSettings::kafka(&env.kafka_brokers, &topic_prefix()),
        };
        let settings = Settings {
            kubeconfig: env.kubeconfig(User::Admin).to_path_buf(),
            data_dir: data.path().to_path_buf(),
            repo_url: repo.url(),
            paths: vec!["apps".into()],
            namespace: ns.name.clone(),
            bus,
            extra_kinds: [
                "v1/ConfigMap",
                "v1/Secret",
                "v1/Service",
                "apps/v1/Deployment",
            ]
            .map(String::from)
            .to_vec(),
            trusted_managers: vec!["kube-controller-manager".into(), "trusted-bot".into()],
        };
        let mut scenario = Scenario {
            env,
            ns,
            repo,
            commits: vec![first],
            settings,
            _data: data,
            running: None,
            ledger: None,
        };
        scenario.apply_as_gitops(&APP_FILES)?;
        scenario.wait_for_revision("1").await?;
        scenario.start().await?;
        for key in [
            scenario.deployment(),
            scenario.config_map(),
            scenario.service(),
        ] {
            wait_change(
                scenario.ledger(),
                &key,
                0,
                VERDICT,
                "first record",
                |_, _| true,
            )
            .await?;
        }
        Ok(scenario)
    }

    /// Starts Driftwarden on the scenario's data directory.
    async fn start(&mut self) -> Result<()> {
        let running = driftwarden::run::start(self.settings.config()?, Role::All)
            .await
            .context("starting driftwarden")?;
        self.ledger = Some(running.ledger.clone().context("role all has a ledger")?);
        self.running = Some(running);
        Ok(())
    }

    /// Stops Driftwarden and lets go of its ledger.
    async fn stop(&mut self) {
        self.ledger = None;
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }

    fn ledger(&self) -> &Ledger {
        self.ledger.as_deref().expect("driftwarden is running")
    }

    /// The sequence number of the last record.
    fn seq(&self) -> u64 {
        self.ledger().len()
    }

    fn namespace(&self) -> &str {
        &self.ns.name
    }

    fn deployment(&self) -> ObjectKey {
        key("apps/v1", "Deployment", self.namespace(), "web")
    }

    fn config_map(&self) -> ObjectKey {
        key("v1", "ConfigMap", self.namespace(), "web-config")
    }

    fn service(&self) -> ObjectKey {
        key("v1", "Service", self.namespace(), "web")
    }

    /// kubectl as `user` in the scenario's namespace.
    fn kubectl(&self, user: User, args: &[&str]) -> Result<String> {
        let mut all = args.to_vec();
        all.extend(["-n", self.namespace()]);
        self.env.kubectl_ok(user, &all)
    }

    /// What the GitOps agent does: server-side apply of files of the
    /// repository as user `gitops`, field manager `gitops`.
    fn apply_as_gitops(&self, files: &[&str]) -> Result<()> {
        let paths: Vec<PathBuf> = files.iter().map(|f| self.repo.file(f)).collect();
        let mut args = vec!["apply", "--server-side", "--field-manager=gitops"];
        for path in &paths {
            args.push("-f");
            args.push(path.to_str().context("a UTF-8 path")?);
        }
        self.env.kubectl_ok(User::Gitops, &args)?;
        Ok(())
    }

    /// Commits the working tree and waits until Driftwarden has synced the
    /// commit (fetch poked at once rather than waiting for the interval).
    async fn commit_and_sync(&mut self, message: &str) -> Result<String> {
        let after = self.seq();
        let id = self.repo.commit(message)?;
        self.commits.push(id.clone());
        if let Some(running) = &self.running {
            running.fetch_now.notify_one();
        }
        let wanted = id.clone();
        wait_record(
            self.ledger(),
            after,
            VERDICT,
            "git sync",
            |body| matches!(body, RecordBody::GitSync(sync) if sync.commit.id == wanted),
        )
        .await?;
        Ok(id)
    }

    /// Waits until the Deployment carries rollout revision `revision` and
    /// a ReplicaSet of that revision exists.
    async fn wait_for_revision(&self, revision: &str) -> Result<()> {
        let what = format!("rollout revision {revision} of deployment web");
        eventually(SETTLE, &what, || async {
            let annotation =
                "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}";
            let deployment =
                self.kubectl(User::Admin, &["get", "deployment", "web", "-o", annotation])?;
            let sets = self.kubectl(
                User::Admin,
                &[
                    "get",
                    "replicasets",
                    "-l",
                    "app=web",
                    "-o",
                    annotation
                        .replace(".metadata", ".items[*].metadata")
                        .as_str(),
                ],
            )?;
            let ready =
                deployment.trim() == revision && sets.split_whitespace().any(|r| r == revision);
            Ok(ready.then_some(()))
        })
        .await
    }

    /// The first change about `key` after record `after` whose event
    /// `matches`, with its verdict (the ledger polled every 10 ms).
    async fn verdict_of(
        &self,
        key: &ObjectKey,
        after: u64,
        what: &str,
        matches: impl Fn(&ChangeEvent) -> bool,
    ) -> Result<Found> {
        wait_change(self.ledger(), key, after, VERDICT, what, |event, _| {
            matches(event)
        })
        .await
    }

    /// The records about `key` after `after`, for failure messages.
    fn history_since(&self, key: &ObjectKey, after: u64) -> String {
        match self.ledger().history(key) {
            Ok(history) => describe(
                &history
                    .into_iter()
                    .filter(|r| r.seq > after)
                    .collect::<Vec<_>>(),
            ),
            Err(err) => format!("(history unreadable: {err})"),
        }
    }

    /// Every record of the ledger as JSON text.
    fn ledger_json(&self) -> Result<String> {
        Ok(serde_json::to_string(&records(self.ledger())?)?)
    }

    /// Every message Driftwarden put on its Kafka topics; empty for the
    /// embedded bus.
    async fn kafka_payloads(&self) -> Result<String> {
        let BusSettings::Kafka {
            brokers,
            topic_prefix,
            ..
        } = self.settings.bus.clone()
        else {
            return Ok(String::new());
        };
        let mut text = String::new();
        for topic in [bus::CHANGES_TOPIC, bus::AUDIT_TOPIC] {
            let topic = format!("{topic_prefix}{topic}");
            let brokers = brokers.clone();
            let messages = tokio::task::spawn_blocking(move || {
                read_topic(&brokers, &topic, Duration::from_secs(30))
            })
            .await??;
            for message in messages {
                text.push_str(&String::from_utf8_lossy(&message.key));
                text.push('\n');
                text.push_str(&String::from_utf8_lossy(&message.payload));
                text.push('\n');
            }
        }
        Ok(text)
    }
}

fn path(text: &str) -> FieldPath {
    text.parse().expect("a valid field path")
}

fn paths(texts: &[&str]) -> Vec<FieldPath> {
    texts.iter().map(|t| path(t)).collect()
}

fn modified(texts: &[&str]) -> Verdict {
    Verdict::Drift {
        drift: DriftKind::Modified {
            paths: paths(texts),
        },
    }
}

fn out_of_band(texts: &[&str]) -> Verdict {
    Verdict::Drift {
        drift: DriftKind::OutOfBand {
            paths: paths(texts),
        },
    }
}

fn replicas(event: &ChangeEvent) -> Option<i64> {
    event
        .object
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
}

fn image(event: &ChangeEvent) -> Option<&str> {
    event
        .object
        .pointer("/spec/template/spec/containers/0/image")
        .and_then(Value::as_str)
}

fn manager(judgement: &Judgement) -> Option<&str> {
    match &judgement.actor {
        Actor::Manager { manager, .. } => Some(manager),
        _ => None,
    }
}

/// Asserts the verdict of `found`, showing the object's history on failure.
fn assert_verdict(
    scenario: &Scenario,
    key: &ObjectKey,
    after: u64,
    found: &Found,
    expected: &Verdict,
) {
    assert_eq!(
        &found.judgement.verdict,
        expected,
        "verdict of record #{} (actor {}, diff {:?}); history:\n{}",
        found.seq,
        found.judgement.actor,
        found.judgement.diff,
        scenario.history_since(key, after)
    );
}

// ---- scenarios ----

/// Driftwarden started on a cluster where git's state is applied finds
/// every object in sync.
async fn joining_finds_the_applied_app_in_sync(bus: Bus) -> Result<()> {
    let s = Scenario::new(bus, "join").await?;
    for key in [s.deployment(), s.config_map(), s.service()] {
        let found = s.verdict_of(&key, 0, "first record", |_| true).await?;
        assert_eq!(found.event.kind, ChangeKind::Resync, "{key}");
        assert_verdict(&s, &key, 0, &found, &Verdict::InSync);
    }
    Ok(())
}

/// `kubectl scale` is drift of `spec.replicas`, attributed to kubectl.
async fn kubectl_scale_is_drift_of_replicas(bus: Bus) -> Result<()> {
    let s = Scenario::new(bus, "scale").await?;
    let after = s.seq();
    s.kubectl(User::Alice, &["scale", "deployment/web", "--replicas=5"])?;
    let key = s.deployment();
    let found = s
        .verdict_of(&key, after, "scaled to 5", |e| replicas(e) == Some(5))
        .await?;
    assert_verdict(&s, &key, after, &found, &modified(&["spec.replicas"]));
    let manager = manager(&found.judgement).unwrap_or_default();
    assert!(
        manager.starts_with("kubectl"),
        "actor {}",
        found.judgement.actor
    );
    Ok(())
}

/// `kubectl set image` is drift of the container's image, by merge key.
async fn kubectl_set_image_is_drift_of_the_image(bus: Bus) -> Result<()> {
    let s = Scenario::new(bus, "set-image").await?;
    let after = s.seq();
    let hotfix = "registry.invalid/shop/web:1.0.1-hotfix";
    s.kubectl(
        User::Alice,
        &["set", "image", "deployment/web", &format!("web={hotfix}")],
    )?;
    let key = s.deployment();
    let found = s
        .verdict_of(&key, after, "hotfix image", |e| image(e) == Some(hotfix))
        .await?;
    assert_verdict(&s, &key, after, &found, &modified(&[IMAGE_PATH]));
    Ok(())
}

/// A patched ConfigMap value is drift of that key.
async fn config_map_patch_is_drift_of_the_value(bus: Bus) -> Result<()> {
    let s = Scenario::new(bus, "cm-patch").await?;
    let after = s.seq();
    s.kubectl(
        User::Alice,
        &[
            "patch",
            "configmap",
            "web-config",
            "--type=merge",
            "-p",
            r#"{"data":{"greeting":"bonjour"}}"#,
        ],
    )?;
    let key = s.config_map();
    let found = s
        .verdict_of(&key, after, "greeting patched", |e| {
            e.object.pointer("/data/greeting") == Some(&Value::from("bonjour"))
        })
        .await?;
    assert_verdict(&s, &key, after, &found, &modified(&["data.greeting"]));
    Ok(())
}

/// Deleting a declared ConfigMap is drift(deleted).
async fn deleting_a_declared_object_is_drift_deleted(bus: Bus) -> Result<()> {
    let s = Scenario::new(bus, "delete").await?;
    let after = s.seq();
    s.kubectl(User::Mallory, &["delete", "configmap", "web-config"])?;
    let key = s.config_map();
    let found = s
        .verdict_of(&key, after, "deletion", |e| e.kind == ChangeKind::Deleted)
        .await?;
    assert_verdict(
        &s,
        &key,
        after,
        &found,
        &Verdict::Drift {
            drift: DriftKind::Deleted,
        },
    );
    Ok(())
}

/// After git moved the image to 1.1.0 and gitops rolled it out,
/// `kubectl rollout undo` goes back to the first commit's state.
async fn rollout_undo_is_drift_rollback_to_the_older_commit(bus: Bus) -> Result<()> {
    let mut s = Scenario::new(bus, "undo").await?;
    let ns = s.namespace().to_string();
    s.repo
        .write(DEPLOYMENT_FILE, &deployment_yaml(&ns, 2, IMAGE_2))?;
    let second = s.commit_and_sync("web: 1.1.0 (SHOP-2)").await?;
    let after = s.seq();
    s.apply_as_gitops(&[DEPLOYMENT_FILE])?;
    let key = s.deployment();
    let applied = s
        .verdict_of(&key, after, "image 1.1.0 applied", |e| {
            image(e) == Some(IMAGE_2)
        })
        .await?;
    assert_verdict(
        &s,
        &key,
        after,
        &applied,
        &Verdict::Authorized {
            commit: second.clone(),
        },
    );
    s.wait_for_revision("2").await?;

    let after = s.seq();
    s.kubectl(User::Alice, &["rollout", "undo", "deployment/web"])?;
    let found = s
        .verdict_of(&key, after, "image back to 1.0.0", |e| {
            image(e) == Some(IMAGE_1)
        })
        .await?;
    assert_verdict(
        &s,
        &key,
        after,
        &found,
        &Verdict::Drift {
            drift: DriftKind::Rollback {
                commit: s.commits[0].clone(),
                paths: paths(&[IMAGE_PATH]),
            },
        },
    );
    Ok(())
}

/// A ConfigMap git does not declare is unmanaged.
async fn object_created_outside_git_is_unmanaged(bus: Bus) -> Result<()> {
    let s = Scenario::new(bus, "unmanaged").await?;
    let after = s.seq();
    s.kubectl(
        User::Mallory,
        &["create", "configmap", "stray", "--from-literal=colour=blue"],
    )?;
    let key = key("v1", "ConfigMap", s.namespace(), "stray");
    let found = s.verdict_of(&key, after, "stray created", |_| true).await?;
    assert_eq!(found.event.kind, ChangeKind::Added);
    assert_verdict(&s, &key, after, &found, &Verdict::Unmanaged);
    Ok(())
}

/// A trusted field manager adding an annotation git does not declare is
/// in sync.
async fn trusted_manager_annotation_is_in_sync(bus: Bus) -> Result<()> {
    let s = Scenario::new(bus, "trusted").await?;
    let after = s.seq();
    // An automation account writing with its own field manager.
    s.kubectl(
        User::Admin,
        &[
            "annotate",
            "deployment/web",
            "--field-manager=trusted-bot",
            "example.com/scanned=2024-05-01",
        ],
    )?;
    let key = s.deployment();
    let found = s
        .verdict_of(&key, after, "scanned annotation", |e| {
            e.object
                .pointer("/metadata/annotations/example.com~1scanned")
                .is_some()
        })
        .await?;
    assert_verdict(&s, &key, after, &found, &Verdict::InSync);
    assert_eq!(
        manager(&found.judgement),
        Some("trusted-bot"),
        "actor {}",
        found.judgement.actor
    );
    Ok(())
}

/// A label added by an untrusted user is drift out of band, naming the label.
async fn untrusted_label_is_drift_out_of_band(bus: Bus) -> Result<()> {
    let s = Scenario::new(bus, "label").await?;
    let after = s.seq();
    s.kubectl(
        User::Mallory,
        &["label", "configmap", "web-config", "owner=mallory"],
    )?;
    let key = s.config_map();
    let found = s
        .verdict_of(&key, after, "owner label", |e| {
            e.object.pointer("/metadata/labels/owner").is_some()
        })
        .await?;
    assert_verdict(
        &s,
        &key,
        after,
        &found,
        &out_of_band(&["metadata.labels.owner"]),
    );
    Ok(())
}

/// A new commit (3 replicas, a new ConfigMap) applied by gitops is
/// authorized by that commit, for the change and for the creation.
async fn gitops_apply_of_a_new_commit_is_authorized(bus: Bus) -> Result<()> {
    let mut s = Scenario::new(bus, "authorized").await?;
    let ns = s.namespace().to_string();
    s.repo
        .write(DEPLOYMENT_FILE, &deployment_yaml(&ns, 3, IMAGE_1))?;
    let flags = "apps/web/flags.yaml";
    s.repo.write(
        flags,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-flags\n  namespace: {ns}\ndata:\n  checkout-v2: \"on\"\n"
        ),
    )?;
    let second = s
        .commit_and_sync("web: 3 replicas, checkout v2 flag (SHOP-3)")
        .await?;
    let after = s.seq();
    s.apply_as_gitops(&[DEPLOYMENT_FILE, flags])?;
    let authorized = Verdict::Authorized { commit: second };

    let key = s.deployment();
    let found = s
        .verdict_of(&key, after, "3 replicas", |e| replicas(e) == Some(3))
        .await?;
    assert_verdict(&s, &key, after, &found, &authorized);

    let flags_key = key_of_config_map(&s, "web-flags");
    let created = s
        .verdict_of(&flags_key, after, "flags created", |_| true)
        .await?;
    assert_eq!(created.event.kind, ChangeKind::Added);
    assert_verdict(&s, &flags_key, after, &created, &authorized);
    Ok(())
}

fn key_of_config_map(s: &Scenario, name: &str) -> ObjectKey {
    key("v1", "ConfigMap", s.namespace(), name)
}

/// A hotfix made by hand, then committed exactly as it is, is adopted by
/// that commit.
async fn drift_committed_afterwards_is_adopted(bus: Bus) -> Result<()> {
    let mut s = Scenario::new(bus, "adopt").await?;
    let after = s.seq();
    s.kubectl(User::Alice, &["scale", "deployment/web", "--replicas=4"])?;
    let key = s.deployment();
    let drift = s
        .verdict_of(&key, after, "scaled to 4", |e| replicas(e) == Some(4))
        .await?;
    assert_verdict(&s, &key, after, &drift, &modified(&["spec.replicas"]));

    let ns = s.namespace().to_string();
    s.repo
        .write(DEPLOYMENT_FILE, &deployment_yaml(&ns, 4, IMAGE_1))?;
    let after = s.seq();
    let adopting = s.commit_and_sync("web: keep 4 replicas (SHOP-4)").await?;
    let expected = Verdict::Adopted {
        commit: adopting,
        drift_seq: drift.seq,
    };
    // The adoption may come as a change record or as an amendment of the
    // drift record; either must carry exactly this verdict.
    let wanted = key.clone();
    let record = wait_record(s.ledger(), after, VERDICT, "adoption", |body| match body {
        RecordBody::Change { event, judgement } => {
            event.key == wanted && matches!(judgement.verdict, Verdict::Adopted { .. })
        }
        RecordBody::Amendment(amendment) => {
            amendment.key == wanted
                && matches!(amendment.judgement.verdict, Verdict::Adopted { .. })
        }
        _ => false,
    })
    .await?;
    let verdict = match &record.body {
        RecordBody::Change { judgement, .. } => &judgement.verdict,
        RecordBody::Amendment(amendment) => {
            assert_eq!(amendment.amends, drift.seq, "the amendment names the drift");
            &amendment.judgement.verdict
        }
        other => bail!("unexpected record {other:?}"),
    };
    assert_eq!(verdict, &expected, "{}", s.history_since(&key, 0));
    Ok(())
}

/// A change made while Driftwarden was stopped is found when it starts
/// again: drift, by an unknown actor, while unobserved.
async fn change_while_stopped_is_found_after_restart(bus: Bus) -> Result<()> {
    let mut s = Scenario::new(bus, "restart").await?;
    let after = s.seq();
    s.stop().await;
    s.kubectl(User::Alice, &["scale", "deployment/web", "--replicas=6"])?;
    s.start().await?;
    let key = s.deployment();
    let found = s
        .verdict_of(&key, after, "scaled to 6 while stopped", |e| {
            replicas(e) == Some(6)
        })
        .await?;
    assert_eq!(found.event.kind, ChangeKind::Resync);
    assert_verdict(&s, &key, after, &found, &modified(&["spec.replicas"]));
    match &found.judgement.actor {
        Actor::Unknown { reason } => assert!(reason.contains("unobserved"), "{reason}"),
        other => panic!("actor of a change nobody watched: {other}"),
    }
    Ok(())
}

/// Checks that none of `needles` occurs in the ledger, the Kafka topics
/// (on the Kafka bus) or the logs of this process, and that each of them
/// does hold the Secret `secret` (so the search looked where the Secret went).
async fn assert_nowhere(s: &Scenario, secret: &ObjectKey, needles: &[String]) -> Result<()> {
    let mut places = vec![
        ("the ledger", s.ledger_json()?),
        ("the logs", logs::captured()?),
    ];
    if matches!(s.settings.bus, BusSettings::Kafka { .. }) {
        places.push(("the kafka topics", s.kafka_payloads().await?));
    }
    for (place, text) in places {
        assert!(
            text.contains(&secret.name) && text.contains(&secret.namespace),
            "{place} never mention {secret}: the search for its values proves nothing"
        );
        for needle in needles {
            assert!(
                !text.contains(needle.as_str()),
                "secret value `{needle}` found in {place}"
            );
        }
    }
    Ok(())
}

/// Secret values created and changed by hand never reach the bus, the
/// ledger or the logs: only digests do.
async fn secret_values_never_leave_the_watcher(bus: Bus) -> Result<()> {
    let s = Scenario::new(bus, "canary").await?;
    let canary = format!("canary-{}", unique_suffix());
    let changed = format!("{canary}-rotated");
    let after = s.seq();
    s.kubectl(
        User::Mallory,
        &[
            "create",
            "secret",
            "generic",
            "creds",
            &format!("--from-literal=token={canary}"),
        ],
    )?;
    let key = key("v1", "Secret", s.namespace(), "creds");
    let created = s
        .verdict_of(&key, after, "secret created", |_| true)
        .await?;
    assert_verdict(&s, &key, after, &created, &Verdict::Unmanaged);
    let patch = serde_json::json!({"stringData": {"password": changed}}).to_string();
    s.kubectl(
        User::Mallory,
        &["patch", "secret", "creds", "--type=merge", "-p", &patch],
    )?;
    let patched = s
        .verdict_of(&key, created.seq, "password added", |e| {
            e.object.pointer("/data/password").is_some()
        })
        .await?;
    for value in [
        &patched.event.object["data"]["token"],
        &patched.event.object["data"]["password"],
    ] {
        let value = value.as_str().unwrap_or_default();
        assert!(
            value.starts_with("sha256:"),
            "a secret value is not a digest: {value}"
        );
    }
    let needles = [
        canary.clone(),
        changed.clone(),
        BASE64.encode(&canary),
        BASE64.encode(&changed),
    ];
    assert_nowhere(&s, &key, &needles).await
}

/// A Secret declared in git: its values do not leak through the desired
/// state either (a diff against git must not show git's value), and
/// gitops applying it is authorized.
///
/// Fails while the desired state keeps Secret values as git holds them
/// (bug: desired Secrets are not redacted like live ones): the gitops apply
/// is judged `drift(modified: data.api-key, stringData.password)` and its
/// diff carries git's base64 value and stringData plaintext into the
/// ledger.
async fn secret_declared_in_git_never_leaks_its_values(bus: Bus) -> Result<()> {
    let mut s = Scenario::new(bus, "git-secret").await?;
    let ns = s.namespace().to_string();
    let canary = format!("canary-{}", unique_suffix());
    let password = format!("{canary}-password");
    let secret_file = "apps/web/secret.yaml";
    s.repo.write(
        secret_file,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-secret\n  namespace: {ns}\ntype: Opaque\ndata:\n  api-key: {}\nstringData:\n  password: {password}\n",
            BASE64.encode(&canary)
        ),
    )?;
    let second = s.commit_and_sync("web: credentials").await?;
    let after = s.seq();
    s.apply_as_gitops(&[secret_file])?;
    let key = key("v1", "Secret", &ns, "web-secret");
    let applied = s
        .verdict_of(&key, after, "secret applied", |_| true)
        .await?;
    let needles = [
        canary.clone(),
        password.clone(),
        BASE64.encode(&canary),
        BASE64.encode(&password),
    ];
    assert_nowhere(&s, &key, &needles).await?;
    assert_verdict(
        &s,
        &key,
        after,
        &applied,
        &Verdict::Authorized { commit: second },
    );

    let rotated = format!("{canary}-rotated");
    let patch = serde_json::json!({"stringData": {"api-key": rotated}}).to_string();
    let after = s.seq();
    s.kubectl(
        User::Mallory,
        &[
            "patch",
            "secret",
            "web-secret",
            "--type=merge",
            "-p",
            &patch,
        ],
    )?;
    let drift = s
        .verdict_of(&key, after, "api key rotated by hand", |e| {
            e.object.pointer("/data/api-key") != applied.event.object.pointer("/data/api-key")
        })
        .await?;
    assert_verdict(&s, &key, after, &drift, &modified(&["data.api-key"]));
    let needles = [
        canary,
        password.clone(),
        BASE64.encode(&password),
        BASE64.encode(&rotated),
    ];
    assert_nowhere(&s, &key, &needles).await
}

/// A malformed file committed with a good change: the bad file is a git
/// error naming the file and line, and the good change still moves the
/// desired state.
async fn malformed_yaml_is_a_git_error_and_good_files_still_count(bus: Bus) -> Result<()> {
    let mut s = Scenario::new(bus, "bad-yaml").await?;
    let ns = s.namespace().to_string();
    let broken = "apps/web/worker.yaml";
    // Line 5 opens a flow sequence that never closes.
    s.repo.write(
        broken,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: worker\n  labels: [app\ndata:\n  a: b\n",
    )?;
    s.repo
        .write(DEPLOYMENT_FILE, &deployment_yaml(&ns, 3, IMAGE_1))?;
    let after = s.seq();
    let second = s.commit_and_sync("web: 3 replicas, worker config").await?;
    let error = wait_record(
        s.ledger(),
        after,
        VERDICT,
        "git error",
        |body| matches!(body, RecordBody::GitError(e) if e.file == broken),
    )
    .await?;
    let RecordBody::GitError(error) = error.body else {
        bail!("not a git error");
    };
    assert_eq!(error.commit, second);
    assert!(
        error.line.is_some_and(|line| (5..=7).contains(&line)),
        "line of {error:?}"
    );
    assert!(!error.message.is_empty());

    let after = s.seq();
    s.apply_as_gitops(&[DEPLOYMENT_FILE])?;
    let key = s.deployment();
    let found = s
        .verdict_of(&key, after, "3 replicas applied", |e| {
            replicas(e) == Some(3)
        })
        .await?;
    assert_verdict(
        &s,
        &key,
        after,
        &found,
        &Verdict::Authorized { commit: second },
    );
    Ok(())
}

/// Runs each scenario on both buses, as `<name>_embedded` and `<name>_kafka`.
macro_rules! on_both_buses {
    ($($scenario:ident => $embedded:ident, $kafka:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $embedded() -> Result<()> {
            $scenario(Bus::Embedded).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $kafka() -> Result<()> {
            $scenario(Bus::Kafka).await
        }
    )*};
}

on_both_buses! {
    joining_finds_the_applied_app_in_sync
        => joining_finds_the_applied_app_in_sync_embedded, joining_finds_the_applied_app_in_sync_kafka;
    kubectl_scale_is_drift_of_replicas
        => kubectl_scale_is_drift_of_replicas_embedded, kubectl_scale_is_drift_of_replicas_kafka;
    kubectl_set_image_is_drift_of_the_image
        => kubectl_set_image_is_drift_of_the_image_embedded, kubectl_set_image_is_drift_of_the_image_kafka;
    config_map_patch_is_drift_of_the_value
        => config_map_patch_is_drift_of_the_value_embedded, config_map_patch_is_drift_of_the_value_kafka;
    deleting_a_declared_object_is_drift_deleted
        => deleting_a_declared_object_is_drift_deleted_embedded, deleting_a_declared_object_is_drift_deleted_kafka;
    rollout_undo_is_drift_rollback_to_the_older_commit
        => rollout_undo_is_drift_rollback_to_the_older_commit_embedded, rollout_undo_is_drift_rollback_to_the_older_commit_kafka;
    object_created_outside_git_is_unmanaged
        => object_created_outside_git_is_unmanaged_embedded, object_created_outside_git_is_unmanaged_kafka;
    trusted_manager_annotation_is_in_sync
        => trusted_manager_annotation_is_in_sync_embedded, trusted_manager_annotation_is_in_sync_kafka;
    untrusted_label_is_drift_out_of_band
        => untrusted_label_is_drift_out_of_band_embedded, untrusted_label_is_drift_out_of_band_kafka;
    gitops_apply_of_a_new_commit_is_authorized
        => gitops_apply_of_a_new_commit_is_authorized_embedded, gitops_apply_of_a_new_commit_is_authorized_kafka;
    drift_committed_afterwards_is_adopted
        => drift_committed_afterwards_is_adopted_embedded, drift_committed_afterwards_is_adopted_kafka;
    change_while_stopped_is_found_after_restart
        => change_while_stopped_is_found_after_restart_embedded, change_while_stopped_is_found_after_restart_kafka;
    secret_values_never_leave_the_watcher
        => secret_values_never_leave_the_watcher_embedded, secret_values_never_leave_the_watcher_kafka;
    secret_declared_in_git_never_leaks_its_values
        => secret_declared_in_git_never_leaks_its_values_embedded, secret_declared_in_git_never_leaks_its_values_kafka;
    malformed_yaml_is_a_git_error_and_good_files_still_count
        => malformed_yaml_is_a_git_error_and_good_files_still_count_embedded, malformed_yaml_is_a_git_error_and_good_files_still_count_kafka;
}
