//! `driftwarden verify` as a person runs it: exit code and output on an
//! intact ledger, one shorter than its signed checkpoint (an older copy put
//! back: records lost from the end, named) and one the storage engine
//! cannot open (damaged, not "in use"); and a ledger shorter than its
//! checkpoint is refused until the loss is accepted.

use std::path::{Path, PathBuf};
use std::process::Output;

use driftwarden::config::Config;
use model::{GitError, RecordBody};

/// Records written before the damage.
const RECORDS: u64 = 2000;

struct Setup {
    dir: tempfile::TempDir,
    config_path: PathBuf,
    config: Config,
}

impl Setup {
    /// A config whose ledger holds [`RECORDS`] records and a checkpoint,
    /// closed and opened once more (sled then keeps a snapshot); a copy of
    /// it as it was at half the records is kept aside.
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("driftwarden.yaml");
        let text = format!(
            "version: 1\ncluster: {{name: prod}}\ndata_dir: {}\nsources: [{{name: apps, url: 'file:///srv/apps'}}]\n",
            dir.path().join("data").display()
        );
        std::fs::write(&config_path, &text).expect("writes config");
        let config = Config::parse(&config_path, &text).expect("config");
        std::fs::create_dir_all(&config.data_dir).expect("data dir");
        let ledger_dir = config.data_dir.join("ledger");
        {
            let ledger = driftwarden::run::open_ledger(&config).expect("opens");
            for batch in 0..RECORDS / 200 {
                let bodies = (0..100).map(|i| body(batch * 100 + i)).collect();
                ledger.append(bodies, &[]).expect("appends");
            }
        }
        copy_dir(&ledger_dir, &dir.path().join("older-copy"));
        {
            let ledger = driftwarden::run::open_ledger(&config).expect("opens");
            for batch in RECORDS / 200..RECORDS / 100 {
                let bodies = (0..100).map(|i| body(batch * 100 + i)).collect();
                ledger.append(bodies, &[]).expect("appends");
            }
            driftwarden::run::checkpointer(&config, &ledger)
                .expect("checkpointer")
                .checkpoint_now()
                .expect("checkpoint");
        }
        drop(driftwarden::run::open_ledger(&config).expect("reopens"));
        Self {
            dir,
            config_path,
            config,
        }
    }

    fn ledger_dir(&self) -> PathBuf {
        self.config.data_dir.join("ledger")
    }

    /// Puts the copy of the ledger at half its records back in its place.
    fn restore_older_copy(&self) {
        std::fs::remove_dir_all(self.ledger_dir()).expect("removes");
        std::fs::rename(self.dir.path().join("older-copy"), self.ledger_dir()).expect("restores");
    }

    fn verify(&self, extra: &[&str]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_driftwarden"))
            .arg("verify")
            .arg("-c")
            .arg(&self.config_path)
            .args(extra)
            .output()
            .expect("runs driftwarden")
    }
}

fn body(n: u64) -> RecordBody {
    RecordBody::GitError(GitError {
        source: "apps".into(),
        commit: format!("{n:040}"),
        file: "web.yaml".repeat(40),
        line: Some(n as usize),
        message: "bad".into(),
    })
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Cuts the data file to half its length (its snapshot, kept, then points
/// past the end: sled refuses to open it).
fn cut_in_half(ledger: &Path) {
    let data = ledger.join("db");
    let len = std::fs::metadata(&data).expect("exists").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .expect("opens")
        .set_len(len / 2)
        .expect("truncates");
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

#[test]
fn verify_passes_an_intact_ledger_and_names_its_checkpoint() {
    let setup = Setup::new();
    let output = setup.verify(&[]);
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("ledger ok: {RECORDS} records")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("checkpoint of record {RECORDS}")),
        "{stdout}"
    );
}

#[test]
fn verify_fails_a_ledger_shorter_than_its_checkpoint_naming_the_records_lost() {
    let setup = Setup::new();
    // Kept elsewhere, then gone from beside the ledger.
    let elsewhere = setup.config.data_dir.join("../checkpoints-copy.jsonl");
    let beside = setup.config.data_dir.join(ledger::checkpoint::LOG_FILE);
    std::fs::copy(&beside, &elsewhere).expect("copies");
    setup.restore_older_copy();

    let output = setup.verify(&[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("ledger BROKEN"), "{}", text(&output));
    assert!(
        stdout.contains(&format!("records {}..={RECORDS} are gone", RECORDS / 2 + 1)),
        "{}",
        text(&output)
    );
    assert!(!stdout.contains("ledger ok"), "{}", text(&output));

    std::fs::remove_file(&beside).expect("removes");
    let output = setup.verify(&[]);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("no checkpoint to compare with"),
        "{}",
        text(&output)
    );
    let output = setup.verify(&[
        "--checkpoint",
        elsewhere.to_str().expect("utf-8"),
        "-o",
        "json",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let lost = report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .find(|p| p["problem"] == "lost")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(lost["from"], RECORDS / 2 + 1, "{report}");
    assert_eq!(lost["to"], RECORDS, "{report}");
}

#[test]
fn verify_reports_a_ledger_it_cannot_open_as_damaged_with_its_checkpoint() {
    let setup = Setup::new();
    cut_in_half(&setup.ledger_dir());
    let output = setup.verify(&[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is damaged, not in use"),
        "{}",
        text(&output)
    );
    assert!(
        stderr.contains(&format!("says it held {RECORDS} records")),
        "{}",
        text(&output)
    );
    assert!(!stderr.contains("another driftwarden"), "{}", text(&output));
}

#[tokio::test]
async fn a_ledger_shorter_than_its_checkpoint_is_refused_until_the_loss_is_accepted() {
    let setup = Setup::new();
    setup.restore_older_copy();
    let err = driftwarden::run::open_ledger(&setup.config).expect_err("refused");
    let message = format!("{err:#}");
    assert!(
        message.contains("shorter than its last checkpoint"),
        "{message}"
    );
    assert!(message.contains("--accept-truncation"), "{message}");

    let accepted = driftwarden::run::accept_truncation(&setup.config)
        .await
        .expect("accepts")
        .expect("a loss to accept");
    assert!(
        accepted.contains(&format!("records {}..={RECORDS}", RECORDS / 2 + 1)),
        "{accepted}"
    );
    let ledger = driftwarden::run::open_ledger(&setup.config).expect("opens now");
    let last = ledger.get(ledger.len()).expect("reads").expect("present");
    assert!(
        matches!(
            last.body,
            RecordBody::Control(model::Control::TruncationAccepted { to: RECORDS, .. })
        ),
        "{last:?}"
    );
    drop(ledger);
    let output = setup.verify(&[]);
    assert!(output.status.success(), "{}", text(&output));
}
