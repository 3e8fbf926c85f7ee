//! Alerts: routing verdicts to chat sinks through a durable outbox.
//!
//! ```text
//! verdict ──route──▶ outbox (ledger) ──deliver──▶ Slack / Teams / Mattermost / webhook
//! ```
//!
//! [`config`] is the `alerts:` section; [`route`] gives a verdict its
//! severity and its sinks; [`format`](mod@format) turns a [`Message`] into the JSON each
//! service documents; [`sign`] signs the generic webhook's body;
//! [`deliver`] posts a message and says how long to wait before trying
//! again. The outbox itself is ledger records, and the binary's notifier
//! drives all of this: no I/O here but the HTTP post.

pub mod config;
pub mod deliver;
pub mod format;
pub mod route;
pub mod sign;

pub use config::{Alerts, SecretRef, SinkConfig};

use model::{Alert, AlertAction};
use serde::{Deserialize, Serialize};

/// The services alerts are sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// Slack incoming webhook, Block Kit.
    Slack,
    /// Microsoft Teams through a Workflows webhook, Adaptive Card.
    Teams,
    /// Mattermost incoming webhook.
    Mattermost,
    /// Any HTTPS endpoint: Driftwarden's JSON, signed with HMAC-SHA256.
    Webhook,
}

/// One message to one sink.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A new drift, its action the latest known when it is sent.
    Alert(Box<Alert>),
    /// What became of a drift alerted earlier (incoming webhooks cannot edit
    /// a message they sent, so this follows it).
    FollowUp {
        /// Ledger sequence number of the drift.
        drift_seq: u64,
        /// The object, `cluster/group/Kind/namespace/name`.
        object: String,
        /// What happened.
        action: AlertAction,
        /// The object's history, when known.
        link: Option<String>,
    },
    /// Many drifts at once (a mass change, the circuit breaker): one message.
    Digest(Vec<Alert>),
}
