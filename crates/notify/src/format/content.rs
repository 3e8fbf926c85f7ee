//! What every format says about an alert, before any service's markup:
//! the pieces are raw text, each renderer escapes and clips them its way.

use std::collections::BTreeSet;

use model::{Alert, AlertLine, Severity};

use super::text::{clip, drifts};

/// Shown for a field that is not set on one side of a change.
pub(crate) const UNSET: &str = "(unset)";

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
pub(crate) mod fixtures {
    //! Alerts for the renderers' tests.

    use chrono::{TimeZone, Utc};
    use model::{Alert, AlertAction, AlertLine, Commit, Severity};

    /// Strings that try to escape a message's markup.
    pub(crate) const HOSTILE: [&str; 6] = [
        "<!channel>",
        "<https://evil.example|click>",
        "*bold*",
        "<script>alert(1)</script>",
        "[click](https://evil.example)",
        "@channel @all `code` _i_ ~s~ &amp;",
    ];

    /// An ordinary drift of a Deployment's replicas.
    pub(crate) fn alert(seq: u64) -> Alert {
        Alert {
            drift_seq: seq,
            observed_at: Utc
                .with_ymd_and_hms(2026, 5, 4, 12, 30, 0)
                .single()
                .unwrap_or_default(),
            severity: Severity::High,
            verdict: "drift_out_of_band".to_owned(),
            summary: "drift(out_of_band: /spec/replicas)".to_owned(),
            object: format!("prod/apps/Deployment/team-{}/web", seq % 7),
            kind: "Deployment".to_owned(),
            namespace: format!("team-{}", seq % 7),
            actor: "alice@example.com".to_owned(),
            actor_source: "audit".to_owned(),
            diff: vec![AlertLine {
                path: "/spec/replicas".to_owned(),
                expected: Some("3".to_owned()),
                live: Some("5".to_owned()),
            }],
            diff_omitted: 0,
            expected: Some(Commit {
                id: "0123456789abcdef0123456789abcdef01234567".to_owned(),
                time: Utc
                    .with_ymd_and_hms(2026, 5, 1, 9, 0, 0)
                    .single()
                    .unwrap_or_default(),
                author: "Bob <bob@example.com>".to_owned(),
                summary: "Scale web to 3 (JIRA-123)".to_owned(),
                refs: vec!["JIRA-123".to_owned()],
            }),
            action: AlertAction::Reverted { after_ms: 230 },
            link: Some(format!("https://dw.example/objects/{seq}/history")),
        }
    }

    /// An alert whose every text field holds `text`, claimed by managed
    /// fields, with `lines` changed fields.
    pub(crate) fn filled_with(text: &str, lines: usize) -> Alert {
        let mut alert = alert(7);
        alert.summary = text.to_owned();
        alert.object = text.to_owned();
        alert.kind = text.to_owned();
        alert.namespace = text.to_owned();
        alert.actor = text.to_owned();
        alert.actor_source = "managed_fields".to_owned();
        alert.diff = (0..lines)
            .map(|_| AlertLine {
                path: text.to_owned(),
                expected: Some(text.to_owned()),
                live: Some(text.to_owned()),
            })
            .collect();
        alert.diff_omitted = 3;
        if let Some(commit) = alert.expected.as_mut() {
            commit.author = text.to_owned();
            commit.summary = text.to_owned();
            commit.refs = vec![text.to_owned(); 20];
        }
        alert.action = AlertAction::Held {
            reason: text.to_owned(),
        };
        alert.link = Some(format!("https://dw.example/objects/{text}"));
        alert
    }

    /// Each hostile string in every field of an alert, one alert per string.
    pub(crate) fn hostile() -> Vec<Alert> {
        HOSTILE.iter().map(|text| filled_with(text, 2)).collect()
    }

    /// `n` ordinary alerts across seven namespaces.
    pub(crate) fn many(n: u64) -> Vec<Alert> {
        (0..n).map(alert).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures;
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
