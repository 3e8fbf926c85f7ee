//! Realistic change records for the ledger benches.

use chrono::{DateTime, Utc};
use model::{
    Actor, ChangeEvent, ChangeKind, DriftKind, FieldChange, Judgement, ManagedField, ObjectKey,
    PathVerdict, RecordBody, Verdict,
};
use serde_json::{Value, json};

/// A small deterministic random number generator (xorshift64*).
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The key of object number `i`: a Deployment in one of 50 namespaces.
pub fn key(i: u64) -> ObjectKey {
    ObjectKey::new(
        "prod-eu-1",
        "apps",
        "Deployment",
        format!("team-{:02}", i % 50),
        format!("service-{i:05}"),
    )
}

/// A Deployment as a watch sees it, about 2 KB of JSON.
fn deployment(key: &ObjectKey, revision: u64) -> Value {
    let name = &key.name;
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": key.namespace,
            "uid": format!("0b7d2c1e-{name}"),
            "resourceVersion": revision.to_string(),
            "generation": revision,
            "creationTimestamp": "2026-01-12T09:30:00Z",
            "labels": {
                "app.kubernetes.io/name": name,
                "app.kubernetes.io/part-of": "shop",
                "app.kubernetes.io/managed-by": "driftwarden",
                "team": key.namespace,
            },
            "annotations": {
                "deployment.kubernetes.io/revision": revision.to_string(),
                "driftwarden.io/source": "apps@main",
            },
        },
        "spec": {
            "replicas": 2 + revision % 4,
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": name, "team": key.namespace}},
                "spec": {
                    "serviceAccountName": name,
                    "terminationGracePeriodSeconds": 30,
                    "containers": [{
                        "name": "web",
                        "image": format!("registry.example.com/shop/{name}:1.{}.0", revision % 40),
                        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                        "env": [
                            {"name": "RUST_LOG", "value": "info"},
                            {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": format!("{name}-db"), "key": "url"}}},
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        ],
                        "resources": {
                            "requests": {"cpu": "250m", "memory": "256Mi"},
                            "limits": {"cpu": "1", "memory": "512Mi"},
                        },
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
                    }],
                },
            },
        },
        "status": {
            "observedGeneration": revision,
            "replicas": 2,
            "readyReplicas": 2,
            "availableReplicas": 2,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ],
        },
    })
}

/// How revision `revision` of an object is judged: mostly authorized, some
/// drift, some in sync.
fn judgement(revision: u64) -> Judgement {
    let verdict = match revision % 10 {
        0 => Verdict::Drift {
            drift: DriftKind::Modified {
                paths: vec!["spec.replicas".parse().expect("valid path")],
            },
        },
        1 => Verdict::InSync,
        _ => Verdict::Authorized {
            commit: "4f1c2a9e8b7d6c5b4a39281706f5e4d3c2b1a098".into(),
        },
    };
    Judgement {
        git_stale: false,
        verdict,
        actor: Actor::Audit {
            user: "alice@example.com".into(),
            groups: vec!["system:authenticated".into(), "sre".into()],
            service_account: None,
            impersonated_by: None,
            manager: Some("kubectl-scale".into()),
            user_agent: "kubectl/v1.35.0 (linux/amd64) kubernetes/abcdef".into(),
            source_ips: vec!["10.0.12.7".into()],
            audit_id: format!("9c7e-{revision}"),
        },
        desired_commit: Some("4f1c2a9e8b7d6c5b4a39281706f5e4d3c2b1a098".into()),
        diff: vec![
            FieldChange::new(
                "spec.replicas".parse().expect("valid path"),
                Some(json!(2)),
                Some(json!(2 + revision % 4)),
            )
            .judged(PathVerdict::Drift),
        ],
    }
}

/// Revision `revision` of object number `object` as a change record.
pub fn change(object: u64, revision: u64, observed_at: DateTime<Utc>) -> RecordBody {
    let key = key(object);
    let mut event = ChangeEvent::new(
        key.clone(),
        "apps/v1",
        format!("0b7d2c1e-{}", key.name),
        revision.to_string(),
        ChangeKind::Modified,
        observed_at,
        deployment(&key, revision),
    );
    event.managed_fields.push(ManagedField {
        manager: "kubectl-edit".into(),
        operation: "Update".into(),
        time: Some(observed_at),
        subresource: None,
        fields: vec!["spec.replicas".parse().expect("valid path")],
    });
    RecordBody::Change {
        event,
        judgement: judgement(revision),
    }
}

/// A batch of `size` changes to random objects among `objects`, revisions
/// taken from `next_revision` so that none is a duplicate.
pub fn batch(rng: &mut Rng, objects: u64, size: usize, next_revision: &mut u64) -> Vec<RecordBody> {
    let now = Utc::now();
    (0..size)
        .map(|_| {
            *next_revision += 1;
            change(rng.below(objects), *next_revision, now)
        })
        .collect()
}
