//! Driftwarden over Kafka's TLS + SCRAM listener: the pipeline judges a
//! change with every client authenticated; the broker refuses clients
//! without credentials, with a wrong password, and a user without ACLs;
//! Driftwarden with a wrong password stops at `run`, naming the setting.
//!
//! The listener (see tests/README.md): TLS with a certificate from the
//! environment's CA, SASL SCRAM-SHA-512, ACLs letting only the SCRAM user
//! produce to, consume from and create `driftwarden.*` topics.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use driftwarden_e2e::app::{config_map_yaml, modified};
use driftwarden_e2e::scenario::{Bus, BusSettings, Scenario, SecuritySettings};
use driftwarden_e2e::{TestEnv, User, read_topic_with, topic_prefix};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;

const CONFIG_MAP_FILE: &str = "apps/web/configmap.yaml";

/// How long a refused start may take: a refusal is reported at once, not
/// after the 15 s a topic request may wait.
const PROMPTLY: Duration = Duration::from_secs(20);

/// A scenario whose Driftwarden runs on the TLS + SCRAM listener as the
/// SCRAM user, with the app's ConfigMap committed and applied.
async fn secure_scenario(name: &str) -> Result<Scenario> {
    let mut s = Scenario::prepare(Bus::Embedded, name, &["v1/ConfigMap"]).await?;
    s.settings.bus = BusSettings::secure_kafka(s.env, &topic_prefix());
    s.config = s.settings.config()?;
    let ns = s.namespace().to_string();
    let config = config_map_yaml(
        &ns,
        "web-config",
        &[("app", "web")],
        &[("greeting", "hello")],
    );
    s.repo.write(CONFIG_MAP_FILE, &config)?;
    s.commit("web: config")?;
    s.apply_as_gitops(&[CONFIG_MAP_FILE])?;
    Ok(s)
}

/// Whether a client with `config` gets the cluster's metadata within 5 s.
async fn answers(mut config: ClientConfig) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config
            .set("log_level", "0")
            .create()
            .context("creating a client")?;
        Ok(consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .is_ok_and(|metadata| !metadata.brokers().is_empty()))
    })
    .await?
}

#[tokio::test]
async fn the_pipeline_judges_a_change_over_tls_and_scram() -> Result<()> {
    let mut s = secure_scenario("kafka-secure").await?;
    let started = Instant::now();
    s.start().await?;
    let key = s.config_map("web-config");
    s.wait_first_records(std::slice::from_ref(&key)).await?;
    let after = s.seq();
    s.kubectl(
        User::Alice,
        &[
            "patch",
            "configmap",
            "web-config",
            "--type=merge",
            "-p",
            r#"{"data":{"greeting":"bonjour"}}"#,
        ],
    )?;
    let found = s
        .change(&key, after, "greeting patched", |e| {
            e.object.pointer("/data/greeting") == Some(&Value::from("bonjour"))
        })
        .await?;
    s.assert_verdict(&key, after, &found, &modified(&["data.greeting"]));
    println!(
        "secure pipeline: started and judged in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // The change travelled on the secure listener's topics.
    let BusSettings::Kafka { topic_prefix, .. } = &s.settings.bus else {
        bail!("the scenario runs on Kafka");
    };
    let secure = s.env.secure_kafka();
    let password = secure.password()?;
    let topic = format!("{topic_prefix}{}", bus::CHANGES_TOPIC);
    let mut reader = secure.client_config(Some((&secure.user, &password)));
    reader.set("group.id", format!("{topic_prefix}reader"));
    let messages = tokio::task::spawn_blocking({
        let topic = topic.clone();
        move || read_topic_with(reader, &topic, Duration::from_secs(30))
    })
    .await??;
    assert!(
        messages
            .iter()
            .any(|m| String::from_utf8_lossy(&m.payload).contains("bonjour")),
        "the patched ConfigMap is not on {topic}"
    );

    // A user without ACLs may not read them.
    let stranger = secure.client_config(Some((&secure.stranger, &secure.stranger_password()?)));
    let refused = tokio::task::spawn_blocking(move || {
        read_topic_with(stranger, &topic, Duration::from_secs(10))
    })
    .await?;
    assert!(
        refused.is_err(),
        "the stranger read {:?}",
        refused.map(|m| m.len())
    );
    s.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_broker_refuses_clients_without_or_with_wrong_credentials() -> Result<()> {
    let env = TestEnv::get();
    let secure = env.secure_kafka();
    let password = secure.password()?;
    assert!(
        answers(secure.client_config(Some((&secure.user, &password)))).await?,
        "the SCRAM user with its password is let in"
    );
    assert!(
        !answers(secure.client_config(None)).await?,
        "a client without credentials is let in"
    );
    assert!(
        !answers(secure.client_config(Some((&secure.user, "not-the-password")))).await?,
        "a wrong password is let in"
    );
    let mut plaintext = ClientConfig::new();
    plaintext.set("bootstrap.servers", &secure.brokers);
    assert!(
        !answers(plaintext).await?,
        "a plaintext client is let in on the TLS listener"
    );
    Ok(())
}

#[tokio::test]
async fn driftwarden_with_a_wrong_password_fails_run_naming_the_setting() -> Result<()> {
    let mut s = secure_scenario("kafka-wrong-password").await?;
    let dir = tempfile::tempdir()?;
    let wrong = dir.path().join("kafka.password");
    std::fs::write(&wrong, "not-the-password\n")?;
    if let BusSettings::Kafka {
        security: Some(SecuritySettings { password_file, .. }),
        ..
    } = &mut s.settings.bus
    {
        *password_file = wrong;
    }
    let config = dir.path().join("driftwarden.yaml");
    s.settings.write(&config)?;

    // In process: `run::start` returns the error.
    let run_config = s.settings.config()?;
    s.bind(&run_config).await?;
    let started = Instant::now();
    let err = match driftwarden::run::start(run_config, driftwarden::run::Role::All).await {
        Ok(running) => {
            running.stop().await;
            bail!("driftwarden started with a wrong Kafka password");
        }
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("bus.security.sasl"), "{err}");
    assert!(err.contains("uthentication"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
    assert!(started.elapsed() < PROMPTLY, "took {:?}", started.elapsed());

    // As a command: `driftwarden run` exits non-zero saying the same.
    let started = Instant::now();
    let output = tokio::time::timeout(
        PROMPTLY,
        tokio::process::Command::new(Path::new(env!("CARGO_BIN_EXE_driftwarden-under-test")))
            .arg("run")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("driftwarden run kept running with a wrong Kafka password")??;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exit {}: {stderr}", output.status);
    assert!(stderr.contains("bus.security.sasl"), "{stderr}");
    println!(
        "wrong password: `run` failed in {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        stderr.lines().last().unwrap_or_default()
    );
    Ok(())
}
