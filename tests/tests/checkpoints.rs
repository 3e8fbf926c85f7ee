//! Ledger checkpoints anchored on Kafka: Driftwarden on the Kafka bus
//! publishes every signed checkpoint to `<prefix>driftwarden.checkpoints.v1`,
//! the one written at shutdown included. Someone who can rewrite the host's
//! files puts back an older ledger together with the `checkpoints.jsonl`
//! that matched it: the file beside the ledger agrees with the ledger, yet
//! `driftwarden verify` names the records missing, from the checkpoint on
//! Kafka. With Kafka unreachable, `verify` says so and compares with the
//! file alone (which cannot see the cut).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use driftwarden_e2e::User;
use driftwarden_e2e::app::config_map_yaml;
use driftwarden_e2e::read_topic;
use driftwarden_e2e::scenario::{Bus, BusSettings, Scenario};
use ledger::{Checkpoint, Ledger, checkpoint};
use serde_json::Value;

const CONFIG_MAP_FILE: &str = "apps/web/configmap.yaml";

/// The binary under test.
fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_driftwarden-under-test"))
}

/// `driftwarden verify -c config` with `extra` arguments.
fn verify(config: &Path, extra: &[&str]) -> Result<Output> {
    std::process::Command::new(binary())
        .arg("verify")
        .arg("-c")
        .arg(config)
        .args(extra)
        .output()
        .context("running driftwarden verify")
}

/// Exit code and output of a command, for a failure message.
fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every checkpoint on the topic of `bus`, oldest first.
async fn checkpoints_on_kafka(bus: &BusSettings) -> Result<Vec<Checkpoint>> {
    let BusSettings::Kafka {
        brokers,
        topic_prefix,
        ..
    } = bus
    else {
        bail!("this test runs on Kafka");
    };
    let brokers = brokers.clone();
    let topic = format!("{topic_prefix}{}", bus::CHECKPOINTS_TOPIC);
    let messages =
        tokio::task::spawn_blocking(move || read_topic(&brokers, &topic, Duration::from_secs(30)))
            .await??;
    messages
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).context("a checkpoint on the topic"))
        .collect()
}

/// The ledger's last sequence number, read once Driftwarden let go of it.
fn head(data_dir: &Path) -> Result<u64> {
    let ledger = Ledger::open(data_dir.join("ledger"))
        .context("the ledger is free once driftwarden stopped")?;
    Ok(ledger.len())
}

/// Alice sets the greeting of ConfigMap `web-config` to `greeting` and
/// Driftwarden records it.
async fn greet(s: &Scenario, greeting: &str) -> Result<()> {
    let key = s.config_map("web-config");
    let after = s.seq();
    let patch = serde_json::json!({"data": {"greeting": greeting}}).to_string();
    s.kubectl(
        User::Alice,
        &[
            "patch",
            "configmap",
            "web-config",
            "--type=merge",
            "-p",
            &patch,
        ],
    )?;
    s.change(&key, after, "greeting patched", |e| {
        e.object.pointer("/data/greeting") == Some(&Value::from(greeting))
    })
    .await?;
    Ok(())
}

/// Checks that the last checkpoint on Kafka names record `seq`, signed by
/// the ledger's key.
async fn assert_last_on_kafka(s: &Scenario, seq: u64) -> Result<Checkpoint> {
    let on_kafka = checkpoints_on_kafka(&s.settings.bus).await?;
    let last = on_kafka
        .last()
        .cloned()
        .context("no checkpoint on the Kafka topic")?;
    ensure!(
        last.seq == seq,
        "the last checkpoint on Kafka names record {}, the ledger ends at {seq}: {on_kafka:?}",
        last.seq
    );
    let key = checkpoint::trusted_key(&s.settings.data_dir.join(checkpoint::KEY_FILE))?
        .context("the ledger's checkpoint key")?;
    last.verify(Some(&key))?;
    Ok(last)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_cut_back_with_its_checkpoint_file_is_caught_by_the_checkpoint_on_kafka()
-> Result<()> {
    let mut s = Scenario::prepare(Bus::Kafka, "checkpoints", &["v1/ConfigMap"]).await?;
    let yaml = config_map_yaml(
        s.namespace(),
        "web-config",
        &[("app", "web")],
        &[("greeting", "hello")],
    );
    s.repo.write(CONFIG_MAP_FILE, &yaml)?;
    s.commit("web: config")?;
    s.apply_as_gitops(&[CONFIG_MAP_FILE])?;
    let data_dir = s.settings.data_dir.clone();
    let log = data_dir.join(checkpoint::LOG_FILE);

    // A first run; its checkpoint at shutdown goes to Kafka too.
    s.start().await?;
    s.wait_first_records(&[s.config_map("web-config")]).await?;
    greet(&s, "bonjour").await?;
    s.stop().await;
    let older = head(&data_dir)?;
    assert_last_on_kafka(&s, older).await?;

    // Mallory keeps a copy of the ledger and its checkpoint file as they
    // are now.
    let aside = tempfile::tempdir()?;
    copy_dir(&data_dir.join("ledger"), &aside.path().join("ledger"))?;
    std::fs::copy(&log, aside.path().join(checkpoint::LOG_FILE))?;

    // A second run records more.
    s.start().await?;
    greet(&s, "hola").await?;
    greet(&s, "ciao").await?;
    s.stop().await;
    let newer = head(&data_dir)?;
    ensure!(newer > older, "the second run recorded nothing");
    assert_last_on_kafka(&s, newer).await?;

    // Mallory puts the older pair back: the file agrees with the ledger.
    std::fs::remove_dir_all(data_dir.join("ledger"))?;
    copy_dir(&aside.path().join("ledger"), &data_dir.join("ledger"))?;
    std::fs::copy(aside.path().join(checkpoint::LOG_FILE), &log)?;
    ensure!(head(&data_dir)? == older, "the older ledger is back");
    let beside = checkpoint::latest(&log)?.context("the older checkpoint file")?;
    ensure!(beside.seq == older, "the older checkpoint file is back");

    let config: PathBuf = data_dir.with_extension("yaml");
    s.settings.write(&config)?;
    let output = verify(&config, &[])?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("driftwarden verify:\n{stdout}");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(stdout.contains("ledger BROKEN"), "{}", text(&output));
    assert!(
        stdout.contains(&format!("records {}..={newer} are gone", older + 1)),
        "{}",
        text(&output)
    );
    let BusSettings::Kafka { topic_prefix, .. } = &s.settings.bus else {
        bail!("this test runs on Kafka");
    };
    let topic = format!("{topic_prefix}{}", bus::CHECKPOINTS_TOPIC);
    assert!(
        stdout.contains(&format!("checkpoint used: from Kafka topic `{topic}`")),
        "{}",
        text(&output)
    );
    assert!(
        stdout.contains(&format!(
            "also found: the checkpoint of record {older} in file {}",
            log.display()
        )),
        "{}",
        text(&output)
    );

    let output = verify(&config, &["-o", "json"])?;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let report: Value = serde_json::from_slice(&output.stdout).context("verify's JSON")?;
    assert_eq!(report["checkpoint_source"]["from"], "kafka", "{report}");
    assert_eq!(
        report["checkpoint_source"]["topic"],
        topic.as_str(),
        "{report}"
    );
    let lost = report["problems"]
        .as_array()
        .context("problems")?
        .iter()
        .find(|p| p["problem"] == "lost")
        .with_context(|| format!("no records lost in {report}"))?;
    assert_eq!(lost["from"], older + 1, "{report}");
    assert_eq!(lost["to"], newer, "{report}");

    // Nor does `run` start on the cut ledger (it would write new records
    // over the gap and sign them): the checkpoint on Kafka names it.
    let refused = match s.start().await {
        Ok(()) => {
            s.stop().await;
            bail!("run started on a ledger cut back with its checkpoint file");
        }
        Err(err) => format!("{err:#}"),
    };
    assert!(
        refused.contains("is shorter than") && refused.contains(&topic),
        "{refused}"
    );

    // Without Kafka, the file alone cannot see the cut: verify says why it
    // compared with the file only.
    let mut unreachable = s.settings.clone();
    if let BusSettings::Kafka { brokers, .. } = &mut unreachable.bus {
        *brokers = "127.0.0.1:1".into();
    }
    let config = data_dir.with_extension("unreachable.yaml");
    unreachable.write(&config)?;
    let output = verify(&config, &[])?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("driftwarden verify, Kafka unreachable:\n{stdout}");
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        stdout.contains(&format!("ledger ok: {older} records")),
        "{}",
        text(&output)
    );
    assert!(
        stdout.contains(&format!(
            "Kafka unreachable: cannot read checkpoint topic `{topic}`"
        )),
        "{}",
        text(&output)
    );
    assert!(
        stdout.contains(&format!("checkpoint used: from file {}", log.display())),
        "{}",
        text(&output)
    );
    println!("cut from record {newer} back to {older} with its checkpoint file: caught from Kafka");
    Ok(())
}
