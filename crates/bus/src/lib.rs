//! The event bus between watchers and correlators.
//!
//! ```text
//! watcher ──publish──▶ bus (Kafka or embedded channel) ──next_batch──▶ correlator
//!                                                        ◀──commit──── (after the ledger flushed)
//! ```
//!
//! Two implementations behind one small API: Kafka (rdkafka) in production
//! and a bounded in-process channel for the single-binary default. A
//! [`Publisher`] resolves once a message is durably accepted; a [`Consumer`]
//! hands out batches of [`Delivery`]s and commits their [`Position`]s when
//! the caller has stored what they produced. The wire format (tagged JSON,
//! `schema: 1`) lives in [`Message`].

use std::time::Duration;

mod embedded;
mod error;
mod kafka;
mod wire;

pub use embedded::{DEFAULT_CAPACITY, EmbeddedConsumer, EmbeddedPublisher};
pub use error::{Error, Result};
pub use kafka::{DEFAULT_BUFFER, KafkaConfig, KafkaConsumer, KafkaPublisher, ensure_topics};
pub use wire::{AUDIT_TOPIC, CHANGES_TOPIC, Delivery, Message, Position, Topics};

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

impl Publisher {
    /// A Kafka publisher: idempotent, `acks=all`, lz4, a 1 ms linger.
    pub fn kafka(config: &KafkaConfig) -> Result<Self> {
        KafkaPublisher::new(config).map(Self::Kafka)
    }

    /// Publishes `message` to its topic under its key. Resolves when the
    /// message is durably accepted: acknowledged by all in-sync replicas
    /// (Kafka) or enqueued (embedded, waiting while the channel is full).
    pub async fn publish(&self, message: &Message) -> Result<()> {
        match self {
            Self::Kafka(publisher) => publisher.publish(message).await,
            Self::Embedded(publisher) => publisher.publish(message).await,
        }
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
    /// A Kafka consumer in group `config.group_id`, subscribed to both
    /// topics, starting at the group's committed offsets (or the earliest).
    pub fn kafka(config: &KafkaConfig) -> Result<Self> {
        KafkaConsumer::new(config).map(Self::Kafka)
    }

    /// Waits up to `wait` for the first message, then returns what is ready,
    /// up to `max` messages; empty if nothing came in time. Messages with the
    /// same key come in the order they were published.
    ///
    /// A payload that cannot be decoded is returned as an error of its own
    /// (after the messages before it), naming its [`Position`]
    /// ([`Error::position`]): record it, then commit past it. [`Error::Closed`]
    /// means nothing more will come.
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
