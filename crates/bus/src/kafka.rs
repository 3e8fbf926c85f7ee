//! The Kafka bus (rdkafka).
//!
//! ```text
//! publish ──▶ FutureProducer (idempotent, acks=all, lz4) ──▶ changes, audit
//! changes, audit ──▶ BaseConsumer, polled on its own thread ──bounded channel──▶ receive / next_batch
//!                        ▲                                     │ refused payloads
//! commit ────────────────┘ (synchronous, on a blocking thread) └──dead_letter──▶ deadletter
//! ```
//!
//! The consumer is a `BaseConsumer` polled on a dedicated thread rather than a
//! `StreamConsumer`, which can stall during a rebalance. Offsets are committed
//! only when the caller says so, after it has durably stored what the
//! messages produced; on restart a consumer of the same group resumes after
//! the last committed offset, so anything not committed is delivered again.
//!
//! Every client (producer, consumer, admin) gets the same connection and
//! [`Security`] settings. Messages up to [`MAX_MESSAGE_BYTES`] pass: the
//! producer's `message.max.bytes` and the `max.message.bytes` of the topics
//! [`ensure_topics`] creates; a larger one is [`Error::TooLarge`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message as _, OwnedHeaders};
use rdkafka::producer::{
    BaseProducer, DeliveryResult, FutureProducer, FutureRecord, Producer as _, ProducerContext,
};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::embedded::receive;
use crate::error::Refusal;
use crate::security::RESERVED_OPTIONS;
use crate::wire::reason;
use crate::{Delivery, Error, Message, Position, Received, Rejected, Result, Security, Topics};

/// How many received messages wait in memory for `next_batch` by default.
pub const DEFAULT_BUFFER: usize = 1_024;

/// The largest message the bus carries, in bytes: a Kubernetes object at the
/// apiserver's limit (about 1.5 MiB in etcd, more as JSON) with its envelope.
/// The producer's `message.max.bytes`, the consumer's
/// `max.partition.fetch.bytes` and the `max.message.bytes` of the topics
/// [`ensure_topics`] creates.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Header of a dead letter: the topic the refused payload was read from.
pub const HEADER_SOURCE_TOPIC: &str = "driftwarden.source.topic";
/// Header of a dead letter: its partition, in decimal.
pub const HEADER_SOURCE_PARTITION: &str = "driftwarden.source.partition";
/// Header of a dead letter: its offset, in decimal.
pub const HEADER_SOURCE_OFFSET: &str = "driftwarden.source.offset";
/// Header of a dead letter: why it was refused ([`Rejected::reason`]).
pub const HEADER_REASON: &str = "driftwarden.reason";
/// Header of a dead letter sent without its payload (too large to send
/// again): the payload's SHA-256, lowercase hex.
pub const HEADER_PAYLOAD_SHA256: &str = "driftwarden.payload.sha256";
/// Header of a dead letter sent without its payload: its size in bytes.
pub const HEADER_PAYLOAD_BYTES: &str = "driftwarden.payload.bytes";

/// How long one poll of the consumer blocks; bounds how long the polling
/// thread takes to notice it should stop.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long topic creation may take before it is reported as failed.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// How long one metadata request of the connection probe waits.
const PROBE_REQUEST: Duration = Duration::from_millis(500);

/// How to reach Kafka, how to authenticate, and which topics and group to
/// use.
#[derive(Clone, PartialEq, Eq)]
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
    /// TLS and SASL.
    pub security: Security,
    /// Extra librdkafka properties (tuning, `client.id`, …) for every
    /// client. A property Driftwarden sets itself is refused
    /// ([`Error::ReservedOption`]).
    pub options: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Extra options may hold secrets (`ssl.key.password`): names only.
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("prefix", &self.prefix)
            .field("group_id", &self.group_id)
            .field("buffer", &self.buffer)
            .field("security", &self.security)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KafkaConfig {
    /// Settings for `brokers` and consumer group `group_id`, with no topic
    /// prefix, plaintext, and the default buffer.
    pub fn new(brokers: impl Into<String>, group_id: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            prefix: String::new(),
            group_id: group_id.into(),
            buffer: DEFAULT_BUFFER,
            security: Security::default(),
            options: BTreeMap::new(),
        }
    }

    /// The same settings with topic prefix `prefix`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The same settings with `security`.
    pub fn with_security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// Checks what can be checked without a broker: brokers given, a valid
    /// topic prefix, security settings that fit together with readable
    /// files, and no extra option overriding one Driftwarden sets.
    pub fn check(&self) -> Result<()> {
        if self.brokers.trim().is_empty() {
            return Err(Error::NoBrokers);
        }
        Topics::new(&self.prefix)?;
        self.security.check().map_err(Error::Security)?;
        check_options(&self.options)
    }

    /// Connection and security settings every client gets, then the extra
    /// options.
    pub(crate) fn client(&self) -> Result<ClientConfig> {
        if self.brokers.trim().is_empty() {
            return Err(Error::NoBrokers);
        }
        check_options(&self.options)?;
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &self.brokers)
            // Small messages must not wait for Nagle's algorithm.
            .set("socket.nagle.disable", "true");
        self.security.apply(&mut client).map_err(Error::Security)?;
        for (key, value) in &self.options {
            client.set(key, value);
        }
        Ok(client)
    }
}

/// Refuses an extra option that would override one Driftwarden sets.
fn check_options(options: &BTreeMap<String, String>) -> Result<()> {
    let Some(key) = options
        .keys()
        .find(|key| RESERVED_OPTIONS.contains(&key.trim()))
    else {
        return Ok(());
    };
    let hint = match key.trim() {
        k if k.starts_with("ssl.") || k.starts_with("sasl.") || k == "security.protocol" => {
            ": use the security settings"
        }
        "bootstrap.servers" | "metadata.broker.list" => ": use the brokers setting",
        "group.id" => ": use the group setting",
        _ => "",
    };
    Err(Error::ReservedOption {
        key: key.clone(),
        hint,
    })
}

/// Maps a client error to [`Error::Kafka`] for `action`.
pub(crate) fn kafka(action: &'static str) -> impl FnOnce(KafkaError) -> Error {
    move |source| Error::Kafka { action, source }
}

/// Whether the client refused a message for its size, or the broker did.
fn too_large(err: &KafkaError) -> bool {
    matches!(
        err.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge)
    )
}

/// The context of every client: librdkafka's logs and errors go to
/// `tracing`, and the last refused connection (SASL or TLS) is kept so
/// that a request that would otherwise only time out can say why.
#[derive(Clone, Default)]
pub(crate) struct BusContext {
    refused: Arc<Mutex<Option<(Refusal, String)>>>,
}

impl BusContext {
    /// The last refusal, if any.
    pub(crate) fn refusal(&self) -> Option<(Refusal, String)> {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ClientContext for BusContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => error!(facility, "librdkafka: {message}"),
            RDKafkaLogLevel::Warning => warn!(facility, "librdkafka: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(facility, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Debug => debug!(facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, err: KafkaError, reason: &str) {
        let refusal = match err.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
                Some(Refusal::Authentication)
            }
            Some(RDKafkaErrorCode::SSL) => Some(Refusal::Tls),
            _ => None,
        };
        match refusal {
            Some(kind) => {
                error!(error = %err, reason, "kafka refused the connection");
                *self.refused.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((kind, reason.to_owned()));
            }
            // The client retries on its own; errors here are reports.
            None => warn!(error = %err, reason, "kafka client error"),
        }
    }
}

impl ConsumerContext for BusContext {}

impl ProducerContext for BusContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Connects as `config` says and asks for the cluster's metadata until the
/// brokers answer, refuse the connection (SASL or TLS: [`Error::Refused`]),
/// or [`ADMIN_TIMEOUT`] passes (the last request's error). librdkafka
/// reports a refusal only as an event of the client's main queue, which
/// this polls between requests.
async fn probe(config: &KafkaConfig) -> Result<()> {
    let context = BusContext::default();
    let producer: BaseProducer<BusContext> = config
        .client()?
        .create_with_context(context.clone())
        .map_err(kafka("create the connection probe"))?;
    let brokers = config.brokers.clone();
    let probed = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + ADMIN_TIMEOUT;
        loop {
            let err = match producer.client().fetch_metadata(None, PROBE_REQUEST) {
                Ok(_) => return Ok(()),
                Err(err) => err,
            };
            producer.poll(Duration::ZERO);
            if let Some((kind, reason)) = context.refusal() {
                return Err(Error::Refused {
                    brokers,
                    kind,
                    reason,
                });
            }
            if std::time::Instant::now() >= deadline {
                return Err(kafka("reach the brokers")(err));
            }
        }
    });
    probed.await.map_err(|_| Error::Closed)?
}

/// Creates the topics under `config.prefix`, with the broker's default
/// replication factor and `max.message.bytes` of [`MAX_MESSAGE_BYTES`]:
/// changes, audit records and dead letters with `partitions` partitions
/// each, the checkpoint topic with one partition, kept forever (see
/// [`TopicPublisher`](crate::TopicPublisher)), and the SIEM verdict topics
/// with one partition and the broker's retention. Topics that
/// already exist are left as they are.
///
/// This is the first request a process makes: credentials the brokers
/// refuse, or a TLS handshake that fails, end it with [`Error::Refused`]
/// at once rather than after the request's timeout.
pub async fn ensure_topics(config: &KafkaConfig, partitions: i32) -> Result<Topics> {
    if partitions < 1 {
        return Err(Error::Zero {
            setting: "partitions",
        });
    }
    let topics = Topics::new(&config.prefix)?;
    probe(config).await?;
    let admin: AdminClient<BusContext> = config
        .client()?
        .create_with_context(BusContext::default())
        .map_err(kafka("create the admin client"))?;
    let max = MAX_MESSAGE_BYTES.to_string();
    let new_topics: Vec<NewTopic<'_>> = topics
        .all()
        .into_iter()
        .map(|name| {
            let topic = if name == topics.checkpoints {
                crate::checkpoints::new_topic(name)
            } else if topics.single_partition().contains(&name) {
                // In order, so its last message says how far it got.
                NewTopic::new(name, 1, TopicReplication::Fixed(-1))
            } else {
                NewTopic::new(name, partitions, TopicReplication::Fixed(-1))
            };
            topic.set("max.message.bytes", &max)
        })
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

/// The settings of every producer: idempotent, waiting for all in-sync
/// replicas, compressing with lz4, sending messages up to
/// [`MAX_MESSAGE_BYTES`].
pub(crate) fn producer_client(config: &KafkaConfig) -> Result<ClientConfig> {
    let mut client = config.client()?;
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "1")
        .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string());
    Ok(client)
}

/// An idempotent producer that waits for all in-sync replicas, compresses
/// with lz4 and sends messages up to [`MAX_MESSAGE_BYTES`].
fn producer(config: &KafkaConfig) -> Result<FutureProducer<BusContext>> {
    producer_client(config)?
        .create_with_context(BusContext::default())
        .map_err(kafka("create the producer"))
}

/// Publishes to Kafka; clones share one producer.
#[derive(Clone)]
pub struct KafkaPublisher {
    producer: FutureProducer<BusContext>,
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
        let producer = producer(config)?;
        Ok(Self { producer, topics })
    }

    /// Sends `message` and waits for the broker's acknowledgement. Waits
    /// while the producer's queue is full.
    pub(crate) async fn publish(&self, message: &Message) -> Result<()> {
        let topic = message.topic(&self.topics);
        let payload = message.encode()?;
        let key = message.key();
        let record = FutureRecord::to(topic).key(&key).payload(&payload);
        match self.producer.send(record, Timeout::Never).await {
            Ok(_) => Ok(()),
            Err((source, _)) if too_large(&source) => Err(Error::TooLarge {
                topic: topic.to_owned(),
                bytes: payload.len(),
                source,
            }),
            Err((source, _)) => Err(Error::Delivery {
                topic: topic.to_owned(),
                source,
            }),
        }
    }
}

/// A received message, decoded or refused, on its way from the polling
/// thread to `receive` / `next_batch`.
type Item = std::result::Result<Delivery, Box<Rejection>>;

/// A refused payload, with the decoding error `next_batch` returns for it.
#[derive(Debug)]
struct Rejection {
    rejected: Rejected,
    error: Error,
}

/// Consumes the changes and audit topics in a consumer group, and sends
/// refused payloads to the dead-letter topic.
///
/// Dropping it stops the polling thread, which then leaves the group in the
/// background; [`Consumer::close`](crate::Consumer::close) waits for that.
pub struct KafkaConsumer {
    /// The polling thread owns the consumer; commits borrow it while it lives.
    consumer: Weak<BaseConsumer<BusContext>>,
    receiver: mpsc::Receiver<Item>,
    /// Received but not yet returned, in order; for `next_batch`, a refused
    /// payload stays at the front until the messages before it have been
    /// returned.
    pending: VecDeque<Item>,
    dead_letters: FutureProducer<BusContext>,
    dead_letter_topic: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("pending", &self.pending.len())
            .field("dead_letter_topic", &self.dead_letter_topic)
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
        let mut client = config.client()?;
        client
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10")
            .set("max.partition.fetch.bytes", MAX_MESSAGE_BYTES.to_string())
            .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000");
        let consumer: BaseConsumer<BusContext> = client
            .create_with_context(BusContext::default())
            .map_err(kafka("create the consumer"))?;
        consumer
            .subscribe(&topics.consumed())
            .map_err(kafka("subscribe to the topics"))?;
        let dead_letters = producer(config)?;
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
            dead_letters,
            dead_letter_topic: topics.dead_letter,
            stop,
            thread: Some(thread),
        })
    }

    /// Waits up to `wait` for messages, then returns what is ready, up to
    /// `max`, refused payloads included, in order.
    pub(crate) async fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Received>> {
        if self.pending.is_empty() {
            self.pending = receive(&mut self.receiver, max, wait).await?.into();
        }
        let take = max.min(self.pending.len());
        Ok(self
            .pending
            .drain(..take)
            .map(|item| match item {
                Ok(delivery) => Received::Message(delivery),
                Err(rejection) => Received::Rejected(rejection.rejected),
            })
            .collect())
    }

    /// Waits up to `wait` for messages, then returns what is ready, up to
    /// `max`. A refused payload is returned as its decoding error on its
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
                Some(Err(rejection)) if batch.is_empty() => return Err(rejection.error),
                Some(Err(rejection)) => {
                    self.pending.push_front(Err(rejection));
                    break;
                }
            }
        }
        Ok(batch)
    }

    /// Sends `rejected` to the dead-letter topic with its key, its payload
    /// and the headers naming where it came from and why it was refused;
    /// waits for the broker's acknowledgement. A payload too large to send
    /// again goes without it, with its digest and size in headers instead.
    pub(crate) async fn dead_letter(&self, rejected: &Rejected) -> Result<()> {
        let position = &rejected.position;
        let partition = position.partition.to_string();
        let offset = position.offset.to_string();
        let headers = [
            (HEADER_SOURCE_TOPIC, position.topic.as_str()),
            (HEADER_SOURCE_PARTITION, partition.as_str()),
            (HEADER_SOURCE_OFFSET, offset.as_str()),
            (HEADER_REASON, rejected.reason.as_str()),
        ];
        let whole = self.send_dead_letter(rejected, &headers, &rejected.payload);
        let source = match whole.await {
            Ok(()) => return Ok(()),
            Err(source) if too_large(&source) => source,
            Err(source) => return Err(self.delivery_error(source)),
        };
        warn!(
            at = %position,
            bytes = rejected.payload.len(),
            error = %source,
            "dead letter too large: sent without its payload"
        );
        let sha256 = hex::encode(Sha256::digest(&rejected.payload));
        let bytes = rejected.payload.len().to_string();
        let headers = [
            headers[0],
            headers[1],
            headers[2],
            headers[3],
            (HEADER_PAYLOAD_SHA256, sha256.as_str()),
            (HEADER_PAYLOAD_BYTES, bytes.as_str()),
        ];
        self.send_dead_letter(rejected, &headers, &[])
            .await
            .map_err(|source| self.delivery_error(source))
    }

    async fn send_dead_letter(
        &self,
        rejected: &Rejected,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> std::result::Result<(), KafkaError> {
        let headers = headers
            .iter()
            .fold(OwnedHeaders::new(), |all, (key, value)| {
                all.insert(Header {
                    key,
                    value: Some(*value),
                })
            });
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.dead_letter_topic)
            .payload(payload)
            .headers(headers);
        if let Some(key) = &rejected.key {
            record = record.key(key.as_slice());
        }
        self.dead_letters
            .send(record, Timeout::Never)
            .await
            .map(|_| ())
            .map_err(|(source, _)| source)
    }

    fn delivery_error(&self, source: KafkaError) -> Error {
        Error::Delivery {
            topic: self.dead_letter_topic.clone(),
            source,
        }
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
fn poll_loop(consumer: &BaseConsumer<BusContext>, sender: &mpsc::Sender<Item>, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        let item = match consumer.poll(POLL_INTERVAL) {
            None => continue,
            Some(Ok(message)) => item(&message),
            Some(Err(err)) => {
                // The client retries on its own; errors here are reports.
                warn!(error = %err, "kafka consumer error");
                continue;
            }
        };
        if sender.blocking_send(item).is_err() {
            break;
        }
    }
    debug!("kafka consumer thread stopped");
}

/// Decodes one received message, remembering where it sits; a payload this
/// build does not read is kept, raw, as a [`Rejected`].
fn item(message: &BorrowedMessage<'_>) -> Item {
    let position = Position {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
    };
    let payload = message.payload().unwrap_or_default();
    match Message::decode(payload, &position) {
        Ok(decoded) => Ok(Delivery {
            message: decoded,
            position: Some(position),
        }),
        Err(error) => {
            debug!(at = %position, error = %error, "refused payload");
            Err(Box::new(Rejection {
                rejected: Rejected {
                    position,
                    reason: reason(&error),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: payload.to_vec(),
                },
                error,
            }))
        }
    }
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
    use crate::security::{Mechanism, Protocol, Sasl};

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
        let err = KafkaConfig::new("", "g").check().expect_err("no brokers");
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
        let err = ensure_topics(&KafkaConfig::new("127.0.0.1:9", "g"), 0)
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

    #[test]
    fn an_option_driftwarden_sets_is_refused_naming_it_and_where_to_set_it() {
        for (key, hint) in [
            ("sasl.password", "security settings"),
            ("security.protocol", "security settings"),
            ("bootstrap.servers", "brokers setting"),
            ("enable.idempotence", ""),
            ("message.max.bytes", ""),
        ] {
            let mut config = KafkaConfig::new("127.0.0.1:9", "g");
            config.options.insert(key.into(), "x".into());
            let err = config.check().expect_err("reserved option");
            let text = err.to_string();
            assert!(
                matches!(&err, Error::ReservedOption { key: k, .. } if k == key),
                "{err:?}"
            );
            assert!(text.contains(key) && text.contains(hint), "{text}");
            assert!(
                KafkaPublisher::new(&config).is_err(),
                "{key} reached a client"
            );
        }
        let mut config = KafkaConfig::new("127.0.0.1:9", "g");
        config.options.insert("client.id".into(), "dw-1".into());
        config.check().expect("a free option is fine");
    }

    #[test]
    fn security_errors_name_the_setting_and_passwords_stay_out_of_debug() {
        let dir = tempfile::tempdir().expect("temp dir");
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, "hunter2\n").expect("written");
        let mut config = KafkaConfig::new("127.0.0.1:9", "g").with_security(Security {
            protocol: Protocol::SaslPlaintext,
            sasl: Some(Sasl {
                mechanism: Mechanism::ScramSha512,
                username: "dw".into(),
                password_file: password_file.clone(),
            }),
            ..Security::default()
        });
        config
            .options
            .insert("ssl.key.password".into(), "hunter3".into());
        config.check().expect("valid");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(shown.contains("ssl.key.password"), "{shown}");
        // A producer reads the password file and keeps the password in
        // librdkafka only.
        let publisher = KafkaPublisher::new(&config).expect("producer");
        assert!(!format!("{publisher:?}").contains("hunter"));

        std::fs::write(&password_file, "").expect("emptied");
        let err = config.check().expect_err("empty password");
        assert!(err.to_string().contains("sasl.password_file"), "{err}");
        let err = KafkaPublisher::new(&config).expect_err("empty password");
        assert!(matches!(err, Error::Security(_)), "{err:?}");
    }

    #[test]
    fn size_errors_are_recognized_by_their_code() {
        let local = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        let batch = KafkaError::MessageProduction(RDKafkaErrorCode::MessageBatchTooLarge);
        let other = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(too_large(&local) && too_large(&batch) && !too_large(&other));
    }
}
