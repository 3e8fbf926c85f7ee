//! Amendments, enforcement records and exemptions, through the public API.

use chrono::{DateTime, Duration, Utc};
use driftwarden_ledger::Ledger;
use model::{
    Actor, Amendment, ChangeEvent, ChangeKind, DriftKind, Enforcement, Exemption, ExemptionScope,
    Judgement, Mode, ObjectKey, Outcome, RecordBody, RevertAction, Verdict,
};
use serde_json::json;

fn web() -> ObjectKey {
    ObjectKey::new("prod", "apps", "Deployment", "team-a", "web")
}

fn change(rv: &str, replicas: u32, verdict: Verdict) -> RecordBody {
    RecordBody::Change {
        event: ChangeEvent::new(
            web(),
            "apps/v1",
            "u-1",
            rv,
            ChangeKind::Modified,
            Utc::now(),
            json!({"spec": {"replicas": replicas}}),
        ),
        judgement: judged(verdict),
    }
}

fn judged(verdict: Verdict) -> Judgement {
    Judgement {
        git_stale: false,
        verdict,
        actor: Actor::ManagedFields {
            manager: "kubectl".into(),
            operation: "Update".into(),
            time: None,
        },
        desired_commit: None,
        diff: Vec::new(),
    }
}

fn drift() -> Verdict {
    Verdict::Drift {
        drift: DriftKind::Modified {
            paths: vec!["spec.replicas".parse().expect("path")],
        },
    }
}

#[test]
fn adoption_closes_the_drift_and_makes_the_drifted_state_good() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path()).expect("open");
    ledger
        .append(
            vec![change("1", 2, Verdict::InSync), change("2", 5, drift())],
            &[],
        )
        .expect("append");
    let state = ledger.object_state(&web()).expect("state").expect("known");
    assert_eq!(state.open_drift, Some(2));
    assert_eq!(state.last_good, Some(json!({"spec": {"replicas": 2}})));

    let adopted = Verdict::Adopted {
        commit: "c2".into(),
        drift_seq: 2,
    };
    let amendment = RecordBody::Amendment(Amendment {
        key: web(),
        amends: 2,
        judgement: judged(adopted),
    });
    ledger.append(vec![amendment], &[]).expect("append");
    let state = ledger.object_state(&web()).expect("state").expect("known");
    assert_eq!(state.open_drift, None);
    assert_eq!(state.verdict, "adopted");
    assert_eq!(state.last_good, Some(json!({"spec": {"replicas": 5}})));
    let history = ledger.history(&web()).expect("history");
    assert_eq!(
        history.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(ledger.verify().expect("verify").is_ok());
}

#[test]
fn an_amendment_of_an_older_drift_leaves_a_newer_one_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path()).expect("open");
    ledger
        .append(vec![change("1", 5, drift()), change("2", 7, drift())], &[])
        .expect("append");
    let amendment = RecordBody::Amendment(Amendment {
        key: web(),
        amends: 1,
        judgement: judged(Verdict::Adopted {
            commit: "c2".into(),
            drift_seq: 1,
        }),
    });
    ledger.append(vec![amendment], &[]).expect("append");
    let state = ledger.object_state(&web()).expect("state").expect("known");
    assert_eq!(state.open_drift, Some(2));
}

#[test]
fn enforcement_records_appear_in_the_object_history() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path()).expect("open");
    let revert = RecordBody::Enforcement(Enforcement {
        key: web(),
        drift_seq: 1,
        mode: Mode::Enforce,
        policy: "team-a".into(),
        action: RevertAction::Apply {
            commit: "c1".into(),
        },
        outcome: Outcome::Reverted {
            resource_version: Some("3".into()),
        },
    });
    ledger
        .append(vec![change("1", 5, drift()), revert], &[])
        .expect("append");
    let kinds: Vec<&str> = ledger
        .history(&web())
        .expect("history")
        .iter()
        .map(|r| match r.body {
            RecordBody::Change { .. } => "change",
            RecordBody::Enforcement(_) => "enforcement",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["change", "enforcement"]);
}

#[test]
fn exemptions_in_force_survive_reopening_and_expired_ones_are_left_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let now = Utc::now();
    let exemption = |until: DateTime<Utc>, reason: &str| {
        RecordBody::Exemption(Exemption {
            scope: ExemptionScope::Object { key: web() },
            from: now - Duration::hours(3),
            until,
            reason: reason.into(),
            granted_by: "oncall".into(),
        })
    };
    {
        let ledger = Ledger::open(dir.path()).expect("open");
        ledger
            .append(
                vec![
                    exemption(now - Duration::hours(1), "expired"),
                    exemption(now + Duration::hours(1), "incident 42"),
                ],
                &[],
            )
            .expect("append");
        ledger.flush().expect("flush");
    }
    let ledger = Ledger::open(dir.path()).expect("reopen");
    let reasons: Vec<String> = ledger
        .exemptions()
        .expect("exemptions")
        .into_iter()
        .map(|e| e.reason)
        .collect();
    assert_eq!(reasons, ["incident 42"]);
}
