//! Signed checkpoints of the chain head: written at an interval and when
//! the ledger closes, compared by `verify` and by the start-up check, and a
//! loss accepted by hand is recorded.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use driftwarden_ledger::checkpoint::{self, KEY_FILE, LOG_FILE};
use driftwarden_ledger::{
    Checkpoint, CheckpointKey, CheckpointStatus, Checkpointer, Error, Ledger, Problem,
};
use model::{Control, GitError, RecordBody};

fn body(n: u64) -> RecordBody {
    RecordBody::GitError(GitError {
        source: "apps".into(),
        commit: format!("{n:040}"),
        file: "web.yaml".into(),
        line: Some(n as usize),
        message: "bad".into(),
    })
}

fn append(ledger: &Ledger, n: u64) {
    let start = ledger.len();
    ledger
        .append((start..start + n).map(body).collect(), &[])
        .expect("appends");
}

fn checkpointer(ledger: &Ledger, dir: &Path) -> Checkpointer {
    let key = CheckpointKey::load_or_create(&dir.join(KEY_FILE)).expect("key");
    ledger
        .checkpointer(key, dir.join(LOG_FILE))
        .expect("checkpointer")
}

fn latest(dir: &Path) -> Checkpoint {
    checkpoint::latest(&dir.join(LOG_FILE))
        .expect("reads")
        .expect("a checkpoint")
}

#[test]
fn a_checkpoint_is_written_when_the_ledger_closes_and_on_the_interval() {
    let dir = tempfile::tempdir().expect("temp dir");
    let seen = Arc::new(Mutex::new(Vec::new()));
    {
        let ledger = Ledger::open(dir.path().join("ledger")).expect("opens");
        let published = seen.clone();
        let checkpoints = checkpointer(&ledger, dir.path()).on_checkpoint(move |c| {
            published.lock().expect("lock").push(c.seq);
        });
        ledger
            .start_checkpoints(checkpoints, Duration::from_millis(50))
            .expect("starts");
        append(&ledger, 5);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while checkpoint::latest(&dir.path().join(LOG_FILE))
            .expect("reads")
            .is_none_or(|c| c.seq < 5)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint on the interval"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        append(&ledger, 3);
    }
    let last = latest(dir.path());
    assert_eq!(last.seq, 8, "the last checkpoint is written on close");
    let trusted = checkpoint::trusted_key(&dir.path().join(KEY_FILE))
        .expect("reads")
        .expect("a key");
    last.verify(Some(&trusted)).expect("valid");
    assert_eq!(seen.lock().expect("lock").last(), Some(&8));
    // Nothing moved: no new line when it closes again.
    let lines = || {
        std::fs::read_to_string(dir.path().join(LOG_FILE))
            .expect("reads")
            .lines()
            .count()
    };
    let before = lines();
    {
        let ledger = Ledger::open(dir.path().join("ledger")).expect("reopens");
        let checkpoints = checkpointer(&ledger, dir.path());
        ledger
            .start_checkpoints(checkpoints, Duration::from_secs(3600))
            .expect("starts");
        let report = ledger
            .verify_with(Some(&last), Some(&trusted))
            .expect("verifies");
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(report.checkpoint.as_ref(), Some(&last));
    }
    assert_eq!(lines(), before);
}

#[test]
fn a_ledger_restored_from_an_older_copy_is_behind_its_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ledger");
    let old_copy = dir.path().join("old-copy");
    {
        let ledger = Ledger::open(&path).expect("opens");
        append(&ledger, 8);
        ledger.flush().expect("flushes");
    }
    copy_dir(&path, &old_copy);
    let signed = {
        let ledger = Ledger::open(&path).expect("opens");
        append(&ledger, 4);
        let signed = checkpointer(&ledger, dir.path())
            .checkpoint_now()
            .expect("checkpoint");
        assert_eq!(
            ledger.check_against_checkpoint(&signed).expect("checks"),
            CheckpointStatus::Matches
        );
        append(&ledger, 1);
        assert_eq!(
            ledger.check_against_checkpoint(&signed).expect("checks"),
            CheckpointStatus::Matches,
            "a chain longer than its checkpoint is fine"
        );
        signed
    };
    std::fs::remove_dir_all(&path).expect("removes");
    std::fs::rename(&old_copy, &path).expect("restores");

    let ledger = Ledger::open(&path).expect("opens");
    let status = ledger.check_against_checkpoint(&signed).expect("checks");
    assert_eq!(status, CheckpointStatus::Behind { from: 9, to: 12 });
    assert!(status.to_string().contains("4 record(s) lost"), "{status}");
    let report = ledger.verify_with(Some(&signed), None).expect("verifies");
    assert!(!report.is_ok());
    assert!(
        matches!(
            report.problems.as_slice(),
            [Problem::Lost {
                from: 9,
                to: 12,
                ..
            }]
        ),
        "{:?}",
        report.problems
    );

    // Accepting the loss records it and signs a fresh checkpoint.
    let checkpoints = checkpointer(&ledger, dir.path());
    let accepted = ledger
        .accept_truncation(&signed, &checkpoints)
        .expect("accepts");
    assert_eq!((accepted.from, accepted.to, accepted.record), (9, 12, 9));
    let record = ledger.get(9).expect("reads").expect("present");
    assert!(
        matches!(
            record.body,
            RecordBody::Control(Control::TruncationAccepted {
                from: 9,
                to: 12,
                ..
            })
        ),
        "{record:?}"
    );
    let fresh = latest(dir.path());
    assert_eq!(fresh, accepted.checkpoint);
    assert_eq!(fresh.seq, 9);
    assert_eq!(
        ledger.check_against_checkpoint(&fresh).expect("checks"),
        CheckpointStatus::Matches
    );
    let report = ledger.verify_with(Some(&fresh), None).expect("verifies");
    assert!(report.is_ok(), "{:?}", report.problems);
    append(&ledger, 2);
    assert!(ledger.verify().expect("verifies").is_ok());
    // Nothing more to accept.
    let err = ledger
        .accept_truncation(&fresh, &checkpoints)
        .expect_err("not truncated");
    assert!(matches!(err, Error::NotTruncated { .. }), "{err}");
}

#[test]
fn a_chain_rewritten_under_its_checkpoint_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let signed = {
        let ledger = Ledger::open(dir.path().join("ledger")).expect("opens");
        append(&ledger, 6);
        checkpointer(&ledger, dir.path())
            .checkpoint_now()
            .expect("checkpoint")
    };
    // Someone who can recompute every hash writes a new history of the
    // same length.
    let forged = dir.path().join("forged");
    let ledger = Ledger::open(&forged).expect("opens");
    ledger
        .append((100..107).map(body).collect(), &[])
        .expect("appends");
    let status = ledger.check_against_checkpoint(&signed).expect("checks");
    assert!(
        matches!(status, CheckpointStatus::Altered { seq: 6, .. }),
        "{status:?}"
    );
    let report = ledger.verify_with(Some(&signed), None).expect("verifies");
    assert_eq!(report.problem_count, 1, "{:?}", report.problems);
    assert!(
        matches!(
            &report.problems[0],
            Problem::CheckpointMismatch { seq: 6, .. }
        ),
        "{:?}",
        report.problems
    );
    assert!(
        report.problems[0]
            .to_string()
            .contains("record 6 was altered"),
        "{}",
        report.problems[0]
    );
}

#[test]
fn a_forged_or_foreign_checkpoint_is_named_and_not_trusted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path().join("ledger")).expect("opens");
    append(&ledger, 3);
    let signed = checkpointer(&ledger, dir.path())
        .checkpoint_now()
        .expect("checkpoint");
    let trusted = checkpoint::trusted_key(&dir.path().join(KEY_FILE))
        .expect("reads")
        .expect("a key");

    // The seq raised to claim records that never were.
    let mut forged = signed.clone();
    forged.seq = 30;
    let report = ledger
        .verify_with(Some(&forged), Some(&trusted))
        .expect("verifies");
    assert!(
        matches!(&report.problems[..], [Problem::CheckpointInvalid { seq: 30, reason }] if reason.contains("does not verify")),
        "{:?}",
        report.problems
    );

    // Signed, but by a key of someone else's.
    let other_dir = tempfile::tempdir().expect("temp dir");
    let other = CheckpointKey::load_or_create(&other_dir.path().join(KEY_FILE)).expect("key");
    let foreign = other.sign(3, &signed.head_hash().expect("hash"));
    let report = ledger
        .verify_with(Some(&foreign), Some(&trusted))
        .expect("verifies");
    assert!(
        matches!(&report.problems[..], [Problem::CheckpointInvalid { reason, .. }] if reason.contains("not by this ledger's key")),
        "{:?}",
        report.problems
    );
    assert!(
        ledger
            .verify_with(Some(&signed), Some(&trusted))
            .expect("verifies")
            .is_ok()
    );
}

#[test]
fn a_second_open_is_in_use_not_damaged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let _ledger = Ledger::open(dir.path()).expect("opens");
    let err = Ledger::open(dir.path()).expect_err("locked");
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creates");
    for entry in std::fs::read_dir(from).expect("lists") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copies");
        }
    }
}
