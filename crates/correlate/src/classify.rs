//! The verdict table: one change event, judged against git's desired history,
//! path by path.
//!
//! | situation | verdict |
//! |---|---|
//! | the object is owned by a controller | `derived` |
//! | git does not declare the key, and git removed it and it was deleted | `authorized(head)` |
//! | git does not declare the key otherwise | `unmanaged` |
//! | git declares it and it was deleted | `drift(deleted)` |
//! | declared fields differ from HEAD but equal an older commit | `drift(rollback, older)` |
//! | declared fields differ from HEAD | `drift(modified, paths)` |
//! | declared fields equal HEAD; undeclared paths are open (set by an untrusted actor, not known good) | `drift(out_of_band, paths)` |
//! | declared fields equal HEAD; created, a path was brought to git or back to known good, or no earlier state is known (not on a resync) | `authorized(head)` |
//! | declared fields equal HEAD; only undeclared fields changed, by a trusted actor, or nothing changed | `in_sync` |
//!
//! Every path the change set is judged on its own ([`PathVerdict`]), and the
//! verdict is the worst of them, so one part of a write never launders
//! another: a write that restores `spec.replicas` and adds a label records
//! the replicas `authorized` and the label `out_of_band`. Out-of-band paths
//! stay open from change to change ([`Input::open_out_of_band`]) until they
//! are back to the last known-good state; a new incarnation (a re-create)
//! is compared with the key's last known-good state, so what it adds is
//! judged too.
//!
//! Content decides authorization; trust only decides whether changes to
//! undeclared fields matter. Ignored paths (policy) are left out of both axes.

use std::time::Duration;

use model::{
    Actor, ChangeEvent, ChangeKind, DesiredEntry, DesiredHistory, DriftKind, FieldChange,
    FieldPath, Judgement, PathVerdict, Verdict,
};
use serde_json::Value;

use crate::actor::actor_from_managed_fields;
use crate::changes::{Changes, changed_fields, changed_undeclared};
use crate::lists::ListSemantics;
use crate::normalize::same_opt;
use crate::paths::{declares, is_within, overlaps};
use crate::project::{project, projects_equal};
use model::Trust;

/// Reason given for the actor of a change found on a resync.
pub const UNOBSERVED: &str = "changed while unobserved";

/// Reason given for the actor of a deletion without an audit record.
pub const DELETED_UNATTRIBUTED: &str = "deleted; managedFields do not record who deletes";

/// Everything [`classify`] judges one change by.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The change.
    pub event: &'a ChangeEvent,
    /// The last known live state of this incarnation (from the ledger);
    /// `None` when first seen.
    pub previous: Option<&'a Value>,
    /// The key's last known-good state (of any incarnation), if any.
    pub last_good: Option<&'a Value>,
    /// Out-of-band paths open on the object before this change.
    pub open_out_of_band: &'a [FieldPath],
    /// Git's desired history for the key; `None` when git never declared it.
    pub desired: Option<&'a DesiredHistory>,
    /// The actor from a joined audit record; `None` falls back to managedFields.
    pub actor: Option<&'a Actor>,
    /// Trusted identities (policy).
    pub trust: &'a Trust,
    /// How lists of this kind are compared.
    pub lists: &'a ListSemantics,
    /// Paths policy tells us to ignore, on both axes.
    pub ignored_paths: &'a [FieldPath],
}

impl<'a> Input<'a> {
    /// An input for `event` with nothing known beyond the policy.
    pub fn new(event: &'a ChangeEvent, trust: &'a Trust, lists: &'a ListSemantics) -> Self {
        Self {
            event,
            previous: None,
            last_good: None,
            open_out_of_band: &[],
            desired: None,
            actor: None,
            trust,
            lists,
            ignored_paths: &[],
        }
    }

    /// With the last known live state.
    pub fn previous(mut self, previous: &'a Value) -> Self {
        self.previous = Some(previous);
        self
    }

    /// With the key's last known-good state.
    pub fn last_good(mut self, last_good: &'a Value) -> Self {
        self.last_good = Some(last_good);
        self
    }

    /// With the out-of-band paths open before the change.
    pub fn open_out_of_band(mut self, paths: &'a [FieldPath]) -> Self {
        self.open_out_of_band = paths;
        self
    }

    /// With git's desired history for the key.
    pub fn desired(mut self, desired: &'a DesiredHistory) -> Self {
        self.desired = Some(desired);
        self
    }

    /// With the actor of a joined audit record.
    pub fn actor(mut self, actor: &'a Actor) -> Self {
        self.actor = Some(actor);
        self
    }

    /// With paths to ignore.
    pub fn ignoring(mut self, ignored_paths: &'a [FieldPath]) -> Self {
        self.ignored_paths = ignored_paths;
        self
    }

    fn is_ignored(&self, path: &FieldPath) -> bool {
        self.ignored_paths
            .iter()
            .any(|ignored| is_within(path, ignored))
    }

    /// Whether the live object has every field `manifest` declares, ignored
    /// paths aside.
    fn matches_declared(&self, manifest: &Value) -> bool {
        let live = &self.event.object;
        if self.ignored_paths.is_empty() {
            projects_equal(manifest, live, self.lists)
        } else {
            self.without_ignored(project(manifest, live, self.lists))
                .is_empty()
        }
    }

    fn without_ignored(&self, mut changes: Vec<FieldChange>) -> Vec<FieldChange> {
        if !self.ignored_paths.is_empty() {
            changes.retain(|change| !self.is_ignored(&change.path));
        }
        changes
    }
}

/// A judgement and whether the actor's identity decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The judgement.
    pub judgement: Judgement,
    /// Whether a different actor could have changed the verdict: the change
    /// set undeclared fields and no declared field drifts. Only such a
    /// verdict is worth waiting for an audit record.
    pub identity_matters: bool,
}

/// Judges one change (design §4.5).
pub fn classify(input: &Input<'_>) -> Judgement {
    judge_change(input).judgement
}

/// Judges one change and tells whether identity mattered.
pub fn judge_change(input: &Input<'_>) -> Outcome {
    let event = input.event;
    let head = input.desired.and_then(DesiredHistory::head);
    let manifest = head.and_then(|entry| entry.manifest.as_ref());
    let changes = input
        .previous
        .map(|previous| changed_fields(previous, &event.object, manifest, input.lists));
    let changed: Vec<FieldPath> = changes
        .iter()
        .flat_map(|c| c.declared.iter().chain(&c.undeclared))
        .map(|change| change.path.clone())
        .collect();
    let actor = actor_of(input, &changed);
    let (verdict, diff, identity_matters) = judge(input, head, changes, &actor);
    Outcome {
        judgement: Judgement {
            git_stale: false,
            verdict,
            actor,
            desired_commit: head.map(|entry| entry.commit.id.clone()),
            diff,
        },
        identity_matters,
    }
}

fn judge(
    input: &Input<'_>,
    head: Option<&DesiredEntry>,
    changes: Option<Changes>,
    actor: &Actor,
) -> (Verdict, Vec<FieldChange>, bool) {
    let event = input.event;
    if event.derived {
        return (Verdict::Derived, all(changes), false);
    }
    let declared = head.and_then(|entry| entry.manifest.as_ref().map(|m| (entry, m)));
    let Some((head, manifest)) = declared else {
        let verdict = match head {
            Some(head) if event.kind == ChangeKind::Deleted => Verdict::Authorized {
                commit: head.commit.id.clone(),
            },
            _ => Verdict::Unmanaged,
        };
        return (verdict, all(changes), false);
    };
    if event.kind == ChangeKind::Deleted {
        return (drift(DriftKind::Deleted), Vec::new(), false);
    }
    let paths = PathJudge::new(input, manifest, changes, actor);
    let identity_matters = paths.declared_drift.is_empty() && paths.set_undeclared;
    let verdict = if !paths.declared_drift.is_empty() {
        departure(input, manifest, &paths.declared_drift)
    } else if paths.any(PathVerdict::OutOfBand) {
        drift(DriftKind::OutOfBand {
            paths: paths.of(PathVerdict::OutOfBand),
        })
    } else if paths.any(PathVerdict::Authorized)
        || event.kind == ChangeKind::Added
        || (paths.first_seen && event.kind != ChangeKind::Resync)
    {
        Verdict::Authorized {
            commit: head.commit.id.clone(),
        }
    } else {
        Verdict::InSync
    };
    (verdict, paths.into_diff(), identity_matters)
}

/// The per-path judgement of one change to a declared object.
struct PathJudge {
    /// Declared fields that differ from HEAD, desired to live.
    declared_drift: Vec<FieldChange>,
    /// Every other judged path.
    judged: Vec<FieldChange>,
    /// No earlier state of this incarnation is known.
    first_seen: bool,
    /// The change set undeclared fields that are not known good.
    set_undeclared: bool,
}

impl PathJudge {
    fn new(input: &Input<'_>, manifest: &Value, changes: Option<Changes>, actor: &Actor) -> Self {
        let live = &input.event.object;
        let declared_drift: Vec<FieldChange> = input
            .without_ignored(project(manifest, live, input.lists))
            .into_iter()
            .map(|change| change.judged(PathVerdict::Drift))
            .collect();
        let first_seen = changes.is_none();
        let (declared_set, mut undeclared_set) = match changes {
            Some(changes) => (changes.declared, changes.undeclared),
            None => (Vec::new(), Vec::new()),
        };
        // A new incarnation is compared with the key's last known-good
        // state: what it adds (not what the server has yet to fill in) was set.
        if first_seen && let Some(good) = input.last_good {
            undeclared_set = changed_undeclared(good, live, Some(manifest), input.lists)
                .into_iter()
                .filter(|change| change.to.is_some())
                .collect();
        }
        // Undeclared fields that differ from the known-good state.
        let off_good: Option<Vec<FieldChange>> = input
            .last_good
            .map(|good| changed_undeclared(good, live, Some(manifest), input.lists));
        let differs_from_good = |path: &FieldPath| {
            off_good
                .as_ref()
                .is_none_or(|off| off.iter().any(|change| overlaps(&change.path, path)))
        };
        let trusted = input.trust.trusts(actor);
        let mut judged = Vec::new();
        for change in input.without_ignored(declared_set) {
            if !declared_drift.iter().any(|d| d.path == change.path) {
                judged.push(change.judged(PathVerdict::Authorized));
            }
        }
        let mut set_undeclared = false;
        // A field an older commit declared and HEAD no longer does, removed:
        // the removal is git's (an apply of the commit that dropped it).
        let git_removed = |change: &FieldChange| {
            change.to.is_none()
                && input.desired.is_some_and(|history| {
                    history.older().any(|entry| {
                        entry
                            .manifest
                            .as_ref()
                            .is_some_and(|older| declares(older, &change.path))
                    })
                })
        };
        for change in input.without_ignored(undeclared_set) {
            let verdict = if !differs_from_good(&change.path) || git_removed(&change) {
                PathVerdict::Authorized
            } else if trusted {
                PathVerdict::Trusted
            } else {
                PathVerdict::OutOfBand
            };
            set_undeclared |= verdict != PathVerdict::Authorized;
            judged.push(change.judged(verdict));
        }
        // Drift opened by earlier changes stays open until put back.
        for path in input.open_out_of_band {
            if judged.iter().any(|j| overlaps(&j.path, path)) {
                continue;
            }
            let still = off_good
                .as_ref()
                .and_then(|off| off.iter().find(|change| overlaps(&change.path, path)));
            let change = match (still, &off_good) {
                (Some(still), _) => still.clone().judged(PathVerdict::OutOfBand),
                (None, None) => {
                    FieldChange::new(path.clone(), None, None).judged(PathVerdict::OutOfBand)
                }
                (None, Some(_)) => {
                    FieldChange::new(path.clone(), None, None).judged(PathVerdict::Authorized)
                }
            };
            judged.push(change);
        }
        Self {
            declared_drift,
            judged,
            first_seen,
            set_undeclared,
        }
    }

    fn any(&self, verdict: PathVerdict) -> bool {
        self.judged.iter().any(|c| c.judged == Some(verdict))
    }

    fn of(&self, verdict: PathVerdict) -> Vec<FieldPath> {
        self.judged
            .iter()
            .filter(|c| c.judged == Some(verdict))
            .map(|c| c.path.clone())
            .collect()
    }

    /// Drift first, then out-of-band, authorized and trusted paths.
    fn into_diff(self) -> Vec<FieldChange> {
        let rank = |change: &FieldChange| match change.judged {
            Some(PathVerdict::Drift) => 0,
            Some(PathVerdict::OutOfBand) => 1,
            Some(PathVerdict::Authorized) => 2,
            _ => 3,
        };
        let mut diff = self.declared_drift;
        let mut judged = self.judged;
        judged.sort_by_key(rank);
        diff.extend(judged);
        diff
    }
}

/// The actor: the joined audit record's identity (with the field manager
/// the write claimed), else the managedFields claim, else unknown.
fn actor_of(input: &Input<'_>, changed: &[FieldPath]) -> Actor {
    let event = input.event;
    let claimed = || match actor_from_managed_fields(&event.managed_fields, changed) {
        Actor::ManagedFields { manager, .. } => Some(manager),
        _ => None,
    };
    if let Some(actor) = input.actor {
        let mut actor = actor.clone();
        if let Actor::Audit { manager, .. } = &mut actor
            && manager.is_none()
            && event.kind != ChangeKind::Deleted
        {
            *manager = claimed();
        }
        return actor;
    }
    match event.kind {
        ChangeKind::Deleted => Actor::Unknown {
            reason: DELETED_UNATTRIBUTED.to_owned(),
        },
        ChangeKind::Resync if !changed.is_empty() => Actor::Unknown {
            reason: UNOBSERVED.to_owned(),
        },
        _ => actor_from_managed_fields(&event.managed_fields, changed),
    }
}

fn drift(drift: DriftKind) -> Verdict {
    Verdict::Drift { drift }
}

fn all(changes: Option<Changes>) -> Vec<FieldChange> {
    changes.map(Changes::into_all).unwrap_or_default()
}

/// Declared fields differ from HEAD: a rollback when they equal an older
/// commit's state, else a modification.
fn departure(input: &Input<'_>, head: &Value, diff: &[FieldChange]) -> Verdict {
    let paths = || diff.iter().map(|change| change.path.clone()).collect();
    let older = input.desired.into_iter().flat_map(DesiredHistory::older);
    for entry in older {
        if let Some(manifest) = &entry.manifest
            && is_rollback_to(input, head, manifest, diff)
        {
            return drift(DriftKind::Rollback {
                commit: entry.commit.id.clone(),
                paths: paths(),
            });
        }
    }
    drift(DriftKind::Modified { paths: paths() })
}

/// Whether live is in `older`'s declared state, and on every path where it
/// departs from HEAD it has `older`'s value there.
fn is_rollback_to(input: &Input<'_>, head: &Value, older: &Value, diff: &[FieldChange]) -> bool {
    if !input.matches_declared(older) {
        return false;
    }
    let head_to_older = project(head, older, input.lists);
    diff.iter().all(|drifted| {
        head_to_older
            .iter()
            .find(|change| change.path == drifted.path)
            .is_some_and(|change| same_opt(change.to.as_ref(), drifted.to.as_ref()))
    })
}

/// Amends an earlier drift when `new_head`'s manifest declares exactly the
/// drifted live state: `adopted(commit)`.
pub fn adoption(
    live: &Value,
    new_head: &DesiredEntry,
    drift_seq: u64,
    lists: &ListSemantics,
) -> Option<Verdict> {
    let manifest = new_head.manifest.as_ref()?;
    projects_equal(manifest, live, lists).then(|| Verdict::Adopted {
        commit: new_head.commit.id.clone(),
        drift_seq,
    })
}

/// The classification rate a benchmark reports, in events per second: for
/// each timed sample `(events, elapsed)`, events judged divided by the time
/// they took; the median of those rates. The median keeps samples slowed by
/// other work on the machine from skewing the figure. No samples give 0.
pub fn events_per_second(samples: &[(u64, Duration)]) -> f64 {
    let mut rates: Vec<f64> = samples
        .iter()
        .filter(|(_, elapsed)| !elapsed.is_zero())
        .map(|(events, elapsed)| *events as f64 / elapsed.as_secs_f64())
        .collect();
    if rates.is_empty() {
        return 0.0;
    }
    rates.sort_by(f64::total_cmp);
    let middle = rates.len() / 2;
    if rates.len() % 2 == 1 {
        rates[middle]
    } else {
        (rates[middle - 1] + rates[middle]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{
        Scenario, added, config_map, deleted, deployment, entry, git, modified, resynced,
    };
    use serde_json::json;

    const IMAGE: &str = "spec.template.spec.containers[name=web].image";

    fn paths(paths: &[FieldPath]) -> Vec<String> {
        paths.iter().map(ToString::to_string).collect()
    }

    fn drift_paths(verdict: &Verdict) -> Vec<String> {
        match verdict {
            Verdict::Drift {
                drift:
                    DriftKind::Modified { paths: p }
                    | DriftKind::OutOfBand { paths: p }
                    | DriftKind::Rollback { paths: p, .. },
            } => paths(p),
            other => panic!("expected a drift with paths, got {other}"),
        }
    }

    fn manager_of(actor: &Actor) -> &str {
        match actor {
            Actor::ManagedFields { manager, .. } => manager,
            other => panic!("expected a field manager, got {other:?}"),
        }
    }

    fn authorized(commit: &str) -> Verdict {
        Verdict::Authorized {
            commit: commit.to_owned(),
        }
    }

    #[test]
    fn objects_owned_by_a_controller_are_derived_not_unmanaged() {
        let rs = deployment("web-7d4b9c").served();
        let judgement = Scenario::new().judge(&added(&rs).derived());
        assert_eq!(judgement.verdict, Verdict::Derived);
    }

    #[test]
    fn an_object_git_never_declared_is_unmanaged() {
        let stray = config_map("stray").served();
        let judgement = Scenario::new().judge(&added(&stray).by("kubectl-create", &["data.mode"]));
        assert_eq!(judgement.verdict, Verdict::Unmanaged);
        assert_eq!(judgement.desired_commit, None);
        assert_eq!(manager_of(&judgement.actor), "kubectl-create");
    }

    #[test]
    fn deleting_an_object_git_removed_is_authorized_by_the_removing_commit() {
        let web = deployment("web");
        let scenario = Scenario::new().git(git().commit("c1", &web).removal("c2"));
        let judgement = scenario.judge(&deleted(&web.clone().served()));
        assert_eq!(judgement.verdict, authorized("c2"));
        assert_eq!(judgement.desired_commit.as_deref(), Some("c2"));
    }

    #[test]
    fn changing_an_object_git_removed_is_unmanaged() {
        let web = deployment("web");
        let scenario = Scenario::new()
            .git(git().commit("c1", &web).removal("c2"))
            .previously(&web.clone().served());
        let judgement = scenario.judge(&modified(&web.replicas(4).served()));
        assert_eq!(judgement.verdict, Verdict::Unmanaged);
        assert_eq!(paths(&[judgement.diff[0].path.clone()]), ["spec.replicas"]);
    }

    #[test]
    fn deleting_a_declared_object_is_drift_with_an_unknown_deleter() {
        let web = deployment("web");
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .judge(&deleted(&web.served()));
        assert_eq!(judgement.verdict, drift(DriftKind::Deleted));
        assert_eq!(
            judgement.actor,
            Actor::Unknown {
                reason: DELETED_UNATTRIBUTED.to_owned()
            }
        );
    }

    #[test]
    fn a_deletion_with_an_audit_record_names_the_deleter() {
        let web = deployment("web");
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .audited_as("intruder")
            .judge(&deleted(&web.served()));
        assert_eq!(judgement.verdict, drift(DriftKind::Deleted));
        assert!(matches!(&judgement.actor, Actor::Audit { user, .. } if user == "intruder"));
    }

    #[test]
    fn manual_scale_is_drift_on_replicas() {
        let web = deployment("web");
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .previously(&web.clone().served())
            .judge(&modified(&web.replicas(5).served()).by("kubectl-scale", &["spec.replicas"]));
        assert_eq!(drift_paths(&judgement.verdict), ["spec.replicas"]);
        assert!(matches!(
            judgement.verdict,
            Verdict::Drift {
                drift: DriftKind::Modified { .. }
            }
        ));
        assert_eq!(judgement.diff[0].from, Some(json!(2)));
        assert_eq!(judgement.diff[0].to, Some(json!(5)));
        assert_eq!(manager_of(&judgement.actor), "kubectl-scale");
        assert_eq!(judgement.desired_commit.as_deref(), Some("c1"));
    }

    #[test]
    fn set_image_is_drift_on_the_container_image() {
        let web = deployment("web");
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .previously(&web.clone().served())
            .judge(&modified(&web.image("web", "nginx:1.27").served()).by("kubectl-set", &[IMAGE]));
        assert_eq!(drift_paths(&judgement.verdict), [IMAGE]);
        assert_eq!(judgement.diff[0].to, Some(json!("nginx:1.27")));
        assert_eq!(manager_of(&judgement.actor), "kubectl-set");
    }

    #[test]
    fn editing_config_map_data_is_drift() {
        let settings = config_map("settings");
        let judgement = Scenario::new()
            .git(git().commit("c1", &settings))
            .previously(&settings.clone().served())
            .judge(
                &modified(&settings.data("mode", "debug").served())
                    .by("kubectl-edit", &["data.mode"]),
            );
        assert_eq!(drift_paths(&judgement.verdict), ["data.mode"]);
        assert_eq!(judgement.diff[0].from, Some(json!("production")));
        assert_eq!(judgement.diff[0].to, Some(json!("debug")));
    }

    #[test]
    fn rollout_undo_is_a_rollback_to_the_older_commit() {
        let old = deployment("web").image("web", "nginx:1.24");
        let new = deployment("web").image("web", "nginx:1.25");
        let judgement = Scenario::new()
            .git(git().commit("c1", &old).commit("c2", &new))
            .previously(&new.served())
            .judge(&modified(&old.served()).by("kubectl-rollout", &[IMAGE]));
        assert_eq!(
            judgement.verdict,
            drift(DriftKind::Rollback {
                commit: "c1".to_owned(),
                paths: vec![IMAGE.parse().expect("path")],
            })
        );
        assert_eq!(judgement.diff[0].from, Some(json!("nginx:1.25")));
    }

    #[test]
    fn a_rollback_is_found_past_ignored_paths() {
        let old = deployment("web").image("web", "nginx:1.24");
        let new = deployment("web").image("web", "nginx:1.25");
        let judgement = Scenario::new()
            .git(git().commit("c1", &old).commit("c2", &new))
            .previously(&new.served())
            .ignoring("spec.replicas")
            .judge(&modified(&old.replicas(5).served()));
        assert!(
            matches!(&judgement.verdict, Verdict::Drift { drift: DriftKind::Rollback { commit, .. } } if commit == "c1"),
            "{}",
            judgement.verdict
        );
        assert_eq!(drift_paths(&judgement.verdict), [IMAGE]);
    }

    #[test]
    fn a_value_no_commit_declared_is_a_modification_not_a_rollback() {
        let unpinned = deployment("web").without_replicas();
        let pinned = deployment("web").replicas(2);
        let judgement = Scenario::new()
            .git(git().commit("c1", &unpinned).commit("c2", &pinned))
            .previously(&pinned.clone().served())
            .judge(&modified(&pinned.replicas(7).served()));
        assert!(
            matches!(
                judgement.verdict,
                Verdict::Drift {
                    drift: DriftKind::Modified { .. }
                }
            ),
            "{}",
            judgement.verdict
        );
    }

    #[test]
    fn a_container_removed_back_to_an_older_commit_is_a_rollback() {
        let old = deployment("web");
        let new = deployment("web").sidecar("metrics", "exporter:1");
        let judgement = Scenario::new()
            .git(git().commit("c1", &old).commit("c2", &new))
            .previously(&new.served())
            .judge(&modified(&old.served()));
        assert!(
            matches!(&judgement.verdict, Verdict::Drift { drift: DriftKind::Rollback { commit, .. } } if commit == "c1"),
            "{}",
            judgement.verdict
        );
        assert_eq!(
            drift_paths(&judgement.verdict),
            ["spec.template.spec.containers[name=metrics]"]
        );
    }

    #[test]
    fn git_sync_is_authorized_by_the_new_commit() {
        let old = deployment("web").image("web", "nginx:1.24");
        let new = deployment("web").image("web", "nginx:1.25");
        let judgement = Scenario::new()
            .git(git().commit("c1", &old).commit("c2", &new))
            .previously(&old.served())
            .judge(&modified(&new.served()).by("argocd-controller", &[IMAGE]));
        assert_eq!(judgement.verdict, authorized("c2"));
        assert_eq!(paths(&[judgement.diff[0].path.clone()]), [IMAGE]);
    }

    #[test]
    fn creating_a_declared_object_as_git_says_is_authorized() {
        let web = deployment("web");
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .judge(&added(&web.served()));
        assert_eq!(judgement.verdict, authorized("c1"));
    }

    #[test]
    fn a_trusted_autoscaler_changing_undeclared_replicas_is_in_sync() {
        let web = deployment("web").without_replicas();
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .previously(&web.clone().served())
            .trusting(
                Trust::default()
                    .manager("kube-controller-manager")
                    .accepting_unverified_managers(),
            )
            .judge(
                &modified(&web.replicas(4).served())
                    .by("kube-controller-manager", &["spec.replicas"]),
            );
        assert_eq!(judgement.verdict, Verdict::InSync);
        assert_eq!(judgement.diff[0].to, Some(json!(4)));
    }

    #[test]
    fn a_trusted_webhook_annotating_is_in_sync() {
        let web = deployment("web");
        let annotation = r#"metadata.annotations["sidecar.istio.io/status"]"#;
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .previously(&web.clone().served())
            .trusting(
                Trust::default()
                    .manager("istio-*")
                    .accepting_unverified_managers(),
            )
            .judge(
                &modified(
                    &web.annotation("sidecar.istio.io/status", "injected")
                        .served(),
                )
                .by("istio-sidecar-injector", &[annotation]),
            );
        assert_eq!(judgement.verdict, Verdict::InSync);
        assert_eq!(judgement.diff[0].path.to_string(), annotation);
    }

    #[test]
    fn an_untrusted_label_is_out_of_band() {
        let web = deployment("web");
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .previously(&web.clone().served())
            .trusting(Trust::default().manager("kube-controller-manager"))
            .judge(
                &modified(&web.label("team", "x").served())
                    .by("kubectl-label", &["metadata.labels.team"]),
            );
        assert_eq!(drift_paths(&judgement.verdict), ["metadata.labels.team"]);
        assert!(matches!(
            judgement.verdict,
            Verdict::Drift {
                drift: DriftKind::OutOfBand { .. }
            }
        ));
        assert_eq!(judgement.diff[0].from, None);
        assert_eq!(judgement.diff[0].to, Some(json!("x")));
        assert_eq!(manager_of(&judgement.actor), "kubectl-label");
    }

    #[test]
    fn an_untrusted_env_var_is_out_of_band() {
        let web = deployment("web");
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .previously(&web.clone().served())
            .judge(&modified(&web.env("web", "DEBUG", "1").served()).by("kubectl-set", &[]));
        assert_eq!(
            drift_paths(&judgement.verdict),
            ["spec.template.spec.containers[name=web].env[name=DEBUG]"]
        );
    }

    #[test]
    fn an_injected_sidecar_by_an_untrusted_actor_is_out_of_band() {
        let web = deployment("web");
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .previously(&web.clone().served())
            .judge(&modified(&web.sidecar("miner", "evil:1").served()));
        assert_eq!(
            drift_paths(&judgement.verdict),
            ["spec.template.spec.containers[name=miner]"]
        );
    }

    #[test]
    fn trust_never_authorizes_drift_of_declared_fields() {
        let web = deployment("web");
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .previously(&web.clone().served())
            .trusting(Trust::default().manager("*").user("*"))
            .audited_as("admin")
            .judge(&modified(&web.replicas(9).served()));
        assert_eq!(drift_paths(&judgement.verdict), ["spec.replicas"]);
    }

    #[test]
    fn an_audited_trusted_user_makes_undeclared_changes_in_sync() {
        let web = deployment("web");
        let scenario = Scenario::new()
            .git(git().commit("c1", &web))
            .previously(&web.clone().served())
            .trusting(Trust::default().user("admin"));
        let change = modified(&web.label("team", "x").served()).by("kubectl-label", &[]);
        let judgement = scenario.audited_as("admin").judge(&change);
        assert_eq!(judgement.verdict, Verdict::InSync);
        assert!(matches!(&judgement.actor, Actor::Audit { user, .. } if user == "admin"));
    }

    #[test]
    fn ignored_paths_hide_drift_of_declared_fields() {
        let web = deployment("web");
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .previously(&web.clone().served())
            .ignoring("spec.replicas")
            .judge(&modified(&web.replicas(5).served()).by("kubectl-scale", &["spec.replicas"]));
        assert_eq!(judgement.verdict, Verdict::InSync);
    }

    #[test]
    fn ignored_paths_hide_out_of_band_changes_but_not_others() {
        let web = deployment("web");
        let scenario = Scenario::new()
            .git(git().commit("c1", &web))
            .previously(&web.clone().served())
            .ignoring("metadata.labels");
        let labelled = web.clone().label("team", "x");
        assert_eq!(
            scenario
                .judge(&modified(&labelled.clone().served()))
                .verdict,
            Verdict::InSync
        );
        let judgement = scenario.judge(&modified(&labelled.annotation("note", "hi").served()));
        assert_eq!(
            drift_paths(&judgement.verdict),
            [r#"metadata.annotations.note"#]
        );
    }

    #[test]
    fn reordered_containers_are_not_drift() {
        let web = deployment("web");
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .previously(&web.clone().served())
            .judge(&modified(&web.containers_reversed().served()));
        assert_eq!(judgement.verdict, Verdict::InSync);
        assert!(judgement.diff.is_empty(), "{:?}", judgement.diff);
    }

    #[test]
    fn cpu_written_as_cores_equals_millicores_served() {
        let declared = deployment("web").cpu_request("web", json!(0.5));
        let served = deployment("web").cpu_request("web", json!("500m"));
        let judgement = Scenario::new()
            .git(git().commit("c1", &declared))
            .judge(&added(&served.served()));
        assert_eq!(judgement.verdict, authorized("c1"));
    }

    #[test]
    fn a_change_of_nothing_but_churn_is_in_sync() {
        let web = deployment("web");
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .previously(&web.clone().served())
            .judge(&modified(
                &web.annotation("deployment.kubernetes.io/revision", "4")
                    .served(),
            ));
        assert_eq!(judgement.verdict, Verdict::InSync);
    }

    #[test]
    fn a_resync_finding_an_unobserved_undeclared_change_is_out_of_band_by_unknown() {
        let web = deployment("web");
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .previously(&web.clone().served())
            .trusting(Trust::default().manager("*"))
            .judge(&resynced(&web.label("team", "x").served()));
        assert_eq!(drift_paths(&judgement.verdict), ["metadata.labels.team"]);
        assert_eq!(
            judgement.actor,
            Actor::Unknown {
                reason: UNOBSERVED.to_owned()
            }
        );
    }

    #[test]
    fn a_resync_finding_declared_drift_is_a_modification_by_unknown() {
        let web = deployment("web");
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .previously(&web.clone().served())
            .judge(&resynced(&web.replicas(3).served()));
        assert_eq!(drift_paths(&judgement.verdict), ["spec.replicas"]);
        assert!(matches!(judgement.actor, Actor::Unknown { .. }));
    }

    #[test]
    fn a_resync_finding_git_applied_while_unobserved_is_authorized() {
        let old = deployment("web").image("web", "nginx:1.24");
        let new = deployment("web").image("web", "nginx:1.25");
        let judgement = Scenario::new()
            .git(git().commit("c1", &old).commit("c2", &new))
            .previously(&old.served())
            .judge(&resynced(&new.served()));
        assert_eq!(judgement.verdict, authorized("c2"));
    }

    #[test]
    fn a_resync_of_an_unchanged_or_first_seen_object_is_in_sync() {
        let web = deployment("web");
        let scenario = Scenario::new().git(git().commit("c1", &web));
        assert_eq!(
            scenario.judge(&resynced(&web.clone().served())).verdict,
            Verdict::InSync
        );
        let judgement = scenario
            .previously(&web.clone().served())
            .judge(&resynced(&web.served()));
        assert_eq!(judgement.verdict, Verdict::InSync);
        assert!(!matches!(judgement.actor, Actor::Unknown { .. }));
    }

    #[test]
    fn a_later_commit_declaring_the_drifted_state_adopts_it() {
        let lists = ListSemantics::builtin();
        let live = deployment("web").replicas(5).served();
        let adopting = entry("c2", Some(&deployment("web").replicas(5)));
        assert_eq!(
            adoption(live.json(), &adopting, 7, &lists),
            Some(Verdict::Adopted {
                commit: "c2".to_owned(),
                drift_seq: 7
            })
        );
        let other = entry("c3", Some(&deployment("web").replicas(3)));
        assert_eq!(adoption(live.json(), &other, 7, &lists), None);
        assert_eq!(adoption(live.json(), &entry("c4", None), 7, &lists), None);
    }

    const LABEL: &str = "metadata.labels.team";

    fn judged(judgement: &Judgement, verdict: PathVerdict) -> Vec<String> {
        judgement
            .paths_judged(verdict)
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_trusted_manager_name_without_an_identity_is_out_of_band() {
        let web = deployment("web");
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .previously_good(&web.clone().served())
            .trusting(Trust::default().manager("kube-controller-manager"))
            .judge(
                &modified(&web.label("team", "x").served()).by("kube-controller-manager", &[LABEL]),
            );
        assert_eq!(drift_paths(&judgement.verdict), [LABEL]);
    }

    #[test]
    fn a_spoofed_manager_is_out_of_band_and_names_the_real_user() {
        let web = deployment("web");
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .previously_good(&web.clone().served())
            .trusting(
                Trust::default()
                    .manager_for_user("kube-controller-manager", "system:kube-controller-manager"),
            )
            .audited_as("mallory")
            .judge(
                &modified(&web.label("team", "x").served()).by("kube-controller-manager", &[LABEL]),
            );
        assert_eq!(drift_paths(&judgement.verdict), [LABEL]);
        assert!(matches!(
            &judgement.actor,
            Actor::Audit { user, manager: Some(m), .. }
                if user == "mallory" && m == "kube-controller-manager"
        ));
    }

    #[test]
    fn the_bound_identity_behind_a_manager_is_trusted() {
        let web = deployment("web");
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .previously_good(&web.clone().served())
            .trusting(
                Trust::default()
                    .manager_for_user("kube-controller-manager", "system:kube-controller-manager"),
            )
            .audited_as("system:kube-controller-manager")
            .judge(
                &modified(&web.label("team", "x").served()).by("kube-controller-manager", &[LABEL]),
            );
        assert_eq!(judgement.verdict, Verdict::InSync);
        assert_eq!(judged(&judgement, PathVerdict::Trusted), [LABEL]);
    }

    #[test]
    fn restoring_replicas_does_not_launder_a_label_added_in_the_same_write() {
        let web = deployment("web");
        let scaled = web.clone().replicas(5);
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .previously(&scaled.served())
            .known_good(&web.clone().served())
            .judge(&modified(&web.label("team", "x").served()));
        assert_eq!(drift_paths(&judgement.verdict), [LABEL]);
        assert_eq!(
            judged(&judgement, PathVerdict::Authorized),
            ["spec.replicas"]
        );
        assert_eq!(judged(&judgement, PathVerdict::OutOfBand), [LABEL]);
    }

    #[test]
    fn a_label_added_while_replicas_drift_is_recorded_too() {
        let web = deployment("web");
        let scaled = web.clone().replicas(5);
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .previously(&scaled.clone().served())
            .known_good(&web.clone().served())
            .judge(&modified(&scaled.label("team", "x").served()));
        assert_eq!(drift_paths(&judgement.verdict), ["spec.replicas"]);
        assert_eq!(judged(&judgement, PathVerdict::Drift), ["spec.replicas"]);
        assert_eq!(judged(&judgement, PathVerdict::OutOfBand), [LABEL]);
    }

    #[test]
    fn an_open_out_of_band_path_stays_open_until_put_back() {
        let web = deployment("web");
        let labelled = web.clone().label("team", "x");
        let scenario = Scenario::new()
            .git(git().commit("c1", &web))
            .previously(&labelled.clone().served())
            .known_good(&web.clone().served())
            .open(&[LABEL]);
        let annotated = scenario.judge(&modified(
            &labelled.clone().annotation("note", "hi").served(),
        ));
        assert_eq!(
            drift_paths(&annotated.verdict),
            ["metadata.annotations.note", LABEL]
        );
        let restored = scenario.judge(&modified(&web.clone().served()));
        assert_eq!(restored.verdict, authorized("c1"));
        assert_eq!(judged(&restored, PathVerdict::Authorized), [LABEL]);
    }

    #[test]
    fn a_trusted_change_does_not_close_an_open_out_of_band_path() {
        let web = deployment("web");
        let labelled = web.clone().label("team", "x");
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .previously(&labelled.clone().served())
            .known_good(&web.clone().served())
            .open(&[LABEL])
            .trusting(Trust::default().user("admin"))
            .audited_as("admin")
            .judge(&modified(&labelled.annotation("note", "hi").served()));
        assert_eq!(drift_paths(&judgement.verdict), [LABEL]);
        assert_eq!(
            judged(&judgement, PathVerdict::Trusted),
            ["metadata.annotations.note"]
        );
    }

    #[test]
    fn a_re_create_with_a_sidecar_is_out_of_band_against_the_last_good_state() {
        let web = deployment("web");
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .known_good(&web.clone().served())
            .judge(&added(&web.sidecar("miner", "evil:1").served()));
        assert_eq!(
            drift_paths(&judgement.verdict),
            ["spec.template.spec.containers[name=miner]"]
        );
    }

    #[test]
    fn a_re_create_as_git_says_is_authorized() {
        let web = deployment("web");
        let judgement = Scenario::new()
            .git(git().commit("c1", &web))
            .known_good(&web.clone().served())
            .judge(&added(&web.served()));
        assert_eq!(judgement.verdict, authorized("c1"));
    }

    #[test]
    fn applying_a_commit_that_drops_a_field_is_authorized() {
        let with_debug = deployment("web").env("web", "DEBUG", "1");
        let without = deployment("web");
        let judgement = Scenario::new()
            .git(git().commit("c1", &with_debug).commit("c2", &without))
            .previously_good(&with_debug.clone().served())
            .judge(&modified(&without.served()));
        assert_eq!(judgement.verdict, authorized("c2"));
    }

    #[test]
    fn only_undeclared_changes_without_declared_drift_wait_for_identity() {
        let web = deployment("web");
        let scenario = Scenario::new()
            .git(git().commit("c1", &web))
            .previously_good(&web.clone().served());
        assert!(
            scenario
                .outcome(&modified(&web.clone().label("team", "x").served()))
                .identity_matters
        );
        assert!(
            !scenario
                .outcome(&modified(
                    &web.clone().replicas(7).label("team", "x").served()
                ))
                .identity_matters
        );
        assert!(
            !scenario
                .outcome(&modified(&web.clone().replicas(7).served()))
                .identity_matters
        );
    }

    #[test]
    fn events_per_second_is_the_median_sample_rate() {
        let second = Duration::from_secs(1);
        let samples = [
            (50_000, second),
            (10, second),
            (60_000, second),
            (5, Duration::ZERO),
        ];
        assert_eq!(events_per_second(&samples), 50_000.0);
        assert_eq!(events_per_second(&samples[..2]), 25_005.0);
        assert_eq!(events_per_second(&[]), 0.0);
    }
}
