//! Enforcement state that survives a crash: the Driftwarden binary is
//! killed with SIGKILL while a drift waits out its grace period, or while
//! the circuit breaker is tripped, and started again. Nothing it held in
//! memory may be lost: the drift is reverted when its grace ends, the
//! breaker stays tripped until its pause ends.
//!
//! The binary holds the ledger while it runs, so the tests watch the
//! cluster (and the log) while it runs and read the ledger once it stopped.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use driftwarden_e2e::app::config_map_yaml;
use driftwarden_e2e::enforcing::{Enforcing, Rails, Rule};
use driftwarden_e2e::process::Process;
use driftwarden_e2e::scenario::{Bus, Scenario, records};
use driftwarden_e2e::{User, eventually};
use ledger::Ledger;
use model::{Control, Enforcement, Mode, Outcome, RecordBody};
use serde_json::{Value, json};

/// The grace period of the grace scenario.
const GRACE: Duration = Duration::from_secs(8);

/// A scenario declaring ConfigMaps `names` (`level: info`), applied as
/// the GitOps agent, its config written for the binary with one enforcing
/// rule (`rule` for the namespace) and `rails`. Returns it and the config
/// file.
async fn declared(
    name: &str,
    names: &[&str],
    rule: impl FnOnce(&str) -> Rule,
    rails: Rails,
) -> Result<(Scenario, std::path::PathBuf)> {
    let mut s = Scenario::prepare(Bus::Embedded, name, &[]).await?;
    let mut files = Vec::new();
    for cm in names {
        let file = format!("apps/{cm}.yaml");
        let yaml = config_map_yaml(s.namespace(), cm, &[], &[("level", "info")]);
        s.repo.write(&file, &yaml)?;
        files.push(file);
    }
    s.commit("Declare settings (OPS-1)")?;
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    s.apply_as_gitops(&files)?;
    let mut enforcing = Enforcing::new(s.settings.clone());
    enforcing.rules = vec![rule(s.namespace())];
    enforcing.rails = rails;
    s.config = enforcing.config()?;
    let config = s.settings.data_dir.with_extension("yaml");
    std::fs::write(&config, enforcing.yaml()?)?;
    Ok((s, config))
}

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_driftwarden-under-test"))
}

fn level(live: Option<&Value>) -> Option<&str> {
    live?.pointer("/data/level")?.as_str()
}

/// Mallory sets ConfigMap `name` to `level: debug`.
fn drift(s: &Scenario, name: &str) -> Result<()> {
    let patch = json!({"data": {"level": "debug"}}).to_string();
    s.kubectl(User::Mallory, &["patch", "configmap", name, "-p", &patch])?;
    Ok(())
}

/// Starts the binary as the scenario's ServiceAccount and waits until it
/// watches; `log` collects its output.
async fn start(s: &mut Scenario, config: &Path, log: &Path) -> Result<Process> {
    let offset = std::fs::metadata(log).map_or(0, |m| m.len() as usize);
    let mut process = Process::run(binary(), config, log, s.identity_mut()?).await?;
    process.wait_watching(offset).await?;
    Ok(process)
}

/// The enforcement records about ConfigMap `name` once the binary stopped.
fn enforcements(s: &Scenario, name: &str) -> Result<Vec<Enforcement>> {
    let ledger = Ledger::open(s.settings.data_dir.join("ledger"))?;
    let key = s.config_map(name);
    Ok(records(&ledger)?
        .into_iter()
        .filter_map(|record| match record.body {
            RecordBody::Enforcement(e) if e.key == key => Some(e),
            _ => None,
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drift_waiting_out_its_grace_is_reverted_on_time_after_a_crash() -> Result<()> {
    let rule = |ns: &str| {
        Rule::new("team", Mode::Enforce)
            .in_namespace(ns)
            .with_grace(GRACE)
    };
    let (mut s, config) = declared("durable-grace", &["settings"], rule, Rails::default()).await?;
    let log = config.with_extension("log");
    let first = start(&mut s, &config, &log).await?;
    // The first listing is judged before the drift is made.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let drifted = Instant::now();
    drift(&s, "settings")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.kill().await?;
    let live = s.live("configmap", "settings")?;
    ensure!(
        level(live.as_ref()) == Some("debug"),
        "not reverted inside its grace"
    );

    let mut second = start(&mut s, &config, &log).await?;
    eventually(Duration::from_secs(30), "the drift reverted", || {
        let live = s.live("configmap", "settings");
        async move { Ok((level(live?.as_ref()) == Some("info")).then_some(())) }
    })
    .await?;
    let after = drifted.elapsed();
    second.check_running()?;
    second.interrupt().await?;
    ensure!(
        after >= GRACE,
        "reverted {after:?} after the drift: before its grace of {GRACE:?} ended"
    );
    ensure!(
        after <= GRACE + Duration::from_secs(10),
        "reverted {after:?} after the drift: long after its grace of {GRACE:?}"
    );
    let answered = enforcements(&s, "settings")?;
    ensure!(
        answered
            .iter()
            .any(|e| matches!(e.outcome, Outcome::Reverted { .. })),
        "{answered:?}"
    );
    eprintln!("reverted {after:?} after the drift (grace {GRACE:?}), across a SIGKILL");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tripped_breaker_stays_tripped_after_a_crash() -> Result<()> {
    let rails = Rails {
        breaker_limit: 2,
        breaker_window: Duration::from_secs(60),
        breaker_pause: Duration::from_secs(600),
        ..Rails::default()
    };
    let names = ["a", "b", "c", "d"];
    let rule = |ns: &str| Rule::new("team", Mode::Enforce).in_namespace(ns);
    let (mut s, config) = declared("durable-breaker", &names, rule, rails).await?;
    let log = config.with_extension("log");
    let first = start(&mut s, &config, &log).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for name in &names[..3] {
        drift(&s, name)?;
    }
    eventually(Duration::from_secs(30), "the breaker tripped", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { Ok(text.contains("circuit breaker tripped").then_some(())) }
    })
    .await?;
    // The pause is written with the rest of its batch, moments after the
    // log line; the crash comes once it is in the ledger.
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.kill().await?;

    let mut second = start(&mut s, &config, &log).await?;
    drift(&s, "d")?;
    // The drift is decided within moments; give it time to be (wrongly)
    // reverted before looking.
    tokio::time::sleep(Duration::from_secs(3)).await;
    second.check_running()?;
    second.interrupt().await?;
    let live = s.live("configmap", "d")?;
    ensure!(level(live.as_ref()) == Some("debug"), "d was not reverted");
    let answered = enforcements(&s, "d")?;
    ensure!(
        matches!(answered.as_slice(), [Enforcement { outcome: Outcome::Held { reason }, .. }]
            if reason.contains("paused")),
        "d's drift held by the paused breaker: {answered:?}"
    );
    let ledger = Ledger::open(s.settings.data_dir.join("ledger"))?;
    let resumed = records(&ledger)?
        .into_iter()
        .any(|r| matches!(r.body, RecordBody::Control(Control::Resumed { .. })));
    ensure!(!resumed, "the pause was not lifted by the restart");
    drop(ledger);
    drop(s);
    Ok(())
}
