//! The latest and last known-good state of each object, kept on every change.
//!
//! The `objects` tree holds a compact [`StoredState`] that names records by
//! sequence number; the object bodies live once, in the records, and are
//! read back into an [`ObjectState`] on demand.

use model::{Amendment, ChangeEvent, ChangeKind, ObjectKey, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the ledger knows about one object key now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectState {
    /// Which object.
    pub key: ObjectKey,
    /// The incarnation (`metadata.uid`) last seen.
    pub uid: String,
    /// `metadata.resourceVersion` last seen.
    pub resource_version: String,
    /// The object as last seen; `None` after it was deleted.
    pub latest: Option<Value>,
    /// Sequence number of the record holding `latest`.
    pub latest_seq: u64,
    /// The last state judged good (authorized, in sync or adopted, or
    /// the first observation when it was not drift); `None` when that state
    /// was "deleted" or when no good state was seen yet.
    pub last_good: Option<Value>,
    /// Sequence number of the record holding `last_good`, if any was seen.
    pub last_good_seq: Option<u64>,
    /// Sequence number of the latest record of a departure from git (drift,
    /// or drift an exemption allows) not yet resolved.
    pub open_drift: Option<u64>,
    /// Name of the last verdict ([`Verdict::name`]).
    pub verdict: String,
}

/// An observation of the object: which record, and whether the object
/// existed after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    /// The record holding the change.
    pub seq: u64,
    /// `false` when the change deleted the object.
    pub present: bool,
}

/// The form of [`ObjectState`] kept in the `objects` tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredState {
    /// Which object.
    pub key: ObjectKey,
    /// The incarnation last seen.
    pub uid: String,
    /// `metadata.resourceVersion` last seen.
    pub resource_version: String,
    /// The last observation.
    pub latest: Snapshot,
    /// The last observation judged good.
    pub last_good: Option<Snapshot>,
    /// Sequence number of the latest record of a departure from git (drift,
    /// or drift an exemption allows) not yet resolved.
    pub open_drift: Option<u64>,
    /// Name of the last verdict.
    pub verdict: String,
}

impl StoredState {
    /// The state after record `seq` observed `event`, judged `verdict`, given
    /// the state before (`None` for an object never seen).
    pub(crate) fn observe(
        previous: Option<StoredState>,
        event: &ChangeEvent,
        verdict: &Verdict,
        seq: u64,
    ) -> StoredState {
        let latest = Snapshot {
            seq,
            present: event.kind != ChangeKind::Deleted,
        };
        let first = previous.is_none();
        let mut last_good = previous.as_ref().and_then(|p| p.last_good);
        let mut open_drift = previous.as_ref().and_then(|p| p.open_drift);
        // A trusted change to undeclared fields does not make a drifted
        // object good: only git agreeing again (authorized, adopted) does.
        let drifting = open_drift.is_some() && !verdict.resolves_drift();
        if (verdict.is_good() && !drifting) || (first && !verdict.departs()) {
            last_good = Some(latest);
        }
        if verdict.departs() {
            open_drift = Some(seq);
        } else if verdict.resolves_drift() {
            open_drift = None;
        }
        StoredState {
            key: previous.map_or_else(|| event.key.clone(), |p| p.key),
            uid: event.uid.clone(),
            resource_version: event.resource_version.clone(),
            latest,
            last_good,
            open_drift,
            verdict: verdict.name().to_owned(),
        }
    }

    /// The state after an amendment of one of its records: a drift adopted
    /// by git closes, and the drifted state becomes the known-good one.
    /// An amendment that finds drift (an exemption expired) reopens it at
    /// the amendment's own record `seq`.
    pub(crate) fn amend(mut self, amendment: &Amendment, seq: u64) -> StoredState {
        let verdict = &amendment.judgement.verdict;
        if verdict.is_drift() {
            self.open_drift = Some(seq);
            self.verdict = verdict.name().to_owned();
        } else if self.open_drift == Some(amendment.amends) && verdict.resolves_drift() {
            self.open_drift = None;
            if verdict.is_good() && self.latest.present {
                self.last_good = Some(self.latest);
            }
            self.verdict = verdict.name().to_owned();
        }
        self
    }

    /// The full state, with the object bodies fetched by `object_at` (the
    /// object recorded by a sequence number).
    pub(crate) fn load<E>(
        self,
        mut object_at: impl FnMut(u64) -> Result<Value, E>,
    ) -> Result<ObjectState, E> {
        let mut body = |snapshot: Snapshot| -> Result<Option<Value>, E> {
            if snapshot.present {
                object_at(snapshot.seq).map(Some)
            } else {
                Ok(None)
            }
        };
        let latest = body(self.latest)?;
        let last_good = match self.last_good {
            Some(good) if good.seq == self.latest.seq => latest.clone(),
            Some(good) => body(good)?,
            None => None,
        };
        Ok(ObjectState {
            key: self.key,
            uid: self.uid,
            resource_version: self.resource_version,
            latest,
            latest_seq: self.latest.seq,
            last_good,
            last_good_seq: self.last_good.map(|g| g.seq),
            open_drift: self.open_drift,
            verdict: self.verdict,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use model::DriftKind;
    use serde_json::json;

    fn event(kind: ChangeKind, rv: &str) -> ChangeEvent {
        ChangeEvent::new(
            ObjectKey::new("prod", "apps", "Deployment", "team-a", "web"),
            "apps/v1",
            "u-1",
            rv,
            kind,
            DateTime::from_timestamp(1_800_000_000, 0).expect("valid time"),
            json!({}),
        )
    }

    fn authorized() -> Verdict {
        Verdict::Authorized {
            commit: "c1".into(),
        }
    }

    fn drift() -> Verdict {
        Verdict::Drift {
            drift: DriftKind::Modified {
                paths: vec!["spec.replicas".parse().expect("path")],
            },
        }
    }

    fn at(seq: u64) -> Option<Snapshot> {
        Some(Snapshot { seq, present: true })
    }

    #[test]
    fn first_observation_that_is_not_drift_is_the_last_good_state() {
        let state =
            StoredState::observe(None, &event(ChangeKind::Added, "1"), &Verdict::Unmanaged, 1);
        assert_eq!(state.last_good, at(1));
        assert_eq!(state.verdict, "unmanaged");
        assert_eq!(state.open_drift, None);
    }

    #[test]
    fn first_observation_that_is_drift_has_no_good_state_and_opens_drift() {
        let state = StoredState::observe(None, &event(ChangeKind::Resync, "1"), &drift(), 4);
        assert_eq!(state.last_good, None);
        assert_eq!(state.open_drift, Some(4));
        assert_eq!(
            state.latest,
            Snapshot {
                seq: 4,
                present: true
            }
        );
    }

    #[test]
    fn drift_keeps_the_last_good_state_and_authorized_change_closes_it() {
        let good = StoredState::observe(None, &event(ChangeKind::Added, "1"), &authorized(), 1);
        let drifted =
            StoredState::observe(Some(good), &event(ChangeKind::Modified, "2"), &drift(), 2);
        assert_eq!(drifted.open_drift, Some(2));
        assert_eq!(drifted.last_good, at(1));
        assert_eq!(drifted.latest.seq, 2);
        assert_eq!(drifted.resource_version, "2");

        let fixed = StoredState::observe(
            Some(drifted),
            &event(ChangeKind::Modified, "3"),
            &authorized(),
            3,
        );
        assert_eq!(fixed.open_drift, None);
        assert_eq!(fixed.last_good, at(3));
        assert_eq!(fixed.verdict, "authorized");
    }

    #[test]
    fn allowed_change_stays_open_and_is_not_a_good_state() {
        let good = StoredState::observe(None, &event(ChangeKind::Added, "1"), &authorized(), 1);
        let allowed = Verdict::Allowed {
            rule: "exemption: incident".into(),
        };
        let state =
            StoredState::observe(Some(good), &event(ChangeKind::Modified, "2"), &allowed, 2);
        assert_eq!(state.open_drift, Some(2));
        assert_eq!(state.last_good, at(1));
    }

    #[test]
    fn trusted_change_keeps_the_drift_open_and_the_good_state_unchanged() {
        let good = StoredState::observe(None, &event(ChangeKind::Added, "1"), &authorized(), 1);
        let drifted =
            StoredState::observe(Some(good), &event(ChangeKind::Modified, "2"), &drift(), 2);
        let state = StoredState::observe(
            Some(drifted),
            &event(ChangeKind::Modified, "3"),
            &Verdict::InSync,
            3,
        );
        assert_eq!(state.open_drift, Some(2));
        assert_eq!(state.last_good, at(1));
        let restored = StoredState::observe(
            Some(state),
            &event(ChangeKind::Modified, "4"),
            &authorized(),
            4,
        );
        assert_eq!(restored.open_drift, None);
        assert_eq!(restored.last_good, at(4));
    }

    #[test]
    fn adopted_change_closes_drift() {
        let drifted = StoredState::observe(None, &event(ChangeKind::Added, "1"), &drift(), 1);
        let adopted = Verdict::Adopted {
            commit: "c2".into(),
            drift_seq: 1,
        };
        let state = StoredState::observe(
            Some(drifted),
            &event(ChangeKind::Modified, "2"),
            &adopted,
            2,
        );
        assert_eq!(state.open_drift, None);
        assert_eq!(state.last_good, at(2));
    }

    #[test]
    fn later_unmanaged_change_does_not_move_the_last_good_state() {
        let good = StoredState::observe(None, &event(ChangeKind::Added, "1"), &authorized(), 1);
        let state = StoredState::observe(
            Some(good),
            &event(ChangeKind::Modified, "2"),
            &Verdict::Derived,
            2,
        );
        assert_eq!(state.last_good, at(1));
        assert_eq!(state.latest.seq, 2);
    }

    #[test]
    fn deletion_leaves_no_latest_body_but_keeps_the_good_one() {
        let good = StoredState::observe(None, &event(ChangeKind::Added, "1"), &authorized(), 1);
        let deleted = Verdict::Drift {
            drift: DriftKind::Deleted,
        };
        let stored =
            StoredState::observe(Some(good), &event(ChangeKind::Deleted, "2"), &deleted, 2);
        assert_eq!(stored.verdict, "drift_deleted");
        let state = stored
            .load(|seq| Ok::<_, ()>(json!({ "seq": seq })))
            .expect("loads");
        assert_eq!(state.latest, None);
        assert_eq!(state.latest_seq, 2);
        assert_eq!(state.last_good, Some(json!({"seq": 1})));
        assert_eq!(state.last_good_seq, Some(1));
        assert_eq!(state.open_drift, Some(2));
    }

    #[test]
    fn loading_reads_each_body_once() {
        let stored = StoredState::observe(None, &event(ChangeKind::Added, "1"), &authorized(), 7);
        let mut reads = Vec::new();
        let state = stored
            .load(|seq| {
                reads.push(seq);
                Ok::<_, ()>(json!(seq))
            })
            .expect("loads");
        assert_eq!(reads, vec![7]);
        assert_eq!(state.latest, Some(json!(7)));
        assert_eq!(state.last_good, Some(json!(7)));
    }
}
