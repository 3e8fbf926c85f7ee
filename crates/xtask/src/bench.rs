//! `cargo xtask bench`: every benchmark in one run, its numbers in
//! `target/bench/summary.json` and a table against the design's targets.
//!
//! ```text
//!   env up ──► cargo build --release -p driftwarden
//!          ──► cargo bench -p driftwarden-correlate --bench classify   ─┐
//!          ──► cargo bench -p driftwarden-ledger --bench ledger          │ `name=value`
//!          ──► cargo bench -p driftwarden-ledger --bench ledger_1m       │ lines of
//!          ──► cargo bench -p driftwarden --bench api (same 1 M records) │
//!          ──► cargo bench -p driftwarden-watch --bench audit_ingest     ├─ stdout ──► summary.json
//!          ──► cargo bench -p driftwarden-bus --bench roundtrip          │             + table
//!          ──► cargo bench -p driftwarden-e2e --bench pipeline           │
//!          ──► cargo bench -p driftwarden-e2e --bench revert             │
//!          ──► cargo bench -p driftwarden-e2e --bench attribution        │
//!          ──► cargo bench -p driftwarden-e2e --bench crd                │
//!          ──► cargo bench -p driftwarden-e2e --bench sync               │
//!          ──► cargo bench -p driftwarden-e2e --bench alerts            ─┘
//! ```
//!
//! Each bench's output is shown as it runs. A bench that fails is reported
//! and the others still run; the exit code is then non-zero. The table
//! checks the design's targets and, for the audit webhook, that detect and
//! revert p99 with it on stay within 10 % of off (`attribution` measures
//! both side by side and measures a pair once more when it misses; the
//! table shows that second ratio under the first, which stays as measured).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::env;
use crate::paths::{self, State, workspace_root};
use crate::procs;

/// One benchmark program.
#[derive(Debug)]
struct Bench {
    /// Its package.
    package: &'static str,
    /// Its `[[bench]]` name.
    name: &'static str,
    /// Whether it needs the test environment's variables.
    needs_env: bool,
}

/// Every bench, cheapest first.
const BENCHES: [Bench; 12] = [
    Bench {
        package: "driftwarden-correlate",
        name: "classify",
        needs_env: false,
    },
    Bench {
        package: "driftwarden-ledger",
        name: "ledger",
        needs_env: false,
    },
    Bench {
        package: "driftwarden-ledger",
        name: "ledger_1m",
        needs_env: false,
    },
    Bench {
        package: "driftwarden",
        name: "api",
        needs_env: false,
    },
    Bench {
        package: "driftwarden-watch",
        name: "audit_ingest",
        needs_env: false,
    },
    Bench {
        package: "driftwarden-bus",
        name: "roundtrip",
        needs_env: true,
    },
    Bench {
        package: "driftwarden-e2e",
        name: "pipeline",
        needs_env: true,
    },
    Bench {
        package: "driftwarden-e2e",
        name: "revert",
        needs_env: true,
    },
    Bench {
        package: "driftwarden-e2e",
        name: "attribution",
        needs_env: true,
    },
    Bench {
        package: "driftwarden-e2e",
        name: "crd",
        needs_env: true,
    },
    Bench {
        package: "driftwarden-e2e",
        name: "sync",
        needs_env: true,
    },
    Bench {
        package: "driftwarden-e2e",
        name: "alerts",
        needs_env: true,
    },
];

/// A target: the number's name, the bound, and whether the bound is a
/// maximum. The design's (§7), a kind whose CRD arrives late watched within
/// two seconds, then the audit webhook's cost: with it on, detect and revert
/// p99 within 10 % of off.
#[derive(Debug)]
struct Target {
    name: &'static str,
    bound: f64,
    at_most: bool,
    what: &'static str,
}

const TARGETS: [Target; 20] = [
    Target {
        name: "detect_p99_api_on_off_ratio_embedded",
        bound: API_COST,
        at_most: true,
        what: "detect p99, API served and read ÷ not, embedded",
    },
    Target {
        name: "detect_p99_api_on_off_ratio_kafka",
        bound: API_COST,
        at_most: true,
        what: "detect p99, API served and read ÷ not, Kafka",
    },
    Target {
        name: "runtime_stall_p99_ms",
        bound: 1.0,
        at_most: true,
        what: "task waits for a runtime worker, at 5 000 events/s",
    },
    Target {
        name: "revert_first_ms_kafka",
        bound: 1_000.0,
        at_most: true,
        what: "first revert, Kafka",
    },
    Target {
        name: "revert_p99_ms_kafka",
        bound: 300.0,
        at_most: true,
        what: "write → object restored, Kafka",
    },
    Target {
        name: "detect_first_ms_kafka",
        bound: 500.0,
        at_most: true,
        what: "first change, Kafka",
    },
    Target {
        name: "detect_p99_ms_kafka",
        bound: 250.0,
        at_most: true,
        what: "write → verdict in ledger, Kafka",
    },
    Target {
        name: "detect_p99_ms_embedded",
        bound: 100.0,
        at_most: true,
        what: "write → verdict in ledger, embedded",
    },
    Target {
        name: "classify_events_per_s",
        bound: 50_000.0,
        at_most: false,
        what: "classification, one core",
    },
    Target {
        name: "e2e_events_per_s_kafka",
        bound: 5_000.0,
        at_most: false,
        what: "live writes through Kafka and the ledger",
    },
    Target {
        name: "e2e_backlog_events_per_s_kafka",
        bound: 5_000.0,
        at_most: false,
        what: "initial list through Kafka and the ledger",
    },
    Target {
        name: "ledger_appends_per_s",
        bound: 100_000.0,
        at_most: false,
        what: "batched appends",
    },
    Target {
        name: "history_query_p99_ms",
        bound: 5.0,
        at_most: true,
        what: "one object's history among 1 M records",
    },
    Target {
        name: "verify_1m_records_s",
        bound: 10.0,
        at_most: true,
        what: "verify 1 M records",
    },
    Target {
        name: "rss_mib_per_10k_objects",
        // 2 KiB per object.
        bound: 2.0 * 10_000.0 / 1024.0,
        at_most: true,
        what: "memory per 10 000 watched objects",
    },
    Target {
        name: "crd_watch_delay_ms",
        bound: 2_000.0,
        at_most: true,
        what: "CRD created → its first custom resource judged, median",
    },
    Target {
        name: "detect_p99_on_off_ratio_embedded",
        bound: WEBHOOK_COST,
        at_most: true,
        what: "detect p99, audit webhook on ÷ off, embedded",
    },
    Target {
        name: "detect_p99_on_off_ratio_kafka",
        bound: WEBHOOK_COST,
        at_most: true,
        what: "detect p99, audit webhook on ÷ off, Kafka",
    },
    Target {
        name: "revert_p99_on_off_ratio_embedded",
        bound: WEBHOOK_COST,
        at_most: true,
        what: "revert p99, audit webhook on ÷ off, embedded",
    },
    Target {
        name: "revert_p99_on_off_ratio_kafka",
        bound: WEBHOOK_COST,
        at_most: true,
        what: "revert p99, audit webhook on ÷ off, Kafka",
    },
];

/// The largest p99 ratio, audit webhook on ÷ off, of detect and revert.
const WEBHOOK_COST: f64 = 1.10;

/// How much serving the API (read as the drift feed page reads it) may
/// slow detection.
const API_COST: f64 = 1.10;

/// The suffix of a figure measured once more after its first value missed.
const REPEAT: &str = "_repeat";

/// Runs every bench and writes the summary.
pub fn run(quick: bool) -> Result<ExitCode> {
    let started = Instant::now();
    let started_env = env::ensure_up()?;
    let result = run_all(quick);
    if started_env {
        println!("\nstopping the test environment the bench started");
        env::stop_all(&State::of_workspace())?;
    }
    let (numbers, failed) = result?;
    let wall = started.elapsed().as_secs_f64();
    let mut summary = numbers;
    summary.insert("bench_wall_s".to_string(), (wall * 10.0).round() / 10.0);
    summary.insert("bench_quick".to_string(), f64::from(u8::from(quick)));
    let path = workspace_root()
        .join("target")
        .join("bench")
        .join("summary.json");
    paths::write(&path, to_json(&summary)?)?;
    print_table(&summary);
    if quick {
        println!(
            "\n--quick: the ledger bench held 100 000 records (verify_1m_records_s is scaled \
             to 1 M, history_query_p99_ms is not), and the end-to-end bench used 100 changes, \
             2 000 writes and 5 000 objects, the revert and attribution benches 100 changes \
             per bus (and side), the audit ingest bench 2 s per measurement"
        );
    }
    println!(
        "\n{} numbers in {} ({:.0}s in all)",
        summary.len(),
        paths::show(&path),
        wall
    );
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        println!("failed: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}

/// Builds the release binary and runs every bench; returns the numbers and
/// the benches that failed.
fn run_all(quick: bool) -> Result<(BTreeMap<String, f64>, Vec<String>)> {
    let state = State::of_workspace();
    let root = workspace_root();
    let binary = paths::cargo_target_dir()
        .join("release")
        .join("driftwarden");

    let build = Instant::now();
    println!("\n== cargo build --release -p driftwarden (for the memory bench)");
    let status = procs::cargo()
        .current_dir(&root)
        .args(["build", "--release", "-p", "driftwarden"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p driftwarden failed ({status})");
    }
    println!("   built in {:.1}s", build.elapsed().as_secs_f64());

    // The ledger_1m bench builds its ledger here afresh; the API bench
    // then serves the same records.
    let ledger_dir = root.join("target").join("bench").join("ledger-1m");
    match std::fs::remove_dir_all(&ledger_dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(err).with_context(|| format!("removing {}", ledger_dir.display()));
        }
        _ => {}
    }
    let mut extra: Vec<(String, String)> = vec![
        (
            "DW_DRIFTWARDEN_BIN".to_string(),
            binary.display().to_string(),
        ),
        (
            "LEDGER_BENCH_DIR".to_string(),
            ledger_dir.display().to_string(),
        ),
    ];
    if quick {
        extra.extend(
            [
                ("LEDGER_BENCH_RECORDS", "100000"),
                ("DW_BENCH_CHANGES", "100"),
                ("DW_BENCH_WRITES", "2000"),
                ("DW_BENCH_OBJECTS", "5000"),
                ("REVERT_CHANGES", "100"),
                ("ATTRIBUTION_CHANGES", "100"),
                ("ALERT_CHANGES", "20"),
                ("AUDIT_INGEST_SECONDS", "2"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
    }
    let mut numbers = BTreeMap::new();
    let mut failed = Vec::new();
    for bench in &BENCHES {
        let mut vars = extra.clone();
        if bench.needs_env {
            // Read now: the environment may have been restarted meanwhile.
            vars.extend(env::running_exports(&state)?);
        }
        match run_bench(bench, &vars) {
            Ok(found) => numbers.extend(found),
            Err(err) => {
                eprintln!("   {} failed: {err:#}", bench.name);
                failed.push(format!("{}/{}", bench.package, bench.name));
            }
        }
    }
    Ok((numbers, failed))
}

/// Runs one bench, echoing its output; returns its `name=value` numbers.
fn run_bench(bench: &Bench, vars: &[(String, String)]) -> Result<BTreeMap<String, f64>> {
    let started = Instant::now();
    println!(
        "\n== cargo bench -p {} --bench {}",
        bench.package, bench.name
    );
    let mut child = procs::cargo()
        .current_dir(workspace_root())
        .args(["bench", "-p", bench.package, "--bench", bench.name])
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo bench")?;
    let stdout = child.stdout.take().context("cargo bench has no stdout")?;
    let mut numbers = BTreeMap::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the bench's output")?;
        println!("   {line}");
        if let Some((name, value)) = parse_number(&line) {
            numbers.insert(name, value);
        }
    }
    let status = child.wait().context("waiting for cargo bench")?;
    if !status.success() {
        bail!("cargo bench exited with {status}");
    }
    println!(
        "   ({} numbers, {:.0}s)",
        numbers.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(numbers)
}

/// A `name=value` line: a lowercase identifier and a finite number.
fn parse_number(line: &str) -> Option<(String, f64)> {
    let (name, value) = line.trim().split_once('=')?;
    let identifier = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    let value: f64 = value.trim().parse().ok()?;
    (identifier && value.is_finite()).then(|| (name.to_string(), value))
}

/// The summary as pretty JSON; whole numbers without a fraction.
fn to_json(summary: &BTreeMap<String, f64>) -> Result<String> {
    let object: serde_json::Map<String, serde_json::Value> = summary
        .iter()
        .map(|(name, value)| {
            let number = if value.fract() == 0.0 && value.abs() < 9e15 {
                serde_json::Value::from(*value as i64)
            } else {
                serde_json::Value::from(*value)
            };
            (name.clone(), number)
        })
        .collect();
    Ok(serde_json::to_string_pretty(&object)? + "\n")
}

/// The numbers that have a target, then every other number.
fn print_table(summary: &BTreeMap<String, f64>) {
    println!(
        "\n{:<34} {:>12}  {:<12} verdict",
        "target", "measured", "bound"
    );
    for target in &TARGETS {
        let bound = format!(
            "{} {}",
            if target.at_most { "≤" } else { "≥" },
            show(target.name, target.bound)
        );
        let (value, verdict) = judge(target, summary.get(target.name));
        println!(
            "{:<34} {value:>12}  {bound:<12} {verdict:<7} {}",
            target.name, target.what
        );
        let repeat = format!("{}{REPEAT}", target.name);
        if let Some(again) = summary.get(&repeat) {
            let (value, verdict) = judge(target, Some(again));
            println!(
                "{:<34} {value:>12}  {bound:<12} {verdict:<7} measured once more (noisy machine?)",
                format!("  {REPEAT}")
            );
        }
    }
    if let (Some(e2e), Some(apiserver)) = (
        summary.get("e2e_events_per_s_kafka"),
        summary.get("apiserver_writes_per_s"),
    ) && *e2e >= 0.9 * apiserver
    {
        println!(
            "  note: the apiserver accepted {} writes/s, so the live rate cannot be higher;\n  \
             e2e_backlog_events_per_s_kafka is the pipeline's own rate",
            show("apiserver_writes_per_s", *apiserver)
        );
    }
    let others: Vec<_> = summary
        .iter()
        .filter(|(name, _)| {
            let name = name.strip_suffix(REPEAT).unwrap_or(name);
            TARGETS.iter().all(|t| t.name != name)
        })
        .collect();
    if !others.is_empty() {
        println!("\nother numbers");
        let width = others.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
        for (name, value) in others {
            println!("{name:<width$} {:>12}", show(name, *value));
        }
    }
}

/// The value of `target` for the table and whether it is met.
fn judge(target: &Target, value: Option<&f64>) -> (String, &'static str) {
    match value {
        Some(v) => {
            let met = if target.at_most {
                *v <= target.bound
            } else {
                *v >= target.bound
            };
            (show(target.name, *v), if met { "met" } else { "MISSED" })
        }
        None => ("-".to_string(), "not measured"),
    }
}

/// A number for the table: ratios with two decimals, whole numbers and
/// large ones without.
fn show(name: &str, value: f64) -> String {
    if name.contains("_ratio") {
        format!("{value:.2}")
    } else if value.abs() >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_lines_are_parsed_and_others_ignored() {
        assert_eq!(
            parse_number("classify_events_per_s=123456"),
            Some(("classify_events_per_s".to_string(), 123_456.0))
        );
        assert_eq!(
            parse_number("  detect_p99_ms_kafka=12.5 "),
            Some(("detect_p99_ms_kafka".to_string(), 12.5))
        );
        assert_eq!(parse_number("reopen: 0.12 s"), None);
        assert_eq!(parse_number("Some Name=3"), None);
        assert_eq!(parse_number("x=NaN"), None);
        assert_eq!(parse_number("x=fast"), None);
    }

    #[test]
    fn ratios_keep_two_decimals_next_to_their_bound() {
        assert_eq!(show("detect_p99_on_off_ratio_kafka", 1.104), "1.10");
        assert_eq!(show("detect_p99_on_off_ratio_kafka", 1.0), "1.00");
        assert_eq!(show("detect_p99_ms_kafka", 12.345), "12.3");
        let target = &TARGETS[TARGETS.len() - 1];
        assert_eq!(judge(target, Some(&1.11)).1, "MISSED");
        assert_eq!(judge(target, Some(&1.10)).1, "met");
    }

    #[test]
    fn whole_numbers_are_written_without_a_fraction() {
        let summary = BTreeMap::from([("a".to_string(), 3.0), ("b".to_string(), 2.5)]);
        let json: serde_json::Value =
            serde_json::from_str(&to_json(&summary).expect("serializes")).expect("parses");
        assert_eq!(json["a"], serde_json::json!(3));
        assert_eq!(json["b"], serde_json::json!(2.5));
    }
}
