//! Smoke tests of the test environment itself: every real part answers and
//! behaves as the other tests assume (apply, watch, controllers, RBAC, audit
//! webhook, Kafka).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use driftwarden_e2e::{
    NOT_RUNNING, TEAM_NAMESPACE, TestEnv, User, deployment, eventually, topic_prefix, unique_suffix,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

/// How long anything in these tests may take.
const PATIENCE: Duration = Duration::from_secs(60);

/// A watch of Deployments, polled by the test itself.
type Watch = BoxStream<'static, Result<watcher::Event<Deployment>, watcher::Error>>;

/// Watches Deployments through `api` (optionally one by name); returns once
/// the initial list is complete, so later changes are seen as they happen.
async fn watch_deployments(api: Api<Deployment>, name: Option<&str>) -> Result<Watch> {
    let mut config = watcher::Config::default();
    if let Some(name) = name {
        config = config.fields(&format!("metadata.name={name}"));
    }
    let mut watch = watcher(api, config).boxed();
    let initial_list = async {
        while let Some(event) = watch.next().await {
            if matches!(event?, watcher::Event::InitDone) {
                return Ok(());
            }
        }
        bail!("the watch ended")
    };
    tokio::time::timeout(PATIENCE, initial_list)
        .await
        .context("the watch did not finish its initial list")??;
    Ok(watch)
}

/// The next applied Deployment from the watch that satisfies `matches`.
async fn next_applied(
    watch: &mut Watch,
    matches: impl Fn(&Deployment) -> bool,
) -> Result<Deployment> {
    let wait = async {
        while let Some(event) = watch.next().await {
            if let watcher::Event::Apply(d) = event?
                && matches(&d)
            {
                return Ok(d);
            }
        }
        bail!("the watch ended")
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .context("no matching watch event")?
}

fn replicas(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.replicas)
}

/// Creates (server-side apply as admin) a Deployment in `namespace`.
async fn create_deployment(env: &TestEnv, namespace: &str, name: &str) -> Result<Deployment> {
    let api: Api<Deployment> = Api::namespaced(env.client(User::Admin).await?, namespace);
    let params = PatchParams::apply("driftwarden-e2e").force();
    Ok(api
        .patch(name, &params, &Patch::Apply(&deployment(name, 1)))
        .await?)
}

/// Deletes a Deployment in team-a when the test ends.
struct DeleteOnDrop(String);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let name = format!("deployment/{}", self.0);
        let args = [
            "delete",
            &name,
            "-n",
            TEAM_NAMESPACE,
            "--wait=false",
            "--ignore-not-found",
        ];
        let _ = TestEnv::get().kubectl(User::Admin, &args);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_apply_is_watched_and_gets_a_replicaset() -> Result<()> {
    let env = TestEnv::get();
    let ns = env.fresh_namespace("smoke-apply").await?;
    let client = env.client(User::Gitops).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let mut watch = watch_deployments(deployments.clone(), None).await?;

    let params = PatchParams::apply("gitops-agent").force();
    let applied = deployments
        .patch("web", &params, &Patch::Apply(&deployment("web", 2)))
        .await?;
    let uid = applied
        .metadata
        .uid
        .clone()
        .context("applied deployment has a uid")?;

    let seen = next_applied(&mut watch, |d| d.metadata.uid.as_deref() == Some(&uid)).await?;
    assert_eq!(replicas(&seen), Some(2));

    let replica_sets: Api<ReplicaSet> = Api::namespaced(client, &ns.name);
    let owned = eventually(PATIENCE, "a ReplicaSet owned by the deployment", || async {
        let list = replica_sets.list(&ListParams::default()).await?;
        Ok(list.items.into_iter().find(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|owner| owner.uid == uid)
        }))
    })
    .await?;
    assert_eq!(owned.spec.and_then(|s| s.replicas), Some(2));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_can_scale_in_team_a_and_is_forbidden_elsewhere() -> Result<()> {
    let env = TestEnv::get();
    let name = format!("smoke-scale-{}", unique_suffix());
    let _cleanup = DeleteOnDrop(name.clone());
    create_deployment(env, TEAM_NAMESPACE, &name).await?;
    let target = format!("deployment/{name}");

    env.kubectl_ok(
        User::Alice,
        &["scale", &target, "--replicas=2", "-n", TEAM_NAMESPACE],
    )?;
    let deployments: Api<Deployment> =
        Api::namespaced(env.client(User::Admin).await?, TEAM_NAMESPACE);
    assert_eq!(replicas(&deployments.get(&name).await?), Some(2));

    let other = env.fresh_namespace("smoke-forbidden").await?;
    create_deployment(env, &other.name, &name).await?;
    let out = env.kubectl(
        User::Alice,
        &["scale", &target, "--replicas=2", "-n", &other.name],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "alice scaled outside team-a");
    assert!(
        stderr.contains("Forbidden") || stderr.contains("forbidden"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_event_carries_the_resource_version_the_watch_saw() -> Result<()> {
    let env = TestEnv::get();
    let name = format!("smoke-audit-{}", unique_suffix());
    let _cleanup = DeleteOnDrop(name.clone());
    create_deployment(env, TEAM_NAMESPACE, &name).await?;
    let api: Api<Deployment> = Api::namespaced(env.client(User::Admin).await?, TEAM_NAMESPACE);
    let mut watch = watch_deployments(api, Some(&name)).await?;
    let mut audit = env.audit_log()?;

    let target = format!("deployment/{name}");
    env.kubectl_ok(
        User::Alice,
        &["scale", &target, "--replicas=3", "-n", TEAM_NAMESPACE],
    )?;

    let seen = next_applied(&mut watch, |d| replicas(d) == Some(3)).await?;
    let watched_version = seen
        .metadata
        .resource_version
        .context("watched object has a version")?;
    let event = audit
        .wait_for(PATIENCE, |e| {
            field(e, "/user/username") == Some("alice")
                && field(e, "/verb") == Some("patch")
                && field(e, "/objectRef/name") == Some(&name)
                && field(e, "/stage") == Some("ResponseComplete")
        })
        .await?;
    assert_eq!(
        field(&event, "/responseObject/metadata/resourceVersion"),
        Some(watched_version.as_str()),
        "audit event: {event}"
    );
    Ok(())
}

fn field<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_round_trips_in_order_per_key() -> Result<()> {
    const PARTITIONS: i32 = 4;
    const KEYS: usize = 5;
    const PER_KEY: usize = 40;
    let env = TestEnv::get();
    let prefix = topic_prefix();
    let topic = format!("{prefix}orders");

    let admin: AdminClient<_> = client_config(env).create()?;
    let created = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new().operation_timeout(Some(PATIENCE)),
        )
        .await?;
    for result in created {
        result.map_err(|(topic, err)| anyhow::anyhow!("creating {topic}: {err}"))?;
    }

    let producer: FutureProducer = client_config(env)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()?;
    for seq in 0..PER_KEY {
        for key in 0..KEYS {
            let (key, payload) = (format!("key-{key}"), seq.to_string());
            let record = FutureRecord::to(&topic).key(&key).payload(&payload);
            producer
                .send(record, PATIENCE)
                .await
                .map_err(|(err, _)| anyhow::anyhow!("producing: {err}"))?;
        }
    }

    let group = format!("{prefix}group");
    let topic_for_consumer = topic.clone();
    let brokers = env.kafka_brokers.clone();
    let by_key = tokio::task::spawn_blocking(move || {
        consume_all(&brokers, &group, &topic_for_consumer, KEYS * PER_KEY)
    })
    .await??;

    let expected: Vec<String> = (0..PER_KEY).map(|seq| seq.to_string()).collect();
    assert_eq!(by_key.len(), KEYS);
    for (key, payloads) in by_key {
        assert_eq!(
            payloads, expected,
            "messages of {key} out of order or missing"
        );
    }
    Ok(())
}

fn client_config(env: &TestEnv) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &env.kafka_brokers);
    config
}

/// Reads `count` messages of `topic` in a consumer group (a `BaseConsumer`
/// polled on a blocking thread), grouped by key in arrival order.
fn consume_all(
    brokers: &str,
    group: &str,
    topic: &str,
    count: usize,
) -> Result<BTreeMap<String, Vec<String>>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut received = 0;
    while received < count {
        if std::time::Instant::now() >= deadline {
            bail!("received {received} of {count} messages within {PATIENCE:?}");
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?;
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        let payload = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
        by_key.entry(key).or_default().push(payload);
        received += 1;
    }
    Ok(by_key)
}

#[test]
fn harness_fails_with_the_env_up_hint_when_env_sh_is_missing() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let err = TestEnv::load_from(dir.path()).expect_err("no env.sh must be an error");
    let message = format!("{err:#}");
    assert!(message.contains("cargo xtask env up"), "{message}");
    assert!(message.contains(NOT_RUNNING), "{message}");
}
