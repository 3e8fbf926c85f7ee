//! What attribution costs, on the real environment (`cargo xtask env up`).
//! On each bus, two Driftwardens run side by side in this process, each
//! watching a namespace of its own: one without an audit webhook (off), one
//! with its webhook fed by the environment's relay (on). Mallory changes
//! their ConfigMaps in alternating blocks (off, on, on, off, …), so both see
//! the same machine; the relay posts to the `on` Driftwarden only during its
//! blocks, so it does no audit work while the other is timed.
//!
//! ```text
//!  detect  patch data.value (declared)  ─watch─▶ bus ─▶ correlator ─▶ verdict in the ledger
//!  label   patch metadata.labels (undeclared): on waits for its audit record
//!          kube-apiserver ─audit batch (≤ 100 ms)─▶ relay ─▶ webhook ─▶ bus ─┘
//!  revert  patch data.value, enforce ─▶ restored to git, seen by a separate watch
//! ```
//!
//! Every time runs from just before the write (as `kubectl patch` or
//! `kubectl label` by mallory would make it) to the `at` of its change
//! record (detect, label), or to the restored object in the watch (revert).
//! `join_wait_*` is the label time with the webhook on, nothing taken off:
//! that verdict depends on who made the change, so it waits for the audit
//! record (up to `join_wait`, 2 s). Prints `name=value` lines for
//! `cargo xtask bench`; the `*_on_off_ratio_*` figures are on ÷ off.
//! When a p99 ratio is over 1.10 the pair is measured once more and the
//! second figures are printed with `_repeat`. A progress line splits the
//! `on` side's detect and revert times by whether the correlator recorded
//! an attribution (of an earlier write) while the change was in flight.
//!
//! `ATTRIBUTION_CHANGES` sets the changes timed per kind and side
//! (default 200), after 3 untimed ones.

use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use driftwarden_e2e::app::config_map_yaml;
use driftwarden_e2e::enforcing::{Enforcing, Rails, Rule};
use driftwarden_e2e::scenario::{Bus, Scenario};
use driftwarden_e2e::{AuditReceiver, TestEnv, User};
use futures::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use ledger::Ledger;
use model::{Actor, LedgerRecord, Mode, ObjectKey, RecordBody};
use serde_json::json;

/// Changes in one block of one side.
const BLOCK: usize = 25;

/// Untimed changes per kind and side before the first block.
const WARM_UP: usize = 3;

/// The largest on ÷ off p99 ratio accepted.
const BOUND: f64 = 1.10;

/// How long one change may take to reach the ledger or be restored.
const TIMEOUT: Duration = Duration::from_secs(30);

/// How long the audit records of a block's last writes may take to
/// reach the `on` Driftwarden before the relay stops posting to it.
const AUDIT_DRAIN: Duration = Duration::from_millis(400);

const PROBE: &str = "probe";
const PROBE_FILE: &str = "apps/probe.yaml";
const TAGGED: &str = "tagged";
const TAGGED_FILE: &str = "apps/tagged.yaml";
const DESIRED: &str = "0";

fn main() -> Result<()> {
    let changes = match std::env::var("ATTRIBUTION_CHANGES") {
        Ok(text) if !text.is_empty() => text
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 2)
            .with_context(|| format!("ATTRIBUTION_CHANGES={text}: expected a whole number ≥ 2"))?,
        _ => 200,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let env = TestEnv::get();
        // Scenarios (and their namespaces) are dropped at the end, so
        // namespace deletions do not load the apiserver while others are timed.
        let mut done = Vec::new();
        for (bus, name) in [(Bus::Embedded, "embedded"), (Bus::Kafka, "kafka")] {
            judged(env, bus, name, changes, &mut done).await?;
            reverted(env, bus, name, changes, &mut done).await?;
        }
        println!("deleting the bench namespaces (in the background)");
        drop(done);
        Ok(())
    })
}

/// Detect and label times on `bus`, off and on; measured again once when
/// the detect p99 ratio is over the bound.
async fn judged(
    env: &'static TestEnv,
    bus: Bus,
    name: &str,
    changes: usize,
    done: &mut Vec<Scenario>,
) -> Result<()> {
    println!(
        "detect and label, {name} bus: {changes} of each per side, webhook off and on in blocks of {BLOCK}"
    );
    let first = judge_pair(env, bus, changes, done).await?;
    first.detect.report("detect", name, "");
    first
        .label_off
        .report(&format!("label_{{}}_ms_{name}_webhook_off"));
    first.label_on.report(&format!("join_wait_{{}}_ms_{name}"));
    println!("join_wait_unjoined_{name}={}", first.unjoined);
    let ratio = first.detect.p99_ratio();
    if ratio > BOUND {
        println!(
            "  detect p99 on ÷ off is {ratio:.2}, over {BOUND:.2}: measuring the pair once more (the machine may be noisy)"
        );
        let again = judge_pair(env, bus, changes, done).await?;
        again.detect.report("detect", name, "_repeat");
    }
    Ok(())
}

/// Revert times on `bus`, off and on; measured again once when the p99
/// ratio is over the bound.
async fn reverted(
    env: &'static TestEnv,
    bus: Bus,
    name: &str,
    changes: usize,
    done: &mut Vec<Scenario>,
) -> Result<()> {
    println!(
        "revert, {name} bus: {changes} changes per side, webhook off and on in blocks of {BLOCK}"
    );
    let first = revert_pair(env, bus, changes, done).await?;
    first.report("revert", name, "");
    let ratio = first.p99_ratio();
    if ratio > BOUND {
        println!(
            "  revert p99 on ÷ off is {ratio:.2}, over {BOUND:.2}: measuring the pair once more (the machine may be noisy)"
        );
        let again = revert_pair(env, bus, changes, done).await?;
        again.report("revert", name, "_repeat");
    }
    Ok(())
}

/// The detect and label times of one pair of Driftwardens.
#[derive(Debug)]
struct Judged {
    detect: Pair,
    label_off: Sample,
    label_on: Sample,
    /// Label changes the `on` side judged without their audit record.
    unjoined: usize,
}

async fn judge_pair(
    env: &'static TestEnv,
    bus: Bus,
    changes: usize,
    done: &mut Vec<Scenario>,
) -> Result<Judged> {
    let mut sides = [
        Side::start(env, bus, "bench-attr-off", false, Mode::Audit).await?,
        Side::start(env, bus, "bench-attr-on", true, Mode::Audit).await?,
    ];
    let mut detect = [Vec::new(), Vec::new()];
    // The `on` side's detect times, split by whether an attribution was
    // recorded while the change was in flight.
    let mut behind = [Vec::new(), Vec::new()];
    let mut label = [Vec::new(), Vec::new()];
    let mut unjoined = 0;
    for (i, side) in sides.iter_mut().enumerate() {
        side.listen()?;
        for _ in 0..WARM_UP {
            side.detect_one().await?;
            side.label_one().await?;
        }
        side.mute().await;
        println!("  {} warmed up", ["off", "on"][i]);
    }
    for (round, block) in blocks(changes).enumerate() {
        for i in abba(round) {
            let side = &mut sides[i];
            side.listen()?;
            for _ in 0..block {
                let (ms, behind_attribution) = side.detect_one().await?;
                detect[i].push(ms);
                if side.webhook {
                    behind[usize::from(behind_attribution)].push(ms);
                }
            }
            for _ in 0..block {
                let (ms, joined) = side.label_one().await?;
                label[i].push(ms);
                if side.webhook && !joined {
                    unjoined += 1;
                }
            }
            side.mute().await;
        }
        let detect = Pair::of(&detect);
        println!(
            "  {}/{changes}: detect p50 {:.1} / {:.1} ms, p99 {:.1} / {:.1} ms (off / on); label p50 {:.1} / {:.1} ms, p99 {:.1} / {:.1} ms",
            detect.off.len,
            detect.off.p50,
            detect.on.p50,
            detect.off.p99,
            detect.on.p99,
            Sample::of(&label[0]).p50,
            Sample::of(&label[1]).p50,
            Sample::of(&label[0]).p99,
            Sample::of(&label[1]).p99,
        );
    }
    for side in sides {
        done.push(side.stop().await);
    }
    report_behind("detect", &behind);
    Ok(Judged {
        detect: Pair::of(&detect),
        label_off: Sample::of(&label[0]),
        label_on: Sample::of(&label[1]),
        unjoined,
    })
}

async fn revert_pair(
    env: &'static TestEnv,
    bus: Bus,
    changes: usize,
    done: &mut Vec<Scenario>,
) -> Result<Pair> {
    let mut sides = [
        Side::start(env, bus, "bench-attr-revert-off", false, Mode::Enforce).await?,
        Side::start(env, bus, "bench-attr-revert-on", true, Mode::Enforce).await?,
    ];
    let mut observers = Vec::with_capacity(2);
    for side in &sides {
        observers.push(Observer::start(env, side.scenario.namespace()).await?);
    }
    let mut reverts = [Vec::new(), Vec::new()];
    let mut behind = [Vec::new(), Vec::new()];
    for (i, side) in sides.iter_mut().enumerate() {
        side.listen()?;
        for _ in 0..WARM_UP {
            side.revert_one(&mut observers[i]).await?;
        }
        side.mute().await;
    }
    for (round, block) in blocks(changes).enumerate() {
        for i in abba(round) {
            let side = &mut sides[i];
            side.listen()?;
            for _ in 0..block {
                let (ms, behind_attribution) = side.revert_one(&mut observers[i]).await?;
                reverts[i].push(ms);
                if side.webhook {
                    behind[usize::from(behind_attribution)].push(ms);
                }
            }
            side.mute().await;
        }
        let pair = Pair::of(&reverts);
        println!(
            "  {}/{changes}: revert p50 {:.1} / {:.1} ms, p99 {:.1} / {:.1} ms (off / on)",
            pair.off.len, pair.off.p50, pair.on.p50, pair.off.p99, pair.on.p99
        );
    }
    for side in sides {
        done.push(side.stop().await);
    }
    report_behind("revert", &behind);
    Ok(Pair::of(&reverts))
}

/// Prints the `on` side's times of `what`, split by whether an attribution
/// was recorded while the change was in flight (`behind[1]`) or not.
fn report_behind(what: &str, behind: &[Vec<f64>; 2]) {
    let [clear, behind] = [Sample::of(&behind[0]), Sample::of(&behind[1])];
    println!(
        "  {what} with the webhook on: {} changes with an attribution recorded meanwhile, p50 {:.1} ms, max {:.1} ms; {} without, p50 {:.1} ms, max {:.1} ms",
        behind.len, behind.p50, behind.max, clear.len, clear.p50, clear.max
    );
}

/// The sizes of the blocks of `changes` changes.
fn blocks(changes: usize) -> impl Iterator<Item = usize> {
    (0..changes)
        .step_by(BLOCK)
        .map(move |start| BLOCK.min(changes - start))
}

/// Which side goes first in `round`: off, on, then on, off, …
fn abba(round: usize) -> [usize; 2] {
    if round.is_multiple_of(2) {
        [0, 1]
    } else {
        [1, 0]
    }
}

/// One Driftwarden of a pair, the ConfigMaps it watches and mallory's
/// client for them.
struct Side {
    scenario: Scenario,
    webhook: bool,
    writer: Api<ConfigMap>,
    /// The relay's registration of this side's webhook, while its block runs.
    receiver: Option<AuditReceiver>,
    /// Changes made so far.
    count: usize,
    /// The last ledger record looked at by [`Side::timed_write`].
    seen: u64,
}

impl Side {
    /// A fresh namespace whose git repository declares the probe and the
    /// tagged ConfigMap, applied by the GitOps agent, watched by a
    /// Driftwarden in `mode`, with or without its audit webhook.
    async fn start(
        env: &'static TestEnv,
        bus: Bus,
        name: &str,
        webhook: bool,
        mode: Mode,
    ) -> Result<Side> {
        let mut s = Scenario::prepare(bus, name, &["v1/ConfigMap"]).await?;
        if webhook {
            s.with_audit_webhook()?;
        }
        let ns = s.namespace().to_string();
        for (file, name) in [(PROBE_FILE, PROBE), (TAGGED_FILE, TAGGED)] {
            let manifest = config_map_yaml(&ns, name, &[("app", "bench")], &[("value", DESIRED)]);
            s.repo.write(file, &manifest)?;
        }
        s.commit("BENCH-2: the probe and the tagged ConfigMap")?;
        if mode == Mode::Enforce {
            let mut enforcing = Enforcing::new(s.settings.clone());
            enforcing.rules = vec![Rule::new("bench", Mode::Enforce).in_namespace(&ns)];
            // One writer drifting the same object hundreds of times is the
            // point here, not a revert war: the rails are off.
            enforcing.rails = Rails {
                flap_limit: 0,
                breaker_limit: 0,
                ..Rails::default()
            };
            s.config = enforcing.config()?;
        }
        s.apply_as_gitops(&[PROBE_FILE, TAGGED_FILE])?;
        s.start_without_relay().await?;
        s.wait_first_records(&[s.config_map(PROBE), s.config_map(TAGGED)])
            .await?;
        let writer = Api::namespaced(env.client(User::Mallory).await?, &ns);
        Ok(Side {
            scenario: s,
            webhook,
            writer,
            receiver: None,
            count: 0,
            seen: 0,
        })
    }

    /// Has the relay post to this side's webhook, if it has one.
    fn listen(&mut self) -> Result<()> {
        if let Some(webhook) = &self.scenario.settings.audit_webhook {
            let env = self.scenario.env;
            self.receiver = Some(env.register_audit_receiver(
                &webhook.url(),
                Some(&webhook.token),
                Some(env.ca_cert()),
            )?);
        }
        Ok(())
    }

    /// Lets the audit records of the last writes arrive, then has the
    /// relay stop posting to this side.
    async fn mute(&mut self) {
        if self.receiver.is_some() {
            tokio::time::sleep(AUDIT_DRAIN).await;
            self.receiver = None;
        }
    }

    /// Patches the probe's declared value, alternately away from git and
    /// back; returns the milliseconds to its change record and whether an
    /// attribution was recorded meanwhile.
    async fn detect_one(&mut self) -> Result<(f64, bool)> {
        let value = if self.count.is_multiple_of(2) {
            format!("drift-{}", self.count)
        } else {
            DESIRED.to_string()
        };
        self.count += 1;
        let patch = json!({"data": {"value": value}});
        let timed = self
            .timed_write(PROBE, &PatchParams::default(), &patch)
            .await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok((timed.ms, timed.behind_attribution))
    }

    /// Sets a label git does not declare to a new value, as `kubectl
    /// label` does; returns the milliseconds to its change record and
    /// whether that record names the actor from the audit record.
    async fn label_one(&mut self) -> Result<(f64, bool)> {
        let patch = json!({"metadata": {"labels": {"note": format!("v{}", self.count)}}});
        self.count += 1;
        let params = PatchParams {
            field_manager: Some("kubectl-label".into()),
            ..PatchParams::default()
        };
        let timed = self.timed_write(TAGGED, &params, &patch).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok((timed.ms, matches!(timed.actor, Actor::Audit { .. })))
    }

    /// Merge-patches `name` as mallory and waits for the change record
    /// holding the version it produced.
    async fn timed_write(
        &mut self,
        name: &str,
        params: &PatchParams,
        patch: &serde_json::Value,
    ) -> Result<Timed> {
        let sent = now_micros();
        let written = self
            .writer
            .patch(name, params, &Patch::Merge(patch))
            .await
            .with_context(|| format!("patching {name} as mallory"))?;
        let version = written
            .metadata
            .resource_version
            .context("the apiserver returned no resourceVersion")?;
        let key = self.scenario.config_map(name);
        let record = wait_recorded(self.scenario.ledger(), &key, &version).await?;
        let at = record.at.timestamp_micros();
        let behind_attribution = self.attributed_between(sent, at)?;
        let RecordBody::Change { judgement, .. } = record.body else {
            bail!("record #{} of {key} is no change", record.seq);
        };
        Ok(Timed {
            ms: (at - sent) as f64 / 1e3,
            actor: judgement.actor,
            behind_attribution,
        })
    }

    /// Whether the ledger recorded an attribution (of an earlier write)
    /// between `from` and `to` (µs since the epoch): correlator work the
    /// webhook adds while a change is in flight. Looks at the records
    /// written since the last call.
    fn attributed_between(&mut self, from: i64, to: i64) -> Result<bool> {
        let ledger = self.scenario.ledger();
        let last = ledger.len();
        let mut found = false;
        for seq in self.seen + 1..=last {
            if let Some(record) = ledger.get(seq)?
                && matches!(record.body, RecordBody::Attribution(_))
                && (from..=to).contains(&record.at.timestamp_micros())
            {
                found = true;
            }
        }
        self.seen = last;
        Ok(found)
    }

    /// Drifts the probe's declared value; returns the milliseconds until
    /// `observer` sees it restored and whether an attribution was recorded
    /// meanwhile.
    async fn revert_one(&mut self, observer: &mut Observer) -> Result<(f64, bool)> {
        let drifted = format!("by-hand-{}", self.count);
        self.count += 1;
        let patch = json!({"data": {"value": drifted}});
        let sent = now_micros();
        let started = Instant::now();
        self.writer
            .patch(PROBE, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context("writing the drift")?;
        observer.wait_restored(&drifted).await?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let behind_attribution = self.attributed_between(sent, now_micros())?;
        Ok((ms, behind_attribution))
    }

    /// Stops the Driftwarden; the scenario keeps its namespace.
    async fn stop(mut self) -> Scenario {
        self.receiver = None;
        self.scenario.stop().await;
        self.scenario
    }
}

/// One timed write.
#[derive(Debug)]
struct Timed {
    /// From just before the write to the `at` of its change record.
    ms: f64,
    /// The actor that record names.
    actor: Actor,
    /// Whether an attribution was recorded while the write was in flight.
    behind_attribution: bool,
}

/// Polls the ledger every millisecond until `key` is at `version`;
/// returns the record holding that version.
async fn wait_recorded(ledger: &Ledger, key: &ObjectKey, version: &str) -> Result<LedgerRecord> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(state) = ledger.object_state(key)?
            && state.resource_version == version
        {
            return ledger
                .get(state.latest_seq)?
                .with_context(|| format!("the ledger lost record #{}", state.latest_seq));
        }
        if Instant::now() >= deadline {
            bail!(
                "the change of {key} to resourceVersion {version} was not recorded within {TIMEOUT:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A watch of the probe by the admin, separate from Driftwarden's.
struct Observer {
    events: Pin<Box<dyn Stream<Item = watcher::Result<Event<ConfigMap>>> + Send>>,
}

impl Observer {
    /// Starts the watch and waits for its first list.
    async fn start(env: &TestEnv, namespace: &str) -> Result<Observer> {
        let api: Api<ConfigMap> = Api::namespaced(env.client(User::Admin).await?, namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={PROBE}"));
        let mut events = watcher::watcher(api, config).boxed();
        while let Some(event) = events.next().await {
            if matches!(event?, Event::InitDone) {
                return Ok(Observer { events });
            }
        }
        bail!("the observer's watch ended before its first list")
    }

    /// Waits until the probe holds git's value after it held `drifted`
    /// (so the drift itself was seen first and the restore is its own).
    async fn wait_restored(&mut self, drifted: &str) -> Result<()> {
        let deadline = tokio::time::sleep(TIMEOUT);
        tokio::pin!(deadline);
        let mut drift_seen = false;
        loop {
            tokio::select! {
                () = &mut deadline => bail!("not restored to `{DESIRED}` within {TIMEOUT:?}"),
                event = self.events.next() => {
                    let Some(event) = event else { bail!("the observer's watch ended") };
                    let (Event::Apply(cm) | Event::InitApply(cm)) = event? else { continue };
                    let value = cm.data.as_ref().and_then(|d| d.get("value")).map(String::as_str);
                    if value == Some(drifted) {
                        drift_seen = true;
                    } else if drift_seen && value == Some(DESIRED) {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// The times of one kind of change, off and on.
#[derive(Debug)]
struct Pair {
    off: Sample,
    on: Sample,
}

impl Pair {
    fn of(times: &[Vec<f64>; 2]) -> Pair {
        Pair {
            off: Sample::of(&times[0]),
            on: Sample::of(&times[1]),
        }
    }

    fn p99_ratio(&self) -> f64 {
        self.on.p99 / self.off.p99
    }

    /// `<what>_p50_ms_<bus>_webhook_off<suffix>` and the like, then the
    /// ratios.
    fn report(&self, what: &str, bus: &str, suffix: &str) {
        for (side, sample) in [("off", &self.off), ("on", &self.on)] {
            sample.report(&format!("{what}_{{}}_ms_{bus}_webhook_{side}{suffix}"));
        }
        println!(
            "{what}_p50_on_off_ratio_{bus}{suffix}={:.2}",
            self.on.p50 / self.off.p50
        );
        println!(
            "{what}_p99_on_off_ratio_{bus}{suffix}={:.2}",
            self.p99_ratio()
        );
    }
}

/// Nearest-rank percentiles of a sample, in ms.
#[derive(Debug, Clone, Copy)]
struct Sample {
    len: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Sample {
    fn of(times: &[f64]) -> Sample {
        let mut sorted = times.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let i = (q * sorted.len() as f64).ceil() as usize;
            sorted
                .get(i.clamp(1, sorted.len().max(1)) - 1)
                .copied()
                .unwrap_or(f64::NAN)
        };
        Sample {
            len: sorted.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: sorted.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// p50, p99 and max, each named by `pattern` with `{}` replaced.
    fn report(&self, pattern: &str) {
        for (name, value) in [("p50", self.p50), ("p99", self.p99), ("max", self.max)] {
            println!("{}={value:.1}", pattern.replace("{}", name));
        }
    }
}

/// Now, in µs since the epoch (the clock of ledger records' `at`).
fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
