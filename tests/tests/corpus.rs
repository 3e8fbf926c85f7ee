//! A realistic platform repository (a few hundred objects of every kind a
//! platform team keeps in git, written in every style found in the wild:
//! see `driftwarden_e2e::corpus`) applied exactly as declared by the GitOps
//! agent: nothing of it may be called drift, whether Driftwarden watched the
//! apply or found the objects already applied when it started. Then a
//! handful of changes by hand are each caught as drift at the right paths.
//!
//! On failure the test lists every declared object judged `drift` or
//! `unmanaged`, with its file, the style and cases it is written in, and the
//! paths judged, desired → live.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use driftwarden_e2e::app::{label, modified, out_of_band, replicas};
use driftwarden_e2e::corpus::{ClusterCleanup, Corpus, CorpusObject};
use driftwarden_e2e::scenario::{Bus, PATIENCE, Scenario, key, records, wait_change, wait_record};
use driftwarden_e2e::{User, logs, unique_suffix};
use model::{ChangeEvent, ChangeKind, DriftKind, ObjectKey, RecordBody, Verdict};
use serde_json::Value;

/// Objects in the repository.
const OBJECTS: usize = 300;

/// kubectl processes applying at once.
const APPLIERS: usize = 3;

/// How long every declared object may take to be judged once applied.
const JUDGED: Duration = Duration::from_secs(180);

/// The scenario with the corpus written and committed (nothing applied,
/// nothing started), and the guard deleting its cluster-scoped objects.
async fn prepare(name: &str) -> Result<(Scenario, Corpus, ClusterCleanup)> {
    logs::to_test_output();
    let mut s = Scenario::prepare(Bus::Embedded, name, &[]).await?;
    // The control plane's controllers are trusted: the one filling in the
    // rules of an aggregated ClusterRole writes under a name of its own.
    s.settings
        .trusted_managers
        .push("clusterrole-aggregation-controller".into());
    s.config = s.settings.config()?;
    let group = format!("w{}.corpus.driftwarden.test", unique_suffix());
    let corpus = Corpus::generate(s.namespace(), &group, OBJECTS)?;
    let cleanup = corpus.cluster_cleanup(s.env);
    corpus.write(&s.repo)?;
    s.commit("platform: every app of the shop (PLAT-1)")?;
    println!(
        "corpus: {} objects in {} files: {:?}; changed by hand: {:?}",
        corpus.objects.len(),
        corpus.files.len(),
        corpus.kinds(),
        corpus.targets
    );
    Ok((s, corpus, cleanup))
}

/// Applies the corpus as the GitOps agent does.
fn apply(s: &Scenario, corpus: &Corpus) -> Result<()> {
    let started = Instant::now();
    tokio::task::block_in_place(|| corpus.apply_as_gitops(s.env, s.repo.path(), APPLIERS))?;
    println!(
        "applied {} objects in {:.1}s",
        corpus.objects.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Waits until every declared object has a judged change in the ledger.
async fn wait_all_judged(s: &Scenario, corpus: &Corpus) -> Result<()> {
    let started = Instant::now();
    let mut missing: BTreeSet<ObjectKey> = corpus.keys().into_iter().collect();
    let mut next = 1;
    loop {
        let ledger = s.ledger();
        while next <= ledger.len() {
            let record = ledger
                .get(next)?
                .with_context(|| format!("the ledger lost record #{next}"))?;
            next += 1;
            if let RecordBody::Change { event, .. } = &record.body {
                missing.remove(&event.key);
            }
        }
        if missing.is_empty() {
            println!(
                "every declared object judged {:.1}s after the wait began",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() >= JUDGED {
            let mut text = String::new();
            for key in &missing {
                let object = corpus.objects.iter().find(|o| &o.key() == key);
                let what = object.map_or_else(|| key.to_string(), CorpusObject::describe);
                text.push_str(&format!("  {what}\n"));
            }
            bail!(
                "{} of {} declared objects have no judged change after {JUDGED:?}:\n{text}",
                missing.len(),
                corpus.objects.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A JSON value on one line, cut short.
fn short(value: Option<&Value>) -> String {
    let text = value.map_or_else(|| "(absent)".to_owned(), Value::to_string);
    if text.chars().count() > 100 {
        format!("{}…", text.chars().take(100).collect::<String>())
    } else {
        text
    }
}

/// Every `drift` and `unmanaged` verdict about a declared object (those
/// about `changed` after record `changed_after` aside), one paragraph each
/// with the paths judged.
fn offenders(
    s: &Scenario,
    corpus: &Corpus,
    changed: &[ObjectKey],
    changed_after: u64,
) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for object in &corpus.objects {
        let key = object.key();
        let by_hand = changed.contains(&key);
        for record in s.ledger().history(&key)? {
            if by_hand && record.seq > changed_after {
                continue;
            }
            let RecordBody::Change { event, judgement } = &record.body else {
                continue;
            };
            if !judgement.verdict.is_drift() && judgement.verdict != Verdict::Unmanaged {
                continue;
            }
            let mut text = format!(
                "{} #{} {:?}: {} by {}\n",
                object.describe(),
                record.seq,
                event.kind,
                judgement.verdict,
                judgement.actor
            );
            for change in &judgement.diff {
                let judged = change
                    .judged
                    .map_or_else(String::new, |j| format!(" [{j:?}]"));
                text.push_str(&format!(
                    "      {}: {} → {}{judged}\n",
                    change.path,
                    short(change.from.as_ref()),
                    short(change.to.as_ref())
                ));
            }
            found.push(text);
        }
    }
    Ok(found)
}

/// Fails listing every offender (see [`offenders`]), with a count per case
/// the offenders are written in.
fn assert_no_false_drift(
    s: &Scenario,
    corpus: &Corpus,
    changed: &[ObjectKey],
    changed_after: u64,
) -> Result<()> {
    let found = offenders(s, corpus, changed, changed_after)?;
    if found.is_empty() {
        return Ok(());
    }
    let mut by_case: BTreeMap<String, usize> = BTreeMap::new();
    for object in &corpus.objects {
        if found
            .iter()
            .any(|text| text.starts_with(&object.describe()))
        {
            let case = if object.has_reader_case() {
                "carries a case the manifest reader decides".to_owned()
            } else {
                format!("{} ({})", object.kind, object.cases.join(", "))
            };
            *by_case.entry(case).or_default() += 1;
        }
    }
    bail!(
        "{} verdicts of drift or unmanaged about declared objects applied as declared \
         (objects by case: {by_case:?}):\n{}",
        found.len(),
        found.join("")
    )
}

/// The value of env `name` of container `container` of a Deployment.
fn env_value<'a>(event: &'a ChangeEvent, container: &str, name: &str) -> Option<&'a str> {
    event
        .object
        .pointer("/spec/template/spec/containers")?
        .as_array()?
        .iter()
        .find(|c| c["name"] == container)?
        .get("env")?
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?
        .get("value")?
        .as_str()
}

/// The objects [`changes_by_hand_are_drift`] changes.
fn changed_by_hand(s: &Scenario, corpus: &Corpus) -> Vec<ObjectKey> {
    let ns = s.namespace();
    let t = &corpus.targets;
    vec![
        key("apps/v1", "Deployment", ns, &t.scale),
        key("apps/v1", "Deployment", ns, &t.label),
        key("apps/v1", "Deployment", ns, &t.set_env.0),
        key("v1", "ConfigMap", ns, &t.config_map),
        key("v1", "Secret", ns, &t.secret),
        key("v1", "Service", ns, &t.service),
    ]
}

/// Mallory's changes by hand, each caught as drift at its paths.
async fn changes_by_hand_are_drift(s: &Scenario, corpus: &Corpus) -> Result<()> {
    let ns = s.namespace().to_owned();
    let t = &corpus.targets;
    let deployment = |name: &str| key("apps/v1", "Deployment", &ns, name);

    let scaled = deployment(&t.scale);
    let after = s.seq();
    s.kubectl(
        User::Mallory,
        &["scale", &format!("deployment/{}", t.scale), "--replicas=7"],
    )?;
    let found = s
        .change(&scaled, after, "scaled to 7 by hand", |e| {
            replicas(e) == Some(7)
        })
        .await?;
    s.assert_verdict(&scaled, after, &found, &modified(&["spec.replicas"]));

    let labelled = deployment(&t.label);
    let after = s.seq();
    s.kubectl(
        User::Mallory,
        &["label", &format!("deployment/{}", t.label), "owner=mallory"],
    )?;
    let found = s
        .change(&labelled, after, "labelled by hand", |e| {
            label(&e.object, "owner") == Some("mallory")
        })
        .await?;
    s.assert_verdict(
        &labelled,
        after,
        &found,
        &out_of_band(&["metadata.labels.owner"]),
    );

    let config = key("v1", "ConfigMap", &ns, &t.config_map);
    let after = s.seq();
    s.kubectl(
        User::Mallory,
        &[
            "patch",
            &format!("configmap/{}", t.config_map),
            "--type=merge",
            "-p",
            r#"{"data":{"LOG_LEVEL":"debug"}}"#,
        ],
    )?;
    let found = s
        .change(&config, after, "LOG_LEVEL changed by hand", |e| {
            e.object.pointer("/data/LOG_LEVEL") == Some(&Value::from("debug"))
        })
        .await?;
    s.assert_verdict(&config, after, &found, &modified(&["data.LOG_LEVEL"]));

    let secret = key("v1", "Secret", &ns, &t.secret);
    let after = s.seq();
    s.kubectl(
        User::Mallory,
        &[
            "patch",
            &format!("secret/{}", t.secret),
            "--type=merge",
            "-p",
            r#"{"stringData":{"password":"changed-by-hand"}}"#,
        ],
    )?;
    let found = wait_change(
        s.ledger(),
        &secret,
        after,
        PATIENCE,
        "password changed by hand",
        |_, judgement| judgement.verdict.is_drift(),
    )
    .await?;
    s.assert_verdict(&secret, after, &found, &modified(&["data.password"]));

    let (env_target, container) = &t.set_env;
    let with_env = deployment(env_target);
    let after = s.seq();
    s.kubectl(
        User::Mallory,
        &[
            "set",
            "env",
            &format!("deployment/{env_target}"),
            "-c",
            container,
            "LOG_LEVEL=debug",
        ],
    )?;
    let found = s
        .change(&with_env, after, "env set by hand", |e| {
            env_value(e, container, "LOG_LEVEL") == Some("debug")
        })
        .await?;
    let env_path =
        format!("spec.template.spec.containers[name={container}].env[name=LOG_LEVEL].value");
    s.assert_verdict(&with_env, after, &found, &modified(&[&env_path]));

    let service = key("v1", "Service", &ns, &t.service);
    let after = s.seq();
    s.kubectl(
        User::Mallory,
        &["delete", &format!("service/{}", t.service)],
    )?;
    let found = s
        .change(&service, after, "deleted by hand", |e| {
            e.kind == ChangeKind::Deleted
        })
        .await?;
    s.assert_verdict(
        &service,
        after,
        &found,
        &Verdict::Drift {
            drift: DriftKind::Deleted,
        },
    );

    Ok(())
}

/// The changes by hand are caught, and no other verdict about a declared
/// object, before or after them, is drift or unmanaged (that failure is
/// reported first).
async fn judged_as_declared_then_changed_by_hand(s: &Scenario, corpus: &Corpus) -> Result<()> {
    let before = s.seq();
    let by_hand = changes_by_hand_are_drift(s, corpus).await;
    // Every record so far, the changes by hand and what followed them aside.
    let as_declared = assert_no_false_drift(s, corpus, &changed_by_hand(s, corpus), before);
    match (as_declared, by_hand) {
        (Err(false_drift), Err(by_hand)) => {
            Err(false_drift.context(format!("and the changes by hand: {by_hand:#}")))
        }
        (Err(false_drift), Ok(())) => {
            Err(false_drift.context("the changes by hand were each caught as drift"))
        }
        (Ok(()), by_hand) => by_hand,
    }
}

/// Driftwarden runs first and watches the GitOps agent apply the whole
/// repository: every object is created as git says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_applied_while_watched_is_never_drift() -> Result<()> {
    let (mut s, corpus, _cleanup) = prepare("corpus-watched").await?;
    s.start().await?;
    let head = s.head().to_owned();
    wait_record(
        s.ledger(),
        0,
        PATIENCE,
        "the corpus commit synced",
        |body| matches!(body, RecordBody::GitSync(sync) if sync.commit.id == head),
    )
    .await?;
    // A ConfigMap git does not declare: once its creation is judged, the
    // watchers have listed and the apply is watched as it happens.
    s.kubectl(
        User::Admin,
        &["create", "configmap", "corpus-probe", "--from-literal=a=b"],
    )?;
    let probe = key("v1", "ConfigMap", s.namespace(), "corpus-probe");
    s.change(&probe, 0, "the probe judged", |_| true).await?;

    apply(&s, &corpus)?;
    wait_all_judged(&s, &corpus).await?;
    let declared: BTreeSet<ObjectKey> = corpus.keys().into_iter().collect();
    let added = records(s.ledger())?
        .iter()
        .filter(|r| {
            matches!(&r.body, RecordBody::Change { event, .. }
                if event.kind == ChangeKind::Added && declared.contains(&event.key))
        })
        .count();
    println!(
        "{added} of {} objects seen as they were added",
        declared.len()
    );
    judged_as_declared_then_changed_by_hand(&s, &corpus).await
}

/// The repository is applied first; Driftwarden starts on a cluster that
/// holds it and finds every object as git declares it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_found_applied_at_start_is_never_drift() -> Result<()> {
    let (mut s, corpus, _cleanup) = prepare("corpus-found").await?;
    apply(&s, &corpus)?;
    let started = Instant::now();
    s.start().await?;
    wait_all_judged(&s, &corpus).await?;
    println!(
        "initial sync of {} objects: {:.1}s",
        corpus.objects.len(),
        started.elapsed().as_secs_f64()
    );
    judged_as_declared_then_changed_by_hand(&s, &corpus).await
}
