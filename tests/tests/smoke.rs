//! Smoke tests of the test environment itself: every real part answers and
//! behaves as the other tests assume (apply, watch, controllers, RBAC, audit
//! webhook and its fan-out to registered receivers, Kafka).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
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
use tokio::sync::mpsc;

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

/// Deletes an object (`kind/name`, e.g. `deployment/web`) in team-a when
/// the test ends.
struct DeleteOnDrop(String);

impl DeleteOnDrop {
    fn deployment(name: &str) -> Self {
        DeleteOnDrop(format!("deployment/{name}"))
    }
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let args = [
            "delete",
            &self.0,
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
    let _cleanup = DeleteOnDrop::deployment(&name);
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
    let _cleanup = DeleteOnDrop::deployment(&name);
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

/// How long an audit event may take to reach a registered receiver: the
/// apiserver batches for up to 100 ms, the relay forwards at once.
const RECEIVER_PATIENCE: Duration = Duration::from_secs(10);

/// One POST a [`TestReceiver`] got.
#[derive(Debug)]
struct Batch {
    authorization: Option<String>,
    body: Value,
    at: Instant,
}

/// A plain-HTTP audit webhook receiver inside the test, on 127.0.0.1; every
/// batch it gets goes to `batches`.
struct TestReceiver {
    url: String,
    batches: mpsc::UnboundedReceiver<Batch>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestReceiver {
    async fn start() -> Result<TestReceiver> {
        let (sender, batches) = mpsc::unbounded_channel();
        let receive = move |headers: HeaderMap, body: Bytes| {
            let sender = sender.clone();
            async move {
                let Ok(body) = serde_json::from_slice(&body) else {
                    return StatusCode::BAD_REQUEST;
                };
                let authorization = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let _ = sender.send(Batch {
                    authorization,
                    body,
                    at: Instant::now(),
                });
                StatusCode::OK
            }
        };
        let app = axum::Router::new().route("/audit", axum::routing::post(receive));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/audit", listener.local_addr()?);
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(TestReceiver {
            url,
            batches,
            server,
        })
    }

    /// The first event matching `matches` in the batches received within
    /// `timeout`, with the batch that carried it.
    async fn wait_for(
        &mut self,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<(Value, Batch)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let batch = tokio::time::timeout_at(deadline, self.batches.recv())
                .await
                .with_context(|| {
                    format!("no matching audit event at {} within {timeout:?}", self.url)
                })?
                .context("the receiver stopped")?;
            let items = batch.body["items"].as_array().cloned().unwrap_or_default();
            if let Some(event) = items.into_iter().find(|e| matches(e)) {
                return Ok((event, batch));
            }
        }
    }
}

impl Drop for TestReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_receiver_gets_the_audit_event_of_a_kubectl_write() -> Result<()> {
    let env = TestEnv::get();
    let mut receiver = TestReceiver::start().await?;
    let token = format!("receiver-{}", unique_suffix());
    let _registration = env.register_audit_receiver(&receiver.url, Some(&token), None)?;
    let mut audit = env.audit_log()?;

    let name = format!("smoke-receiver-{}", unique_suffix());
    let _cleanup = DeleteOnDrop(format!("configmap/{name}"));
    env.kubectl_ok(
        User::Alice,
        &[
            "create",
            "configmap",
            &name,
            "--from-literal=colour=blue",
            "-n",
            TEAM_NAMESPACE,
        ],
    )?;
    let written = Instant::now();

    let (event, batch) = receiver
        .wait_for(RECEIVER_PATIENCE, |e| {
            field(e, "/user/username") == Some("alice")
                && field(e, "/verb") == Some("create")
                && field(e, "/objectRef/name") == Some(&name)
                && field(e, "/stage") == Some("ResponseComplete")
        })
        .await?;
    println!(
        "audit event reached the receiver {:?} after kubectl returned",
        batch.at.saturating_duration_since(written)
    );
    assert_eq!(field(&batch.body, "/kind"), Some("EventList"));
    assert_eq!(field(&batch.body, "/apiVersion"), Some("audit.k8s.io/v1"));
    assert_eq!(batch.authorization, Some(format!("Bearer {token}")));
    let audit_id = field(&event, "/auditID")
        .filter(|id| !id.is_empty())
        .with_context(|| format!("the event has no auditID: {event}"))?
        .to_string();

    let logged = audit
        .wait_for(PATIENCE, |e| field(e, "/auditID") == Some(&audit_id))
        .await?;
    assert_eq!(logged, event, "the receiver got the event the relay logged");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_relay_refuses_a_post_without_its_token() -> Result<()> {
    let env = TestEnv::get();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(env.ca_cert())?)?;
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .no_proxy()
        .timeout(PATIENCE)
        .build()?;
    let url = format!("https://{}/audit", env.audit_webhook_addr);
    let relay_log = env.dir.join("logs").join("audit-relay.log");
    let logged_before = std::fs::metadata(&relay_log).map_or(0, |m| m.len());
    let batch = r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[]}"#;

    for (how, token) in [
        ("without a token", None),
        ("with a wrong token", Some("not-it")),
    ] {
        let mut request = client
            .post(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(batch);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {url} {how}"))?;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "POST {url} {how}"
        );
    }

    let log =
        std::fs::read(&relay_log).with_context(|| format!("reading {}", relay_log.display()))?;
    let new = String::from_utf8_lossy(log.get(logged_before as usize..).unwrap_or_default());
    assert!(
        new.contains("refused POST /audit") && new.contains("no Authorization header"),
        "{new}"
    );
    assert!(new.contains("wrong bearer token"), "{new}");
    Ok(())
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
