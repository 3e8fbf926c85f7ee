//! The Kafka bus against the real broker of the test environment
//! (`cargo xtask env up`): the shared behaviour, commits in a consumer group,
//! redelivery of what was not committed, and undecodable payloads.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{assert_nothing_more, change, collect, id};
use driftwarden_bus::{
    Consumer, Error, KafkaConfig, Message, Position, Publisher, Topics, ensure_topics,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use testenv::NOT_RUNNING;

const PARTITIONS: i32 = 3;
const PATIENCE: Duration = Duration::from_secs(60);

/// The broker of the test environment; fails with the command to run when
/// the environment is missing.
fn brokers() -> String {
    testenv::TestEnv::get().kafka_brokers.clone()
}

/// An error with its causes, for a failure message.
fn chain(err: &dyn std::error::Error) -> String {
    match err.source() {
        Some(source) => format!("{err}: {}", chain(source)),
        None => err.to_string(),
    }
}

/// Topics and settings of one test, under a prefix no other test uses.
async fn setup(test: &str) -> (KafkaConfig, Topics) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let prefix = format!("bus-{test}-{}-{nanos}.", std::process::id());
    let brokers = brokers();
    let topics = ensure_topics(&brokers, &prefix, PARTITIONS)
        .await
        .unwrap_or_else(|err| panic!("{NOT_RUNNING} ({})", chain(&err)));
    let config = KafkaConfig::new(brokers, format!("{prefix}group")).with_prefix(prefix);
    (config, topics)
}

fn consumer(config: &KafkaConfig) -> Consumer {
    Consumer::kafka(config).expect("kafka consumer")
}

fn positions(deliveries: &[driftwarden_bus::Delivery]) -> Vec<Position> {
    deliveries
        .iter()
        .map(|d| d.position.clone().expect("kafka deliveries have positions"))
        .collect()
}

async fn publish_all(publisher: &Publisher, messages: &[Message]) {
    for message in messages {
        publisher
            .publish(message)
            .await
            .expect("broker acknowledges");
    }
}

#[tokio::test]
async fn kafka_delivers_everything_in_order_per_key() {
    let (config, _) = setup("order").await;
    let publisher = Publisher::kafka(&config).expect("kafka publisher");
    common::delivers_everything_in_order_per_key(publisher, consumer(&config)).await;
}

#[tokio::test]
async fn kafka_consumer_resumes_after_the_committed_offsets() {
    let (config, topics) = setup("resume").await;
    let publisher = Publisher::kafka(&config).expect("kafka publisher");
    let first: Vec<Message> = (1..=10)
        .map(|v| change(&format!("o{}", v % 4), v))
        .collect();
    publish_all(&publisher, &first).await;

    let mut reader = consumer(&config);
    let received = collect(&mut reader, first.len(), PATIENCE).await;
    assert_eq!(received.len(), first.len());
    let done = positions(&received);
    assert!(done.iter().all(|p| p.topic == topics.changes), "{done:?}");
    reader.commit(&done).await.expect("commit");
    reader.close().await;

    let second: Vec<Message> = (11..=15)
        .map(|v| change(&format!("o{}", v % 4), v))
        .collect();
    publish_all(&publisher, &second).await;
    let mut successor = consumer(&config);
    let received = collect(&mut successor, second.len(), PATIENCE).await;
    let ids: BTreeSet<String> = received.iter().map(|d| id(&d.message)).collect();
    assert_eq!(ids, second.iter().map(id).collect::<BTreeSet<_>>());
    assert_nothing_more(&mut successor, Duration::from_secs(1)).await;
    successor.close().await;
}

#[tokio::test]
async fn kafka_uncommitted_messages_are_delivered_again() {
    let (config, _) = setup("redeliver").await;
    let publisher = Publisher::kafka(&config).expect("kafka publisher");
    let sent: Vec<Message> = (1..=12)
        .map(|v| change(&format!("o{}", v % 3), v))
        .collect();
    publish_all(&publisher, &sent).await;

    let mut crashed = consumer(&config);
    let received = collect(&mut crashed, sent.len(), PATIENCE).await;
    assert_eq!(received.len(), sent.len());
    let (stored, lost) = received.split_at(5);
    crashed.commit(&positions(stored)).await.expect("commit");
    crashed.close().await;

    let mut successor = consumer(&config);
    let again = collect(&mut successor, lost.len(), PATIENCE).await;
    let again_ids: BTreeSet<String> = again.iter().map(|d| id(&d.message)).collect();
    let lost_ids: BTreeSet<String> = lost.iter().map(|d| id(&d.message)).collect();
    assert_eq!(
        again_ids, lost_ids,
        "exactly the uncommitted messages come again"
    );
    assert_nothing_more(&mut successor, Duration::from_secs(1)).await;
    successor.close().await;
}

#[tokio::test]
async fn kafka_undecodable_payload_is_an_error_naming_its_position() {
    let (config, topics) = setup("garbage").await;
    let publisher = Publisher::kafka(&config).expect("kafka publisher");
    let before = change("obj", 1);
    let after = change("obj", 2);
    let key = before.key();
    publisher.publish(&before).await.expect("published");
    let raw: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()
        .expect("raw producer");
    let record = FutureRecord::to(&topics.changes)
        .key(&key)
        .payload("not json");
    raw.send(record, Timeout::Never)
        .await
        .expect("garbage published");
    publisher.publish(&after).await.expect("published");

    let mut consumer = consumer(&config);
    let mut outcomes = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while outcomes.len() < 3 && tokio::time::Instant::now() < deadline {
        match consumer.next_batch(10, Duration::from_millis(200)).await {
            Ok(batch) => outcomes.extend(batch.into_iter().map(Ok)),
            Err(err) => outcomes.push(Err(err)),
        }
    }
    let [Ok(first), Err(err), Ok(last)] = outcomes.as_slice() else {
        panic!("expected message, error, message; got {outcomes:?}");
    };
    assert_eq!(first.message, before);
    assert_eq!(last.message, after);
    let first_at = first.position.clone().expect("position");
    let bad_at = err.position().expect("the error names its position");
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert_eq!(bad_at.topic, topics.changes);
    assert_eq!(bad_at.partition, first_at.partition);
    assert_eq!(bad_at.offset, first_at.offset + 1);
    assert!(err.to_string().contains(&bad_at.to_string()), "{err}");
    consumer.close().await;
}

#[tokio::test]
async fn kafka_ensure_topics_is_idempotent() {
    let (config, topics) = setup("ensure").await;
    let again = ensure_topics(&config.brokers, &config.prefix, PARTITIONS)
        .await
        .expect("existing topics are fine");
    assert_eq!(again, topics);
}
