//! Least privilege, proven against the real apiserver: Driftwarden runs as a
//! ServiceAccount bound by exactly the manifests `check --rbac` prints for
//! its config, enforces where its config enforces, and is refused
//! everywhere else.

use anyhow::{Context, Result, ensure};
use driftwarden_e2e::app::config_map_yaml;
use driftwarden_e2e::enforcing::{Enforcing, Rule};
use driftwarden_e2e::rbac::{kubectl_as, printed_rbac};
use driftwarden_e2e::scenario::{Bus, PATIENCE, Scenario};
use driftwarden_e2e::{User, eventually, on_the_embedded_bus};
use model::Outcome;
use serde_json::{Value, json};

on_the_embedded_bus! {
    enforce_works_under_the_printed_rbac_and_nothing_else_is_allowed => least_rbac_embedded;
}

const FILE: &str = "apps/settings.yaml";

fn settings_yaml(namespace: &str, level: &str) -> String {
    config_map_yaml(
        namespace,
        "settings",
        &[("app", "web")],
        &[("level", level)],
    )
}

/// The documents of a YAML stream, comments dropped.
fn documents(yaml: &str) -> Result<Vec<Value>> {
    yaml.split("\n---\n")
        .map(|doc| serde_norway::from_str(doc).context("a printed manifest parses"))
        .filter(|doc| !matches!(doc, Ok(Value::Null)))
        .collect()
}

/// Git declares ConfigMap `settings`; one rule enforces in the test's
/// namespace. The manifests `check --rbac` prints for that config read
/// only ConfigMaps there and CRDs, and write ConfigMaps only there; the
/// harness binds Driftwarden's ServiceAccount by exactly those. Driftwarden,
/// run as that ServiceAccount (not as admin), reverts mallory's change; the
/// same ServiceAccount is refused a write in another namespace, and Secrets
/// and nodes. Started again on an audit-only config, it keeps its reads and
/// loses its writes.
async fn enforce_works_under_the_printed_rbac_and_nothing_else_is_allowed(bus: Bus) -> Result<()> {
    let mut s = Scenario::prepare(bus, "rbac", &[]).await?;
    let env = s.env;
    let namespace = s.namespace().to_owned();
    let other = s.add_namespace("rbac-other").await?;
    s.repo.write(FILE, &settings_yaml(&namespace, "info"))?;
    s.commit("Declare settings (OPS-1)")?;
    s.apply_as_gitops(&[FILE])?;
    let mut enforcing = Enforcing::new(s.settings.clone());
    enforcing.rules = vec![Rule::new("team", model::Mode::Enforce).in_namespace(&namespace)];
    s.config = enforcing.config()?;
    let identity = s
        .identity()
        .context("the scenario runs as its ServiceAccount")?;
    let account = identity.account().clone();
    let username = identity.username();
    let kubeconfig = identity.kubeconfig();

    // What `driftwarden check --rbac` prints, reading the cluster as the
    // admin (the ServiceAccount's token does not exist yet).
    let dir = tempfile::Builder::new().prefix("e2e-rbac-").tempdir()?;
    let mut printing = enforcing.clone();
    printing.settings.kubeconfig = env.kubeconfig(User::Admin).to_path_buf();
    printing.settings.data_dir = dir.path().join("data");
    let config_file = dir.path().join("driftwarden.yaml");
    std::fs::write(&config_file, printing.yaml()?)?;
    let rbac = printed_rbac(&config_file, &account.to_string()).await?;
    ensure!(
        !rbac.contains("secrets") && !rbac.contains("nodes") && !rbac.contains("'*'"),
        "more than the config needs:\n{rbac}"
    );
    let printed = documents(&rbac)?;
    let write_role = account.role_name("write");
    ensure!(
        printed.iter().any(|doc| doc["kind"] == "Role"
            && doc["metadata"]["name"] == write_role.as_str()
            && doc["metadata"]["namespace"] == namespace.as_str()),
        "no write role in the enforced namespace:\n{rbac}"
    );

    // Driftwarden as the ServiceAccount, bound by exactly what was printed:
    // a manual change is judged and reverted under those rights.
    let settings = s.config_map("settings");
    s.start().await?;
    let bound: Vec<Value> = s
        .identity()
        .and_then(|identity| identity.bound())
        .context("the start bound the ServiceAccount")?
        .manifests
        .iter()
        .map(|m| m.object.clone())
        .collect();
    ensure!(
        bound == printed,
        "the ServiceAccount is bound by other manifests than `check --rbac` prints:\n{bound:#?}\nprinted:\n{rbac}"
    );
    let whoami = kubectl_as(
        env,
        &kubeconfig,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    )?;
    ensure!(
        String::from_utf8_lossy(&whoami.stdout) == username,
        "the kubeconfig is not the ServiceAccount's: {whoami:?}"
    );
    s.wait_first_records(std::slice::from_ref(&settings))
        .await?;
    let after = s.seq();
    let patch = json!({"data": {"level": "debug"}}).to_string();
    s.kubectl(
        User::Mallory,
        &["patch", "configmap", "settings", "-p", &patch],
    )?;
    let drift = s
        .change(&settings, after, "mallory's change", |e| {
            e.object.pointer("/data/level").and_then(|l| l.as_str()) == Some("debug")
        })
        .await?;
    // The intent is recorded before the write; its result after.
    let (_, enforcement) = s
        .enforcement(&settings, drift.seq, "the revert's result", |e| {
            e.drift_seq == drift.seq && !matches!(e.outcome, Outcome::Intended)
        })
        .await?;
    ensure!(
        matches!(enforcement.outcome, Outcome::Reverted { .. }),
        "not reverted under the printed RBAC: {enforcement:?}"
    );
    s.wait_live("settings back at info", "configmap", "settings", |live| {
        live.and_then(|l| l.pointer("/data/level")?.as_str()) == Some("info")
    })
    .await?;

    // The same ServiceAccount is refused everywhere else.
    let refused = |args: &[&str]| -> Result<()> {
        let out = kubectl_as(env, &kubeconfig, args)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && stderr.to_lowercase().contains("forbidden"),
            "kubectl {} as the ServiceAccount was not refused: {out:?}",
            args.join(" ")
        );
        Ok(())
    };
    refused(&["create", "configmap", "intruder", "-n", &other])?;
    refused(&["patch", "configmap", "settings", "-n", &other, "-p", &patch])?;
    refused(&["delete", "configmap", "settings", "-n", &namespace])?;
    refused(&["get", "secrets", "--all-namespaces"])?;
    refused(&["get", "secrets", "-n", &namespace])?;
    refused(&["get", "nodes"])?;
    for (verb, resource, scope) in [
        ("patch", "configmaps", namespace.as_str()),
        ("watch", "configmaps", namespace.as_str()),
    ] {
        let out = kubectl_as(
            env,
            &kubeconfig,
            &["auth", "can-i", verb, resource, "-n", scope],
        )?;
        ensure!(
            out.status.success(),
            "cannot {verb} {resource} in {scope}: {out:?}"
        );
    }
    for args in [
        ["auth", "can-i", "list", "secrets", "--all-namespaces"],
        ["auth", "can-i", "list", "configmaps", "--all-namespaces"],
        ["auth", "can-i", "get", "nodes", "--all-namespaces"],
    ] {
        let out = kubectl_as(env, &kubeconfig, &args)?;
        ensure!(
            !out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "no",
            "{} answered {out:?}",
            args.join(" ")
        );
    }
    s.stop().await;

    // The rights follow the config: started again auditing only, the
    // ServiceAccount may read there still, and write nowhere.
    s.config = s.settings.config()?;
    s.start().await?;
    let can_i = |verb: &str| -> Result<String> {
        let out = kubectl_as(
            env,
            &kubeconfig,
            &["auth", "can-i", verb, "configmaps", "-n", &namespace],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    eventually(PATIENCE, "the write rights taken away", || {
        let answer = can_i("patch");
        async move { Ok((answer? == "no").then_some(())) }
    })
    .await?;
    let watch = can_i("watch")?;
    ensure!(watch == "yes", "watch answered {watch:?}");
    s.stop().await;
    Ok(())
}
