//! The verdict table: one change event, judged against git's desired history.
//!
//! | situation | verdict |
//! |---|---|
//! | the object is owned by a controller | `derived` |
//! | git does not declare the key, and git removed it and it was deleted | `authorized(head)` |
//! | git does not declare the key otherwise | `unmanaged` |
//! | git declares it and it was deleted | `drift(deleted)` |
//! | declared fields differ from HEAD but equal an older commit | `drift(rollback, older)` |
//! | declared fields differ from HEAD | `drift(modified, paths)` |
//! | declared fields equal HEAD; created, the change touched declared fields, or no earlier state is known (not on a resync) | `authorized(head)` |
//! | declared fields equal HEAD; only undeclared fields changed, by a trusted actor | `in_sync` |
//! | declared fields equal HEAD; only undeclared fields changed, by anyone else | `drift(out_of_band, paths)` |
//! | declared fields equal HEAD; nothing changed (or first seen on a resync) | `in_sync` |
//!
//! Content decides authorization; trust only decides whether changes to
//! undeclared fields matter. Ignored paths (policy) are left out of both axes.

use std::time::Duration;

use model::{
    Actor, ChangeEvent, ChangeKind, DesiredEntry, DesiredHistory, DriftKind, FieldChange,
    FieldPath, Judgement, Verdict,
};
use serde_json::Value;

use crate::actor::actor_from_managed_fields;
use crate::changes::{Changes, changed_fields};
use crate::lists::ListSemantics;
use crate::normalize::same_opt;
use crate::paths::is_within;
use crate::project::{project, projects_equal};
use crate::trust::Trust;

/// Reason given for the actor of a change found on a resync.
pub const UNOBSERVED: &str = "changed while unobserved";

/// Reason given for the actor of a deletion without an audit record.
pub const DELETED_UNATTRIBUTED: &str = "deleted; managedFields do not record who deletes";

/// Everything [`classify`] judges one change by.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The change.
    pub event: &'a ChangeEvent,
    /// The last known live state (from the ledger); `None` when first seen.
    pub previous: Option<&'a Value>,
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

/// Judges one change (design §4.5).
pub fn classify(input: &Input<'_>) -> Judgement {
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
    let (verdict, diff) = judge(input, head, changes, &actor);
    Judgement {
        verdict,
        actor,
        desired_commit: head.map(|entry| entry.commit.id.clone()),
        diff,
    }
}

fn judge(
    input: &Input<'_>,
    head: Option<&DesiredEntry>,
    changes: Option<Changes>,
    actor: &Actor,
) -> (Verdict, Vec<FieldChange>) {
    let event = input.event;
    if event.derived {
        return (Verdict::Derived, all(changes));
    }
    let declared = head.and_then(|entry| entry.manifest.as_ref().map(|m| (entry, m)));
    let Some((head, manifest)) = declared else {
        let verdict = match head {
            Some(head) if event.kind == ChangeKind::Deleted => Verdict::Authorized {
                commit: head.commit.id.clone(),
            },
            _ => Verdict::Unmanaged,
        };
        return (verdict, all(changes));
    };
    if event.kind == ChangeKind::Deleted {
        return (drift(DriftKind::Deleted), Vec::new());
    }
    let diff = input.without_ignored(project(manifest, &event.object, input.lists));
    if diff.is_empty() {
        agreement(input, head, changes, actor)
    } else {
        (departure(input, manifest, &diff), diff)
    }
}

fn actor_of(input: &Input<'_>, changed: &[FieldPath]) -> Actor {
    if let Some(actor) = input.actor {
        return actor.clone();
    }
    let event = input.event;
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

/// Declared fields equal HEAD: authorized when the change brought them there,
/// else judged by what changed outside them and who changed it.
fn agreement(
    input: &Input<'_>,
    head: &DesiredEntry,
    changes: Option<Changes>,
    actor: &Actor,
) -> (Verdict, Vec<FieldChange>) {
    let authorized = || Verdict::Authorized {
        commit: head.commit.id.clone(),
    };
    let Some(changes) = changes else {
        return match input.event.kind {
            ChangeKind::Resync => (Verdict::InSync, Vec::new()),
            _ => (authorized(), Vec::new()),
        };
    };
    if input.event.kind == ChangeKind::Added
        || changes
            .declared
            .iter()
            .any(|change| !input.is_ignored(&change.path))
    {
        return (authorized(), changes.into_all());
    }
    let out_of_band: Vec<&FieldChange> = changes
        .undeclared
        .iter()
        .filter(|change| !input.is_ignored(&change.path))
        .collect();
    if out_of_band.is_empty() || input.trust.trusts(actor) {
        return (Verdict::InSync, changes.into_all());
    }
    let diff: Vec<FieldChange> = out_of_band.into_iter().cloned().collect();
    let paths = diff.iter().map(|change| change.path.clone()).collect();
    (drift(DriftKind::OutOfBand { paths }), diff)
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
            Actor::Manager { manager, .. } => manager,
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
            .trusting(Trust::default().manager("kube-controller-manager"))
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
            .trusting(Trust::default().manager("istio-*"))
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
