//! The Kafka bus over the test environment's TLS + SCRAM listener
//! (`cargo xtask env up`): the SCRAM user's round trip, and what the broker
//! refuses: a wrong password, an untrusted certificate, a user without
//! ACLs, topics outside `driftwarden.*`.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{change, collect};
use driftwarden_bus::{
    ClientCert, Consumer, Error, KafkaConfig, Mechanism, Protocol, Publisher, Refusal, Rejected,
    Sasl, Security, ensure_topics,
};
use rdkafka::error::RDKafkaErrorCode;
use testenv::{SecureKafka, TestEnv};

const PATIENCE: Duration = Duration::from_secs(60);

/// How soon a refused connection must be reported: well before the 15 s
/// the topic request itself may take.
const PROMPTLY: Duration = Duration::from_secs(10);

fn secure() -> &'static SecureKafka {
    TestEnv::get().secure_kafka()
}

/// A topic prefix under `driftwarden.` (what the SCRAM user may use) that
/// no other test uses.
fn prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("driftwarden.bus-{test}-{}-{nanos}.", std::process::id())
}

/// Settings for `user` with its password in `password_file`, TLS trusting
/// `ca_file`, presenting the environment's client certificate.
fn settings(prefix: &str, user: &str, password_file: PathBuf, ca_file: PathBuf) -> KafkaConfig {
    let secure = secure();
    KafkaConfig::new(secure.brokers.clone(), format!("{prefix}group"))
        .with_prefix(prefix)
        .with_security(Security {
            protocol: Protocol::SaslSsl,
            ca_file: Some(ca_file),
            client_cert: Some(ClientCert {
                cert_file: secure.client_cert.clone(),
                key_file: secure.client_key.clone(),
            }),
            sasl: Some(Sasl {
                mechanism: Mechanism::ScramSha512,
                username: user.to_owned(),
                password_file,
            }),
        })
}

/// The SCRAM user's settings.
fn driftwarden(prefix: &str) -> KafkaConfig {
    let secure = secure();
    settings(
        prefix,
        &secure.user,
        secure.password_file.clone(),
        secure.ca_cert.clone(),
    )
}

#[tokio::test]
async fn secure_bus_carries_messages_and_dead_letters_as_the_scram_user() {
    let prefix = prefix("roundtrip");
    let config = driftwarden(&prefix);
    let topics = ensure_topics(&config, 2)
        .await
        .unwrap_or_else(|err| panic!("ensure_topics as the SCRAM user: {err:?}"));
    let publisher = Publisher::kafka(&config).expect("publisher");
    let sent: Vec<_> = (1..=5).map(|v| change("obj", v)).collect();
    for message in &sent {
        publisher.publish(message).await.expect("published");
    }
    let mut consumer = Consumer::kafka(&config).expect("consumer");
    let received = collect(&mut consumer, sent.len(), PATIENCE).await;
    let messages: Vec<_> = received.iter().map(|d| d.message.clone()).collect();
    assert_eq!(messages, sent);
    let rejected = Rejected {
        position: received[0].position.clone().expect("position"),
        reason: "a test's refusal".into(),
        key: None,
        payload: b"raw".to_vec(),
    };
    consumer
        .dead_letter(&rejected)
        .await
        .expect("the SCRAM user may write the dead-letter topic");
    let positions: Vec<_> = received.iter().filter_map(|d| d.position.clone()).collect();
    consumer.commit(&positions).await.expect("commit");
    consumer.close().await;
    assert!(topics.dead_letter.starts_with("driftwarden."));
}

#[tokio::test]
async fn a_wrong_password_is_refused_at_once_as_authentication() {
    let secure = secure();
    let dir = tempfile::tempdir().expect("temp dir");
    let wrong = dir.path().join("password");
    std::fs::write(&wrong, "not-the-password\n").expect("written");
    let config = settings(
        &prefix("wrongpw"),
        &secure.user,
        wrong,
        secure.ca_cert.clone(),
    );
    let started = Instant::now();
    let err = ensure_topics(&config, 1).await.expect_err("refused");
    assert!(
        matches!(
            err,
            Error::Refused {
                kind: Refusal::Authentication,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("uthentication"), "{err}");
    assert!(!err.to_string().contains("not-the-password"), "{err}");
    assert!(started.elapsed() < PROMPTLY, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn an_untrusted_broker_certificate_fails_the_tls_handshake() {
    let secure = secure();
    // A leaf certificate is no CA: the broker's chain does not verify.
    let untrusted = TestEnv::get().webhook_cert().to_path_buf();
    let config = settings(
        &prefix("untrusted"),
        &secure.user,
        secure.password_file.clone(),
        untrusted,
    );
    let started = Instant::now();
    let err = ensure_topics(&config, 1).await.expect_err("refused");
    assert!(
        matches!(
            err,
            Error::Refused {
                kind: Refusal::Tls,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < PROMPTLY, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_user_without_acls_may_not_create_or_write_driftwarden_topics() {
    let secure = secure();
    let prefix = prefix("stranger");
    let stranger = settings(
        &prefix,
        &secure.stranger,
        secure.stranger_password_file.clone(),
        secure.ca_cert.clone(),
    );
    let err = ensure_topics(&stranger, 1).await.expect_err("no rights");
    assert!(
        matches!(
            err,
            Error::CreateTopic {
                code: RDKafkaErrorCode::TopicAuthorizationFailed,
                ..
            }
        ),
        "{err:?}"
    );

    // Topics the SCRAM user made: the stranger may not write them either.
    ensure_topics(&driftwarden(&prefix), 1)
        .await
        .expect("created by the SCRAM user");
    let publisher = Publisher::kafka(&stranger).expect("producer");
    let err = tokio::time::timeout(PATIENCE, publisher.publish(&change("obj", 1)))
        .await
        .expect("an answer")
        .expect_err("not authorized");
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        source
            .as_deref()
            .is_some_and(|s| s.contains("authoriz") || s.contains("Authoriz")),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_scram_user_may_not_create_topics_outside_its_prefix() {
    let secure = secure();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let config = settings(
        &format!("elsewhere-{nanos}."),
        &secure.user,
        secure.password_file.clone(),
        secure.ca_cert.clone(),
    );
    let err = ensure_topics(&config, 1).await.expect_err("no rights");
    assert!(
        matches!(
            err,
            Error::CreateTopic {
                code: RDKafkaErrorCode::TopicAuthorizationFailed,
                ..
            }
        ),
        "{err:?}"
    );
}
