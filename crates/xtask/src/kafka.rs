//! Apache Kafka in KRaft mode: one combined broker+controller node on
//! loopback, started from the jars Maven resolved.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::build::Toolset;
use crate::paths::{self, State};

/// The broker's heap.
const HEAP: &str = "384m";

/// Ports of the Kafka node.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Ports {
    /// Client (PLAINTEXT) listener.
    pub broker: u16,
    /// KRaft controller listener.
    pub controller: u16,
}

impl Ports {
    /// The bootstrap address clients use.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.broker)
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

/// Writes the broker's config for one run.
pub fn write_files(state: &State, ports: &Ports) -> Result<KafkaFiles> {
    let dir = state.kafka();
    let files = KafkaFiles {
        properties: dir.join("server.properties"),
        log4j: dir.join("log4j2.properties"),
    };
    paths::write(
        &files.properties,
        server_properties(ports, &dir.join("data")),
    )?;
    paths::write(&files.log4j, LOG4J)?;
    Ok(files)
}

fn server_properties(ports: &Ports, data: &Path) -> String {
    format!(
        "process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{broker}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
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

/// Formats the storage directory with a fresh cluster id.
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
    let out = java(tools, files)
        .args(["kafka.tools.StorageTool", "format", "-t", &id, "-c"])
        .arg(&files.properties)
        .output()
        .context("running kafka.tools.StorageTool format")?;
    let log = state.log("kafka-format");
    paths::write(
        &log,
        [out.stdout.as_slice(), out.stderr.as_slice()].concat(),
    )?;
    if !out.status.success() {
        crate::procs::print_tail(&log, 30);
        bail!("formatting Kafka storage failed");
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
