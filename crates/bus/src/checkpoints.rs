//! Signed ledger checkpoints on Kafka: the chain head anchored off the host.
//!
//! ```text
//! ledger checkpoint thread ──publish (queued, never blocks)──▶ producer thread ──▶ <prefix>driftwarden.checkpoints.v1
//! verify ──latest_checkpoints──▶ consumer assigned at the end of each partition ──▶ its last payload
//! ```
//!
//! The bus carries checkpoints as opaque bytes: the ledger signs and encodes
//! them, the binary decodes and checks what comes back, and this crate
//! never depends on the ledger. The embedded bus has no Kafka and carries
//! no checkpoints: with it, `checkpoints.jsonl` beside the ledger is the
//! only anchor (keep a copy elsewhere).
//!
//! The topic ([`new_topic`]) has one partition, so its last message is the
//! latest checkpoint, and keeps every message forever: `cleanup.policy`
//! `delete` with `retention.ms` and `retention.bytes` of `-1`. Compaction
//! would keep one checkpoint per key and lose the history that shows a
//! chain head moving backwards; a finite retention would, after a quiet
//! spell longer than it, leave no checkpoint to compare with. A checkpoint
//! is a few hundred bytes, written at most once a minute (only when the
//! head moved) and at shutdown: under 200 MB a year.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;
use tracing::{debug, warn};

use crate::kafka::{BusContext, kafka, producer_client};
use crate::{Error, KafkaConfig, MAX_MESSAGE_BYTES, Position, Result, Topics};

/// How long dropping a [`TopicPublisher`] waits for the checkpoints
/// still queued (the last one, at shutdown) to be acknowledged.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How many messages before the end of a partition are read, so that the
/// last checkpoint is found even behind a message that is no checkpoint
/// (a control record).
const TAIL_MESSAGES: i64 = 16;

/// How long one poll of the reading consumer blocks.
const POLL: Duration = Duration::from_millis(100);

/// The checkpoint topic `name` as [`crate::ensure_topics`] creates it: one
/// partition, deleting nothing (`retention.ms` and `retention.bytes` of
/// `-1`), as the module documentation explains.
pub(crate) fn new_topic(name: &str) -> NewTopic<'_> {
    NewTopic::new(name, 1, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "delete")
        .set("retention.ms", "-1")
        .set("retention.bytes", "-1")
}

/// The context of the checkpoint producer: the bus's logging, and a
/// warning for each checkpoint the broker did not take.
#[derive(Clone, Default)]
struct TopicContext(BusContext);

impl ClientContext for TopicContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.0.log(level, facility, message);
    }

    fn error(&self, err: KafkaError, reason: &str) {
        self.0.error(err, reason);
    }
}

impl ProducerContext for TopicContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        match result {
            Ok(message) => debug!(
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                "message published"
            ),
            Err((err, message)) => warn!(
                topic = message.topic(),
                error = %err,
                "kafka did not accept a message (a checkpoint stays anchored beside the ledger; a verdict is published again after a restart)"
            ),
        }
    }
}

/// Publishes signed ledger checkpoints to `<prefix>driftwarden.checkpoints.v1`
/// without ever blocking the caller: the ledger's checkpoint thread calls
/// it. A producer of its own (idempotent, `acks=all`, as every producer of
/// the bus) with a thread polling for the brokers' answers; a checkpoint
/// Kafka does not take is logged (`warn`), never retried by the caller.
///
/// Dropping it waits up to 10 s for the checkpoints still queued, so the
/// one written at shutdown leaves the host before the process ends.
///
/// The topic has one partition, so its last message is the latest
/// checkpoint, and deletes nothing (`cleanup.policy=delete`,
/// `retention.ms=-1`, `retention.bytes=-1`): compaction would keep one
/// checkpoint per key and lose the history that shows a chain head moving
/// backwards, and a finite retention would leave nothing to compare with
/// after a quiet spell. The embedded bus has no Kafka and publishes no
/// checkpoints: there `checkpoints.jsonl` beside the ledger is the anchor.
pub struct TopicPublisher {
    producer: ThreadedProducer<TopicContext>,
    topic: String,
}

impl std::fmt::Debug for TopicPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicPublisher")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl TopicPublisher {
    /// A publisher to the checkpoint topic under `config.prefix` (which
    /// [`crate::ensure_topics`] creates).
    pub fn new(config: &KafkaConfig) -> Result<Self> {
        Self::to(config, Topics::new(&config.prefix)?.checkpoints)
    }

    /// A publisher to `topic` (its whole name, prefix included).
    pub fn to(config: &KafkaConfig, topic: String) -> Result<Self> {
        let producer = producer_client(config)?
            .create_with_context(TopicContext::default())
            .map_err(kafka("create a producer"))?;
        Ok(Self { producer, topic })
    }

    /// The topic it publishes to, with its prefix.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Queues checkpoint `payload` under `key` (e.g. the signing key) and
    /// returns at once; the broker's answer is logged when it comes. Fails
    /// only when the checkpoint cannot be queued: [`Error::TooLarge`], or
    /// [`Error::Delivery`] (e.g. the producer's queue is full while Kafka
    /// is unreachable).
    pub fn publish(&self, key: &[u8], payload: &[u8]) -> Result<()> {
        let record = BaseRecord::to(&self.topic).key(key).payload(payload);
        self.producer
            .send(record)
            .map_err(|(source, _)| match source.rdkafka_error_code() {
                Some(
                    RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge,
                ) => Error::TooLarge {
                    topic: self.topic.clone(),
                    bytes: payload.len(),
                    source,
                },
                _ => Error::Delivery {
                    topic: self.topic.clone(),
                    source,
                },
            })
    }

    /// Waits up to `timeout` until the brokers answered for every queued
    /// checkpoint. Blocks: not for async code.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.producer
            .flush(Timeout::After(timeout))
            .map_err(|source| Error::Delivery {
                topic: self.topic.clone(),
                source,
            })
    }
}

impl Drop for TopicPublisher {
    fn drop(&mut self) {
        // The producer drops what is still queued: send it first.
        if let Err(err) = self.flush(FLUSH_TIMEOUT) {
            warn!(
                topic = %self.topic,
                error = %err,
                "ledger checkpoints still queued for kafka when it stopped are lost there"
            );
        }
    }
}

/// A message of the checkpoint topic, as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Where it sits.
    pub position: Position,
    /// Its key (`None` when it had none).
    pub key: Option<Vec<u8>>,
    /// Its payload (empty when it had none).
    pub payload: Vec<u8>,
}

/// The last message of each partition of the checkpoint topic under
/// `config.prefix`: one message (the latest checkpoint) from the topic
/// [`crate::ensure_topics`] creates, none when the topic is missing or
/// empty. Reads with a short-lived consumer assigned to the partitions
/// near their end, as group `config.group_id` but without joining it or
/// committing anything.
///
/// Gives up after `wait` in all: unreachable brokers are an
/// [`Error::Kafka`], a partition not read to its end in time an
/// [`Error::Timeout`]; refused credentials are [`Error::Refused`].
pub async fn latest_checkpoints(
    config: &KafkaConfig,
    wait: Duration,
) -> Result<Vec<StoredCheckpoint>> {
    last_messages(config, Topics::new(&config.prefix)?.checkpoints, wait).await
}

/// The last message of each partition of `topic` (its whole name), read as
/// [`latest_checkpoints`] reads the checkpoint topic.
pub async fn last_messages(
    config: &KafkaConfig,
    topic: String,
    wait: Duration,
) -> Result<Vec<StoredCheckpoint>> {
    let context = BusContext::default();
    let mut client = config.client()?;
    client
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "10")
        .set("max.partition.fetch.bytes", MAX_MESSAGE_BYTES.to_string())
        .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string());
    let consumer: BaseConsumer<BusContext> = client
        .create_with_context(context.clone())
        .map_err(kafka("create the checkpoint reader"))?;
    let brokers = config.brokers.clone();
    let read = tokio::task::spawn_blocking(move || {
        let refused = |err: Error| match context.refusal() {
            Some((kind, reason)) => Error::Refused {
                brokers: brokers.clone(),
                kind,
                reason,
            },
            None => err,
        };
        read_last(&consumer, &topic, wait).map_err(refused)
    });
    read.await.map_err(|_| Error::Closed)?
}

/// `fetch`, tried again until `deadline` while the partition has no leader
/// yet (a topic just created, or a leader moving).
fn once_led<T>(
    deadline: Instant,
    mut fetch: impl FnMut() -> rdkafka::error::KafkaResult<T>,
) -> rdkafka::error::KafkaResult<T> {
    loop {
        match fetch() {
            Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::NotLeaderForPartition | RDKafkaErrorCode::LeaderNotAvailable,
            )) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            done => return done,
        }
    }
}

/// [`latest_checkpoints`] on a blocking thread.
fn read_last(
    consumer: &BaseConsumer<BusContext>,
    topic: &str,
    wait: Duration,
) -> Result<Vec<StoredCheckpoint>> {
    let deadline = Instant::now() + wait;
    let left = || deadline.saturating_duration_since(Instant::now());
    let metadata = consumer
        .fetch_metadata(Some(topic), left())
        .map_err(kafka("read the checkpoint topic's metadata"))?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(Vec::new());
    };
    match found.error().map(RDKafkaErrorCode::from) {
        None => {}
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => return Ok(Vec::new()),
        Some(code) => {
            return Err(kafka("read the checkpoint topic's metadata")(
                KafkaError::MetadataFetch(code),
            ));
        }
    }
    // For each partition holding messages: the offset of its last one.
    let mut last_offsets = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in found.partitions().iter().map(|p| p.id()) {
        let (low, high) = once_led(deadline, || {
            consumer.fetch_watermarks(topic, partition, left())
        })
        .map_err(kafka("read the checkpoint topic's offsets"))?;
        if high > low {
            last_offsets.insert(partition, high - 1);
            let start = Offset::Offset(low.max(high - TAIL_MESSAGES));
            assignment
                .add_partition_offset(topic, partition, start)
                .map_err(kafka("assign the checkpoint topic's partitions"))?;
        }
    }
    if last_offsets.is_empty() {
        return Ok(Vec::new());
    }
    consumer
        .assign(&assignment)
        .map_err(kafka("assign the checkpoint topic's partitions"))?;
    let mut latest: BTreeMap<i32, StoredCheckpoint> = BTreeMap::new();
    while !last_offsets.is_empty() {
        if left().is_zero() {
            return Err(Error::Timeout {
                topic: topic.to_owned(),
                wait,
            });
        }
        let message = match consumer.poll(left().min(POLL)) {
            None => continue,
            Some(Ok(message)) => message,
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                last_offsets.remove(&partition);
                continue;
            }
            Some(Err(err)) => {
                // The client retries on its own; errors here are reports.
                debug!(error = %err, "kafka error reading the checkpoint topic");
                continue;
            }
        };
        let partition = message.partition();
        latest.insert(
            partition,
            StoredCheckpoint {
                position: Position {
                    topic: topic.to_owned(),
                    partition,
                    offset: message.offset(),
                },
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().unwrap_or_default().to_vec(),
            },
        );
        if last_offsets
            .get(&partition)
            .is_some_and(|last| message.offset() >= *last)
        {
            last_offsets.remove(&partition);
        }
    }
    Ok(latest.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpoint_topic_keeps_every_checkpoint_in_one_partition() {
        let topic = new_topic("p.driftwarden.checkpoints.v1");
        assert_eq!(topic.num_partitions, 1);
        let config: BTreeMap<&str, &str> = topic.config.iter().copied().collect();
        assert_eq!(config.get("cleanup.policy"), Some(&"delete"));
        assert_eq!(config.get("retention.ms"), Some(&"-1"));
        assert_eq!(config.get("retention.bytes"), Some(&"-1"));
    }

    #[test]
    fn a_publisher_needs_brokers_and_a_valid_prefix() {
        let err = TopicPublisher::new(&KafkaConfig::new("", "g")).expect_err("no brokers");
        assert!(matches!(err, Error::NoBrokers), "{err:?}");
        let config = KafkaConfig::new("127.0.0.1:9", "g").with_prefix("bad prefix");
        let err = TopicPublisher::new(&config).expect_err("bad prefix");
        assert!(matches!(err, Error::InvalidPrefix { .. }), "{err:?}");
        let publisher = TopicPublisher::new(&KafkaConfig::new("127.0.0.1:9", "g"))
            .expect("a producer, without connecting");
        assert_eq!(publisher.topic(), "driftwarden.checkpoints.v1");
    }
}
