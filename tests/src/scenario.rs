//! Driftwarden as a test runs it: a config for one test (its namespace, git
//! repository, data directory and bus), and waits on what the ledger records.
//!
//! ```text
//! Settings ──yaml()──▶ config text ──▶ driftwarden::run::start / `driftwarden run -c`
//! ledger ──wait_change(key, after seq, matches)──▶ the judged change a test asserts on
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use driftwarden::config::Config;
use ledger::Ledger;
use model::{ChangeEvent, Judgement, LedgerRecord, ObjectKey, RecordBody};

/// The cluster name every test config uses; the first segment of keys.
pub const CLUSTER: &str = "e2e";

/// How often the ledger is polled.
const POLL: Duration = Duration::from_millis(10);

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
    },
}

impl BusSettings {
    /// Kafka at `brokers` with topics under `topic_prefix` and a group named
    /// after it.
    pub fn kafka(brokers: &str, topic_prefix: &str) -> BusSettings {
        BusSettings::Kafka {
            brokers: brokers.to_string(),
            topic_prefix: topic_prefix.to_string(),
            group_id: format!("{topic_prefix}correlators"),
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
    /// Trusted field managers.
    pub trusted_managers: Vec<String>,
}

impl Settings {
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
            } => format!(
                "  type: kafka\n  brokers: {}\n  topic_prefix: {}\n  group_id: {}\n  partitions: 2\n",
                q(brokers),
                q(topic_prefix),
                q(group_id)
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
  managers: {managers}
policies:
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
            managers = list(&self.trusted_managers),
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
    fn keys_use_the_group_of_the_api_version() {
        assert_eq!(
            key("apps/v1", "Deployment", "ns", "web").to_string(),
            "e2e/apps/Deployment/ns/web"
        );
        assert_eq!(key("v1", "ConfigMap", "ns", "c").group, "");
    }
}
