//! Reading the ledger for people: `history`, `diff` and `verify`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use correlate::ListSemantics;
use ledger::Ledger;
use model::{
    Actor, FieldChange, Judgement, LedgerRecord, ObjectKey, Outcome, PathVerdict, RecordBody,
    Verdict,
};
use serde_json::Value;

use crate::desired::Desired;

/// One line per record about `key`, oldest first, with the fields each
/// change touched.
pub fn history(records: &[LedgerRecord]) -> String {
    let mut out = String::new();
    for record in records {
        let at = record.at.format("%Y-%m-%d %H:%M:%S%.3f");
        match &record.body {
            RecordBody::Change { event, judgement } => {
                let _ = writeln!(
                    out,
                    "#{:<6} {}  {:<9} rv {:<8} {}  by {}{}",
                    record.seq,
                    event.observed_at.format("%Y-%m-%d %H:%M:%S%.3f"),
                    format!("{:?}", event.kind).to_lowercase(),
                    event.resource_version,
                    judgement.verdict,
                    judgement.actor,
                    if judgement.git_stale {
                        "  (git stale: judged again when git is back)"
                    } else {
                        ""
                    },
                );
                write_diff(&mut out, judgement);
            }
            RecordBody::Amendment(amendment) => {
                let _ = writeln!(
                    out,
                    "#{:<6} {at}  amends #{}: {}",
                    record.seq, amendment.amends, amendment.judgement.verdict
                );
            }
            RecordBody::Attribution(a) => {
                let _ = writeln!(
                    out,
                    "#{:<6} {at}  actor of #{}: {} (source {})",
                    record.seq,
                    a.amends,
                    a.actor,
                    a.actor.source()
                );
            }
            RecordBody::Refused(audit) => {
                let _ = writeln!(
                    out,
                    "#{:<6} {at}  {} refused ({}) for {}",
                    record.seq, audit.verb, audit.response_code, audit.user.username
                );
            }
            RecordBody::Enforcement(e) => {
                let _ = writeln!(
                    out,
                    "#{:<6} {at}  {} of #{} ({}, policy {}): {}",
                    record.seq,
                    e.action,
                    e.drift_seq,
                    e.mode,
                    e.policy,
                    outcome(&e.outcome)
                );
            }
            _ => {}
        }
    }
    if out.is_empty() {
        out.push_str("no records for this object\n");
    }
    out
}

fn outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::WouldRevert => "would revert (dry run)".to_owned(),
        Outcome::Reverted { resource_version } => {
            format!(
                "reverted (rv {})",
                resource_version.as_deref().unwrap_or("?")
            )
        }
        Outcome::Superseded { detail } => format!("superseded by a newer write: {detail}"),
        Outcome::Held { reason } => format!("held: {reason}"),
        Outcome::Failed { error } => format!("FAILED: {error}"),
        Outcome::Intended => "writing (the result follows)".to_owned(),
    }
}

fn write_diff(out: &mut String, judgement: &Judgement) {
    for FieldChange {
        path,
        from,
        to,
        judged,
    } in &judgement.diff
    {
        let show = |v: &Option<Value>| v.as_ref().map_or("(absent)".to_owned(), Value::to_string);
        let judged = judged.map_or(String::new(), |j| {
            format!(
                "  [{}]",
                serde_json::to_value(j)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or("?")
            )
        });
        let _ = writeln!(
            out,
            "         {path}: {} -> {}{judged}",
            show(from),
            show(to)
        );
    }
}

/// What kind of departure an open drift is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftClass {
    /// A declared field differs from git HEAD (`from` is git's value).
    Declared,
    /// An undeclared field set by an untrusted actor and not put back
    /// (`from` is the last known-good value).
    OutOfBand,
    /// A declared object is missing from the cluster.
    Missing,
}

/// One open drift of one object, as `diff` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpenDrift {
    /// Which object.
    pub key: ObjectKey,
    /// What kind of departure.
    pub class: DriftClass,
    /// The field and its values (root for a missing object).
    pub change: FieldChange,
    /// The ledger record that opened it, if the ledger saw it open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opened_by_record: Option<u64>,
    /// Who opened it, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
}

/// Every open drift: declared fields of declared objects whose last
/// observed state differs from git HEAD, declared objects that are missing,
/// and out-of-band fields still open on any object; each with the record
/// that opened it and its actor.
pub fn drift(
    ledger: &Ledger,
    desired: &Desired,
    digest_key: &model::redact::DigestKey,
) -> anyhow::Result<Vec<OpenDrift>> {
    let lists = ListSemantics::builtin();
    let mut out = Vec::new();
    let mut declared_keys = HashSet::new();
    for key in desired.declared_keys() {
        declared_keys.insert(key.clone());
        let Some(mut manifest) = desired.history(key).and_then(|h| h.current()).cloned() else {
            continue;
        };
        // Git's Secret values are compared as digests, never shown.
        digest_key.redact_secret(&mut manifest);
        let state = ledger.object_state(key)?;
        let Some(live) = state.as_ref().and_then(|s| s.latest.as_ref()) else {
            let (opened_by_record, actor) = match &state {
                Some(state) => (
                    Some(state.latest_seq),
                    deleter(ledger, key, state.latest_seq)?,
                ),
                None => (None, None),
            };
            out.push(OpenDrift {
                key: key.clone(),
                class: DriftClass::Missing,
                change: FieldChange::new(
                    model::FieldPath::root(),
                    Some(Value::String("declared".into())),
                    None,
                ),
                opened_by_record,
                actor,
            });
            continue;
        };
        let declared = correlate::project(&manifest, live, &lists);
        let out_of_band = open_out_of_band(ledger, state.as_ref())?;
        if declared.is_empty() && out_of_band.is_empty() {
            continue;
        }
        let openers = openers(&ledger.history(key)?);
        for (class, change) in declared
            .into_iter()
            .map(|c| (DriftClass::Declared, c))
            .chain(out_of_band.into_iter().map(|c| (DriftClass::OutOfBand, c)))
        {
            let opener = openers.get(&change.path.to_string());
            out.push(OpenDrift {
                key: key.clone(),
                class,
                opened_by_record: opener.map(|(seq, _)| *seq),
                actor: opener.map(|(_, actor)| actor.clone()),
                change: FieldChange::new(change.path, change.from, change.to),
            });
        }
    }
    // Out-of-band fields on objects git does not declare (any more).
    for entry in ledger.open_drifts() {
        let (key, state) = entry?;
        if declared_keys.contains(&key) {
            continue;
        }
        let out_of_band = open_out_of_band(ledger, Some(&state))?;
        if out_of_band.is_empty() {
            continue;
        }
        let openers = openers(&ledger.history(&key)?);
        for change in out_of_band {
            let opener = openers.get(&change.path.to_string());
            out.push(OpenDrift {
                key: key.clone(),
                class: DriftClass::OutOfBand,
                opened_by_record: opener.map(|(seq, _)| *seq),
                actor: opener.map(|(_, actor)| actor.clone()),
                change: FieldChange::new(change.path, change.from, change.to),
            });
        }
    }
    Ok(out)
}

/// The out-of-band paths the object's open drift record holds open.
fn open_out_of_band(
    ledger: &Ledger,
    state: Option<&ledger::ObjectState>,
) -> anyhow::Result<Vec<FieldChange>> {
    let Some(seq) = state.and_then(|s| s.open_drift) else {
        return Ok(Vec::new());
    };
    Ok(match ledger.get(seq)?.map(|r| r.body) {
        Some(RecordBody::Change { judgement, .. })
        | Some(RecordBody::Amendment(model::Amendment { judgement, .. })) => judgement
            .diff
            .into_iter()
            .filter(|c| c.judged == Some(PathVerdict::OutOfBand))
            .collect(),
        _ => Vec::new(),
    })
}

/// The actor who deleted a missing object: the deletion record's actor.
fn deleter(ledger: &Ledger, key: &ObjectKey, seq: u64) -> anyhow::Result<Option<Actor>> {
    let history = ledger.history(key)?;
    let mut actor = None;
    for record in &history {
        match &record.body {
            RecordBody::Change { judgement, .. } if record.seq == seq => {
                actor = Some(judgement.actor.clone());
            }
            RecordBody::Attribution(a) if a.amends == seq => actor = Some(a.actor.clone()),
            _ => {}
        }
    }
    Ok(actor)
}

/// For each path open in the object's latest judgement, the record that
/// opened it (the first of the unbroken run of records holding it open)
/// and that record's actor (as later attributed, if it was).
fn openers(history: &[LedgerRecord]) -> HashMap<String, (u64, Actor)> {
    let mut open: HashMap<String, (u64, Actor)> = HashMap::new();
    for record in history {
        let judgement = match &record.body {
            RecordBody::Change { judgement, .. } => judgement,
            RecordBody::Amendment(amendment) => &amendment.judgement,
            RecordBody::Attribution(a) => {
                for (seq, actor) in open.values_mut() {
                    if *seq == a.amends {
                        *actor = a.actor.clone();
                    }
                }
                continue;
            }
            _ => continue,
        };
        let now_open: HashSet<String> = judgement
            .diff
            .iter()
            .filter(|c| c.judged.is_some_and(PathVerdict::is_open))
            .map(|c| c.path.to_string())
            .collect();
        open.retain(|path, _| now_open.contains(path));
        for path in now_open {
            open.entry(path)
                .or_insert_with(|| (record.seq, judgement.actor.clone()));
        }
    }
    open
}

/// Human output of [`drift`].
pub fn drift_text(drift: &[OpenDrift], head_seq: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "open drift against git HEAD and the last known-good state, as last observed (ledger record #{head_seq}):"
    );
    if drift.is_empty() {
        out.push_str("  none: every declared object matches git, and nothing was added by hand\n");
    }
    let mut last_key = None;
    for item in drift {
        if last_key != Some(&item.key) {
            let _ = writeln!(out, "{}", item.key);
            last_key = Some(&item.key);
        }
        let show = |v: &Option<Value>| v.as_ref().map_or("(absent)".to_owned(), Value::to_string);
        let opened = match (&item.opened_by_record, &item.actor) {
            (Some(seq), Some(actor)) => format!("  (record #{seq}, by {actor})"),
            (Some(seq), None) => format!("  (record #{seq})"),
            _ => String::new(),
        };
        let change = &item.change;
        let _ = match item.class {
            DriftClass::Missing => writeln!(out, "  missing from the cluster{opened}"),
            DriftClass::Declared => writeln!(
                out,
                "  {}: git {} / live {}{opened}",
                change.path,
                show(&change.from),
                show(&change.to)
            ),
            DriftClass::OutOfBand => writeln!(
                out,
                "  {}: out of band, known good {} / live {}{opened}",
                change.path,
                show(&change.from),
                show(&change.to)
            ),
        };
    }
    out
}

/// An object `prune` could delete now, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PruneCandidate {
    /// Which object.
    pub key: ObjectKey,
    /// The policy rule that prunes it.
    pub policy: String,
    /// Why it is ours to delete.
    pub reason: String,
}

/// What `prune` could touch: objects git once declared and no longer does,
/// where a rule syncs and prunes (the inventory), and, from the ledger when
/// given, live unmanaged objects an untrusted actor created while
/// Driftwarden watched, where an enforcing rule prunes. Never the cluster's
/// own objects.
pub fn prune_candidates(
    config: &crate::config::Config,
    desired: &Desired,
    ledger: Option<&Ledger>,
) -> anyhow::Result<Vec<PruneCandidate>> {
    let policies = config.rules();
    let pruning = |key: &ObjectKey,
                   history: Option<&model::DesiredHistory>,
                   last_good: Option<&Value>,
                   needs: fn(&enforce::Policy) -> bool| {
        let governing = policies.governing(key, history, last_good).map(|(p, _)| p);
        governing
            .filter(|p| p.prune && needs(p) && enforce::may_prune(key))
            .map(|p| p.name.clone())
    };
    let mut out = Vec::new();
    for (key, history) in desired.histories() {
        let Some(removed) = history.head().filter(|head| head.manifest.is_none()) else {
            continue;
        };
        let alive = match ledger {
            Some(ledger) => ledger
                .object_state(key)?
                .is_some_and(|state| state.latest.is_some()),
            None => true,
        };
        let syncing = |p: &enforce::Policy| p.sync && p.mode == model::Mode::Enforce;
        if let (true, Some(policy)) = (alive, pruning(key, Some(history), None, syncing)) {
            out.push(PruneCandidate {
                key: key.clone(),
                policy,
                reason: format!("git removed it in {}", removed.commit.short()),
            });
        }
    }
    let Some(ledger) = ledger else {
        return Ok(out);
    };
    for entry in ledger.objects() {
        let (key, state) = entry?;
        if state.verdict != Verdict::Unmanaged.name() || state.latest.is_none() {
            continue;
        }
        let enforcing = |p: &enforce::Policy| p.mode == model::Mode::Enforce;
        let Some(policy) = pruning(&key, None, state.last_good.as_ref(), enforcing) else {
            continue;
        };
        let Some((actor, created)) = creation(ledger, &key, &state.uid)? else {
            continue;
        };
        let (governing, _) = policies
            .governing(&key, None, state.last_good.as_ref())
            .unzip();
        if created && !policies.trust_under(governing).trusts(&actor) {
            out.push(PruneCandidate {
                key,
                policy,
                reason: format!("created by {actor} while watched"),
            });
        }
    }
    Ok(out)
}

/// Who created incarnation `uid` of `key`, and whether Driftwarden watched
/// it being created (its first record is an `added` change, not an object a
/// listing found).
pub fn creation(
    ledger: &Ledger,
    key: &ObjectKey,
    uid: &str,
) -> anyhow::Result<Option<(Actor, bool)>> {
    Ok(ledger
        .history(key)?
        .into_iter()
        .find_map(|record| match record.body {
            RecordBody::Change { event, judgement } if event.uid == uid => {
                Some((judgement.actor, event.kind == model::ChangeKind::Added))
            }
            _ => None,
        }))
}

/// The candidates as `check` prints them.
pub fn prune_text(candidates: &[PruneCandidate], from_ledger: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "prune could delete {} object(s){}:",
        candidates.len(),
        if from_ledger {
            ""
        } else {
            " (from git only: the ledger is in use or absent)"
        }
    );
    for candidate in candidates {
        let _ = writeln!(
            out,
            "  {} (policy {}): {}",
            candidate.key, candidate.policy, candidate.reason
        );
    }
    out
}

/// The `verify` report for people: what was checked, what differs, and
/// what a repair did (when `repair` was asked for).
pub fn verify(
    report: &ledger::VerifyReport,
    repaired: Option<&ledger::Repaired>,
    repair: bool,
) -> String {
    let mut text = String::new();
    if let Some(repaired) = repaired {
        let _ = writeln!(
            text,
            "repaired: rebuilt {} from the chain ({} entries differed, {} written), recorded as \
             ledger record #{}",
            repaired.trees.join(", "),
            repaired.differences,
            repaired.entries_written,
            repaired.record.unwrap_or_default()
        );
    }
    if report.is_ok() {
        let _ = writeln!(
            text,
            "ledger ok: {} records, hash chain intact, indexes match the chain",
            report.records
        );
    } else {
        let _ = writeln!(
            text,
            "ledger BROKEN: {} problem(s) in {} records",
            report.problem_count, report.records
        );
        for problem in &report.problems {
            let _ = writeln!(text, "  {problem}");
        }
        if report.problem_count > report.problems.len() as u64 {
            let _ = writeln!(
                text,
                "  ... and {} more",
                report.problem_count - report.problems.len() as u64
            );
        }
        if !report.index_differences.is_empty() {
            let trees: Vec<String> = report
                .index_differences
                .iter()
                .map(|(tree, n)| format!("{tree} {n}"))
                .collect();
            let _ = writeln!(
                text,
                "indexes that differ from the chain: {}",
                trees.join(", ")
            );
            if report.chain_ok() && !repair {
                let _ = writeln!(
                    text,
                    "the chain itself is intact: `driftwarden verify --repair` rebuilds them from it"
                );
            }
        }
        if repair && !report.chain_ok() {
            let _ = writeln!(
                text,
                "not repaired: indexes are rebuilt only from a chain that verifies; restore the \
                 ledger from a backup"
            );
        }
    }
    let _ = match &report.checkpoint {
        Some(checkpoint) => writeln!(
            text,
            "compared with the checkpoint of record {} signed at {}",
            checkpoint.seq,
            checkpoint.at.to_rfc3339()
        ),
        None => writeln!(
            text,
            "no checkpoint to compare with: records lost from the end would go unnoticed"
        ),
    };
    text
}
