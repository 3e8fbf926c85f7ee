//! How soon custom resources are judged when their CRD arrives after
//! Driftwarden started: git declares one custom resource for each of
//! `CRD_SAMPLES` CRDs (default 5, each of a group of its own), Driftwarden
//! starts (in-process, embedded bus) while none of the CRDs exists, and its
//! watchers back off for a while; then, one CRD at a time, the admin creates
//! the CRD and, once it is established, the GitOps agent applies the custom
//! resource (server-side apply through the API, field manager `gitops`).
//!
//! ```text
//! t0 kubectl create crd ──▶ established ──▶ gitops applies the CR (returns at t1) ──▶ … ──▶ ledger record (t2)
//! ```
//!
//! Prints `name=value` lines for `cargo xtask bench`:
//! `crd_watch_delay_ms` is the median of t2 − t0 over the samples (CRD
//! created → its first custom resource judged), `crd_watch_delay_max_ms`
//! their maximum, and `crd_judged_after_apply_ms` the median of t2 − t1 (the
//! apply answered → judged: Driftwarden's own share). A sample includes the
//! apiserver's own time to establish the CRD and to serve its first object.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use driftwarden_e2e::scenario::{Bus, PATIENCE, Scenario, TestCrd, key, wait_change};
use driftwarden_e2e::{TestEnv, User};
use kube::api::{Api, DynamicObject, Patch, PatchParams};

/// How long Driftwarden runs before the first CRD, so its watchers of the
/// missing kinds are well into their backoff.
const HEAD_START: Duration = Duration::from_secs(3);

fn main() -> Result<()> {
    let samples = std::env::var("CRD_SAMPLES")
        .ok()
        .filter(|n| !n.is_empty())
        .map(|n| n.parse::<usize>().context("CRD_SAMPLES is a number"))
        .transpose()?
        .unwrap_or(5)
        .max(1);
    driftwarden_e2e::logs::to_test_output();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let measured = runtime.block_on(measure(samples))?;
    report(&measured);
    Ok(())
}

/// One CRD's figures, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// CRD created → first custom resource judged.
    delay: f64,
    /// Custom resource applied → judged.
    after_apply: f64,
}

async fn measure(samples: usize) -> Result<Vec<Sample>> {
    let mut s = Scenario::prepare(Bus::Embedded, "bench-crd", &[]).await?;
    let ns = s.namespace().to_string();
    let crds: Vec<TestCrd> = (0..samples).map(|_| TestCrd::widgets()).collect();
    for (i, crd) in crds.iter().enumerate() {
        s.repo.write(
            &format!("apps/crd-{i}/widget.yaml"),
            &crd.object_yaml(&ns, "probe", 1),
        )?;
    }
    s.commit("widgets of CRDs not installed yet")?;
    s.start().await?;
    tokio::time::sleep(HEAD_START).await;

    let env = TestEnv::get();
    let gitops = env.client(User::Gitops).await?;
    let scratch = tempfile::tempdir()?;
    let mut measured = Vec::with_capacity(samples);
    for (i, crd) in crds.iter().enumerate() {
        let widget: serde_json::Value = serde_norway::from_str(&crd.object_yaml(&ns, "probe", 1))?;
        let widgets: Api<DynamicObject> =
            Api::namespaced_with(gitops.clone(), &ns, &crd.api_resource());
        let probe = key(&crd.api_version(), crd.kind, &ns, "probe");
        let created = Instant::now();
        crd.create(scratch.path())?;
        widgets
            .patch(
                "probe",
                &PatchParams::apply("gitops").force(),
                &Patch::Apply(&widget),
            )
            .await
            .context("applying the widget")?;
        let applied = created.elapsed();
        wait_change(
            s.ledger(),
            &probe,
            0,
            PATIENCE,
            "the widget judged",
            |_, _| true,
        )
        .await?;
        let judged = created.elapsed();
        let sample = Sample {
            delay: judged.as_secs_f64() * 1e3,
            after_apply: (judged - applied).as_secs_f64() * 1e3,
        };
        eprintln!(
            "crd bench: CRD {} of {samples}: judged {:.0} ms after the CRD was created, {:.1} ms after the apply",
            i + 1,
            sample.delay,
            sample.after_apply
        );
        measured.push(sample);
    }
    s.stop().await;
    Ok(measured)
}

/// The median of `values`.
fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut sorted: Vec<f64> = values.into_iter().collect();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn report(samples: &[Sample]) {
    let max = samples
        .iter()
        .map(|s| s.delay)
        .fold(f64::NEG_INFINITY, f64::max);
    println!(
        "crd_watch_delay_ms={:.0}",
        median(samples.iter().map(|s| s.delay))
    );
    println!("crd_watch_delay_max_ms={max:.0}");
    println!(
        "crd_judged_after_apply_ms={:.1}",
        median(samples.iter().map(|s| s.after_apply))
    );
    println!("crd_watch_samples={}", samples.len());
}
