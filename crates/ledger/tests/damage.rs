//! Damage to the ledger's files (a flipped byte, a truncated data file,
//! deleted snapshots) is found, never absorbed: sled either refuses to open
//! the ledger, which is then reported as damaged (not as "in use"), or
//! `verify` against the last signed checkpoint names the records lost or
//! altered. A ledger that verifies holds every record its checkpoint names.
//!
//! sled 0.34 keeps everything in one log file `db` (plus `blobs/` for pages
//! over a quarter of a segment, 128 KiB) and writes `snap.*` snapshots of
//! its page table; without a snapshot it rebuilds the table from the log
//! and stops at the first entry that fails its checksum.

use std::path::{Path, PathBuf};

use chrono::Utc;
use driftwarden_ledger::checkpoint::{self, KEY_FILE, LOG_FILE};
use driftwarden_ledger::{
    Checkpoint, CheckpointKey, Error, Ledger, Problem, PublicKey, VerifyReport,
};
use model::{Actor, ChangeEvent, ChangeKind, Judgement, ObjectKey, RecordBody, Verdict};
use serde_json::json;

/// Records in the ledger built for each test.
const RECORDS: u64 = 3000;

/// A change of object `i` at revision `rv`, its object about `size` bytes.
fn change(i: u64, rv: u64, size: usize) -> RecordBody {
    let key = ObjectKey::new("prod", "", "ConfigMap", "team-a", format!("cfg-{}", i % 40));
    RecordBody::Change {
        event: ChangeEvent::new(
            key.clone(),
            "v1",
            format!("uid-{}", i % 40),
            rv.to_string(),
            ChangeKind::Modified,
            Utc::now(),
            json!({"metadata": {"name": key.name}, "data": {"blob": "x".repeat(size), "rv": rv}}),
        ),
        judgement: Judgement {
            git_stale: false,
            verdict: Verdict::Authorized {
                commit: "c0ffee".into(),
            },
            actor: Actor::Unknown {
                reason: "test".into(),
            },
            desired_commit: None,
            diff: Vec::new(),
        },
    }
}

/// A ledger of [`RECORDS`] records (one of them large enough for a blob),
/// checkpointed, closed, and opened once more (as a restarted ledger is,
/// which leaves sled a snapshot).
#[derive(Debug)]
struct Fixture {
    _dir: tempfile::TempDir,
    data_dir: PathBuf,
    checkpoint: Checkpoint,
    trusted: PublicKey,
}

impl Fixture {
    fn build() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_path_buf();
        let key = CheckpointKey::load_or_create(&data_dir.join(KEY_FILE)).expect("key");
        let trusted = key.public_key();
        let checkpoint = {
            let ledger = Ledger::open(data_dir.join("ledger")).expect("opens");
            let checkpointer = ledger
                .checkpointer(key, data_dir.join(LOG_FILE))
                .expect("checkpointer");
            for batch in 0..RECORDS / 100 {
                let bodies = (0..100)
                    .map(|i| {
                        let n = batch * 100 + i;
                        change(n, n, if n == 1234 { 300_000 } else { 600 })
                    })
                    .collect();
                ledger.append(bodies, &[]).expect("appends");
                ledger.flush().expect("flushes");
            }
            checkpointer.checkpoint_now().expect("checkpoint")
        };
        assert_eq!(checkpoint.seq, RECORDS);
        drop(Ledger::open(data_dir.join("ledger")).expect("reopens"));
        Self {
            _dir: dir,
            data_dir,
            checkpoint,
            trusted,
        }
    }

    /// A copy of the ledger's directory, to damage.
    fn copy(&self, name: &str) -> PathBuf {
        let to = self.data_dir.join(format!("copy-{name}"));
        copy_dir(&self.data_dir.join("ledger"), &to);
        to
    }

    /// What opening and verifying the ledger in `path` finds.
    fn examine(&self, path: &Path) -> Finding {
        match Ledger::open(path) {
            Ok(ledger) => Finding::Verified(
                ledger
                    .verify_with(Some(&self.checkpoint), Some(&self.trusted))
                    .expect("verifies"),
            ),
            Err(err @ Error::Damaged { .. }) => Finding::Damaged(err.to_string()),
            Err(other) => panic!("a damaged ledger is reported as damaged, not as: {other}"),
        }
    }
}

#[derive(Debug)]
enum Finding {
    /// Opening refused: the ledger is damaged.
    Damaged(String),
    /// It opened; this is what `verify` said.
    Verified(VerifyReport),
}

impl Finding {
    /// Whether the damage was found; panics when a ledger with fewer
    /// records than its checkpoint names is said to be fine.
    fn found(&self, what: &str) -> bool {
        match self {
            Finding::Damaged(message) => eprintln!("{what}: {message}"),
            Finding::Verified(report) => eprintln!(
                "{what}: {} records, {} problem(s){}",
                report.records,
                report.problem_count,
                report
                    .problems
                    .iter()
                    .filter(|p| !p.is_index())
                    .take(2)
                    .map(|p| format!("; {p}"))
                    .collect::<String>()
            ),
        }
        match self {
            Finding::Damaged(message) => {
                assert!(message.contains("damaged"), "{what}: {message}");
                assert!(!message.contains("in use"), "{what}: {message}");
                true
            }
            Finding::Verified(report) if report.is_ok() => {
                assert_eq!(
                    report.records, RECORDS,
                    "{what}: `verify` said ok with fewer records than the checkpoint names"
                );
                false
            }
            Finding::Verified(report) => {
                assert!(
                    report.problems.iter().any(|p| matches!(
                        p,
                        Problem::Lost { .. }
                            | Problem::CheckpointMismatch { .. }
                            | Problem::Altered { .. }
                            | Problem::Unreadable { .. }
                            | Problem::Missing { .. }
                            | Problem::StorageDamaged { .. }
                            | Problem::BrokenLink { .. }
                            | Problem::IndexUnreadable { .. }
                            | Problem::IndexDiffers { .. }
                    )),
                    "{what}: what is lost, altered or unreadable is named: {:?}",
                    report.problems
                );
                true
            }
        }
    }
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

fn flip_byte(file: &Path, fraction: f64) {
    let mut bytes = std::fs::read(file).expect("reads");
    let at = ((bytes.len() as f64 * fraction) as usize).min(bytes.len() - 1);
    bytes[at] ^= 0x5a;
    std::fs::write(file, bytes).expect("writes");
}

fn truncate(file: &Path, fraction: f64) {
    let len = std::fs::metadata(file).expect("exists").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .expect("opens");
    file.set_len((len as f64 * fraction) as u64)
        .expect("truncates");
}

fn delete_snapshots(ledger: &Path) -> usize {
    let mut deleted = 0;
    for entry in std::fs::read_dir(ledger).expect("lists") {
        let entry = entry.expect("entry");
        if entry.file_name().to_string_lossy().starts_with("snap.") {
            std::fs::remove_file(entry.path()).expect("removes");
            deleted += 1;
        }
    }
    deleted
}

const FRACTIONS: [f64; 8] = [0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99];

#[test]
fn an_intact_ledger_verifies_against_its_checkpoint() {
    let fixture = Fixture::build();
    let path = fixture.copy("intact");
    assert!(!fixture.examine(&path).found("intact"));
    // Without its snapshot, sled rebuilds everything from the log.
    assert!(delete_snapshots(&path) > 0, "sled wrote a snapshot");
    assert!(!fixture.examine(&path).found("snapshot deleted"));
}

#[test]
fn a_flipped_byte_in_the_data_file_is_found_or_harmless() {
    let fixture = Fixture::build();
    for fraction in FRACTIONS {
        let path = fixture.copy(&format!("flip-{fraction}"));
        flip_byte(&path.join("db"), fraction);
        // Found, or (a byte sled no longer reads) every record still there.
        fixture
            .examine(&path)
            .found(&format!("byte flipped at {fraction}"));
    }
}

#[test]
fn a_flipped_byte_with_the_snapshots_deleted_is_found_or_harmless() {
    let fixture = Fixture::build();
    for fraction in FRACTIONS {
        let path = fixture.copy(&format!("flip-nosnap-{fraction}"));
        flip_byte(&path.join("db"), fraction);
        delete_snapshots(&path);
        // Found, or (a byte sled no longer reads) every record still there.
        fixture
            .examine(&path)
            .found(&format!("byte flipped at {fraction}, snapshots deleted"));
    }
}

#[test]
fn a_flipped_byte_in_every_copy_of_a_record_is_found() {
    let fixture = Fixture::build();
    let path = fixture.copy("flip-record");
    let file = path.join("db");
    let mut bytes = std::fs::read(&file).expect("reads");
    // Record 1500's `"rv":1500}`, in every copy sled's log holds.
    let needle = br#""rv":1500}"#;
    let copies: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, window)| *window == needle)
        .map(|(at, _)| at + 5)
        .collect();
    assert!(!copies.is_empty(), "record 1500 is in the data file");
    for at in copies {
        bytes[at] ^= 0x01;
    }
    std::fs::write(&file, bytes).expect("writes");
    assert!(
        fixture.examine(&path).found("record 1500 changed"),
        "a changed record is found"
    );
}

#[test]
fn a_truncated_data_file_is_found() {
    let fixture = Fixture::build();
    for fraction in [0.2, 0.5, 0.8, 0.95] {
        for snapshots in [true, false] {
            let what = format!("data file cut to {fraction} (snapshots kept: {snapshots})");
            let path = fixture.copy(&format!("cut-{fraction}-{snapshots}"));
            truncate(&path.join("db"), fraction);
            if !snapshots {
                delete_snapshots(&path);
            }
            // A cut near the end may fall in space sled had not filled yet;
            // `found` then insists every record is still there. A cut
            // through most of the file always takes records with it.
            let found = fixture.examine(&path).found(&what);
            assert!(found || fraction > 0.9, "{what}: not found");
        }
    }
}

#[test]
fn records_lost_from_the_end_are_counted() {
    let fixture = Fixture::build();
    let path = fixture.copy("cut-end");
    truncate(&path.join("db"), 0.95);
    delete_snapshots(&path);
    match fixture.examine(&path) {
        Finding::Damaged(message) => assert!(message.contains("damaged"), "{message}"),
        // The cut may fall in space sled had not filled: then every record
        // is still there, and saying so is right.
        Finding::Verified(report) if report.is_ok() && report.last_seq == RECORDS => {}
        Finding::Verified(report) => {
            let lost = report.problems.iter().find_map(|p| match p {
                Problem::Lost { from, to, .. } => Some((*from, *to)),
                _ => None,
            });
            // A cut through a record may show as that record unreadable
            // rather than as a lost tail; either way it is named, never ok.
            assert!(!report.is_ok(), "{:?}", report.problems);
            let Some((from, to)) = lost else {
                return;
            };
            assert_eq!(to, RECORDS);
            assert_eq!(from, report.last_seq + 1);
            let text = report
                .problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                text.contains(&format!("records {from}..={to} are gone")),
                "{text}"
            );
        }
    }
}

#[test]
fn a_flipped_byte_in_a_blob_is_found() {
    let fixture = Fixture::build();
    let path = fixture.copy("blob");
    let blobs: Vec<_> = std::fs::read_dir(path.join("blobs"))
        .expect("lists")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(!blobs.is_empty(), "the large record made a blob");
    for blob in &blobs {
        flip_byte(blob, 0.5);
    }
    let finding = fixture.examine(&path);
    assert!(finding.found("byte flipped in a blob"), "{finding:?}");
}

#[test]
fn a_checkpoint_beside_the_ledger_is_found_and_read() {
    let fixture = Fixture::build();
    let latest = checkpoint::latest(&fixture.data_dir.join(LOG_FILE))
        .expect("reads")
        .expect("one");
    assert_eq!(latest, fixture.checkpoint);
    latest.verify(Some(&fixture.trusted)).expect("valid");
}
