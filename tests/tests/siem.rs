//! The SIEM stream on the environment's Kafka: one message per verdict on
//! `driftwarden.verdicts.v1`, each valid against the JSON Schema checked in
//! under `config/schemas/`, and the same verdicts as OCSF "API Activity"
//! events; a Secret's value is in neither.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use driftwarden::config::Config;
use driftwarden_e2e::User;
use driftwarden_e2e::app::config_map_yaml;
use driftwarden_e2e::scenario::{Bus, BusSettings, Scenario, records};
use model::RecordBody;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use serde_json::{Value, json};

const CANARY: &str = "canary-51e0c2aa-never-on-the-siem-stream";

/// Every message of `topic`, read from its start until `count` arrived
/// (or a minute passed).
fn read_topic(brokers: &str, topic: &str, count: usize) -> Result<Vec<Value>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while out.len() < count {
        if Instant::now() >= deadline {
            bail!("{} of {count} messages on {topic}", out.len());
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let payload = message?.payload().unwrap_or_default().to_vec();
        let text = String::from_utf8(payload).context("a message is not UTF-8")?;
        ensure!(!text.contains(CANARY), "a Secret's value on {topic}");
        out.push(serde_json::from_str(&text).context("a message is not JSON")?);
    }
    // Nothing more than one per verdict.
    let extra = consumer.poll(Duration::from_secs(2));
    ensure!(extra.is_none(), "more messages than verdicts on {topic}");
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verdict_is_one_message_valid_against_the_schema() -> Result<()> {
    driftwarden_e2e::logs::to_test_output();
    let mut s = Scenario::prepare(Bus::Kafka, "siem", &["v1/ConfigMap", "v1/Secret"]).await?;
    s.with_audit_webhook()?;
    let yaml = config_map_yaml(s.namespace(), "settings", &[], &[("level", "info")]);
    s.repo.write("apps/settings.yaml", &yaml)?;
    s.commit("Declare settings (SEC-12)")?;
    s.apply_as_gitops(&["apps/settings.yaml"])?;
    let text = format!("{}siem:\n  ocsf: true\n", s.settings.yaml());
    s.config = Config::parse(Path::new("siem.yaml"), &text)?;
    s.start().await?;
    s.wait_first_records(&[s.config_map("settings")]).await?;
    let patch = json!({"data": {"level": "debug"}}).to_string();
    s.kubectl(
        User::Mallory,
        &["patch", "configmap", "settings", "-p", &patch],
    )?;
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: leak\n  namespace: {}\nstringData:\n  password: {CANARY}\n",
        s.namespace()
    );
    s.create(User::Alice, &secret)?;
    let leak = driftwarden_e2e::scenario::key("v1", "Secret", s.namespace(), "leak");
    s.wait_first_records(&[leak]).await?;
    // Let attributions and amendments settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let verdicts = {
        let records = records(s.ledger())?;
        records
            .iter()
            .filter(|r| matches!(r.body, RecordBody::Change { .. } | RecordBody::Amendment(_)))
            .map(|r| r.seq)
            .collect::<Vec<u64>>()
    };
    ensure!(verdicts.len() >= 3, "verdicts: {verdicts:?}");
    let BusSettings::Kafka {
        brokers,
        topic_prefix,
        ..
    } = &s.settings.bus
    else {
        bail!("a Kafka scenario");
    };
    let topic = format!("{topic_prefix}driftwarden.verdicts.v1");
    let messages = read_topic(brokers, &topic, verdicts.len())?;
    let seqs: Vec<u64> = messages
        .iter()
        .map(|m| m["seq"].as_u64().context("a seq"))
        .collect::<Result<_>>()?;
    ensure!(
        seqs == verdicts,
        "published {seqs:?}, recorded {verdicts:?}"
    );
    let schema_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/schemas/verdict.v1.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&schema_path)?)?;
    let validator = jsonschema::validator_for(&schema).context("the schema compiles")?;
    for message in &messages {
        let errors: Vec<String> = validator
            .iter_errors(message)
            .map(|e| e.to_string())
            .collect();
        ensure!(errors.is_empty(), "{message}: {errors:?}");
    }
    let drift = messages
        .iter()
        .find(|m| m["verdict"] == "drift_modified")
        .context("the drift on the stream")?;
    ensure!(drift["object"]["name"] == "settings", "{drift}");
    // The identity from the audit event, though it came after the verdict.
    ensure!(
        drift["actor"]["source"] == "audit" && drift["actor"]["user"] == "mallory",
        "{drift}"
    );
    ensure!(
        messages
            .iter()
            .any(|m| m["verdict"] == "unmanaged" && m["object"]["kind"] == "Secret"),
        "the stray Secret on the stream"
    );

    let ocsf_topic = format!("{topic_prefix}driftwarden.verdicts.ocsf.v1");
    let events = read_topic(brokers, &ocsf_topic, verdicts.len())?;
    for event in &events {
        ensure!(
            event["class_uid"] == 6003 && event["category_uid"] == 6,
            "{event}"
        );
        let activity = event["activity_id"].as_u64().context("activity_id")?;
        ensure!(event["type_uid"] == 600300 + activity, "{event}");
        ensure!(
            event["metadata"]["product"]["name"] == "Driftwarden",
            "{event}"
        );
    }
    let drift_event = events
        .iter()
        .find(|e| e["unmapped"]["driftwarden"]["verdict"] == "drift_modified")
        .context("the drift as OCSF")?;
    ensure!(
        drift_event["severity_id"] == 4,
        "drift is High: {drift_event}"
    );
    ensure!(drift_event["activity_id"] == 3, "an update: {drift_event}");
    ensure!(
        drift_event["actor"]["user"]["name"] == "mallory",
        "{drift_event}"
    );
    s.stop().await;
    Ok(())
}
