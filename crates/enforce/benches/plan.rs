//! Planning cost: an inverse patch for an out-of-band change to a realistic
//! Deployment, and the rails' bookkeeping per drift.

use std::hint::black_box;

use chrono::{DateTime, Duration};
use criterion::{Criterion, criterion_group, criterion_main};
use driftwarden_enforce::{PlanInput, Rails, RailsConfig, Writer, plan};
use model::{ChangeEvent, ChangeKind, DriftKind, FieldPath, ObjectKey, Verdict};
use serde_json::{Value, json};

/// A Deployment with three containers of twenty env vars each.
fn deployment(extra_env: &[(&str, &str)], extra_label: Option<&str>) -> Value {
    let containers: Vec<Value> = ["web", "worker", "proxy"]
        .iter()
        .map(|name| {
            let mut env: Vec<Value> = (0..20)
                .map(|i| json!({"name": format!("VAR_{i}"), "value": format!("value-{i}")}))
                .collect();
            if *name == "web" {
                env.extend(
                    extra_env
                        .iter()
                        .map(|(k, v)| json!({"name": k, "value": v})),
                );
            }
            json!({"name": name, "image": format!("registry.example/{name}:1"),
                   "ports": [{"containerPort": 8080, "protocol": "TCP"}], "env": env})
        })
        .collect();
    let mut labels = json!({"app": "web", "team": "a"});
    if let Some(label) = extra_label {
        labels[label] = json!("mallory");
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "team-a", "labels": labels,
                     "resourceVersion": "42", "uid": "u-1"},
        "spec": {"replicas": 3, "template": {"spec": {"containers": containers}}},
        "status": {"replicas": 3},
    })
}

fn bench_plan(c: &mut Criterion) {
    let good = deployment(&[], None);
    let live = deployment(&[("DEBUG", "1"), ("TRACE", "1")], Some("owner"));
    let event = ChangeEvent::new(
        ObjectKey::new("prod", "apps", "Deployment", "team-a", "web"),
        "apps/v1",
        "u-1",
        "43",
        ChangeKind::Modified,
        DateTime::from_timestamp(1_800_000_000, 0).expect("valid time"),
        live,
    );
    let paths: Vec<FieldPath> = [
        "spec.template.spec.containers[name=web].env[name=DEBUG]",
        "spec.template.spec.containers[name=web].env[name=TRACE]",
        "metadata.labels.owner",
    ]
    .iter()
    .map(|p| p.parse().expect("bench paths are well formed"))
    .collect();
    let verdict = Verdict::Drift {
        drift: DriftKind::OutOfBand { paths },
    };
    let input = PlanInput {
        event: &event,
        verdict: &verdict,
        desired: None,
        last_good: Some(&good),
        prune: false,
    };
    assert!(plan(&input).is_some(), "the bench plans a patch");
    c.bench_function("plan_inverse_patch_deployment_3_paths", |b| {
        b.iter(|| plan(black_box(&input)))
    });
}

fn bench_rails(c: &mut Criterion) {
    let mut rails = Rails::new(RailsConfig {
        flap_limit: 5,
        flap_window: Duration::minutes(5),
        backoff_cap: Duration::seconds(30),
        breaker_limit: 1_000_000,
        breaker_window: Duration::minutes(1),
        breaker_pause: Duration::minutes(10),
    });
    let keys: Vec<ObjectKey> = (0..1000)
        .map(|i| ObjectKey::new("prod", "", "ConfigMap", "team-a", format!("cfg-{i}")))
        .collect();
    let start = DateTime::from_timestamp(1_800_000_000, 0).expect("valid time");
    let writer = Writer::automated("bench");
    let mut n: i64 = 0;
    c.bench_function("rails_drift_admit_revert", |b| {
        b.iter(|| {
            n += 1;
            let now = start + Duration::milliseconds(n);
            let key = &keys[(n as usize) % keys.len()];
            black_box(rails.observe_drift(now));
            if rails.admit(key, &writer, now).is_ok() {
                rails.record_revert(key, now);
            }
        })
    });
}

criterion_group!(benches, bench_plan, bench_rails);
criterion_main!(benches);
