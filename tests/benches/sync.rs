//! Start-up over a large repository, on the real test environment
//! (`cargo xtask env up`):
//!
//! ```text
//!  Corpus::generate(2 000 objects) ──commit──▶ git ──apply (kubectl, in parallel)──▶ cluster
//!  driftwarden::run::start ─ t0 ─▶ clone, parse, discover, list, judge ─▶ ledger: every key judged ─ t1
//! ```
//!
//! Prints `initial_sync_s_2k_objects=SECONDS` (t1 − t0; `cargo xtask bench`
//! collects it) and progress lines. `DW_SYNC_OBJECTS` sets the size
//! (default 2000; another size is printed as `initial_sync_s_<n>_objects`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use driftwarden::run::Role;
use driftwarden_e2e::corpus::Corpus;
use driftwarden_e2e::git::GitRepo;
use driftwarden_e2e::scenario::{BusSettings, Settings};
use driftwarden_e2e::{TestEnv, User, unique_suffix};
use ledger::Ledger;
use model::{ObjectKey, RecordBody};

/// kubectl processes applying at once.
const APPLIERS: usize = 4;

/// How long the initial sync may take.
const PATIENCE: Duration = Duration::from_secs(900);

fn main() -> Result<()> {
    let objects = match std::env::var("DW_SYNC_OBJECTS") {
        Ok(text) if !text.is_empty() => text
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 50)
            .with_context(|| format!("DW_SYNC_OBJECTS={text}: expected a whole number ≥ 50"))?,
        _ => 2_000,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(objects))
}

async fn run(objects: usize) -> Result<()> {
    let env = TestEnv::load()?;
    env.check_answering()?;
    let namespace = env.fresh_namespace("bench-sync").await?;
    let group = format!("w{}.sync.driftwarden.test", unique_suffix());
    let corpus = Corpus::generate(&namespace.name, &group, objects)?;
    let _cleanup = corpus.cluster_cleanup(&env);
    let repo = GitRepo::new()?;
    corpus.write(&repo)?;
    repo.commit("PLAT-1: every app of the shop")?;
    println!(
        "corpus: {} objects in {} files",
        corpus.objects.len(),
        corpus.files.len()
    );

    let applying = Instant::now();
    corpus.apply_as_gitops(&env, repo.path(), APPLIERS)?;
    let applied = applying.elapsed().as_secs_f64();
    println!(
        "applied as gitops in {applied:.1}s ({:.0} objects/s)",
        corpus.objects.len() as f64 / applied
    );

    let data = tempfile::Builder::new().prefix("bench-sync-").tempdir()?;
    let settings = Settings::new(
        env.kubeconfig(User::Admin),
        &data.path().join("data"),
        &repo.url(),
        &namespace.name,
        BusSettings::Embedded,
    );
    let started = Instant::now();
    let running = driftwarden::run::start(settings.config()?, Role::All)
        .await
        .context("starting driftwarden")?;
    let ledger = running.ledger.clone().context("role all has a ledger")?;
    let drift = wait_all_judged(&ledger, corpus.keys(), started).await?;
    let seconds = started.elapsed().as_secs_f64();
    running.stop().await;
    println!(
        "every object judged {seconds:.2}s after start ({:.0} objects/s); {drift} judged drift",
        corpus.objects.len() as f64 / seconds
    );
    let name = if objects == 2_000 {
        "initial_sync_s_2k_objects".to_owned()
    } else {
        format!("initial_sync_s_{objects}_objects")
    };
    println!("{name}={seconds:.2}");
    println!("deleting the bench namespace (in the background)");
    Ok(())
}

/// Waits until each of `keys` has a judged change; returns how many of
/// those first judgements are drift.
async fn wait_all_judged(ledger: &Ledger, keys: Vec<ObjectKey>, started: Instant) -> Result<usize> {
    let total = keys.len();
    let mut missing: BTreeSet<ObjectKey> = keys.into_iter().collect();
    let mut drift = 0;
    let mut next = 1;
    let mut reported = Instant::now();
    while !missing.is_empty() {
        while next <= ledger.len() {
            let record = ledger
                .get(next)?
                .with_context(|| format!("the ledger lost record #{next}"))?;
            next += 1;
            if let RecordBody::Change { event, judgement } = &record.body
                && missing.remove(&event.key)
                && judgement.verdict.is_drift()
            {
                drift += 1;
            }
        }
        if started.elapsed() > PATIENCE {
            let some: Vec<String> = missing.iter().take(10).map(ToString::to_string).collect();
            bail!(
                "{} of {total} objects not judged after {PATIENCE:?}, e.g. {}",
                missing.len(),
                some.join(", ")
            );
        }
        if reported.elapsed() > Duration::from_secs(5) {
            println!(
                "  {:.0}s: {} of {total} judged",
                started.elapsed().as_secs_f64(),
                total - missing.len()
            );
            reported = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(drift)
}
