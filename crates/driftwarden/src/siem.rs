//! The SIEM stream: every verdict, published to Kafka for a security data
//! lake, as Driftwarden's JSON (`driftwarden.verdicts.v1`, schema in
//! `config/schemas/verdict.v1.json`) and, where configured, as OCSF
//! "API Activity" events (`driftwarden.verdicts.ocsf.v1`; the mapping is
//! in `docs/siem.md`).
//!
//! ```text
//! ledger ──tail──▶ VerdictMessage ──▶ <prefix>driftwarden.verdicts.v1
//!                        └──ocsf()──▶ <prefix>driftwarden.verdicts.ocsf.v1
//! ```
//!
//! Each topic has one partition, so its last message says how far
//! publishing got: after a restart it resumes with the next record
//! (at least once; a consumer deduplicates on `seq`). A ledger never
//! published starts at its head, so turning the stream on does not replay
//! history. Messages carry changed paths, never values: no Secret value,
//! not even its digest, leaves this way.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use ledger::Ledger;
use model::{Actor, ChangeEvent, ChangeKind, Judgement, RecordBody, Verdict};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Config;
use crate::metrics::Metrics;

/// The version of [`VerdictMessage`].
pub const VERDICT_SCHEMA: u32 = 1;

/// The OCSF version the OCSF events follow.
pub const OCSF_VERSION: &str = "1.3.0";

/// Records published per ledger read.
const BATCH: usize = 1000;

/// How often the ledger's head is looked at when nothing is new.
const POLL: Duration = Duration::from_millis(50);

/// How long reading the topic's last message may take at start.
const READ_WAIT: Duration = Duration::from_secs(10);

/// The `siem:` section of the config: requires the Kafka bus.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Siem {
    /// Also publish OCSF "API Activity" events.
    #[serde(default)]
    pub ocsf: bool,
}

/// One verdict on the SIEM stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerdictMessage {
    /// Version of this message's format, [`VERDICT_SCHEMA`].
    pub schema: u32,
    /// The ledger record's sequence number (unique per installation).
    pub seq: u64,
    /// When the record was written.
    pub recorded_at: DateTime<Utc>,
    /// When the watcher saw the change.
    pub observed_at: DateTime<Utc>,
    /// The object.
    pub object: ObjectRef,
    /// `added`, `modified`, `deleted` or `resync`.
    pub change: String,
    /// The verdict's stable name (`drift_out_of_band`, `authorized` …).
    pub verdict: String,
    /// The verdict for people.
    pub summary: String,
    /// The commit that authorizes or adopts the change, or that it was
    /// judged against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Who made the change.
    pub actor: ActorRef,
    /// The changed paths (JSON pointers), each with its own verdict when
    /// judged per path. Values are never included.
    pub paths: Vec<PathRef>,
    /// For a later judgement: the record it amends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amends: Option<u64>,
    /// Judged while git was stale.
    pub git_stale: bool,
}

/// An object's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    /// The cluster's configured name.
    pub cluster: String,
    /// API group, empty for the core group.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace, empty when cluster-scoped.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion` after the change.
    pub resource_version: String,
}

/// Who made a change, and how Driftwarden knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActorRef {
    /// `audit` (an identity from the apiserver's audit events),
    /// `managed_fields` (a field-manager name: a claim) or `unknown`.
    pub source: String,
    /// The user, from an audit event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Its groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// `namespace:name` when the user is a service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Who impersonated the user, if anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonated_by: Option<String>,
    /// The field manager named (a claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
    /// The client's address as the apiserver saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// The apiserver's audit id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_id: Option<String>,
}

/// A changed path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathRef {
    /// JSON pointer.
    pub path: String,
    /// Its own verdict (`drift`, `out_of_band`, `authorized`, `trusted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judged: Option<String>,
}

impl VerdictMessage {
    /// The message of a change record.
    pub fn of(
        seq: u64,
        recorded_at: DateTime<Utc>,
        event: &ChangeEvent,
        judgement: &Judgement,
        actor: &Actor,
        amends: Option<u64>,
    ) -> Self {
        let key = &event.key;
        let commit = match &judgement.verdict {
            Verdict::Authorized { commit } | Verdict::Adopted { commit, .. } => {
                Some(commit.clone())
            }
            _ => judgement.desired_commit.clone(),
        };
        Self {
            schema: VERDICT_SCHEMA,
            seq,
            recorded_at,
            observed_at: event.observed_at,
            object: ObjectRef {
                cluster: key.cluster.clone(),
                group: key.group.clone(),
                kind: key.kind.clone(),
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                uid: event.uid.clone(),
                resource_version: event.resource_version.clone(),
            },
            change: change_name(event.kind).to_owned(),
            verdict: judgement.verdict.name().to_owned(),
            summary: judgement.verdict.to_string(),
            commit,
            actor: actor_ref(actor),
            paths: judgement
                .diff
                .iter()
                .map(|change| PathRef {
                    path: change.path.to_string(),
                    judged: change.judged.map(|v| {
                        serde_json::to_value(v)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    }),
                })
                .collect(),
            amends,
            git_stale: judgement.git_stale,
        }
    }

    /// The message as an OCSF "API Activity" event (class 6003): the
    /// mapping is documented in `docs/siem.md`.
    pub fn ocsf(&self) -> Value {
        let (activity_id, activity, operation) = match self.change.as_str() {
            "added" => (1, "Create", "create"),
            "deleted" => (4, "Delete", "delete"),
            _ => (3, "Update", "update"),
        };
        let severity = notify::route::default_severity(&self.verdict, &self.object.kind)
            .map_or(1, |s| s as u8 + 1);
        let severity_name =
            ["Informational", "Low", "Medium", "High", "Critical"][usize::from(severity - 1)];
        let mut user = json!({});
        if let Some(name) = &self.actor.user {
            user = json!({
                "name": name,
                "type": if self.actor.service_account.is_some() { "System" } else { "User" },
                "groups": self.actor.groups.iter().map(|g| json!({"name": g})).collect::<Vec<_>>(),
            });
        }
        json!({
            "category_uid": 6,
            "category_name": "Application Activity",
            "class_uid": 6003,
            "class_name": "API Activity",
            "activity_id": activity_id,
            "activity_name": activity,
            "type_uid": 600300 + activity_id,
            "type_name": format!("API Activity: {activity}"),
            "severity_id": severity,
            "severity": severity_name,
            "status_id": 1,
            "status": "Success",
            "time": self.observed_at.timestamp_millis(),
            "message": format!("{} {}", self.summary, object_name(&self.object)),
            "metadata": {
                "version": OCSF_VERSION,
                "uid": self.seq.to_string(),
                "logged_time": self.recorded_at.timestamp_millis(),
                "correlation_uid": self.actor.audit_id,
                "product": {
                    "name": "Driftwarden",
                    "vendor_name": "Driftwarden",
                    "version": env!("CARGO_PKG_VERSION"),
                },
            },
            "actor": {"user": user},
            "api": {
                "operation": operation,
                "service": {"name": "kube-apiserver"},
            },
            "cloud": {"provider": "Kubernetes", "region": self.object.cluster},
            "src_endpoint": {"ip": self.actor.source_ip},
            "resources": [{
                "name": self.object.name,
                "type": self.object.kind,
                "uid": self.object.uid,
                "namespace": self.object.namespace,
                "group": {"name": self.object.group},
            }],
            "unmapped": {
                "driftwarden": serde_json::to_value(self).unwrap_or(Value::Null),
            },
        })
    }
}

/// `kind/namespace/name`, for people.
fn object_name(object: &ObjectRef) -> String {
    if object.namespace.is_empty() {
        format!("{}/{}", object.kind, object.name)
    } else {
        format!("{}/{}/{}", object.kind, object.namespace, object.name)
    }
}

fn change_name(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Added => "added",
        ChangeKind::Modified => "modified",
        ChangeKind::Deleted => "deleted",
        ChangeKind::Resync => "resync",
    }
}

fn actor_ref(actor: &Actor) -> ActorRef {
    let mut out = ActorRef {
        source: String::new(),
        user: None,
        groups: Vec::new(),
        service_account: None,
        impersonated_by: None,
        manager: None,
        source_ip: None,
        audit_id: None,
    };
    match actor {
        Actor::Audit {
            user,
            groups,
            service_account,
            impersonated_by,
            source_ips,
            audit_id,
            manager,
            ..
        } => {
            out.source = "audit".into();
            out.user = Some(user.clone());
            out.groups = groups.clone();
            out.service_account = service_account.clone();
            out.impersonated_by = impersonated_by.as_ref().map(|u| u.username.clone());
            out.manager = manager.clone();
            out.source_ip = source_ips.last().cloned();
            out.audit_id = Some(audit_id.clone());
        }
        Actor::ManagedFields { manager, .. } => {
            out.source = "managed_fields".into();
            out.manager = Some(manager.clone());
        }
        Actor::Unknown { .. } => out.source = "unknown".into(),
    }
    out
}

/// The JSON Schema of [`VerdictMessage`], as checked in under
/// `config/schemas/verdict.v1.json`.
pub fn verdict_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(VerdictMessage)).unwrap_or(Value::Null)
}

/// Publishes every verdict recorded from now on.
pub struct Publisher {
    ledger: Arc<Ledger>,
    verdicts: bus::TopicPublisher,
    ocsf: Option<bus::TopicPublisher>,
    metrics: Metrics,
    join_wait: Option<Duration>,
    /// The last record published.
    cursor: u64,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// The publisher of `config`'s `siem`, `None` when it is off. Where
    /// publishing resumes is read now, before anything else writes: after
    /// the topic's last verdict, or at the ledger's head.
    pub async fn new(
        config: &Config,
        ledger: Arc<Ledger>,
        metrics: Metrics,
    ) -> anyhow::Result<Option<Self>> {
        let Some(siem) = &config.siem else {
            return Ok(None);
        };
        let kafka = config
            .bus
            .kafka_config()
            .context("`siem` needs the Kafka bus")?;
        let topics = bus::Topics::new(&kafka.prefix)?;
        let topic = topics.verdicts.clone();
        let last = bus::last_messages(&kafka, topic.clone(), READ_WAIT)
            .await
            .with_context(|| format!("cannot read where {topic} ends"))?;
        let cursor = match last.last() {
            Some(stored) => serde_json::from_slice::<VerdictMessage>(&stored.payload)
                .with_context(|| {
                    format!(
                        "the last message of {topic} is not a verdict: someone else writes to it"
                    )
                })?
                .seq,
            None => ledger.head().0,
        };
        let verdicts = bus::TopicPublisher::to(&kafka, topics.verdicts)?;
        let ocsf = match siem.ocsf {
            true => Some(bus::TopicPublisher::to(&kafka, topics.verdicts_ocsf)?),
            false => None,
        };
        Ok(Some(Self {
            ledger,
            verdicts,
            ocsf,
            metrics,
            join_wait: config.join_wait(),
            cursor,
        }))
    }

    /// Publishes until stopped.
    pub async fn run(self) -> anyhow::Result<()> {
        let mut cursor = self.cursor;
        tracing::info!(topic = %self.verdicts.topic(), from = cursor + 1, ocsf = self.ocsf.is_some(), "publishing verdicts");
        loop {
            if self.ledger.head().0 <= cursor {
                tokio::time::sleep(POLL).await;
                continue;
            }
            let from = cursor;
            let mut published = 0;
            let now = Utc::now();
            // Objects are not published: skipped unread.
            for record in self.ledger.from_seq_without_objects(cursor + 1).take(BATCH) {
                let record = record?;
                let message = match &record.body {
                    RecordBody::Change { event, judgement } => {
                        // The identity, when an audit event brings it.
                        let Some(actor) = crate::notifier::settled_actor(
                            &self.ledger,
                            self.join_wait,
                            &record,
                            now,
                        )?
                        else {
                            break;
                        };
                        Some(VerdictMessage::of(
                            record.seq, record.at, event, judgement, &actor, None,
                        ))
                    }
                    RecordBody::Amendment(amendment) => {
                        // The change amended, judged anew.
                        match self.ledger.get(amendment.amends)?.map(|r| r.body) {
                            Some(RecordBody::Change { event, .. }) => Some(VerdictMessage::of(
                                record.seq,
                                record.at,
                                &event,
                                &amendment.judgement,
                                &amendment.judgement.actor,
                                Some(amendment.amends),
                            )),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                if let Some(message) = message {
                    self.publish(&message).await?;
                    published += 1;
                }
                cursor = record.seq;
            }
            self.metrics.verdicts_published(published);
            if cursor == from {
                // Waiting for an identity.
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// Queues `message` on its topics, waiting while the producer's queue
    /// is full (Kafka away): nothing is skipped.
    async fn publish(&self, message: &VerdictMessage) -> anyhow::Result<()> {
        let key = format!(
            "{}/{}/{}/{}/{}",
            message.object.cluster,
            message.object.group,
            message.object.kind,
            message.object.namespace,
            message.object.name
        );
        let payload = serde_json::to_vec(message)?;
        queue(&self.verdicts, key.as_bytes(), &payload).await?;
        if let Some(ocsf) = &self.ocsf {
            queue(ocsf, key.as_bytes(), &serde_json::to_vec(&message.ocsf())?).await?;
        }
        Ok(())
    }
}

async fn queue(publisher: &bus::TopicPublisher, key: &[u8], payload: &[u8]) -> anyhow::Result<()> {
    loop {
        match publisher.publish(key, payload) {
            Ok(()) => return Ok(()),
            Err(bus::Error::Delivery { .. }) => tokio::time::sleep(POLL).await,
            Err(err) => return Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema checked in is the one the types give. To update it after
    /// changing the types: `DRIFTWARDEN_WRITE_SCHEMAS=1 cargo test -p driftwarden siem`.
    #[test]
    fn the_checked_in_schema_is_generated_from_the_types() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../config/schemas/verdict.v1.json");
        let generated = serde_json::to_string_pretty(&verdict_schema()).expect("serializes") + "\n";
        if std::env::var_os("DRIFTWARDEN_WRITE_SCHEMAS").is_some() {
            std::fs::write(&path, &generated).expect("writes the schema");
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            checked_in, generated,
            "config/schemas/verdict.v1.json is out of date: run \
             `DRIFTWARDEN_WRITE_SCHEMAS=1 cargo test -p driftwarden siem`"
        );
    }
}
