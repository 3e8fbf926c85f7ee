//! The HTML report: one self-contained file with its style inline, an
//! inline SVG chart of drift over time, no script at all (its content
//! security policy forbids any), printable. Every value is HTML-escaped.

use std::fmt::Write as _;

use super::{
    ActorTally, Report, Tally, Timeline, human_latency, human_time, source_meaning,
    verification_text,
};

/// The page's own policy: its inline style, nothing else; no script.
const POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
                      base-uri 'none'; form-action 'none'";

const STYLE: &str = r#"
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; margin: 2rem auto; max-width: 1100px; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; margin-top: 2rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 .3rem; word-break: break-all; }
.meta { color: #57606a; margin: 0; padding-left: 1.2rem; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: .6rem; margin: 1rem 0; }
.figure { border: 1px solid #d0d7de; border-radius: 6px; padding: .5rem .7rem; }
.figure dt { color: #57606a; font-size: .8rem; }
.figure dd { margin: 0; font-size: 1.4rem; font-weight: 600; }
.figure.wide { grid-column: span 2; }
.figure.wide dd { font-size: 1rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; min-width: 50%; }
table.diff { width: 100%; }
th, td { border: 1px solid #d0d7de; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
td.v, code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .85rem; word-break: break-all; }
.none { color: #57606a; font-style: italic; }
.bad { color: #c92a2a; font-weight: 600; }
svg { max-width: 100%; height: auto; }
svg text { font: 11px system-ui, sans-serif; fill: #57606a; }
.axis { stroke: #8c959f; stroke-width: 1; }
.legend { display: flex; gap: 1rem; flex-wrap: wrap; font-size: .85rem; }
.swatch { display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem; vertical-align: -1px; }
.v-drift_modified { fill: #e8590c; background: #e8590c; }
.v-drift_rollback { fill: #9c36b5; background: #9c36b5; }
.v-drift_deleted { fill: #c92a2a; background: #c92a2a; }
.v-drift_out_of_band { fill: #f08c00; background: #f08c00; }
.v-unmanaged { fill: #1c7ed6; background: #1c7ed6; }
@page { margin: 1.5cm; }
@media print {
  body { margin: 0; max-width: none; font-size: 10pt; }
  .figure, tr, article, svg { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
  th { background: none; }
}
"#;

/// The report as one HTML page.
pub(super) fn render(report: &Report) -> String {
    let mut out = String::new();
    let w = &mut out;
    let title = format!("Driftwarden report: {}", report.cluster);
    let _ = write!(
        w,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{POLICY}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&title)
    );
    let _ = writeln!(w, "<h1>{}</h1>", esc(&title));
    let ledger = &report.ledger;
    let _ = writeln!(w, "<ul class=\"meta\">");
    let _ = writeln!(
        w,
        "<li>Period: <time id=\"since\">{}</time> to <time id=\"until\">{}</time></li>",
        human_time(report.period.since),
        human_time(report.period.until)
    );
    if let Some(namespace) = &report.namespace {
        let _ = writeln!(w, "<li>Namespace: <code>{}</code></li>", esc(namespace));
    }
    let _ = writeln!(w, "<li>Generated: {}</li>", human_time(report.generated_at));
    let _ = writeln!(
        w,
        "<li>Ledger head: record <span id=\"head-seq\">#{}</span>, hash <code id=\"head-hash\">{}</code></li>",
        ledger.head_seq,
        esc(&ledger.head_hash)
    );
    let _ = writeln!(
        w,
        "<li>Verification: <span id=\"verification\">{}</span></li>\n</ul>",
        esc(&verification_text(&ledger.verification))
    );

    summary(w, report);
    chart(w, &report.timeline);
    tallies(
        w,
        "by-namespace",
        "Drift by namespace",
        "Namespace",
        &report.by_namespace,
    );
    tallies(w, "by-kind", "Drift by kind", "Kind", &report.by_kind);
    actors(w, "by-actor", "Drift by actor", &report.by_actor);
    actors(
        w,
        "top-out-of-band",
        "Top actors of out-of-band changes",
        &report.top_out_of_band,
    );
    unresolved(w, report);
    exemptions(w, report);
    commits(w, report);
    let _ = writeln!(w, "</body>\n</html>");
    out
}

fn summary(w: &mut String, report: &Report) {
    let s = &report.summary;
    let _ = writeln!(
        w,
        "<section id=\"summary\">\n<h2>Summary</h2>\n<dl class=\"figures\">"
    );
    for (id, label, value) in [
        ("changes", "Changes", s.changes),
        ("drifts", "Drift (drift and unmanaged)", s.drifts),
        ("reverted", "Reverted", s.reverted),
        ("would_revert", "Would revert (dry run)", s.would_revert),
        ("adopted", "Adopted", s.adopted),
        ("still_open", "Still open", s.still_open),
    ] {
        let _ = writeln!(
            w,
            "<div class=\"figure\"><dt>{label}</dt><dd data-figure=\"{id}\">{value}</dd></div>"
        );
    }
    for (id, label, latency) in [
        (
            "time_to_revert",
            "Time to revert, p50 / p95",
            &s.time_to_revert,
        ),
        (
            "time_to_adopt",
            "Time to adopt, p50 / p95",
            &s.time_to_adopt,
        ),
    ] {
        let _ = writeln!(
            w,
            "<div class=\"figure wide\"><dt>{label}</dt><dd data-figure=\"{id}\">{}</dd></div>",
            esc(&human_latency(latency))
        );
    }
    let _ = writeln!(w, "</dl>");
    let _ = writeln!(
        w,
        "<table id=\"verdicts\">\n<thead><tr><th>Verdict</th><th>Changes</th></tr></thead>\n<tbody>"
    );
    for (verdict, n) in &s.verdicts {
        let _ = writeln!(
            w,
            "<tr data-verdict=\"{v}\"><td><code>{v}</code></td><td class=\"n\">{n}</td></tr>",
            v = esc(verdict)
        );
    }
    let _ = writeln!(
        w,
        "</tbody>\n</table>\n<p class=\"none\">{} ledger records read.</p>\n</section>",
        s.records
    );
}

/// Stacked bars of drift by verdict, one per hour or day.
fn chart(w: &mut String, timeline: &Timeline) {
    const WIDTH: f64 = 860.0;
    const HEIGHT: f64 = 240.0;
    const LEFT: f64 = 44.0;
    const TOP: f64 = 12.0;
    const BOTTOM: f64 = 36.0;
    let plot_w = WIDTH - LEFT - 12.0;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let bars = &timeline.bars;
    let max = bars.iter().map(|b| b.total()).max().unwrap_or(0).max(1);
    let total: u64 = bars.iter().map(|b| b.total()).sum();
    let _ = writeln!(
        w,
        "<section id=\"timeline\">\n<h2>Drift over time (per {})</h2>",
        esc(&timeline.bucket)
    );
    let _ = writeln!(
        w,
        "<svg id=\"drift-chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" aria-label=\"Drift per {}: {total} in all\" \
         data-total=\"{total}\">",
        esc(&timeline.bucket)
    );
    let base = TOP + plot_h;
    let _ = writeln!(
        w,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{base}\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{max}</text>\
         <text x=\"{}\" y=\"{base}\" text-anchor=\"end\">0</text>",
        LEFT + plot_w,
        LEFT - 6.0,
        TOP + 10.0,
        LEFT - 6.0,
    );
    let slot = plot_w / bars.len().max(1) as f64;
    let width = (slot * 0.8).max(1.0);
    let label = |bar: &super::Bar| {
        if timeline.bucket == "hour" {
            bar.start.format("%m-%d %H:00").to_string()
        } else {
            bar.start.format("%Y-%m-%d").to_string()
        }
    };
    for (i, bar) in bars.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - width) / 2.0;
        let mut y = base;
        for verdict in &timeline.verdicts {
            let Some(&n) = bar.counts.get(verdict) else {
                continue;
            };
            let h = plot_h * n as f64 / max as f64;
            y -= h;
            let _ = writeln!(
                w,
                "<rect class=\"bar v-{v}\" data-verdict=\"{v}\" data-count=\"{n}\" x=\"{x:.1}\" y=\"{y:.1}\" \
                 width=\"{width:.1}\" height=\"{h:.1}\"><title>{}: {n} {v}</title></rect>",
                esc(&label(bar)),
                v = esc(verdict),
            );
        }
    }
    // The first label starts at its bar, the last ends at its bar, the
    // middle one is centred.
    let last_bar = bars.len().saturating_sub(1);
    let mut labelled = Vec::new();
    for i in [0, bars.len() / 2, last_bar] {
        if labelled.contains(&i) {
            continue;
        }
        labelled.push(i);
        let Some(bar) = bars.get(i) else {
            continue;
        };
        let (x, anchor) = if i == 0 {
            (LEFT + slot * i as f64, "start")
        } else if i == last_bar {
            (LEFT + slot * (i as f64 + 1.0), "end")
        } else {
            (LEFT + slot * (i as f64 + 0.5), "middle")
        };
        let _ = writeln!(
            w,
            "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
            base + 16.0,
            esc(&label(bar))
        );
    }
    if total == 0 {
        let _ = writeln!(
            w,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">no drift in the period</text>",
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
    }
    let _ = writeln!(w, "</svg>\n<p class=\"legend\">");
    for verdict in &timeline.verdicts {
        let _ = writeln!(
            w,
            "<span><span class=\"swatch v-{v}\"></span>{v}</span>",
            v = esc(verdict)
        );
    }
    let _ = writeln!(w, "</p>\n</section>");
}

fn tallies(w: &mut String, id: &str, title: &str, what: &str, rows: &[Tally]) {
    let _ = writeln!(w, "<section id=\"{id}\">\n<h2>{title}</h2>");
    if rows.is_empty() {
        let _ = writeln!(w, "<p class=\"none\">None.</p>\n</section>");
        return;
    }
    let _ = writeln!(
        w,
        "<table>\n<thead><tr><th>{what}</th><th>Changes</th><th>Drift</th><th>Open</th></tr></thead>\n<tbody>"
    );
    for t in rows {
        let name = if t.name.is_empty() {
            "<span class=\"none\">(cluster-scoped)</span>".to_owned()
        } else {
            esc(&t.name)
        };
        let _ = writeln!(
            w,
            "<tr><td>{name}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            t.changes, t.drifts, t.open
        );
    }
    let _ = writeln!(w, "</tbody>\n</table>\n</section>");
}

fn actors(w: &mut String, id: &str, title: &str, rows: &[ActorTally]) {
    let _ = writeln!(w, "<section id=\"{id}\">\n<h2>{title}</h2>");
    if rows.is_empty() {
        let _ = writeln!(w, "<p class=\"none\">None.</p>\n</section>");
        return;
    }
    let _ = writeln!(
        w,
        "<table>\n<thead><tr><th>Actor</th><th>Source</th><th>Changes</th><th>Drift</th><th>Open</th></tr></thead>\n<tbody>"
    );
    for a in rows {
        let _ = writeln!(
            w,
            "<tr data-source=\"{}\"><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&a.source),
            esc(&a.actor),
            source_meaning(&a.source),
            a.changes,
            a.drifts,
            a.open
        );
    }
    let _ = writeln!(w, "</tbody>\n</table>\n</section>");
}

fn unresolved(w: &mut String, report: &Report) {
    let _ = writeln!(
        w,
        "<section id=\"unresolved\">\n<h2>Unresolved drift ({})</h2>",
        report.unresolved.len()
    );
    if report.unresolved.is_empty() {
        let _ = writeln!(
            w,
            "<p class=\"none\">None: every drift of the period was reverted, adopted or brought back to git.</p>"
        );
    }
    for d in &report.unresolved {
        let _ = writeln!(
            w,
            "<article class=\"drift\" data-key=\"{}\">\n<h3>{}</h3>",
            esc(&d.key),
            esc(&d.key)
        );
        let _ = writeln!(
            w,
            "<p><code>{}</code> since record #{} ({}), {} drift record(s), latest #{} ({}); by {} ({}); desired commit <code>{}</code></p>",
            esc(&d.verdict),
            d.opened_seq,
            human_time(d.opened_at),
            d.drift_records,
            d.latest_seq,
            human_time(d.latest_at),
            esc(&d.actor),
            source_meaning(&d.actor_source),
            esc(d.desired_commit.as_deref().unwrap_or("-")),
        );
        if d.diff.is_empty() {
            let what = if d.verdict == "drift_deleted" {
                "the object was deleted"
            } else {
                "no field recorded"
            };
            let _ = writeln!(w, "<p class=\"none\">{what}</p>\n</article>");
            continue;
        }
        let _ = writeln!(
            w,
            "<table class=\"diff\">\n<thead><tr><th>Path</th><th>Expected</th><th>Live</th></tr></thead>\n<tbody>"
        );
        for line in &d.diff {
            let _ = writeln!(
                w,
                "<tr><td class=\"v\">{}</td><td class=\"v\">{}</td><td class=\"v\">{}</td></tr>",
                esc(&line.path),
                esc(&line.expected),
                esc(&line.live)
            );
        }
        let _ = writeln!(w, "</tbody>\n</table>");
        if d.more_paths > 0 {
            let _ = writeln!(
                w,
                "<p class=\"none\">… and {} more path(s)</p>",
                d.more_paths
            );
        }
        let _ = writeln!(w, "</article>");
    }
    let _ = writeln!(w, "</section>");
}

fn exemptions(w: &mut String, report: &Report) {
    let _ = writeln!(
        w,
        "<section id=\"exemptions\">\n<h2>Exemptions granted ({})</h2>",
        report.exemptions.len()
    );
    if report.exemptions.is_empty() {
        let _ = writeln!(w, "<p class=\"none\">None.</p>\n</section>");
        return;
    }
    let _ = writeln!(
        w,
        "<table>\n<thead><tr><th>Record</th><th>Scope</th><th>Granted by</th><th>Reason</th><th>From</th>\
         <th>Until</th><th>Status</th><th>Changes allowed</th></tr></thead>\n<tbody>"
    );
    for e in &report.exemptions {
        let status = match (&e.revoked_by, &e.revoked_reason) {
            (Some(by), Some(why)) => format!("{} by {} ({})", esc(&e.status), esc(by), esc(why)),
            _ => esc(&e.status),
        };
        let _ = writeln!(
            w,
            "<tr><td>#{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{status}</td><td class=\"n\">{}</td></tr>",
            e.seq,
            esc(&e.scope),
            esc(&e.granted_by),
            esc(&e.reason),
            human_time(e.from),
            human_time(e.until),
            e.changes_allowed
        );
    }
    let _ = writeln!(w, "</tbody>\n</table>\n</section>");
}

fn commits(w: &mut String, report: &Report) {
    let _ = writeln!(
        w,
        "<section id=\"commits\">\n<h2>Git commits applied ({})</h2>",
        report.commits.len()
    );
    if report.commits.is_empty() {
        let _ = writeln!(w, "<p class=\"none\">None.</p>\n</section>");
        return;
    }
    let _ = writeln!(
        w,
        "<table>\n<thead><tr><th>Record</th><th>Applied</th><th>Source</th><th>Commit</th><th>Author</th>\
         <th>Summary</th><th>Tickets</th><th>Objects</th></tr></thead>\n<tbody>"
    );
    for c in &report.commits {
        let _ = writeln!(
            w,
            "<tr><td>#{}</td><td>{}</td><td>{}</td><td><code title=\"{}\">{}</code></td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
            c.seq,
            human_time(c.at),
            esc(&c.source),
            esc(&c.id),
            esc(c.id.get(..12).unwrap_or(&c.id)),
            esc(&c.author),
            esc(&c.summary),
            esc(&c.refs.join(", ")),
            c.objects_changed
        );
    }
    let _ = writeln!(w, "</tbody>\n</table>\n</section>");
}

/// Text as HTML shows it literally, in an element or an attribute.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
