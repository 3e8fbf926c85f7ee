//! Nothing on the bus is skipped in silence: a message that does not decode
//! and one of a schema version this build does not read, produced by hand
//! into a running Driftwarden's changes topic, each become a `rejected`
//! ledger record (topic, partition, offset, reason) and a copy in the
//! dead-letter topic, and the changes after them are judged as usual.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use driftwarden_e2e::app::config_map_yaml;
use driftwarden_e2e::scenario::{Bus, BusSettings, PATIENCE, Scenario, wait_record};
use driftwarden_e2e::{User, read_topic};
use model::RecordBody;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_unknown_schemas_are_recorded_and_dead_lettered() -> Result<()> {
    let mut s = Scenario::prepare(Bus::Kafka, "deadletter", &["v1/ConfigMap"]).await?;
    let BusSettings::Kafka {
        brokers,
        topic_prefix,
        ..
    } = s.settings.bus.clone()
    else {
        anyhow::bail!("a Kafka scenario");
    };
    s.start().await?;
    let changes = format!("{topic_prefix}driftwarden.changes.v1");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .context("a producer")?;
    let unknown = r#"{"type":"change","schema":99,"key":{},"uid":"u","resource_version":"1"}"#;
    let after = s.seq();
    for payload in [&b"\x00\xffnot json"[..], unknown.as_bytes()] {
        producer
            .send(
                FutureRecord::<str, [u8]>::to(&changes)
                    .key("by-hand")
                    .payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(err, _)| err)
            .context("producing by hand")?;
    }
    let mut reasons = Vec::new();
    let mut seen = after;
    for _ in 0..2 {
        let found = wait_record(s.ledger(), seen, PATIENCE, "a rejected record", |body| {
            matches!(body, RecordBody::Rejected(_))
        })
        .await?;
        seen = found.seq;
        let RecordBody::Rejected(rejected) = found.body else {
            unreachable!("matched a rejected record");
        };
        ensure!(
            rejected.topic == changes && rejected.offset >= 0,
            "{rejected:?}"
        );
        ensure!(rejected.payload_bytes > 0, "{rejected:?}");
        reasons.push(rejected.reason);
    }
    ensure!(
        reasons.iter().any(|r| r.contains("schema version 99")),
        "{reasons:?}"
    );

    // The pipeline goes on.
    let after = s.seq();
    let ns = s.namespace().to_owned();
    s.create(
        User::Mallory,
        &config_map_yaml(&ns, "after", &[], &[("a", "1")]),
    )?;
    let key = s.config_map("after");
    s.change(&key, after, "a change after the refused ones", |_| true)
        .await?;

    let dead = format!("{topic_prefix}driftwarden.deadletter.v1");
    let kept = read_topic(&brokers, &dead, Duration::from_secs(10))?;
    ensure!(kept.len() == 2, "both kept in {dead}: {}", kept.len());
    for message in &kept {
        let header = |name: &str| {
            message
                .headers
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
        };
        ensure!(
            header(bus::HEADER_SOURCE_TOPIC).as_deref() == Some(changes.as_str()),
            "{:?}",
            message.headers
        );
        ensure!(
            header(bus::HEADER_REASON).is_some(),
            "{:?}",
            message.headers
        );
    }
    s.stop().await;
    Ok(())
}
