//! Harness for tests against the real test environment
//! (`cargo xtask env up`): clients and kubectl per user, a fresh namespace
//! and Kafka topic prefix per test, the audit webhook fan-out, the
//! environment's processes and the test process's logs.
//!
//! ```text
//!   target/testenv/env.sh ──► TestEnv::get() ──► client(user) / kubectl(user, …)
//!                                            ├─► fresh_namespace(prefix) ──► grant(user, role)
//!                                            ├─► kafka_brokers + topic_prefix() ──► read_topic(…)
//!                                            ├─► secure_kafka() (TLS + SCRAM, ACLs) ──► read_topic_with(…)
//!                                            └─► component("kafka") ──► kill() / start()
//!   audit relay ──► events.jsonl ──────────────► AuditLog::wait_for(…)
//!        └──► register_audit_receiver(url, …) ──► the same batches, POSTed to the test's receiver
//!   logs::capture() ──► everything this process logs ──► logs::captured()
//! ```
//!
//! It knows nothing of Driftwarden: a stage crate's integration tests use
//! it without building the binary, and the end-to-end crate
//! (`driftwarden-e2e`) re-exports it under its scenarios.
//!
//! The environment must be running: a missing or silent environment is a
//! failure with the hint to run `cargo xtask env up`, never a skip.

pub mod component;
mod kafka;
pub mod logs;

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Container, Namespace, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;

pub use kafka::{KafkaMessage, SecureKafka, kafka_answers, read_topic, read_topic_with};

/// The hint every "environment missing" failure carries.
pub const NOT_RUNNING: &str = "test environment is not running: run `cargo xtask env up`";

/// A user of the test cluster (static token, RBAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum User {
    /// `system:masters`: everything, no authorization.
    Admin,
    /// The GitOps agent: `cluster-admin` through a ClusterRoleBinding.
    Gitops,
    /// A developer: `edit` in namespace `team-a` only.
    Alice,
    /// An intruder: `edit` in every namespace.
    Mallory,
}

impl User {
    /// Every user.
    pub const ALL: [User; 4] = [User::Admin, User::Gitops, User::Alice, User::Mallory];

    /// The user name the apiserver sees.
    pub fn name(self) -> &'static str {
        match self {
            User::Admin => "admin",
            User::Gitops => "gitops",
            User::Alice => "alice",
            User::Mallory => "mallory",
        }
    }

    fn env_var(self) -> String {
        format!("DW_KUBECONFIG_{}", self.name().to_uppercase())
    }
}

/// The namespace where [`User::Alice`] may edit.
pub const TEAM_NAMESPACE: &str = "team-a";

/// The running test environment, as `env.sh` (or the environment) describes it.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// `target/testenv`.
    pub dir: PathBuf,
    /// The built kubectl.
    pub kubectl: PathBuf,
    /// kube-apiserver's URL.
    pub kube_server: String,
    /// Kafka bootstrap servers.
    pub kafka_brokers: String,
    /// The audit relay's address (HTTPS), where kube-apiserver sends audit
    /// batches.
    pub audit_webhook_addr: String,
    /// The relay's JSON-lines file.
    pub audit_log: Option<PathBuf>,
    kubeconfigs: BTreeMap<User, PathBuf>,
    audit_receivers: PathBuf,
    ca_cert: PathBuf,
    webhook_cert: PathBuf,
    webhook_key: PathBuf,
    secure_kafka: Result<SecureKafka, String>,
}

impl TestEnv {
    /// The environment of this workspace, loaded and checked once per test
    /// binary. Panics with [`NOT_RUNNING`] when it is missing or silent.
    pub fn get() -> &'static TestEnv {
        static ENV: OnceLock<Result<TestEnv, String>> = OnceLock::new();
        let loaded = ENV.get_or_init(|| {
            let env = TestEnv::load().map_err(|e| format!("{e:#}"))?;
            env.check_answering().map_err(|e| format!("{e:#}"))?;
            Ok(env)
        });
        match loaded {
            Ok(env) => env,
            Err(err) => panic!("{err}"),
        }
    }

    /// Loads from the `DW_*` variables when `DW_TESTENV_DIR` is set, else from
    /// `<workspace>/target/testenv/env.sh`.
    pub fn load() -> Result<TestEnv> {
        match std::env::var("DW_TESTENV_DIR") {
            Ok(dir) if !dir.is_empty() => TestEnv::from_vars(|name| std::env::var(name).ok()),
            _ => TestEnv::load_from(&workspace_root().join("target").join("testenv")),
        }
    }

    /// Loads `env.sh` from a state directory.
    pub fn load_from(dir: &Path) -> Result<TestEnv> {
        let env_sh = dir.join("env.sh");
        let text = std::fs::read_to_string(&env_sh)
            .with_context(|| format!("{NOT_RUNNING} (no {})", env_sh.display()))?;
        let vars = parse_env_sh(&text);
        TestEnv::from_vars(|name| vars.get(name).cloned())
    }

    /// Builds the description from named variables.
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<TestEnv> {
        let need = |name: &str| {
            var(name)
                .filter(|v| !v.is_empty())
                .with_context(|| format!("{NOT_RUNNING} ({name} is not set)"))
        };
        let mut kubeconfigs = BTreeMap::new();
        for user in User::ALL {
            kubeconfigs.insert(user, PathBuf::from(need(&user.env_var())?));
        }
        // Checked when a test asks for it: an environment started before
        // the listener existed serves every other test.
        let secure_kafka = (|| {
            Ok::<_, anyhow::Error>(SecureKafka {
                brokers: need("DW_KAFKA_SECURE_BROKERS")?,
                mechanism: need("DW_KAFKA_SCRAM_MECHANISM")?,
                user: need("DW_KAFKA_SCRAM_USER")?,
                password_file: PathBuf::from(need("DW_KAFKA_SCRAM_PASSWORD_FILE")?),
                stranger: need("DW_KAFKA_STRANGER_USER")?,
                stranger_password_file: PathBuf::from(need("DW_KAFKA_STRANGER_PASSWORD_FILE")?),
                client_cert: PathBuf::from(need("DW_KAFKA_CLIENT_CERT")?),
                client_key: PathBuf::from(need("DW_KAFKA_CLIENT_KEY")?),
                ca_cert: PathBuf::from(need("DW_CA_CERT")?),
            })
        })()
        .map_err(|err| {
            format!("{err:#}: an environment from before Kafka's TLS listener; run `cargo xtask env down && cargo xtask env up`")
        });
        Ok(TestEnv {
            dir: PathBuf::from(need("DW_TESTENV_DIR")?),
            kubectl: PathBuf::from(need("DW_KUBECTL")?),
            kube_server: need("DW_KUBE_SERVER")?,
            kafka_brokers: need("DW_KAFKA_BROKERS")?,
            audit_webhook_addr: need("DW_AUDIT_WEBHOOK_ADDR")?,
            audit_log: var("DW_AUDIT_LOG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            kubeconfigs,
            audit_receivers: PathBuf::from(need("DW_AUDIT_RECEIVERS")?),
            ca_cert: PathBuf::from(need("DW_CA_CERT")?),
            webhook_cert: PathBuf::from(need("DW_WEBHOOK_CERT")?),
            webhook_key: PathBuf::from(need("DW_WEBHOOK_KEY")?),
            secure_kafka,
        })
    }

    /// Kafka's TLS + SCRAM listener, its users and a client certificate.
    /// Panics with [`NOT_RUNNING`] when the environment has none.
    pub fn secure_kafka(&self) -> &SecureKafka {
        match &self.secure_kafka {
            Ok(secure) => secure,
            Err(err) => panic!("{err}"),
        }
    }

    /// Fails with [`NOT_RUNNING`] unless the apiserver and every broker
    /// accept connections.
    pub fn check_answering(&self) -> Result<()> {
        let apiserver = self.kube_server.trim_start_matches("https://");
        let addrs = std::iter::once(apiserver).chain(self.kafka_brokers.split(','));
        for addr in addrs {
            let answers = addr
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
            if !answers {
                bail!("{NOT_RUNNING} ({addr} does not answer)");
            }
        }
        Ok(())
    }

    /// The kubeconfig file of `user`.
    pub fn kubeconfig(&self, user: User) -> &Path {
        &self.kubeconfigs[&user]
    }

    /// A kube-rs client authenticated as `user`.
    pub async fn client(&self, user: User) -> Result<kube::Client> {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig(user))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig of {}", user.name()))?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Runs the built kubectl as `user`; the output is returned whatever the
    /// exit status (see [`kubectl_ok`](Self::kubectl_ok)).
    pub fn kubectl(&self, user: User, args: &[&str]) -> Result<Output> {
        Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(self.kubeconfig(user))
            .args(args)
            .output()
            .with_context(|| format!("running {}", self.kubectl.display()))
    }

    /// Runs kubectl as `user` and returns its stdout; fails on a non-zero
    /// exit with kubectl's stderr.
    pub fn kubectl_ok(&self, user: User, args: &[&str]) -> Result<String> {
        let out = self.kubectl(user, args)?;
        if !out.status.success() {
            bail!(
                "kubectl {} as {} failed: {}",
                args.join(" "),
                user.name(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates a namespace named `<prefix>-<unique suffix>`, deleted (best
    /// effort, without waiting) when the returned guard drops.
    pub async fn fresh_namespace(&self, prefix: &str) -> Result<TestNamespace> {
        let name = format!("{}-{}", dns_label(prefix, 40), unique_suffix());
        let namespaces: Api<Namespace> = Api::all(self.client(User::Admin).await?);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("driftwarden.dev/e2e".to_string(), "true".to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(TestNamespace {
            name,
            env: self.clone(),
        })
    }

    /// A component of the environment (`kafka`, `etcd`, `kube-apiserver`,
    /// …) by its pid file, to kill and start again.
    pub fn component(&self, name: &str) -> Result<component::Component> {
        component::Component::find(&self.dir, name)
    }

    /// The audit events file, read from its current end.
    pub fn audit_log(&self) -> Result<AuditLog> {
        let path = self
            .audit_log
            .clone()
            .with_context(|| format!("{NOT_RUNNING} (DW_AUDIT_LOG is not set)"))?;
        AuditLog::from_end(path)
    }

    /// The environment's CA certificate (PEM): it signed kube-apiserver's,
    /// the audit relay's and [`webhook_cert`](Self::webhook_cert).
    pub fn ca_cert(&self) -> &Path {
        &self.ca_cert
    }

    /// A serving certificate (PEM) for an audit webhook on 127.0.0.1 or
    /// localhost, signed by [`ca_cert`](Self::ca_cert), which the audit
    /// relay trusts by default.
    pub fn webhook_cert(&self) -> &Path {
        &self.webhook_cert
    }

    /// The key (PEM) of [`webhook_cert`](Self::webhook_cert).
    pub fn webhook_key(&self) -> &Path {
        &self.webhook_key
    }

    /// Registers an audit webhook receiver: from the next batch on, the audit
    /// relay POSTs every batch kube-apiserver sends (the same `EventList`
    /// body) to `url` (`https://…` or `http://…`), with
    /// `Authorization: Bearer <token>` when `token` is given, checking an
    /// `https://` receiver's certificate against `ca_file` (default: the
    /// environment's CA). The registration ends when the guard drops.
    pub fn register_audit_receiver(
        &self,
        url: &str,
        token: Option<&str>,
        ca_file: Option<&Path>,
    ) -> Result<AuditReceiver> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            bail!("audit receiver url `{url}` must start with https:// or http://");
        }
        if let Some(ca_file) = ca_file
            && !ca_file.is_file()
        {
            bail!(
                "audit receiver ca_file {} is not a file: pass the PEM CA that signed the receiver's certificate, or None for the environment's CA",
                ca_file.display()
            );
        }
        let mut registration = serde_json::Map::new();
        registration.insert("url".into(), url.into());
        if let Some(token) = token {
            registration.insert("token".into(), token.into());
        }
        if let Some(ca_file) = ca_file {
            registration.insert("ca_file".into(), ca_file.display().to_string().into());
        }
        let thread = std::thread::current();
        let test = thread.name().unwrap_or("test");
        let test = test.rsplit("::").next().unwrap_or(test);
        let path =
            self.audit_receivers
                .join(format!("{}-{}.json", dns_label(test, 60), unique_suffix()));
        // Written aside and renamed, so the relay never reads half a file.
        let partial = path.with_extension("json.partial");
        std::fs::create_dir_all(&self.audit_receivers).with_context(|| {
            format!(
                "{NOT_RUNNING} (creating {})",
                self.audit_receivers.display()
            )
        })?;
        std::fs::write(&partial, Value::Object(registration).to_string())
            .with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, &path)
            .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
        Ok(AuditReceiver { path })
    }
}

/// A registered audit webhook receiver (see
/// [`TestEnv::register_audit_receiver`]); dropping it removes the
/// registration, and the relay stops sending with its next batch.
#[derive(Debug)]
pub struct AuditReceiver {
    path: PathBuf,
}

impl AuditReceiver {
    /// The registration file in the relay's receivers folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AuditReceiver {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A namespace owned by one test.
#[derive(Debug)]
pub struct TestNamespace {
    /// Its name.
    pub name: String,
    env: TestEnv,
}

impl TestNamespace {
    /// Binds ClusterRole `role` (e.g. `edit`) to `user` in this namespace.
    pub fn grant(&self, user: User, role: &str) -> Result<()> {
        let binding = format!("{}-{role}", user.name());
        let role = format!("--clusterrole={role}");
        let user = format!("--user={}", user.name());
        self.env.kubectl_ok(
            User::Admin,
            &[
                "create",
                "rolebinding",
                &binding,
                &role,
                &user,
                "-n",
                &self.name,
            ],
        )?;
        Ok(())
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = self.env.kubectl(
            User::Admin,
            &[
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ],
        );
    }
}

/// A reader of the audit relay's JSON-lines file that returns only events
/// appended after it was opened.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    offset: u64,
}

impl AuditLog {
    /// A reader positioned at the current end of `path`.
    pub fn from_end(path: PathBuf) -> Result<AuditLog> {
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Ok(AuditLog { path, offset })
    }

    /// The complete events appended since the last call (a last line without
    /// its newline is still being written and is left for later).
    pub fn read_new(&mut self) -> Result<Vec<Value>> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => {
                return Err(err).with_context(|| format!("opening {}", self.path.display()));
            }
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.offset += complete as u64;
        bytes[..complete]
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).context("an audit line is not JSON"))
            .collect()
    }

    /// Waits up to `timeout` for an event matching `matches`.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.read_new()?.into_iter().find(|e| matches(e)) {
                return Ok(event);
            }
            if Instant::now() >= deadline {
                bail!(
                    "no matching audit event within {timeout:?} in {}",
                    self.path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls `check` every 100 ms until it yields a value; fails after `timeout`
/// naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Deployment named `name` with `replicas` replicas of a placeholder
/// image (no node runs it: the tests need the objects, not the pods).
pub fn deployment(name: &str, replicas: i32) -> Deployment {
    let labels: BTreeMap<String, String> = [("app".to_string(), name.to_string())].into();
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "app".to_string(),
                        image: Some("registry.invalid/driftwarden/app:1".to_string()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// A Kafka topic prefix no other test uses: `e2e-<test name>-<suffix>.`.
pub fn topic_prefix() -> String {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("test");
    let test = test.rsplit("::").next().unwrap_or(test);
    format!("e2e-{}-{}.", dns_label(test, 60), unique_suffix())
}

/// A short suffix unique within this machine for the life of a test run.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:05x}{n}", std::process::id() % 0xfff, nanos >> 12)
}

/// Lowercase letters, digits and dashes only, at most `max` long.
fn dns_label(text: &str, max: usize) -> String {
    let label: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(max)
        .collect();
    label.trim_matches('-').to_string()
}

/// The workspace root: the nearest ancestor of the package under test (as
/// cargo reports it at run time, else this crate) whose Cargo.toml declares
/// `[workspace]`, so other crates' tests find the same environment.
pub fn workspace_root() -> PathBuf {
    let package = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    package
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|manifest| manifest.lines().any(|line| line.trim() == "[workspace]"))
        })
        .map_or(package.clone(), Path::to_path_buf)
}

/// The `export NAME='value'` lines of an `env.sh`.
fn parse_env_sh(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(name, value)| (name.to_string(), unquote(value)))
        .collect()
}

/// Undoes the single-quoting `env.sh` uses (`'it'\''s'` → `it's`).
fn unquote(value: &str) -> String {
    value.replace(r"'\''", "'").trim_matches('\'').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_sh_values_are_unquoted() {
        let vars = parse_env_sh("# comment\nexport A='x y'\nexport B='it'\\''s'\nC=ignored\n");
        assert_eq!(vars.get("A").map(String::as_str), Some("x y"));
        assert_eq!(vars.get("B").map(String::as_str), Some("it's"));
        assert!(!vars.contains_key("C"));
    }

    #[test]
    fn labels_are_dns_safe() {
        assert_eq!(
            dns_label("Smoke::Scale_As-Alice", 63),
            "smoke--scale-as-alice"
        );
        assert_eq!(dns_label("abcdef", 3), "abc");
    }
}
