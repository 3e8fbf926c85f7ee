//! Objects near the apiserver's size limit, on both buses: a ConfigMap of
//! 1 000 KiB of data with a 200 KiB annotation, a custom resource of about
//! 1.4 MiB, and a ConfigMap whose JSON (control characters are escaped six
//! bytes each) outgrows what Kafka carries. Each is judged, the last one
//! truncated on Kafka (its metadata, the digest and size of the whole), and
//! Driftwarden keeps running: a small change afterwards is judged too.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use driftwarden_e2e::app::config_map_yaml;
use driftwarden_e2e::scenario::{Bus, BusSettings, Found, Scenario, TestCrd, key as object_key};
use driftwarden_e2e::{User, on_both_buses, read_topic};
use serde_json::{Value, json};

const MARKER_FILE: &str = "apps/marker.yaml";
const KIB: usize = 1024;

/// `kubectl -o` printing the written object's resourceVersion.
const VERSION: &str = "jsonpath={.metadata.resourceVersion}";

/// `bytes` characters of pseudo-random hex: nothing compresses them.
fn incompressible(bytes: usize, seed: u64) -> String {
    let mut state = seed | 1;
    let mut text = String::with_capacity(bytes + 16);
    while text.len() < bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push_str(&format!("{state:016x}"));
    }
    text.truncate(bytes);
    text
}

/// A CRD of `crd`'s group whose objects keep any field
/// (`x-kubernetes-preserve-unknown-fields`), created as the admin; `crd`
/// deletes it when dropped.
fn create_open_crd(s: &Scenario, dir: &Path, crd: &TestCrd) -> Result<()> {
    let mut manifest = crd.manifest();
    manifest["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] =
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let path = scratch_json(dir, &crd.name(), &manifest)?;
    s.env.kubectl_ok(User::Admin, &["create", "-f", &path])?;
    let target = format!("crd/{}", crd.name());
    s.env.kubectl_ok(
        User::Admin,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &target,
        ],
    )?;
    Ok(())
}

/// Writes `value` as JSON to `dir/name.json` and returns its path.
fn scratch_json(dir: &Path, name: &str, value: &Value) -> Result<String> {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec(value)?)?;
    Ok(path.to_str().context("a UTF-8 path")?.to_string())
}

/// The resourceVersion `kubectl` printed for the object it wrote.
fn version_of(output: &str) -> String {
    output.trim().to_string()
}

/// Waits for the change of `key` at `version` after record `after`.
async fn judged(
    s: &Scenario,
    key: &model::ObjectKey,
    after: u64,
    version: &str,
    what: &str,
) -> Result<Found> {
    s.change(key, after, what, |e| e.resource_version == version)
        .await
}

async fn large_objects_are_judged_and_the_process_keeps_running(bus: Bus) -> Result<()> {
    let crd = TestCrd::widgets();
    let widget_kind = format!("{}/{}", crd.api_version(), crd.kind);
    let mut s = Scenario::prepare(bus, "large", &["v1/ConfigMap", &widget_kind]).await?;
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path();
    create_open_crd(&s, dir, &crd)?;
    let ns = s.namespace().to_string();
    s.repo.write(
        MARKER_FILE,
        &config_map_yaml(&ns, "marker", &[], &[("k", "v")]),
    )?;
    s.commit("a marker")?;
    s.apply_as_gitops(&[MARKER_FILE])?;
    s.start().await?;
    let marker = s.config_map("marker");
    s.wait_first_records(std::slice::from_ref(&marker)).await?;
    let started = Instant::now();

    // A ConfigMap of 1 000 KiB of data and a 200 KiB annotation.
    let data = incompressible(1_000 * KIB, 1);
    let note = incompressible(200 * KIB, 2);
    let big = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "big", "namespace": ns, "annotations": {"note": note}},
        "data": {"blob": data},
    });
    let path = scratch_json(dir, "big", &big)?;
    let after = s.seq();
    let version = version_of(
        &s.env
            .kubectl_ok(User::Alice, &["create", "-f", &path, "-o", VERSION])?,
    );
    let key = s.config_map("big");
    let found = judged(&s, &key, after, &version, "the 1.2 MiB ConfigMap").await?;
    assert_eq!(found.event.truncated, None);
    assert_eq!(
        found
            .event
            .object
            .pointer("/data/blob")
            .and_then(Value::as_str)
            .map(str::len),
        Some(1_000 * KIB)
    );
    assert_eq!(
        found
            .event
            .object
            .pointer("/metadata/annotations/note")
            .and_then(Value::as_str)
            .map(str::len),
        Some(200 * KIB)
    );

    // A custom resource of about 1.4 MiB.
    let chunks: Vec<String> = (0..140).map(|i| incompressible(10 * KIB, 10 + i)).collect();
    let widget = json!({
        "apiVersion": crd.api_version(),
        "kind": crd.kind,
        "metadata": {"name": "heavy", "namespace": ns},
        "spec": {"size": 1, "color": "blue", "chunks": chunks},
    });
    let bytes = serde_json::to_vec(&widget)?.len();
    assert!(bytes > 1_400 * KIB, "{bytes} bytes");
    let path = scratch_json(dir, "heavy", &widget)?;
    let after = s.seq();
    let version = version_of(
        &s.env
            .kubectl_ok(User::Admin, &["create", "-f", &path, "-o", VERSION])?,
    );
    let key = object_key(&crd.api_version(), crd.kind, &ns, "heavy");
    let found = judged(&s, &key, after, &version, "the 1.4 MiB custom resource").await?;
    assert_eq!(found.event.truncated, None);
    assert_eq!(
        found
            .event
            .object
            .pointer("/spec/chunks")
            .and_then(Value::as_array)
            .map(Vec::len),
        Some(140)
    );

    // A ConfigMap whose JSON outgrows Kafka's limit: 900 KiB of a control
    // character, six bytes each as JSON, written in three requests (each
    // under the apiserver's request limit).
    let escaped = |key: &str| json!({"data": {key: "\u{1}".repeat(300 * KIB)}});
    let mut first = escaped("a");
    first["apiVersion"] = json!("v1");
    first["kind"] = json!("ConfigMap");
    first["metadata"] = json!({"name": "escapes", "namespace": ns});
    let path = scratch_json(dir, "escapes", &first)?;
    s.env.kubectl_ok(User::Alice, &["create", "-f", &path])?;
    let mut version = String::new();
    let after = s.seq();
    for key in ["b", "c"] {
        let patch = scratch_json(dir, &format!("escapes-{key}"), &escaped(key))?;
        version = version_of(&s.env.kubectl_ok(
            User::Alice,
            &[
                "patch",
                "configmap",
                "escapes",
                "-n",
                &ns,
                "--type=merge",
                "--patch-file",
                &patch,
                "-o",
                VERSION,
            ],
        )?);
    }
    let key = s.config_map("escapes");
    let found = judged(&s, &key, after, &version, "the escape-heavy ConfigMap").await?;
    match bus {
        Bus::Kafka => {
            let truncation = found.event.truncated.clone().context("marked truncated")?;
            assert!(
                truncation.size > bus::MAX_MESSAGE_BYTES as u64,
                "{} bytes",
                truncation.size
            );
            assert_eq!(truncation.sha256.len(), 64);
            assert_eq!(found.event.object["metadata"]["name"], "escapes");
            assert!(found.event.object.get("data").is_none());
        }
        Bus::Embedded => {
            assert_eq!(found.event.truncated, None);
            let data = found.event.object["data"]
                .as_object()
                .context("the whole data")?;
            assert_eq!(data.len(), 3);
        }
    }

    // Driftwarden goes on: a small change is judged.
    let after = s.seq();
    let version = version_of(&s.kubectl(
        User::Alice,
        &[
            "patch",
            "configmap",
            "marker",
            "--type=merge",
            "-p",
            r#"{"data":{"k":"changed"}}"#,
            "-o",
            VERSION,
        ],
    )?);
    judged(&s, &marker, after, &version, "the small change afterwards").await?;
    let mut largest = String::new();
    if let BusSettings::Kafka {
        brokers,
        topic_prefix,
        ..
    } = &s.settings.bus
    {
        let brokers = brokers.clone();
        let topic = format!("{topic_prefix}{}", bus::CHANGES_TOPIC);
        let messages = tokio::task::spawn_blocking(move || {
            read_topic(&brokers, &topic, std::time::Duration::from_secs(30))
        })
        .await??;
        let max = messages.iter().map(|m| m.payload.len()).max().unwrap_or(0);
        assert!(max <= bus::MAX_MESSAGE_BYTES, "{max} bytes on the topic");
        largest = format!(", largest message {max} bytes");
    }
    println!(
        "large objects on {bus:?}: judged in {:.1}s{largest}",
        started.elapsed().as_secs_f64()
    );
    s.stop().await;
    Ok(())
}

on_both_buses! {
    large_objects_are_judged_and_the_process_keeps_running =>
        large_objects_are_judged_and_the_process_keeps_running_embedded,
        large_objects_are_judged_and_the_process_keeps_running_kafka;
}
