//! Alerts: what people are told about a drift, as kept in the ledger's
//! outbox before any sink sees it.
//!
//! ```text
//! drift record ──route──▶ Alert record (opened, sinks) ──deliver──▶ Delivery record
//! revert / adoption ─────▶ Alert record (updated)      ──deliver──▶ Delivery record
//! ```
//!
//! An alert is rendered once, from the ledger, when it is routed: what it
//! says is in the chain, so what reached a chat room can be proven later.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Commit;

/// How urgent an alert is. Ordered: `Info < Low < Medium < High < Critical`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a line in a report.
    #[default]
    Info,
    /// Allowed departures (exemptions, policy).
    Low,
    /// Unmanaged objects.
    Medium,
    /// Drift.
    High,
    /// Drift of credentials and access control (Secrets, RBAC, admission).
    Critical,
}

impl Severity {
    /// Every severity, least urgent first.
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// Its name, as in the config.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One changed field, as an alert shows it: values shortened, Secret
/// values never shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertLine {
    /// The field, e.g. `spec.replicas`.
    pub path: String,
    /// What git expects (or the last known-good value), shortened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// What the cluster has now, shortened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<String>,
}

/// What the enforcer did, or will do, about a drift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AlertAction {
    /// Audit mode: recorded and alerted, nothing changed.
    AuditOnly,
    /// Dry-run mode: enforce would revert it.
    WouldRevert,
    /// Enforce mode: a revert is planned.
    WillRevert,
    /// Put back, this long after the change was observed.
    Reverted {
        /// Milliseconds from the change being observed to the revert's write.
        after_ms: u64,
    },
    /// Not reverted on purpose (grace, flap limit, circuit breaker, stale git).
    Held {
        /// Why.
        reason: String,
    },
    /// The revert failed.
    Failed {
        /// The error.
        error: String,
    },
    /// A break-glass exemption allows it until then.
    Exempt {
        /// When the exemption ends.
        until: DateTime<Utc>,
    },
    /// A later commit declared exactly the drifted state.
    Adopted {
        /// The adopting commit.
        commit: String,
    },
}

impl AlertAction {
    /// Whether the drift is settled: reverted or adopted.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            AlertAction::Reverted { .. } | AlertAction::Adopted { .. }
        )
    }
}

impl fmt::Display for AlertAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlertAction::AuditOnly => f.write_str("audit only: nothing changed"),
            AlertAction::WouldRevert => f.write_str("dry run: would revert"),
            AlertAction::WillRevert => f.write_str("will revert"),
            AlertAction::Reverted { after_ms } => write!(f, "reverted in {after_ms} ms"),
            AlertAction::Held { reason } => write!(f, "held: {reason}"),
            AlertAction::Failed { error } => write!(f, "revert failed: {error}"),
            AlertAction::Exempt { until } => {
                write!(f, "exempt until {}", until.format("%Y-%m-%d %H:%M UTC"))
            }
            AlertAction::Adopted { commit } => {
                write!(f, "adopted by {}", commit.get(..12).unwrap_or(commit))
            }
        }
    }
}

/// Everything an alert about one drift says, independent of the sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Ledger sequence number of the drift record.
    pub drift_seq: u64,
    /// When the change was observed.
    pub observed_at: DateTime<Utc>,
    /// How urgent.
    pub severity: Severity,
    /// The verdict's stable name (`drift_out_of_band`, `unmanaged` …).
    pub verdict: String,
    /// The verdict for people (`drift(out_of_band: /spec/replicas)`).
    pub summary: String,
    /// The object, `cluster/group/Kind/namespace/name`.
    pub object: String,
    /// Its kind.
    pub kind: String,
    /// Its namespace, empty when cluster-scoped.
    pub namespace: String,
    /// Who made the change, for people.
    pub actor: String,
    /// Where that answer comes from: `audit` (an identity),
    /// `managed_fields` (a claim) or `unknown`.
    pub actor_source: String,
    /// The changed fields, at most [`Alert::MAX_LINES`].
    pub diff: Vec<AlertLine>,
    /// Changed fields left out of `diff`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub diff_omitted: usize,
    /// The commit whose state git expects, when git declares the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Commit>,
    /// What the enforcer did or will do.
    pub action: AlertAction,
    /// The object's history (API page), when the API's address is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl Alert {
    /// Changed fields an alert lists.
    pub const MAX_LINES: usize = 10;
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What an outbox entry tells its sinks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AlertEvent {
    /// A new drift.
    Opened(Box<Alert>),
    /// What became of a drift alerted earlier.
    Updated {
        /// The object, as in its alert.
        object: String,
        /// What happened.
        action: AlertAction,
        /// The object's history, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        link: Option<String>,
    },
}

/// An outbox entry: written before any sink is called.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// The drift it is about (its ledger sequence number).
    pub drift_seq: u64,
    /// The sinks it goes to, by name.
    pub sinks: Vec<String>,
    /// Every record up to this one has been routed: where routing resumes
    /// after a restart.
    pub routed_through: u64,
    /// What it says.
    pub event: AlertEvent,
}

/// Outbox entries delivered to one sink in one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The sink.
    pub sink: String,
    /// Ledger sequence numbers of the alert records the message carried.
    pub alerts: Vec<u64>,
    /// The message's idempotency key, as sent.
    pub id: String,
    /// Attempts it took (1 when the first succeeded).
    pub attempts: u32,
    /// Whether it was a digest of several drifts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub digest: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbox_entry_round_trips_through_json() {
        let record = AlertRecord {
            drift_seq: 7,
            sinks: vec!["chat".into()],
            routed_through: 9,
            event: AlertEvent::Updated {
                object: "prod/core/ConfigMap/a/b".into(),
                action: AlertAction::Reverted { after_ms: 120 },
                link: None,
            },
        };
        let text = serde_json::to_string(&record).expect("serializes");
        let back: AlertRecord = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, record);
    }
}
