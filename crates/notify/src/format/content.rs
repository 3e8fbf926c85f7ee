//! What every format says about an alert, before any service's markup:
//! the pieces are raw text, each renderer escapes and clips them its way.
//! The lines the chat formats share (who, the commit, a changed field, a
//! digest's drift, a follow-up) take that way as `show(raw, max)`, so
//! their wording is written once.

use std::collections::BTreeSet;

use model::{Alert, AlertAction, AlertLine, Commit, Severity};

use super::text::{clip, drifts};

/// Shown for a field that is not set on one side of a change.
pub(crate) const UNSET: &str = "(unset)";

/// Refs (`JIRA-123`) shown of a commit.
const REFS: usize = 5;
/// Longest ref shown.
const MAX_REF: usize = 60;
/// Longest short commit id shown.
const MAX_SHORT_ID: usize = 40;

/// Namespaces a digest's headline names before it says "…".
const HEADLINE_NAMESPACES: usize = 3;
/// Longest namespace a headline shows (Kubernetes allows 63 characters).
const MAX_NAMESPACE: usize = 63;

/// A severity as a headline shows it: a coloured mark and the name in
/// capitals.
pub(crate) fn severity_label(severity: Severity) -> String {
    let mark = match severity {
        Severity::Critical => "🔴",
        Severity::High => "🟠",
        Severity::Medium => "🟡",
        Severity::Low => "🔵",
        Severity::Info => "⚪",
    };
    format!("{mark} {}", severity.name().to_uppercase())
}

/// The verdict's stable name, reduced to `[A-Za-z0-9_-]` so it can go
/// unescaped where a service reads no markup.
pub(crate) fn verdict_name(alert: &Alert) -> String {
    let name: String = alert
        .verdict
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        .take(64)
        .collect();
    if name.is_empty() {
        "drift".to_owned()
    } else {
        name
    }
}

/// The object for a headline: `Kind namespace/name` (or `Kind name` when
/// cluster-scoped), shorter than the full `cluster/group/Kind/ns/name`.
pub(crate) fn short_object(alert: &Alert) -> String {
    let name = alert.object.rsplit('/').next().unwrap_or(&alert.object);
    match (alert.kind.is_empty(), alert.namespace.is_empty()) {
        (false, false) => format!("{} {}/{}", alert.kind, alert.namespace, name),
        (false, true) => format!("{} {}", alert.kind, name),
        (true, false) => format!("{}/{}", alert.namespace, name),
        (true, true) => name.to_owned(),
    }
}

/// Who made the change, or "unknown".
pub(crate) fn actor(alert: &Alert) -> &str {
    if alert.actor.trim().is_empty() {
        "unknown"
    } else {
        &alert.actor
    }
}

/// How far the actor can be trusted, from where the answer comes from.
pub(crate) fn actor_note(alert: &Alert) -> &'static str {
    match alert.actor_source.as_str() {
        "audit" => "(audit log)",
        "managed_fields" => "(unverified claim)",
        _ => "(source unknown)",
    }
}

/// Who made the change, shown by `show` within `max`, and how far that
/// can be trusted: "alice@example.com (audit log)".
pub(crate) fn who(alert: &Alert, show: impl Fn(&str, usize) -> String, max: usize) -> String {
    format!("{} {}", show(actor(alert), max), actor_note(alert))
}

/// When the change was seen, in UTC to the second.
pub(crate) fn observed(alert: &Alert) -> String {
    alert
        .observed_at
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

/// The commit git expects: "0123456789ab by Bob: Scale web to 3", its
/// author within `author` units and its summary, after `separator`, within
/// `summary`, every piece shown by `show`.
pub(crate) fn commit_line(
    commit: &Commit,
    separator: &str,
    show: impl Fn(&str, usize) -> String,
    author: usize,
    summary: usize,
) -> String {
    format!(
        "{} by {}{separator}{}",
        show(commit.short(), MAX_SHORT_ID),
        show(&commit.author, author),
        show(&commit.summary, summary)
    )
}

/// The first refs of `commit` shown by `show`, joined by commas; `None`
/// when it has none.
pub(crate) fn refs(commit: &Commit, show: impl Fn(&str, usize) -> String) -> Option<String> {
    let refs: Vec<String> = commit
        .refs
        .iter()
        .take(REFS)
        .map(|r| show(r, MAX_REF))
        .collect();
    (!refs.is_empty()).then(|| refs.join(", "))
}

/// A changed field's two sides, [`UNSET`] for a missing one.
pub(crate) fn sides(line: &AlertLine) -> (&str, &str) {
    (
        line.expected.as_deref().unwrap_or(UNSET),
        line.live.as_deref().unwrap_or(UNSET),
    )
}

/// The changed fields an alert shows (at most [`Alert::MAX_LINES`]) and how
/// many more there are.
pub(crate) fn diff(alert: &Alert) -> (&[AlertLine], usize) {
    let shown = alert.diff.len().min(Alert::MAX_LINES);
    let omitted = alert.diff_omitted + (alert.diff.len() - shown);
    (&alert.diff[..shown], omitted)
}

/// The changed fields an alert shows, one line each (`{bullet}path:
/// expected → live`, every piece shown by `show` within `max` units), and
/// how many more there are.
pub(crate) fn diff_lines(
    alert: &Alert,
    bullet: &str,
    show: impl Fn(&str, usize) -> String,
    max: usize,
) -> (Vec<String>, usize) {
    let (lines, omitted) = diff(alert);
    let lines = lines
        .iter()
        .map(|line| {
            let (expected, live) = sides(line);
            format!(
                "{bullet}{}: {} → {}",
                show(&line.path, max),
                show(expected, max),
                show(live, max)
            )
        })
        .collect();
    (lines, omitted)
}

/// One drift of a digest: "🟠 HIGH object · summary → action", the object,
/// summary and action shown by `show` within `max` units each.
pub(crate) fn digest_line(
    alert: &Alert,
    show: impl Fn(&str, usize) -> String,
    [object, summary, action]: [usize; 3],
) -> String {
    format!(
        "{} {} · {} → {}",
        severity_label(alert.severity),
        show(&alert.object, object),
        show(&alert.summary, summary),
        show(&alert.action.to_string(), action)
    )
}

/// A follow-up's line: "object: reverted in 230 ms", both shown by `show`
/// within `max` units.
pub(crate) fn follow_up_line(
    object: &str,
    action: &AlertAction,
    show: impl Fn(&str, usize) -> String,
    max: usize,
) -> String {
    format!("{}: {}", show(object, max), show(&action.to_string(), max))
}

/// A message's footer: "Driftwarden · drift #1234 · id dw-1234-slack", the
/// drift left out when the message is about several, `id` as the service
/// shows it (escaped and clipped).
pub(crate) fn footer(drift: Option<u64>, id: &str) -> String {
    let about = drift
        .map(|seq| format!(" · drift #{seq}"))
        .unwrap_or_default();
    format!("Driftwarden{about} · id {id}")
}

/// A digest's summary: how many drifts, where, how urgent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DigestSummary {
    /// Drifts in the digest.
    pub(crate) count: usize,
    /// The first namespaces in name order, "(cluster)" for cluster-scoped
    /// objects, raw but clipped.
    pub(crate) namespaces: Vec<String>,
    /// Whether there are more namespaces than `namespaces` names.
    pub(crate) more_namespaces: bool,
    /// Drifts per severity, most urgent first, only severities present.
    pub(crate) severities: Vec<(Severity, usize)>,
}

impl DigestSummary {
    /// Sums up `alerts`.
    pub(crate) fn of(alerts: &[Alert]) -> Self {
        let all: BTreeSet<&str> = alerts
            .iter()
            .map(|alert| {
                if alert.namespace.is_empty() {
                    "(cluster)"
                } else {
                    alert.namespace.as_str()
                }
            })
            .collect();
        let severities = Severity::ALL
            .iter()
            .rev()
            .map(|&severity| {
                let n = alerts.iter().filter(|a| a.severity == severity).count();
                (severity, n)
            })
            .filter(|&(_, n)| n > 0)
            .collect();
        Self {
            count: alerts.len(),
            namespaces: all
                .iter()
                .take(HEADLINE_NAMESPACES)
                .map(|ns| clip(ns, MAX_NAMESPACE))
                .collect(),
            more_namespaces: all.len() > HEADLINE_NAMESPACES,
            severities,
        }
    }

    /// "50 drifts in team-a, team-b, team-c …", the namespaces as the
    /// service shows them (`namespaces`, escaped from [`Self::namespaces`]).
    pub(crate) fn headline(&self, namespaces: &[String]) -> String {
        let mut headline = drifts(self.count);
        if !namespaces.is_empty() {
            headline.push_str(" in ");
            headline.push_str(&namespaces.join(", "));
        }
        if self.more_namespaces {
            headline.push_str(" …");
        }
        headline
    }

    /// "2 critical · 48 high".
    pub(crate) fn severity_line(&self) -> String {
        let parts: Vec<String> = self
            .severities
            .iter()
            .map(|(severity, n)| format!("{n} {severity}"))
            .collect();
        if parts.is_empty() {
            "nothing to report".to_owned()
        } else {
            parts.join(" · ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    #[test]
    fn digest_summary_names_three_namespaces_and_counts_severities() {
        let mut alerts = fixtures::many(50);
        alerts[0].severity = Severity::Critical;
        let summary = DigestSummary::of(&alerts);
        assert_eq!(summary.count, 50);
        assert_eq!(summary.namespaces, ["team-0", "team-1", "team-2"]);
        assert!(summary.more_namespaces);
        assert_eq!(summary.severity_line(), "1 critical · 49 high");
    }

    #[test]
    fn managed_fields_actor_is_an_unverified_claim() {
        let alert = fixtures::filled_with("x", 1);
        assert_eq!(actor_note(&alert), "(unverified claim)");
    }

    #[test]
    fn short_object_is_kind_namespace_and_name() {
        assert_eq!(short_object(&fixtures::alert(1)), "Deployment team-1/web");
    }
}
