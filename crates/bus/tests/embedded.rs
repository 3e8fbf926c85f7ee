//! The embedded bus: the shared behaviour, plus back-pressure and closing.

mod common;

use std::time::Duration;

use common::{change, collect, id};
use driftwarden_bus::{Error, MAX_MESSAGE_BYTES, Message, Received, Sent, embedded};
use model::ChangeEvent;

#[tokio::test]
async fn embedded_delivers_everything_in_order_per_key() {
    let (publisher, consumer) = embedded(driftwarden_bus::DEFAULT_CAPACITY).expect("embedded bus");
    common::delivers_everything_in_order_per_key(publisher, consumer).await;
}

#[tokio::test]
async fn embedded_delivers_through_a_channel_smaller_than_the_burst() {
    let (publisher, consumer) = embedded(3).expect("embedded bus");
    common::delivers_everything_in_order_per_key(publisher, consumer).await;
}

#[tokio::test]
async fn embedded_publish_waits_while_the_channel_is_full() {
    let (publisher, mut consumer) = embedded(2).expect("embedded bus");
    publisher.publish(&change("a", 1)).await.expect("room");
    publisher.publish(&change("a", 2)).await.expect("room");

    let third = change("a", 3);
    let blocked = tokio::time::timeout(Duration::from_millis(100), publisher.publish(&third));
    assert!(
        blocked.await.is_err(),
        "publish must wait while the channel is full"
    );

    let waiting = tokio::spawn({
        let publisher = publisher.clone();
        async move { publisher.publish(&third).await }
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "still full");
    let first = consumer
        .next_batch(1, Duration::from_secs(1))
        .await
        .expect("a message");
    assert_eq!(first.len(), 1);
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("publish resumes once there is room")
        .expect("task ran")
        .expect("published");

    let rest = collect(&mut consumer, 2, Duration::from_secs(1)).await;
    let ids: Vec<String> = first.iter().chain(&rest).map(|d| id(&d.message)).collect();
    assert_eq!(ids, ["a#1", "a#2", "a#3"]);
}

#[tokio::test]
async fn embedded_deliveries_have_no_position_and_commit_is_a_no_op() {
    let (publisher, mut consumer) = embedded(4).expect("embedded bus");
    publisher.publish(&change("a", 1)).await.expect("room");
    let batch = consumer
        .next_batch(10, Duration::from_secs(1))
        .await
        .expect("a message");
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].position, None);
    consumer.commit(&[]).await.expect("commit does nothing");
}

#[tokio::test]
async fn embedded_consumer_reports_closed_after_the_last_publisher_is_gone() {
    let (publisher, mut consumer) = embedded(4).expect("embedded bus");
    let clone = publisher.clone();
    publisher.publish(&change("a", 1)).await.expect("room");
    drop(publisher);
    drop(clone);
    let batch = consumer
        .next_batch(10, Duration::from_secs(1))
        .await
        .expect("the message sent before closing");
    assert_eq!(batch.len(), 1);
    let err = consumer
        .next_batch(10, Duration::from_secs(1))
        .await
        .expect_err("closed");
    assert!(matches!(err, Error::Closed), "{err:?}");
}

#[tokio::test]
async fn embedded_publish_fails_once_the_consumer_is_gone() {
    let (publisher, consumer) = embedded(4).expect("embedded bus");
    drop(consumer);
    let err = publisher
        .publish(&change("a", 1))
        .await
        .expect_err("closed");
    assert!(matches!(err, Error::Closed), "{err:?}");
}

#[tokio::test]
async fn embedded_bus_with_zero_capacity_is_rejected() {
    let err = embedded(0).expect_err("zero capacity");
    assert!(err.to_string().contains("capacity"), "{err}");
}

#[tokio::test]
async fn embedded_receive_hands_out_messages_and_dead_letters_nothing() {
    let (publisher, mut consumer) = embedded(4).expect("embedded bus");
    publisher.publish(&change("a", 1)).await.expect("room");
    let items = consumer
        .receive(10, Duration::from_secs(1))
        .await
        .expect("an item");
    let [Received::Message(delivery)] = items.as_slice() else {
        panic!("expected one message, got {items:?}");
    };
    assert_eq!(id(&delivery.message), "a#1");
    assert_eq!(delivery.position, None);
    let foreign = driftwarden_bus::Rejected {
        position: driftwarden_bus::Position {
            topic: "t".into(),
            partition: 0,
            offset: 0,
        },
        reason: "empty payload".into(),
        key: None,
        payload: Vec::new(),
    };
    consumer
        .dead_letter(&foreign)
        .await
        .expect("nothing to do on the embedded bus");
}

#[tokio::test]
async fn embedded_bus_carries_a_change_larger_than_kafka_would_whole() {
    let (publisher, mut consumer) = embedded(4).expect("embedded bus");
    let Message::Change(mut event) = change("big", 1) else {
        unreachable!("change() is a change")
    };
    event.object = serde_json::json!({"data": {"blob": "x".repeat(MAX_MESSAGE_BYTES + 1)}});
    let message = Message::Change(event);
    let sent = publisher.publish_fitting(&message).await.expect("sent");
    assert_eq!(sent, Sent::Whole);
    let batch = consumer
        .next_batch(1, Duration::from_secs(1))
        .await
        .expect("a message");
    let Message::Change(ChangeEvent { truncated, .. }) = &batch[0].message else {
        panic!("a change");
    };
    assert_eq!(truncated, &None);
    assert_eq!(batch[0].message, message);
}
