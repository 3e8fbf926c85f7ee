//! Alerts: routing verdicts to chat sinks through a durable outbox.
//!
//! ```text
//! verdict ──route──▶ outbox (ledger) ──deliver──▶ Slack / Teams / Mattermost / webhook
//! ```
