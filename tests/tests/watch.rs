//! Watching end to end: kinds whose CRD arrives after Driftwarden started,
//! the watch role's memory of what it published across its own restarts,
//! and the order of one object's changes on a Kafka topic with several
//! partitions.
//!
//! CRDs are cluster-wide and tests run in parallel, so every test that makes
//! one gives it a group of its own and deletes it at the end (also when it
//! fails).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use driftwarden::run::{Role, Running};
use driftwarden_e2e::app::{config_map_yaml, modified};
use driftwarden_e2e::scenario::{
    Bus, CLUSTER, PATIENCE, Scenario, TestCrd, describe, key, records, wait_change,
};
use driftwarden_e2e::{TestEnv, User, eventually, read_topic};
use model::{ChangeKind, DriftKind, ObjectKey, Verdict};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resource_declared_before_its_crd_exists_is_judged_once_the_crd_arrives()
-> Result<()> {
    const FILE: &str = "apps/widgets/gear.yaml";
    let mut s = Scenario::prepare(Bus::Embedded, "watch-late-crd", &[]).await?;
    let ns = s.namespace().to_string();
    let mut crd = TestCrd::widgets();
    s.repo.write(FILE, &crd.object_yaml(&ns, "gear", 1))?;
    s.commit("a widget, before its CRD is installed")?;
    s.start().await?;
    let gear = key(&crd.api_version(), "Widget", &ns, "gear");
    // Driftwarden runs, watching a kind that does not resolve yet.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let scratch = tempfile::tempdir()?;
    let created = Instant::now();
    crd.create(scratch.path())?;
    let established = created.elapsed();
    s.apply_as_gitops(&[FILE])?;
    let applied = created.elapsed();
    let first = s
        .change(&gear, 0, "the widget's creation", |_| true)
        .await?;
    let judged = created.elapsed();
    println!(
        "CRD created → established {:.0} ms, applied {:.0} ms, first widget change judged {:.0} ms",
        established.as_secs_f64() * 1e3,
        applied.as_secs_f64() * 1e3,
        judged.as_secs_f64() * 1e3,
    );
    let head = s.head().to_string();
    s.assert_verdict(&gear, 0, &first, &Verdict::Authorized { commit: head });
    ensure!(
        matches!(first.event.kind, ChangeKind::Added | ChangeKind::Resync),
        "{:?}",
        first.event.kind
    );

    crd.grant_editing(&s.ns, User::Mallory)?;
    let before = s.seq();
    let widget = format!("{}/gear", crd.name());
    s.kubectl(
        User::Mallory,
        &[
            "patch",
            &widget,
            "--type=merge",
            "-p",
            r#"{"spec":{"size":5}}"#,
        ],
    )?;
    let edit = s
        .change(&gear, before, "mallory's edit", |e| {
            e.kind == ChangeKind::Modified && e.object.pointer("/spec/size") == Some(&json!(5))
        })
        .await?;
    s.assert_verdict(&gear, before, &edit, &modified(&["spec.size"]));
    s.stop().await;
    Ok(())
}

/// Starts Driftwarden's `role` on `config`.
async fn start(config: &driftwarden::config::Config, role: Role) -> Result<Running> {
    driftwarden::run::start(config.clone(), role)
        .await
        .with_context(|| format!("starting --role {role:?}"))
}

/// Whether the watch role's file of published objects, under `data_dir`,
/// names `key`.
fn published(data_dir: &std::path::Path, key: &ObjectKey) -> Result<bool> {
    let path = data_dir.join("watch").join(watch::known::FILE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let known = watch::KnownObjects::from_json(&bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(known.objects().iter().any(|object| &object.key == key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_role_reports_a_deletion_made_while_it_was_down() -> Result<()> {
    const FILE: &str = "apps/settings/configmap.yaml";
    let mut s = Scenario::prepare(Bus::Kafka, "watch-role-gap", &["v1/ConfigMap"]).await?;
    let ns = s.namespace().to_string();
    s.repo.write(
        FILE,
        &config_map_yaml(&ns, "settings", &[("app", "shop")], &[("mode", "on")]),
    )?;
    s.commit("declared settings")?;
    s.apply_as_gitops(&[FILE])?;

    // Two processes' worth of Driftwarden on one Kafka: the correlator with
    // the ledger, the watchers with a data directory of their own that does
    // not exist yet.
    let scratch = tempfile::tempdir()?;
    let mut watch_settings = s.settings.clone();
    watch_settings.data_dir = scratch.path().join("watch-role").join("data");
    let watch_config = watch_settings.config()?;
    // Both roles run as the scenario's ServiceAccount; their configs differ
    // only in `data_dir`, so one binding serves both.
    let config = s.config.clone();
    s.bind(&config).await?;
    let correlator = start(&s.config, Role::Correlate).await?;
    let ledger = correlator
        .ledger
        .clone()
        .context("the correlate role has a ledger")?;
    let watcher = start(&watch_config, Role::Watch).await?;

    let settings = s.config_map("settings");
    wait_change(&ledger, &settings, 0, PATIENCE, "first record", |_, _| true).await?;
    eventually(
        PATIENCE,
        "the watch role's record of what it published",
        || async { Ok(published(&watch_config.data_dir, &settings)?.then_some(())) },
    )
    .await?;
    watcher.stop().await;

    let after = ledger.len();
    s.kubectl(User::Mallory, &["delete", "configmap", "settings"])?;
    let watcher = start(&watch_config, Role::Watch).await?;
    let deleted = wait_change(
        &ledger,
        &settings,
        after,
        PATIENCE,
        "the deletion made while the watch role was down",
        |event, _| event.kind == ChangeKind::Deleted,
    )
    .await?;
    assert_eq!(
        deleted.judgement.verdict,
        Verdict::Drift {
            drift: DriftKind::Deleted
        },
        "records:\n{}",
        describe(&records(&ledger)?)
    );
    eventually(
        PATIENCE,
        "the deletion forgotten by the watch role",
        || async { Ok((!published(&watch_config.data_dir, &settings)?).then_some(())) },
    )
    .await?;
    watcher.stop().await;
    correlator.stop().await;
    Ok(())
}

/// One change read back from the changes topic.
#[derive(Debug, Clone)]
struct OnTopic {
    partition: i32,
    /// The message's key.
    key: String,
    /// The key of the object the change is about.
    object: String,
    uid: String,
    kind: ChangeKind,
}

/// Every change on `topic`.
async fn changes_on(brokers: &str, topic: &str) -> Result<Vec<OnTopic>> {
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    let messages =
        tokio::task::spawn_blocking(move || read_topic(&brokers, &topic, Duration::from_secs(10)))
            .await??;
    messages
        .into_iter()
        .map(|message| {
            let decoded: bus::Message = serde_json::from_slice(&message.payload)?;
            let bus::Message::Change(event) = decoded else {
                bail!("not a change: {decoded:?}");
            };
            Ok(OnTopic {
                partition: message.partition,
                key: String::from_utf8(message.key)?,
                object: event.key.to_string(),
                uid: event.uid,
                kind: event.kind,
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_objects_changes_across_delete_and_re_create_share_a_partition_in_order() -> Result<()>
{
    const FILE: &str = "apps/marker/configmap.yaml";
    const PARTITIONS: i32 = 8;
    let env = TestEnv::get();
    let mut s = Scenario::prepare(Bus::Kafka, "watch-partitions", &["v1/ConfigMap"]).await?;
    let ns = s.namespace().to_string();
    s.repo
        .write(FILE, &config_map_yaml(&ns, "marker", &[], &[("k", "v")]))?;
    s.commit("a marker")?;
    s.apply_as_gitops(&[FILE])?;
    let mut config = s.config.clone();
    let driftwarden::config::Bus::Kafka {
        topic_prefix,
        partitions,
        ..
    } = &mut config.bus
    else {
        bail!("the scenario runs on Kafka");
    };
    *partitions = PARTITIONS;
    let topic = bus::Topics::new(topic_prefix)?.changes;
    // The watch role alone: nothing consumes, the topic keeps everything.
    s.bind(&config).await?;
    let watcher = start(&config, Role::Watch).await?;
    let marker = s.config_map("marker").to_string();
    eventually(PATIENCE, "the marker's resync on the topic", || async {
        let changes = changes_on(&env.kafka_brokers, &topic)
            .await
            .unwrap_or_default();
        Ok(changes.iter().any(|c| c.object == marker).then_some(()))
    })
    .await?;

    let names: Vec<String> = (0..6).map(|i| format!("twice-{i}")).collect();
    for name in &names {
        s.kubectl(User::Mallory, &["create", "configmap", name])?;
        s.kubectl(User::Mallory, &["delete", "configmap", name])?;
        s.kubectl(User::Mallory, &["create", "configmap", name])?;
    }
    let keys: Vec<String> = names.iter().map(|n| s.config_map(n).to_string()).collect();
    let changes = eventually(PATIENCE, "three changes of every object", || async {
        let changes = changes_on(&env.kafka_brokers, &topic).await?;
        let complete = keys
            .iter()
            .all(|key| changes.iter().filter(|c| &c.object == key).count() >= 3);
        Ok(complete.then_some(changes))
    })
    .await?;
    watcher.stop().await;

    let mut partitions_used = std::collections::BTreeSet::new();
    for key in &keys {
        let mine: Vec<&OnTopic> = changes.iter().filter(|c| &c.object == key).collect();
        let partition = mine[0].partition;
        partitions_used.insert(partition);
        ensure!(
            mine.iter().all(|c| c.partition == partition),
            "{key} is spread over partitions: {mine:?}"
        );
        let kinds: Vec<ChangeKind> = mine.iter().map(|c| c.kind).collect();
        ensure!(
            kinds == [ChangeKind::Added, ChangeKind::Deleted, ChangeKind::Added],
            "{key}: {mine:?}"
        );
        ensure!(
            mine[0].uid == mine[1].uid && mine[1].uid != mine[2].uid,
            "a delete and a re-create: {mine:?}"
        );
        ensure!(
            mine.iter().all(|c| &c.key == key),
            "messages are keyed by their object's key: {mine:?}"
        );
        ensure!(key.starts_with(&format!("{CLUSTER}/core/ConfigMap/{ns}/")));
    }
    println!(
        "{} objects on partitions {partitions_used:?} of {PARTITIONS}",
        keys.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_scoped_crds_kind_is_listed_once_the_crd_is_created() -> Result<()> {
    let env = TestEnv::get();
    let client = env.client(User::Admin).await?;
    let (mut crds, watching) = watch::watch_crds(client.clone());
    let watching = tokio::spawn(watching);
    let crd = TestCrd::gadgets();
    let gadget = (crd.group.clone(), "Gadget".to_string());

    let before = watch::discovery::cluster_scoped_kinds(&client).await?;
    let namespace = (String::new(), "Namespace".to_string());
    ensure!(before.contains(&namespace), "{before:?}");
    ensure!(
        before.contains(&(
            "rbac.authorization.k8s.io".to_string(),
            "ClusterRole".to_string()
        )),
        "{before:?}"
    );
    ensure!(
        !before.iter().any(|(_, kind)| kind == "ConfigMap"),
        "namespaced kinds are not listed: {before:?}"
    );
    ensure!(!before.contains(&gadget), "{before:?}");

    // The first listing of CRDs counts as a change.
    tokio::time::timeout(PATIENCE, crds.wait_for(|generation| *generation > 0)).await??;
    let seen = *crds.borrow_and_update();
    let scratch = tempfile::tempdir()?;
    crd.create(scratch.path())?;
    tokio::time::timeout(PATIENCE, crds.changed())
        .await
        .context("no CRD change reported")??;
    ensure!(*crds.borrow() > seen);

    let after = eventually(PATIENCE, "the gadget kind in discovery", || async {
        let kinds = watch::discovery::cluster_scoped_kinds(&client).await?;
        Ok(kinds.contains(&gadget).then_some(kinds))
    })
    .await?;
    ensure!(after.contains(&namespace));
    drop(crds);
    tokio::time::timeout(PATIENCE, watching)
        .await
        .context("the CRD watch ends once nobody listens")??;
    Ok(())
}
