//! The Kafka bus against the real broker of the test environment
//! (`cargo xtask env up`): the shared behaviour, commits in a consumer group,
//! redelivery of what was not committed, refused payloads and the
//! dead-letter topic, messages near and over the size limit, and the
//! checkpoint topic.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{assert_nothing_more, change, collect, id};
use driftwarden_bus::{
    Consumer, Error, HEADER_REASON, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC, KafkaConfig, MAX_MESSAGE_BYTES, Message, Position, Publisher, Received,
    Rejected, Sent, TopicPublisher, Topics, ensure_topics, latest_checkpoints,
};
use model::ChangeEvent;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
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

/// A topic prefix no other test uses.
fn prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("bus-{test}-{}-{nanos}.", std::process::id())
}

/// Topics and settings of one test, under a prefix no other test uses.
async fn setup(test: &str) -> (KafkaConfig, Topics) {
    let prefix = prefix(test);
    let config = KafkaConfig::new(brokers(), format!("{prefix}group")).with_prefix(prefix);
    let topics = ensure_topics(&config, PARTITIONS)
        .await
        .unwrap_or_else(|err| panic!("{NOT_RUNNING} ({})", chain(&err)));
    (config, topics)
}

/// A producer that sends whatever it is given.
fn raw_producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("raw producer")
}

/// Receives until `count` items came or the patience ran out.
async fn receive_items(consumer: &mut Consumer, count: usize) -> Vec<Received> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut items = Vec::new();
    while items.len() < count && tokio::time::Instant::now() < deadline {
        let batch = consumer
            .receive(count - items.len(), Duration::from_millis(200))
            .await
            .expect("the bus delivers");
        items.extend(batch);
    }
    items
}

/// `bytes` characters of pseudo-random hex: lz4 cannot shrink them.
fn incompressible(bytes: usize, seed: u64) -> String {
    let mut state = seed | 1;
    let mut text = String::with_capacity(bytes);
    while text.len() < bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push_str(&format!("{state:016x}"));
    }
    text.truncate(bytes);
    text
}

/// A change of object `name` whose object carries `bytes` of incompressible
/// data and a small metadata.
fn big_change(name: &str, version: u64, bytes: usize) -> Message {
    let Message::Change(mut event) = change(name, version) else {
        unreachable!("change() is a change")
    };
    event.object = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "team-a", "resourceVersion": version.to_string()},
        "data": {"blob": incompressible(bytes, version)},
    });
    Message::Change(event)
}

fn event_of(message: &Message) -> &ChangeEvent {
    match message {
        Message::Change(event) => event,
        Message::Audit(_) => panic!("expected a change"),
    }
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
    let raw = raw_producer(&config.brokers);
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
    let again = ensure_topics(&config, PARTITIONS)
        .await
        .expect("existing topics are fine");
    assert_eq!(again, topics);
}

#[tokio::test]
async fn kafka_ensure_topics_creates_the_dead_letter_topic_and_allows_large_messages() {
    let (config, topics) = setup("limits").await;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()
        .expect("admin client");
    let names = topics.all();
    let specifiers: Vec<ResourceSpecifier<'_>> =
        names.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    // A topic just created may be described before its config is known.
    let deadline = Instant::now() + PATIENCE;
    let described = loop {
        let described = admin
            .describe_configs(&specifiers, &AdminOptions::new())
            .await
            .expect("described");
        let known = described.iter().all(|resource| {
            resource
                .as_ref()
                .is_ok_and(|r| r.get("max.message.bytes").is_some())
        });
        if known || Instant::now() >= deadline {
            break described;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(described.len(), names.len());
    for resource in described {
        let resource = resource.expect("a topic's config");
        let max = resource
            .get("max.message.bytes")
            .and_then(|entry| entry.value.clone());
        assert_eq!(
            max,
            Some(MAX_MESSAGE_BYTES.to_string()),
            "{:?}",
            resource.specifier
        );
    }
    assert!(topics.dead_letter.ends_with("driftwarden.deadletter.v1"));
}

#[tokio::test]
async fn kafka_refused_payloads_come_back_rejected_and_land_in_the_dead_letter_topic() {
    let (config, topics) = setup("deadletter").await;
    let publisher = Publisher::kafka(&config).expect("kafka publisher");
    let before = change("obj", 1);
    let after = change("obj", 2);
    let key = before.key();
    let current = String::from_utf8(change("obj", 3).encode().expect("encodes")).expect("utf-8");
    let unknown = current
        .replacen(r#""schema":1,"#, r#""schema":99,"#, 1)
        .into_bytes();
    assert!(unknown.starts_with(br#"{"type":"change","schema":99,"#));
    let garbage = b"\x00\xffnot json".to_vec();

    publisher.publish(&before).await.expect("published");
    let raw = raw_producer(&config.brokers);
    for payload in [&garbage, &unknown] {
        let record = FutureRecord::to(&topics.changes).key(&key).payload(payload);
        raw.send(record, Timeout::Never)
            .await
            .expect("foreign payload published");
    }
    publisher.publish(&after).await.expect("published");

    let mut reader = consumer(&config);
    let items = receive_items(&mut reader, 4).await;
    let [
        Received::Message(first),
        Received::Rejected(bad),
        Received::Rejected(newer),
        Received::Message(last),
    ] = items.as_slice()
    else {
        panic!("expected message, rejected, rejected, message; got {items:?}");
    };
    assert_eq!((&first.message, &last.message), (&before, &after));
    let first_at = first.position.clone().expect("position");
    for (offset, rejected, payload, reason) in [
        (1, bad, &garbage, "not a message this build reads"),
        (
            2,
            newer,
            &unknown,
            "schema version 99, but this build reads version 1",
        ),
    ] {
        assert_eq!(
            rejected.position,
            Position {
                offset: first_at.offset + offset,
                ..first_at.clone()
            }
        );
        assert!(rejected.reason.starts_with(reason), "{}", rejected.reason);
        assert_eq!(&rejected.payload, payload);
        assert_eq!(rejected.key.as_deref(), Some(key.as_bytes()));
        reader.dead_letter(rejected).await.expect("dead-lettered");
    }
    let done: Vec<Position> = items.iter().filter_map(|i| i.position().cloned()).collect();
    reader.commit(&done).await.expect("commit");
    reader.close().await;

    let brokers = config.brokers.clone();
    let topic = topics.dead_letter.clone();
    let letters =
        tokio::task::spawn_blocking(move || testenv::read_topic(&brokers, &topic, PATIENCE))
            .await
            .expect("reader ran")
            .expect("dead-letter topic read");
    let expected: [&Rejected; 2] = [bad, newer];
    assert_eq!(letters.len(), 2, "{letters:?}");
    for (letter, rejected) in letters.iter().zip(expected) {
        assert_eq!(letter.payload, rejected.payload);
        assert_eq!(letter.key, key.as_bytes());
        assert_eq!(
            letter.header(HEADER_SOURCE_TOPIC).as_deref(),
            Some(topics.changes.as_str())
        );
        assert_eq!(
            letter.header(HEADER_SOURCE_PARTITION),
            Some(rejected.position.partition.to_string())
        );
        assert_eq!(
            letter.header(HEADER_SOURCE_OFFSET),
            Some(rejected.position.offset.to_string())
        );
        assert_eq!(letter.header(HEADER_REASON), Some(rejected.reason.clone()));
    }

    // The group resumes after the refused payloads: nothing comes again.
    let mut successor = consumer(&config);
    assert_nothing_more(&mut successor, Duration::from_secs(1)).await;
    successor.close().await;
}

#[tokio::test]
async fn kafka_carries_a_change_of_three_mebibytes_whole() {
    let (config, _) = setup("large").await;
    let publisher = Publisher::kafka(&config).expect("kafka publisher");
    let message = big_change("big", 1, 3 * 1024 * 1024);
    let bytes = message.encode().expect("encodes").len();
    let started = Instant::now();
    let sent = publisher
        .publish_fitting(&message)
        .await
        .expect("published");
    assert_eq!(sent, Sent::Whole);
    let mut consumer = consumer(&config);
    let received = collect(&mut consumer, 1, PATIENCE).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].message, message);
    println!(
        "largest message: {bytes} bytes, published and consumed in {:?}",
        started.elapsed()
    );
    consumer.close().await;
}

#[tokio::test]
async fn kafka_change_over_the_limit_is_too_large_and_goes_truncated() {
    let (config, _) = setup("toolarge").await;
    let publisher = Publisher::kafka(&config).expect("kafka publisher");
    let message = big_change("huge", 1, MAX_MESSAGE_BYTES + 1024);
    let whole_object = serde_json::to_vec(&event_of(&message).object).expect("json");
    let err = publisher.publish(&message).await.expect_err("too large");
    let Error::TooLarge { bytes, .. } = &err else {
        panic!("expected TooLarge, got {err:?}");
    };
    assert!(*bytes > MAX_MESSAGE_BYTES, "{err}");

    let sent = publisher
        .publish_fitting(&message)
        .await
        .expect("published");
    assert!(
        matches!(
            sent,
            Sent::Truncated {
                identity_only: false,
                ..
            }
        ),
        "{sent:?}"
    );
    let small = change("small", 2);
    publisher
        .publish(&small)
        .await
        .expect("the producer goes on");

    let mut consumer = consumer(&config);
    let received = collect(&mut consumer, 2, PATIENCE).await;
    let truncated = received
        .iter()
        .map(|d| event_of(&d.message))
        .find(|e| e.uid == "huge")
        .expect("the truncated change");
    let truncation = truncated.truncated.clone().expect("marked truncated");
    assert_eq!(truncation.size, whole_object.len() as u64);
    assert_eq!(truncation.sha256.len(), 64);
    assert_eq!(truncated.object["metadata"]["name"], "huge");
    assert!(truncated.object.get("data").is_none());
    assert!(received.iter().any(|d| d.message == small));
    consumer.close().await;
}

#[tokio::test]
async fn kafka_broker_refusing_a_message_for_its_size_is_too_large_and_the_producer_goes_on() {
    // Topics made by hand with a small limit, as an older deployment has.
    let prefix = prefix("brokerlimit");
    let config = KafkaConfig::new(brokers(), format!("{prefix}group")).with_prefix(prefix.clone());
    let topics = Topics::new(&prefix).expect("valid prefix");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()
        .expect("admin client");
    let new_topics: Vec<NewTopic<'_>> = topics
        .all()
        .into_iter()
        .map(|t| {
            NewTopic::new(t, 1, TopicReplication::Fixed(-1)).set("max.message.bytes", "100000")
        })
        .collect();
    for result in admin
        .create_topics(&new_topics, &AdminOptions::new())
        .await
        .expect("created")
    {
        result.expect("topic created");
    }

    let publisher = Publisher::kafka(&config).expect("kafka publisher");
    let first = change("obj", 1);
    publisher.publish(&first).await.expect("small message");
    let big = big_change("obj", 2, 300_000);
    let err = publisher
        .publish(&big)
        .await
        .expect_err("refused by the broker");
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    let sent = publisher.publish_fitting(&big).await.expect("published");
    assert!(matches!(sent, Sent::Truncated { .. }), "{sent:?}");
    let last = change("obj", 3);
    publisher
        .publish(&last)
        .await
        .expect("the producer goes on");

    let mut consumer = consumer(&config);
    let received = collect(&mut consumer, 3, PATIENCE).await;
    let versions: Vec<(String, bool)> = received
        .iter()
        .map(|d| {
            let event = event_of(&d.message);
            (event.resource_version.clone(), event.truncated.is_some())
        })
        .collect();
    assert_eq!(
        versions,
        [("1".into(), false), ("2".into(), true), ("3".into(), false)],
        "one object's changes stay in order"
    );
    assert_nothing_more(&mut consumer, Duration::from_millis(500)).await;
    consumer.close().await;
}

#[tokio::test]
async fn kafka_checkpoints_are_kept_forever_and_the_latest_is_read_back() {
    let (config, topics) = setup("checkpoints").await;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()
        .expect("admin client");
    // A topic just created may be described before its config is known.
    let deadline = Instant::now() + PATIENCE;
    let settings = loop {
        let described = admin
            .describe_configs(
                &[ResourceSpecifier::Topic(&topics.checkpoints)],
                &AdminOptions::new(),
            )
            .await
            .expect("described");
        let settings: Vec<Option<String>> = ["cleanup.policy", "retention.ms", "retention.bytes"]
            .iter()
            .map(|name| {
                described
                    .first()
                    .and_then(|resource| resource.as_ref().ok())
                    .and_then(|resource| resource.get(name))
                    .and_then(|entry| entry.value.clone())
            })
            .collect();
        if settings.iter().all(Option::is_some) || Instant::now() >= deadline {
            break settings;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        settings,
        [Some("delete".into()), Some("-1".into()), Some("-1".into())]
    );

    let wait = Duration::from_secs(10);
    let none = latest_checkpoints(&config, wait)
        .await
        .expect("an empty topic reads");
    assert_eq!(none, Vec::new());

    let publisher = TopicPublisher::new(&config).expect("checkpoint publisher");
    assert_eq!(publisher.topic(), topics.checkpoints);
    for seq in 1..=20 {
        let payload = format!(r#"{{"seq":{seq}}}"#);
        publisher
            .publish(b"key", payload.as_bytes())
            .expect("queued");
    }
    // Dropping it sends what is queued.
    drop(publisher);
    let latest = latest_checkpoints(&config, wait)
        .await
        .expect("the topic reads");
    assert_eq!(latest.len(), 1, "{latest:?}");
    assert_eq!(latest[0].payload, br#"{"seq":20}"#);
    assert_eq!(latest[0].key.as_deref(), Some(&b"key"[..]));
    assert_eq!(latest[0].position.topic, topics.checkpoints);
    assert_eq!(latest[0].position.offset, 19);

    // A topic never created holds no checkpoint.
    let other = KafkaConfig::new(brokers(), "g").with_prefix(prefix("nocheckpoints"));
    assert_eq!(
        latest_checkpoints(&other, wait).await.expect("reads"),
        Vec::new()
    );
}

#[tokio::test]
async fn kafka_unreachable_checkpoint_topic_fails_within_its_wait() {
    let config = KafkaConfig::new("127.0.0.1:1", "g").with_prefix(prefix("unreachable"));
    let started = Instant::now();
    let err = latest_checkpoints(&config, Duration::from_secs(2))
        .await
        .expect_err("nobody listens there");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, Error::Kafka { .. }), "{}", chain(&err));
}
