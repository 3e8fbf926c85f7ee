//! Revert latency on the real environment: a write of a declared field (as
//! `kubectl patch` by mallory would make it) → the object restored to git,
//! as a separate watch sees it. Driftwarden runs in-process in enforce mode,
//! on each bus. Prints `name=value` lines for `cargo xtask bench`:
//! `revert_p50_ms_<bus>`, `revert_p99_ms_<bus>`, `revert_first_ms_<bus>`.
//!
//! `REVERT_CHANGES` sets how many changes are measured per bus (default 200).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use driftwarden_e2e::app::config_map_yaml;
use driftwarden_e2e::enforcing::{Enforcing, Rails, Rule};
use driftwarden_e2e::scenario::{Bus, Scenario};
use driftwarden_e2e::{TestEnv, User};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use model::Mode;

const FILE: &str = "apps/bench/configmap.yaml";
const NAME: &str = "bench-config";
const DESIRED: &str = "from-git";

fn main() -> Result<()> {
    let changes = std::env::var("REVERT_CHANGES")
        .ok()
        .map(|n| n.parse::<usize>().context("REVERT_CHANGES is a number"))
        .transpose()?
        .unwrap_or(200);
    driftwarden_e2e::logs::to_test_output();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        for (bus, name) in [(Bus::Embedded, "embedded"), (Bus::Kafka, "kafka")] {
            let latencies = measure(bus, changes).await?;
            report(name, &latencies);
        }
        Ok(())
    })
}

/// Milliseconds from each write to the restored object, in order.
async fn measure(bus: Bus, changes: usize) -> Result<Vec<f64>> {
    let mut s = Scenario::prepare(bus, "bench-revert", &["v1/ConfigMap"]).await?;
    let ns = s.namespace().to_string();
    let manifest = config_map_yaml(&ns, NAME, &[("app", "bench")], &[("value", DESIRED)]);
    s.repo.write(FILE, &manifest)?;
    s.commit("bench: a declared value")?;
    let mut enforcing = Enforcing::new(s.settings.clone());
    enforcing.rules = vec![Rule::new("bench", Mode::Enforce).in_namespace(&ns)];
    // One writer drifting the same object hundreds of times is the point
    // here, not a revert war: the rails are off.
    enforcing.rails = Rails {
        flap_limit: 0,
        breaker_limit: 0,
        ..Rails::default()
    };
    s.config = enforcing.config()?;
    s.apply_as_gitops(&[FILE])?;
    s.start().await?;
    s.wait_first_records(&[s.config_map(NAME)]).await?;

    let env = TestEnv::get();
    let writer: Api<ConfigMap> = Api::namespaced(env.client(User::Mallory).await?, &ns);
    let observer: Api<ConfigMap> = Api::namespaced(env.client(User::Admin).await?, &ns);
    let config = watcher::Config::default().fields(&format!("metadata.name={NAME}"));
    let mut seen = Box::pin(watcher::watcher(observer, config));
    // The watch is established (its first list done) before the first write.
    while let Some(event) = seen.next().await {
        if matches!(event?, Event::InitDone) {
            break;
        }
    }
    let mut latencies = Vec::with_capacity(changes);
    for i in 0..changes {
        let drifted = format!("by-hand-{i}");
        let patch = serde_json::json!({"data": {"value": drifted}});
        let started = Instant::now();
        writer
            .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context("writing the drift")?;
        wait_value(&mut seen, DESIRED, &drifted).await?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        if (i + 1) % 50 == 0 {
            eprintln!("revert bench: {} of {changes} changes", i + 1);
        }
    }
    s.stop().await;
    Ok(latencies)
}

/// Waits until the watch shows `value` after it showed `drifted` (so the
/// drift itself was seen first and the restore is this change's).
async fn wait_value(
    seen: &mut (impl futures::Stream<Item = watcher::Result<Event<ConfigMap>>> + Unpin),
    value: &str,
    drifted: &str,
) -> Result<()> {
    let deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(deadline);
    let mut drift_seen = false;
    loop {
        tokio::select! {
            () = &mut deadline => bail!("not restored to `{value}` within 30 s"),
            event = seen.next() => {
                let Some(event) = event else { bail!("the watch ended") };
                let (Event::Apply(cm) | Event::InitApply(cm)) = event? else { continue };
                let current = cm.data.as_ref().and_then(|d| d.get("value")).map(String::as_str);
                if current == Some(drifted) {
                    drift_seen = true;
                } else if drift_seen && current == Some(value) {
                    return Ok(());
                }
            }
        }
    }
}

/// Prints the figures for one bus.
fn report(bus: &str, latencies: &[f64]) {
    let mut sorted = latencies.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    if sorted.is_empty() {
        return;
    }
    println!("revert_first_ms_{bus}={:.1}", latencies[0]);
    println!("revert_p50_ms_{bus}={:.1}", at(0.50));
    println!("revert_p99_ms_{bus}={:.1}", at(0.99));
    println!("revert_max_ms_{bus}={:.1}", at(1.0));
}
