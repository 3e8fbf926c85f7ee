//! `driftwarden replay`: what another policy would have done with the
//! recorded history, so a team can move from audit to enforce with evidence.
//!
//! Every recorded change is judged again under the other policy, against git
//! as it was when the change happened, and planned as the enforcer would.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use correlate::Known;
use model::{Actor, DesiredHistory, Mode, ObjectKey, RecordBody, Verdict};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Policy, Trust};
use crate::correlator::Correlator;
use crate::desired::Desired;

/// The policy part of a config file: what `replay --policy` reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Trusted actors.
    #[serde(default)]
    pub trust: Trust,
    /// Policy rules.
    #[serde(default)]
    pub policies: Vec<Policy>,
}

impl PolicyFile {
    /// Reads a policy file; unknown keys are errors naming their path.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read policy file {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses policy text from `origin` (named in errors, with the path of
    /// an unknown or bad key).
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Self> {
        let deserializer = serde_norway::Deserializer::from_str(text);
        serde_path_to_error::deserialize(deserializer)
            .map_err(|err| anyhow::anyhow!("policy file {origin}: {}: {}", err.path(), err.inner()))
    }
}

/// One change the other policy would have reverted.
#[derive(Debug, Clone, Serialize)]
pub struct WouldRevert {
    /// Ledger record of the change.
    pub seq: u64,
    /// When it was observed.
    pub at: DateTime<Utc>,
    /// Which object.
    pub key: ObjectKey,
    /// The verdict then.
    pub recorded: String,
    /// The verdict under the other policy.
    pub replayed: String,
    /// Who made the change.
    pub actor: String,
    /// The other policy's mode and rule.
    pub mode: Mode,
    /// The rule governing the object.
    pub policy: String,
    /// How it would have been put back.
    pub action: String,
}

/// What `replay` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Changes judged again.
    pub changes: u64,
    /// Verdict counts as recorded.
    pub recorded: BTreeMap<String, u64>,
    /// Verdict counts under the other policy.
    pub replayed: BTreeMap<String, u64>,
    /// Changes whose verdict differs.
    pub changed_verdicts: u64,
    /// What enforcement under the other policy would have done.
    pub would_revert: Vec<WouldRevert>,
}

/// Judges every change since `since` again under `policy`.
pub fn replay(
    config: &Config,
    policy: PolicyFile,
    ledger: Arc<ledger::Ledger>,
    desired: Desired,
    since: DateTime<Utc>,
) -> anyhow::Result<Report> {
    let mut other = config.clone();
    other.trust = policy.trust;
    other.policies = policy.policies;
    other.validate(Path::new("policy file"))?;
    let correlator = Correlator::new(&other, ledger.clone(), desired.clone())?;
    let mut report = Report::default();
    // What is known of each object, moved on by the replayed judgements.
    let mut known: HashMap<ObjectKey, Known> = HashMap::new();
    // The audit actors learnt after their change was recorded.
    let mut attributed: HashMap<u64, Actor> = HashMap::new();
    let records: Vec<_> = ledger
        .since(DateTime::<Utc>::UNIX_EPOCH)
        .collect::<Result<_, _>>()?;
    for record in &records {
        if let RecordBody::Attribution(a) = &record.body {
            attributed.insert(a.amends, a.actor.clone());
        }
    }
    // From the start, so every change has the state before it.
    for record in records {
        let RecordBody::Change { event, judgement } = record.body else {
            continue;
        };
        let then = desired
            .history(&event.key)
            .map(|h| as_of(h, event.observed_at));
        // The identity recorded for the change, never a claim.
        let actor = Some(&judgement.actor)
            .filter(|a| matches!(a, Actor::Audit { .. }))
            .or_else(|| attributed.get(&record.seq))
            .cloned();
        let state = known.entry(event.key.clone()).or_default();
        let before = state.clone();
        let replayed = correlator
            .classify_against(&event, &before, then.as_ref(), actor.as_ref())
            .judgement;
        state.after(&event, &replayed);
        if record.at < since {
            continue;
        }
        report.changes += 1;
        *report
            .recorded
            .entry(judgement.verdict.name().to_owned())
            .or_default() += 1;
        *report
            .replayed
            .entry(replayed.verdict.name().to_owned())
            .or_default() += 1;
        if replayed.verdict.name() != judgement.verdict.name() {
            report.changed_verdicts += 1;
        }
        if !matches!(replayed.verdict, Verdict::Drift { .. } | Verdict::Unmanaged) {
            continue;
        }
        let Some((rule, _)) =
            correlator
                .policies()
                .governing(&event.key, then.as_ref(), before.last_good.as_ref())
        else {
            continue;
        };
        if rule.mode == Mode::Audit {
            continue;
        }
        let input = enforce::PlanInput {
            event: &event,
            verdict: &replayed.verdict,
            desired: then.as_ref(),
            last_good: before.last_good.as_ref(),
            prune: rule.prune,
        };
        let Some(action) = enforce::plan(&input) else {
            continue;
        };
        report.would_revert.push(WouldRevert {
            seq: record.seq,
            at: event.observed_at,
            key: event.key.clone(),
            recorded: judgement.verdict.to_string(),
            replayed: replayed.verdict.to_string(),
            actor: replayed.actor.to_string(),
            mode: rule.mode,
            policy: rule.name.clone(),
            action: action.to_string(),
        });
    }
    Ok(report)
}

/// Git's history as it stood at `at`: commits made later are left out.
fn as_of(history: &DesiredHistory, at: DateTime<Utc>) -> DesiredHistory {
    DesiredHistory {
        entries: history
            .entries
            .iter()
            .filter(|entry| entry.commit.time <= at)
            .cloned()
            .collect(),
    }
}

/// Human output of a [`Report`].
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} changes judged again; {} would get another verdict",
        report.changes, report.changed_verdicts
    );
    let _ = writeln!(out, "verdicts as recorded: {}", counts(&report.recorded));
    let _ = writeln!(
        out,
        "verdicts under the policy: {}",
        counts(&report.replayed)
    );
    let _ = writeln!(
        out,
        "the policy would have reverted {} change(s):",
        report.would_revert.len()
    );
    for r in &report.would_revert {
        let _ = writeln!(
            out,
            "  #{} {} {} {} by {} -> {} ({} under {})",
            r.seq,
            r.at.format("%Y-%m-%d %H:%M:%S"),
            r.key,
            r.replayed,
            r.actor,
            r.action,
            r.mode,
            r.policy
        );
    }
    out
}

fn counts(counts: &BTreeMap<String, u64>) -> String {
    counts
        .iter()
        .map(|(verdict, n)| format!("{verdict} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
