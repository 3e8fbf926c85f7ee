//! Chat alerts against real local receivers standing in for Slack, Teams,
//! Mattermost and a signed webhook: every payload is checked against its
//! service's documented structure (and the webhook's signature) by the
//! receiver. Receivers fail and throttle, and every alert still arrives
//! exactly once; a mass change is one digest per sink; alerts owed when
//! the process is killed arrive after it restarts; a Secret's value never
//! appears in a payload or the log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use driftwarden::config::Config;
use driftwarden_e2e::app::config_map_yaml;
use driftwarden_e2e::enforcing::{Enforcing, Rule};
use driftwarden_e2e::process::Process;
use driftwarden_e2e::receivers::{Receiver, ReceiverOptions};
use driftwarden_e2e::scenario::{Bus, Scenario, records};
use driftwarden_e2e::{User, eventually};
use ledger::Ledger;
use model::{AlertEvent, RecordBody};
use notify::SinkKind;
use serde_json::json;

/// The webhook sink's HMAC key.
const KEY: &str = "6c1f0a9e3b7d4c2a8e5f1b0d9c7a6e4f3b2a1d0c9e8f7a6b";

/// A Secret value that must never leave Driftwarden.
const CANARY: &str = "canary-7d1e4b9f-never-in-an-alert";

/// The four receivers and the config section pointing at them.
struct Sinks {
    receivers: Vec<(&'static str, Receiver)>,
}

impl Sinks {
    async fn start(dir: &Path) -> Result<Sinks> {
        std::fs::create_dir_all(dir)?;
        let mut receivers = Vec::new();
        for (name, kind) in [
            ("slack", SinkKind::Slack),
            ("teams", SinkKind::Teams),
            ("mattermost", SinkKind::Mattermost),
            ("hook", SinkKind::Webhook),
        ] {
            let receiver = Receiver::start(kind, ReceiverOptions::with_key(KEY)).await?;
            receivers.push((name, receiver));
        }
        let sinks = Sinks { receivers };
        sinks.write_urls(dir)?;
        std::fs::write(dir.join("hook.key"), KEY)?;
        Ok(sinks)
    }

    /// Writes each receiver's URL where the config reads it.
    fn write_urls(&self, dir: &Path) -> Result<()> {
        for (name, receiver) in &self.receivers {
            std::fs::write(dir.join(format!("{name}.url")), receiver.url())?;
        }
        Ok(())
    }

    fn get(&self, name: &str) -> &Receiver {
        &self
            .receivers
            .iter()
            .find(|(n, _)| *n == name)
            .expect("a sink of that name")
            .1
    }

    /// The `alerts:` section: every sink takes every alert.
    fn yaml(dir: &Path, group_wait: &str) -> String {
        let file = |name: &str| {
            serde_json::Value::from(dir.join(name).to_string_lossy().into_owned()).to_string()
        };
        format!(
            "alerts:
  link_base: http://driftwarden.test
  group_wait: {group_wait}
  digest_min: 5
  retry: {{initial: 200ms, max: 2s}}
  sinks:
    - {{name: slack, type: slack, url: {{file: {slack}}}}}
    - {{name: teams, type: teams, url: {{file: {teams}}}}}
    - {{name: mattermost, type: mattermost, url: {{file: {mattermost}}}}}
    - {{name: hook, type: webhook, url: {{file: {hook}}}, secret: {{file: {key}}}}}
  routes:
    - sinks: [slack, teams, mattermost, hook]
",
            slack = file("slack.url"),
            teams = file("teams.url"),
            mattermost = file("mattermost.url"),
            hook = file("hook.url"),
            key = file("hook.key"),
        )
    }

    /// Every receiver refused nothing as invalid, and no payload holds
    /// the canary.
    fn check_payloads(&self) -> Result<()> {
        for (name, receiver) in &self.receivers {
            let invalid = receiver.invalid();
            ensure!(
                invalid.is_empty(),
                "{name}: payloads off the service's format: {:?}",
                invalid.iter().map(|i| &i.reason).collect::<Vec<_>>()
            );
            for received in receiver.received() {
                ensure!(
                    !String::from_utf8_lossy(&received.raw).contains(CANARY),
                    "{name}: a Secret's value in a payload"
                );
            }
        }
        Ok(())
    }
}

/// A scenario declaring ConfigMap `settings`, enforcing in its namespace,
/// with the four sinks; `audit` gives identities from audit events.
async fn scenario(name: &str, group_wait: &str) -> Result<(Scenario, Sinks, PathBuf)> {
    let mut s = Scenario::prepare(Bus::Embedded, name, &["v1/ConfigMap", "v1/Secret"]).await?;
    s.with_audit_webhook()?;
    let yaml = config_map_yaml(s.namespace(), "settings", &[], &[("level", "info")]);
    s.repo.write("apps/settings.yaml", &yaml)?;
    s.commit("Declare settings (OPS-7)")?;
    s.apply_as_gitops(&["apps/settings.yaml"])?;
    let dir = s.settings.data_dir.with_extension("sinks");
    let sinks = Sinks::start(&dir).await?;
    let mut enforcing = Enforcing::new(s.settings.clone());
    enforcing.rules = vec![Rule::new("team", model::Mode::Enforce).in_namespace(s.namespace())];
    let text = format!("{}{}", enforcing.yaml()?, Sinks::yaml(&dir, group_wait));
    let path = s.settings.data_dir.with_extension("yaml");
    std::fs::write(&path, &text)?;
    s.config = Config::parse(&path, &text).with_context(|| text.clone())?;
    Ok((s, sinks, path))
}

/// Mallory sets `settings` to `level: debug`.
fn drift(s: &Scenario) -> Result<()> {
    let patch = json!({"data": {"level": "debug"}}).to_string();
    s.kubectl(
        User::Mallory,
        &["patch", "configmap", "settings", "-p", &patch],
    )?;
    Ok(())
}

/// Alice creates Secret `leak` holding the canary.
fn leak(s: &Scenario) -> Result<()> {
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: leak\n  namespace: {}\nstringData:\n  password: {CANARY}\n",
        s.namespace()
    );
    s.create(User::Alice, &manifest)
}

/// For each sink: the outbox entries routed to it and the deliveries that
/// carried them. Every entry is carried by exactly one delivery, and the
/// receiver took exactly as many messages as there are deliveries.
fn check_exactly_once(ledger: &Ledger, sinks: &Sinks) -> Result<()> {
    let records = records(ledger)?;
    for (name, receiver) in &sinks.receivers {
        let routed: Vec<u64> = records
            .iter()
            .filter(
                |r| matches!(&r.body, RecordBody::Alert(a) if a.sinks.iter().any(|s| s == name)),
            )
            .map(|r| r.seq)
            .collect();
        let mut carried: Vec<u64> = Vec::new();
        let mut deliveries = 0;
        for record in &records {
            if let RecordBody::Delivery(delivery) = &record.body
                && delivery.sink == *name
            {
                deliveries += 1;
                carried.extend(&delivery.alerts);
            }
        }
        carried.sort_unstable();
        ensure!(
            carried == routed,
            "{name}: alerts routed {routed:?}, delivered {carried:?}"
        );
        ensure!(
            receiver.received().len() == deliveries,
            "{name}: {} messages taken, {deliveries} deliveries recorded",
            receiver.received().len()
        );
    }
    Ok(())
}

/// The text of every payload a receiver took.
fn texts(receiver: &Receiver) -> Vec<String> {
    receiver
        .received()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.raw).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sink_gets_each_alert_once_through_failures_and_throttling() -> Result<()> {
    testenv::logs::capture();
    let (mut s, sinks, _) = scenario("alerts-sinks", "300ms").await?;
    sinks.get("slack").fail_next(2, 503);
    sinks.get("teams").throttle_next(1, 1);
    sinks.get("hook").fail_next(1, 500);
    sinks.get("mattermost").fail_next(4, 503);
    s.start().await?;
    s.wait_first_records(&[s.config_map("settings")]).await?;
    drift(&s)?;
    leak(&s)?;
    // A sink failing again and again shows in readiness, then recovers.
    let ready = |s: &Scenario| {
        let health = s.health().expect("running");
        health
            .parts()
            .get("alerts/mattermost")
            .map(|part| part.ready)
    };
    eventually(Duration::from_secs(30), "mattermost not ready", || {
        let failing = ready(&s) == Some(false);
        async move { Ok(failing.then_some(())) }
    })
    .await?;
    // Both alerts reach every sink: the drift (with its revert folded in
    // or following) and the stray Secret.
    for (name, receiver) in &sinks.receivers {
        eventually(Duration::from_secs(60), name, || {
            let all = texts(receiver).join("\n");
            let done =
                all.contains("settings") && all.contains("leak") && all.contains("reverted in");
            async move { Ok(done.then_some(())) }
        })
        .await?;
    }
    sinks.check_payloads()?;
    ensure!(ready(&s) == Some(true), "mattermost ready once it delivers");
    ensure!(sinks.get("slack").attempts() >= sinks.get("slack").received().len() + 2);
    // Who and what git expects, as the alert says it.
    let slack = texts(sinks.get("slack")).join("\n");
    ensure!(
        slack.contains("mallory"),
        "the identity from the audit event: {slack}"
    );
    ensure!(
        slack.contains("OPS-7"),
        "the ticket of the commit git expects: {slack}"
    );
    ensure!(
        slack.contains("driftwarden.test/#history="),
        "a link to the history: {slack}"
    );
    // The webhook names each message's id in a header and the body.
    for received in sinks.get("hook").received() {
        let id = received.body["id"].as_str().context("an id")?;
        ensure!(received.header("driftwarden-delivery") == Some(id));
    }
    // Mallory changes the stray Secret: its alert names the field changed,
    // never a value (not even its digest).
    let patch = json!({"stringData": {"password": "second-value"}}).to_string();
    s.kubectl(User::Mallory, &["patch", "secret", "leak", "-p", &patch])?;
    let hook = sinks.get("hook");
    let changed = eventually(Duration::from_secs(60), "the Secret's change", || {
        let found = hook.received().into_iter().find_map(|r| {
            let alert = r.body.get("alert")?;
            let lines = alert["diff"].as_array()?;
            (alert["kind"] == "Secret" && !lines.is_empty()).then(|| lines.clone())
        });
        async move { Ok(found) }
    })
    .await?;
    for line in &changed {
        for side in ["expected", "live"] {
            if let Some(value) = line.get(side) {
                ensure!(value == "(secret value, not shown)", "{line}");
            }
        }
    }
    // Settle, then compare with the ledger.
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.stop().await;
    let ledger = Ledger::open(s.settings.data_dir.join("ledger"))?;
    check_exactly_once(&ledger, &sinks)?;
    let outbox = ledger.outbox()?;
    ensure!(outbox.pending.is_empty(), "owed: {:?}", outbox.pending);
    let logged = testenv::logs::captured()?;
    ensure!(
        logged.contains("alert delivery failed"),
        "failures are logged"
    );
    ensure!(!logged.contains(CANARY), "a Secret's value in the log");
    for (name, receiver) in &sinks.receivers {
        ensure!(
            !logged.contains(&receiver.url()),
            "{name}'s URL (a secret) in the log"
        );
    }
    let alerts = records(&ledger)?
        .into_iter()
        .filter(
            |r| matches!(&r.body, RecordBody::Alert(a) if matches!(a.event, AlertEvent::Opened(_))),
        )
        .count();
    ensure!(
        alerts == 3,
        "one alert per change departing from git, {alerts} opened"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_changes_at_once_are_one_digest_per_sink() -> Result<()> {
    let (mut s, sinks, _) = scenario("alerts-digest", "4s").await?;
    s.start().await?;
    s.wait_first_records(&[s.config_map("settings")]).await?;
    let mut list = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for i in 0..50 {
        list.push_str(&format!(
            "  - apiVersion: v1\n    kind: ConfigMap\n    metadata: {{name: stray-{i}, namespace: {}}}\n    data: {{n: \"{i}\"}}\n",
            s.namespace()
        ));
    }
    s.create(User::Alice, &list)?;
    for (name, receiver) in &sinks.receivers {
        receiver
            .wait_for(1, Duration::from_secs(60))
            .await
            .with_context(|| name.to_string())?;
    }
    // Longer than the group wait: nothing else comes.
    tokio::time::sleep(Duration::from_secs(6)).await;
    sinks.check_payloads()?;
    for (name, receiver) in &sinks.receivers {
        let received = receiver.received();
        ensure!(received.len() == 1, "{name}: {} messages", received.len());
    }
    let hook = &sinks.get("hook").received()[0].body;
    ensure!(hook["type"] == "digest", "{hook}");
    let alerts = hook["alerts"].as_array().context("the digest's alerts")?;
    ensure!(alerts.len() == 50, "{} alerts in the digest", alerts.len());
    s.stop().await;
    let ledger = Ledger::open(s.settings.data_dir.join("ledger"))?;
    check_exactly_once(&ledger, &sinks)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_owed_when_killed_are_delivered_after_restart() -> Result<()> {
    let (mut s, sinks, config) = scenario("alerts-restart", "200ms").await?;
    for (_, receiver) in &sinks.receivers {
        receiver.fail_next(10_000, 503);
    }
    let log = config.with_extension("log");
    let binary = Path::new(env!("CARGO_BIN_EXE_driftwarden-under-test"));
    let mut first = Process::run(binary, &config, &log, s.identity_mut()?).await?;
    first.wait_watching(0).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    drift(&s)?;
    leak(&s)?;
    // Written to the outbox and tried, never taken.
    eventually(Duration::from_secs(60), "delivery attempts", || {
        let tried = sinks.receivers.iter().all(|(_, r)| r.attempts() >= 2);
        async move { Ok(tried.then_some(())) }
    })
    .await?;
    first.kill().await?;
    ensure!(sinks.receivers.iter().all(|(_, r)| r.received().is_empty()));

    // The services are back, at new addresses.
    let dir = s.settings.data_dir.with_extension("sinks");
    let back = Sinks::start(&dir).await?;
    let offset = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
    let mut second = Process::run(binary, &config, &log, s.identity_mut()?).await?;
    second.wait_watching(offset).await?;
    for (name, receiver) in &back.receivers {
        eventually(Duration::from_secs(60), name, || {
            let all = texts(receiver).join("\n");
            let done = all.contains("settings") && all.contains("leak");
            async move { Ok(done.then_some(())) }
        })
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    second.interrupt().await?;
    back.check_payloads()?;
    let ledger = Ledger::open(s.settings.data_dir.join("ledger"))?;
    check_exactly_once(&ledger, &back)?;
    let text = std::fs::read_to_string(&log)?;
    ensure!(!text.contains(CANARY), "the Secret's value in the log");
    ensure!(
        !text.contains(&sinks.get("slack").url()),
        "a sink's URL (a secret) in the log"
    );
    let owed = ledger.outbox()?.pending;
    ensure!(owed.is_empty(), "owed after the restart: {owed:?}");
    Ok(())
}
