//! The Kafka bus (rdkafka).
//!
//! ```text
//! publish ──▶ FutureProducer (idempotent, acks=all, lz4) ──▶ topics
//! topics ──▶ BaseConsumer, polled on its own thread ──bounded channel──▶ next_batch
//!                        ▲
//! commit ────────────────┘ (synchronous, on a blocking thread)
//! ```
//!
//! The consumer is a `BaseConsumer` polled on a dedicated thread rather than a
//! `StreamConsumer`, which can stall during a rebalance. Offsets are committed
//! only when the caller says so, after it has durably stored what the
//! messages produced; on restart a consumer of the same group resumes after
//! the last committed offset, so anything not committed is delivered again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::embedded::receive;
use crate::{Delivery, Error, Message, Position, Result, Topics};

/// How many received messages wait in memory for `next_batch` by default.
pub const DEFAULT_BUFFER: usize = 1_024;

/// How long one poll of the consumer blocks; bounds how long the polling
/// thread takes to notice it should stop.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long topic creation may take before it is reported as failed.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// How to reach Kafka and which topics and group to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma-separated `host:port`.
    pub brokers: String,
    /// Prepended to every topic name (see [`Topics::new`]); empty in most
    /// deployments.
    pub prefix: String,
    /// The consumer group shared by all correlators.
    pub group_id: String,
    /// How many received messages wait in memory before the consumer stops
    /// fetching.
    pub buffer: usize,
    /// Extra librdkafka properties (TLS, SASL, tuning), applied last so they
    /// override the defaults set here.
    pub options: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// Settings for `brokers` and consumer group `group_id`, with no topic
    /// prefix and the default buffer.
    pub fn new(brokers: impl Into<String>, group_id: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            prefix: String::new(),
            group_id: group_id.into(),
            buffer: DEFAULT_BUFFER,
            options: BTreeMap::new(),
        }
    }

    /// The same settings with topic prefix `prefix`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The extra properties, applied over `client`.
    fn apply_options(&self, client: &mut ClientConfig) {
        for (key, value) in &self.options {
            client.set(key, value);
        }
    }
}

/// Connection settings every client gets.
fn base_client(brokers: &str) -> Result<ClientConfig> {
    if brokers.trim().is_empty() {
        return Err(Error::NoBrokers);
    }
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", brokers)
        // Small messages must not wait for Nagle's algorithm.
        .set("socket.nagle.disable", "true");
    Ok(client)
}

/// Maps a client error to [`Error::Kafka`] for `action`.
fn kafka(action: &'static str) -> impl FnOnce(KafkaError) -> Error {
    move |source| Error::Kafka { action, source }
}

/// Creates the topics under `prefix` with `partitions` partitions each and
/// the broker's default replication factor. Topics that already exist are
/// left as they are.
pub async fn ensure_topics(brokers: &str, prefix: &str, partitions: i32) -> Result<Topics> {
    if partitions < 1 {
        return Err(Error::Zero {
            setting: "partitions",
        });
    }
    let topics = Topics::new(prefix)?;
    let admin: AdminClient<DefaultClientContext> = base_client(brokers)?
        .create()
        .map_err(kafka("create the admin client"))?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .all()
        .into_iter()
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(-1)))
        .collect();
    let options = AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(kafka("create topics"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(Error::CreateTopic { topic, code }),
        }
    }
    Ok(topics)
}

/// Publishes to Kafka; clones share one producer.
#[derive(Clone)]
pub struct KafkaPublisher {
    producer: FutureProducer,
    topics: Topics,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    /// An idempotent producer that waits for all in-sync replicas.
    pub(crate) fn new(config: &KafkaConfig) -> Result<Self> {
        let topics = Topics::new(&config.prefix)?;
        let mut client = base_client(&config.brokers)?;
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "1");
        config.apply_options(&mut client);
        let producer = client.create().map_err(kafka("create the producer"))?;
        Ok(Self { producer, topics })
    }

    /// Sends `message` and waits for the broker's acknowledgement. Waits
    /// while the producer's queue is full.
    pub(crate) async fn publish(&self, message: &Message) -> Result<()> {
        let topic = message.topic(&self.topics);
        let payload = message.encode()?;
        let key = message.key();
        let record = FutureRecord::to(topic).key(&key).payload(&payload);
        self.producer
            .send(record, Timeout::Never)
            .await
            .map(|_| ())
            .map_err(|(source, _)| Error::Delivery {
                topic: topic.to_owned(),
                source,
            })
    }
}

/// Consumes both topics in a consumer group.
///
/// Dropping it stops the polling thread, which then leaves the group in the
/// background; [`Consumer::close`](crate::Consumer::close) waits for that.
pub struct KafkaConsumer {
    /// The polling thread owns the consumer; commits borrow it while it lives.
    consumer: Weak<BaseConsumer>,
    receiver: mpsc::Receiver<Result<Delivery>>,
    /// Received but not yet returned, in order; an error stays at the front
    /// until the messages before it have been returned.
    pending: VecDeque<Result<Delivery>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("pending", &self.pending.len())
            .field("stopped", &self.stop.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl KafkaConsumer {
    /// Joins the group and starts polling on a thread of its own.
    pub(crate) fn new(config: &KafkaConfig) -> Result<Self> {
        if config.buffer == 0 {
            return Err(Error::Zero { setting: "buffer" });
        }
        let topics = Topics::new(&config.prefix)?;
        let mut client = base_client(&config.brokers)?;
        client
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000");
        config.apply_options(&mut client);
        let consumer: BaseConsumer = client.create().map_err(kafka("create the consumer"))?;
        consumer
            .subscribe(&topics.all())
            .map_err(kafka("subscribe to the topics"))?;
        let consumer = Arc::new(consumer);
        let weak = Arc::downgrade(&consumer);
        let (sender, receiver) = mpsc::channel(config.buffer);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("bus-consumer".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || poll_loop(&consumer, &sender, &stop)
            })
            .map_err(Error::Thread)?;
        Ok(Self {
            consumer: weak,
            receiver,
            pending: VecDeque::new(),
            stop,
            thread: Some(thread),
        })
    }

    /// Waits up to `wait` for messages, then returns what is ready, up to
    /// `max`. A message that cannot be decoded is returned as an error on its
    /// own, after the messages before it.
    pub(crate) async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        if self.pending.is_empty() {
            self.pending = receive(&mut self.receiver, max, wait).await?.into();
        }
        let mut batch = Vec::new();
        while batch.len() < max {
            match self.pending.pop_front() {
                None => break,
                Some(Ok(delivery)) => batch.push(delivery),
                Some(Err(err)) if batch.is_empty() => return Err(err),
                Some(Err(err)) => {
                    self.pending.push_front(Err(err));
                    break;
                }
            }
        }
        Ok(batch)
    }

    /// Commits, for each partition, the offset after the highest of
    /// `positions`, and waits for the broker to confirm.
    pub(crate) async fn commit(&mut self, positions: &[Position]) -> Result<()> {
        let list = commit_list(positions)?;
        if list.count() == 0 {
            return Ok(());
        }
        let consumer = Weak::clone(&self.consumer);
        let committed = tokio::task::spawn_blocking(move || {
            let consumer = consumer.upgrade().ok_or(Error::Closed)?;
            consumer
                .commit(&list, CommitMode::Sync)
                .map_err(kafka("commit offsets"))
        });
        committed.await.map_err(|_| Error::Closed)?
    }

    /// Stops polling, leaves the group and waits until that is done.
    pub(crate) async fn close(mut self) {
        self.signal_stop();
        let Some(thread) = self.thread.take() else {
            return;
        };
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => warn!("the kafka consumer thread did not stop cleanly"),
        }
    }

    fn signal_stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the thread if it waits for room in the channel.
        self.receiver.close();
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// Polls until told to stop or until nobody receives any more. The polling
/// thread owns the consumer and drops it when this returns, which leaves the
/// group without blocking the async runtime.
fn poll_loop(consumer: &BaseConsumer, sender: &mpsc::Sender<Result<Delivery>>, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        let delivery = match consumer.poll(POLL_INTERVAL) {
            None => continue,
            Some(Ok(message)) => delivery(&message),
            Some(Err(err)) => {
                // The client retries on its own; errors here are reports.
                warn!(error = %err, "kafka consumer error");
                continue;
            }
        };
        if sender.blocking_send(delivery).is_err() {
            break;
        }
    }
    debug!("kafka consumer thread stopped");
}

/// Decodes one received message, remembering where it sits.
fn delivery(message: &BorrowedMessage<'_>) -> Result<Delivery> {
    let position = Position {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
    };
    let decoded = Message::decode(message.payload().unwrap_or_default(), &position)?;
    Ok(Delivery {
        message: decoded,
        position: Some(position),
    })
}

/// For each partition, the offset after the highest position: where a
/// consumer of the group resumes.
fn commit_list(positions: &[Position]) -> Result<TopicPartitionList> {
    let mut highest: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for position in positions {
        let offset = highest
            .entry((&position.topic, position.partition))
            .or_insert(position.offset);
        *offset = (*offset).max(position.offset);
    }
    let mut list = TopicPartitionList::with_capacity(highest.len());
    for ((topic, partition), offset) in highest {
        list.add_partition_offset(topic, partition, Offset::Offset(offset + 1))
            .map_err(kafka("list offsets to commit"))?;
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(topic: &str, partition: i32, offset: i64) -> Position {
        Position {
            topic: topic.into(),
            partition,
            offset,
        }
    }

    #[test]
    fn commit_list_takes_the_offset_after_the_highest_per_partition() {
        let list = commit_list(&[
            at("c", 0, 5),
            at("c", 0, 9),
            at("c", 0, 7),
            at("c", 1, 2),
            at("a", 0, 0),
        ])
        .expect("valid positions");
        let mut offsets: Vec<(String, i32, Offset)> = list
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition(), e.offset()))
            .collect();
        offsets.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
        assert_eq!(
            offsets,
            vec![
                ("a".into(), 0, Offset::Offset(1)),
                ("c".into(), 0, Offset::Offset(10)),
                ("c".into(), 1, Offset::Offset(3)),
            ]
        );
    }

    #[test]
    fn commit_list_of_nothing_is_empty() {
        assert_eq!(commit_list(&[]).expect("empty").count(), 0);
    }

    #[test]
    fn missing_brokers_are_rejected() {
        let err = KafkaPublisher::new(&KafkaConfig::new(" ", "g")).expect_err("no brokers");
        assert!(matches!(err, Error::NoBrokers), "{err:?}");
    }

    #[test]
    fn zero_consumer_buffer_is_rejected() {
        let mut config = KafkaConfig::new("127.0.0.1:9", "g");
        config.buffer = 0;
        let err = KafkaConsumer::new(&config).expect_err("zero buffer");
        assert!(err.to_string().contains("buffer"), "{err}");
    }

    #[tokio::test]
    async fn zero_partitions_are_rejected() {
        let err = ensure_topics("127.0.0.1:9", "", 0)
            .await
            .expect_err("zero partitions");
        assert!(err.to_string().contains("partitions"), "{err}");
    }

    #[test]
    fn unknown_client_property_is_rejected_naming_it() {
        let mut config = KafkaConfig::new("127.0.0.1:9", "g");
        config.options.insert("no.such.property".into(), "1".into());
        let err = KafkaPublisher::new(&config).expect_err("unknown property");
        let chain = format!(
            "{err}: {}",
            std::error::Error::source(&err)
                .map(ToString::to_string)
                .unwrap_or_default()
        );
        assert!(chain.contains("no.such.property"), "{chain}");
    }
}
