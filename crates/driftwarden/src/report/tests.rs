//! Reports over a ledger of known content, in every format.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Duration, Utc};
use ledger::Ledger;
use model::{
    Actor, Amendment, Commit, DriftKind, Enforcement, Exemption, ExemptionScope, FieldChange,
    GitSync, Judgement, Mode, ObjectKey, Outcome, PathVerdict, RecordBody, RevertAction, Verdict,
};
use serde_json::{Value, json};

use super::*;

/// A Secret value that must never reach a report.
const CANARY: &str = "canary-s3cr3t-Zq81";

/// A name no report may turn into markup.
const HOSTILE: &str = "x\"><img src=x onerror=alert(1)><script>alert(2)</script>";

/// A field manager name a spreadsheet would run as a formula.
const FORMULA: &str = "=HYPERLINK(\"http://evil.example\",\"x\")";

fn key(namespace: &str, kind: &str, name: &str) -> ObjectKey {
    ObjectKey::new("prod", "", kind, namespace, name)
}

fn audit(user: &str) -> Actor {
    Actor::Audit {
        user: user.into(),
        groups: vec!["system:authenticated".into()],
        service_account: None,
        impersonated_by: None,
        user_agent: "kubectl".into(),
        source_ips: vec!["10.0.0.1".into()],
        audit_id: "a-1".into(),
        manager: None,
    }
}

fn claim(manager: &str) -> Actor {
    Actor::ManagedFields {
        manager: manager.into(),
        operation: "Update".into(),
        time: None,
    }
}

fn unknown() -> Actor {
    Actor::Unknown {
        reason: "test".into(),
    }
}

/// A change of `key` judged `verdict`, by `actor`, with `diff`; each one a
/// new resource version.
fn change(key: ObjectKey, verdict: Verdict, actor: Actor, diff: Vec<FieldChange>) -> RecordBody {
    static VERSION: AtomicU64 = AtomicU64::new(1);
    let mut body = crate::fixtures::change(key, verdict, Utc::now());
    if let RecordBody::Change { event, judgement } = &mut body {
        event.resource_version = VERSION.fetch_add(1, Ordering::Relaxed).to_string();
        if event.key.kind == "Secret" {
            event.object = json!({"kind": "Secret", "data": {"password": CANARY}});
        }
        judgement.actor = actor;
        judgement.diff = diff;
        judgement.desired_commit = Some("c0ffee".into());
    }
    body
}

fn field(path: &str, from: Option<Value>, to: Option<Value>, judged: PathVerdict) -> FieldChange {
    FieldChange::new(path.parse().expect("path"), from, to).judged(judged)
}

fn out_of_band(path: &str) -> Verdict {
    Verdict::Drift {
        drift: DriftKind::OutOfBand {
            paths: vec![path.parse().expect("path")],
        },
    }
}

fn authorized() -> Verdict {
    Verdict::Authorized {
        commit: "c0ffee".into(),
    }
}

/// The ledger, and the time between its two batches.
///
/// ```text
/// batch 1 (#1-#7):  web authorized; web drift_modified (mallory, audit);
///                   db drift_out_of_band (kubectl-edit, a claim);
///                   team-b/HOSTILE unmanaged (mallory, a claim, learnt later as bob);
///                   creds (a Secret) drift_modified to CANARY (mallory, audit);
///                   commit c0ffee (OPS-7); exemption of team-b for an hour
/// batch 2 (#8-#14): revert of #2; web authorized; db adopted (#3);
///                   team-b/cache allowed by the exemption; attribution of #4 to bob;
///                   formula drift_out_of_band (FORMULA, a claim);
///                   claims in_sync (mallory, a claim)
/// ```
fn ledger() -> (tempfile::TempDir, Ledger, DateTime<Utc>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path().join("ledger")).expect("ledger");
    let now = Utc::now();
    let first = vec![
        change(
            key("team-a", "ConfigMap", "web"),
            authorized(),
            unknown(),
            vec![],
        ),
        change(
            key("team-a", "ConfigMap", "web"),
            crate::fixtures::drift(),
            audit("mallory"),
            vec![field(
                "data.level",
                Some(json!("info")),
                Some(json!("debug")),
                PathVerdict::Drift,
            )],
        ),
        change(
            key("team-a", "ConfigMap", "db"),
            out_of_band("metadata.labels.owner"),
            claim("kubectl-edit"),
            vec![field(
                "metadata.labels.owner",
                None,
                Some(json!("eve")),
                PathVerdict::OutOfBand,
            )],
        ),
        change(
            key("team-b", "ConfigMap", HOSTILE),
            Verdict::Unmanaged,
            claim("mallory"),
            vec![FieldChange::new(
                "data.note".parse().expect("path"),
                None,
                Some(json!(HOSTILE)),
            )],
        ),
        change(
            key("team-a", "Secret", "creds"),
            Verdict::Drift {
                drift: DriftKind::Modified {
                    paths: vec!["data.password".parse().expect("path")],
                },
            },
            audit("mallory"),
            vec![
                field(
                    "data.password",
                    Some(json!("hmac-sha256:0123")),
                    Some(json!(CANARY)),
                    PathVerdict::Drift,
                ),
                field(
                    "metadata.labels.tier",
                    Some(json!("db")),
                    Some(json!("cache")),
                    PathVerdict::Drift,
                ),
            ],
        ),
        RecordBody::GitSync(GitSync {
            source: "apps".into(),
            commit: Commit {
                id: "c0ffee0123456789".into(),
                time: now,
                author: "Alice <alice@example.com>".into(),
                summary: "Raise the log level (OPS-7)".into(),
                refs: vec!["OPS-7".into()],
            },
            objects_changed: 3,
        }),
        RecordBody::Exemption(Exemption {
            scope: ExemptionScope::Namespace {
                cluster: "prod".into(),
                namespace: "team-b".into(),
            },
            from: now - Duration::minutes(1),
            until: now + Duration::hours(1),
            reason: "INC-9".into(),
            granted_by: "oncall".into(),
        }),
    ];
    assert_eq!(
        ledger.append(first, &[]).expect("append").seqs,
        (1..=7).collect::<Vec<_>>()
    );
    std::thread::sleep(std::time::Duration::from_millis(40));
    let middle = Utc::now();
    std::thread::sleep(std::time::Duration::from_millis(10));
    let second = vec![
        RecordBody::Enforcement(Enforcement {
            key: key("team-a", "ConfigMap", "web"),
            drift_seq: 2,
            mode: Mode::Enforce,
            policy: "default".into(),
            action: RevertAction::Apply {
                commit: "c0ffee".into(),
            },
            outcome: Outcome::Reverted {
                resource_version: Some("99".into()),
            },
        }),
        change(
            key("team-a", "ConfigMap", "web"),
            authorized(),
            unknown(),
            vec![],
        ),
        RecordBody::Amendment(Amendment {
            key: key("team-a", "ConfigMap", "db"),
            amends: 3,
            judgement: Judgement {
                verdict: Verdict::Adopted {
                    commit: "c0ffee".into(),
                    drift_seq: 3,
                },
                actor: claim("kubectl-edit"),
                desired_commit: Some("c0ffee".into()),
                diff: Vec::new(),
                git_stale: false,
            },
        }),
        change(
            key("team-b", "ConfigMap", "cache"),
            Verdict::Allowed {
                rule: "exemption: INC-9".into(),
            },
            unknown(),
            vec![],
        ),
        RecordBody::Attribution(model::Attribution {
            key: key("team-b", "ConfigMap", HOSTILE),
            amends: 4,
            actor: audit("bob"),
        }),
        change(
            key("team-a", "ConfigMap", "formula"),
            out_of_band("data.x"),
            claim(FORMULA),
            vec![field(
                "data.x",
                None,
                Some(json!("=1+1")),
                PathVerdict::OutOfBand,
            )],
        ),
        change(
            key("team-a", "ConfigMap", "claims"),
            Verdict::InSync,
            claim("mallory"),
            vec![],
        ),
    ];
    assert_eq!(
        ledger.append(second, &[]).expect("append").seqs,
        (8..=14).collect::<Vec<_>>()
    );
    (dir, ledger, middle)
}

fn context() -> Context {
    Context {
        cluster: "prod".into(),
        verification: Verification::not_in_this_process(),
        now: Utc::now(),
        readers: 2,
    }
}

fn scope(since: DateTime<Utc>, until: DateTime<Utc>, namespace: Option<&str>) -> Scope {
    Scope::new(since, until, namespace.map(str::to_owned)).expect("scope")
}

fn day() -> Scope {
    let now = Utc::now();
    scope(now - Duration::days(1), now + Duration::minutes(1), None)
}

/// The report in `format`, as text.
fn text(ledger: &Ledger, scope: &Scope, format: Format) -> String {
    let mut out = Vec::new();
    write(ledger, scope, &context(), format, &mut out).expect("report");
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn the_json_report_counts_every_kind_of_record() {
    let (_dir, ledger, _) = ledger();
    let json = text(&ledger, &day(), Format::Json);
    let report: Report = serde_json::from_str(&json).expect("the JSON is a report");
    let s = &report.summary;
    assert_eq!(s.records, 14);
    assert_eq!(s.changes, 9);
    let verdict = |name: &str| s.verdicts.get(name).copied();
    assert_eq!(verdict("authorized"), Some(2));
    assert_eq!(verdict("drift_modified"), Some(2));
    assert_eq!(verdict("drift_out_of_band"), Some(2));
    assert_eq!(verdict("unmanaged"), Some(1));
    assert_eq!(verdict("allowed"), Some(1));
    assert_eq!(verdict("in_sync"), Some(1));
    assert_eq!(verdict("drift_rollback"), Some(0));
    assert_eq!(s.drifts, 5);
    assert_eq!((s.reverted, s.adopted, s.would_revert), (1, 1, 0));
    assert_eq!(s.still_open, 3);
    assert_eq!(s.time_to_revert.count, 1);
    assert_eq!(s.time_to_adopt.count, 1);
    let revert = s.time_to_revert.p50_seconds.expect("measured");
    assert!((0.04..60.0).contains(&revert), "{revert}");
    assert_eq!(s.time_to_revert.p95_seconds, Some(revert));

    assert_eq!(report.ledger.head_seq, 14);
    assert_eq!(report.ledger.head_hash, hex::encode(ledger.head().1));
    assert!(matches!(
        report.ledger.verification,
        Verification::NotVerified { .. }
    ));

    let unresolved: Vec<(&str, &str)> = report
        .unresolved
        .iter()
        .map(|u| (u.name.as_str(), u.verdict.as_str()))
        .collect();
    assert_eq!(
        unresolved,
        [
            ("formula", "drift_out_of_band"),
            ("creds", "drift_modified"),
            (HOSTILE, "unmanaged"),
        ]
    );
    let hostile = &report.unresolved[2];
    assert_eq!(
        (hostile.actor.as_str(), hostile.actor_source.as_str()),
        ("bob", "audit"),
        "the attribution that came later names the actor"
    );

    let tally = |rows: &[Tally], name: &str| {
        rows.iter()
            .find(|t| t.name == name)
            .map(|t| (t.changes, t.drifts, t.open))
    };
    assert_eq!(tally(&report.by_namespace, "team-a"), Some((7, 4, 2)));
    assert_eq!(tally(&report.by_namespace, "team-b"), Some((2, 1, 1)));
    assert_eq!(tally(&report.by_kind, "Secret"), Some((1, 1, 1)));
    assert_eq!(tally(&report.by_kind, "ConfigMap"), Some((8, 4, 2)));

    let actor = |name: &str, source: &str| {
        report
            .by_actor
            .iter()
            .find(|a| a.actor == name && a.source == source)
            .map(|a| (a.changes, a.drifts, a.open))
    };
    assert_eq!(actor("mallory", "audit"), Some((2, 2, 1)));
    assert_eq!(actor("mallory", "managed_fields"), Some((1, 0, 0)));
    assert_eq!(actor("bob", "audit"), Some((1, 1, 1)));
    assert_eq!(actor("kubectl-edit", "managed_fields"), Some((1, 1, 0)));
    assert_eq!(actor("unknown", "unknown"), Some((3, 0, 0)));
    assert_eq!(report.top_out_of_band[0].actor, "mallory");
    assert_eq!(report.top_out_of_band[0].source, "audit");
    assert!(report.top_out_of_band.iter().all(|a| a.drifts > 0));

    assert_eq!(report.timeline.bucket, "hour");
    let charted: u64 = report.timeline.bars.iter().map(Bar::total).sum();
    assert_eq!(charted, s.drifts);

    assert_eq!(report.exemptions.len(), 1);
    let exemption = &report.exemptions[0];
    assert_eq!(
        (
            exemption.seq,
            exemption.status.as_str(),
            exemption.changes_allowed
        ),
        (7, "in_force", 1)
    );
    assert_eq!(exemption.scope, "namespace team-b in prod");
    assert_eq!(report.commits.len(), 1);
    assert_eq!(report.commits[0].refs, ["OPS-7"]);
}

#[test]
fn secret_values_are_never_shown_but_their_labels_are() {
    let (_dir, ledger, _) = ledger();
    let report = build(&ledger, &day(), &context()).expect("report");
    let creds = report
        .unresolved
        .iter()
        .find(|u| u.name == "creds")
        .expect("creds is open");
    let lines: Vec<(&str, &str, &str)> = creds
        .diff
        .iter()
        .map(|d| (d.path.as_str(), d.expected.as_str(), d.live.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            ("data.password", "(hidden)", "(changed)"),
            ("metadata.labels.tier", "\"db\"", "\"cache\""),
        ]
    );
    for format in [Format::Md, Format::Html, Format::Json, Format::Csv] {
        let text = text(&ledger, &day(), format);
        assert!(!text.contains(CANARY), "{format} shows the canary");
        assert!(!text.contains("hmac-sha256"), "{format} shows a digest");
    }
}

#[test]
fn the_csv_has_one_row_per_change_and_neutralises_formulas() {
    let (_dir, ledger, _) = ledger();
    let report = build(&ledger, &day(), &context()).expect("report");
    let rows = super::csv::parse(&text(&ledger, &day(), Format::Csv));
    assert_eq!(rows[0], super::csv::HEADER);
    let rows = &rows[1..];
    assert_eq!(rows.len() as u64, report.summary.changes);
    assert!(rows.iter().all(|r| r.len() == super::csv::HEADER.len()));
    let drifts = rows
        .iter()
        .filter(|r| r[6].starts_with("drift_") || r[6] == "unmanaged")
        .count() as u64;
    assert_eq!(drifts, report.summary.drifts);
    let seqs: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(seqs, ["1", "2", "3", "4", "5", "9", "11", "13", "14"]);

    let formula = rows
        .iter()
        .find(|r| r[5] == "formula")
        .expect("formula row");
    assert_eq!(formula[7], format!("'{FORMULA}"));
    assert_eq!(formula[8], "managed_fields");
    let hostile = rows.iter().find(|r| r[5] == HOSTILE).expect("hostile row");
    assert_eq!((hostile[7].as_str(), hostile[8].as_str()), ("bob", "audit"));
    assert_eq!(hostile[3], "team-b");
    assert_eq!(rows[1][9], "c0ffee");
    assert_eq!(rows[1][10], "data.level");
}

#[test]
fn markdown_and_html_show_the_same_numbers_and_escape_a_hostile_name() {
    let (_dir, ledger, _) = ledger();
    let report = build(&ledger, &day(), &context()).expect("report");
    let md = text(&ledger, &day(), Format::Md);
    for (figure, n) in [
        ("changes", report.summary.changes),
        ("drift (drift and unmanaged)", report.summary.drifts),
        ("reverted", 1),
        ("adopted", 1),
        ("still open", 3),
    ] {
        assert!(
            md.contains(&format!("| {figure} | {n} |")),
            "{figure} {n}:\n{md}"
        );
    }
    assert!(md.contains("| `drift_modified` | 2 |"), "{md}");
    assert!(md.contains("## Unresolved drift (3)"), "{md}");
    assert!(
        md.contains("| mallory | audit: identity | 2 | 2 | 1 |"),
        "{md}"
    );
    assert!(
        md.contains("| mallory | managed\\_fields: claim, unverified | 1 | 0 | 0 |"),
        "{md}"
    );
    assert!(!md.contains("<img") && !md.contains("<script"), "{md}");
    assert!(
        md.contains("&lt;img src=x onerror=alert\\(1\\)&gt;"),
        "{md}"
    );

    let html = text(&ledger, &day(), Format::Html);
    for (figure, n) in [
        ("changes", 9),
        ("drifts", 5),
        ("reverted", 1),
        ("adopted", 1),
        ("still_open", 3),
    ] {
        assert!(
            html.contains(&format!("data-figure=\"{figure}\">{n}</dd>")),
            "{figure}"
        );
    }
    assert!(html.contains("<svg id=\"drift-chart\""));
    let bars = html.matches("<rect class=\"bar").count();
    let stacked: usize = report.timeline.bars.iter().map(|b| b.counts.len()).sum();
    assert_eq!(bars, stacked);
    assert!(html.contains("data-total=\"5\""));
    // Nothing from the cluster became markup; no script at all.
    assert!(!html.contains("<img"), "a value became an element");
    assert!(!html.to_lowercase().contains("<script"));
    assert!(html.contains("x&quot;&gt;&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;"));
    assert!(html.contains("@media print"));
    assert!(html.contains("Content-Security-Policy"));
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
}

#[test]
fn a_period_reads_only_its_records() {
    let (_dir, ledger, middle) = ledger();
    let now = Utc::now();
    let later = build(
        &ledger,
        &scope(middle, now + Duration::minutes(1), None),
        &context(),
    )
    .expect("report");
    let s = &later.summary;
    assert_eq!((s.records, s.changes, s.drifts), (7, 4, 1));
    // The revert and the adoption of drifts recorded before the period
    // count, timed from the ledger's record of the drift.
    assert_eq!((s.reverted, s.adopted), (1, 1));
    assert_eq!((s.time_to_revert.count, s.time_to_adopt.count), (1, 1));
    assert_eq!(s.still_open, 1);
    assert!(later.exemptions.is_empty() && later.commits.is_empty());

    let earlier = build(
        &ledger,
        &scope(now - Duration::days(1), middle, None),
        &context(),
    )
    .expect("report");
    let s = &earlier.summary;
    assert_eq!((s.records, s.changes, s.drifts), (7, 5, 4));
    assert_eq!((s.reverted, s.adopted, s.still_open), (0, 0, 4));
    assert_eq!(earlier.exemptions[0].changes_allowed, 0);
    let csv = super::csv::parse(&text(
        &ledger,
        &scope(now - Duration::days(1), middle, None),
        Format::Csv,
    ));
    assert_eq!(csv.len(), 1 + 5);
}

#[test]
fn a_namespace_limits_changes_and_exemptions_but_not_commits() {
    let (_dir, ledger, _) = ledger();
    let now = Utc::now();
    let team_b = scope(
        now - Duration::days(1),
        now + Duration::minutes(1),
        Some("team-b"),
    );
    let report = build(&ledger, &team_b, &context()).expect("report");
    let s = &report.summary;
    assert_eq!((s.changes, s.drifts, s.reverted, s.adopted), (2, 1, 0, 0));
    assert_eq!(s.still_open, 1);
    assert_eq!(report.namespace.as_deref(), Some("team-b"));
    assert_eq!(report.by_namespace.len(), 1);
    assert_eq!(report.exemptions.len(), 1);
    assert_eq!(report.commits.len(), 1);
    let csv = super::csv::parse(&text(&ledger, &team_b, Format::Csv));
    assert!(csv[1..].iter().all(|r| r[3] == "team-b"));
    assert_eq!(csv.len(), 1 + 2);
    let team_c = scope(now - Duration::days(1), now, Some("team-c"));
    let report = build(&ledger, &team_c, &context()).expect("report");
    assert_eq!((report.summary.changes, report.exemptions.len()), (0, 0));
}

#[test]
fn a_week_is_charted_by_day_and_an_empty_ledger_reports_zeros() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path()).expect("ledger");
    let now = Utc::now();
    let week = scope(now - Duration::days(7), now, None);
    let report = build(&ledger, &week, &context()).expect("report");
    assert_eq!(report.timeline.bucket, "day");
    assert!((7..=8).contains(&report.timeline.bars.len()));
    assert_eq!(report.summary.changes, 0);
    assert_eq!(report.summary.time_to_revert.p50_seconds, None);
    let html = text(&ledger, &week, Format::Html);
    assert!(html.contains("no drift in the period"));
    let md = text(&ledger, &week, Format::Md);
    assert!(md.contains("| time to revert, p50 / p95 | - |"), "{md}");
    let csv = text(&ledger, &week, Format::Csv);
    assert_eq!(csv.lines().count(), 1);
}

#[test]
fn times_are_durations_back_from_now_or_rfc_3339_and_bad_input_says_why() {
    let now = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
    let week: When = "7d".parse().expect("a duration");
    assert_eq!(week.at(now), now - Duration::days(7));
    let hours: When = "36h".parse().expect("a duration");
    assert_eq!(hours.at(now), now - Duration::hours(36));
    let at: When = "2026-05-01T00:00:00+02:00".parse().expect("a time");
    assert_eq!(
        at.at(now),
        DateTime::parse_from_rfc3339("2026-04-30T22:00:00Z").expect("time")
    );
    let err = "yesterday".parse::<When>().expect_err("not a time");
    assert!(err.to_string().contains("`7d`"), "{err}");
    assert!(err.to_string().contains("RFC 3339"), "{err}");

    let err = Scope::new(now, now, None).expect_err("empty");
    assert_eq!(err.field(), Some("until"));
    let err = Scope::new(now - Duration::days(400), now, None).expect_err("too long");
    assert_eq!(err.field(), Some("since"));
    let err = Scope::new(now - Duration::days(1), now, Some("Team A".into()))
        .expect_err("not a namespace");
    assert_eq!(err.field(), Some("namespace"));
    assert!("pdf".parse::<Format>().is_err());
    assert_eq!("csv".parse::<Format>().expect("csv"), Format::Csv);
}

#[test]
fn a_late_judgement_within_the_window_replaces_the_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path()).expect("ledger");
    let web = key("team-a", "ConfigMap", "web");
    ledger
        .append(
            vec![change(web.clone(), Verdict::InSync, claim("helm"), vec![])],
            &[],
        )
        .expect("append");
    let judgement = Judgement {
        verdict: out_of_band("metadata.labels.x"),
        actor: audit("eve"),
        desired_commit: None,
        diff: vec![field(
            "metadata.labels.x",
            None,
            Some(json!("1")),
            PathVerdict::OutOfBand,
        )],
        git_stale: false,
    };
    ledger
        .append(
            vec![RecordBody::Amendment(Amendment {
                key: web,
                amends: 1,
                judgement,
            })],
            &[],
        )
        .expect("append");
    let report = build(&ledger, &day(), &context()).expect("report");
    assert_eq!(report.summary.changes, 1);
    assert_eq!(report.summary.verdicts.get("in_sync"), Some(&0));
    assert_eq!(report.summary.verdicts.get("drift_out_of_band"), Some(&1));
    assert_eq!(report.by_actor.len(), 1);
    assert_eq!(
        (
            report.by_actor[0].actor.as_str(),
            report.by_actor[0].source.as_str()
        ),
        ("eve", "audit")
    );
    assert_eq!(report.unresolved[0].diff[0].live, "\"1\"");
}

#[tokio::test]
async fn the_api_answers_each_format_with_its_content_type_and_names_bad_fields() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use tower::ServiceExt as _;

    let (dir, ledger, _) = ledger();
    let token = dir.path().join("reader.token");
    std::fs::write(&token, "r".repeat(40)).expect("token");
    let text = format!(
        "version: 1\ncluster: {{name: prod}}\ndata_dir: {}\n\
         sources: [{{name: apps, url: 'file:///srv/apps'}}]\n\
         api: {{listen: '127.0.0.1:0', tokens: [{{name: secops, file: {}, role: reader}}]}}\n",
        dir.path().join("data").display(),
        token.display()
    );
    let config = crate::config::Config::parse(&dir.path().join("c.yaml"), &text).expect("config");
    let (requests, _keep) = tokio::sync::mpsc::channel(1);
    let state = crate::api::ApiState {
        ledger: std::sync::Arc::new(ledger),
        desired: tokio::sync::watch::channel(crate::desired::Desired::default()).1,
        requests,
        health: Default::default(),
        digest_key: model::redact::DigestKey::from_bytes([7; 32]),
        tokens: crate::api::Tokens::load(&config).expect("tokens"),
        config: std::sync::Arc::new(config),
        verified: Default::default(),
        metrics: Default::default(),
    };
    let (router, doc) = crate::api::router(state);
    assert!(doc.paths.paths.contains_key("/v1/report"));
    let get = |path: &str, token: Option<&str>| {
        let mut request = Request::get(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Body::empty()).expect("request");
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await.expect("answer");
            let status = response.status();
            let kind = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body");
            (status, kind, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let reader = "r".repeat(40);
    let (status, _, _) = get("/v1/report", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for (format, kind) in [
        ("md", "text/markdown"),
        ("html", "text/html"),
        ("json", "application/json"),
        ("csv", "text/csv"),
    ] {
        let (status, content_type, body) = get(
            &format!("/v1/report?since=1d&format={format}"),
            Some(&reader),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{format}: {body}");
        assert!(content_type.starts_with(kind), "{format}: {content_type}");
        assert!(!body.contains(CANARY));
        if format == "json" {
            let report: Report = serde_json::from_str(&body).expect("a report");
            assert_eq!(report.summary.changes, 9);
            assert!(matches!(
                report.ledger.verification,
                Verification::NotVerified { ref note } if note.contains("since this driftwarden started")
            ));
        }
        if format == "csv" {
            assert_eq!(super::csv::parse(&body).len(), 1 + 9);
        }
    }
    let (status, _, body) = get("/v1/report?namespace=team-b&format=json", Some(&reader)).await;
    assert_eq!(status, StatusCode::OK);
    let report: Report = serde_json::from_str(&body).expect("a report");
    assert_eq!(report.summary.changes, 2);
    for (path, field) in [
        ("/v1/report?since=yesterday", "since"),
        ("/v1/report?until=soon", "until"),
        ("/v1/report?since=1h&until=2h", "until"),
        ("/v1/report?since=400d", "since"),
        ("/v1/report?format=pdf", "format"),
        ("/v1/report?namespace=Team%20A", "namespace"),
        ("/v1/report?colour=red", "query"),
    ] {
        let (status, _, body) = get(path, Some(&reader)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        let error: Value = serde_json::from_str(&body).expect("an error");
        assert_eq!(error["field"], field, "{path}: {body}");
    }
}

#[tokio::test]
async fn the_command_reads_a_stopped_ledger_and_names_a_bad_flag() {
    use clap::Parser as _;

    let (dir, ledger, _) = ledger();
    drop(ledger);
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::rename(dir.path().join("ledger"), data.join("ledger")).expect("move");
    let config = dir.path().join("driftwarden.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\ncluster: {{name: prod}}\ndata_dir: {}\n\
             sources: [{{name: apps, url: 'file:///srv/apps'}}]\n",
            data.display()
        ),
    )
    .expect("config");
    let out = dir.path().join("week.json");
    let args = |extra: &[&str]| {
        let mut args = vec![
            "driftwarden",
            "report",
            "-c",
            config.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        crate::cli::Cli::try_parse_from(args)
    };
    let cli = args(&["--format", "json", "--out", out.to_str().expect("utf-8")]).expect("args");
    let said = crate::cli::run(cli).await.expect("report");
    assert!(
        said.text.starts_with("json report written to"),
        "{}",
        said.text
    );
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("file")).expect("a report");
    assert_eq!(report.summary.changes, 9);
    assert_eq!(report.period.until - report.period.since, Duration::days(7));

    let err = args(&["--since", "last tuesday"]).expect_err("not a time");
    let text = err.to_string();
    assert!(text.contains("--since") && text.contains("`7d`"), "{text}");
    let cli = args(&["--since", "1h", "--until", "2h"]).expect("parses");
    let err = crate::cli::run(cli).await.expect_err("an empty period");
    assert!(format!("{err:#}").starts_with("--until: "), "{err:#}");
}
