//! The Markdown report: headings and tables. Every value from the cluster
//! is escaped, so a name cannot become markup, a link or a table cell.

use std::fmt::Write as _;

use super::{
    ActorTally, Report, Tally, human_latency, human_time, source_meaning, verification_text,
};

/// The report as Markdown.
pub(super) fn render(report: &Report) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "# Driftwarden report: {}\n", esc(&report.cluster));
    let _ = writeln!(
        w,
        "- Period: {} to {}",
        human_time(report.period.since),
        human_time(report.period.until)
    );
    if let Some(namespace) = &report.namespace {
        let _ = writeln!(w, "- Namespace: {}", esc(namespace));
    }
    let _ = writeln!(w, "- Generated: {}", human_time(report.generated_at));
    let ledger = &report.ledger;
    let _ = writeln!(
        w,
        "- Ledger head: record #{}, hash {}",
        ledger.head_seq, ledger.head_hash
    );
    let _ = writeln!(
        w,
        "- Verification: {}\n",
        esc(&verification_text(&ledger.verification))
    );

    let s = &report.summary;
    let _ = writeln!(w, "## Summary\n");
    table(
        w,
        &["figure", "value"],
        [
            ("changes", s.changes.to_string()),
            ("drift (drift and unmanaged)", s.drifts.to_string()),
            ("reverted", s.reverted.to_string()),
            ("would revert (dry run)", s.would_revert.to_string()),
            ("adopted", s.adopted.to_string()),
            ("still open", s.still_open.to_string()),
            (
                "time to revert, p50 / p95",
                human_latency(&s.time_to_revert),
            ),
            ("time to adopt, p50 / p95", human_latency(&s.time_to_adopt)),
            ("ledger records read", s.records.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| vec![k.to_owned(), v]),
    );
    let _ = writeln!(w, "### Changes by verdict\n");
    table(
        w,
        &["verdict", "changes"],
        s.verdicts
            .iter()
            .map(|(verdict, n)| vec![format!("`{verdict}`"), n.to_string()]),
    );

    let _ = writeln!(w, "## Drift over time (per {})\n", report.timeline.bucket);
    table(
        w,
        &["from", "drift", "by verdict"],
        report
            .timeline
            .bars
            .iter()
            .filter(|bar| bar.total() > 0)
            .map(|bar| {
                let by: Vec<String> = bar.counts.iter().map(|(v, n)| format!("{v} {n}")).collect();
                vec![
                    human_time(bar.start),
                    bar.total().to_string(),
                    by.join(", "),
                ]
            }),
    );

    tallies(w, "Drift by namespace", "namespace", &report.by_namespace);
    tallies(w, "Drift by kind", "kind", &report.by_kind);
    actors(w, "Drift by actor", &report.by_actor);
    actors(
        w,
        "Top actors of out-of-band changes",
        &report.top_out_of_band,
    );

    let _ = writeln!(w, "## Unresolved drift ({})\n", report.unresolved.len());
    if report.unresolved.is_empty() {
        let _ = writeln!(w, "None.\n");
    }
    for drift in &report.unresolved {
        let _ = writeln!(w, "### {}\n", esc(&drift.key));
        let _ = writeln!(
            w,
            "`{}` since record #{} ({}), {} drift record(s), latest #{} ({}); by {} ({}); desired commit {}\n",
            drift.verdict,
            drift.opened_seq,
            human_time(drift.opened_at),
            drift.drift_records,
            drift.latest_seq,
            human_time(drift.latest_at),
            esc(&drift.actor),
            esc(source_meaning(&drift.actor_source)),
            esc(drift.desired_commit.as_deref().unwrap_or("-")),
        );
        if drift.diff.is_empty() {
            let what = if drift.verdict == "drift_deleted" {
                "the object was deleted"
            } else {
                "no field recorded"
            };
            let _ = writeln!(w, "({what})\n");
            continue;
        }
        table(
            w,
            &["path", "expected", "live"],
            drift
                .diff
                .iter()
                .map(|d| vec![esc(&d.path), esc(&d.expected), esc(&d.live)]),
        );
        if drift.more_paths > 0 {
            let _ = writeln!(w, "… and {} more path(s)\n", drift.more_paths);
        }
    }

    let _ = writeln!(w, "## Exemptions granted ({})\n", report.exemptions.len());
    table(
        w,
        &[
            "record",
            "scope",
            "granted by",
            "reason",
            "from",
            "until",
            "status",
            "changes allowed",
        ],
        report.exemptions.iter().map(|e| {
            let status = match (&e.revoked_by, &e.revoked_reason) {
                (Some(by), Some(why)) => format!("{} by {} ({})", e.status, esc(by), esc(why)),
                _ => e.status.clone(),
            };
            vec![
                format!("#{}", e.seq),
                esc(&e.scope),
                esc(&e.granted_by),
                esc(&e.reason),
                human_time(e.from),
                human_time(e.until),
                status,
                e.changes_allowed.to_string(),
            ]
        }),
    );

    let _ = writeln!(w, "## Git commits applied ({})\n", report.commits.len());
    table(
        w,
        &[
            "record", "applied", "source", "commit", "author", "summary", "tickets", "objects",
        ],
        report.commits.iter().map(|c| {
            vec![
                format!("#{}", c.seq),
                human_time(c.at),
                esc(&c.source),
                esc(c.id.get(..12).unwrap_or(&c.id)),
                esc(&c.author),
                esc(&c.summary),
                esc(&c.refs.join(", ")),
                c.objects_changed.to_string(),
            ]
        }),
    );
    out
}

fn tallies(w: &mut String, title: &str, what: &str, rows: &[Tally]) {
    let _ = writeln!(w, "## {title}\n");
    table(
        w,
        &[what, "changes", "drift", "open"],
        rows.iter().map(|t| {
            let name = if t.name.is_empty() {
                "(cluster-scoped)".to_owned()
            } else {
                esc(&t.name)
            };
            vec![
                name,
                t.changes.to_string(),
                t.drifts.to_string(),
                t.open.to_string(),
            ]
        }),
    );
}

fn actors(w: &mut String, title: &str, rows: &[ActorTally]) {
    let _ = writeln!(w, "## {title}\n");
    table(
        w,
        &["actor", "source", "changes", "drift", "open"],
        rows.iter().map(|a| {
            vec![
                esc(&a.actor),
                esc(source_meaning(&a.source)),
                a.changes.to_string(),
                a.drifts.to_string(),
                a.open.to_string(),
            ]
        }),
    );
}

/// A table; `None.` when it has no row.
fn table(w: &mut String, header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let mut rows = rows.peekable();
    if rows.peek().is_none() {
        let _ = writeln!(w, "None.\n");
        return;
    }
    let _ = writeln!(w, "| {} |", header.join(" | "));
    let _ = writeln!(w, "|{}", "---|".repeat(header.len()));
    for row in rows {
        let _ = writeln!(w, "| {} |", row.join(" | "));
    }
    w.push('\n');
}

/// Text as Markdown shows it literally: HTML's special characters as
/// entities, Markdown's punctuation backslash-escaped, line breaks as
/// spaces.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\r' => out.push(' '),
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '{' | '}' | '#' | '+' | '!' | '|'
            | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}
