//! Enforce mode end to end: a GitOps-managed app (Deployment `web`,
//! ConfigMap `web-config`) lives in a real git repository and is applied by
//! the `gitops` user; people change it with the built kubectl; a Driftwarden
//! started in-process with enforcing policy rules puts it back (or says why
//! not). Each test asserts the exact ledger records (drift, enforcement,
//! amendment, control) and the state of the cluster afterwards.
//!
//! "Nothing happened" is never asserted after a sleep: the test makes a
//! later drift (a sentinel) that Driftwarden does act on, and since the
//! enforcer handles drift in the order it was recorded, once the sentinel's
//! enforcement is in the ledger everything before it has been decided.
//!
//! The core scenarios run on both buses: `<scenario>_embedded` and
//! `<scenario>_kafka` (topics under the test's own prefix, its own group).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use axum::http::Method;
use driftwarden::api::client::Client;
use driftwarden::api::views::{GrantRequest, ReasonRequest, Recorded};
use driftwarden_e2e::app::{self, label, manager, modified, out_of_band, replicas, uid};
use driftwarden_e2e::enforcing::{Enforcing, Rails, Rule};
use driftwarden_e2e::git::GitRepo;
use driftwarden_e2e::scenario::{
    Bus, Found, PATIENCE, Scenario, describe, key, records, wait_record,
};
use driftwarden_e2e::{User, eventually, logs, on_both_buses, on_the_embedded_bus};
use model::{
    Amendment, ChangeKind, Control, DriftKind, Enforcement, ExemptionScope, LedgerRecord, Mode,
    ObjectKey, Outcome, RecordBody, RevertAction, Verdict,
};
use serde_json::json;

/// The grace of the grace-period scenarios.
const GRACE: Duration = Duration::from_secs(5);

/// The name of the policy rule covering the scenario's namespace.
const TEAM: &str = "team";

const IMAGE: &str = "registry.invalid/shop/web:1.0.0";

fn deployment_yaml(namespace: &str, replicas: u32) -> String {
    app::deployment_yaml(namespace, replicas, IMAGE)
}

/// A ConfigMap with exactly `labels`.
fn config_map_yaml(namespace: &str, name: &str, labels: &[(&str, &str)]) -> String {
    app::config_map_yaml(namespace, name, labels, &[("greeting", "hello")])
}

/// The labels of the app's objects.
const APP: (&str, &str) = ("app", "web");

/// The files of the app in `namespace`.
fn deployment_file(namespace: &str) -> String {
    format!("apps/{namespace}/deployment.yaml")
}

fn config_map_file(namespace: &str, name: &str) -> String {
    format!("apps/{namespace}/{name}.yaml")
}

/// What a scenario declares in git and how its rails are set.
#[derive(Debug, Clone, Default)]
struct Setup {
    /// Also declare ConfigMap `web-extra`.
    extra: bool,
    /// Also declare this many ConfigMaps `bulk-NN`, labelled `app=bulk`.
    bulk: usize,
    /// A second namespace with the same app, watched and declared.
    second_namespace: bool,
    /// The safety rails.
    rails: Rails,
    /// Driftwarden serves its audit webhook, so writers are identities.
    audited: bool,
}

/// The enforce rule of the scenario's namespace.
fn team(namespace: &str) -> Rule {
    Rule::new(TEAM, Mode::Enforce).in_namespace(namespace)
}

/// Writes the app of every namespace of `namespaces` (the first is the
/// scenario's own), and what `setup` adds, into the repository.
fn declare(repo: &GitRepo, namespaces: &[String], setup: &Setup) -> Result<()> {
    for namespace in namespaces {
        repo.write(&deployment_file(namespace), &deployment_yaml(namespace, 2))?;
        repo.write(
            &config_map_file(namespace, "web-config"),
            &config_map_yaml(namespace, "web-config", &[APP]),
        )?;
    }
    let own = &namespaces[0];
    if setup.extra {
        repo.write(
            &config_map_file(own, "web-extra"),
            &config_map_yaml(own, "web-extra", &[APP]),
        )?;
    }
    if setup.bulk > 0 {
        let bulk: Vec<String> = (0..setup.bulk)
            .map(|i| config_map_yaml(own, &bulk_name(i), &[("app", "bulk")]))
            .collect();
        repo.write(&config_map_file(own, "bulk"), &bulk.join("---\n"))?;
    }
    Ok(())
}

/// The keys [`declare`] declares.
fn declared(namespaces: &[String], setup: &Setup) -> Vec<ObjectKey> {
    let mut keys = Vec::new();
    for namespace in namespaces {
        keys.push(key("apps/v1", "Deployment", namespace, "web"));
        keys.push(key("v1", "ConfigMap", namespace, "web-config"));
    }
    let own = &namespaces[0];
    if setup.extra {
        keys.push(key("v1", "ConfigMap", own, "web-extra"));
    }
    keys.extend((0..setup.bulk).map(|i| key("v1", "ConfigMap", own, &bulk_name(i))));
    keys
}

/// The scenario of every test: the app committed and applied by `gitops`,
/// then Driftwarden started with the rules `rules(namespace)` and its
/// first records in.
async fn scenario(
    bus: Bus,
    name: &str,
    setup: Setup,
    rules: impl FnOnce(&str) -> Vec<Rule>,
) -> Result<Scenario> {
    logs::to_test_output();
    let kinds = ["v1/ConfigMap", "apps/v1/Deployment"];
    let mut s = Scenario::prepare(bus, name, &kinds).await?;
    if setup.second_namespace {
        s.add_namespace(&format!("{name}-other")).await?;
    }
    let namespaces = s.namespaces();
    declare(&s.repo, &namespaces, &setup)?;
    s.commit("web: first release (SHOP-1)")?;
    if setup.audited {
        s.with_audit_webhook()?;
    }
    let mut enforcing = Enforcing::new(s.settings.clone());
    enforcing.also_watch = namespaces[1..].to_vec();
    enforcing.rules = rules(s.namespace());
    enforcing.rails = setup.rails;
    s.config = enforcing.config()?;
    s.apply_all_as_gitops()?;
    s.start().await?;
    s.wait_first_records(&declared(&namespaces, &setup)).await?;
    Ok(s)
}

/// A drift Driftwarden acts on, made after everything the test waits out:
/// a new label on ConfigMap `name`. Returns the sequence number of the
/// enforcement record answering it; every drift recorded before the
/// sentinel has been decided by then.
async fn sentinel(s: &Scenario, name: &str) -> Result<u64> {
    let after = s.seq();
    let label = format!("sentinel-{}", driftwarden_e2e::unique_suffix());
    s.kubectl(
        User::Mallory,
        &["label", "configmap", name, &format!("{label}=x")],
    )?;
    let key = s.config_map(name);
    let drift = s
        .change(&key, after, "sentinel label", |e| {
            e.object
                .pointer("/metadata/labels")
                .is_some_and(|labels| labels.get(&label).is_some())
        })
        .await?;
    let (record, _) = s.answer(&key, drift.seq).await?;
    Ok(record.seq)
}

/// `user` labels ConfigMap `web-config` `owner=<owner>`; returns the change
/// recording it (the first one after record `after` with an owner label),
/// asserted to be drift out of band.
async fn owner_labelled(s: &Scenario, after: u64, user: User, owner: &str) -> Result<Found> {
    let key = s.config_map("web-config");
    s.kubectl(
        user,
        &[
            "label",
            "configmap",
            "web-config",
            &format!("owner={owner}"),
        ],
    )?;
    let drift = s
        .change(&key, after, "owner label", |e| {
            label(&e.object, "owner").is_some()
        })
        .await?;
    assert_out_of_band_owner(s, &key, &drift);
    Ok(drift)
}

/// Asserts `found` is drift out of band of the owner label.
fn assert_out_of_band_owner(s: &Scenario, key: &ObjectKey, found: &Found) {
    s.assert_verdict(key, 0, found, &out_of_band(&["metadata.labels.owner"]));
}

/// Name of the `i`th bulk ConfigMap.
fn bulk_name(i: usize) -> String {
    format!("bulk-{i:02}")
}

/// The version an enforcement reverted to (`None` for a deletion that
/// left nothing behind); fails on any other outcome.
fn reverted(scenario: &Scenario, enforcement: &Enforcement) -> Result<Option<String>> {
    match &enforcement.outcome {
        Outcome::Reverted { resource_version } => Ok(resource_version.clone()),
        other => bail!(
            "expected a revert of {}, got {other:?}; history:\n{}",
            enforcement.key,
            scenario.history_since(&enforcement.key, 0)
        ),
    }
}

/// The version a write (apply, patch, create) reverted to; fails on any
/// other outcome.
fn reverted_to(scenario: &Scenario, enforcement: &Enforcement) -> Result<String> {
    reverted(scenario, enforcement)?.with_context(|| {
        format!(
            "the revert of {} names no resourceVersion: {:?}",
            enforcement.key, enforcement.outcome
        )
    })
}

/// Asserts that Driftwarden's own write (version `version`) came back as a
/// change of `key` judged `expected`.
async fn assert_own_write(
    s: &Scenario,
    key: &ObjectKey,
    after: u64,
    version: &str,
    expected: &Verdict,
) -> Result<()> {
    let own = s
        .change(key, after, "driftwarden's own write", |e| {
            e.resource_version == version
        })
        .await?;
    s.assert_verdict(key, 0, &own, expected);
    if own.event.kind != ChangeKind::Deleted {
        assert_eq!(
            manager(&own.judgement.actor),
            Some("driftwarden"),
            "actor of #{}",
            own.seq
        );
    }
    Ok(())
}

/// [`assert_own_write`] of a revert to git's newest commit: authorized by
/// that commit.
async fn assert_own_write_at_head(
    s: &Scenario,
    key: &ObjectKey,
    after: u64,
    version: &str,
) -> Result<()> {
    let authorized = Verdict::Authorized {
        commit: s.head().into(),
    };
    assert_own_write(s, key, after, version, &authorized).await
}

// ---- reverts ----

/// `kubectl scale` departs from git's replicas: Driftwarden applies git's
/// manifest and the Deployment is back at 2 replicas.
async fn manual_scale_is_reverted_by_applying_git(bus: Bus) -> Result<()> {
    let s = scenario(bus, "scale", Setup::default(), |ns| vec![team(ns)]).await?;
    let key = s.deployment();
    let after = s.seq();
    s.kubectl(User::Mallory, &["scale", "deployment/web", "--replicas=5"])?;
    let drift = s
        .change(&key, after, "scaled to 5", |e| replicas(e) == Some(5))
        .await?;
    s.assert_verdict(&key, 0, &drift, &modified(&["spec.replicas"]));

    let (_, enforcement) = s.answer(&key, drift.seq).await?;
    let version = reverted_to(&s, &enforcement)?;
    assert_eq!(
        enforcement,
        Enforcement {
            key: key.clone(),
            drift_seq: drift.seq,
            mode: Mode::Enforce,
            policy: TEAM.into(),
            action: RevertAction::Apply {
                commit: s.head().into()
            },
            outcome: Outcome::Reverted {
                resource_version: Some(version.clone())
            },
        }
    );
    s.wait_replicas(2).await?;
    assert_own_write_at_head(&s, &key, drift.seq, &version).await
}

/// A label added by hand is reverted with an inverse JSON patch guarded by
/// the drifted resourceVersion: the label is gone, nothing else changed.
async fn out_of_band_label_is_patched_away(bus: Bus) -> Result<()> {
    let s = scenario(bus, "label", Setup::default(), |ns| vec![team(ns)]).await?;
    let key = s.config_map("web-config");
    let drift = owner_labelled(&s, s.seq(), User::Mallory, "mallory").await?;

    let (_, enforcement) = s.answer(&key, drift.seq).await?;
    let version = reverted_to(&s, &enforcement)?;
    assert_eq!(
        enforcement.action,
        RevertAction::Patch {
            patch: json!([{"op": "remove", "path": "/metadata/labels/owner"}]),
            resource_version: drift.event.resource_version.clone(),
        }
    );
    assert_eq!(
        (enforcement.mode, enforcement.policy.as_str()),
        (Mode::Enforce, TEAM)
    );
    let live = s
        .wait_live("owner label removed", "configmap", "web-config", |live| {
            live.is_some_and(|cm| label(cm, "owner").is_none())
        })
        .await?
        .context("web-config exists")?;
    assert_eq!(label(&live, "app"), Some("web"), "declared label kept");
    assert_eq!(live.pointer("/data/greeting"), Some(&json!("hello")));
    // Putting the object back to its last known-good state is what git asks.
    assert_own_write_at_head(&s, &key, drift.seq, &version).await
}

/// A declared ConfigMap deleted by hand is created again from git.
async fn deleted_config_map_is_created_again(bus: Bus) -> Result<()> {
    let s = scenario(bus, "delete", Setup::default(), |ns| vec![team(ns)]).await?;
    let key = s.config_map("web-config");
    let before = s
        .live("configmap", "web-config")?
        .context("web-config exists")?;
    let after = s.seq();
    s.kubectl(User::Mallory, &["delete", "configmap", "web-config"])?;
    let drift = s
        .change(&key, after, "deletion", |e| e.kind == ChangeKind::Deleted)
        .await?;
    s.assert_verdict(
        &key,
        0,
        &drift,
        &Verdict::Drift {
            drift: DriftKind::Deleted,
        },
    );

    let (_, enforcement) = s.answer(&key, drift.seq).await?;
    let version = reverted_to(&s, &enforcement)?;
    assert_eq!(
        enforcement.action,
        RevertAction::Create {
            commit: s.head().into()
        }
    );
    let live = s
        .wait_live(
            "web-config exists again",
            "configmap",
            "web-config",
            |live| live.is_some(),
        )
        .await?
        .context("web-config exists")?;
    assert_ne!(uid(&live), uid(&before), "a new incarnation");
    assert_eq!(live.pointer("/data/greeting"), Some(&json!("hello")));
    assert_own_write_at_head(&s, &key, drift.seq, &version).await
}

/// A ConfigMap nobody declared is deleted where the governing rule prunes,
/// and left alone where it does not.
async fn unmanaged_config_map_is_pruned_only_where_prune_is_on(bus: Bus) -> Result<()> {
    let s = scenario(bus, "prune", Setup::default(), |ns| {
        vec![
            team(ns),
            Rule::new("strays", Mode::Enforce)
                .in_namespace(ns)
                .labelled("prune", "on")
                .pruning(),
        ]
    })
    .await?;
    let ns = s.namespace().to_string();
    let kept = s.config_map("stray-kept");
    let pruned = s.config_map("stray-pruned");
    let after = s.seq();
    s.create(User::Mallory, &config_map_yaml(&ns, "stray-kept", &[APP]))?;
    let kept_change = s
        .change(&kept, after, "stray-kept created", |_| true)
        .await?;
    s.assert_verdict(&kept, 0, &kept_change, &Verdict::Unmanaged);

    s.create(
        User::Mallory,
        &config_map_yaml(&ns, "stray-pruned", &[APP, ("prune", "on")]),
    )?;
    let created = s
        .change(&pruned, after, "stray-pruned created", |_| true)
        .await?;
    s.assert_verdict(&pruned, 0, &created, &Verdict::Unmanaged);
    let (_, enforcement) = s.answer(&pruned, created.seq).await?;
    reverted(&s, &enforcement)?;
    assert_eq!(
        (
            enforcement.policy.as_str(),
            &enforcement.action,
            enforcement.mode
        ),
        (
            "strays",
            &RevertAction::Delete {
                uid: created.event.uid.clone()
            },
            Mode::Enforce
        )
    );
    s.wait_live(
        "stray-pruned deleted",
        "configmap",
        "stray-pruned",
        |live| live.is_none(),
    )
    .await?;
    let gone = s
        .change(&pruned, created.seq, "stray-pruned deleted", |e| {
            e.kind == ChangeKind::Deleted
        })
        .await?;
    assert!(
        !gone.judgement.verdict.is_drift(),
        "{}",
        gone.judgement.verdict
    );

    // stray-kept was judged before stray-pruned: it has been decided.
    assert_eq!(
        s.enforcements(&kept, 0)?,
        [],
        "{}",
        s.history_since(&kept, 0)
    );
    let live = s.live("configmap", "stray-kept")?;
    assert!(live.is_some(), "stray-kept was deleted without prune");
    Ok(())
}

/// In dry_run the revert is recorded as `would_revert` and nothing is
/// written: the Deployment stays scaled.
async fn dry_run_records_the_revert_and_changes_nothing(bus: Bus) -> Result<()> {
    let s = scenario(bus, "dry-run", Setup::default(), |ns| {
        vec![Rule::new("look", Mode::DryRun).in_namespace(ns)]
    })
    .await?;
    let key = s.deployment();
    let after = s.seq();
    s.kubectl(User::Mallory, &["scale", "deployment/web", "--replicas=5"])?;
    let drift = s
        .change(&key, after, "scaled to 5", |e| replicas(e) == Some(5))
        .await?;
    s.assert_verdict(&key, 0, &drift, &modified(&["spec.replicas"]));
    let (_, enforcement) = s.answer(&key, drift.seq).await?;
    assert_eq!(
        enforcement,
        Enforcement {
            key: key.clone(),
            drift_seq: drift.seq,
            mode: Mode::DryRun,
            policy: "look".into(),
            action: RevertAction::Apply {
                commit: s.head().into()
            },
            outcome: Outcome::WouldRevert,
        }
    );

    sentinel(&s, "web-config").await?;
    let live = s.live("deployment", "web")?.context("web exists")?;
    assert_eq!(live.pointer("/spec/replicas"), Some(&json!(5)));
    let written: Vec<LedgerRecord> = records(s.ledger())?
        .into_iter()
        .filter(|r| match &r.body {
            RecordBody::Enforcement(e) => e.outcome != Outcome::WouldRevert,
            RecordBody::Change { judgement, .. } => {
                manager(&judgement.actor) == Some("driftwarden")
            }
            _ => false,
        })
        .collect();
    assert!(written.is_empty(), "dry run wrote:\n{}", describe(&written));
    Ok(())
}

// ---- grace ----

/// A hand-made change committed to git within the grace is adopted, not
/// reverted: the Deployment keeps 4 replicas.
async fn drift_committed_within_the_grace_is_adopted_not_reverted(bus: Bus) -> Result<()> {
    let mut s = scenario(bus, "grace-adopt", Setup::default(), |ns| {
        vec![team(ns).with_grace(GRACE)]
    })
    .await?;
    let key = s.deployment();
    let after = s.seq();
    s.kubectl(User::Mallory, &["scale", "deployment/web", "--replicas=4"])?;
    let drift = s
        .change(&key, after, "scaled to 4", |e| replicas(e) == Some(4))
        .await?;
    s.assert_verdict(&key, 0, &drift, &modified(&["spec.replicas"]));
    let drift_at = s.record(drift.seq)?.at;

    let ns = s.namespace().to_string();
    s.repo
        .write(&deployment_file(&ns), &deployment_yaml(&ns, 4))?;
    let adopting = s.commit_and_sync("web: keep 4 replicas (SHOP-4)").await?;
    let amendment = wait_record(
        s.ledger(),
        drift.seq,
        PATIENCE,
        "adoption",
        |body| matches!(body, RecordBody::Amendment(a) if a.key == key),
    )
    .await?;
    let RecordBody::Amendment(adopted) = &amendment.body else {
        bail!("not an amendment");
    };
    assert_eq!(adopted.amends, drift.seq);
    assert_eq!(
        adopted.judgement.verdict,
        Verdict::Adopted {
            commit: adopting,
            drift_seq: drift.seq
        }
    );
    ensure!(
        amendment.at < drift_at + GRACE,
        "the adoption came after the grace ({} after the drift): the scenario needs it within",
        amendment.at - drift_at
    );

    sentinel(&s, "web-config").await?;
    assert_eq!(
        s.enforcements(&key, after)?,
        [],
        "{}",
        s.history_since(&key, after)
    );
    let live = s.live("deployment", "web")?.context("web exists")?;
    assert_eq!(live.pointer("/spec/replicas"), Some(&json!(4)));
    Ok(())
}

/// Without an adopting commit, the drift is reverted once the grace is over,
/// not before.
async fn drift_is_reverted_once_the_grace_is_over(bus: Bus) -> Result<()> {
    let s = scenario(bus, "grace-over", Setup::default(), |ns| {
        vec![team(ns).with_grace(GRACE)]
    })
    .await?;
    let key = s.deployment();
    let after = s.seq();
    s.kubectl(User::Mallory, &["scale", "deployment/web", "--replicas=4"])?;
    let drift = s
        .change(&key, after, "scaled to 4", |e| replicas(e) == Some(4))
        .await?;
    let (record, enforcement) = s.answer(&key, drift.seq).await?;
    reverted_to(&s, &enforcement)?;
    let waited = record.at - s.record(drift.seq)?.at;
    assert!(
        waited >= chrono::Duration::from_std(GRACE)?,
        "reverted {waited} after the drift, within the grace of {GRACE:?}"
    );
    s.wait_replicas(2).await
}

// ---- sync ----

/// With `sync`, a new commit is applied by Driftwarden (and, with `prune`,
/// what it removed is deleted); its own writes are authorized by the commit.
async fn sync_applies_a_new_commit_and_prunes_what_it_removed(bus: Bus) -> Result<()> {
    let setup = Setup {
        extra: true,
        ..Setup::default()
    };
    let mut s = scenario(bus, "sync", setup, |ns| vec![team(ns).syncing().pruning()]).await?;
    let ns = s.namespace().to_string();
    let web = s.deployment();
    let extra = s.config_map("web-extra");
    let extra_uid = s
        .ledger()
        .object_state(&extra)?
        .context("web-extra is known")?
        .uid;

    s.repo
        .write(&deployment_file(&ns), &deployment_yaml(&ns, 3))?;
    s.repo.remove(&config_map_file(&ns, "web-extra"))?;
    let after = s.seq();
    let commit = s
        .commit_and_sync("web: 3 replicas, drop web-extra (SHOP-5)")
        .await?;
    let authorized = Verdict::Authorized {
        commit: commit.clone(),
    };

    // The sync of this commit (the start-up sync of HEAD may still be
    // answering the first one).
    let this_commit = RevertAction::Apply {
        commit: commit.clone(),
    };
    let (_, applied) = s
        .enforcement(&web, after, "sync of web", |e| {
            e.drift_seq == 0 && e.action == this_commit
        })
        .await?;
    let version = reverted_to(&s, &applied)?;
    assert_eq!(
        applied,
        Enforcement {
            key: web.clone(),
            drift_seq: 0,
            mode: Mode::Enforce,
            policy: TEAM.into(),
            action: RevertAction::Apply {
                commit: commit.clone()
            },
            outcome: Outcome::Reverted {
                resource_version: Some(version.clone())
            },
        }
    );
    s.wait_replicas(3).await?;
    assert_own_write(&s, &web, after, &version, &authorized).await?;

    let (_, pruned) = s
        .enforcement(&extra, after, "prune of web-extra", |e| {
            e.drift_seq == 0 && matches!(e.action, RevertAction::Delete { .. })
        })
        .await?;
    reverted(&s, &pruned)?;
    assert_eq!(pruned.action, RevertAction::Delete { uid: extra_uid });
    s.wait_live("web-extra deleted", "configmap", "web-extra", |live| {
        live.is_none()
    })
    .await?;
    let deleted = s
        .change(&extra, after, "web-extra deleted", |e| {
            e.kind == ChangeKind::Deleted
        })
        .await?;
    s.assert_verdict(&extra, 0, &deleted, &authorized);
    Ok(())
}

// ---- safety rails ----

/// Scales Deployment `web` as mallory (with `extra` kubectl arguments, e.g.
/// another identity's token) every 300 ms, cycling 3 to 9 replicas, until
/// `stop`; returns the replicas it set, in order.
fn keep_scaling(
    s: &Scenario,
    extra: Vec<String>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<Vec<i64>>> {
    let (env, ns) = (s.env, s.namespace().to_string());
    std::thread::spawn(move || {
        let mut scaled = Vec::new();
        for replicas in (3..=9).cycle() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let replicas_flag = format!("--replicas={replicas}");
            let mut args = vec!["scale", "deployment/web", &replicas_flag, "-n", &ns];
            args.extend(extra.iter().map(String::as_str));
            env.kubectl_ok(User::Mallory, &args)?;
            scaled.push(replicas);
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(scaled)
    })
}

/// A person who keeps scaling the Deployment back never keeps the change:
/// after `flap_limit` reverts the war is recorded once, naming the writer,
/// and reverts go on with a capped backoff until the last scale is put back.
async fn a_person_in_a_revert_war_is_reverted_in_the_end(bus: Bus) -> Result<()> {
    let setup = Setup {
        rails: Rails {
            flap_limit: 3,
            ..Rails::default()
        },
        ..Setup::default()
    };
    let s = scenario(bus, "flap", setup, |ns| vec![team(ns)]).await?;
    let key = s.deployment();
    let after = s.seq();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = keep_scaling(&s, Vec::new(), stop.clone());
    let war = wait_record(s.ledger(), after, PATIENCE, "the revert war", |body| {
        matches!(body, RecordBody::Control(Control::RevertWar { .. }))
    })
    .await;
    // A few more rounds after the war was declared, then quiet.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let scaled = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))??;
    let war = war?;
    let RecordBody::Control(Control::RevertWar {
        key: fought,
        writer,
        reverts,
        ..
    }) = &war.body
    else {
        unreachable!()
    };
    assert_eq!(fought, &key);
    assert_eq!(*reverts, 3);
    assert!(writer.contains("kubectl"), "the writer is named: {writer}");
    assert!(scaled.len() > 3, "mallory kept scaling: {scaled:?}");
    // The last scale is put back too, however often mallory tried.
    s.wait_replicas(2).await?;
    let history = s.history_since(&key, after);
    let wars = records(s.ledger())?
        .into_iter()
        .filter(|r| matches!(r.body, RecordBody::Control(Control::RevertWar { .. })))
        .count();
    assert_eq!(wars, 1, "the war is recorded once:\n{history}");
    let held = s
        .enforcements(&key, after)?
        .into_iter()
        .filter(|(_, e)| matches!(e.outcome, Outcome::Held { .. }))
        .count();
    assert_eq!(
        held, 0,
        "a person's change is never left in place:\n{history}"
    );
    Ok(())
}

/// A service account (a machine: another controller, a misconfigured
/// agent) keeps scaling the Deployment: with its identity from the audit
/// events, the flap limit holds, names it, and its last scale stands.
async fn a_machine_in_a_revert_war_stops_at_the_flap_limit(bus: Bus) -> Result<()> {
    let setup = Setup {
        rails: Rails {
            flap_limit: 3,
            ..Rails::default()
        },
        audited: true,
        ..Setup::default()
    };
    let s = scenario(bus, "flap-bot", setup, |ns| vec![team(ns)]).await?;
    let ns = s.namespace().to_string();
    s.env
        .kubectl_ok(User::Admin, &["-n", &ns, "create", "serviceaccount", "bot"])?;
    s.env.kubectl_ok(
        User::Admin,
        &[
            "-n",
            &ns,
            "create",
            "rolebinding",
            "bot-edit",
            "--clusterrole=edit",
            &format!("--serviceaccount={ns}:bot"),
        ],
    )?;
    let token = s
        .env
        .kubectl_ok(User::Admin, &["-n", &ns, "create", "token", "bot"])?
        .trim()
        .to_owned();
    let bot = format!("system:serviceaccount:{ns}:bot");
    let key = s.deployment();
    let after = s.seq();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = keep_scaling(&s, vec![format!("--token={token}")], stop.clone());
    let held = s
        .enforcement(&key, after, "a held revert", |e| {
            matches!(e.outcome, Outcome::Held { .. })
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let scaled = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))??;
    let (_, held) = held?;
    let Outcome::Held { reason } = &held.outcome else {
        unreachable!()
    };
    assert!(
        reason.contains("revert war") && reason.contains(&bot),
        "the hold names the service account: {reason}"
    );
    let last = *scaled.last().context("scaled at least once")?;
    // The machine's last scale stands: Driftwarden stepped back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let live = s.live("deployment", "web")?.context("web exists")?;
    assert_eq!(live.pointer("/spec/replicas"), Some(&json!(last)));
    let wars = records(s.ledger())?
        .into_iter()
        .filter(|r| matches!(r.body, RecordBody::Control(Control::RevertWar { .. })))
        .count();
    assert_eq!(
        wars, 0,
        "a war with a machine is a hold, not a critical war"
    );
    Ok(())
}

/// The enforce rule matches the label git declares; one patch changes the
/// image and removes that label. The scope comes from git, not from the
/// labels the patch left: the change is reverted, label included.
async fn removing_the_label_an_enforce_rule_matches_does_not_escape(bus: Bus) -> Result<()> {
    let s = scenario(bus, "unlabel", Setup::default(), |ns| {
        vec![
            Rule::new("everything", Mode::Audit),
            Rule::new(TEAM, Mode::Enforce)
                .in_namespace(ns)
                .labelled(APP.0, APP.1),
        ]
    })
    .await?;
    let key = s.deployment();
    let after = s.seq();
    s.kubectl(
        User::Mallory,
        &[
            "patch",
            "deployment/web",
            "--type=strategic",
            "-p",
            r#"{"metadata":{"labels":{"app":null}},"spec":{"template":{"spec":{"containers":[{"name":"web","image":"registry.invalid/evil:6.6.6"}]}}}}"#,
        ],
    )?;
    let drift = s
        .change(&key, after, "the unlabelled image change", |e| {
            label(&e.object, "app").is_none()
        })
        .await?;
    assert!(drift.judgement.verdict.is_drift(), "{:?}", drift.judgement);
    let (_, enforcement) = s
        .enforcement(&key, drift.seq, "the revert", |e| {
            matches!(e.outcome, Outcome::Reverted { .. })
        })
        .await?;
    assert_eq!(enforcement.policy, TEAM);
    s.wait_live("label and image back", "deployment", "web", |live| {
        live.is_some_and(|d| {
            label(d, "app") == Some("web")
                && d.pointer("/spec/template/spec/containers/0/image") == Some(&json!(IMAGE))
        })
    })
    .await?;
    Ok(())
}

/// 50 declared ConfigMaps labelled by hand in one command: after
/// `breaker_limit` (10) reverts the breaker pauses enforcement, the rest is
/// held; a resume request ends the pause and the next drift is reverted.
async fn circuit_breaker_pauses_a_mass_change_until_resumed(bus: Bus) -> Result<()> {
    const BULK: usize = 50;
    let setup = Setup {
        bulk: BULK,
        rails: Rails {
            breaker_limit: 10,
            ..Rails::default()
        },
        ..Setup::default()
    };
    let s = scenario(bus, "breaker", setup, |ns| vec![team(ns)]).await?;
    let bulk: Vec<ObjectKey> = (0..BULK).map(|i| s.config_map(&bulk_name(i))).collect();
    let after = s.seq();
    s.kubectl(
        User::Mallory,
        &["label", "configmap", "-l", "app=bulk", "owner=m"],
    )?;
    let paused = wait_record(s.ledger(), after, PATIENCE, "pause", |body| {
        matches!(body, RecordBody::Control(Control::Paused { .. }))
    })
    .await?;
    let RecordBody::Control(Control::Paused { reason, until }) = &paused.body else {
        bail!("not a pause");
    };
    assert_eq!(reason, "circuit breaker: 11 drifts in 1m");
    let pause = until.context("the breaker pauses for a while")? - paused.at;
    assert!(
        pause > chrono::Duration::seconds(590) && pause <= chrono::Duration::seconds(600),
        "paused for {pause}"
    );

    // Every labelled ConfigMap gets exactly one answer.
    let answers = eventually(PATIENCE, "an answer to every drift", || async {
        let mut answers = Vec::new();
        for key in &bulk {
            match s.enforcements(key, after)?.as_slice() {
                [] => return Ok(None),
                [one] => answers.push(one.clone()),
                many => bail!("{key} answered {} times: {many:?}", many.len()),
            }
        }
        Ok(Some(answers))
    })
    .await?;
    let reverted_keys: BTreeSet<&ObjectKey> = answers
        .iter()
        .filter(|(_, e)| matches!(e.outcome, Outcome::Reverted { .. }))
        .map(|(_, e)| &e.key)
        .collect();
    let counted: Vec<LedgerRecord> = records(s.ledger())?
        .into_iter()
        .filter(|r| r.seq > after && r.seq < paused.seq)
        .filter(|r| {
            matches!(&r.body, RecordBody::Change { judgement, .. } if judgement.verdict.is_drift())
        })
        .collect();
    assert_eq!(
        reverted_keys.len(),
        10,
        "reverted before the pause; the drifts recorded before it:\n{}",
        describe(&counted)
    );
    for (seq, enforcement) in &answers {
        match &enforcement.outcome {
            Outcome::Reverted { .. } => assert!(*seq < paused.seq, "#{seq} reverted while paused"),
            Outcome::Held { reason } => {
                assert!(*seq > paused.seq, "#{seq} held before the pause");
                assert!(
                    reason.starts_with(
                        "enforcement paused (circuit breaker: 11 drifts in 1m) until "
                    ),
                    "{reason}"
                );
            }
            other => panic!("#{seq}: {other:?}"),
        }
    }
    for key in &bulk {
        let live = s.live("configmap", &key.name)?.context("bulk exists")?;
        let owner = label(&live, "owner");
        if reverted_keys.contains(key) {
            assert_eq!(owner, None, "{key} was reverted");
        } else {
            assert_eq!(owner, Some("m"), "{key} was held");
        }
    }

    let resumed_after = s.seq();
    let why = "mass relabel understood (INC-9)";
    let resume = ReasonRequest { reason: why.into() };
    let _: Recorded = socket(&s).send(Method::POST, "/v1/resume", &resume).await?;
    wait_record(
        s.ledger(),
        resumed_after,
        PATIENCE,
        "resume",
        |body| matches!(body, RecordBody::Control(Control::Resumed { reason }) if reason.starts_with(why)),
    )
    .await?;
    let first = reverted_keys
        .iter()
        .next()
        .copied()
        .context("a reverted ConfigMap")?;
    let after = s.seq();
    s.kubectl(
        User::Mallory,
        &["label", "configmap", &first.name, "owner=again"],
    )?;
    let drift = s
        .change(first, after, "labelled again", |e| {
            label(&e.object, "owner") == Some("again")
        })
        .await?;
    let (_, enforcement) = s.answer(first, drift.seq).await?;
    reverted_to(&s, &enforcement)?;
    let controls: Vec<LedgerRecord> = records(s.ledger())?
        .into_iter()
        .filter(|r| matches!(r.body, RecordBody::Control(_)))
        .collect();
    assert_eq!(
        controls.len(),
        2,
        "one pause, one resume:\n{}",
        describe(&controls)
    );
    Ok(())
}

/// A break-glass exemption for the Deployment: a scale inside it is
/// allowed and left alone; when it expires the remaining drift is judged
/// again (an amendment) and reverted.
async fn exempted_scale_is_allowed_then_reverted_when_the_exemption_expires(
    bus: Bus,
) -> Result<()> {
    let s = scenario(bus, "exempt", Setup::default(), |ns| vec![team(ns)]).await?;
    let key = s.deployment();
    let grant = GrantRequest {
        key: Some(key.to_string()),
        namespace: None,
        duration: "4s".into(),
        reason: "incident 42: scale by hand".into(),
    };
    let after = s.seq();
    let _: Recorded = socket(&s)
        .send(Method::POST, "/v1/exemptions", &grant)
        .await?;
    let exemption = wait_record(s.ledger(), after, PATIENCE, "exemption", |body| {
        matches!(body, RecordBody::Exemption(e)
            if e.scope == ExemptionScope::Object { key: key.clone() }
                && e.reason == grant.reason
                && e.granted_by.contains("local socket"))
    })
    .await?;
    let RecordBody::Exemption(exemption) = exemption.body else {
        bail!("not an exemption: {exemption:?}");
    };

    let after = s.seq();
    s.kubectl(User::Mallory, &["scale", "deployment/web", "--replicas=4"])?;
    let allowed = s
        .change(&key, after, "scaled to 4", |e| replicas(e) == Some(4))
        .await?;
    s.assert_verdict(
        &key,
        0,
        &allowed,
        &Verdict::Allowed {
            rule: "exemption: incident 42: scale by hand".into(),
        },
    );

    let amendment = wait_record(
        s.ledger(),
        allowed.seq,
        PATIENCE,
        "expiry",
        |body| matches!(body, RecordBody::Amendment(a) if a.key == key),
    )
    .await?;
    let RecordBody::Amendment(Amendment {
        amends, judgement, ..
    }) = &amendment.body
    else {
        bail!("not an amendment");
    };
    assert_eq!(*amends, allowed.seq);
    assert_eq!(judgement.verdict, modified(&["spec.replicas"]));
    assert!(
        amendment.at >= exemption.until,
        "amended at {}",
        amendment.at
    );
    assert_eq!(
        s.enforcements(&key, after)?
            .iter()
            .filter(|(seq, _)| *seq < amendment.seq)
            .count(),
        0,
        "acted inside the exemption:\n{}",
        s.history_since(&key, after)
    );

    let (_, enforcement) = s.answer(&key, amendment.seq).await?;
    reverted_to(&s, &enforcement)?;
    assert_eq!(
        enforcement.action,
        RevertAction::Apply {
            commit: s.head().into()
        }
    );
    s.wait_replicas(2).await
}

/// Objects in a watched namespace that no enforce rule covers are judged
/// but never written.
async fn objects_outside_every_enforce_rule_are_never_written(bus: Bus) -> Result<()> {
    let setup = Setup {
        second_namespace: true,
        ..Setup::default()
    };
    let s = scenario(bus, "scope", setup, |ns| vec![team(ns)]).await?;
    let other = s.other_namespace().to_string();
    let web = key("apps/v1", "Deployment", &other, "web");
    let config = key("v1", "ConfigMap", &other, "web-config");
    let after = s.seq();
    s.kubectl_in(
        &other,
        User::Mallory,
        &["scale", "deployment/web", "--replicas=5"],
    )?;
    s.kubectl_in(
        &other,
        User::Mallory,
        &["label", "configmap", "web-config", "owner=mallory"],
    )?;
    let scaled = s
        .change(&web, after, "scaled out of scope", |e| {
            replicas(e) == Some(5)
        })
        .await?;
    s.assert_verdict(&web, 0, &scaled, &modified(&["spec.replicas"]));
    let labelled = s
        .change(&config, after, "labelled out of scope", |e| {
            label(&e.object, "owner").is_some()
        })
        .await?;
    s.assert_verdict(
        &config,
        0,
        &labelled,
        &out_of_band(&["metadata.labels.owner"]),
    );

    sentinel(&s, "web-config").await?;
    let acted: Vec<LedgerRecord> = records(s.ledger())?
        .into_iter()
        .filter(|r| matches!(&r.body, RecordBody::Enforcement(e) if e.key.namespace == other))
        .collect();
    assert!(
        acted.is_empty(),
        "acted out of scope:\n{}",
        describe(&acted)
    );
    let live = s
        .live_in(&other, "deployment", "web")?
        .context("web exists")?;
    assert_eq!(live.pointer("/spec/replicas"), Some(&json!(5)));
    let live = s
        .live_in(&other, "configmap", "web-config")?
        .context("web-config exists")?;
    assert_eq!(label(&live, "owner"), Some("mallory"));
    Ok(())
}

// ---- races ----

/// Two writers in quick succession (inside the grace): the revert answers
/// the latest write only, guarded by its resourceVersion, and the object
/// ends at its last known-good state.
async fn a_revert_answers_only_the_latest_write(bus: Bus) -> Result<()> {
    let s = scenario(bus, "latest", Setup::default(), |ns| {
        vec![team(ns).with_grace(Duration::from_secs(3))]
    })
    .await?;
    let key = s.config_map("web-config");
    let after = s.seq();
    s.kubectl(
        User::Mallory,
        &["label", "configmap", "web-config", "owner=a"],
    )?;
    s.kubectl(
        User::Alice,
        &["label", "configmap", "web-config", "owner=b", "--overwrite"],
    )?;
    let first = s
        .change(&key, after, "owner=a", |e| {
            label(&e.object, "owner") == Some("a")
        })
        .await?;
    let second = s
        .change(&key, after, "owner=b", |e| {
            label(&e.object, "owner") == Some("b")
        })
        .await?;
    assert_out_of_band_owner(&s, &key, &first);
    assert_out_of_band_owner(&s, &key, &second);

    let (_, enforcement) = s.enforcement(&key, after, "the revert", |_| true).await?;
    assert_eq!(
        enforcement.drift_seq,
        second.seq,
        "answers the latest write:\n{}",
        s.history_since(&key, after)
    );
    assert_eq!(
        enforcement.action,
        RevertAction::Patch {
            patch: json!([{"op": "remove", "path": "/metadata/labels/owner"}]),
            resource_version: second.event.resource_version.clone(),
        }
    );
    reverted_to(&s, &enforcement)?;
    s.wait_live("owner label removed", "configmap", "web-config", |live| {
        live.is_some_and(|cm| label(cm, "owner").is_none())
    })
    .await?;
    assert_eq!(
        s.enforcements(&key, after)?.len(),
        1,
        "one revert:\n{}",
        s.history_since(&key, after)
    );
    Ok(())
}

/// A trusted write landing while an out-of-band change waits out its grace
/// is never clobbered, and does not make the out-of-band change good: the
/// drift is still answered by an enforcement record, and the ledger never
/// takes the hand-added label for the known-good state.
async fn a_trusted_write_during_the_grace_neither_is_clobbered_nor_launders_the_drift(
    bus: Bus,
) -> Result<()> {
    let setup = Setup {
        extra: true,
        ..Setup::default()
    };
    let s = scenario(bus, "launder", setup, |ns| {
        vec![team(ns).with_grace(Duration::from_secs(3))]
    })
    .await?;
    let key = s.config_map("web-config");
    let after = s.seq();
    let drift = owner_labelled(&s, after, User::Mallory, "m").await?;
    s.kubectl(
        User::Admin,
        &[
            "annotate",
            "configmap",
            "web-config",
            "--field-manager=trusted-bot",
            "example.com/scanned=yes",
        ],
    )?;
    let scanned = s
        .change(&key, drift.seq, "scanned annotation", |e| {
            e.object
                .pointer("/metadata/annotations/example.com~1scanned")
                .is_some()
        })
        .await?;
    assert_eq!(manager(&scanned.judgement.actor), Some("trusted-bot"));

    // The sentinel's grace ends after the drift's.
    sentinel(&s, "web-extra").await?;
    let live = s
        .live("configmap", "web-config")?
        .context("web-config exists")?;
    assert_eq!(
        live.pointer("/metadata/annotations/example.com~1scanned"),
        Some(&json!("yes")),
        "the trusted write was clobbered"
    );
    let state = s
        .ledger()
        .object_state(&key)?
        .context("web-config is known")?;
    let good_owner = state
        .last_good
        .as_ref()
        .and_then(|good| label(good, "owner"));
    assert_eq!(
        good_owner,
        None,
        "the hand-added label became the known-good state (record #{:?}); history:\n{}",
        state.last_good_seq,
        s.history_since(&key, after)
    );
    let answers = s.enforcements(&key, after)?;
    assert!(
        !answers.is_empty() || label(&live, "owner").is_none(),
        "the out-of-band label stays, unanswered; history:\n{}",
        s.history_since(&key, after)
    );
    Ok(())
}

on_both_buses! {
    manual_scale_is_reverted_by_applying_git
        => manual_scale_is_reverted_by_applying_git_embedded, manual_scale_is_reverted_by_applying_git_kafka;
    out_of_band_label_is_patched_away
        => out_of_band_label_is_patched_away_embedded, out_of_band_label_is_patched_away_kafka;
    deleted_config_map_is_created_again
        => deleted_config_map_is_created_again_embedded, deleted_config_map_is_created_again_kafka;
    unmanaged_config_map_is_pruned_only_where_prune_is_on
        => unmanaged_config_map_is_pruned_only_where_prune_is_on_embedded, unmanaged_config_map_is_pruned_only_where_prune_is_on_kafka;
    drift_committed_within_the_grace_is_adopted_not_reverted
        => drift_committed_within_the_grace_is_adopted_not_reverted_embedded, drift_committed_within_the_grace_is_adopted_not_reverted_kafka;
    sync_applies_a_new_commit_and_prunes_what_it_removed
        => sync_applies_a_new_commit_and_prunes_what_it_removed_embedded, sync_applies_a_new_commit_and_prunes_what_it_removed_kafka;
    removing_the_label_an_enforce_rule_matches_does_not_escape
        => removing_the_label_an_enforce_rule_matches_does_not_escape_embedded,
           removing_the_label_an_enforce_rule_matches_does_not_escape_kafka;
}

on_the_embedded_bus! {
    dry_run_records_the_revert_and_changes_nothing
        => dry_run_records_the_revert_and_changes_nothing_embedded;
    drift_is_reverted_once_the_grace_is_over
        => drift_is_reverted_once_the_grace_is_over_embedded;
    a_person_in_a_revert_war_is_reverted_in_the_end
        => a_person_in_a_revert_war_is_reverted_in_the_end_embedded;
    a_machine_in_a_revert_war_stops_at_the_flap_limit
        => a_machine_in_a_revert_war_stops_at_the_flap_limit_embedded;
    circuit_breaker_pauses_a_mass_change_until_resumed
        => circuit_breaker_pauses_a_mass_change_until_resumed_embedded;
    exempted_scale_is_allowed_then_reverted_when_the_exemption_expires
        => exempted_scale_is_allowed_then_reverted_when_the_exemption_expires_embedded;
    objects_outside_every_enforce_rule_are_never_written
        => objects_outside_every_enforce_rule_are_never_written_embedded;
    a_revert_answers_only_the_latest_write
        => a_revert_answers_only_the_latest_write_embedded;
    a_trusted_write_during_the_grace_neither_is_clobbered_nor_launders_the_drift
        => a_trusted_write_during_the_grace_neither_is_clobbered_nor_launders_the_drift_embedded;
}

/// The running Driftwarden's local socket, as the command line reaches it.
fn socket(s: &Scenario) -> Client {
    Client::Socket(driftwarden::api::socket_path(&s.config))
}
