//! Driftwarden as a test runs it: a config for one test (its namespace, git
//! repository, data directory and bus), and waits on what the ledger records.
//!
//! ```text
//! Settings ──yaml()──▶ config text ──▶ driftwarden::run::start / `driftwarden run -c`
//! ledger ──wait_change(key, after seq, matches)──▶ the judged change a test asserts on
//! Scenario::prepare(bus, name, …) ──▶ declare, commit, apply_as_gitops ──▶ start ──▶ change / enforcement
//! start ──rbac::Identity::bind(config)──▶ Driftwarden as its ServiceAccount, bound by `check --rbac`
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use driftwarden::config::Config;
use driftwarden::run::{Role, Running};
use ledger::Ledger;
use model::{ChangeEvent, Enforcement, Judgement, LedgerRecord, ObjectKey, RecordBody, Verdict};
use serde_json::Value;
use tempfile::TempDir;

use crate::git::GitRepo;
use crate::rbac::Identity;
use crate::{TestEnv, TestNamespace, User, eventually, topic_prefix, unique_suffix};

/// The cluster name every test config uses; the first segment of keys.
pub const CLUSTER: &str = "e2e";

/// How often the ledger is polled.
const POLL: Duration = Duration::from_millis(10);

/// How long one record or cluster state may take to appear.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// How long the cluster may take to settle (rollouts, revisions).
pub const SETTLE: Duration = Duration::from_secs(60);

/// Which bus Driftwarden runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusSettings {
    /// In-process channels.
    Embedded,
    /// The environment's Kafka, with topics and group of this test only.
    Kafka {
        /// Bootstrap servers.
        brokers: String,
        /// Topic prefix, e.g. from [`crate::topic_prefix`].
        topic_prefix: String,
        /// Consumer group of the correlator.
        group_id: String,
        /// `bus.security`; plaintext without.
        security: Option<SecuritySettings>,
    },
}

/// `bus.security` of a test config: TLS trusting `ca_file`, SASL
/// SCRAM-SHA-512 as `username`, and a client certificate when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecuritySettings {
    /// The CA of the brokers' certificates.
    pub ca_file: PathBuf,
    /// A client certificate and its key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The SCRAM user.
    pub username: String,
    /// The file holding its password.
    pub password_file: PathBuf,
}

impl BusSettings {
    /// Kafka at `brokers` with topics under `topic_prefix` and a group named
    /// after it.
    pub fn kafka(brokers: &str, topic_prefix: &str) -> BusSettings {
        BusSettings::Kafka {
            brokers: brokers.to_string(),
            topic_prefix: topic_prefix.to_string(),
            group_id: format!("{topic_prefix}correlators"),
            security: None,
        }
    }

    /// The environment's Kafka over its TLS + SCRAM listener, as its SCRAM
    /// user with the environment's client certificate; topics and group
    /// under `driftwarden.<topic_prefix>`, which the user's ACLs cover.
    pub fn secure_kafka(env: &TestEnv, topic_prefix: &str) -> BusSettings {
        let secure = env.secure_kafka();
        let topic_prefix = format!("driftwarden.{topic_prefix}");
        BusSettings::Kafka {
            brokers: secure.brokers.clone(),
            group_id: format!("{topic_prefix}correlators"),
            topic_prefix,
            security: Some(SecuritySettings {
                ca_file: secure.ca_cert.clone(),
                client_cert: Some((secure.client_cert.clone(), secure.client_key.clone())),
                username: secure.user.clone(),
                password_file: secure.password_file.clone(),
            }),
        }
    }
}

/// What one test's Driftwarden watches and where it keeps its data.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Kubeconfig Driftwarden uses.
    pub kubeconfig: PathBuf,
    /// Ledger and git clones.
    pub data_dir: PathBuf,
    /// The git repository's URL.
    pub repo_url: String,
    /// Directories of the repository holding manifests; empty: all.
    pub paths: Vec<String>,
    /// The one namespace watched (and the default for manifests).
    pub namespace: String,
    /// The bus.
    pub bus: BusSettings,
    /// Kinds watched beyond what git declares, e.g. `v1/ConfigMap`.
    pub extra_kinds: Vec<String>,
    /// Trusted field managers: names only without an audit webhook (then
    /// unverified managers are accepted), bound to the controller manager's
    /// identities with one.
    pub trusted_managers: Vec<String>,
    /// Trusted users.
    pub trusted_users: Vec<String>,
    /// Driftwarden's own audit webhook, fed by the environment's relay.
    pub audit_webhook: Option<AuditWebhookSettings>,
}

/// Driftwarden's audit webhook in a test: TLS with the environment's
/// webhook certificate, a bearer token of the test's own.
#[derive(Debug, Clone)]
pub struct AuditWebhookSettings {
    /// Where it listens.
    pub listen: std::net::SocketAddr,
    /// The file holding the token the relay sends.
    pub token_file: PathBuf,
    /// The token.
    pub token: String,
    /// Server certificate and key.
    pub cert_file: PathBuf,
    /// Server key.
    pub key_file: PathBuf,
}

impl AuditWebhookSettings {
    /// A webhook on a free loopback port, its token written under `dir`.
    pub fn new(env: &TestEnv, dir: &Path) -> Result<AuditWebhookSettings> {
        let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let token = format!("e2e-{}-{}", unique_suffix(), unique_suffix());
        std::fs::create_dir_all(dir)?;
        let token_file = dir.join("audit-webhook.token");
        std::fs::write(&token_file, format!("{token}\n"))?;
        Ok(AuditWebhookSettings {
            listen,
            token_file,
            token,
            cert_file: env.webhook_cert().to_path_buf(),
            key_file: env.webhook_key().to_path_buf(),
        })
    }

    /// The URL the relay posts to.
    pub fn url(&self) -> String {
        format!("https://{}/audit", self.listen)
    }
}

impl Settings {
    /// Settings for one test: Driftwarden with `kubeconfig` (its
    /// ServiceAccount's, [`Identity::kubeconfig`]), its data in `data_dir`,
    /// reading `apps/` of `repo_url`, watching `namespace` on `bus`, no
    /// extra kinds, trusting `kube-controller-manager`.
    pub fn new(
        kubeconfig: &Path,
        data_dir: &Path,
        repo_url: &str,
        namespace: &str,
        bus: BusSettings,
    ) -> Settings {
        Settings {
            kubeconfig: kubeconfig.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            repo_url: repo_url.to_string(),
            paths: vec!["apps".into()],
            namespace: namespace.to_string(),
            bus,
            extra_kinds: Vec::new(),
            trusted_managers: vec!["kube-controller-manager".into()],
            trusted_users: Vec::new(),
            audit_webhook: None,
        }
    }

    /// The config file's text.
    pub fn yaml(&self) -> String {
        let q = |text: &str| serde_json::Value::from(text).to_string();
        let list = |items: &[String]| {
            let quoted: Vec<String> = items.iter().map(|i| q(i)).collect();
            format!("[{}]", quoted.join(", "))
        };
        let bus = match &self.bus {
            BusSettings::Embedded => "  type: embedded\n".to_string(),
            BusSettings::Kafka {
                brokers,
                topic_prefix,
                group_id,
                security,
            } => {
                let mut bus = format!(
                    "  type: kafka\n  brokers: {}\n  topic_prefix: {}\n  group_id: {}\n  partitions: 2\n",
                    q(brokers),
                    q(topic_prefix),
                    q(group_id)
                );
                if let Some(security) = security {
                    let _ = write!(
                        bus,
                        "  security:\n    protocol: sasl_ssl\n    ca_file: {}\n",
                        q(&security.ca_file.to_string_lossy())
                    );
                    if let Some((cert, key)) = &security.client_cert {
                        let _ = write!(
                            bus,
                            "    cert_file: {}\n    key_file: {}\n",
                            q(&cert.to_string_lossy()),
                            q(&key.to_string_lossy())
                        );
                    }
                    let _ = writeln!(
                        bus,
                        "    sasl: {{mechanism: SCRAM-SHA-512, username: {}, password_file: {}}}",
                        q(&security.username),
                        q(&security.password_file.to_string_lossy())
                    );
                }
                bus
            }
        };
        let managers: Vec<String> = self
            .trusted_managers
            .iter()
            .map(|name| match &self.audit_webhook {
                None => format!("{{name: {}}}", q(name)),
                Some(_) => format!(
                    "{{name: {}, users: [\"system:kube-controller-manager\"], service_accounts: [\"kube-system:*\"]}}",
                    q(name)
                ),
            })
            .collect();
        let audit = match &self.audit_webhook {
            None => String::new(),
            Some(webhook) => format!(
                "audit_webhook:
  listen: {listen}
  tls: {{cert_file: {cert}, key_file: {key}}}
  auth: {{type: bearer_token, token_file: {token}}}
  join_wait: 2s
",
                listen = q(&webhook.listen.to_string()),
                cert = q(&webhook.cert_file.to_string_lossy()),
                key = q(&webhook.key_file.to_string_lossy()),
                token = q(&webhook.token_file.to_string_lossy()),
            ),
        };
        format!(
            "version: 1
cluster:
  name: {cluster}
  kubeconfig: {kubeconfig}
data_dir: {data_dir}
bus:
{bus}sources:
  - name: apps
    url: {url}
    branch: main
    paths: {paths}
    default_namespace: {namespace}
    interval: 1s
watch:
  extra_kinds: {extra_kinds}
  namespaces: [{namespace}]
trust:
  users: {users}
  managers: [{managers}]
  accept_unverified_managers: {unverified}
{audit}policies:
  - name: default
    mode: audit
",
            cluster = CLUSTER,
            kubeconfig = q(&self.kubeconfig.to_string_lossy()),
            data_dir = q(&self.data_dir.to_string_lossy()),
            url = q(&self.repo_url),
            paths = list(&self.paths),
            namespace = q(&self.namespace),
            extra_kinds = list(&self.extra_kinds),
            users = list(&self.trusted_users),
            managers = managers.join(", "),
            unverified = self.audit_webhook.is_none(),
            audit = audit,
        )
    }

    /// The parsed and validated config.
    pub fn config(&self) -> Result<Config> {
        let text = self.yaml();
        Config::parse(Path::new("e2e.yaml"), &text)
            .with_context(|| format!("the test config does not load:\n{text}"))
    }

    /// Writes the config to `path`, for the binary.
    pub fn write(&self, path: &Path) -> Result<()> {
        self.config()?;
        std::fs::write(path, self.yaml()).with_context(|| format!("writing {}", path.display()))
    }
}

/// The key of a namespaced object in the test cluster; `api_version` as in
/// manifests (`v1`, `apps/v1`).
pub fn key(api_version: &str, kind: &str, namespace: &str, name: &str) -> ObjectKey {
    ObjectKey::new(
        CLUSTER,
        ObjectKey::group_of(api_version),
        kind,
        namespace,
        name,
    )
}

/// A change record found in the ledger.
#[derive(Debug, Clone)]
pub struct Found {
    /// Its sequence number.
    pub seq: u64,
    /// The change.
    pub event: ChangeEvent,
    /// Its judgement.
    pub judgement: Judgement,
}

/// Waits up to `timeout` for the first change record about `key` after
/// record `after` that satisfies `matches`. The failure lists the object's
/// history since `after`.
pub async fn wait_change(
    ledger: &Ledger,
    key: &ObjectKey,
    after: u64,
    timeout: Duration,
    what: &str,
    matches: impl Fn(&ChangeEvent, &Judgement) -> bool,
) -> Result<Found> {
    let deadline = Instant::now() + timeout;
    loop {
        let history = ledger.history(key)?;
        let found = history.iter().find_map(|record| match &record.body {
            RecordBody::Change { event, judgement }
                if record.seq > after && matches(event, judgement) =>
            {
                Some(Found {
                    seq: record.seq,
                    event: event.clone(),
                    judgement: judgement.clone(),
                })
            }
            _ => None,
        });
        if let Some(found) = found {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            let since: Vec<LedgerRecord> = history.into_iter().filter(|r| r.seq > after).collect();
            bail!(
                "{what}: no such record about {key} after #{after} within {timeout:?}; its records since:\n{}",
                describe(&since)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits up to `timeout` for the first record after `after` that satisfies
/// `matches` (any record type).
pub async fn wait_record(
    ledger: &Ledger,
    after: u64,
    timeout: Duration,
    what: &str,
    matches: impl Fn(&RecordBody) -> bool,
) -> Result<LedgerRecord> {
    let deadline = Instant::now() + timeout;
    let mut next = after + 1;
    loop {
        while next <= ledger.len() {
            let record = ledger
                .get(next)?
                .with_context(|| format!("the ledger lost record #{next}"))?;
            next += 1;
            if matches(&record.body) {
                return Ok(record);
            }
        }
        if Instant::now() >= deadline {
            let since = records(ledger)?
                .into_iter()
                .filter(|r| r.seq > after)
                .collect::<Vec<_>>();
            bail!(
                "{what}: no such record after #{after} within {timeout:?}; records since:\n{}",
                describe(&since)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Every record of the ledger, oldest first.
pub fn records(ledger: &Ledger) -> Result<Vec<LedgerRecord>> {
    (1..=ledger.len())
        .map(|seq| {
            ledger
                .get(seq)?
                .with_context(|| format!("the ledger lost record #{seq}"))
        })
        .collect()
}

/// One line per record: sequence, type, and for changes the key, kind,
/// version, verdict and actor.
pub fn describe(records: &[LedgerRecord]) -> String {
    let mut out = String::new();
    for record in records {
        let _ = match &record.body {
            RecordBody::Change { event, judgement } => writeln!(
                out,
                "  #{} change {} {:?} rv {}: {} by {}",
                record.seq,
                event.key,
                event.kind,
                event.resource_version,
                judgement.verdict,
                judgement.actor
            ),
            RecordBody::GitSync(sync) => writeln!(
                out,
                "  #{} git sync {} ({})",
                record.seq,
                sync.commit.short(),
                sync.commit.summary
            ),
            RecordBody::GitError(error) => writeln!(
                out,
                "  #{} git error {}:{:?}: {}",
                record.seq, error.file, error.line, error.message
            ),
            RecordBody::Amendment(amendment) => writeln!(
                out,
                "  #{} amendment of #{} about {}: {} by {}",
                record.seq,
                amendment.amends,
                amendment.key,
                amendment.judgement.verdict,
                amendment.judgement.actor
            ),
            other => writeln!(out, "  #{} {other:?}", record.seq),
        };
    }
    if out.is_empty() {
        out.push_str("  (none)\n");
    }
    out
}

/// Which bus a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    /// In-process channels.
    Embedded,
    /// The environment's Kafka, under a topic prefix of the test's own.
    Kafka,
}

impl Bus {
    /// The settings of this bus for one test.
    pub fn settings(self, env: &TestEnv) -> BusSettings {
        match self {
            Bus::Embedded => BusSettings::Embedded,
            Bus::Kafka => BusSettings::kafka(&env.kafka_brokers, &topic_prefix()),
        }
    }
}

/// Whether an enforcement record is a decision (a revert, a hold, a dry
/// run…), not the intent recorded before a write, whose result follows.
pub fn is_decision(enforcement: &Enforcement) -> bool {
    enforcement.outcome != model::Outcome::Intended
}

/// One test's world: its namespaces, its git repository, its Driftwarden.
///
/// [`Scenario::prepare`] makes the namespace and an empty repository; the
/// test declares its app (writes, [`Scenario::commit`]), applies it as the
/// GitOps agent, then [`Scenario::start`]s Driftwarden on [`Scenario::config`]
/// (an audit-everything config unless the test sets another).
///
/// Driftwarden runs as ServiceAccount `driftwarden` of the scenario's
/// namespace, bound at each start by exactly the RBAC `check --rbac` prints
/// for the config started ([`Identity`]), never as admin.
pub struct Scenario {
    /// The environment.
    pub env: &'static TestEnv,
    /// The scenario's own namespace.
    pub ns: TestNamespace,
    /// More namespaces, from [`Scenario::add_namespace`].
    pub others: Vec<TestNamespace>,
    /// The git repository Driftwarden reads.
    pub repo: GitRepo,
    /// Commit ids, oldest first.
    pub commits: Vec<String>,
    /// Driftwarden's settings (bus, kubeconfig, kinds, trust).
    pub settings: Settings,
    /// The config [`Scenario::start`] runs.
    pub config: Config,
    /// Driftwarden's identity; `None` after [`Scenario::run_as_admin`].
    identity: Option<Identity>,
    running: Option<Running>,
    ledger: Option<Arc<Ledger>>,
    receiver: Option<crate::AuditReceiver>,
    /// Dropped last: the ledger above writes its last checkpoint in it.
    scratch: TempDir,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("namespaces", &self.namespaces())
            .field("commits", &self.commits)
            .field("settings", &self.settings)
            .field("running", &self.running.is_some())
            .finish_non_exhaustive()
    }
}

impl Scenario {
    /// A fresh namespace `name-…` that alice may edit, an empty repository,
    /// and settings for a Driftwarden on `bus` as its ServiceAccount in that
    /// namespace, watching `extra_kinds` and trusting
    /// `kube-controller-manager` and `trusted-bot`. Nothing committed,
    /// applied, bound or started.
    pub async fn prepare(bus: Bus, name: &str, extra_kinds: &[&str]) -> Result<Scenario> {
        let env = TestEnv::get();
        let ns = env.fresh_namespace(name).await?;
        ns.grant(User::Alice, "edit")?;
        let repo = GitRepo::new()?;
        let scratch = tempfile::Builder::new().prefix("e2e-scenario-").tempdir()?;
        let identity = Identity::new(env, &ns.name)?;
        let settings = Settings {
            extra_kinds: extra_kinds.iter().map(|k| k.to_string()).collect(),
            trusted_managers: vec!["kube-controller-manager".into(), "trusted-bot".into()],
            ..Settings::new(
                &identity.kubeconfig(),
                &scratch.path().join("data"),
                &repo.url(),
                &ns.name,
                bus.settings(env),
            )
        };
        let config = settings.config()?;
        Ok(Scenario {
            env,
            ns,
            others: Vec::new(),
            repo,
            commits: Vec::new(),
            settings,
            config,
            scratch,
            identity: Some(identity),
            running: None,
            ledger: None,
            receiver: None,
        })
    }

    /// Makes another fresh namespace `name-…`; returns its name.
    pub async fn add_namespace(&mut self, name: &str) -> Result<String> {
        let ns = self.env.fresh_namespace(name).await?;
        let name = ns.name.clone();
        self.others.push(ns);
        Ok(name)
    }

    /// The scenario's namespace followed by the others.
    pub fn namespaces(&self) -> Vec<String> {
        std::iter::once(&self.ns)
            .chain(&self.others)
            .map(|ns| ns.name.clone())
            .collect()
    }

    /// Commits the working tree (no sync awaited: for before the start).
    pub fn commit(&mut self, message: &str) -> Result<String> {
        let id = self.repo.commit(message)?;
        self.commits.push(id.clone());
        Ok(id)
    }

    /// Binds Driftwarden's ServiceAccount by the RBAC `check --rbac` prints
    /// for `config` (see [`Identity::bind`]). [`Scenario::start`] does it
    /// for [`Scenario::config`]; a test starting Driftwarden otherwise
    /// (another role, another config) calls it first. Nothing after
    /// [`Scenario::run_as_admin`].
    pub async fn bind(&mut self, config: &Config) -> Result<()> {
        if let Some(identity) = &mut self.identity {
            identity.bind(config).await?;
        }
        Ok(())
    }

    /// Driftwarden's ServiceAccount; `None` after [`Scenario::run_as_admin`].
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Driftwarden's ServiceAccount, to bind (e.g. for
    /// [`crate::process::Process::run`]); fails after
    /// [`Scenario::run_as_admin`].
    pub fn identity_mut(&mut self) -> Result<&mut Identity> {
        self.identity
            .as_mut()
            .context("this scenario runs Driftwarden as the admin")
    }

    /// Opts out of the ServiceAccount: Driftwarden runs as the admin, with
    /// every right. Only for a test that needs it, saying why at the call.
    pub fn run_as_admin(&mut self) {
        self.identity = None;
        self.settings.kubeconfig = self.env.kubeconfig(User::Admin).to_path_buf();
        self.config.cluster.kubeconfig = Some(self.settings.kubeconfig.clone());
    }

    /// Starts Driftwarden without registering its audit webhook with the
    /// relay: audit events reach it only when the test posts them.
    pub async fn start_without_relay(&mut self) -> Result<()> {
        let config = self.config.clone();
        self.bind(&config).await?;
        let running = driftwarden::run::start(self.config.clone(), Role::All)
            .await
            .context("starting driftwarden")?;
        self.ledger = Some(running.ledger.clone().context("role all has a ledger")?);
        self.running = Some(running);
        Ok(())
    }

    /// The readiness of the running Driftwarden's parts.
    pub fn health(&self) -> Option<driftwarden::health::Health> {
        Some(self.running.as_ref()?.health.clone())
    }

    /// The counters of the running Driftwarden's audit webhook.
    pub fn audit_webhook_counters(&self) -> Option<watch::WebhookCounters> {
        let webhook = self.running.as_ref()?.audit_webhook.as_ref()?;
        Some(webhook.counters().clone())
    }

    /// Serves Driftwarden's own audit webhook (registered with the
    /// environment's relay at start) and trusts the controller manager's
    /// manager names only with its identity behind them.
    pub fn with_audit_webhook(&mut self) -> Result<()> {
        self.settings.audit_webhook = Some(AuditWebhookSettings::new(
            self.env,
            &self.scratch.path().join("secrets"),
        )?);
        self.config = self.settings.config()?;
        Ok(())
    }

    /// Starts Driftwarden on the scenario's data directory; with an audit
    /// webhook, has the relay post to it.
    pub async fn start(&mut self) -> Result<()> {
        self.start_without_relay().await?;
        if let Some(webhook) = &self.settings.audit_webhook
            && self.receiver.is_none()
        {
            self.receiver = Some(self.env.register_audit_receiver(
                &webhook.url(),
                Some(&webhook.token),
                Some(self.env.ca_cert()),
            )?);
        }
        Ok(())
    }

    /// Stops Driftwarden and lets go of its ledger.
    pub async fn stop(&mut self) {
        self.ledger = None;
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }

    /// Waits for the first record about each of `keys`.
    pub async fn wait_first_records(&self, keys: &[ObjectKey]) -> Result<()> {
        for key in keys {
            wait_change(self.ledger(), key, 0, PATIENCE, "first record", |_, _| true).await?;
        }
        Ok(())
    }

    /// The running Driftwarden's ledger; panics when it is stopped.
    pub fn ledger(&self) -> &Ledger {
        self.ledger.as_deref().expect("driftwarden is running")
    }

    /// The running Driftwarden's ledger, shared (for what reads it beside
    /// Driftwarden, like `replay`).
    pub fn shared_ledger(&self) -> std::sync::Arc<Ledger> {
        self.ledger.clone().expect("driftwarden is running")
    }

    /// The sequence number of the last record.
    pub fn seq(&self) -> u64 {
        self.ledger().len()
    }

    /// The ledger record `seq`.
    pub fn record(&self, seq: u64) -> Result<LedgerRecord> {
        self.ledger()
            .get(seq)?
            .with_context(|| format!("no record #{seq}"))
    }

    /// The scenario's namespace.
    pub fn namespace(&self) -> &str {
        &self.ns.name
    }

    /// The first of the other namespaces; panics when there is none.
    pub fn other_namespace(&self) -> &str {
        &self.others.first().expect("a second namespace").name
    }

    /// Deployment `web` of the scenario's namespace.
    pub fn deployment(&self) -> ObjectKey {
        key("apps/v1", "Deployment", self.namespace(), "web")
    }

    /// ConfigMap `name` of the scenario's namespace.
    pub fn config_map(&self, name: &str) -> ObjectKey {
        key("v1", "ConfigMap", self.namespace(), name)
    }

    /// Service `web` of the scenario's namespace.
    pub fn service(&self) -> ObjectKey {
        key("v1", "Service", self.namespace(), "web")
    }

    /// The newest commit; panics before the first.
    pub fn head(&self) -> &str {
        self.commits.last().expect("the first commit")
    }

    /// kubectl as `user` in the scenario's namespace.
    pub fn kubectl(&self, user: User, args: &[&str]) -> Result<String> {
        self.kubectl_in(self.namespace(), user, args)
    }

    /// kubectl as `user` in `namespace`.
    pub fn kubectl_in(&self, namespace: &str, user: User, args: &[&str]) -> Result<String> {
        let mut all = args.to_vec();
        all.extend(["-n", namespace]);
        self.env.kubectl_ok(user, &all)
    }

    /// What the GitOps agent does: server-side apply of `files` of the
    /// repository as user `gitops`, field manager `gitops`.
    pub fn apply_as_gitops(&self, files: &[&str]) -> Result<()> {
        let paths: Vec<PathBuf> = files.iter().map(|f| self.repo.file(f)).collect();
        let mut args = vec!["apply", "--server-side", "--field-manager=gitops"];
        for path in &paths {
            args.push("-f");
            args.push(path.to_str().context("a UTF-8 path")?);
        }
        self.env.kubectl_ok(User::Gitops, &args)?;
        Ok(())
    }

    /// [`Scenario::apply_as_gitops`] of every manifest under `apps/`.
    pub fn apply_all_as_gitops(&self) -> Result<()> {
        let apps = self.repo.file("apps");
        let apps = apps.to_str().context("a UTF-8 path")?;
        self.env.kubectl_ok(
            User::Gitops,
            &[
                "apply",
                "--server-side",
                "--field-manager=gitops",
                "-R",
                "-f",
                apps,
            ],
        )?;
        Ok(())
    }

    /// Creates the object `manifest` describes, as `user`.
    pub fn create(&self, user: User, manifest: &str) -> Result<()> {
        let path = self
            .scratch
            .path()
            .join(format!("manifest-{}.yaml", unique_suffix()));
        std::fs::write(&path, manifest).with_context(|| format!("writing {}", path.display()))?;
        let path = path.to_str().context("a UTF-8 path")?;
        self.env.kubectl_ok(user, &["create", "-f", path])?;
        Ok(())
    }

    /// Has the running Driftwarden fetch git now rather than at its next
    /// interval.
    pub fn fetch_now(&self) {
        if let Some(running) = &self.running {
            running.fetch_now.notify_one();
        }
    }

    /// Commits the working tree and waits until Driftwarden has synced the
    /// commit (fetch poked at once rather than waiting for the interval).
    pub async fn commit_and_sync(&mut self, message: &str) -> Result<String> {
        let after = self.seq();
        let id = self.commit(message)?;
        self.fetch_now();
        let wanted = id.clone();
        wait_record(
            self.ledger(),
            after,
            PATIENCE,
            "git sync",
            |body| matches!(body, RecordBody::GitSync(sync) if sync.commit.id == wanted),
        )
        .await?;
        Ok(id)
    }

    /// Waits until the Deployment `web` carries rollout revision `revision`
    /// and a ReplicaSet of that revision exists.
    pub async fn wait_for_revision(&self, revision: &str) -> Result<()> {
        let what = format!("rollout revision {revision} of deployment web");
        eventually(SETTLE, &what, || async {
            let annotation =
                "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}";
            let deployment =
                self.kubectl(User::Admin, &["get", "deployment", "web", "-o", annotation])?;
            let items = annotation.replace(".metadata", ".items[*].metadata");
            let sets = self.kubectl(
                User::Admin,
                &["get", "replicasets", "-l", "app=web", "-o", &items],
            )?;
            let ready =
                deployment.trim() == revision && sets.split_whitespace().any(|r| r == revision);
            Ok(ready.then_some(()))
        })
        .await
    }

    /// The object `kind/name` in `namespace` as the cluster has it now.
    pub fn live_in(&self, namespace: &str, kind: &str, name: &str) -> Result<Option<Value>> {
        let out = self.kubectl_in(
            namespace,
            User::Admin,
            &["get", kind, name, "-o", "json", "--ignore-not-found"],
        )?;
        if out.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(
            serde_json::from_str(&out).context("kubectl get -o json")?,
        ))
    }

    /// The object `kind/name` in the scenario's namespace as it is now.
    pub fn live(&self, kind: &str, name: &str) -> Result<Option<Value>> {
        self.live_in(self.namespace(), kind, name)
    }

    /// Waits until the object `kind/name` satisfies `check` (`None`: absent).
    pub async fn wait_live(
        &self,
        what: &str,
        kind: &str,
        name: &str,
        check: impl Fn(Option<&Value>) -> bool,
    ) -> Result<Option<Value>> {
        eventually(PATIENCE, what, || async {
            let live = self.live(kind, name)?;
            Ok(check(live.as_ref()).then_some(live))
        })
        .await
    }

    /// Waits until the Deployment `web` has `replicas` replicas.
    pub async fn wait_replicas(&self, replicas: i64) -> Result<()> {
        let what = format!("deployment web at {replicas} replicas");
        self.wait_live(&what, "deployment", "web", |live| {
            live.and_then(|d| d.pointer("/spec/replicas")?.as_i64()) == Some(replicas)
        })
        .await?;
        Ok(())
    }

    /// The first change about `key` after record `after` whose event
    /// `matches`, with its judgement.
    pub async fn change(
        &self,
        key: &ObjectKey,
        after: u64,
        what: &str,
        matches: impl Fn(&ChangeEvent) -> bool,
    ) -> Result<Found> {
        wait_change(self.ledger(), key, after, PATIENCE, what, |event, _| {
            matches(event)
        })
        .await
    }

    /// The first enforcement decision (intents left out) about `key` after
    /// `after` that `matches`, with its record.
    pub async fn enforcement(
        &self,
        key: &ObjectKey,
        after: u64,
        what: &str,
        matches: impl Fn(&Enforcement) -> bool,
    ) -> Result<(LedgerRecord, Enforcement)> {
        let found = wait_record(
            self.ledger(),
            after,
            PATIENCE,
            what,
            |body| matches!(body, RecordBody::Enforcement(e) if &e.key == key && is_decision(e) && matches(e)),
        )
        .await
        .with_context(|| format!("history of {key}:\n{}", self.history_since(key, after)))?;
        match &found.body {
            RecordBody::Enforcement(enforcement) => Ok((found.clone(), enforcement.clone())),
            other => bail!("not an enforcement: {other:?}"),
        }
    }

    /// The enforcement answering drift record `drift_seq`.
    pub async fn answer(
        &self,
        key: &ObjectKey,
        drift_seq: u64,
    ) -> Result<(LedgerRecord, Enforcement)> {
        let what = format!("enforcement answering drift #{drift_seq}");
        self.enforcement(key, drift_seq, &what, |e| e.drift_seq == drift_seq)
            .await
    }

    /// Every enforcement decision (intents left out) about `key` after
    /// `after`.
    pub fn enforcements(&self, key: &ObjectKey, after: u64) -> Result<Vec<(u64, Enforcement)>> {
        Ok(self
            .ledger()
            .history(key)?
            .into_iter()
            .filter(|record| record.seq > after)
            .filter_map(|record| match record.body {
                RecordBody::Enforcement(e) if is_decision(&e) => Some((record.seq, e)),
                _ => None,
            })
            .collect())
    }

    /// The records about `key` after `after`, for failure messages.
    pub fn history_since(&self, key: &ObjectKey, after: u64) -> String {
        match self.ledger().history(key) {
            Ok(history) => describe(
                &history
                    .into_iter()
                    .filter(|r| r.seq > after)
                    .collect::<Vec<_>>(),
            ),
            Err(err) => format!("(history unreadable: {err})"),
        }
    }

    /// Asserts the verdict of `found`, showing the history of `key` since
    /// record `after` on failure.
    pub fn assert_verdict(&self, key: &ObjectKey, after: u64, found: &Found, expected: &Verdict) {
        assert_eq!(
            &found.judgement.verdict,
            expected,
            "verdict of record #{} (actor {}, diff {:?}); history:\n{}",
            found.seq,
            found.judgement.actor,
            found.judgement.diff,
            self.history_since(key, after)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(bus: BusSettings) -> Settings {
        Settings {
            kubeconfig: PathBuf::from("/tmp/admin.yaml"),
            data_dir: PathBuf::from("/tmp/data dir"),
            repo_url: "file:///tmp/repo".into(),
            paths: vec!["apps".into()],
            namespace: "pipeline-1".into(),
            bus,
            extra_kinds: vec!["v1/ConfigMap".into(), "apps/v1/Deployment".into()],
            trusted_managers: vec!["kube-controller-manager".into()],
            trusted_users: Vec::new(),
            audit_webhook: None,
        }
    }

    #[test]
    fn settings_make_a_valid_config_on_either_bus() {
        let embedded = settings(BusSettings::Embedded).config().expect("loads");
        assert!(matches!(
            embedded.bus,
            driftwarden::config::Bus::Embedded { .. }
        ));
        assert_eq!(embedded.watch.namespaces, ["pipeline-1"]);
        assert_eq!(embedded.data_dir, PathBuf::from("/tmp/data dir"));

        let kafka = settings(BusSettings::kafka("127.0.0.1:9092", "e2e-x-1."))
            .config()
            .expect("loads");
        match kafka.bus {
            driftwarden::config::Bus::Kafka {
                topic_prefix,
                group_id,
                ..
            } => {
                assert_eq!(topic_prefix, "e2e-x-1.");
                assert_eq!(group_id, "e2e-x-1.correlators");
            }
            other => panic!("expected kafka, got {other:?}"),
        }
    }

    #[test]
    fn secure_kafka_settings_make_a_valid_config() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("written");
            path
        };
        let cert = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n";
        let security = SecuritySettings {
            ca_file: file("ca.crt", cert),
            client_cert: Some((file("client.crt", cert), file("client.key", key))),
            username: "driftwarden".into(),
            password_file: file("password", "pw\n"),
        };
        let bus = BusSettings::Kafka {
            brokers: "127.0.0.1:9093".into(),
            topic_prefix: "driftwarden.e2e-x-1.".into(),
            group_id: "driftwarden.e2e-x-1.correlators".into(),
            security: Some(security),
        };
        let config = settings(bus).config().expect("loads");
        let kafka = config.bus.kafka_config().expect("kafka");
        assert_eq!(kafka.security.protocol, bus::Protocol::SaslSsl);
        assert!(kafka.security.client_cert.is_some());
        assert_eq!(
            kafka.security.sasl.map(|s| s.username),
            Some("driftwarden".to_string())
        );
    }

    #[test]
    fn keys_use_the_group_of_the_api_version() {
        assert_eq!(
            key("apps/v1", "Deployment", "ns", "web").to_string(),
            "e2e/apps/Deployment/ns/web"
        );
        assert_eq!(key("v1", "ConfigMap", "ns", "c").group, "");
    }
}

/// A CRD of an API group of its own (CRDs are cluster-wide and tests run in
/// parallel), with `spec.size` (integer) and `spec.color` (string), made by
/// the admin; deleted when dropped, with its custom resources and the
/// ClusterRole [`TestCrd::grant_editing`] made.
#[derive(Debug)]
pub struct TestCrd {
    /// Its API group, unique to it.
    pub group: String,
    /// Its kind, e.g. `Widget`.
    pub kind: &'static str,
    /// Its plural resource name, e.g. `widgets`.
    pub plural: &'static str,
    /// `Namespaced` or `Cluster`.
    pub scope: &'static str,
    editor_role: Option<String>,
}

impl TestCrd {
    /// Namespaced `Widget`s.
    pub fn widgets() -> TestCrd {
        TestCrd {
            group: format!("w{}.e2e.driftwarden.test", unique_suffix()),
            kind: "Widget",
            plural: "widgets",
            scope: "Namespaced",
            editor_role: None,
        }
    }

    /// Cluster-scoped `Gadget`s.
    pub fn gadgets() -> TestCrd {
        TestCrd {
            group: format!("g{}.e2e.driftwarden.test", unique_suffix()),
            kind: "Gadget",
            plural: "gadgets",
            scope: "Cluster",
            editor_role: None,
        }
    }

    /// The CRD's name, `plural.group`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }

    /// The `apiVersion` of its objects, `group/v1`.
    pub fn api_version(&self) -> String {
        format!("{}/v1", self.group)
    }

    /// The API resource serving its objects.
    pub fn api_resource(&self) -> kube::discovery::ApiResource {
        kube::discovery::ApiResource {
            group: self.group.clone(),
            version: "v1".into(),
            api_version: self.api_version(),
            kind: self.kind.into(),
            plural: self.plural.into(),
        }
    }

    /// The CRD's manifest.
    pub fn manifest(&self) -> Value {
        serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": self.name()},
            "spec": {
                "group": self.group,
                "scope": self.scope,
                "names": {
                    "plural": self.plural,
                    "singular": self.kind.to_lowercase(),
                    "kind": self.kind,
                },
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "properties": {"spec": {
                            "type": "object",
                            "properties": {
                                "size": {"type": "integer"},
                                "color": {"type": "string"},
                            }
                        }}
                    }}
                }]
            }
        })
    }

    /// Object `name` as git declares it (`namespace` is ignored for
    /// cluster-scoped kinds).
    pub fn object_yaml(&self, namespace: &str, name: &str, size: u32) -> String {
        let namespace = if self.scope == "Cluster" {
            String::new()
        } else {
            format!("  namespace: {namespace}\n")
        };
        format!(
            "apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: {name}\n{namespace}spec:\n  size: {size}\n  color: blue\n",
            api_version = self.api_version(),
            kind = self.kind,
        )
    }

    /// Creates the CRD (as the admin, the manifest written under `dir`) and
    /// waits until it is established.
    pub fn create(&self, dir: &Path) -> Result<()> {
        let env = TestEnv::get();
        let path = dir.join(format!("{}.json", self.name()));
        std::fs::write(&path, serde_json::to_vec(&self.manifest())?)
            .with_context(|| format!("writing {}", path.display()))?;
        let path = path.to_str().context("a UTF-8 path")?;
        env.kubectl_ok(User::Admin, &["create", "-f", path])?;
        let target = format!("crd/{}", self.name());
        env.kubectl_ok(
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

    /// Lets `user` read and edit this CRD's objects in `namespace`.
    pub fn grant_editing(&mut self, namespace: &TestNamespace, user: User) -> Result<()> {
        let role = format!("e2e-{}-editor-{}", self.plural, unique_suffix());
        let resource = format!("--resource={}.{}", self.plural, self.group);
        TestEnv::get().kubectl_ok(
            User::Admin,
            &[
                "create",
                "clusterrole",
                &role,
                "--verb=get,list,watch,patch,update",
                &resource,
            ],
        )?;
        self.editor_role = Some(role.clone());
        namespace.grant(user, &role)
    }
}

impl Drop for TestCrd {
    fn drop(&mut self) {
        let env = TestEnv::get();
        let crd = format!("crd/{}", self.name());
        let _ = env.kubectl(
            User::Admin,
            &["delete", &crd, "--ignore-not-found", "--wait=false"],
        );
        if let Some(role) = &self.editor_role {
            let role = format!("clusterrole/{role}");
            let _ = env.kubectl(User::Admin, &["delete", &role, "--ignore-not-found"]);
        }
    }
}
