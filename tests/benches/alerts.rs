//! Alert latency on the real environment: a write by mallory (through the
//! API, as `kubectl patch` makes it) → the Slack payload about it received
//! by a local receiver standing in for Slack. Driftwarden runs in-process
//! with its audit webhook (so alerts name the identity, which they wait
//! for), on the embedded bus, with the default alert settings
//! (`group_wait` 500 ms). Prints `alert_p50_ms`, `alert_p99_ms` and
//! `alert_first_ms` for `cargo xtask bench`.
//!
//! `ALERT_CHANGES` sets how many changes are measured (default 60).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use driftwarden::config::Config;
use driftwarden_e2e::app::config_map_yaml;
use driftwarden_e2e::receivers::{Receiver, ReceiverOptions};
use driftwarden_e2e::scenario::{Bus, Scenario};
use driftwarden_e2e::{TestEnv, User};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use notify::SinkKind;

const FILE: &str = "apps/bench/configmap.yaml";
const NAME: &str = "bench-config";

fn main() -> Result<()> {
    let changes = std::env::var("ALERT_CHANGES")
        .ok()
        .map(|n| n.parse::<usize>().context("ALERT_CHANGES is a number"))
        .transpose()?
        .unwrap_or(60);
    driftwarden_e2e::logs::to_test_output();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let latencies = measure(changes).await?;
        report(&latencies);
        Ok(())
    })
}

/// Milliseconds from each write to its alert received, in order.
async fn measure(changes: usize) -> Result<Vec<f64>> {
    let mut s = Scenario::prepare(Bus::Embedded, "bench-alert", &["v1/ConfigMap"]).await?;
    s.with_audit_webhook()?;
    let ns = s.namespace().to_string();
    let manifest = config_map_yaml(&ns, NAME, &[], &[("value", "from-git")]);
    s.repo.write(FILE, &manifest)?;
    s.commit("bench: a declared value (BENCH-1)")?;
    s.apply_as_gitops(&[FILE])?;
    let slack = Receiver::start(SinkKind::Slack, ReceiverOptions::default()).await?;
    let url_file = s.settings.data_dir.with_extension("slack.url");
    std::fs::write(&url_file, slack.url())?;
    let text = format!(
        "{}alerts:\n  sinks:\n    - {{name: oncall, type: slack, url: {{file: {}}}}}\n  routes:\n    - sinks: [oncall]\n",
        s.settings.yaml(),
        serde_json::Value::from(url_file.to_string_lossy().into_owned())
    );
    s.config = Config::parse(Path::new("bench-alerts.yaml"), &text)?;
    s.start().await?;
    s.wait_first_records(&[s.config_map(NAME)]).await?;

    let env = TestEnv::get();
    let writer: Api<ConfigMap> = Api::namespaced(env.client(User::Mallory).await?, &ns);
    let mut latencies = Vec::with_capacity(changes);
    for i in 0..changes {
        let patch = serde_json::json!({"data": {"value": format!("by-hand-{i}")}});
        let started = Instant::now();
        writer
            .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context("writing the drift")?;
        let received = slack.wait_for(i + 1, Duration::from_secs(30)).await?;
        let at = received.last().context("a payload")?.at;
        latencies.push(at.duration_since(started).as_secs_f64() * 1000.0);
        if (i + 1) % 20 == 0 {
            eprintln!("alert bench: {} of {changes} changes", i + 1);
        }
        // Past the group wait, so each change is its own alert.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    anyhow::ensure!(slack.invalid().is_empty(), "invalid payloads");
    s.stop().await;
    Ok(latencies)
}

fn report(latencies: &[f64]) {
    let mut sorted = latencies.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return;
    }
    let at = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    println!("alert_first_ms={:.1}", latencies[0]);
    println!("alert_p50_ms={:.1}", at(0.50));
    println!("alert_p99_ms={:.1}", at(0.99));
    println!("alert_max_ms={:.1}", at(1.0));
}
