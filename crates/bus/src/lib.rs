//! The event bus between watchers and correlators.
//!
//! ```text
//! watcher ──publish_fitting──▶ bus (Kafka or embedded channel) ──receive──▶ correlator
//!                                                  ◀──dead_letter─── (refused payloads)
//!                                                  ◀──commit──────── (after the ledger flushed)
//! ledger checkpoints ──TopicPublisher──▶ Kafka only ──latest_checkpoints──▶ verify
//! ```
//!
//! Two implementations behind one small API: Kafka (rdkafka) in production
//! and a bounded in-process channel for the single-binary default. A
//! [`Publisher`] resolves once a message is durably accepted; a [`Consumer`]
//! hands out [`Received`] items (a [`Delivery`], or a [`Rejected`] payload
//! this build refuses to read) and commits their [`Position`]s when the
//! caller has stored what they produced. The wire format (tagged JSON,
//! `schema: 1`) lives in [`Message`].
//!
//! Kafka connections are secured by [`Security`] (TLS, SASL/SCRAM); a change
//! too large for Kafka is sent truncated ([`Publisher::publish_fitting`]);
//! refused payloads go to a dead-letter topic ([`Consumer::dead_letter`]).
//! Signed ledger checkpoints go to a topic of their own, kept forever
//! ([`TopicPublisher`], read back with [`latest_checkpoints`]); the
//! embedded bus carries none, so there the file beside the ledger is the
//! only anchor.

use std::time::Duration;

mod checkpoints;
mod embedded;
mod error;
mod kafka;
mod security;
mod wire;

pub use checkpoints::{StoredCheckpoint, TopicPublisher, last_messages, latest_checkpoints};
pub use embedded::{DEFAULT_CAPACITY, EmbeddedConsumer, EmbeddedPublisher};
pub use error::{Error, Refusal, Result};
pub use kafka::{
    DEFAULT_BUFFER, HEADER_PAYLOAD_BYTES, HEADER_PAYLOAD_SHA256, HEADER_REASON,
    HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, HEADER_SOURCE_TOPIC, KafkaConfig, KafkaConsumer,
    KafkaPublisher, MAX_MESSAGE_BYTES, ensure_topics,
};
pub use security::{ClientCert, Mechanism, Protocol, Sasl, Security, SecurityError, Setting};
pub use wire::{
    AUDIT_TOPIC, CHANGES_TOPIC, CHECKPOINTS_TOPIC, DEAD_LETTER_TOPIC, Delivery, Message, Position,
    Received, Rejected, Topics, VERDICTS_OCSF_TOPIC, VERDICTS_TOPIC,
};

/// The embedded bus: a publisher and the consumer of a channel holding up to
/// `capacity` messages ([`DEFAULT_CAPACITY`] is a good default).
pub fn embedded(capacity: usize) -> Result<(Publisher, Consumer)> {
    let (publisher, consumer) = embedded::channel(capacity)?;
    Ok((Publisher::Embedded(publisher), Consumer::Embedded(consumer)))
}

/// The sending end of the bus; clones share one producer or channel.
#[derive(Debug, Clone)]
pub enum Publisher {
    /// Publishes to Kafka.
    Kafka(KafkaPublisher),
    /// Publishes to the in-process channel.
    Embedded(EmbeddedPublisher),
}

/// What [`Publisher::publish_fitting`] sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The message as given.
    Whole,
    /// The change was too large for the bus and went truncated
    /// ([`model::ChangeEvent::truncated`]): its object cut down to its
    /// metadata, or to the metadata's identity when even that was too large.
    Truncated {
        /// The size of the payload that did not fit.
        bytes: usize,
        /// Whether only the identity of the metadata was kept.
        identity_only: bool,
    },
}

impl Publisher {
    /// A Kafka publisher: idempotent, `acks=all`, lz4, a 1 ms linger,
    /// messages up to [`MAX_MESSAGE_BYTES`].
    pub fn kafka(config: &KafkaConfig) -> Result<Self> {
        KafkaPublisher::new(config).map(Self::Kafka)
    }

    /// Publishes `message` to its topic under its key. Resolves when the
    /// message is durably accepted: acknowledged by all in-sync replicas
    /// (Kafka) or enqueued (embedded, waiting while the channel is full).
    /// A message Kafka cannot take for its size is [`Error::TooLarge`].
    pub async fn publish(&self, message: &Message) -> Result<()> {
        match self {
            Self::Kafka(publisher) => publisher.publish(message).await,
            Self::Embedded(publisher) => publisher.publish(message).await,
        }
    }

    /// [`publish`](Self::publish), except that a change too large for the
    /// bus is sent truncated rather than failing: with its object's
    /// metadata only, else with the metadata's identity only, marked with
    /// the digest and size of the whole object, so the correlator records
    /// it. Other messages, and other errors, are as `publish`.
    pub async fn publish_fitting(&self, message: &Message) -> Result<Sent> {
        let err = match self.publish(message).await {
            Ok(()) => return Ok(Sent::Whole),
            Err(err) => err,
        };
        let (Message::Change(event), Error::TooLarge { bytes, .. }) = (message, &err) else {
            return Err(err);
        };
        let bytes = *bytes;
        let mut last = err;
        for identity_only in [false, true] {
            let truncated = Message::Change(event.truncated(identity_only));
            match self.publish(&truncated).await {
                Ok(()) => {
                    return Ok(Sent::Truncated {
                        bytes,
                        identity_only,
                    });
                }
                Err(err @ Error::TooLarge { .. }) => last = err,
                Err(err) => return Err(err),
            }
        }
        Err(last)
    }
}

/// The receiving end of the bus.
#[derive(Debug)]
pub enum Consumer {
    /// Consumes both topics from Kafka in a consumer group.
    Kafka(KafkaConsumer),
    /// Consumes the in-process channel.
    Embedded(EmbeddedConsumer),
}

impl Consumer {
    /// A Kafka consumer in group `config.group_id`, subscribed to the
    /// changes and audit topics, starting at the group's committed offsets
    /// (or the earliest), with a producer for dead letters.
    pub fn kafka(config: &KafkaConfig) -> Result<Self> {
        KafkaConsumer::new(config).map(Self::Kafka)
    }

    /// Waits up to `wait` for the first item, then returns what is ready,
    /// up to `max` items; empty if nothing came in time. Items with the same
    /// key come in the order they were published.
    ///
    /// A payload this build refuses to read (not a message, empty, or a
    /// `schema` other than [`model::SCHEMA`]) is a [`Received::Rejected`]
    /// in its place: record it, [`dead_letter`](Self::dead_letter) it, and
    /// only then commit its position. [`Error::Closed`] means nothing more
    /// will come.
    pub async fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Received>> {
        match self {
            Self::Kafka(consumer) => consumer.receive(max, wait).await,
            Self::Embedded(consumer) => Ok(consumer
                .next_batch(max, wait)
                .await?
                .into_iter()
                .map(Received::Message)
                .collect()),
        }
    }

    /// Sends a refused payload to the dead-letter topic
    /// (`<prefix>driftwarden.deadletter.v1`): its key and payload as they
    /// were, with headers [`HEADER_SOURCE_TOPIC`],
    /// [`HEADER_SOURCE_PARTITION`], [`HEADER_SOURCE_OFFSET`] and
    /// [`HEADER_REASON`]; resolves once the broker acknowledged it. A
    /// payload too large to send again goes without it, with
    /// [`HEADER_PAYLOAD_SHA256`] and [`HEADER_PAYLOAD_BYTES`]. Sending the
    /// same one twice (after a crash before the commit) gives two dead
    /// letters. The embedded bus carries no foreign payloads: nothing to do.
    pub async fn dead_letter(&self, rejected: &Rejected) -> Result<()> {
        match self {
            Self::Kafka(consumer) => consumer.dead_letter(rejected).await,
            Self::Embedded(_) => Ok(()),
        }
    }

    /// Like [`receive`](Self::receive), but a refused payload is returned
    /// as an error of its own (after the messages before it), naming its
    /// [`Position`] ([`Error::position`]). Prefer `receive`, which hands
    /// out the payload for the dead-letter topic.
    pub async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        match self {
            Self::Kafka(consumer) => consumer.next_batch(max, wait).await,
            Self::Embedded(consumer) => consumer.next_batch(max, wait).await,
        }
    }

    /// Marks everything up to and including `positions` as done, so a
    /// consumer of the same group resumes after them. Call it only after what
    /// the messages produced is durably stored. Kafka: commits the offset
    /// after the highest position of each partition and waits for the broker.
    /// Embedded: does nothing, as the channel keeps nothing across restarts.
    pub async fn commit(&mut self, positions: &[Position]) -> Result<()> {
        match self {
            Self::Kafka(consumer) => consumer.commit(positions).await,
            Self::Embedded(_) => Ok(()),
        }
    }

    /// Stops consuming; for Kafka, leaves the group and waits until that is
    /// done, so another member takes over the partitions at once.
    pub async fn close(self) {
        if let Self::Kafka(consumer) = self {
            consumer.close().await;
        }
    }
}
