//! Kafka as a test sees it: every message of a topic, whether the broker
//! answers, and the TLS + SCRAM listener with its users.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::unique_suffix;

/// One Kafka message: key and payload (empty when absent), and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaMessage {
    /// The partition it was read from.
    pub partition: i32,
    /// Its key.
    pub key: Vec<u8>,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its headers, in order (a header without a value has an empty one).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl KafkaMessage {
    /// The value of the first header named `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
    }
}

/// Kafka's second listener: TLS with a certificate from the environment's
/// CA (client certificates requested, not required) and SASL
/// SCRAM-SHA-512. Its ACLs let [`user`](Self::user) produce to, consume
/// from and create the topics named `driftwarden.*` and read as the groups
/// named `driftwarden*`; [`stranger`](Self::stranger) authenticates but may
/// do nothing.
#[derive(Debug, Clone)]
pub struct SecureKafka {
    /// Bootstrap servers of the listener.
    pub brokers: String,
    /// The SASL mechanism, `SCRAM-SHA-512`.
    pub mechanism: String,
    /// The user with rights on `driftwarden.*`.
    pub user: String,
    /// The file holding its password (one line).
    pub password_file: PathBuf,
    /// A user with no rights.
    pub stranger: String,
    /// The file holding the stranger's password.
    pub stranger_password_file: PathBuf,
    /// A client certificate the listener accepts (PEM).
    pub client_cert: PathBuf,
    /// Its key (PEM).
    pub client_key: PathBuf,
    /// The CA that signed the listener's certificate.
    pub ca_cert: PathBuf,
}

impl SecureKafka {
    /// The password of [`user`](Self::user).
    pub fn password(&self) -> Result<String> {
        read_password(&self.password_file)
    }

    /// The password of [`stranger`](Self::stranger).
    pub fn stranger_password(&self) -> Result<String> {
        read_password(&self.stranger_password_file)
    }

    /// librdkafka settings for this listener: TLS trusting the
    /// environment's CA, and SASL as `(user, password)` when given (else
    /// TLS alone, no credentials, which the broker refuses).
    pub fn client_config(&self, credentials: Option<(&str, &str)>) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("ssl.ca.location", self.ca_cert.display().to_string());
        match credentials {
            Some((user, password)) => config
                .set("security.protocol", "sasl_ssl")
                .set("sasl.mechanism", &self.mechanism)
                .set("sasl.username", user)
                .set("sasl.password", password),
            None => config.set("security.protocol", "ssl"),
        };
        config
    }
}

fn read_password(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the password file {}", path.display()))?;
    Ok(text.trim_end().to_string())
}

/// Every message of `topic` on every partition, from the first to the last
/// one present when called. Blocks: call it from `spawn_blocking`.
pub fn read_topic(brokers: &str, topic: &str, timeout: Duration) -> Result<Vec<KafkaMessage>> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", brokers);
    read_topic_with(client, topic, timeout)
}

/// [`read_topic`] with the connection settings `client` (e.g. from
/// [`SecureKafka::client_config`]); its `group.id`, when set, must be one
/// the client may use (nothing is committed), else one of its own is used.
pub fn read_topic_with(
    mut client: ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<KafkaMessage>> {
    if client.get("group.id").is_none() {
        client.set("group.id", format!("e2e-reader-{}", unique_suffix()));
    }
    let consumer: BaseConsumer = client
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
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        messages.push(KafkaMessage {
            partition,
            key: message.key().unwrap_or_default().to_vec(),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
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
