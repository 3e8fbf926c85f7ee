//! Per-event CPU cost of the watcher and the audit receiver: building a
//! change event (managedFields summary, redaction), the churn digest, and
//! parsing a full audit webhook batch.

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use driftwarden_watch::{
    content_digest, managed_fields_summary, parse_audit_batch, to_change_event,
};
use model::ChangeKind;
use serde_json::{Value, json};

/// A Deployment as the apiserver sends it: three managers, two containers.
fn deployment() -> Value {
    let container = |name: &str| {
        json!({
            "name": name,
            "image": format!("registry.example.com/{name}:1.2.3"),
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "env": [{"name": "MODE", "value": "prod"}, {"name": "LEVEL", "value": "info"}],
            "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
        })
    };
    let container_fields = json!({
        ".": {}, "f:image": {}, "f:name": {},
        "f:env": {"k:{\"name\":\"MODE\"}": {".": {}, "f:name": {}, "f:value": {}},
                  "k:{\"name\":\"LEVEL\"}": {".": {}, "f:name": {}, "f:value": {}}},
        "f:ports": {"k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}, "f:protocol": {}}},
        "f:resources": {"f:limits": {".": {}, "f:cpu": {}, "f:memory": {}}}
    });
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web", "namespace": "team-a", "uid": "6f1c0f5e-2b7a-4c1e-9a55-0d2d1c7e9b11",
            "resourceVersion": "123456", "generation": 7,
            "labels": {"app": "web", "team": "payments"},
            "annotations": {"deployment.kubernetes.io/revision": "7"},
            "managedFields": [
                {"manager": "argocd-controller", "operation": "Apply", "apiVersion": "apps/v1",
                 "time": "2026-01-02T03:04:05Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}, "f:team": {}}},
                              "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                                  "k:{\"name\":\"web\"}": container_fields.clone(),
                                  "k:{\"name\":\"sidecar\"}": container_fields}}}}}},
                {"manager": "kubectl-edit", "operation": "Update", "apiVersion": "apps/v1",
                 "time": "2026-01-02T04:04:05Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:spec": {"f:replicas": {}}}},
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
                 "time": "2026-01-02T04:04:06Z", "fieldsType": "FieldsV1", "subresource": "status",
                 "fieldsV1": {"f:status": {"f:availableReplicas": {}, "f:readyReplicas": {}, "f:replicas": {}}}}
            ]
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [container("web"), container("sidecar")]}}
        },
        "status": {"availableReplicas": 3, "readyReplicas": 3, "replicas": 3}
    })
}

fn audit_batch(events: usize) -> Vec<u8> {
    let item = |i: usize| {
        json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
            "auditID": format!("a-{i}"), "stage": "ResponseComplete",
            "requestURI": "/apis/apps/v1/namespaces/team-a/deployments/web", "verb": "patch",
            "user": {"username": "alice", "groups": ["developers", "system:authenticated"]},
            "sourceIPs": ["127.0.0.1"], "userAgent": "kubectl/v1.35.0",
            "objectRef": {"resource": "deployments", "namespace": "team-a", "name": "web",
                          "apiGroup": "apps", "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": 200},
            "requestObject": {"spec": {"replicas": 5}},
            "responseObject": deployment(),
            "requestReceivedTimestamp": "2026-01-02T03:04:05.000001Z",
            "stageTimestamp": "2026-01-02T03:04:05.002001Z"
        })
    };
    json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1",
           "items": (0..events).map(item).collect::<Vec<_>>()})
    .to_string()
    .into_bytes()
}

fn change_events(c: &mut Criterion) {
    let object = deployment();
    let mut group = c.benchmark_group("watch");
    group.throughput(Throughput::Elements(1));
    let key = driftwarden_watch::DigestKey::from_bytes([1; 32]);
    group.bench_function("to_change_event", |b| {
        b.iter(|| {
            to_change_event(
                "prod",
                ChangeKind::Modified,
                black_box(object.clone()),
                Utc::now(),
                &key,
            )
        })
    });
    group.bench_function("content_digest", |b| {
        b.iter(|| content_digest(black_box(&object)))
    });
    group.bench_function("managed_fields_summary", |b| {
        b.iter(|| managed_fields_summary(black_box(&object)))
    });
    group.bench_function("clone_object", |b| b.iter(|| black_box(&object).clone()));
    group.finish();
}

fn audit(c: &mut Criterion) {
    const EVENTS: usize = 400;
    let body = audit_batch(EVENTS);
    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("parse_batch_of_400", |b| {
        b.iter(|| parse_audit_batch("prod", black_box(&body)))
    });
    group.finish();
}

criterion_group!(benches, change_events, audit);
criterion_main!(benches);
