//! Watchers and the audit webhook receiver.
//!
//! ```text
//! kube-apiserver ──watch──▶ churn filter ──▶ secret redaction ──▶ change events
//! kube-apiserver ──audit webhook──▶ audit records
//! ```
//!
//! Secret values become digests here, before any event leaves the watcher.
