//! Kafka as a test sees it: every message of a topic, and whether the
//! broker answers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::unique_suffix;

/// One Kafka message: key and payload (empty when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaMessage {
    /// The partition it was read from.
    pub partition: i32,
    /// Its key.
    pub key: Vec<u8>,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Every message of `topic` on every partition, from the first to the last
/// one present when called. Blocks: call it from `spawn_blocking`.
pub fn read_topic(brokers: &str, topic: &str, timeout: Duration) -> Result<Vec<KafkaMessage>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("e2e-reader-{}", unique_suffix()))
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a Kafka consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("metadata of topic {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        bail!("topic {topic} has no partitions: does it exist?");
    }
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .with_context(|| format!("watermarks of {topic}/{partition}"))?;
        if high > low {
            ends.insert(partition, high);
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + timeout;
    let mut messages = Vec::new();
    while !ends.is_empty() {
        if Instant::now() >= deadline {
            bail!(
                "read {} messages of {topic} within {timeout:?}; partitions {:?} not to their end",
                messages.len(),
                ends.keys().collect::<Vec<_>>()
            );
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.with_context(|| format!("reading {topic}"))?;
        let partition = message.partition();
        messages.push(KafkaMessage {
            partition,
            key: message.key().unwrap_or_default().to_vec(),
            payload: message.payload().unwrap_or_default().to_vec(),
        });
        if ends
            .get(&partition)
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(&partition);
        }
    }
    Ok(messages)
}

/// Whether the broker at `brokers` answers a metadata request listing a
/// broker.
pub fn kafka_answers(brokers: &str) -> bool {
    let consumer: Result<BaseConsumer, _> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("log_level", "0")
        .create();
    consumer
        .ok()
        .and_then(|c| c.fetch_metadata(None, Duration::from_secs(2)).ok())
        .is_some_and(|metadata| !metadata.brokers().is_empty())
}
