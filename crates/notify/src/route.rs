//! Severity and routing: which alerts go to which sinks.
//!
//! Only what Driftwarden knows for itself is matched on: the verdict, the
//! object's key, the labels git declares for it, and identities from audit
//! events. Labels set by hand in the cluster and field-manager names are
//! claims anyone with `edit` can make, so they never route an alert away.

use std::collections::BTreeMap;

use model::Severity;

use crate::config::{Alerts, Criteria};

/// Kinds whose drift is critical by default: credentials, access control
/// and admission.
pub const SENSITIVE_KINDS: [&str; 7] = [
    "Secret",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// A verdict as routing sees it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The verdict's stable name (`drift_out_of_band`, `unmanaged` …).
    pub verdict: &'a str,
    /// The object's namespace (empty when cluster-scoped).
    pub namespace: &'a str,
    /// The object's kind.
    pub kind: &'a str,
    /// Labels git declares for the object, if git declares it.
    pub git_labels: Option<&'a BTreeMap<String, String>>,
    /// The audit identity behind the change, if one is known.
    pub identity: Option<&'a str>,
}

/// The default severity of a verdict, `None` for verdicts that never
/// alert on their own (authorized, in sync, derived, adopted: adoption
/// updates the alert of the drift it adopts).
pub fn default_severity(verdict: &str, kind: &str) -> Option<Severity> {
    let sensitive = SENSITIVE_KINDS.contains(&kind);
    match verdict {
        v if v.starts_with("drift") || v == "unmanaged" && sensitive => Some(if sensitive {
            Severity::Critical
        } else {
            Severity::High
        }),
        "unmanaged" => Some(Severity::Medium),
        "allowed" => Some(Severity::Low),
        _ => None,
    }
}

impl Alerts {
    /// The severity of `subject`: the first severity rule that matches it,
    /// else the default table.
    pub fn severity(&self, subject: &Subject<'_>) -> Option<Severity> {
        self.severities
            .iter()
            .find(|rule| rule.matches.matches(subject))
            .map(|rule| rule.severity)
            .or_else(|| default_severity(subject.verdict, subject.kind))
    }

    /// The sinks `subject` goes to at `severity`, in config order, each once.
    pub fn route(&self, subject: &Subject<'_>, severity: Severity) -> Vec<String> {
        let mut sinks: Vec<String> = Vec::new();
        for route in &self.routes {
            let least = route.matches.min_severity.unwrap_or(Severity::Low);
            if severity >= least && route.matches.on.matches(subject) {
                for sink in &route.sinks {
                    if !sinks.contains(sink) {
                        sinks.push(sink.clone());
                    }
                }
            }
        }
        sinks
    }
}

impl Criteria {
    /// Whether every criterion given matches `subject`.
    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        let verdict = self.verdicts.is_empty()
            || self.verdicts.iter().any(|v| {
                v == subject.verdict || (v == "drift" && subject.verdict.starts_with("drift_"))
            });
        let namespace = self.namespaces.is_empty()
            || self.namespaces.iter().any(|p| glob(p, subject.namespace));
        let kind = self.kinds.is_empty() || self.kinds.iter().any(|k| k == subject.kind);
        let labels = self.labels.is_empty()
            || subject.git_labels.is_some_and(|labels| {
                self.labels
                    .iter()
                    .all(|(key, value)| labels.get(key) == Some(value))
            });
        let actor = self.actors.is_empty()
            || subject
                .identity
                .is_some_and(|who| self.actors.iter().any(|p| glob(p, who)));
        verdict && namespace && kind && labels && actor
    }
}

/// `pattern` equals `text`, or ends in `*` and prefixes it.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => text.starts_with(prefix),
        None => pattern == text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alerts(yaml: &str) -> Alerts {
        serde_json::from_value(serde_json::from_str::<serde_json::Value>(yaml).expect("json"))
            .expect("alerts config")
    }

    fn subject<'a>(verdict: &'a str, kind: &'a str) -> Subject<'a> {
        Subject {
            verdict,
            namespace: "team-a",
            kind,
            git_labels: None,
            identity: None,
        }
    }

    #[test]
    fn the_default_table_puts_credentials_and_access_first() {
        assert_eq!(
            default_severity("drift_out_of_band", "Secret"),
            Some(Severity::Critical)
        );
        assert_eq!(
            default_severity("drift_modified", "ClusterRoleBinding"),
            Some(Severity::Critical)
        );
        assert_eq!(
            default_severity("unmanaged", "Role"),
            Some(Severity::Critical)
        );
        assert_eq!(
            default_severity("drift_deleted", "ConfigMap"),
            Some(Severity::High)
        );
        assert_eq!(
            default_severity("unmanaged", "ConfigMap"),
            Some(Severity::Medium)
        );
        assert_eq!(default_severity("allowed", "Secret"), Some(Severity::Low));
        for quiet in ["in_sync", "authorized", "derived", "adopted"] {
            assert_eq!(default_severity(quiet, "Secret"), None, "{quiet}");
        }
    }

    #[test]
    fn routes_add_up_and_respect_severity() {
        let config = alerts(
            r#"{"sinks": [], "routes": [
                {"match": {"min_severity": "critical"}, "sinks": ["pager"]},
                {"match": {"verdicts": ["drift"], "namespaces": ["team-*"]}, "sinks": ["chat", "pager"]},
                {"match": {"kinds": ["ConfigMap"]}, "sinks": ["chat"]}
            ]}"#,
        );
        let secret = subject("drift_out_of_band", "Secret");
        let severity = config.severity(&secret).expect("alerts");
        assert_eq!(config.route(&secret, severity), ["pager", "chat"]);
        let unmanaged = subject("unmanaged", "Deployment");
        let severity = config.severity(&unmanaged).expect("alerts");
        assert!(config.route(&unmanaged, severity).is_empty());
        assert_eq!(config.severity(&subject("in_sync", "ConfigMap")), None);
    }

    #[test]
    fn labels_match_only_what_git_declares_and_actors_only_identities() {
        let config = alerts(
            r#"{"sinks": [], "routes": [
                {"match": {"labels": {"team": "payments"}}, "sinks": ["payments"]},
                {"match": {"actors": ["system:serviceaccount:ci:*"]}, "sinks": ["ci"]}
            ]}"#,
        );
        let git: BTreeMap<String, String> = [("team".into(), "payments".into())].into();
        let mut declared = subject("drift_modified", "Deployment");
        declared.git_labels = Some(&git);
        assert_eq!(config.route(&declared, Severity::High), ["payments"]);
        // Not declared in git: whatever labels the live object carries,
        // there is nothing to match.
        let stray = subject("unmanaged", "Deployment");
        assert!(config.route(&stray, Severity::Medium).is_empty());
        let mut by_ci = subject("drift_modified", "Deployment");
        by_ci.identity = Some("system:serviceaccount:ci:deployer");
        assert_eq!(config.route(&by_ci, Severity::High), ["ci"]);
    }

    #[test]
    fn severity_rules_replace_the_table_in_order() {
        let config = alerts(
            r#"{"sinks": [], "routes": [{"sinks": ["chat"]}], "severities": [
                {"match": {"namespaces": ["kube-system"]}, "severity": "critical"},
                {"match": {"kinds": ["ConfigMap"]}, "severity": "info"}
            ]}"#,
        );
        let mut system = subject("drift_modified", "ConfigMap");
        system.namespace = "kube-system";
        assert_eq!(config.severity(&system), Some(Severity::Critical));
        let quiet = subject("drift_modified", "ConfigMap");
        assert_eq!(config.severity(&quiet), Some(Severity::Info));
        assert!(config.route(&quiet, Severity::Info).is_empty(), "below low");
    }
}
