//! Classification rate on a realistic Deployment modification (a manual
//! scale judged against a two-commit desired history).
//!
//! Prints `classify_events_per_s=<N>`: the median rate over the samples
//! criterion timed, as `events_per_second` computes it.

use std::cell::RefCell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::DateTime;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use driftwarden_correlate::{Input, ListSemantics, Trust, classify, events_per_second};
use model::{
    ChangeEvent, ChangeKind, Commit, DesiredEntry, DesiredHistory, ManagedField, ObjectKey,
};
use serde_json::{Value, json};

/// The Deployment as git declares it.
fn declared(image: &str, replicas: u64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "checkout",
            "namespace": "shop",
            "labels": {"app.kubernetes.io/name": "checkout", "app.kubernetes.io/part-of": "shop"}
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "checkout"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "checkout"}},
                "spec": {
                    "serviceAccountName": "checkout",
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "args": ["--listen=:8080", "--metrics=:9090"],
                            "ports": [
                                {"name": "http", "containerPort": 8080},
                                {"name": "metrics", "containerPort": 9090}
                            ],
                            "env": [
                                {"name": "LOG_LEVEL", "value": "info"},
                                {"name": "DB_HOST", "value": "postgres.shop.svc"},
                                {"name": "DB_POOL", "value": "20"}
                            ],
                            "resources": {
                                "requests": {"cpu": 0.5, "memory": "256Mi"},
                                "limits": {"cpu": 1, "memory": "512Mi"}
                            },
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}}
                        },
                        {
                            "name": "proxy",
                            "image": "envoyproxy/envoy:v1.31.0",
                            "ports": [{"name": "admin", "containerPort": 9901}],
                            "env": [{"name": "ENVOY_UID", "value": "0"}],
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}
                        }
                    ]
                }
            }
        }
    })
}

/// The same object as the apiserver serves it: server metadata, defaults,
/// status, containers in another order.
fn served(image: &str, replicas: u64) -> Value {
    let mut live = declared(image, replicas);
    live["metadata"]["uid"] = json!("6f1c8e2a-4b7d-4f0e-9a51-3c2d1e0f9b8a");
    live["metadata"]["resourceVersion"] = json!("482913");
    live["metadata"]["generation"] = json!(12);
    live["metadata"]["creationTimestamp"] = json!("2027-01-15T10:00:00Z");
    live["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "12"});
    live["spec"]["revisionHistoryLimit"] = json!(10);
    live["spec"]["progressDeadlineSeconds"] = json!(600);
    live["spec"]["strategy"] = json!({"type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
    let spec = &mut live["spec"]["template"]["spec"];
    spec["restartPolicy"] = json!("Always");
    spec["dnsPolicy"] = json!("ClusterFirst");
    spec["terminationGracePeriodSeconds"] = json!(30);
    if let Some(containers) = spec["containers"].as_array_mut() {
        for container in containers.iter_mut() {
            container["imagePullPolicy"] = json!("IfNotPresent");
            container["terminationMessagePath"] = json!("/dev/termination-log");
            if let Some(ports) = container["ports"].as_array_mut() {
                for port in ports {
                    port["protocol"] = json!("TCP");
                }
            }
        }
        containers[0]["resources"]["requests"]["cpu"] = json!("500m");
        containers.reverse();
    }
    live["status"] = json!({"observedGeneration": 12, "replicas": replicas,
        "readyReplicas": replicas, "updatedReplicas": replicas});
    live
}

fn entry(id: &str, manifest: Value) -> DesiredEntry {
    DesiredEntry {
        commit: Commit {
            id: id.to_owned(),
            time: DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
            author: "Dev <dev@example.com>".to_owned(),
            summary: format!("release {id}"),
            refs: Vec::new(),
        },
        manifest: Some(manifest),
    }
}

fn manager(name: &str, seconds: i64, fields: &[&str]) -> ManagedField {
    ManagedField {
        manager: name.to_owned(),
        operation: "Update".to_owned(),
        time: DateTime::from_timestamp(1_800_000_000 + seconds, 0),
        subresource: None,
        fields: fields.iter().filter_map(|f| f.parse().ok()).collect(),
    }
}

fn scale_event() -> ChangeEvent {
    let mut event = ChangeEvent::new(
        ObjectKey::new("prod", "apps", "Deployment", "shop", "checkout"),
        "apps/v1",
        "6f1c8e2a-4b7d-4f0e-9a51-3c2d1e0f9b8a",
        "482914",
        ChangeKind::Modified,
        DateTime::from_timestamp(1_800_000_100, 0).unwrap_or_default(),
        served("shop/checkout:2.4.1", 6),
    );
    event.managed_fields = vec![
        manager(
            "argocd-controller",
            0,
            &[
                r#"metadata.labels["app.kubernetes.io/name"]"#,
                r#"metadata.labels["app.kubernetes.io/part-of"]"#,
                "spec.template.spec.containers[name=app].image",
                "spec.template.spec.containers[name=app].env[name=LOG_LEVEL].value",
                "spec.template.spec.containers[name=proxy].image",
            ],
        ),
        manager(
            "kube-controller-manager",
            50,
            &[r#"metadata.annotations["deployment.kubernetes.io/revision"]"#],
        ),
        manager("kubectl-scale", 100, &["spec.replicas"]),
    ];
    event
}

fn bench_classify(c: &mut Criterion) {
    let history = DesiredHistory {
        entries: vec![
            entry("c1", declared("shop/checkout:2.4.0", 3)),
            entry("c2", declared("shop/checkout:2.4.1", 3)),
        ],
    };
    let previous = served("shop/checkout:2.4.1", 3);
    let event = scale_event();
    let trust = Trust::default().manager("kube-controller-manager");
    let lists = ListSemantics::builtin();
    let input = Input::new(&event, &trust, &lists)
        .previous(&previous)
        .desired(&history);
    assert!(
        classify(&input).verdict.is_drift(),
        "the bench judges a drift"
    );

    let samples = RefCell::new(Vec::<(u64, Duration)>::new());
    let mut group = c.benchmark_group("classify");
    group.throughput(Throughput::Elements(1));
    group.bench_function("deployment_scale", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(classify(black_box(&input)));
            }
            let took = start.elapsed();
            samples.borrow_mut().push((iters, took));
            took
        });
    });
    group.finish();
    println!(
        "classify_events_per_s={:.0}",
        events_per_second(&samples.borrow())
    );
}

criterion_group!(benches, bench_classify);
criterion_main!(benches);
