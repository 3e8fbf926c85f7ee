//! The enforcer role: turns drift into reverts where policy says so.
//!
//! ```text
//! drift record ──▶ policy (mode, grace, prune) ──▶ rails (breaker, flap limit)
//!              ──▶ plan ──▶ dry run: "would revert" │ enforce: write ──▶ enforcement record
//! ```
//!
//! Every decision, including a decision not to act, is a ledger record
//! linked to the drift it answers; a write is recorded as intended before it
//! is made and with its result after. Driftwarden's own writes come back as
//! change events and are judged like anyone else's.
//!
//! Nothing the enforcer holds lives only in memory: at start it is derived
//! from the ledger again ([`Enforcer::restore`]): a tripped breaker stays
//! tripped until its pause ends, reverts inside the flap window still count,
//! and every drift not yet answered (waiting out its grace, or written when
//! the process stopped) is queued for when it is due.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use enforce::{Executor, Grace, OwnWrites, PlanInput, Rails, RailsConfig};
use ledger::Ledger;
use model::{
    ChangeEvent, Enforcement, Exemption, Judgement, Mode, ObjectKey, Outcome, RecordBody,
    RevertAction, Verdict,
};
use tokio::sync::mpsc;

use crate::config::{Config, Policies};
use crate::desired::Desired;

/// A judged change the enforcer may act on.
#[derive(Debug, Clone)]
pub struct Job {
    /// The change.
    pub event: ChangeEvent,
    /// How it was judged.
    pub judgement: Judgement,
    /// Its ledger record.
    pub seq: u64,
}

impl Job {
    /// A job for a recorded change the enforcer may act on (drift, an
    /// unmanaged object, or a trusted change that refreshes a pending
    /// revert); its `seq` is filled in once it is written.
    pub fn of(body: &RecordBody) -> Option<Job> {
        let RecordBody::Change { event, judgement } = body else {
            return None;
        };
        let acts = matches!(
            judgement.verdict,
            Verdict::Drift { .. } | Verdict::Unmanaged | Verdict::InSync
        );
        acts.then(|| Job {
            event: event.clone(),
            judgement: judgement.clone(),
            seq: 0,
        })
    }
}

/// Messages to the enforcer.
#[derive(Debug)]
pub enum Command {
    /// Judged changes to consider.
    Judged(Vec<Job>),
    /// New commits moved the desired state.
    Desired {
        /// The desired state after them.
        desired: Desired,
        /// The objects they changed.
        changed: Vec<ObjectKey>,
    },
    /// The exemptions in force changed.
    Exemptions(Vec<Exemption>),
    /// Resume enforcement after a pause.
    Resume,
}

/// Decides and performs reverts; owns the safety rails.
#[derive(Debug)]
pub struct Enforcer {
    ledger: Arc<Ledger>,
    executor: Option<Executor>,
    own_writes: OwnWrites,
    policies: Policies,
    desired: Desired,
    rails: Rails,
    grace: Grace<Job>,
    /// How long an identity may take to arrive from the audit events;
    /// `None` without an audit source.
    join_wait: Option<std::time::Duration>,
    exemptions: Vec<Exemption>,
    metrics: crate::metrics::Metrics,
}

impl Enforcer {
    /// An enforcer writing records to `ledger` and the cluster through
    /// `executor` (`None`: nothing is ever written to the cluster).
    pub fn new(
        config: &Config,
        ledger: Arc<Ledger>,
        executor: Option<Executor>,
        desired: Desired,
        own_writes: OwnWrites,
    ) -> anyhow::Result<Self> {
        let e = &config.enforcement;
        let rails = Rails::new(RailsConfig {
            flap_limit: e.flap_limit,
            flap_window: chrono::Duration::from_std(e.flap_window)?,
            backoff_cap: chrono::Duration::from_std(e.backoff_cap)?,
            breaker_limit: e.breaker_limit,
            breaker_window: chrono::Duration::from_std(e.breaker_window)?,
            breaker_pause: chrono::Duration::from_std(e.breaker_pause)?,
        });
        let exemptions = ledger.exemptions()?;
        Ok(Self {
            ledger,
            executor,
            own_writes,
            policies: config.rules(),
            desired,
            rails,
            grace: Grace::default(),
            join_wait: config.join_wait(),
            exemptions,
            metrics: crate::metrics::Metrics::default(),
        })
    }

    /// Counts reverts, revert wars and pauses in `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Takes the state the enforcer had before a stop from the ledger: the
    /// breaker's pause and the drifts it counted (a trip the stop kept from
    /// being recorded is recorded now), the reverts inside the flap window,
    /// and every drift or unmanaged object under an acting policy that no
    /// final enforcement answers, queued for the end of its grace (or now).
    pub fn restore(&mut self, now: DateTime<Utc>) -> anyhow::Result<()> {
        let e = *self.rails.config();
        let horizon = now - e.breaker_pause.max(e.flap_window).max(e.breaker_window);
        // The ledger's own pause records win over a trip found again here.
        let mut tripped = None;
        for record in self.ledger.since(horizon) {
            let record = record?;
            match record.body {
                RecordBody::Control(model::Control::Paused { reason, until }) => {
                    tripped = None;
                    self.rails.pause(reason, until);
                }
                RecordBody::Control(model::Control::Resumed { .. }) => {
                    tripped = None;
                    self.rails.resume();
                }
                RecordBody::Change { judgement, .. }
                    if judgement.verdict.is_drift() && record.at >= now - e.breaker_window =>
                {
                    if let Some(trip) = self.rails.observe_drift(record.at) {
                        tripped = Some(trip);
                    }
                }
                RecordBody::Enforcement(Enforcement {
                    key,
                    outcome: Outcome::Reverted { .. },
                    ..
                }) if record.at >= now - e.flap_window => self.rails.record_revert(&key, record.at),
                _ => {}
            }
        }
        if let Some(trip) = tripped.filter(|_| self.rails.is_paused(now)) {
            tracing::warn!(
                ?trip,
                "circuit breaker tripped before the stop: enforcement paused"
            );
            self.ledger.append(vec![RecordBody::Control(trip)], &[])?;
            self.ledger.flush()?;
        } else if self.rails.is_paused(now) {
            tracing::warn!("enforcement still paused");
        }
        let mut queued = 0;
        for entry in self.ledger.objects() {
            let (key, state) = entry?;
            let waiting = match state.open_drift {
                Some(seq) => Some(seq),
                None if state.verdict == Verdict::Unmanaged.name() && state.latest.is_some() => {
                    Some(state.latest_seq)
                }
                None => None,
            };
            let Some(seq) = waiting else {
                continue;
            };
            let Some(job) = self.unanswered(&key, seq)? else {
                continue;
            };
            let last_good = state.last_good.as_ref();
            let Some((policy, _)) =
                self.policies
                    .governing(&key, self.desired.history(&key), last_good)
            else {
                continue;
            };
            if policy.mode == Mode::Audit {
                continue;
            }
            let recorded = self.ledger.get(seq)?.map_or(now, |record| record.at);
            let due = (recorded + chrono::Duration::from_std(policy.grace)?).max(now);
            self.grace.push(due, job);
            queued += 1;
        }
        if queued > 0 {
            tracing::info!(queued, "drift from before the start queued for enforcement");
        }
        Ok(())
    }

    /// The job of record `seq` (a change, or an amendment of one) about
    /// `key`, unless an enforcement record already answered it for good.
    fn unanswered(&self, key: &ObjectKey, seq: u64) -> anyhow::Result<Option<Job>> {
        let history = self.ledger.history(key)?;
        let answered = history.iter().any(|record| {
            matches!(&record.body, RecordBody::Enforcement(e)
                if e.drift_seq == seq && e.outcome != Outcome::Intended)
        });
        if answered {
            return Ok(None);
        }
        let find = |seq: u64| history.iter().find(|record| record.seq == seq);
        let job = match find(seq).map(|record| &record.body) {
            Some(RecordBody::Change { event, judgement }) => Some((event, judgement)),
            Some(RecordBody::Amendment(amendment)) => match find(amendment.amends).map(|r| &r.body)
            {
                Some(RecordBody::Change { event, .. }) => Some((event, &amendment.judgement)),
                _ => None,
            },
            _ => None,
        };
        Ok(job.map(|(event, judgement)| Job {
            event: event.clone(),
            judgement: judgement.clone(),
            seq,
        }))
    }

    /// Runs until the command channel closes.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) -> anyhow::Result<()> {
        self.restore(Utc::now())?;
        loop {
            let wait = self
                .grace
                .next_due()
                .map(|due| (due - Utc::now()).to_std().unwrap_or_default())
                .unwrap_or(std::time::Duration::from_secs(1));
            let command = tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => Some(command),
                    None => return Ok(()),
                },
                () = tokio::time::sleep(wait) => None,
            };
            let now = Utc::now();
            let mut records = Vec::new();
            if let Some(control) = self.rails.poll(now) {
                records.push(RecordBody::Control(control));
            }
            match command {
                Some(Command::Judged(jobs)) => {
                    for job in jobs {
                        records.extend(self.consider(job, now).await?);
                    }
                }
                Some(Command::Desired { desired, changed }) => {
                    self.desired = desired;
                    for key in changed {
                        records.extend(self.sync(&key).await?);
                    }
                }
                Some(Command::Exemptions(exemptions)) => self.exemptions = exemptions,
                // The request itself is the ledger record of the resume.
                Some(Command::Resume) => {
                    self.rails.resume();
                }
                None => {}
            }
            for job in self.grace.pop_due(now) {
                records.extend(self.act(job, now).await?);
            }
            self.metrics.enforcement_paused(self.rails.is_paused(now));
            if !records.is_empty() {
                let enforced: Vec<Enforcement> = records
                    .iter()
                    .filter_map(|record| match record {
                        RecordBody::Enforcement(e) => Some(e.clone()),
                        _ => None,
                    })
                    .collect();
                self.ledger.append(records, &[])?;
                self.ledger.flush_async().await?;
                for enforcement in &enforced {
                    self.metrics.enforced(enforcement);
                }
            }
        }
    }

    /// What to do about one judged change.
    async fn consider(&mut self, job: Job, now: DateTime<Utc>) -> anyhow::Result<Vec<RecordBody>> {
        let mut records = Vec::new();
        if job.judgement.verdict == Verdict::InSync {
            // A trusted change does not resolve a drift: a pending revert
            // goes on, planned against the newest state. (A change that
            // resolves it is caught in `act`: the drift is no longer open.)
            for pending in self.grace.iter_mut() {
                if pending.event.key == job.event.key {
                    pending.event = job.event.clone();
                }
            }
            return Ok(records);
        }
        if job.judgement.verdict.is_drift()
            && let Some(control) = self.rails.observe_drift(now)
        {
            tracing::warn!(?control, "circuit breaker tripped: enforcement paused");
            self.metrics.breaker_tripped();
            records.push(RecordBody::Control(control));
        }
        let key = &job.event.key;
        let last_good = self.ledger.object_state(key)?.and_then(|s| s.last_good);
        let governing = self
            .policies
            .governing(key, self.desired.history(key), last_good.as_ref());
        let Some((policy, _)) = governing else {
            return Ok(records);
        };
        if policy.mode == Mode::Audit {
            return Ok(records);
        }
        if !policy.grace.is_zero() {
            let due = now + chrono::Duration::from_std(policy.grace)?;
            self.grace
                .remove_where(|pending| pending.event.key == job.event.key);
            self.grace.push(due, job);
            return Ok(records);
        }
        records.extend(self.act(job, now).await?);
        Ok(records)
    }

    /// Plans and (in enforce mode) performs the revert of one drift.
    async fn act(&mut self, job: Job, now: DateTime<Utc>) -> anyhow::Result<Vec<RecordBody>> {
        let key = &job.event.key;
        // A drift adopted or superseded since it was judged needs nothing.
        let state = self.ledger.object_state(key)?;
        let current = state.as_ref().is_some_and(|s| {
            s.open_drift == Some(job.seq)
                || (job.judgement.verdict == Verdict::Unmanaged && s.latest_seq == job.seq)
        });
        if !current {
            return Ok(Vec::new());
        }
        let last_good = state.as_ref().and_then(|s| s.last_good.as_ref());
        let Some((policy, _)) = self
            .policies
            .governing(key, self.desired.history(key), last_good)
        else {
            return Ok(Vec::new());
        };
        let (mode, policy_name) = (policy.mode, policy.name.clone());
        let prune = policy.prune
            && job.judgement.verdict == Verdict::Unmanaged
            && !self
                .policies
                .trust_under(Some(policy))
                .trusts(&job.judgement.actor)
            && enforce::may_prune(key)
            && crate::inspect::creation(&self.ledger, key, &job.event.uid)?
                .is_some_and(|(_, created_while_watched)| created_while_watched);
        let history = self.desired.history(key);
        let last_good = state.as_ref().and_then(|s| s.last_good.as_ref());
        let input = PlanInput {
            event: &job.event,
            verdict: &job.judgement.verdict,
            desired: history,
            last_good,
            prune,
        };
        let Some(action) = enforce::plan(&input) else {
            return Ok(Vec::new());
        };
        let record = |outcome| {
            RecordBody::Enforcement(Enforcement {
                key: key.clone(),
                drift_seq: job.seq,
                mode,
                policy: policy_name.clone(),
                action: action.clone(),
                outcome,
            })
        };
        // A change too large for the bus arrives as its metadata: git's
        // manifest can still be applied (or the object created or deleted),
        // but a patch back to the last known-good state needs the object.
        if let (Some(truncated), RevertAction::Patch { .. }) = (&job.event.truncated, &action) {
            return Ok(vec![record(Outcome::Held {
                reason: format!(
                    "the change arrived truncated ({} bytes, more than the bus carries): \
                     its undeclared fields cannot be patched back",
                    truncated.size
                ),
            })]);
        }
        let stale = self.desired.stale_for(key);
        if !stale.is_empty() || job.judgement.git_stale {
            return Ok(vec![record(Outcome::Held {
                reason: format!(
                    "git source {} is stale: enforcement is paused for its objects, and the \
                     change is judged again when a fetch succeeds",
                    stale.join(", ")
                ),
            })]);
        }
        if let Some(exemption) = enforce::exempted(&self.exemptions, key, now) {
            return Ok(vec![record(Outcome::Held {
                reason: format!(
                    "break-glass exemption until {}: {}",
                    exemption.until, exemption.reason
                ),
            })]);
        }
        // Who the other writer is decides how a revert war ends: an
        // identity from the audit events, which may still be on its way.
        let mut actor = job.judgement.actor.clone();
        if self.rails.at_flap_limit(key, now) && !matches!(actor, model::Actor::Audit { .. }) {
            match attributed(&self.ledger, key, job.seq)? {
                Some(learnt) => actor = learnt,
                None => {
                    if let Some(wait) = self.join_wait {
                        let due = job.event.observed_at + chrono::Duration::from_std(wait)?;
                        if now < due {
                            self.grace
                                .remove_where(|pending| pending.event.key == job.event.key);
                            self.grace.push(due, job);
                            return Ok(Vec::new());
                        }
                    }
                }
            }
        }
        let name = match &actor {
            model::Actor::Audit { user, .. } => user.clone(),
            other => other.to_string(),
        };
        let writer = if self.policies.is_automated(&actor) {
            enforce::Writer::automated(name)
        } else {
            enforce::Writer::person(name)
        };
        let mut records = Vec::new();
        match self.rails.admit(key, &writer, now) {
            Ok(None) => {}
            Ok(Some(war)) => {
                tracing::error!(%key, writer = %war.user, reverts = war.reverts, "critical revert war");
                self.metrics.flap_stop(false);
                records.push(RecordBody::Control(model::Control::RevertWar {
                    key: key.clone(),
                    writer: war.user.clone(),
                    reverts: war.reverts,
                    window: war.window.clone(),
                }));
            }
            Err(held) => {
                if let Some(at) = held.retry_at() {
                    // A person is reverted forever, with a capped backoff.
                    tracing::info!(%key, %held, "revert delayed");
                    self.grace
                        .remove_where(|pending| pending.event.key == job.event.key);
                    self.grace.push(at, job);
                    return Ok(records);
                }
                if matches!(held, enforce::Held::RevertWar { .. }) {
                    self.metrics.flap_stop(true);
                }
                let reason = held.to_string();
                tracing::warn!(%key, %reason, "revert held");
                records.push(record(Outcome::Held { reason }));
                return Ok(records);
            }
        }
        if mode == Mode::DryRun {
            records.push(record(Outcome::WouldRevert));
            return Ok(records);
        }
        let Some(executor) = &self.executor else {
            records.push(record(Outcome::Held {
                reason: "no cluster access in this role".into(),
            }));
            return Ok(records);
        };
        let manifest = match &action {
            RevertAction::Apply { commit } | RevertAction::Create { commit } => {
                history.and_then(|h| enforce::desired_manifest(h, commit))
            }
            _ => None,
        };
        // The intent is in the ledger before the cluster is written.
        self.ledger.append(vec![record(Outcome::Intended)], &[])?;
        self.ledger.flush_async().await?;
        self.own_writes.begin(&job.event.uid);
        let outcome = executor.execute(&job.event, &action, manifest).await;
        match &outcome {
            Outcome::Reverted { resource_version } => {
                self.own_writes
                    .done(&job.event.uid, resource_version.clone());
                self.rails.record_revert(key, now);
                self.metrics.reverted(job.event.observed_at, Utc::now());
            }
            _ => self.own_writes.forget(&job.event.uid),
        }
        tracing::info!(%key, %action, ?outcome, "revert");
        records.push(record(outcome));
        Ok(records)
    }
}

impl Enforcer {
    /// Where the scope syncs, puts an object changed by a new commit into
    /// the cluster: applies its manifest, or (with `prune`) deletes it when
    /// the commit removed it. Recorded with drift record 0: it answers a
    /// commit, not a drift.
    async fn sync(&mut self, key: &ObjectKey) -> anyhow::Result<Option<RecordBody>> {
        let Some(history) = self.desired.history(key) else {
            return Ok(None);
        };
        let Some(head) = history.head() else {
            return Ok(None);
        };
        let state = self.ledger.object_state(key)?;
        let last_good = state.as_ref().and_then(|s| s.last_good.as_ref());
        let Some((policy, _)) = self.policies.governing(key, Some(history), last_good) else {
            return Ok(None);
        };
        if !policy.sync || policy.mode == Mode::Audit || !self.desired.stale_for(key).is_empty() {
            return Ok(None);
        }
        let (mode, name) = (policy.mode, policy.name.clone());
        let commit = head.commit.id.clone();
        let (action, event) = match (&head.manifest, &state) {
            (Some(manifest), _) => (RevertAction::Apply { commit }, sync_event(key, manifest)),
            // Git once declared it and no longer does: the inventory.
            (None, Some(state))
                if policy.prune && state.latest.is_some() && enforce::may_prune(key) =>
            {
                let latest = state.latest.clone().unwrap_or_default();
                let mut event = sync_event(key, &latest);
                event.uid.clone_from(&state.uid);
                (
                    RevertAction::Delete {
                        uid: state.uid.clone(),
                    },
                    event,
                )
            }
            _ => return Ok(None),
        };
        let outcome = match (&self.executor, mode) {
            (_, Mode::DryRun) => Outcome::WouldRevert,
            (Some(executor), _) => {
                executor
                    .execute(&event, &action, head.manifest.as_ref())
                    .await
            }
            (None, _) => Outcome::Held {
                reason: "no cluster access in this role".into(),
            },
        };
        tracing::info!(%key, %action, ?outcome, "sync");
        Ok(Some(RecordBody::Enforcement(Enforcement {
            key: key.clone(),
            drift_seq: 0,
            mode,
            policy: name,
            action,
            outcome,
        })))
    }
}

/// The identity behind the drift of record `seq`: its audit actor learnt
/// after it was judged, else the audit identity of the latest drift of the
/// same object (the other side of a revert war is the same writer), if any.
fn attributed(ledger: &Ledger, key: &ObjectKey, seq: u64) -> anyhow::Result<Option<model::Actor>> {
    let history = ledger.history(key)?;
    let drifts: std::collections::HashSet<u64> = history
        .iter()
        .filter(|r| matches!(&r.body, RecordBody::Change { judgement, .. } if judgement.verdict.is_drift()))
        .map(|r| r.seq)
        .collect();
    let audited = |record: &model::LedgerRecord| match &record.body {
        RecordBody::Attribution(a) if drifts.contains(&a.amends) => {
            Some((a.amends, a.actor.clone()))
        }
        RecordBody::Amendment(a) if matches!(a.judgement.actor, model::Actor::Audit { .. }) => {
            Some((a.amends, a.judgement.actor.clone()))
        }
        RecordBody::Change { judgement, .. }
            if drifts.contains(&record.seq)
                && matches!(judgement.actor, model::Actor::Audit { .. }) =>
        {
            Some((record.seq, judgement.actor.clone()))
        }
        _ => None,
    };
    let mut latest = None;
    for (amends, actor) in history.iter().rev().filter_map(audited) {
        if amends == seq {
            return Ok(Some(actor));
        }
        latest.get_or_insert(actor);
    }
    Ok(latest)
}

/// The change event a sync acts on: the object as git (or the ledger)
/// describes it.
fn sync_event(key: &ObjectKey, object: &serde_json::Value) -> ChangeEvent {
    let api_version = object
        .get("apiVersion")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    ChangeEvent::new(
        key.clone(),
        api_version,
        "",
        "",
        model::ChangeKind::Modified,
        Utc::now(),
        object.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Control;

    /// An enforcer over a fresh ledger whose breaker trips beyond two drifts
    /// a minute, and the ledger.
    fn opened(dir: &std::path::Path) -> (Enforcer, Arc<Ledger>) {
        let path = dir.join("driftwarden.yaml");
        let text = format!(
            "version: 1\ncluster: {{name: prod}}\ndata_dir: {}\n\
             sources: [{{name: apps, url: 'file:///srv/apps'}}]\n\
             enforcement: {{breaker_limit: 2, breaker_window: 1m, breaker_pause: 10m}}\n",
            dir.join("data").display()
        );
        let config = Config::parse(&path, &text).expect("config");
        let ledger = Arc::new(Ledger::open(dir.join("ledger")).expect("ledger"));
        let enforcer = Enforcer::new(
            &config,
            ledger.clone(),
            None,
            Desired::default(),
            OwnWrites::default(),
        )
        .expect("enforcer");
        (enforcer, ledger)
    }

    /// A drift of ConfigMap `name`.
    fn drift(name: &str) -> RecordBody {
        let key = ObjectKey::new("prod", "", "ConfigMap", "team-a", name);
        crate::fixtures::change(key, crate::fixtures::drift(), Utc::now())
    }

    fn pauses(ledger: &Ledger) -> Vec<Control> {
        ledger
            .since(Utc::now() - chrono::Duration::hours(1))
            .filter_map(|record| match record.expect("record").body {
                RecordBody::Control(control @ Control::Paused { .. }) => Some(control),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_trip_the_stop_kept_from_being_recorded_is_recorded_on_restore() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut enforcer, ledger) = opened(dir.path());
        // Three drifts judged, and the process gone before its pause.
        ledger
            .append(vec![drift("a"), drift("b"), drift("c")], &[])
            .expect("append");
        enforcer.restore(Utc::now()).expect("restore");
        assert!(enforcer.rails.is_paused(Utc::now()));
        let recorded = pauses(&ledger);
        assert!(
            matches!(recorded.as_slice(), [Control::Paused { reason, until: Some(_) }]
                if reason.contains("3 drifts")),
            "{recorded:?}"
        );
        // A second restart finds the pause recorded and adds none.
        let (mut again, ledger) = {
            drop(enforcer);
            drop(ledger);
            opened(dir.path())
        };
        again.restore(Utc::now()).expect("restore");
        assert!(again.rails.is_paused(Utc::now()));
        assert_eq!(pauses(&ledger).len(), 1);
    }

    #[test]
    fn drifts_before_a_resume_do_not_trip_the_breaker_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut enforcer, ledger) = opened(dir.path());
        ledger
            .append(vec![drift("a"), drift("b"), drift("c")], &[])
            .expect("append");
        let resumed = Control::Resumed {
            reason: "resumed by hand".into(),
        };
        ledger
            .append(vec![RecordBody::Control(resumed), drift("d")], &[])
            .expect("append");
        enforcer.restore(Utc::now()).expect("restore");
        assert!(!enforcer.rails.is_paused(Utc::now()));
        assert!(pauses(&ledger).is_empty());
    }
}
