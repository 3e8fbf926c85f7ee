//! Test fixtures that read like prose:
//! `Scenario::new().git(git().commit("c1", &web)).previously(&web.served()).judge(&modified(&web.replicas(5).served()).by("kubectl-scale", &["spec.replicas"]))`.

use chrono::{DateTime, Utc};
use model::{
    Actor, ChangeEvent, ChangeKind, Commit, DesiredEntry, DesiredHistory, FieldPath, Judgement,
    ManagedField, ObjectKey,
};
use serde_json::{Map, Value, json};

use crate::{Input, ListSemantics, Outcome, Trust, judge_change};

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("a valid test time")
}

/// An object, as git declares it or as the apiserver serves it.
#[derive(Debug, Clone)]
pub(crate) struct Object(Value);

/// A Deployment as a person writes it in git: two containers, env, ports,
/// resources.
pub(crate) fn deployment(name: &str) -> Object {
    Object(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "team-a", "labels": {"app": name}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "nginx:1.25",
                            "ports": [{"containerPort": 80}],
                            "env": [{"name": "LOG_LEVEL", "value": "info"}],
                            "resources": {"requests": {"cpu": 0.5, "memory": "128Mi"}}
                        },
                        {"name": "log", "image": "fluent-bit:3.0", "args": ["--quiet"]}
                    ]
                }
            }
        }
    }))
}

/// A ConfigMap as a person writes it in git.
pub(crate) fn config_map(name: &str) -> Object {
    Object(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "team-a"},
        "data": {"mode": "production"}
    }))
}

impl Object {
    pub(crate) fn json(&self) -> &Value {
        &self.0
    }

    fn at_mut(&mut self, pointer: &str) -> &mut Value {
        self.0
            .pointer_mut(pointer)
            .unwrap_or_else(|| panic!("fixture has no `{pointer}`"))
    }

    fn map_at(&mut self, pointer: &str) -> &mut Map<String, Value> {
        let (parent, name) = pointer.rsplit_once('/').expect("a pointer with a parent");
        let parent = self.at_mut(parent).as_object_mut().expect("an object");
        parent
            .entry(name)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("a map")
    }

    fn containers(&mut self) -> &mut Vec<Value> {
        self.at_mut("/spec/template/spec/containers")
            .as_array_mut()
            .expect("containers are a list")
    }

    fn container(&mut self, name: &str) -> &mut Map<String, Value> {
        self.containers()
            .iter_mut()
            .find(|c| c["name"] == name)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("fixture has no container `{name}`"))
    }

    pub(crate) fn replicas(mut self, replicas: u64) -> Self {
        self.map_at("/spec")
            .insert("replicas".into(), json!(replicas));
        self
    }

    pub(crate) fn without_replicas(mut self) -> Self {
        self.map_at("/spec").remove("replicas");
        self
    }

    pub(crate) fn image(mut self, container: &str, image: &str) -> Self {
        self.container(container)
            .insert("image".into(), json!(image));
        self
    }

    pub(crate) fn env(mut self, container: &str, name: &str, value: &str) -> Self {
        let env = self
            .container(container)
            .entry("env")
            .or_insert_with(|| json!([]));
        env.as_array_mut()
            .expect("env is a list")
            .insert(0, json!({"name": name, "value": value}));
        self
    }

    pub(crate) fn cpu_request(mut self, container: &str, cpu: Value) -> Self {
        self.container(container)
            .insert("resources".into(), json!({"requests": {"cpu": cpu}}));
        self
    }

    pub(crate) fn sidecar(mut self, name: &str, image: &str) -> Self {
        self.containers()
            .push(json!({"name": name, "image": image}));
        self
    }

    pub(crate) fn containers_reversed(mut self) -> Self {
        self.containers().reverse();
        self
    }

    pub(crate) fn label(mut self, name: &str, value: &str) -> Self {
        self.map_at("/metadata/labels")
            .insert(name.into(), json!(value));
        self
    }

    pub(crate) fn annotation(mut self, name: &str, value: &str) -> Self {
        self.map_at("/metadata/annotations")
            .insert(name.into(), json!(value));
        self
    }

    pub(crate) fn data(mut self, name: &str, value: &str) -> Self {
        self.map_at("/data").insert(name.into(), json!(value));
        self
    }

    /// The object as the apiserver serves it: server metadata, status,
    /// defaulted fields and quantities in canonical spelling.
    pub(crate) fn served(mut self) -> Self {
        let metadata = self.map_at("/metadata");
        metadata.insert("uid".into(), json!("0b5c1a4e-uid"));
        metadata.insert("resourceVersion".into(), json!("1001"));
        metadata.insert("generation".into(), json!(3));
        metadata.insert("creationTimestamp".into(), json!("2027-01-15T10:00:00Z"));
        self.0["status"] = json!({"observedGeneration": 3, "replicas": 2});
        if self.0["kind"] != "Deployment" {
            return self;
        }
        self.map_at("/metadata/annotations")
            .insert("deployment.kubernetes.io/revision".into(), json!("3"));
        let spec = self.map_at("/spec");
        spec.entry("replicas").or_insert(json!(1));
        spec.insert("revisionHistoryLimit".into(), json!(10));
        spec.insert("progressDeadlineSeconds".into(), json!(600));
        spec.insert(
            "strategy".into(),
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
        );
        for container in self.containers() {
            serve_container(container);
        }
        self
    }
}

fn serve_container(container: &mut Value) {
    container["imagePullPolicy"] = json!("IfNotPresent");
    container["terminationMessagePath"] = json!("/dev/termination-log");
    if let Some(ports) = container.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            port["protocol"] = json!("TCP");
        }
    }
    if let Some(cpu) = container.pointer_mut("/resources/requests/cpu")
        && let Some(cores) = cpu.as_f64()
    {
        *cpu = json!(format!("{}m", (cores * 1000.0).round()));
    }
}

/// Git's desired history of one key, built commit by commit.
#[derive(Debug, Clone, Default)]
pub(crate) struct Git(DesiredHistory);

pub(crate) fn git() -> Git {
    Git::default()
}

/// A desired entry: `object` as declared at commit `id`.
pub(crate) fn entry(id: &str, object: Option<&Object>) -> DesiredEntry {
    DesiredEntry {
        commit: Commit {
            id: id.to_owned(),
            time: at(0),
            author: "Dev <dev@example.com>".to_owned(),
            summary: format!("commit {id}"),
            refs: Vec::new(),
        },
        manifest: object.map(|o| o.json().clone()),
    }
}

impl Git {
    /// A commit declaring `object`.
    pub(crate) fn history(&self) -> &DesiredHistory {
        &self.0
    }

    pub(crate) fn commit(mut self, id: &str, object: &Object) -> Self {
        self.0.entries.push(entry(id, Some(object)));
        self
    }

    /// A commit removing the object from git.
    pub(crate) fn removal(mut self, id: &str) -> Self {
        self.0.entries.push(entry(id, None));
        self
    }
}

/// A change event as the watcher emits it.
#[derive(Debug, Clone)]
pub(crate) struct Change(ChangeEvent);

fn change(kind: ChangeKind, object: &Object) -> Change {
    let value = object.json();
    let text = |pointer: &str| {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let api_version = text("/apiVersion");
    let key = ObjectKey::new(
        "prod",
        ObjectKey::group_of(&api_version),
        text("/kind"),
        text("/metadata/namespace"),
        text("/metadata/name"),
    );
    let mut event = ChangeEvent::new(
        key,
        api_version,
        "0b5c1a4e-uid",
        "1002",
        kind,
        at(100),
        value.clone(),
    );
    event.managed_fields.push(ManagedField {
        manager: "argocd-controller".to_owned(),
        operation: "Apply".to_owned(),
        time: Some(at(0)),
        subresource: None,
        fields: vec![
            "spec.replicas".parse().expect("path"),
            "spec.template.spec.containers[name=web].image"
                .parse()
                .expect("path"),
            "metadata.labels.app".parse().expect("path"),
        ],
    });
    Change(event)
}

pub(crate) fn added(object: &Object) -> Change {
    change(ChangeKind::Added, object)
}

pub(crate) fn modified(object: &Object) -> Change {
    change(ChangeKind::Modified, object)
}

pub(crate) fn deleted(object: &Object) -> Change {
    change(ChangeKind::Deleted, object)
}

pub(crate) fn resynced(object: &Object) -> Change {
    change(ChangeKind::Resync, object)
}

impl Change {
    /// Written last by field manager `manager`, which now owns `fields`.
    pub(crate) fn by(mut self, manager: &str, fields: &[&str]) -> Self {
        let fields: Vec<FieldPath> = fields
            .iter()
            .map(|f| f.parse().expect("fixture paths are well formed"))
            .collect();
        for entry in &mut self.0.managed_fields {
            entry.fields.retain(|owned| !fields.contains(owned));
        }
        self.0.managed_fields.push(ManagedField {
            manager: manager.to_owned(),
            operation: "Update".to_owned(),
            time: Some(at(100)),
            subresource: None,
            fields,
        });
        self
    }

    /// Of another incarnation (a re-create).
    pub(crate) fn incarnation(mut self, uid: &str) -> Self {
        self.0.uid = uid.to_owned();
        self
    }

    /// Owned by a controller.
    pub(crate) fn derived(mut self) -> Self {
        self.0.derived = true;
        self
    }

    pub(crate) fn event(&self) -> &ChangeEvent {
        &self.0
    }
}

/// Everything around one change: git, the ledger's previous state, policy.
#[derive(Debug)]
pub(crate) struct Scenario {
    git: Option<DesiredHistory>,
    previous: Option<Value>,
    last_good: Option<Value>,
    open: Vec<FieldPath>,
    trust: Trust,
    lists: ListSemantics,
    ignored: Vec<FieldPath>,
    actor: Option<Actor>,
}

impl Scenario {
    pub(crate) fn new() -> Self {
        Self {
            git: None,
            previous: None,
            last_good: None,
            open: Vec::new(),
            trust: Trust::default(),
            lists: ListSemantics::builtin(),
            ignored: Vec::new(),
            actor: None,
        }
    }

    pub(crate) fn git(mut self, git: Git) -> Self {
        self.git = Some(git.0);
        self
    }

    pub(crate) fn previously(mut self, object: &Object) -> Self {
        self.previous = Some(object.json().clone());
        self
    }

    /// The previous state, also the last known-good one.
    pub(crate) fn previously_good(self, object: &Object) -> Self {
        self.previously(object).known_good(object)
    }

    pub(crate) fn known_good(mut self, object: &Object) -> Self {
        self.last_good = Some(object.json().clone());
        self
    }

    /// Out-of-band paths open before the change.
    pub(crate) fn open(mut self, paths: &[&str]) -> Self {
        self.open = paths
            .iter()
            .map(|p| p.parse().expect("fixture paths are well formed"))
            .collect();
        self
    }

    pub(crate) fn trusting(mut self, trust: Trust) -> Self {
        self.trust = trust;
        self
    }

    pub(crate) fn ignoring(mut self, path: &str) -> Self {
        self.ignored
            .push(path.parse().expect("fixture paths are well formed"));
        self
    }

    pub(crate) fn audited_as(mut self, user: &str) -> Self {
        self.actor = Some(Actor::Audit {
            user: user.to_owned(),
            groups: vec!["system:authenticated".to_owned()],
            service_account: None,
            impersonated_by: None,
            user_agent: "kubectl/v1.35.0".to_owned(),
            source_ips: vec!["127.0.0.1".to_owned()],
            audit_id: "audit-1".to_owned(),
            manager: None,
        });
        self
    }

    pub(crate) fn judge(&self, change: &Change) -> Judgement {
        self.outcome(change).judgement
    }

    pub(crate) fn outcome(&self, change: &Change) -> Outcome {
        let mut input = Input::new(change.event(), &self.trust, &self.lists)
            .ignoring(&self.ignored)
            .open_out_of_band(&self.open);
        if let Some(good) = &self.last_good {
            input = input.last_good(good);
        }
        if let Some(previous) = &self.previous {
            input = input.previous(previous);
        }
        if let Some(git) = &self.git {
            input = input.desired(git);
        }
        if let Some(actor) = &self.actor {
            input = input.actor(actor);
        }
        judge_change(&input)
    }
}
