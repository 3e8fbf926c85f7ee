//! Revert planning: from a judged change to the action that puts the object
//! back. Pure: no clock, no cluster.
//!
//! | verdict | action |
//! |---|---|
//! | `drift(modified)`, `drift(rollback)` | server-side apply of the desired HEAD manifest |
//! | `drift(deleted)` | create from the desired HEAD manifest |
//! | `drift(out_of_band, paths)` | inverse JSON patch to the last known-good state, on `paths` only |
//! | `unmanaged` with `prune` | delete that incarnation |
//! | anything else | nothing |

use model::{ChangeEvent, ChangeKind, DesiredHistory, DriftKind, FieldPath, RevertAction, Verdict};
use serde_json::Value;

use crate::inverse::inverse_patch;

/// What a revert is planned from.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The judged change.
    pub event: &'a ChangeEvent,
    /// How it was judged.
    pub verdict: &'a Verdict,
    /// What git declares for the object, if anything.
    pub desired: Option<&'a DesiredHistory>,
    /// The ledger's last known-good state of the object, if any.
    pub last_good: Option<&'a Value>,
    /// Whether unmanaged objects are deleted in the governing scope.
    pub prune: bool,
}

/// The action that reverts the change, or `None` when nothing should (or
/// safely can) be done: no drift, no desired manifest to restore, no
/// known-good state for an out-of-band change, or an out-of-band change to a
/// Secret value (events carry those only as digests).
pub fn plan(input: &PlanInput<'_>) -> Option<RevertAction> {
    match input.verdict {
        Verdict::Drift { drift } => match drift {
            DriftKind::Modified { .. } | DriftKind::Rollback { .. } => {
                head_commit(input.desired).map(|commit| RevertAction::Apply { commit })
            }
            DriftKind::Deleted => {
                head_commit(input.desired).map(|commit| RevertAction::Create { commit })
            }
            DriftKind::OutOfBand { paths } => out_of_band(input, paths),
        },
        Verdict::Unmanaged
            if input.prune
                && input.event.kind != ChangeKind::Deleted
                && !input.event.uid.is_empty() =>
        {
            Some(RevertAction::Delete {
                uid: input.event.uid.clone(),
            })
        }
        _ => None,
    }
}

/// The manifest `commit` declared in `desired`, if that commit is in the
/// history and declared the object.
pub fn desired_manifest<'a>(desired: &'a DesiredHistory, commit: &str) -> Option<&'a Value> {
    desired
        .entries
        .iter()
        .rev()
        .find(|entry| entry.commit.id == commit)
        .and_then(|entry| entry.manifest.as_ref())
}

/// The HEAD commit, if git declares the object there.
fn head_commit(desired: Option<&DesiredHistory>) -> Option<String> {
    let head = desired?.head()?;
    head.manifest.as_ref()?;
    Some(head.commit.id.clone())
}

fn out_of_band(input: &PlanInput<'_>, paths: &[FieldPath]) -> Option<RevertAction> {
    let event = input.event;
    if event.kind == ChangeKind::Deleted || event.resource_version.is_empty() {
        return None;
    }
    let last_good = input.last_good?;
    let ops = match inverse_patch(&event.object, last_good, paths) {
        Ok(ops) => ops,
        Err(err) => {
            tracing::warn!(key = %event.key, error = %err, "no revert planned");
            return None;
        }
    };
    if ops.is_empty() {
        return None;
    }
    let patch = serde_json::to_value(ops).ok()?;
    Some(RevertAction::Patch {
        patch,
        resource_version: event.resource_version.clone(),
    })
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use model::{Commit, DesiredEntry, ObjectKey};
    use serde_json::json;

    use super::*;

    fn event(kind: ChangeKind, object: Value) -> ChangeEvent {
        ChangeEvent::new(
            ObjectKey::new("c", "", "ConfigMap", "team-a", "cfg"),
            "v1",
            "uid-1",
            "42",
            kind,
            DateTime::from_timestamp(1_800_000_000, 0).expect("valid time"),
            object,
        )
    }

    fn entry(id: &str, manifest: Option<Value>) -> DesiredEntry {
        DesiredEntry {
            commit: Commit {
                id: id.into(),
                time: DateTime::from_timestamp(1_700_000_000, 0).expect("valid time"),
                author: "A <a@example.com>".into(),
                summary: "change".into(),
                refs: Vec::new(),
            },
            manifest,
        }
    }

    fn history() -> DesiredHistory {
        DesiredHistory {
            entries: vec![
                entry("old", Some(json!({"data": {"a": "0"}}))),
                entry("head", Some(json!({"data": {"a": "1"}}))),
            ],
        }
    }

    fn drift(drift: DriftKind) -> Verdict {
        Verdict::Drift { drift }
    }

    fn paths(texts: &[&str]) -> Vec<FieldPath> {
        texts
            .iter()
            .map(|t| t.parse().expect("test paths are well formed"))
            .collect()
    }

    struct Case {
        event: ChangeEvent,
        verdict: Verdict,
        desired: Option<DesiredHistory>,
        last_good: Option<Value>,
        prune: bool,
    }

    impl Case {
        fn new(verdict: Verdict) -> Self {
            Self {
                event: event(ChangeKind::Modified, json!({"data": {"a": "2"}})),
                verdict,
                desired: Some(history()),
                last_good: None,
                prune: false,
            }
        }

        fn plan(&self) -> Option<RevertAction> {
            plan(&PlanInput {
                event: &self.event,
                verdict: &self.verdict,
                desired: self.desired.as_ref(),
                last_good: self.last_good.as_ref(),
                prune: self.prune,
            })
        }
    }

    #[test]
    fn modified_and_rolled_back_objects_are_applied_from_head() {
        let modified = drift(DriftKind::Modified {
            paths: paths(&["data.a"]),
        });
        let rollback = drift(DriftKind::Rollback {
            commit: "old".into(),
            paths: paths(&["data.a"]),
        });
        for verdict in [modified, rollback] {
            assert_eq!(
                Case::new(verdict).plan(),
                Some(RevertAction::Apply {
                    commit: "head".into()
                })
            );
        }
    }

    #[test]
    fn a_deleted_object_is_created_from_head() {
        let mut case = Case::new(drift(DriftKind::Deleted));
        case.event.kind = ChangeKind::Deleted;
        assert_eq!(
            case.plan(),
            Some(RevertAction::Create {
                commit: "head".into()
            })
        );
    }

    #[test]
    fn nothing_is_applied_when_git_no_longer_declares_the_object() {
        let mut case = Case::new(drift(DriftKind::Modified { paths: vec![] }));
        case.desired = None;
        assert_eq!(case.plan(), None);
        let mut removed = history();
        removed.entries.push(entry("gone", None));
        case.desired = Some(removed);
        assert_eq!(case.plan(), None);
        case.verdict = drift(DriftKind::Deleted);
        assert_eq!(case.plan(), None);
    }

    #[test]
    fn out_of_band_changes_are_patched_back_guarded_by_the_resource_version() {
        let mut case = Case::new(drift(DriftKind::OutOfBand {
            paths: paths(&["metadata.labels.owner"]),
        }));
        case.event.object = json!({"metadata": {"labels": {"app": "web", "owner": "m"}}});
        case.last_good = Some(json!({"metadata": {"labels": {"app": "web"}}}));
        assert_eq!(
            case.plan(),
            Some(RevertAction::Patch {
                patch: json!([{"op": "remove", "path": "/metadata/labels/owner"}]),
                resource_version: "42".into(),
            })
        );
    }

    #[test]
    fn out_of_band_changes_without_a_known_good_state_are_not_reverted() {
        let case = Case::new(drift(DriftKind::OutOfBand {
            paths: paths(&["metadata.labels.owner"]),
        }));
        assert_eq!(case.last_good, None);
        assert_eq!(case.plan(), None);
    }

    #[test]
    fn out_of_band_changes_already_undone_need_no_patch() {
        let mut case = Case::new(drift(DriftKind::OutOfBand {
            paths: paths(&["metadata.labels.owner"]),
        }));
        case.event.object = json!({"metadata": {"labels": {"app": "web"}}});
        case.last_good = Some(case.event.object.clone());
        assert_eq!(case.plan(), None);
    }

    #[test]
    fn unmanaged_objects_are_deleted_only_with_prune() {
        let mut case = Case::new(Verdict::Unmanaged);
        assert_eq!(case.plan(), None);
        case.prune = true;
        assert_eq!(
            case.plan(),
            Some(RevertAction::Delete {
                uid: "uid-1".into()
            })
        );
        case.event.kind = ChangeKind::Deleted;
        assert_eq!(case.plan(), None, "a deleted object is not deleted again");
    }

    #[test]
    fn other_verdicts_need_nothing() {
        for verdict in [
            Verdict::Authorized {
                commit: "head".into(),
            },
            Verdict::InSync,
            Verdict::Derived,
            Verdict::Allowed { rule: "r".into() },
            Verdict::Adopted {
                commit: "head".into(),
                drift_seq: 1,
            },
        ] {
            let mut case = Case::new(verdict);
            case.prune = true;
            case.last_good = Some(json!({}));
            assert_eq!(case.plan(), None, "{}", case.verdict);
        }
    }

    #[test]
    fn desired_manifest_finds_the_commit() {
        let history = history();
        assert_eq!(
            desired_manifest(&history, "old"),
            Some(&json!({"data": {"a": "0"}}))
        );
        assert_eq!(
            desired_manifest(&history, "head"),
            Some(&json!({"data": {"a": "1"}}))
        );
        assert_eq!(desired_manifest(&history, "nope"), None);
    }
}
