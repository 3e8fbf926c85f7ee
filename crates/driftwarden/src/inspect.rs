//! Reading the ledger for people: `history`, `diff` and `verify`.

use std::fmt::Write as _;

use correlate::ListSemantics;
use ledger::Ledger;
use model::{FieldChange, Judgement, LedgerRecord, ObjectKey, Outcome, RecordBody};
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
                    "#{:<6} {}  {:<9} rv {:<8} {}  by {}",
                    record.seq,
                    event.observed_at.format("%Y-%m-%d %H:%M:%S%.3f"),
                    format!("{:?}", event.kind).to_lowercase(),
                    event.resource_version,
                    judgement.verdict,
                    judgement.actor,
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
    }
}

fn write_diff(out: &mut String, judgement: &Judgement) {
    for FieldChange { path, from, to } in &judgement.diff {
        let show = |v: &Option<Value>| v.as_ref().map_or("(absent)".to_owned(), Value::to_string);
        let _ = writeln!(out, "         {path}: {} -> {}", show(from), show(to));
    }
}

/// Current drift: every declared object whose last observed state differs
/// from git HEAD, and every declared object that is missing.
pub fn drift(
    ledger: &Ledger,
    desired: &Desired,
) -> anyhow::Result<Vec<(ObjectKey, Vec<FieldChange>)>> {
    let lists = ListSemantics::builtin();
    let mut out = Vec::new();
    for key in desired.declared_keys() {
        let Some(mut manifest) = desired.history(key).and_then(|h| h.current()).cloned() else {
            continue;
        };
        // Git's Secret values are compared as digests, never shown.
        model::redact::redact_secret(&mut manifest);
        let live = ledger.object_state(key)?.and_then(|s| s.latest);
        let diff = match &live {
            Some(live) => correlate::project(&manifest, live, &lists),
            None => vec![FieldChange {
                path: model::FieldPath::root(),
                from: Some(Value::String("declared".into())),
                to: None,
            }],
        };
        if !diff.is_empty() {
            out.push((key.clone(), diff));
        }
    }
    Ok(out)
}

/// Human output of [`drift`].
pub fn drift_text(drift: &[(ObjectKey, Vec<FieldChange>)], head_seq: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "drift against git HEAD, as last observed (ledger record #{head_seq}):"
    );
    if drift.is_empty() {
        out.push_str("  none: every declared object matches git\n");
    }
    for (key, diff) in drift {
        let _ = writeln!(out, "{key}");
        for change in diff {
            if change.path.0.is_empty() {
                let _ = writeln!(out, "  missing from the cluster");
                continue;
            }
            let show =
                |v: &Option<Value>| v.as_ref().map_or("(absent)".to_owned(), Value::to_string);
            let _ = writeln!(
                out,
                "  {}: git {} / live {}",
                change.path,
                show(&change.from),
                show(&change.to)
            );
        }
    }
    out
}
