//! Apache Kafka in KRaft mode: one combined broker+controller node on
//! loopback, started from the jars Maven resolved.
//!
//! ```text
//! PLAINTEXT  127.0.0.1:broker  anonymous, a super user: the tests' default listener
//! SASL_SSL   127.0.0.1:secure  TLS (the environment's CA; client certificates
//!                              requested, not required) + SCRAM-SHA-512:
//!                              `driftwarden` may produce to, consume from and
//!                              create `driftwarden.*` topics (groups `driftwarden*`),
//!                              `stranger` may do nothing
//! CONTROLLER 127.0.0.1:controller
//! ```
//!
//! The SCRAM users are created by Kafka's storage tool when the storage is
//! formatted, their ACLs (StandardAuthorizer) by Kafka's ACL tool once the
//! broker answers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::build::Toolset;
use crate::certs::Certs;
use crate::paths::{self, State};

/// The broker's heap.
const HEAP: &str = "384m";

/// The SCRAM user Driftwarden connects as on the TLS listener.
pub const SCRAM_USER: &str = "driftwarden";

/// A SCRAM user that authenticates but holds no ACL.
pub const STRANGER: &str = "stranger";

/// The SASL mechanism of the TLS listener.
pub const SCRAM_MECHANISM: &str = "SCRAM-SHA-512";

/// The topic prefix [`SCRAM_USER`]'s ACLs cover.
pub const TOPIC_PREFIX: &str = "driftwarden.";

/// The consumer group prefix [`SCRAM_USER`]'s ACLs cover.
pub const GROUP_PREFIX: &str = "driftwarden";

/// Ports of the Kafka node.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Ports {
    /// Client (PLAINTEXT) listener.
    pub broker: u16,
    /// KRaft controller listener.
    pub controller: u16,
    /// Client (SASL_SSL) listener; 0 in the state of an older `up`.
    #[serde(default)]
    pub secure: u16,
}

impl Ports {
    /// The bootstrap address clients use.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.broker)
    }

    /// The bootstrap address of the TLS + SCRAM listener.
    pub fn secure_bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.secure)
    }
}

/// Config files of one run.
#[derive(Debug, Clone)]
pub struct KafkaFiles {
    /// `server.properties`.
    pub properties: PathBuf,
    /// log4j2 configuration (to stdout, which goes to the component log).
    pub log4j: PathBuf,
}

/// Writes the broker's config for one run, and a new random password for
/// each SCRAM user.
pub fn write_files(state: &State, ports: &Ports, certs: &Certs) -> Result<KafkaFiles> {
    let dir = state.kafka();
    let files = KafkaFiles {
        properties: dir.join("server.properties"),
        log4j: dir.join("log4j2.properties"),
    };
    paths::write(
        &files.properties,
        server_properties(ports, &dir.join("data"), certs),
    )?;
    paths::write(&files.log4j, LOG4J)?;
    for user in [SCRAM_USER, STRANGER] {
        let password = crate::cluster::random_token()?;
        paths::write_private(&state.kafka_password(user), format!("{password}\n"))?;
    }
    Ok(files)
}

fn server_properties(ports: &Ports, data: &Path, certs: &Certs) -> String {
    format!(
        "process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller},SASL_SSL://127.0.0.1:{secure}
advertised.listeners=PLAINTEXT://127.0.0.1:{broker},SASL_SSL://127.0.0.1:{secure}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
listener.name.sasl_ssl.sasl.enabled.mechanisms={mechanism}
listener.name.sasl_ssl.{mechanism_lower}.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location={keystore}
listener.name.sasl_ssl.ssl.truststore.type=PEM
listener.name.sasl_ssl.ssl.truststore.location={ca}
listener.name.sasl_ssl.ssl.client.auth=requested
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS
allow.everyone.if.no.acl.found=false
log.dirs={data}
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
",
        controller = ports.controller,
        broker = ports.broker,
        secure = ports.secure,
        mechanism = SCRAM_MECHANISM,
        mechanism_lower = SCRAM_MECHANISM.to_lowercase(),
        keystore = certs.kafka_keystore.display(),
        ca = certs.ca_cert.display(),
        data = data.display()
    )
}

const LOG4J: &str = "rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.org.name = org.apache.kafka
logger.org.level = INFO
";

/// `java` with the Kafka classpath and the log4j2 config.
fn java(tools: &Toolset, files: &KafkaFiles) -> Command {
    let java = std::env::var_os("JAVA_HOME")
        .map(|home| PathBuf::from(home).join("bin").join("java"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("java"));
    let mut cmd = Command::new(java);
    cmd.arg(format!(
        "-Dlog4j2.configurationFile={}",
        files.log4j.display()
    ))
    .arg("-cp")
    .arg(format!("{}/*", tools.kafka_lib.display()));
    cmd
}

/// Formats the storage directory with a fresh cluster id and the SCRAM
/// users with their passwords.
pub fn format_storage(tools: &Toolset, state: &State, files: &KafkaFiles) -> Result<()> {
    let out = java(tools, files)
        .args(["kafka.tools.StorageTool", "random-uuid"])
        .output()
        .context("running kafka.tools.StorageTool random-uuid (is java installed?)")?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || id.is_empty() {
        bail!(
            "kafka random-uuid failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut format = java(tools, files);
    format
        .args(["kafka.tools.StorageTool", "format", "-t", &id, "-c"])
        .arg(&files.properties);
    for user in [SCRAM_USER, STRANGER] {
        let password = read_password(state, user)?;
        format.arg("--add-scram").arg(format!(
            "{SCRAM_MECHANISM}=[name={user},password={password}]"
        ));
    }
    run_tool(format, state, "kafka-format", "formatting Kafka storage")
}

/// Runs one of Kafka's tools to the end, its output in log `log_name`;
/// fails showing the log's tail when the tool does.
fn run_tool(mut tool: Command, state: &State, log_name: &str, what: &str) -> Result<()> {
    let out = tool
        .output()
        .with_context(|| format!("{what}: cannot run Kafka's tool"))?;
    let log = state.log(log_name);
    paths::write(
        &log,
        [out.stdout.as_slice(), out.stderr.as_slice()].concat(),
    )?;
    if !out.status.success() {
        crate::procs::print_tail(&log, 30);
        bail!("{what} failed");
    }
    Ok(())
}

/// The broker process.
pub fn command(tools: &Toolset, files: &KafkaFiles) -> Command {
    let mut cmd = java(tools, files);
    cmd.arg(format!("-Xms{HEAP}"))
        .arg(format!("-Xmx{HEAP}"))
        .arg("-Djava.awt.headless=true")
        .arg("kafka.Kafka")
        .arg(&files.properties);
    cmd
}

/// The password of SCRAM user `user`.
pub fn read_password(state: &State, user: &str) -> Result<String> {
    Ok(paths::read(&state.kafka_password(user))?
        .trim_end()
        .to_owned())
}

/// Lets [`SCRAM_USER`] produce to, consume from and create the topics
/// under [`TOPIC_PREFIX`] and read as the groups under [`GROUP_PREFIX`]
/// (prefixed ACLs), with Kafka's ACL tool over the plaintext listener.
pub fn grant_acls(tools: &Toolset, state: &State, files: &KafkaFiles, ports: &Ports) -> Result<()> {
    let mut acls = java(tools, files);
    acls.args(["org.apache.kafka.tools.AclCommand", "--bootstrap-server"])
        .arg(ports.bootstrap())
        .args(["--add", "--allow-principal"])
        .arg(format!("User:{SCRAM_USER}"))
        .args(["--producer", "--consumer", "--topic", TOPIC_PREFIX])
        .args([
            "--group",
            GROUP_PREFIX,
            "--resource-pattern-type",
            "prefixed",
        ]);
    run_tool(acls, state, "kafka-acls", "granting Kafka ACLs")
}

/// Whether the TLS + SCRAM listener authenticates [`SCRAM_USER`] (with the
/// client certificate) and lists the broker.
pub fn secure_ready(state: &State, ports: &Ports) -> bool {
    if ports.secure == 0 {
        return false;
    }
    let Ok(password) = read_password(state, SCRAM_USER) else {
        return false;
    };
    let certs = Certs::in_dir(&state.certs());
    let consumer: Result<BaseConsumer, _> = ClientConfig::new()
        .set("bootstrap.servers", ports.secure_bootstrap())
        .set("security.protocol", "sasl_ssl")
        .set("ssl.ca.location", certs.ca_cert.display().to_string())
        .set(
            "ssl.certificate.location",
            certs.kafka_client_cert.display().to_string(),
        )
        .set(
            "ssl.key.location",
            certs.kafka_client_key.display().to_string(),
        )
        .set("sasl.mechanism", SCRAM_MECHANISM)
        .set("sasl.username", SCRAM_USER)
        .set("sasl.password", password)
        .set("log_level", "0")
        .create();
    consumer
        .ok()
        .and_then(|c| c.fetch_metadata(None, Duration::from_secs(5)).ok())
        .is_some_and(|metadata| !metadata.brokers().is_empty())
}

/// Whether the broker answers a metadata request and lists itself.
pub fn ready(ports: &Ports) -> bool {
    let consumer: Result<BaseConsumer, _> = ClientConfig::new()
        .set("bootstrap.servers", ports.bootstrap())
        .set("log_level", "0")
        .create();
    consumer
        .ok()
        .and_then(|c| c.fetch_metadata(None, Duration::from_secs(2)).ok())
        .is_some_and(|metadata| !metadata.brokers().is_empty())
}
