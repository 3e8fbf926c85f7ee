//! Ledger checkpoints on the Kafka bus: published as they are signed,
//! read back by `verify`, so the chain head is anchored off the host.
//!
//! ```text
//! run:    Checkpointer ──on_checkpoint──▶ bus::TopicPublisher ──▶ <prefix>driftwarden.checkpoints.v1
//! verify: data_dir/checkpoints.jsonl ──┐
//!         <prefix>driftwarden.checkpoints.v1 ──┴──▶ newer (higher seq; Kafka's on a tie) ──▶ Ledger::verify_with
//! ```
//!
//! Someone who can rewrite the host's files can cut back both the ledger
//! and `checkpoints.jsonl` beside it, to an older pair that agrees; the
//! checkpoint on Kafka still names the longer chain, and `verify` names the
//! records missing. The embedded bus has no Kafka: there the file (and a
//! copy kept elsewhere, `verify --checkpoint FILE`) is the only anchor.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ledger::{Checkpoint, checkpoint};
use serde::Serialize;

use crate::config::Config;

/// How long `verify`, and `run` at start, wait for the checkpoint topic.
pub const READ_WAIT: Duration = Duration::from_secs(5);

/// Where a checkpoint came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Source {
    /// A checkpoint file: the one beside the ledger or `--checkpoint FILE`.
    File {
        /// The file.
        path: PathBuf,
    },
    /// A message of the Kafka checkpoint topic.
    Kafka {
        /// The topic, with its prefix.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File { path } => write!(f, "file {}", path.display()),
            Source::Kafka {
                topic,
                partition,
                offset,
            } => write!(
                f,
                "Kafka topic `{topic}` (partition {partition}, offset {offset})"
            ),
        }
    }
}

/// A checkpoint and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The checkpoint, its signature not yet checked.
    pub checkpoint: Checkpoint,
    /// Where it was read.
    pub source: Source,
}

/// Of the checkpoint beside the ledger and the one on Kafka, the one naming
/// the longer chain: a ledger cut back together with its file is then
/// still compared with Kafka's. On a tie Kafka's, which is off the host.
pub fn newer(file: Option<Found>, kafka: Option<Found>) -> Option<Found> {
    match (file, kafka) {
        (Some(file), Some(kafka)) if file.checkpoint.seq > kafka.checkpoint.seq => Some(file),
        (file, kafka) => kafka.or(file),
    }
}

/// What `verify` compares the chain with, and what it found on the way.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// The checkpoint used, if any.
    pub found: Option<Found>,
    /// One line each about the sources, e.g. Kafka unreachable.
    pub notes: Vec<String>,
    /// Whether the checkpoint topic holds something that is not a
    /// checkpoint: someone wrote to it, and `verify` fails.
    pub kafka_tampered: bool,
}

impl Chosen {
    /// The checkpoint used, if any.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.found.as_ref().map(|found| &found.checkpoint)
    }

    /// Lines for `verify`'s text output: which checkpoint was used, then
    /// the notes.
    pub fn text(&self) -> String {
        let mut text = String::new();
        if let Some(found) = &self.found {
            text.push_str(&format!("checkpoint used: from {}\n", found.source));
        }
        for note in &self.notes {
            text.push_str(note);
            text.push('\n');
        }
        text
    }

    /// `verify`'s JSON report with `checkpoint_source` and
    /// `checkpoint_notes` added.
    pub fn annotate(&self, mut report: serde_json::Value) -> serde_json::Value {
        if let Some(object) = report.as_object_mut() {
            if let Some(found) = &self.found {
                object.insert(
                    "checkpoint_source".into(),
                    serde_json::to_value(&found.source).unwrap_or_default(),
                );
            }
            if !self.notes.is_empty() {
                object.insert("checkpoint_notes".into(), self.notes.clone().into());
            }
        }
        report
    }
}

/// The checkpoint `verify` compares the chain with: the last in `file`
/// when given (a copy kept elsewhere); else the newer of the last beside
/// the ledger and, on a Kafka bus, the last on the checkpoint topic. Kafka
/// unreachable is a note, and the file is used alone.
pub async fn for_verify(config: &Config, file: Option<&Path>) -> anyhow::Result<Chosen> {
    if let Some(file) = file {
        let checkpoint = checkpoint::latest(file)?.with_context(|| {
            format!(
                "no checkpoint in {}: give a copy of checkpoints.jsonl",
                file.display()
            )
        })?;
        return Ok(Chosen {
            found: Some(Found {
                checkpoint,
                source: Source::File {
                    path: file.to_path_buf(),
                },
            }),
            notes: Vec::new(),
            kafka_tampered: false,
        });
    }
    let path = config.data_dir.join(checkpoint::LOG_FILE);
    let beside = checkpoint::latest(&path)?.map(|checkpoint| Found {
        checkpoint,
        source: Source::File { path: path.clone() },
    });
    let mut notes = Vec::new();
    let mut kafka_tampered = false;
    let mut on_kafka = None;
    if let Some(kafka) = config.bus.kafka_config() {
        let topic = bus::Topics::new(&kafka.prefix)?.checkpoints;
        match bus::latest_checkpoints(&kafka, READ_WAIT).await {
            Err(err) => notes.push(format!(
                "Kafka unreachable: cannot read checkpoint topic `{topic}` from {} ({:#}); \
                 compared with the file beside the ledger only",
                kafka.brokers,
                anyhow::Error::new(err)
            )),
            Ok(stored) if stored.is_empty() => {
                notes.push(format!("no checkpoint on Kafka topic `{topic}` yet"));
            }
            Ok(stored) => {
                let (found, unreadable) = decode(stored);
                kafka_tampered = !unreadable.is_empty();
                notes.extend(unreadable);
                on_kafka = found;
            }
        }
    }
    let found = newer(beside.clone(), on_kafka.clone());
    let unused = [beside, on_kafka].into_iter().flatten().filter(|other| {
        found
            .as_ref()
            .is_some_and(|used| used.source != other.source)
    });
    for other in unused {
        notes.push(format!(
            "also found: the checkpoint of record {} in {}",
            other.checkpoint.seq, other.source
        ));
    }
    Ok(Chosen {
        found,
        notes,
        kafka_tampered,
    })
}

/// The checkpoint of the highest record among the last messages of the
/// checkpoint topic, and a line for each message that is not a checkpoint.
fn decode(stored: Vec<bus::StoredCheckpoint>) -> (Option<Found>, Vec<String>) {
    let mut unreadable = Vec::new();
    let mut found: Option<Found> = None;
    for message in stored {
        match serde_json::from_slice::<Checkpoint>(&message.payload) {
            Ok(checkpoint) => {
                if found
                    .as_ref()
                    .is_none_or(|f| checkpoint.seq >= f.checkpoint.seq)
                {
                    found = Some(Found {
                        checkpoint,
                        source: Source::Kafka {
                            topic: message.position.topic,
                            partition: message.position.partition,
                            offset: message.position.offset,
                        },
                    });
                }
            }
            Err(err) => unreadable.push(format!(
                "Kafka BROKEN: the last message of the checkpoint topic, at {}, is not a \
                 checkpoint ({err}): only Driftwarden writes there; find out who else did",
                message.position
            )),
        }
    }
    (found, unreadable)
}

/// For a Kafka bus, the `on_checkpoint` hook of the ledger's checkpointer:
/// it queues each checkpoint for the checkpoint topic and returns at once;
/// a checkpoint that cannot be published is logged, and the ledger goes on.
/// `None` for the embedded bus, which has no Kafka: the file beside the
/// ledger is the anchor.
///
/// First, a checkpoint beside the ledger newer than the last on Kafka (one
/// signed while Kafka was unreachable, or by `run --accept-truncation`) is
/// published, so Kafka names the chain as it now stands.
pub async fn publisher(
    config: &Config,
) -> anyhow::Result<Option<impl Fn(&Checkpoint) + Send + Sync + 'static>> {
    let Some(kafka) = config.bus.kafka_config() else {
        return Ok(None);
    };
    let publisher = Arc::new(bus::TopicPublisher::new(&kafka).with_context(|| {
        format!(
            "cannot create the Kafka producer of ledger checkpoints for {}: check \
                 `bus.security` and `bus.librdkafka`",
            kafka.brokers
        )
    })?);
    let path = config.data_dir.join(checkpoint::LOG_FILE);
    if let Some(beside) = checkpoint::latest(&path)? {
        match bus::latest_checkpoints(&kafka, READ_WAIT).await {
            Ok(stored) => {
                let (on_kafka, _) = decode(stored);
                if on_kafka.is_none_or(|k| k.checkpoint.at < beside.at) {
                    publish(&publisher, &beside);
                }
            }
            Err(err) => tracing::warn!(
                topic = publisher.topic(),
                error = format!("{:#}", anyhow::Error::new(err)),
                "cannot read the last ledger checkpoint on Kafka; new ones are published"
            ),
        }
    }
    Ok(Some(move |checkpoint: &Checkpoint| {
        publish(&publisher, checkpoint);
    }))
}

/// Queues `checkpoint` for the checkpoint topic under its public key;
/// logs a failure.
fn publish(publisher: &bus::TopicPublisher, checkpoint: &Checkpoint) {
    let queued = serde_json::to_vec(checkpoint)
        .map_err(anyhow::Error::new)
        .and_then(|payload| {
            publisher
                .publish(checkpoint.public_key.as_bytes(), &payload)
                .map_err(anyhow::Error::new)
        });
    match queued {
        Ok(()) => tracing::debug!(
            seq = checkpoint.seq,
            topic = publisher.topic(),
            "ledger checkpoint queued for kafka"
        ),
        Err(err) => tracing::warn!(
            seq = checkpoint.seq,
            topic = publisher.topic(),
            error = format!("{err:#}"),
            "cannot publish a ledger checkpoint to kafka: it is anchored beside the ledger only"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(seq: u64) -> Checkpoint {
        Checkpoint {
            seq,
            head: "00".repeat(32),
            at: chrono::DateTime::UNIX_EPOCH,
            public_key: "11".repeat(32),
            signature: "22".repeat(64),
        }
    }

    fn in_file(seq: u64) -> Found {
        Found {
            checkpoint: checkpoint(seq),
            source: Source::File {
                path: "checkpoints.jsonl".into(),
            },
        }
    }

    fn on_kafka(seq: u64) -> Found {
        Found {
            checkpoint: checkpoint(seq),
            source: Source::Kafka {
                topic: "driftwarden.checkpoints.v1".into(),
                partition: 0,
                offset: 7,
            },
        }
    }

    #[test]
    fn the_checkpoint_naming_the_longer_chain_is_used() {
        assert_eq!(
            newer(Some(in_file(30)), Some(on_kafka(42))),
            Some(on_kafka(42))
        );
        assert_eq!(
            newer(Some(in_file(42)), Some(on_kafka(30))),
            Some(in_file(42))
        );
    }

    #[test]
    fn on_a_tie_the_checkpoint_off_the_host_is_used() {
        assert_eq!(
            newer(Some(in_file(42)), Some(on_kafka(42))),
            Some(on_kafka(42))
        );
    }

    #[test]
    fn a_single_checkpoint_is_used_and_none_gives_none() {
        assert_eq!(newer(Some(in_file(3)), None), Some(in_file(3)));
        assert_eq!(newer(None, Some(on_kafka(3))), Some(on_kafka(3)));
        assert_eq!(newer(None, None), None);
    }

    #[test]
    fn a_message_of_the_topic_that_is_no_checkpoint_is_named() {
        let at = |offset| bus::Position {
            topic: "p.driftwarden.checkpoints.v1".into(),
            partition: 0,
            offset,
        };
        let stored = vec![
            bus::StoredCheckpoint {
                position: at(3),
                key: None,
                payload: serde_json::to_vec(&checkpoint(9)).expect("encodes"),
            },
            bus::StoredCheckpoint {
                position: at(4),
                key: None,
                payload: b"{\"seq\": \"lots\"}".to_vec(),
            },
        ];
        let (found, unreadable) = decode(stored);
        let found = found.expect("the checkpoint");
        assert_eq!(found.checkpoint.seq, 9);
        assert_eq!(
            found.source.to_string(),
            "Kafka topic `p.driftwarden.checkpoints.v1` (partition 0, offset 3)"
        );
        assert_eq!(unreadable.len(), 1);
        assert!(
            unreadable[0].contains("p.driftwarden.checkpoints.v1/0@4"),
            "{unreadable:?}"
        );
    }

    #[test]
    fn the_json_report_names_the_source_and_the_notes() {
        let chosen = Chosen {
            found: Some(on_kafka(5)),
            notes: vec!["no checkpoint in the file".into()],
            kafka_tampered: false,
        };
        let report = chosen.annotate(serde_json::json!({"problem_count": 0}));
        assert_eq!(report["problem_count"], 0);
        assert_eq!(report["checkpoint_source"]["from"], "kafka");
        assert_eq!(report["checkpoint_source"]["offset"], 7);
        assert_eq!(report["checkpoint_notes"][0], "no checkpoint in the file");
        assert!(
            chosen
                .text()
                .starts_with("checkpoint used: from Kafka topic `driftwarden.checkpoints.v1`"),
            "{}",
            chosen.text()
        );
    }
}
