//! Fixtures and behaviour shared by the embedded and the Kafka tests: each
//! behaviour is written once and run against both buses.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::DateTime;
use driftwarden_bus::{Consumer, Delivery, Message, Publisher};
use model::{AuditObjectRef, AuditRecord, AuditUser, ChangeEvent, ChangeKind, ObjectKey};
use serde_json::json;
use tokio::time::Instant;

/// A change of object `uid` (named after it) at resource version `version`.
pub fn change(uid: &str, version: u64) -> Message {
    Message::Change(ChangeEvent::new(
        ObjectKey::new("test", "apps", "Deployment", "team-a", uid),
        "apps/v1",
        uid,
        version.to_string(),
        ChangeKind::Modified,
        DateTime::from_timestamp(1_800_000_000, 0).expect("valid time"),
        json!({"spec": {"replicas": version}}),
    ))
}

/// An audit record with id `id` of a write to ConfigMap `name`.
pub fn audit(id: &str, name: &str) -> Message {
    Message::Audit(AuditRecord::new(
        id,
        "test",
        AuditUser {
            username: "alice".into(),
            groups: vec![],
        },
        "patch",
        AuditObjectRef {
            resource: "configmaps".into(),
            namespace: "team-a".into(),
            name: name.into(),
            ..AuditObjectRef::default()
        },
        DateTime::from_timestamp(1_800_000_000, 0).expect("valid time"),
    ))
}

/// A readable identity of a message: `uid#version` or the audit id.
pub fn id(message: &Message) -> String {
    match message {
        Message::Change(event) => format!("{}#{}", event.uid, event.resource_version),
        Message::Audit(record) => record.audit_id.clone(),
    }
}

/// Receives until `count` messages came or `within` passed.
pub async fn collect(consumer: &mut Consumer, count: usize, within: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + within;
    let mut received = Vec::new();
    while received.len() < count && Instant::now() < deadline {
        let batch = consumer
            .next_batch(count - received.len(), Duration::from_millis(200))
            .await
            .expect("the bus delivers");
        received.extend(batch);
    }
    received
}

/// Fails if a message arrives within `quiet`.
pub async fn assert_nothing_more(consumer: &mut Consumer, quiet: Duration) {
    let extra = consumer
        .next_batch(100, quiet)
        .await
        .expect("the bus stays open");
    let ids: Vec<String> = extra.iter().map(|d| id(&d.message)).collect();
    assert!(ids.is_empty(), "unexpected deliveries: {ids:?}");
}

/// Publishes interleaved changes of several objects plus audit records, while
/// consuming; every message arrives once, and each object's changes arrive in
/// the order they were published.
pub async fn delivers_everything_in_order_per_key(publisher: Publisher, mut consumer: Consumer) {
    const OBJECTS: [&str; 5] = ["obj-a", "obj-b", "obj-c", "obj-d", "obj-e"];
    const VERSIONS: u64 = 30;
    let mut sent = Vec::new();
    for version in 1..=VERSIONS {
        for uid in OBJECTS {
            sent.push(change(uid, version));
        }
        sent.push(audit(&format!("audit-{version}"), "cfg"));
    }
    let publishing = tokio::spawn({
        let sent = sent.clone();
        async move {
            for message in &sent {
                publisher
                    .publish(message)
                    .await
                    .expect("publish is accepted");
            }
            publisher
        }
    });
    let received = collect(&mut consumer, sent.len(), Duration::from_secs(60)).await;
    // Kept until the end, so the embedded bus stays open.
    let _publisher = publishing.await.expect("publishing finished");

    let sent_ids: BTreeSet<String> = sent.iter().map(id).collect();
    let received_ids: Vec<String> = received.iter().map(|d| id(&d.message)).collect();
    assert_eq!(received_ids.len(), sent.len(), "received {received_ids:?}");
    assert_eq!(
        received_ids.iter().cloned().collect::<BTreeSet<_>>(),
        sent_ids
    );

    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for delivery in &received {
        if let Message::Change(event) = &delivery.message {
            let version = event.resource_version.parse().expect("numeric version");
            versions.entry(event.uid.clone()).or_default().push(version);
        }
    }
    let expected: Vec<u64> = (1..=VERSIONS).collect();
    for uid in OBJECTS {
        assert_eq!(versions.get(uid), Some(&expected), "order of {uid}");
    }
    let audits: Vec<String> = received
        .iter()
        .filter(|d| matches!(d.message, Message::Audit(_)))
        .map(|d| id(&d.message))
        .collect();
    let expected: Vec<String> = (1..=VERSIONS).map(|v| format!("audit-{v}")).collect();
    assert_eq!(
        audits, expected,
        "audit records of one object stay in order"
    );
    assert_nothing_more(&mut consumer, Duration::from_millis(300)).await;
    consumer.close().await;
}
