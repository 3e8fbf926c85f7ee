//! What the correlator knows of one object between changes: the ledger's
//! state, moved on change by change with the ledger's own rules, so the
//! changes of one batch are judged as if each were written before the next.
//!
//! ```text
//! ledger state ──▶ Known ──input(event)──▶ classify ──▶ judgement ──after──▶ Known
//! ```

use model::{ChangeEvent, ChangeKind, FieldPath, Judgement, PathVerdict, Trust};
use serde_json::Value;

use crate::{Input, ListSemantics};

/// What is known of one object key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Known {
    /// The incarnation last seen.
    pub uid: Option<String>,
    /// The object as last seen; `None` when deleted or never seen.
    pub latest: Option<Value>,
    /// The last known-good state of the key (of any incarnation).
    pub last_good: Option<Value>,
    /// Whether a drift is open.
    pub drifting: bool,
    /// Out-of-band paths open on the object.
    pub open_out_of_band: Vec<FieldPath>,
}

impl Known {
    /// The classification input for `event` with what is known: the
    /// previous state and open out-of-band paths of the same incarnation
    /// only, the key's last known-good state whatever the incarnation (a
    /// re-create is compared with it).
    pub fn input<'a>(
        &'a self,
        event: &'a ChangeEvent,
        trust: &'a Trust,
        lists: &'a ListSemantics,
    ) -> Input<'a> {
        let mut input = Input::new(event, trust, lists);
        if self.uid.as_deref() == Some(event.uid.as_str()) {
            if let Some(previous) = &self.latest {
                input = input.previous(previous);
            }
            input = input.open_out_of_band(&self.open_out_of_band);
        }
        if let Some(good) = &self.last_good {
            input = input.last_good(good);
        }
        input
    }

    /// The state after `event` was judged `judgement`, by the ledger's
    /// rules: a good verdict makes the object known good unless a drift
    /// stays open; the first observation does unless it departs from git.
    pub fn after(&mut self, event: &ChangeEvent, judgement: &Judgement) {
        let verdict = &judgement.verdict;
        let first = self.uid.is_none();
        let still_drifting = self.drifting && !verdict.resolves_drift();
        let present = event.kind != ChangeKind::Deleted;
        if (verdict.is_good() && !still_drifting) || (first && !verdict.departs()) {
            self.last_good = present.then(|| event.object.clone());
        }
        if verdict.departs() {
            self.drifting = true;
        } else if verdict.resolves_drift() {
            self.drifting = false;
        }
        self.open_out_of_band = judgement
            .paths_judged(PathVerdict::OutOfBand)
            .cloned()
            .collect();
        self.uid = Some(event.uid.clone());
        self.latest = present.then(|| event.object.clone());
    }

    /// The state after a later judgement of the latest change (an
    /// amendment), by the ledger's rules: drift reopens; a good verdict
    /// that resolves the drift makes the latest state known good.
    pub fn amended(&mut self, judgement: &Judgement) {
        let verdict = &judgement.verdict;
        if verdict.is_drift() {
            self.drifting = true;
            self.open_out_of_band = judgement
                .paths_judged(PathVerdict::OutOfBand)
                .cloned()
                .collect();
        } else if self.drifting && verdict.resolves_drift() {
            self.drifting = false;
            self.open_out_of_band.clear();
            if verdict.is_good() && self.latest.is_some() {
                self.last_good.clone_from(&self.latest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{added, deployment, git, modified};
    use model::{Actor, DriftKind, FieldChange, Verdict};

    fn judgement(verdict: Verdict, out_of_band: &[&str]) -> Judgement {
        Judgement {
            git_stale: false,
            verdict,
            actor: Actor::Unknown {
                reason: "test".into(),
            },
            desired_commit: None,
            diff: out_of_band
                .iter()
                .map(|p| {
                    FieldChange::new(p.parse().expect("path"), None, None)
                        .judged(PathVerdict::OutOfBand)
                })
                .collect(),
        }
    }

    fn drift() -> Verdict {
        Verdict::Drift {
            drift: DriftKind::OutOfBand {
                paths: vec!["metadata.labels.x".parse().expect("path")],
            },
        }
    }

    fn authorized() -> Verdict {
        Verdict::Authorized {
            commit: "c1".into(),
        }
    }

    #[test]
    fn a_drift_keeps_the_last_good_state_until_git_agrees_again() {
        let web = deployment("web");
        let good = web.clone().served();
        let labelled = web.clone().label("x", "1").served();
        let mut known = Known::default();
        known.after(modified(&good).event(), &judgement(authorized(), &[]));
        assert_eq!(known.last_good.as_ref(), Some(good.json()));
        known.after(
            modified(&labelled).event(),
            &judgement(drift(), &["metadata.labels.x"]),
        );
        assert!(known.drifting);
        assert_eq!(
            known.last_good.as_ref(),
            Some(good.json()),
            "drift is not good"
        );
        assert_eq!(known.open_out_of_band.len(), 1);
        known.after(
            modified(&labelled).event(),
            &judgement(Verdict::InSync, &[]),
        );
        assert_eq!(
            known.last_good.as_ref(),
            Some(good.json()),
            "a trusted change does not make a drifted object good"
        );
        known.after(modified(&good).event(), &judgement(authorized(), &[]));
        assert!(!known.drifting);
        assert!(known.open_out_of_band.is_empty());
    }

    #[test]
    fn a_new_incarnation_is_judged_against_the_last_good_state_only() {
        let web = deployment("web");
        let good = web.clone().served();
        let mut known = Known::default();
        known.after(modified(&good).event(), &judgement(authorized(), &[]));
        let other = added(&web.clone().sidecar("miner", "evil:1").served()).incarnation("u-2");
        let trust = Trust::default();
        let lists = ListSemantics::builtin();
        let input = known.input(other.event(), &trust, &lists);
        assert!(input.previous.is_none());
        assert!(input.open_out_of_band.is_empty());
        assert!(input.last_good.is_some());
        let git = git().commit("c1", &web);
        let judgement = crate::classify(&input.desired(git.history()));
        assert!(judgement.verdict.is_drift(), "{:?}", judgement.verdict);
    }
}
