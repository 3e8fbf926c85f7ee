//! The Kubernetes side: users and tokens, kubeconfigs, the audit policy and
//! webhook (the files shipped in `config/`, see [`crate::audit_config`]),
//! RBAC, and the commands that run etcd, kube-apiserver and
//! kube-controller-manager.
//!
//! Users (static tokens, RBAC):
//! - `admin`: group `system:masters`, bypasses authorization;
//! - `gitops`: the GitOps agent, bound to `cluster-admin` by a
//!   ClusterRoleBinding (so RBAC decides and it shows up as a normal user in
//!   audit events);
//! - `alice`: a developer, `edit` in namespace `team-a` only (RoleBinding);
//! - `mallory`: an intruder, `edit` in every namespace (ClusterRoleBinding).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

use crate::audit_config::{self, WebhookTarget};
use crate::build::Toolset;
use crate::certs::Certs;
use crate::paths::{self, State};

/// A user of the test cluster.
#[derive(Debug, Clone, Copy)]
pub struct User {
    /// User name (also the kubeconfig file name).
    pub name: &'static str,
    /// Groups the token authenticates into.
    pub groups: &'static [&'static str],
}

/// Every user, in the order they are listed.
pub const USERS: [User; 4] = [
    User {
        name: "admin",
        groups: &["system:masters"],
    },
    User {
        name: "gitops",
        groups: &["driftwarden:gitops"],
    },
    User {
        name: "alice",
        groups: &[],
    },
    User {
        name: "mallory",
        groups: &[],
    },
];

/// Ports of the control plane.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Ports {
    /// etcd client port.
    pub etcd_client: u16,
    /// etcd peer port.
    pub etcd_peer: u16,
    /// kube-apiserver's secure port.
    pub apiserver: u16,
    /// kube-controller-manager's secure (health) port.
    pub controller_manager: u16,
}

/// Generated configuration files of the control plane.
#[derive(Debug, Clone)]
pub struct ClusterFiles {
    /// Certificates and keys.
    pub certs: Certs,
    /// `--token-auth-file`.
    pub tokens: PathBuf,
    /// `--audit-policy-file`: `config/audit-policy.yaml` as shipped.
    pub audit_policy: PathBuf,
    /// `--audit-webhook-config-file`: `config/audit-webhook.yaml` rendered
    /// for the audit relay.
    pub audit_webhook: PathBuf,
    /// The bearer token in `audit_webhook`, which the audit relay requires.
    pub audit_token: PathBuf,
    /// RBAC objects and namespace team-a, applied once the apiserver is ready.
    pub rbac: PathBuf,
    /// kube-controller-manager's health probe (admin token, TLS unchecked:
    /// its serving certificate is self-signed).
    pub controller_manager_probe: PathBuf,
}

/// Writes certificates, tokens, kubeconfigs and policies for one run; the
/// audit webhook points at `audit_webhook_url` with a new random token.
pub fn write_files(state: &State, ports: &Ports, audit_webhook_url: &str) -> Result<ClusterFiles> {
    let certs = Certs::generate(&state.certs())?;
    let config = state.config();
    let server = format!("https://127.0.0.1:{}", ports.apiserver);
    let ca_pem = paths::read(&certs.ca_cert)?;

    let mut token_lines = String::new();
    let mut admin_token = String::new();
    for (uid, user) in USERS.iter().enumerate() {
        let token = random_token()?;
        token_lines.push_str(&token_line(&token, user, uid + 1));
        if user.name == "admin" {
            admin_token.clone_from(&token);
        }
        let kubeconfig = user_kubeconfig(&server, &ca_pem, user.name, &token);
        paths::write(&state.kubeconfig(user.name), kubeconfig)?;
    }
    let files = ClusterFiles {
        certs,
        tokens: config.join("tokens.csv"),
        audit_policy: config.join("audit-policy.yaml"),
        audit_webhook: config.join("audit-webhook.yaml"),
        audit_token: config.join("audit-webhook.token"),
        rbac: config.join("rbac.yaml"),
        controller_manager_probe: state.kubeconfig("controller-manager-probe"),
    };
    paths::write(&files.tokens, token_lines)?;
    paths::write(&files.audit_policy, audit_config::shipped_policy()?)?;
    let audit_token = random_token()?;
    let webhook = audit_config::rendered_webhook(&WebhookTarget {
        server: audit_webhook_url,
        ca_file: &files.certs.ca_cert,
        token: &audit_token,
    })?;
    paths::write(&files.audit_webhook, webhook)?;
    paths::write(&files.audit_token, format!("{audit_token}\n"))?;
    paths::write(&files.rbac, RBAC)?;
    paths::write(
        &files.controller_manager_probe,
        probe_kubeconfig(
            &format!("https://127.0.0.1:{}", ports.controller_manager),
            &admin_token,
        ),
    )?;
    Ok(files)
}

/// One line of the static token file: `token,user,uid[,"group,…"]`.
fn token_line(token: &str, user: &User, uid: usize) -> String {
    if user.groups.is_empty() {
        format!("{token},{},{uid}\n", user.name)
    } else {
        format!(
            "{token},{},{uid},\"{}\"\n",
            user.name,
            user.groups.join(",")
        )
    }
}

/// 32 random hex characters from the kernel.
pub fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A kubeconfig for one user with the CA embedded.
fn user_kubeconfig(server: &str, ca_pem: &str, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: driftwarden-testenv
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: {user}
  context:
    cluster: driftwarden-testenv
    user: {user}
current-context: {user}
",
        ca = base64(ca_pem.as_bytes())
    )
}

/// A kubeconfig that skips TLS verification, for kube-controller-manager's
/// self-signed health endpoint (it checks the token with the apiserver).
fn probe_kubeconfig(server: &str, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: probe
  cluster:
    server: {server}
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: {token}
contexts:
- name: probe
  context:
    cluster: probe
    user: admin
current-context: probe
"
    )
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// RBAC for the users and namespace team-a.
const RBAC: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: team-a
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: driftwarden-testenv-gitops
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: cluster-admin
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: gitops
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: driftwarden-testenv-alice-edit
  namespace: team-a
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: edit
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: alice
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: driftwarden-testenv-mallory-edit
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: edit
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: mallory
"#;

/// etcd on loopback.
pub fn etcd_command(tools: &Toolset, state: &State, ports: &Ports) -> Command {
    let mut cmd = Command::new(&tools.etcd);
    cmd.arg("-data-dir")
        .arg(state.etcd_data())
        .arg("-listen-client")
        .arg(format!("127.0.0.1:{}", ports.etcd_client))
        .arg("-listen-peer")
        .arg(format!("127.0.0.1:{}", ports.etcd_peer));
    cmd
}

/// Whether etcd reports itself healthy.
pub fn etcd_ready(ports: &Ports) -> bool {
    crate::procs::http_ok(
        &format!("127.0.0.1:{}", ports.etcd_client),
        "/health",
        "\"true\"",
    )
}

/// kube-apiserver on loopback with TLS, static tokens, RBAC and the audit
/// webhook in batch mode with a short wait.
pub fn apiserver_command(tools: &Toolset, files: &ClusterFiles, ports: &Ports) -> Command {
    let certs = &files.certs;
    let mut cmd = Command::new(tools.kube_apiserver());
    cmd.args(flags(&[
        (
            "etcd-servers",
            format!("http://127.0.0.1:{}", ports.etcd_client),
        ),
        ("bind-address", "127.0.0.1".into()),
        ("advertise-address", "127.0.0.1".into()),
        ("secure-port", ports.apiserver.to_string()),
        ("tls-cert-file", path(&certs.serving_cert)),
        ("tls-private-key-file", path(&certs.serving_key)),
        ("client-ca-file", path(&certs.ca_cert)),
        (
            "service-account-issuer",
            "https://kubernetes.default.svc".into(),
        ),
        ("service-account-key-file", path(&certs.sa_pub)),
        ("service-account-signing-key-file", path(&certs.sa_key)),
        ("token-auth-file", path(&files.tokens)),
        ("authorization-mode", "RBAC".into()),
        ("service-cluster-ip-range", "10.0.0.0/24".into()),
        ("endpoint-reconciler-type", "none".into()),
        ("audit-policy-file", path(&files.audit_policy)),
        ("audit-webhook-config-file", path(&files.audit_webhook)),
        ("audit-webhook-mode", "batch".into()),
        ("audit-webhook-batch-max-wait", "100ms".into()),
        ("audit-webhook-batch-throttle-enable", "false".into()),
        ("audit-webhook-initial-backoff", "200ms".into()),
    ]));
    cmd
}

/// kube-controller-manager with the controllers the tests rely on:
/// Deployment → ReplicaSet, garbage collection, namespace deletion, default
/// service accounts and their tokens, and the aggregation that fills the
/// `edit`/`view`/`admin` ClusterRoles.
pub fn controller_manager_command(
    tools: &Toolset,
    state: &State,
    files: &ClusterFiles,
    ports: &Ports,
) -> Command {
    let kubeconfig = path(&state.kubeconfig("admin"));
    let mut cmd = Command::new(tools.kube_controller_manager());
    cmd.args(flags(&[
        ("kubeconfig", kubeconfig.clone()),
        ("authentication-kubeconfig", kubeconfig.clone()),
        ("authorization-kubeconfig", kubeconfig),
        ("authentication-skip-lookup", "true".into()),
        ("bind-address", "127.0.0.1".into()),
        ("secure-port", ports.controller_manager.to_string()),
        (
            "controllers",
            "deployment,replicaset,garbagecollector,namespace,serviceaccount,serviceaccount-token,clusterrole-aggregation"
                .into(),
        ),
        ("leader-elect", "false".into()),
        ("service-account-private-key-file", path(&files.certs.sa_key)),
        ("root-ca-file", path(&files.certs.ca_cert)),
        ("kube-api-qps", "100".into()),
        ("kube-api-burst", "200".into()),
    ]));
    cmd
}

fn flags(pairs: &[(&str, String)]) -> Vec<String> {
    pairs.iter().map(|(k, v)| format!("--{k}={v}")).collect()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Runs the built kubectl with a kubeconfig.
pub fn kubectl(tools: &Toolset, kubeconfig: &Path, args: &[&str]) -> Result<Output> {
    Command::new(tools.kubectl())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--request-timeout=5s")
        .args(args)
        .output()
        .context("running kubectl")
}

/// Whether `GET path` through kubectl answers `ok`.
pub fn raw_ok(tools: &Toolset, kubeconfig: &Path, raw_path: &str) -> bool {
    kubectl(tools, kubeconfig, &["get", "--raw", raw_path]).is_ok_and(|out| {
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok"
    })
}

/// Applies the RBAC objects and namespace team-a as admin.
pub fn apply_rbac(tools: &Toolset, state: &State, files: &ClusterFiles) -> Result<()> {
    let rbac = path(&files.rbac);
    let out = kubectl(
        tools,
        &state.kubeconfig("admin"),
        &["apply", "--server-side", "--force-conflicts", "-f", &rbac],
    )?;
    if !out.status.success() {
        bail!(
            "kubectl apply {rbac} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads_like_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
