//! The configuration file: one versioned YAML document.
//!
//! Parsing is strict: an unknown key is an error that names its path
//! (`sources[0].brnach: unknown field ...`). [`Config::load`] parses, then
//! [`Config::validate`] checks what serde cannot (URLs, duplicate names,
//! JSON pointers), so a loaded config is ready to run.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use model::FieldPath;
use serde::{Deserialize, Deserializer};

/// The configuration version this build reads.
pub const VERSION: u32 = 1;

/// How long a verdict that depends on identity waits for its audit record
/// unless `audit_webhook.join_wait` says otherwise.
pub const DEFAULT_JOIN_WAIT: Duration = Duration::from_secs(2);

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not match the schema; `at` names the key.
    #[error("config file {path}: {at}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Path of the offending key, e.g. `sources[0].branch`.
        at: String,
        /// What is wrong, with the YAML location when known.
        message: String,
    },
    /// The config parses but is not usable.
    #[error("config file {path}: {at}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Path of the offending key.
        at: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Result of loading a configuration.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Configuration format version; must be 1.
    pub version: u32,
    /// The cluster to watch.
    pub cluster: Cluster,
    /// Where the ledger and git clones live.
    pub data_dir: PathBuf,
    /// The event bus between watchers and correlators.
    #[serde(default)]
    pub bus: Bus,
    /// Git repositories holding the desired state.
    pub sources: Vec<Source>,
    /// What to watch beyond the kinds git declares.
    #[serde(default)]
    pub watch: Watch,
    /// Actors whose changes to undeclared fields are expected.
    #[serde(default)]
    pub trust: Trust,
    /// Per-scope rules; the most specific matching rule governs an object.
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// The HTTP API.
    #[serde(default)]
    pub api: Option<Api>,
    /// The receiver of kube-apiserver audit webhook batches.
    #[serde(default)]
    pub audit_webhook: Option<AuditWebhook>,
    /// Safety rails of enforcement.
    #[serde(default)]
    pub enforcement: Enforcement,
    /// How Secret values are digested.
    #[serde(default)]
    pub secrets: Secrets,
    /// Chat alerts about drift.
    #[serde(default)]
    pub alerts: Option<notify::Alerts>,
    /// The SIEM stream of verdicts (Kafka bus only).
    #[serde(default)]
    pub siem: Option<crate::siem::Siem>,
}

/// How Secret values are digested: HMAC-SHA256 with an installation key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// The key file (64 hex digits, mode 0600); every process of one
    /// installation (watchers and correlators on other hosts too) must read
    /// the same. Without it, `data_dir/digest.key` is created on first start.
    #[serde(default)]
    pub digest_key_file: Option<PathBuf>,
}

/// Safety rails of enforcement.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enforcement {
    /// Reverts of one object within `flap_window` that make a revert war:
    /// against an automated writer Driftwarden then stops reverting it;
    /// against a person it goes on with a backoff of up to `backoff_cap`.
    /// Either way it reports the war.
    #[serde(default = "default_flap_limit")]
    pub flap_limit: u32,
    /// The window of `flap_limit`, e.g. `5m`.
    #[serde(default = "default_flap_window", deserialize_with = "model::duration")]
    pub flap_window: Duration,
    /// The longest wait between two reverts of one object in a revert war
    /// against a person, e.g. `30s`: waits double from 1 s up to this.
    /// Keep it shorter than `flap_window`.
    #[serde(default = "default_backoff_cap", deserialize_with = "model::duration")]
    pub backoff_cap: Duration,
    /// Drifts cluster-wide within `breaker_window` that pause enforcement.
    #[serde(default = "default_breaker_limit")]
    pub breaker_limit: u32,
    /// The window of `breaker_limit`, e.g. `1m`.
    #[serde(
        default = "default_breaker_window",
        deserialize_with = "model::duration"
    )]
    pub breaker_window: Duration,
    /// How long a tripped breaker pauses enforcement unless resumed by hand.
    #[serde(
        default = "default_breaker_pause",
        deserialize_with = "model::duration"
    )]
    pub breaker_pause: Duration,
}

impl Default for Enforcement {
    fn default() -> Self {
        Self {
            flap_limit: default_flap_limit(),
            flap_window: default_flap_window(),
            backoff_cap: default_backoff_cap(),
            breaker_limit: default_breaker_limit(),
            breaker_window: default_breaker_window(),
            breaker_pause: default_breaker_pause(),
        }
    }
}

fn default_flap_limit() -> u32 {
    5
}

fn default_flap_window() -> Duration {
    Duration::from_secs(300)
}

fn default_backoff_cap() -> Duration {
    Duration::from_secs(30)
}

fn default_breaker_limit() -> u32 {
    50
}

fn default_breaker_window() -> Duration {
    Duration::from_secs(60)
}

fn default_breaker_pause() -> Duration {
    Duration::from_secs(600)
}

/// The cluster to watch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Name used in object keys and reports, e.g. `prod-eu`.
    pub name: String,
    /// Kubeconfig file; in-cluster config or `KUBECONFIG` when absent.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
}

/// The event bus, chosen by `type`.
#[derive(Debug, Clone)]
pub enum Bus {
    /// In-process bounded channels: a single binary, no broker.
    Embedded {
        /// Channel capacity in events (default 10 000); writers wait when
        /// it is full.
        capacity: usize,
    },
    /// Apache Kafka.
    Kafka {
        /// Bootstrap servers, `host:port,host:port`.
        brokers: String,
        /// Prefix for topic names, e.g. `staging.` (default none).
        topic_prefix: String,
        /// Consumer group of the correlators (default `driftwarden`).
        group_id: String,
        /// Partitions when Driftwarden creates the topics (default 6).
        partitions: i32,
        /// TLS and SASL of every connection to Kafka; plaintext without
        /// authentication when absent.
        security: Option<Box<KafkaSecurity>>,
        /// Extra librdkafka properties for every Kafka client (tuning,
        /// `client.id`, …); one Driftwarden sets itself is refused.
        librdkafka: std::collections::BTreeMap<String, OptionValue>,
    },
}

/// `bus` as written: one struct rather than a tagged enum, so that an
/// error inside it names its whole path (`bus.security.sasl.username`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BusFields {
    #[serde(rename = "type")]
    kind: BusKind,
    capacity: Option<usize>,
    brokers: Option<String>,
    topic_prefix: Option<String>,
    group_id: Option<String>,
    partitions: Option<i32>,
    security: Option<KafkaSecurity>,
    librdkafka: Option<std::collections::BTreeMap<String, OptionValue>>,
}

/// `bus.type`.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum BusKind {
    Embedded,
    Kafka,
}

impl<'de> Deserialize<'de> for Bus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = BusFields::deserialize(deserializer)?;
        let misplaced = |name: &str, kind: &str| {
            serde::de::Error::custom(format!(
                "`{name}` is a setting of `type: {kind}`, not of this bus"
            ))
        };
        match fields.kind {
            BusKind::Embedded => {
                let kafka_only = [
                    ("brokers", fields.brokers.is_some()),
                    ("topic_prefix", fields.topic_prefix.is_some()),
                    ("group_id", fields.group_id.is_some()),
                    ("partitions", fields.partitions.is_some()),
                    ("security", fields.security.is_some()),
                    ("librdkafka", fields.librdkafka.is_some()),
                ];
                if let Some((name, _)) = kafka_only.into_iter().find(|(_, given)| *given) {
                    return Err(misplaced(name, "kafka"));
                }
                Ok(Bus::Embedded {
                    capacity: fields.capacity.unwrap_or_else(default_capacity),
                })
            }
            BusKind::Kafka => {
                if fields.capacity.is_some() {
                    return Err(misplaced("capacity", "embedded"));
                }
                Ok(Bus::Kafka {
                    brokers: fields
                        .brokers
                        .ok_or_else(|| serde::de::Error::missing_field("brokers"))?,
                    topic_prefix: fields.topic_prefix.unwrap_or_default(),
                    group_id: fields.group_id.unwrap_or_else(default_group),
                    partitions: fields.partitions.unwrap_or_else(default_partitions),
                    security: fields.security.map(Box::new),
                    librdkafka: fields.librdkafka.unwrap_or_default(),
                })
            }
        }
    }
}

/// `bus.security`: how Driftwarden's Kafka clients secure their
/// connections.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: KafkaProtocol,
    /// PEM file of the CAs that signed the brokers' certificates; the
    /// system's trust store when absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate to present (PEM), with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM, unencrypted).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// SASL credentials, for the `sasl_*` protocols.
    #[serde(default)]
    pub sasl: Option<KafkaSasl>,
}

/// The Kafka listener's security protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaProtocol {
    /// No encryption, no authentication.
    Plaintext,
    /// TLS; with `cert_file` and `key_file`, a client certificate.
    Ssl,
    /// SASL without encryption.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

/// `bus.security.sasl`: SASL credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSasl {
    /// `SCRAM-SHA-512`, `SCRAM-SHA-256` or `PLAIN` (over TLS only).
    #[serde(deserialize_with = "mechanism")]
    pub mechanism: bus::Mechanism,
    /// The user name.
    pub username: String,
    /// A file holding the password (a final line break is ignored); the
    /// password itself never appears in the config.
    pub password_file: PathBuf,
}

/// A value of `bus.librdkafka`: YAML strings, numbers and booleans are all
/// passed as text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum OptionValue {
    /// Text.
    Text(String),
    /// A whole number.
    Integer(i64),
    /// A number with a fraction.
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
}

impl fmt::Display for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(text) => f.write_str(text),
            Self::Integer(n) => write!(f, "{n}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Bool(b) => write!(f, "{b}"),
        }
    }
}

fn mechanism<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bus::Mechanism, D::Error> {
    let name = String::deserialize(deserializer)?;
    bus::Mechanism::parse(&name).map_err(serde::de::Error::custom)
}

impl KafkaSecurity {
    /// The bus crate's form of these settings.
    pub fn to_bus(&self) -> bus::Security {
        bus::Security {
            protocol: match self.protocol {
                KafkaProtocol::Plaintext => bus::Protocol::Plaintext,
                KafkaProtocol::Ssl => bus::Protocol::Ssl,
                KafkaProtocol::SaslPlaintext => bus::Protocol::SaslPlaintext,
                KafkaProtocol::SaslSsl => bus::Protocol::SaslSsl,
            },
            ca_file: self.ca_file.clone(),
            // A half-given certificate is refused by `validate`.
            client_cert: match (&self.cert_file, &self.key_file) {
                (Some(cert_file), Some(key_file)) => Some(bus::ClientCert {
                    cert_file: cert_file.clone(),
                    key_file: key_file.clone(),
                }),
                _ => None,
            },
            sasl: self.sasl.as_ref().map(|sasl| bus::Sasl {
                mechanism: sasl.mechanism,
                username: sasl.username.clone(),
                password_file: sasl.password_file.clone(),
            }),
        }
    }

    /// The key of the half of a client certificate that is missing.
    fn missing_half(&self) -> Option<&'static str> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Some("key_file"),
            (None, Some(_)) => Some("cert_file"),
            _ => None,
        }
    }
}

impl Bus {
    /// The Kafka client settings of a Kafka bus; `None` for the embedded
    /// bus.
    pub fn kafka_config(&self) -> Option<bus::KafkaConfig> {
        let Bus::Kafka {
            brokers,
            topic_prefix,
            group_id,
            security,
            librdkafka,
            ..
        } = self
        else {
            return None;
        };
        let mut config = bus::KafkaConfig::new(brokers.clone(), group_id.clone())
            .with_prefix(topic_prefix.clone())
            .with_security(
                security
                    .as_deref()
                    .map(KafkaSecurity::to_bus)
                    .unwrap_or_default(),
            );
        config.options = librdkafka
            .iter()
            .map(|(key, value)| (key.clone(), value.to_string()))
            .collect();
        Some(config)
    }

    /// Checks a Kafka bus's settings as the clients will use them (files
    /// read, options compared with Driftwarden's own); the error is the key
    /// and the message.
    fn validate(&self) -> Result<(), (String, String)> {
        let Bus::Kafka {
            brokers,
            partitions,
            security,
            ..
        } = self
        else {
            return Ok(());
        };
        if brokers.trim().is_empty() {
            return Err(("bus.brokers".into(), "needs at least one host:port".into()));
        }
        if *partitions < 1 {
            return Err(("bus.partitions".into(), "must be at least 1".into()));
        }
        if let Some(missing) = security.as_deref().and_then(KafkaSecurity::missing_half) {
            return Err((
                format!("bus.security.{missing}"),
                "a client certificate needs both `cert_file` and `key_file`".into(),
            ));
        }
        let Some(config) = self.kafka_config() else {
            return Ok(());
        };
        config.check().map_err(|err| match err {
            bus::Error::Security(err) => {
                let mut message = err.to_string();
                let mut source = std::error::Error::source(&err);
                while let Some(cause) = source {
                    message.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                (format!("bus.security.{}", err.setting()), message)
            }
            bus::Error::ReservedOption { .. } => ("bus.librdkafka".into(), err.to_string()),
            bus::Error::InvalidPrefix { .. } => ("bus.topic_prefix".into(), err.to_string()),
            bus::Error::NoBrokers => ("bus.brokers".into(), err.to_string()),
            other => ("bus".into(), other.to_string()),
        })
    }
}

impl Default for Bus {
    fn default() -> Self {
        Bus::Embedded {
            capacity: default_capacity(),
        }
    }
}

fn default_capacity() -> usize {
    10_000
}

fn default_group() -> String {
    "driftwarden".to_owned()
}

fn default_partitions() -> i32 {
    6
}

/// A git repository holding desired state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Unique name, used in records and reports.
    pub name: String,
    /// Repository URL: `file://`, `https://` or `ssh://` (or `git@host:path`).
    pub url: String,
    /// Branch whose first-parent history is the desired state.
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Directories or files inside the repository; empty means all of it.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Namespace for manifests that name none.
    #[serde(default = "default_namespace")]
    pub default_namespace: String,
    /// How often to fetch, e.g. `10s`.
    #[serde(default = "default_interval", deserialize_with = "model::duration")]
    pub interval: Duration,
    /// How long fetches may fail before the source counts as stale, e.g.
    /// `2m`: then enforcement and sync pause for its objects, and verdicts
    /// about them are marked `git_stale`, until a fetch succeeds.
    #[serde(
        default = "default_max_staleness",
        deserialize_with = "model::duration"
    )]
    pub max_staleness: Duration,
}

fn default_branch() -> String {
    "main".to_owned()
}

fn default_namespace() -> String {
    "default".to_owned()
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_max_staleness() -> Duration {
    Duration::from_secs(120)
}

/// A kind, written `apiVersion/Kind`: `v1/ConfigMap`, `apps/v1/Deployment`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KindRef {
    /// `v1`, `apps/v1`.
    pub api_version: String,
    /// `ConfigMap`.
    pub kind: String,
}

impl fmt::Display for KindRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.api_version, self.kind)
    }
}

impl<'de> Deserialize<'de> for KindRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let (api_version, kind) = text
            .rsplit_once('/')
            .filter(|(v, k)| !v.is_empty() && k.starts_with(|c: char| c.is_ascii_uppercase()))
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a kind: write apiVersion/Kind, e.g. `v1/ConfigMap` or `apps/v1/Deployment`"
                ))
            })?;
        Ok(Self {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        })
    }
}

/// What to watch beyond the kinds git declares.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    /// Kinds to watch even when git declares none, to catch objects created
    /// outside git.
    #[serde(default)]
    pub extra_kinds: Vec<KindRef>,
    /// Namespaces to watch; empty means all.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Only objects matching this label selector.
    #[serde(default)]
    pub label_selector: Option<String>,
    /// Also record objects owned by a controller (ReplicaSets, Pods).
    #[serde(default)]
    pub record_derived: bool,
}

/// Identities trusted to change fields git does not declare (see
/// [`model::trust`]): users, groups and service accounts, and field
/// managers bound to the identities that may write under their names.
pub use model::Trust;

pub use model::Mode;

/// Policy rules: which objects they govern and what they do (see
/// [`enforce::policy`]).
pub use enforce::{Match, Policies, Policy};

/// The HTTP API (`/v1`, `/metrics`, `/healthz`, `/readyz` and the web page).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// Listen address, e.g. `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Serve HTTPS with this certificate and key; plain HTTP without.
    #[serde(default)]
    pub tls: Option<AuditWebhookTls>,
    /// The bearer tokens accepted, each with a role.
    pub tokens: Vec<ApiToken>,
}

/// One bearer token of the API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Its name, recorded as who granted an exemption with it.
    pub name: String,
    /// File holding the token (one line, at least 32 characters).
    pub file: PathBuf,
    /// `reader` (every GET) or `operator` (also exemptions and resume).
    pub role: ApiRole,
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiRole {
    /// Read everything.
    Reader,
    /// Read everything, grant and revoke exemptions, resume enforcement.
    Operator,
}

impl fmt::Display for ApiRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApiRole::Reader => "reader",
            ApiRole::Operator => "operator",
        })
    }
}

/// The shortest API token accepted.
pub const MIN_API_TOKEN: usize = 32;

impl ApiToken {
    /// The token, read from its file.
    pub fn read(&self) -> anyhow::Result<String> {
        let text = std::fs::read_to_string(&self.file).map_err(|err| {
            anyhow::anyhow!(
                "cannot read token file {} ({err}): check the path and that Driftwarden may read it",
                self.file.display()
            )
        })?;
        let token = text.trim();
        if token.len() < MIN_API_TOKEN || token.contains(char::is_whitespace) {
            anyhow::bail!(
                "token file {} must hold one token of at least {MIN_API_TOKEN} characters, \
                 without spaces (e.g. `openssl rand -hex 32`)",
                self.file.display()
            );
        }
        Ok(token.to_owned())
    }
}

impl Api {
    /// Checks the values and reads the files as the server will; the error
    /// is the key and the message.
    fn validate(&self) -> Result<(), (String, String)> {
        if self.tokens.is_empty() {
            return Err((
                "api.tokens".into(),
                "give at least one token (`{name, file, role}`): the API serves nobody without one"
                    .into(),
            ));
        }
        let mut names = BTreeSet::new();
        let mut secrets = BTreeSet::new();
        for (i, token) in self.tokens.iter().enumerate() {
            if token.name.is_empty() || !names.insert(&token.name) {
                return Err((
                    format!("api.tokens[{i}].name"),
                    "token names must be non-empty and unique".into(),
                ));
            }
            let secret = token
                .read()
                .map_err(|err| (format!("api.tokens[{i}].file"), format!("{err:#}")))?;
            if !secrets.insert(secret) {
                return Err((
                    format!("api.tokens[{i}].file"),
                    "holds the same token as another entry: give each its own".into(),
                ));
            }
        }
        if let Some(tls) = &self.tls {
            crate::api::serve::tls_config(tls)
                .map_err(|(file, err)| (format!("api.tls.{file}"), format!("{err:#}")))?;
        }
        Ok(())
    }
}

/// The receiver of kube-apiserver audit webhook batches: HTTPS only, every
/// request authenticated by one method.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditWebhook {
    /// Listen address, e.g. `0.0.0.0:8443`; the `server` of the apiserver's
    /// `--audit-webhook-config-file` points here.
    pub listen: SocketAddr,
    /// The certificate and key the server presents.
    pub tls: AuditWebhookTls,
    /// How the apiserver authenticates: `type: bearer_token` or
    /// `type: client_certificate`.
    pub auth: AuditWebhookAuth,
    /// How long a verdict that depends on identity waits for its audit
    /// record before it is judged without it, e.g. `2s` (the default); at
    /// most `1m`.
    #[serde(default = "default_join_wait", deserialize_with = "model::duration")]
    pub join_wait: Duration,
}

/// The audit webhook's server certificate and key, PEM files read at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditWebhookTls {
    /// PEM certificate chain, the server's certificate first. Its issuer is
    /// the `certificate-authority` of the apiserver's webhook kubeconfig.
    pub cert_file: PathBuf,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// How the audit webhook authenticates the apiserver.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuditWebhookAuth {
    /// `Authorization: Bearer <token>`: the `token` of the webhook
    /// kubeconfig's user.
    BearerToken {
        /// File of accepted tokens, one per line, each at least 16
        /// characters; blank lines and `#` comments are ignored. Several
        /// lines let a token be rotated.
        token_file: PathBuf,
    },
    /// A client certificate (the webhook kubeconfig's
    /// `client-certificate`), checked in the TLS handshake.
    ClientCertificate {
        /// PEM file of the CA certificates client certificates must chain to.
        ca_file: PathBuf,
    },
}

fn default_join_wait() -> Duration {
    DEFAULT_JOIN_WAIT
}

/// The longest `audit_webhook.join_wait`: every verdict that depends on
/// identity may wait this long.
const MAX_JOIN_WAIT: Duration = Duration::from_secs(60);

impl AuditWebhook {
    /// The settings of the webhook server.
    pub fn server_settings(&self) -> watch::WebhookServer {
        watch::WebhookServer {
            listen: self.listen,
            tls: watch::TlsFiles {
                cert_file: self.tls.cert_file.clone(),
                key_file: self.tls.key_file.clone(),
            },
            auth: match &self.auth {
                AuditWebhookAuth::BearerToken { token_file } => watch::WebhookAuth::BearerToken {
                    token_file: token_file.clone(),
                },
                AuditWebhookAuth::ClientCertificate { ca_file } => {
                    watch::WebhookAuth::ClientCertificate {
                        ca_file: ca_file.clone(),
                    }
                }
            },
        }
    }

    /// Checks the values and reads the files as the server will; the error
    /// is the key and the message.
    fn validate(&self) -> Result<(), (String, String)> {
        if self.listen.port() == 0 {
            return Err((
                "audit_webhook.listen".into(),
                "port 0 picks a port the apiserver cannot know: give one, e.g. `0.0.0.0:8443`"
                    .into(),
            ));
        }
        if self.join_wait > MAX_JOIN_WAIT {
            return Err((
                "audit_webhook.join_wait".into(),
                format!(
                    "`{}` is too long: verdicts that depend on identity wait this long; \
                     use at most `1m` (the default is `2s`)",
                    humantime::format_duration(self.join_wait)
                ),
            ));
        }
        self.server_settings().check().map_err(|err| {
            let at = match err.file() {
                Some(watch::WebhookFile::Certificate) => "audit_webhook.tls.cert_file",
                Some(watch::WebhookFile::Key) => "audit_webhook.tls.key_file",
                Some(watch::WebhookFile::Tokens) => "audit_webhook.auth.token_file",
                Some(watch::WebhookFile::ClientCa) => "audit_webhook.auth.ca_file",
                None => "audit_webhook",
            };
            let mut message = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            if matches!(err, watch::server::Error::Read { .. }) {
                message.push_str(": check the path and that Driftwarden may read the file");
            }
            (at.to_owned(), message)
        })
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates config text; `path` is only used in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let deserializer = serde_norway::Deserializer::from_str(text);
        let config: Config =
            serde_path_to_error::deserialize(deserializer).map_err(|err| Error::Parse {
                path: path.to_owned(),
                at: match err.path().to_string().as_str() {
                    "." => "top level".to_owned(),
                    at => at.to_owned(),
                },
                message: err.inner().to_string(),
            })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks what the types cannot express.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let invalid = |at: String, message: String| Error::Invalid {
            path: path.to_owned(),
            at,
            message,
        };
        if self.version != VERSION {
            return Err(invalid(
                "version".into(),
                format!(
                    "version {} is not supported: this build reads version {VERSION}",
                    self.version
                ),
            ));
        }
        if self.cluster.name.is_empty() || self.cluster.name.contains('/') {
            return Err(invalid(
                "cluster.name".into(),
                "must be a non-empty name without `/`".into(),
            ));
        }
        if self.sources.is_empty() {
            return Err(invalid(
                "sources".into(),
                "at least one git source is needed: it is the desired state".into(),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            if !names.insert(&source.name) {
                return Err(invalid(
                    format!("sources[{i}].name"),
                    format!(
                        "`{}` is used twice: source names must be unique",
                        source.name
                    ),
                ));
            }
            let known = ["file://", "https://", "http://", "ssh://", "git@"];
            if !known.iter().any(|scheme| source.url.starts_with(scheme)) {
                return Err(invalid(
                    format!("sources[{i}].url"),
                    format!(
                        "`{}` is not a repository URL: use file://, https://, ssh:// or git@host:path",
                        source.url
                    ),
                ));
            }
        }
        self.bus
            .validate()
            .map_err(|(at, message)| invalid(at, message))?;
        self.trust
            .validate()
            .map_err(|err| invalid("trust".into(), err.to_string()))?;
        for (i, policy) in self.policies.iter().enumerate() {
            for (j, pointer) in policy.ignored_paths.iter().enumerate() {
                FieldPath::from_json_pointer(pointer).map_err(|err| {
                    invalid(format!("policies[{i}].ignored_paths[{j}]"), err.to_string())
                })?;
            }
            policy
                .trust
                .validate()
                .map_err(|err| invalid(format!("policies[{i}].trust"), err.to_string()))?;
        }
        if let Some(webhook) = &self.audit_webhook {
            webhook
                .validate()
                .map_err(|(at, message)| invalid(at, message))?;
        }
        if let Some(api) = &self.api {
            api.validate()
                .map_err(|(at, message)| invalid(at, message))?;
        }
        if self.siem.is_some() && self.bus.kafka_config().is_none() {
            return Err(invalid(
                "siem".into(),
                "the SIEM stream is published to Kafka: set `bus.type: kafka`, or remove `siem`"
                    .into(),
            ));
        }
        if let Some(alerts) = &self.alerts {
            alerts
                .validate()
                .map_err(|(at, message)| invalid(at, message))?;
        }
        Ok(())
    }

    /// How long a verdict that depends on identity waits for its audit
    /// record; `None` when no audit source is configured.
    pub fn join_wait(&self) -> Option<Duration> {
        self.audit_webhook.as_ref().map(|webhook| webhook.join_wait)
    }

    /// The position of the policy rule governing an object with `labels`
    /// (see [`enforce::policy_index`]).
    pub fn policy_index(
        &self,
        namespace: &str,
        kind: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Option<usize> {
        enforce::policy_index(&self.policies, namespace, kind, labels)
    }

    /// The policy rules under the global trust.
    pub fn rules(&self) -> Policies {
        // `validate` checked every ignored path.
        Policies::new(self.trust.clone(), self.policies.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
version: 1
cluster: { name: prod }
data_dir: /var/lib/driftwarden
sources:
  - name: apps
    url: file:///srv/git/apps
";

    fn parse(text: &str) -> Result<Config> {
        Config::parse(Path::new("test.yaml"), text)
    }

    fn error_of(text: &str) -> String {
        parse(text)
            .expect_err("config must be rejected")
            .to_string()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(MINIMAL).expect("minimal config loads");
        assert!(matches!(config.bus, Bus::Embedded { capacity: 10_000 }));
        let source = &config.sources[0];
        assert_eq!(source.branch, "main");
        assert_eq!(source.interval, Duration::from_secs(10));
        assert_eq!(source.max_staleness, Duration::from_secs(120));
        assert_eq!(source.default_namespace, "default");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let err = error_of(&MINIMAL.replace("    url:", "    brnach: main\n    url:"));
        assert!(err.contains("sources[0]"), "{err}");
        assert!(err.contains("brnach"), "{err}");
        let err = error_of(&format!("{MINIMAL}colour: blue\n"));
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn unsupported_version_names_the_supported_one() {
        let err = error_of(&MINIMAL.replace("version: 1", "version: 2"));
        assert!(err.contains("version 2 is not supported"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        let err = error_of(&MINIMAL.replace("file:///srv/git/apps", "/srv/git/apps"));
        assert!(
            err.contains("sources[0].url") && err.contains("file://"),
            "{err}"
        );

        let err = error_of(&format!("{MINIMAL}    interval: soon\n"));
        assert!(
            err.contains("sources[0].interval") && err.contains("10s"),
            "{err}"
        );

        let err = error_of(&format!("{MINIMAL}watch:\n  extra_kinds: [ConfigMap]\n"));
        assert!(
            err.contains("watch.extra_kinds[0]") && err.contains("v1/ConfigMap"),
            "{err}"
        );

        let err = error_of(&format!(
            "{MINIMAL}policies:\n  - name: p\n    ignored_paths: [spec.replicas]\n"
        ));
        assert!(err.contains("policies[0].ignored_paths[0]"), "{err}");

        let err = error_of(&format!("{MINIMAL}  - name: apps\n    url: file:///x\n"));
        assert!(err.contains("used twice"), "{err}");

        let err = error_of(&format!("{MINIMAL}bus: {{ type: carrier_pigeon }}\n"));
        assert!(
            err.contains("bus") && err.contains("carrier_pigeon"),
            "{err}"
        );
    }

    #[test]
    fn backoff_cap_defaults_to_30s_and_is_a_duration() {
        let config = parse(MINIMAL).expect("minimal config loads");
        assert_eq!(config.enforcement.backoff_cap, Duration::from_secs(30));
        let config =
            parse(&format!("{MINIMAL}enforcement:\n  backoff_cap: 1m\n")).expect("config loads");
        assert_eq!(config.enforcement.backoff_cap, Duration::from_secs(60));
        let err = error_of(&format!("{MINIMAL}enforcement:\n  backoff_cap: later\n"));
        assert!(
            err.contains("enforcement.backoff_cap") && err.contains("10s"),
            "{err}"
        );
    }

    /// A self-signed test certificate (its own CA) and its key, made for
    /// these tests only.
    const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBsTCCAVegAwIBAgIUUSsp3VoHng9wHbgWBpLquTMcNH8wCgYIKoZIzj0EAwIw
IjEgMB4GA1UEAwwXZHJpZnR3YXJkZW4gY29uZmlnIHRlc3QwIBcNMjYxMjAyMDM0
MjQ0WhgPMjEyNjExMDgwMzQyNDRaMCIxIDAeBgNVBAMMF2RyaWZ0d2FyZGVuIGNv
bmZpZyB0ZXN0MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE+dP7dEKmbAuckiDC
od6V4ooFvGswQNLIOejpc1ixsyW1Co9+QKvg07ta7DtXi/gzbt0ZFm0tRacoOkgs
MZ+J46NpMGcwHQYDVR0OBBYEFGGBqVMoam5BbIkTs3XhqFer2sgeMB8GA1UdIwQY
MBaAFGGBqVMoam5BbIkTs3XhqFer2sgeMA8GA1UdEwEB/wQFMAMBAf8wFAYDVR0R
BA0wC4IJbG9jYWxob3N0MAoGCCqGSM49BAMCA0gAMEUCIQCaEQ91A7oMdUSyiGHE
SBiYDf2akHmWZNlzhMPQNPs30QIgVCMhWWUIGZC8Z7usliiSUpp1hJo97qwTRHsz
nNIvf2k=
-----END CERTIFICATE-----
";
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg2P7WGoei52EPp1nw
SIDdQ3nbYr3hjfzuK7pWCIggL+ehRANCAAT50/t0QqZsC5ySIMKh3pXiigW8azBA
0sg56OlzWLGzJbUKj35Aq+DTu1rsO1eL+DNu3RkWbS1Fpyg6SCwxn4nj
-----END PRIVATE KEY-----
";

    /// Files of an audit webhook: `cert.pem`, `key.pem`, `ca.pem`, `tokens`.
    struct WebhookFiles(tempfile::TempDir);

    impl WebhookFiles {
        fn new() -> Self {
            let files = Self(tempfile::tempdir().expect("temp dir"));
            files.write("cert.pem", TEST_CERT);
            files.write("key.pem", TEST_KEY);
            files.write("ca.pem", TEST_CERT);
            files.write("tokens", "# apiserver\n0123456789abcdef0123456789abcdef\n");
            files
        }

        fn path(&self, name: &str) -> String {
            self.0.path().join(name).display().to_string()
        }

        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.0.path().join(name), text).expect("file written");
        }

        /// A config whose `audit_webhook` has `auth` and `extra` lines.
        fn config(&self, auth: &str, extra: &str) -> String {
            format!(
                "{MINIMAL}audit_webhook:
  listen: 0.0.0.0:8443
  tls: {{ cert_file: '{}', key_file: '{}' }}
  auth: {auth}
{extra}",
                self.path("cert.pem"),
                self.path("key.pem"),
            )
        }

        fn bearer(&self) -> String {
            format!(
                "{{ type: bearer_token, token_file: '{}' }}",
                self.path("tokens")
            )
        }

        fn client_certificate(&self) -> String {
            format!(
                "{{ type: client_certificate, ca_file: '{}' }}",
                self.path("ca.pem")
            )
        }
    }

    #[test]
    fn audit_webhook_with_a_bearer_token_loads_and_converts() {
        let files = WebhookFiles::new();
        let config = parse(&files.config(&files.bearer(), "")).expect("config loads");
        let webhook = config.audit_webhook.as_ref().expect("audit webhook");
        assert_eq!(webhook.join_wait, DEFAULT_JOIN_WAIT);
        assert_eq!(config.join_wait(), Some(Duration::from_secs(2)));
        let settings = webhook.server_settings();
        assert_eq!(settings.listen, "0.0.0.0:8443".parse().expect("address"));
        assert_eq!(settings.tls.cert_file, Path::new(&files.path("cert.pem")));
        assert_eq!(settings.tls.key_file, Path::new(&files.path("key.pem")));
        assert_eq!(
            settings.auth,
            watch::WebhookAuth::BearerToken {
                token_file: files.path("tokens").into()
            }
        );
    }

    #[test]
    fn audit_webhook_with_client_certificates_and_a_join_wait_loads() {
        let files = WebhookFiles::new();
        let text = files.config(&files.client_certificate(), "  join_wait: 500ms\n");
        let config = parse(&text).expect("config loads");
        assert_eq!(config.join_wait(), Some(Duration::from_millis(500)));
        let settings = config
            .audit_webhook
            .expect("audit webhook")
            .server_settings();
        assert_eq!(
            settings.auth,
            watch::WebhookAuth::ClientCertificate {
                ca_file: files.path("ca.pem").into()
            }
        );
    }

    #[test]
    fn audit_webhook_shape_errors_name_the_key() {
        let files = WebhookFiles::new();
        let cases = [
            (
                format!("{MINIMAL}audit_webhook:\n  listen: 0.0.0.0:8443\n"),
                "audit_webhook: missing field `tls`",
            ),
            (
                files.config("{ type: password, token_file: x }", ""),
                "password",
            ),
            (
                files.config(
                    &format!(
                        "{{ type: bearer_token, token: '{}' }}",
                        files.path("tokens")
                    ),
                    "",
                ),
                "audit_webhook.auth",
            ),
            (
                files.config(&files.bearer(), "  auth_type: bearer\n"),
                "auth_type",
            ),
            (
                files.config(&files.bearer(), "  join_wait: soon\n"),
                "audit_webhook.join_wait",
            ),
            (
                files
                    .config(&files.bearer(), "")
                    .replace("key_file:", "keyfile:"),
                "audit_webhook.tls",
            ),
        ];
        for (text, expected) in cases {
            let err = error_of(&text);
            assert!(err.contains(expected), "{err} should say {expected}");
        }
    }

    #[test]
    fn audit_webhook_values_are_validated() {
        let files = WebhookFiles::new();
        let err = error_of(
            &files
                .config(&files.bearer(), "")
                .replace("0.0.0.0:8443", "0.0.0.0:0"),
        );
        assert!(
            err.contains("audit_webhook.listen") && err.contains("8443"),
            "{err}"
        );
        let err = error_of(&files.config(&files.bearer(), "  join_wait: 5m\n"));
        assert!(
            err.contains("audit_webhook.join_wait") && err.contains("at most `1m`"),
            "{err}"
        );
    }

    #[test]
    fn audit_webhook_files_must_be_readable_and_parse() {
        // (what to break, the file's new text or None to remove it, the key, the fix)
        let cases: [(&str, Option<&str>, &str, &str); 8] = [
            (
                "cert.pem",
                None,
                "audit_webhook.tls.cert_file",
                "check the path",
            ),
            (
                "cert.pem",
                Some("not a certificate"),
                "audit_webhook.tls.cert_file",
                "BEGIN CERTIFICATE",
            ),
            (
                "cert.pem",
                Some("-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n"),
                "audit_webhook.tls.cert_file",
                "usable X.509 certificate",
            ),
            (
                "key.pem",
                None,
                "audit_webhook.tls.key_file",
                "check the path",
            ),
            (
                "key.pem",
                Some(TEST_CERT),
                "audit_webhook.tls.key_file",
                "BEGIN PRIVATE KEY",
            ),
            (
                "tokens",
                Some("# nothing yet\n\n"),
                "audit_webhook.auth.token_file",
                "holds no token",
            ),
            (
                "tokens",
                Some("secret\n"),
                "audit_webhook.auth.token_file",
                "openssl rand",
            ),
            (
                "tokens",
                None,
                "audit_webhook.auth.token_file",
                "check the path",
            ),
        ];
        for (name, text, key, fix) in cases {
            let files = WebhookFiles::new();
            match text {
                Some(text) => files.write(name, text),
                None => std::fs::remove_file(files.path(name)).expect("file removed"),
            }
            let err = error_of(&files.config(&files.bearer(), ""));
            assert!(
                err.contains(key) && err.contains(fix),
                "{name}: {err} should name {key} and say {fix}"
            );
            assert!(!err.contains("secret"), "{err} quotes a token");
        }

        let files = WebhookFiles::new();
        files.write("ca.pem", "");
        let err = error_of(&files.config(&files.client_certificate(), ""));
        assert!(
            err.contains("audit_webhook.auth.ca_file") && err.contains("BEGIN CERTIFICATE"),
            "{err}"
        );
    }

    #[test]
    fn audit_webhook_key_must_belong_to_the_certificate() {
        let files = WebhookFiles::new();
        files.write(
            "key.pem",
            "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgNH4TgPD+6cjALW0V
jbEWL9KcGEhEBYyROjFQLcxpWoqhRANCAASOGTX7VXRQPAH0wYu3u32k/bTGk4bt
g+HxHbSSx70IL5bvyM7SjHJgpDuYE888oVVd6JNVebI6BlE2fGRz37C0
-----END PRIVATE KEY-----
",
        );
        let err = error_of(&files.config(&files.bearer(), ""));
        assert!(
            err.contains("audit_webhook.tls.key_file") && err.contains("not the key of"),
            "{err}"
        );
    }

    #[test]
    fn trust_binds_managers_to_identities_and_names_bad_entries() {
        let config = parse(&format!(
            "{MINIMAL}trust:
  managers:
    - name: kube-controller-manager
      users: [system:kube-controller-manager]
"
        ))
        .expect("config loads");
        assert_eq!(
            config.trust.managers[0].users,
            ["system:kube-controller-manager"]
        );
        assert!(!config.trust.accept_unverified_managers);
        let err = error_of(&format!(
            "{MINIMAL}trust:\n  managers: [kube-controller-manager]\n"
        ));
        assert!(err.contains("trust.managers[0]"), "{err}");
        let err = error_of(&format!("{MINIMAL}trust:\n  users: [\"a*b\"]\n"));
        assert!(err.contains("trust") && err.contains("a*b"), "{err}");
        let err = error_of(&format!(
            "{MINIMAL}policies:\n  - name: p\n    trust: {{ groups: [\"\"] }}\n"
        ));
        assert!(err.contains("policies[0].trust"), "{err}");
    }

    /// Files of a Kafka bus over TLS with SASL: `ca.pem`, `client.pem`,
    /// `client.key` and `password`.
    struct KafkaFiles(tempfile::TempDir);

    impl KafkaFiles {
        fn new() -> Self {
            let files = Self(tempfile::tempdir().expect("temp dir"));
            files.write("ca.pem", TEST_CERT);
            files.write("client.pem", TEST_CERT);
            files.write("client.key", TEST_KEY);
            files.write("password", "correct horse\n");
            files
        }

        fn path(&self, name: &str) -> String {
            self.0.path().join(name).display().to_string()
        }

        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.0.path().join(name), text).expect("file written");
        }

        /// A config with a Kafka bus whose `security` has `sasl` and
        /// `extra` lines, and `tail` after it (in the bus).
        fn config(&self, sasl: &str, extra: &str, tail: &str) -> String {
            format!(
                "{MINIMAL}bus:
  type: kafka
  brokers: kafka-1:9094
  security:
    protocol: sasl_ssl
    ca_file: '{}'
{extra}    sasl: {sasl}
{tail}",
                self.path("ca.pem"),
            )
        }

        fn scram(&self) -> String {
            format!(
                "{{ mechanism: SCRAM-SHA-512, username: driftwarden, password_file: '{}' }}",
                self.path("password")
            )
        }
    }

    #[test]
    fn kafka_security_loads_and_reaches_every_client_setting() {
        let files = KafkaFiles::new();
        let text = files.config(
            &files.scram(),
            &format!(
                "    cert_file: '{}'\n    key_file: '{}'\n",
                files.path("client.pem"),
                files.path("client.key")
            ),
            "  librdkafka:\n    client.id: dw-eu\n    socket.keepalive.enable: true\n    reconnect.backoff.ms: 50\n",
        );
        let config = parse(&text).expect("config loads");
        let kafka = config.bus.kafka_config().expect("a kafka bus");
        let security = &kafka.security;
        assert_eq!(security.protocol, bus::Protocol::SaslSsl);
        assert_eq!(security.ca_file, Some(files.path("ca.pem").into()));
        let cert = security.client_cert.as_ref().expect("client certificate");
        assert_eq!(cert.key_file, PathBuf::from(files.path("client.key")));
        let sasl = security.sasl.as_ref().expect("sasl");
        assert_eq!(sasl.mechanism, bus::Mechanism::ScramSha512);
        assert_eq!(sasl.username, "driftwarden");
        let options: Vec<(&str, &str)> = kafka
            .options
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            options,
            [
                ("client.id", "dw-eu"),
                ("reconnect.backoff.ms", "50"),
                ("socket.keepalive.enable", "true"),
            ]
        );
        let shown = format!("{config:?} {kafka:?}");
        assert!(!shown.contains("correct horse"), "{shown}");
        assert!(
            security
                .summary()
                .starts_with("sasl_ssl, SCRAM-SHA-512 as driftwarden"),
            "{}",
            security.summary()
        );
    }

    #[test]
    fn bus_settings_of_the_other_type_are_refused() {
        let config = parse(&format!(
            "{MINIMAL}bus: {{ brokers: k:9092, type: kafka }}\n"
        ))
        .expect("`type` may come last");
        assert!(matches!(config.bus, Bus::Kafka { partitions: 6, .. }));
        let err = error_of(&format!(
            "{MINIMAL}bus: {{ type: embedded, brokers: k:9092 }}\n"
        ));
        assert!(
            err.contains("bus") && err.contains("`brokers` is a setting of `type: kafka`"),
            "{err}"
        );
        let err = error_of(&format!(
            "{MINIMAL}bus: {{ type: kafka, brokers: k, capacity: 5 }}\n"
        ));
        assert!(
            err.contains("`capacity` is a setting of `type: embedded`"),
            "{err}"
        );
        let err = error_of(&format!("{MINIMAL}bus: {{ type: kafka }}\n"));
        assert!(err.contains("bus") && err.contains("brokers"), "{err}");
        let err = error_of(&format!("{MINIMAL}bus: {{ type: kafka, brokers: ' ' }}\n"));
        assert!(err.contains("bus.brokers"), "{err}");
    }

    #[test]
    fn kafka_without_security_is_plaintext() {
        let config = parse(&format!(
            "{MINIMAL}bus: {{ type: kafka, brokers: k:9092 }}\n"
        ))
        .expect("config loads");
        let kafka = config.bus.kafka_config().expect("a kafka bus");
        assert_eq!(kafka.security, bus::Security::default());
        assert!(kafka.options.is_empty());
        assert!(parse(MINIMAL).expect("loads").bus.kafka_config().is_none());
    }

    #[test]
    fn kafka_security_errors_name_the_setting() {
        let files = KafkaFiles::new();
        let scram = files.scram();
        let cases = [
            (
                files.config(&scram, "    protocl: ssl\n", ""),
                "bus.security.protocl",
                "unknown field",
            ),
            (
                files.config(&scram.replace("username", "user"), "", ""),
                "bus.security.sasl.user",
                "unknown field",
            ),
            (
                files.config(&scram.replace("SCRAM-SHA-512", "OAUTHBEARER"), "", ""),
                "bus.security.sasl.mechanism",
                "token issuer",
            ),
            (
                files.config(&scram.replace("SCRAM-SHA-512", "SCRAM-SHA-1"), "", ""),
                "bus.security.sasl.mechanism",
                "unknown SASL mechanism",
            ),
            (
                files.config(&scram.replace("password_file", "password"), "", ""),
                "bus.security.sasl.password",
                "password_file",
            ),
            (
                files.config(&scram, "", "").replace("sasl_ssl", "ssl"),
                "bus.security.sasl",
                "does not use them",
            ),
            (
                files
                    .config(&scram, "", "")
                    .replace("    sasl: ", "    unused: "),
                "bus.security.unused",
                "unknown field",
            ),
            (
                files.config(&scram, "", "").replace("sasl_ssl", "sasl_tls"),
                "bus.security.protocol",
                "sasl_tls",
            ),
            (
                files.config(
                    &scram,
                    &format!("    cert_file: '{}'\n", files.path("client.pem")),
                    "",
                ),
                "bus.security.key_file",
                "both `cert_file` and `key_file`",
            ),
            (
                files.config(&scram, "", "  librdkafka: { sasl.password: hunter2 }\n"),
                "bus.librdkafka",
                "`sasl.password` is set by Driftwarden itself",
            ),
            (
                files.config(&scram, "", "  librdkafka: { group.id: other }\n"),
                "bus.librdkafka",
                "use the group setting",
            ),
        ];
        for (text, key, says) in cases {
            let err = error_of(&text);
            assert!(
                err.contains(key) && err.contains(says),
                "{err} should name {key} and say {says}"
            );
            assert!(!err.contains("correct horse"), "{err} shows the password");
        }
    }

    #[test]
    fn kafka_security_files_must_be_readable_and_hold_what_they_should() {
        // (file, new text or None to remove it, the key, the fix)
        let cases: [(&str, Option<&str>, &str, &str); 4] = [
            (
                "password",
                None,
                "bus.security.sasl.password_file",
                "check the path",
            ),
            (
                "password",
                Some("\n"),
                "bus.security.sasl.password_file",
                "holds no password",
            ),
            ("ca.pem", None, "bus.security.ca_file", "check the path"),
            (
                "ca.pem",
                Some("nothing"),
                "bus.security.ca_file",
                "BEGIN CERTIFICATE",
            ),
        ];
        for (name, text, key, fix) in cases {
            let files = KafkaFiles::new();
            match text {
                Some(text) => files.write(name, text),
                None => std::fs::remove_file(files.path(name)).expect("file removed"),
            }
            let err = error_of(&files.config(&files.scram(), "", ""));
            assert!(
                err.contains(key) && err.contains(fix),
                "{name}: {err} should name {key} and say {fix}"
            );
        }
    }

    #[test]
    fn missing_file_is_named() {
        let err = Config::load(Path::new("no/such/driftwarden.yaml")).expect_err("missing file");
        assert!(
            err.to_string().contains("no/such/driftwarden.yaml"),
            "{err}"
        );
    }

    #[test]
    fn most_specific_policy_governs() {
        let config = parse(&format!(
            "{MINIMAL}policies:
  - name: everything
  - name: team-a
    match: {{ namespaces: [team-a] }}
    mode: enforce
  - name: team-a-deployments
    match: {{ namespaces: [team-a], kinds: [Deployment] }}
    mode: dry_run
"
        ))
        .expect("config loads");
        let labels = Default::default();
        let name = |ns: &str, kind: &str| {
            config
                .policy_index(ns, kind, &labels)
                .map(|i| config.policies[i].name.as_str())
        };
        assert_eq!(name("team-a", "Deployment"), Some("team-a-deployments"));
        assert_eq!(name("team-a", "ConfigMap"), Some("team-a"));
        assert_eq!(name("team-b", "ConfigMap"), Some("everything"));
    }
}
