//! Watchers and the audit webhook receiver.
//!
//! ```text
//! (apiVersion, kind) ──discovery (retried)──▶ (ApiResource, Scope) ──▶ watchers, the binary's executor
//! kube-apiserver ──watch──▶ churn filter ──▶ secret redaction ──▶ change events
//! kube-apiserver ──CRD watch──▶ CrdChanges ──▶ kinds resolved again, watchers woken, other parts told
//! kube-apiserver ──audit webhook (TLS + token or client cert)──▶ audit records
//! ```
//!
//! Secret values become digests here, before any event leaves the watcher.
//!
//! - [`discovery::resolve`] turns an `(apiVersion, kind)` pair into the API
//!   resource serving it and its scope, with an error that says what to do;
//!   the watcher resolves its kinds there, and so does the binary for the
//!   kinds it reverts. [`discovery::cluster_scoped_kinds`] lists the
//!   cluster-scoped `(group, kind)` pairs the apiserver serves.
//! - [`watch`] resolves kinds through discovery, runs one kube-rs watcher per
//!   (kind, namespace) and merges them into one stream of [`ChangeEvent`]s:
//!   `Resync` for every object of a (re)listing, `Deleted` for known objects a
//!   listing no longer has, then `Added`/`Modified`/`Deleted` with churn
//!   dropped and controller-owned objects skipped unless recorded. A kind
//!   that does not resolve yet (its CRD is missing) is retried with backoff
//!   and at once when a CRD changes; failing watchers back off the same way.
//!   [`WatchSpec::on_state`] is told when a watcher resolves, lists, syncs
//!   or fails ([`WatcherStatus`]), for metrics and readiness.
//! - [`watch_crds`] counts the cluster's CRD changes into a [`CrdChanges`]
//!   receiver; [`watch_with_crds`] shares one such watch between watches, and
//!   other parts can hold a receiver too.
//! - [`known::KnownFile`] keeps, for a process without a ledger, the objects
//!   it has published, to pass as [`WatchSpec::known`] after a restart.
//! - [`audit_router`] receives audit webhook batches and forwards the
//!   [`AuditRecord`]s of completed writes, refused ones included.
//! - [`serve_audit_webhook`] serves it over TLS only, authenticating every
//!   request by a bearer token or a client certificate, and counts refused
//!   clients, accepted batches and records in [`WebhookCounters`].
//! - The pure parts ([`DigestKey::redact_secret`], [`managed_fields_summary`],
//!   [`is_churn`], [`is_derived`], [`to_change_event`], [`parse_audit_batch`])
//!   do no I/O and are usable on their own.
//!
//! Logs name objects by key, never print their bodies.
//!
//! [`ChangeEvent`]: model::ChangeEvent
//! [`AuditRecord`]: model::AuditRecord

pub mod audit;
pub mod crds;
pub mod discovery;
pub mod event;
pub mod known;
pub mod managed;
pub mod retry;
pub mod server;
pub mod watcher;
pub mod webhook;

pub use audit::parse_audit_batch;
pub use crds::{CrdChanges, watch_crds};
pub use event::to_change_event;
pub use known::{KnownFile, KnownObjects};
pub use managed::{managed_fields_summary, strip_managed_fields};
pub use model::churn::{CHURN_ANNOTATIONS, content_digest, is_churn, is_derived};
pub use model::redact::{DigestKey, LAST_APPLIED_ANNOTATION};
pub use server::{
    RunningWebhook, TlsFiles, WebhookAuth, WebhookCounters, WebhookFile, WebhookServer,
    serve_audit_webhook,
};
pub use watcher::{
    KnownObject, StateHook, WatchSpec, WatcherState, WatcherStatus, watch, watch_with_crds,
};
pub use webhook::audit_router;
