//! Ledger records for the unit tests.

use chrono::{DateTime, Utc};
use model::{Actor, ChangeEvent, ChangeKind, DriftKind, Judgement, ObjectKey, RecordBody, Verdict};
use serde_json::json;

/// A change of `key`, observed at `observed`, judged `verdict` with an
/// unknown actor.
pub(crate) fn change(key: ObjectKey, verdict: Verdict, observed: DateTime<Utc>) -> RecordBody {
    let event = ChangeEvent::new(
        key.clone(),
        "v1",
        format!("uid-{}", key.name),
        "7",
        ChangeKind::Modified,
        observed,
        json!({"metadata": {"name": key.name}, "data": {"level": "debug"}}),
    );
    RecordBody::Change {
        event,
        judgement: Judgement {
            git_stale: false,
            verdict,
            actor: Actor::Unknown {
                reason: "test".into(),
            },
            desired_commit: None,
            diff: Vec::new(),
        },
    }
}

/// A drift of the declared field `data.level`.
pub(crate) fn drift() -> Verdict {
    Verdict::Drift {
        drift: DriftKind::Modified {
            paths: vec!["data.level".parse().expect("path")],
        },
    }
}
