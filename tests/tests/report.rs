//! `driftwarden report` against the real apiserver: a Driftwarden that
//! enforces one ConfigMap and audits another runs as its ServiceAccount;
//! mallory changes both with kubectl (one drift is reverted, the other,
//! holding a hostile value, stays open); the report is made through the
//! running process (its socket, and its HTTP API with a reader token) in
//! every format, the HTML one opened in headless Chromium, and made again
//! from the ledger once the process stopped. A screenshot lands in
//! `target/report.png`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use driftwarden_e2e::api::{ApiAccess, run_cli, start};
use driftwarden_e2e::app::config_map_yaml;
use driftwarden_e2e::browser::Browser;
use driftwarden_e2e::enforcing::{Enforcing, Rule};
use driftwarden_e2e::scenario::{Bus, Scenario};
use driftwarden_e2e::{User, eventually, workspace_root};
use model::Mode;
use serde_json::{Value, json};

/// A value no report may turn into markup.
const HOSTILE: &str = "<img src=x onerror=\"window.pwned=1\">";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_driftwarden-under-test"))
}

/// Runs the command line with `args` and the config; its stdout.
fn cli(config: &Path, args: &[&str]) -> Result<String> {
    let out = run_cli(binary(), config, args)?;
    ensure!(
        out.status.success(),
        "driftwarden {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Splits CSV text (RFC 4180) into rows of cells.
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|row| row.expect("a CSV row").iter().map(str::to_owned).collect())
        .collect()
}

/// Git declares ConfigMaps `settings` (labelled `enforce: "on"`) and
/// `notes`, both `level: info`, applied by the GitOps agent; Driftwarden
/// enforces the first and audits the second, with an API. Returns the
/// scenario, its config file and the API's access.
async fn declared() -> Result<(Scenario, PathBuf, ApiAccess)> {
    let mut s = Scenario::prepare(Bus::Embedded, "report", &[]).await?;
    let ns = s.namespace().to_owned();
    let settings = config_map_yaml(&ns, "settings", &[("enforce", "on")], &[("level", "info")]);
    let notes = config_map_yaml(&ns, "notes", &[], &[("level", "info")]);
    s.repo.write("apps/settings.yaml", &settings)?;
    s.repo.write("apps/notes.yaml", &notes)?;
    s.commit("Declare settings and notes (OPS-7)")?;
    s.apply_as_gitops(&["apps/settings.yaml", "apps/notes.yaml"])?;
    let mut enforcing = Enforcing::new(s.settings.clone());
    enforcing.rules = vec![
        Rule::new("guard", Mode::Enforce)
            .in_namespace(&ns)
            .labelled("enforce", "on"),
        Rule::new("watch", Mode::Audit).in_namespace(&ns),
    ];
    let (access, config) = ApiAccess::configure(&s, &enforcing.yaml()?)?;
    Ok((s, config, access))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_made_through_the_running_process_agrees_in_every_format_and_in_a_browser()
-> Result<()> {
    let since = (chrono::Utc::now() - chrono::Duration::minutes(10)).to_rfc3339();
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (mut s, config, access) = declared().await?;
    let process = start(binary(), &mut s, &config, &access).await?;

    // Mallory changes both: `settings` is put back, `notes` stays drifted.
    for (name, level) in [("settings", "debug"), ("notes", HOSTILE)] {
        let patch = json!({"data": {"level": level}}).to_string();
        s.kubectl(User::Mallory, &["patch", "configmap", name, "-p", &patch])?;
    }
    let period = ["--since", since.as_str(), "--until", until.as_str()];
    let json_args: Vec<&str> = ["report", "--format", "json"]
        .into_iter()
        .chain(period)
        .collect();
    let report: Value = eventually(
        Duration::from_secs(60),
        "a report with the revert and the open drift",
        || {
            let out = cli(&config, &json_args);
            async move {
                let report: Value = serde_json::from_str(&out?)?;
                let settled = report["summary"]["reverted"].as_u64() >= Some(1)
                    && report["summary"]["time_to_revert"]["count"].as_u64() >= Some(1)
                    && report["unresolved"]
                        .as_array()
                        .is_some_and(|u| u.iter().any(|d| d["name"] == "notes"));
                Ok(settled.then_some(report))
            }
        },
    )
    .await?;
    // What follows a revert (the object's own change) is in before the
    // report is taken for good.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Every format through the socket, to files.
    let dir = tempfile::tempdir()?;
    let mut files = Vec::new();
    for format in ["json", "md", "csv", "html"] {
        let file = dir.path().join(format!("report.{format}"));
        let path = file.to_string_lossy().into_owned();
        let args: Vec<&str> = ["report", "--format", format, "--out", path.as_str()]
            .into_iter()
            .chain(period)
            .collect();
        let said = cli(&config, &args)?;
        ensure!(said.contains("report written to"), "{said}");
        files.push(file);
    }
    let read = |i: usize| std::fs::read_to_string(&files[i]);
    let (json_text, md, csv, html) = (read(0)?, read(1)?, read(2)?, read(3)?);
    let report2: Value = serde_json::from_str(&json_text)?;
    let summary = &report2["summary"];
    ensure!(
        summary["reverted"].as_u64() >= report["summary"]["reverted"].as_u64(),
        "{summary}"
    );
    let changes = summary["changes"].as_u64().context("changes")?;
    let drifts = summary["drifts"].as_u64().context("drifts")?;
    let still_open = summary["still_open"].as_u64().context("still open")?;
    ensure!(still_open == 1, "only `notes` stays open: {report2}");
    ensure!(drifts >= 2 && changes > drifts, "{summary}");
    let notes = &report2["unresolved"][0];
    ensure!(
        notes["name"] == "notes"
            && notes["diff"][0]["path"] == "data.level"
            && notes["diff"][0]["expected"] == "\"info\"",
        "{notes}"
    );
    ensure!(
        notes["actor"] == "kubectl-patch" && notes["actor_source"] == "managed_fields",
        "without an audit webhook the actor is a claim: {notes}"
    );
    ensure!(
        report2["commits"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["refs"] == json!(["OPS-7"]))),
        "the commit and its ticket: {}",
        report2["commits"]
    );
    ensure!(
        report2["ledger"]["verification"]["status"] == "not_verified",
        "{}",
        report2["ledger"]
    );

    // The CSV has one row per change; the Markdown the same numbers.
    let rows = csv_rows(&csv);
    ensure!(rows[0][0] == "seq" && rows[0].len() == 11, "{:?}", rows[0]);
    ensure!(rows.len() as u64 == 1 + changes, "{csv}");
    let drift_rows = rows[1..]
        .iter()
        .filter(|r| r[6].starts_with("drift_") || r[6] == "unmanaged")
        .count() as u64;
    ensure!(drift_rows == drifts, "{csv}");
    for (figure, n) in [
        ("changes", changes),
        ("drift (drift and unmanaged)", drifts),
        ("still open", still_open),
        ("reverted", summary["reverted"].as_u64().unwrap_or_default()),
    ] {
        ensure!(
            md.contains(&format!("| {figure} | {n} |")),
            "{figure}:\n{md}"
        );
    }
    ensure!(!md.contains("<img"), "{md}");
    ensure!(
        !html.contains("<img") && !html.to_lowercase().contains("<script"),
        "the HTML holds markup from the cluster, or a script"
    );

    // The same CSV through the HTTP API with a reader token.
    let token = access.reader_file.to_string_lossy().into_owned();
    let base = access.base();
    let remote: Vec<&str> = [
        "report",
        "--format",
        "csv",
        "--server",
        base.as_str(),
        "--token-file",
        token.as_str(),
    ]
    .into_iter()
    .chain(period)
    .collect();
    ensure!(
        cli(&config, &remote)? == csv,
        "the API and the socket disagree"
    );

    // The HTML in a browser: the numbers, the chart, no script, the
    // hostile value as text.
    let mut browser = Browser::launch().await?;
    browser
        .navigate(&format!("file://{}", files[3].display()))
        .await?;
    browser
        .until(
            "the report loaded",
            "document.readyState === 'complete' && !!document.getElementById('summary')",
        )
        .await?;
    for figure in ["changes", "drifts", "reverted", "still_open"] {
        let shown = browser
            .eval(&format!(
                "document.querySelector('[data-figure={figure}]').textContent"
            ))
            .await?;
        ensure!(
            shown.as_str() == Some(summary[figure].to_string().as_str()),
            "{figure}: the page shows {shown}, the JSON {}",
            summary[figure]
        );
    }
    let charted = browser
        .eval(
            "[...document.querySelectorAll('svg#drift-chart rect.bar')]\
             .reduce((n, r) => n + Number(r.dataset.count), 0)",
        )
        .await?;
    ensure!(
        charted.as_u64() == Some(drifts),
        "the chart shows {charted}"
    );
    let safe = browser
        .eval(
            "document.scripts.length === 0 && document.images.length === 0 \
             && window.pwned === undefined \
             && document.getElementById('unresolved').textContent.includes('onerror')",
        )
        .await?;
    ensure!(
        safe == Value::Bool(true),
        "the report runs or renders markup"
    );
    browser
        .screenshot(&workspace_root().join("target").join("report.png"))
        .await?;

    // Once stopped, the ledger itself gives the same numbers.
    process.interrupt().await?;
    let stopped: Value = serde_json::from_str(&cli(&config, &json_args)?)?;
    for field in [
        "changes",
        "drifts",
        "reverted",
        "adopted",
        "still_open",
        "verdicts",
    ] {
        ensure!(
            stopped["summary"][field] == summary[field],
            "{field}: running {}, stopped {}",
            summary[field],
            stopped["summary"][field]
        );
    }
    ensure!(
        stopped["unresolved"] == report2["unresolved"],
        "{}",
        stopped["unresolved"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_report_input_names_the_flag_and_an_example() -> Result<()> {
    let (_s, config, _) = declared().await?;
    for (args, expected) in [
        (vec!["report", "--since", "last tuesday"], "--since"),
        (vec!["report", "--until", "soon"], "--until"),
        (vec!["report", "--since", "1h", "--until", "2h"], "--until"),
        (vec!["report", "--namespace", "Team A"], "--namespace"),
    ] {
        let out = std::process::Command::new(binary())
            .args(&args)
            .arg("-c")
            .arg(&config)
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{args:?} succeeded");
        ensure!(stderr.contains(expected), "{args:?}: {stderr}");
        if args[1] != "--namespace" {
            ensure!(
                stderr.contains("7d") || stderr.contains("later than"),
                "{args:?} gives an example: {stderr}"
            );
        }
    }
    Ok(())
}
