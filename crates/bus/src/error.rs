//! The one error type of the bus.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::security::SecurityError;
use crate::wire::Position;

/// Everything that can go wrong publishing, consuming or decoding.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A message could not be turned into JSON.
    #[error("cannot encode the message with key `{key}`")]
    Encode {
        /// The message's key.
        key: String,
        /// The serializer's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A payload on the bus is not a message this build understands.
    #[error("cannot decode the message at {position}: {source}")]
    Decode {
        /// Where the payload sits, so it can be inspected and skipped.
        position: Position,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A message on the bus has no payload at all.
    #[error("the message at {position} has an empty payload")]
    EmptyPayload {
        /// Where the message sits.
        position: Position,
    },
    /// A payload was written with a schema version this build does not read.
    #[error(
        "the message at {position} has schema version {version}, but this build reads version \
         {expected}: run a Driftwarden release that reads version {version}"
    )]
    UnknownSchema {
        /// Where the message sits.
        position: Position,
        /// The version found in the payload.
        version: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// A topic prefix contains characters Kafka does not allow in topic names.
    #[error(
        "topic prefix `{prefix}` is invalid: use only ASCII letters, digits, `.`, `_` and `-`, \
         at most {max} characters"
    )]
    InvalidPrefix {
        /// The prefix as given.
        prefix: String,
        /// The longest prefix allowed.
        max: usize,
    },
    /// A setting that must be positive is zero.
    #[error("bus setting `{setting}` must be at least 1")]
    Zero {
        /// Which setting.
        setting: &'static str,
    },
    /// No Kafka broker address was given.
    #[error("no Kafka brokers configured: give a comma-separated list of host:port")]
    NoBrokers,
    /// A Kafka client could not be created or a request to Kafka failed.
    #[error("kafka: cannot {action}")]
    Kafka {
        /// What was being done, e.g. `create the producer`.
        action: &'static str,
        /// The client's error.
        #[source]
        source: KafkaError,
    },
    /// A message is larger than the bus accepts: the producer's
    /// `message.max.bytes` or the topic's `max.message.bytes`. Nothing was
    /// stored; the producer stays usable. Send a smaller message instead
    /// ([`Publisher::publish_fitting`](crate::Publisher::publish_fitting)
    /// does so for changes).
    #[error("a message of {bytes} bytes is too large for topic `{topic}`")]
    TooLarge {
        /// The topic the message was meant for.
        topic: String,
        /// The payload's size.
        bytes: usize,
        /// The client's error.
        #[source]
        source: KafkaError,
    },
    /// The brokers refused the client's credentials (SASL) or the TLS
    /// handshake failed (untrusted broker certificate, a client certificate
    /// the broker refused). Retrying will not help: fix the security
    /// settings.
    #[error("kafka at {brokers} refused the connection: {reason}")]
    Refused {
        /// The bootstrap brokers.
        brokers: String,
        /// Which check failed.
        kind: Refusal,
        /// The client's report, e.g. `SASL authentication error:
        /// Authentication failed during authentication due to invalid
        /// credentials with SASL mechanism SCRAM-SHA-512`.
        reason: String,
    },
    /// The security settings cannot work (see
    /// [`SecurityError::setting`] for the setting at fault).
    #[error("kafka security setting `{}`", .0.setting())]
    Security(#[source] SecurityError),
    /// An extra librdkafka option would override one Driftwarden sets.
    #[error(
        "librdkafka option `{key}` is set by Driftwarden itself and cannot be overridden{hint}"
    )]
    ReservedOption {
        /// The option.
        key: String,
        /// Where to set it instead, if anywhere.
        hint: &'static str,
    },
    /// The broker did not acknowledge a message.
    #[error("kafka did not accept a message for topic `{topic}`")]
    Delivery {
        /// The topic the message was meant for.
        topic: String,
        /// The client's error.
        #[source]
        source: KafkaError,
    },
    /// A topic could not be created.
    #[error("cannot create topic `{topic}`: {code}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        code: RDKafkaErrorCode,
    },
    /// A read of a topic did not reach the end of its partitions in time:
    /// the brokers are slow or the topic's leader is unavailable.
    #[error("kafka: topic `{topic}` was not read to its end within {wait:?}")]
    Timeout {
        /// The topic, with its prefix.
        topic: String,
        /// How long the read waited.
        wait: std::time::Duration,
    },
    /// The consumer's polling thread could not be started.
    #[error("cannot start the kafka consumer thread")]
    Thread(#[source] std::io::Error),
    /// The other end of the bus is gone: every publisher was dropped (embedded)
    /// or the consumer's polling thread stopped (Kafka).
    #[error("the bus is closed")]
    Closed,
}

/// What a broker's refusal was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// SASL authentication failed: wrong user, password or mechanism.
    Authentication,
    /// The TLS handshake failed: the broker's certificate is not trusted,
    /// or the broker refused the client's certificate.
    Tls,
}

impl Error {
    /// Where the offending message sits, for errors about one message on the
    /// bus. The caller can record it and commit past it.
    pub fn position(&self) -> Option<&Position> {
        match self {
            Self::Decode { position, .. }
            | Self::EmptyPayload { position }
            | Self::UnknownSchema { position, .. } => Some(position),
            _ => None,
        }
    }
}

/// Result of bus operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
