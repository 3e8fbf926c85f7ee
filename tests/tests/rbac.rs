//! Least privilege, proven against the real apiserver: Driftwarden runs as a
//! ServiceAccount bound by exactly the manifests `check --rbac` prints for
//! its config, enforces where its config enforces, and is refused
//! everywhere else.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use driftwarden::cli::{Cli, Command as CliCommand, Output as CliOutput};
use driftwarden_e2e::app::config_map_yaml;
use driftwarden_e2e::enforcing::{Enforcing, Rule};
use driftwarden_e2e::scenario::{Bus, Scenario};
use driftwarden_e2e::{TestEnv, User, on_the_embedded_bus, unique_suffix};
use kube::config::Kubeconfig;
use model::Outcome;
use serde_json::json;

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

/// Deletes the cluster-scoped objects of a run, best effort, when dropped.
struct ClusterObjects {
    env: &'static TestEnv,
    name: String,
}

impl Drop for ClusterObjects {
    fn drop(&mut self) {
        for kind in ["clusterrolebinding", "clusterrole"] {
            let _ = self.env.kubectl(
                User::Admin,
                &["delete", kind, &self.name, "--ignore-not-found"],
            );
        }
    }
}

/// Runs kubectl with the kubeconfig at `kubeconfig`.
fn kubectl_as(env: &TestEnv, kubeconfig: &Path, args: &[&str]) -> Result<Output> {
    Command::new(&env.kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .with_context(|| format!("running kubectl {}", args.join(" ")))
}

/// A kubeconfig for `token`, with the admin kubeconfig's server and CA.
fn token_kubeconfig(env: &TestEnv, token: &str, path: &Path) -> Result<PathBuf> {
    let admin = Kubeconfig::read_from(env.kubeconfig(User::Admin))?;
    let cluster = admin
        .clusters
        .first()
        .and_then(|named| named.cluster.clone())
        .context("the admin kubeconfig names no cluster")?;
    let ca = cluster
        .certificate_authority_data
        .context("the admin kubeconfig has no CA data")?;
    let server = cluster
        .server
        .context("the admin kubeconfig has no server")?;
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testenv", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": "driftwarden", "user": {"token": token}}],
        "contexts": [{"name": "driftwarden", "context": {"cluster": "testenv", "user": "driftwarden"}}],
        "current-context": "driftwarden",
    });
    std::fs::write(path, serde_norway::to_string(&kubeconfig)?)?;
    Ok(path.to_path_buf())
}

/// The manifests `driftwarden check --rbac` prints for `config`, bound to
/// `account` (`NAMESPACE:NAME`).
async fn printed_rbac(config: &Path, account: &str) -> Result<String> {
    let cli = Cli {
        output: CliOutput::Human,
        command: CliCommand::Check {
            config: config.to_path_buf(),
            object: None,
            labels: Vec::new(),
            rbac: true,
            service_account: account.parse()?,
        },
    };
    let outcome = driftwarden::cli::run(cli).await?;
    ensure!(outcome.ok, "check --rbac failed:\n{}", outcome.text);
    Ok(outcome.text)
}

/// Git declares ConfigMap `settings`; one rule enforces in the test's
/// namespace. The manifests `check --rbac` prints for that config read
/// only ConfigMaps there and CRDs, and write ConfigMaps only there.
/// Driftwarden, run as a ServiceAccount bound by them (not as admin),
/// reverts mallory's change; the same ServiceAccount is refused a write in
/// another namespace, and Secrets and nodes.
async fn enforce_works_under_the_printed_rbac_and_nothing_else_is_allowed(bus: Bus) -> Result<()> {
    let mut s = Scenario::prepare(bus, "rbac", User::Admin, &[]).await?;
    let env = s.env;
    let namespace = s.namespace().to_owned();
    let other = s.add_namespace("rbac-other").await?;
    s.repo.write(FILE, &settings_yaml(&namespace, "info"))?;
    s.commit("Declare settings (OPS-1)")?;
    s.apply_as_gitops(&[FILE])?;
    let rule = Rule::new("team", model::Mode::Enforce).in_namespace(&namespace);
    let enforcing = |settings| {
        let mut enforcing = Enforcing::new(settings);
        enforcing.rules = vec![rule.clone()];
        enforcing
    };

    let account = format!("dw-{}", unique_suffix());
    let _cluster_objects = ClusterObjects {
        env,
        name: format!("{account}-read"),
    };
    env.kubectl_ok(
        User::Admin,
        &["create", "serviceaccount", &account, "-n", &namespace],
    )?;
    let dir = tempfile::Builder::new().prefix("e2e-rbac-").tempdir()?;
    let config_file = dir.path().join("driftwarden.yaml");
    std::fs::write(&config_file, enforcing(s.settings.clone()).yaml()?)?;
    let rbac = printed_rbac(&config_file, &format!("{namespace}:{account}")).await?;
    ensure!(
        !rbac.contains("secrets") && !rbac.contains("nodes") && !rbac.contains("'*'"),
        "more than the config needs:\n{rbac}"
    );
    ensure!(
        rbac.contains(&format!("name: {account}-write\n  namespace: {namespace}")),
        "no write role in the enforced namespace:\n{rbac}"
    );
    let rbac_file = dir.path().join("rbac.yaml");
    std::fs::write(&rbac_file, &rbac)?;
    env.kubectl_ok(User::Admin, &["apply", "-f", &rbac_file.to_string_lossy()])?;

    let token = env.kubectl_ok(
        User::Admin,
        &[
            "create",
            "token",
            &account,
            "-n",
            &namespace,
            "--duration",
            "1h",
        ],
    )?;
    let kubeconfig = token_kubeconfig(env, token.trim(), &dir.path().join("kubeconfig"))?;
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
        String::from_utf8_lossy(&whoami.stdout)
            == format!("system:serviceaccount:{namespace}:{account}"),
        "the kubeconfig is not the ServiceAccount's: {whoami:?}"
    );

    // Driftwarden as the ServiceAccount: a manual change is judged and
    // reverted under those rights.
    s.settings.kubeconfig = kubeconfig.clone();
    s.config = enforcing(s.settings.clone()).config()?;
    let settings = s.config_map("settings");
    s.start().await?;
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
    Ok(())
}
