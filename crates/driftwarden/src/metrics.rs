//! Prometheus metrics, all named `driftwarden_*`, with bounded labels only.
//!
//! ```text
//! correlator ──── changes observed, verdicts, detect latency, bus lag and errors ─┐
//! enforcer ────── reverts, revert latency, flap stops, breaker trips and pause ───┤
//! git fetches ─── fetch errors, last success per source ──────────────────────────┼─▶ Metrics ──encode()──▶ GET /metrics
//! watchers ────── state and errors per kind ──────────────────────────────────────┤     (ledger records, size, open
//! API ─────────── requests by route and status, auth failures ────────────────────┘      drifts and git age read at scrape)
//! ```
//!
//! Every label value comes from a small fixed set (verdict, action, result,
//! watcher state, HTTP method and status), from the config (git source
//! names; namespaces named in `watch.namespaces` or in a policy's
//! `match.namespaces`, every other namespace as `_other`, cluster-scoped
//! objects as `_cluster`), from the router (route templates, never a raw
//! path), or from a capped set (kinds: the first [`MAX_KINDS`] seen, then
//! `_other`). Never an object name, a user or an error message: those go to
//! the logs and the ledger.
//!
//! Recording is a few atomic operations, so it runs whether or not an API
//! serves the text; reading the ledger (records, size, open drifts) waits
//! for a scrape.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use chrono::{DateTime, Utc};
use ledger::Ledger;
use model::{ChangeEvent, ChangeKind, Enforcement, Outcome, RecordBody, RevertAction};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use watch::{WatcherState, WatcherStatus};

use crate::config::Config;

/// The content type of [`Metrics::encode`]'s text (OpenMetrics).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Most distinct kinds named in labels; later ones count as [`OTHER`].
pub const MAX_KINDS: usize = 200;

/// The label value of everything past a bound.
pub const OTHER: &str = "_other";

/// The `namespace` label of cluster-scoped objects (no namespace name has
/// an underscore, so neither this nor [`OTHER`] names a real namespace).
pub const CLUSTER: &str = "_cluster";

/// The `route` label of a request no route matched.
pub const UNMATCHED: &str = "_unmatched";

/// Every metric family exported, as it appears in the text (histograms
/// add `_bucket`, `_sum` and `_count`).
pub const NAMES: &[&str] = &[
    "driftwarden_changes_observed_total",
    "driftwarden_verdicts_total",
    "driftwarden_detect_latency_seconds",
    "driftwarden_reverts_total",
    "driftwarden_revert_latency_seconds",
    "driftwarden_flap_stops_total",
    "driftwarden_breaker_trips_total",
    "driftwarden_enforcement_paused",
    "driftwarden_bus_lag_seconds",
    "driftwarden_bus_errors_total",
    "driftwarden_ledger_records_total",
    "driftwarden_ledger_size_bytes",
    "driftwarden_open_drifts",
    "driftwarden_ledger_last_verify_timestamp_seconds",
    "driftwarden_ledger_last_verify_ok",
    "driftwarden_git_fetch_age_seconds",
    "driftwarden_git_fetch_errors_total",
    "driftwarden_watcher_state",
    "driftwarden_watcher_errors_total",
    "driftwarden_api_requests_total",
    "driftwarden_api_auth_failures_total",
    "driftwarden_alerts_queued_total",
    "driftwarden_alert_deliveries_total",
    "driftwarden_alerts_pending",
    "driftwarden_verdicts_published_total",
];

/// The values of the `state` label of `driftwarden_watcher_state`.
const STATES: [&str; 4] = ["listing", "synced", "failing", "unresolved"];

/// The values of the `action` label of `driftwarden_reverts_total`.
const ACTIONS: [&str; 4] = ["apply", "patch", "create", "delete"];

/// The values of the `result` label of `driftwarden_reverts_total`.
const RESULTS: [&str; 5] = ["would_revert", "reverted", "superseded", "held", "failed"];

/// The values of the `operation` label of `driftwarden_bus_errors_total`.
const BUS_OPERATIONS: [&str; 4] = ["receive", "commit", "dead_letter", "publish"];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ObservedLabels {
    kind: String,
    change: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
    namespace: String,
    kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RevertLabels {
    action: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WriterLabels {
    writer: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeliveryLabels {
    sink: String,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    kind: String,
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// What the metrics keep of a judged record (a change or an amendment),
/// taken before the record goes to the ledger: its verdict, namespace,
/// kind, and for a change (not a resync) when it was observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    verdict: &'static str,
    namespace: String,
    kind: String,
    observed_at: Option<DateTime<Utc>>,
}

impl Judged {
    /// What the metrics keep of `body`; `None` for a record that is no
    /// judgement.
    pub fn of(body: &RecordBody) -> Option<Judged> {
        let (key, verdict, observed_at) = match body {
            RecordBody::Change { event, judgement } => (
                &event.key,
                &judgement.verdict,
                (event.kind != ChangeKind::Resync).then_some(event.observed_at),
            ),
            RecordBody::Amendment(amendment) => {
                (&amendment.key, &amendment.judgement.verdict, None)
            }
            _ => return None,
        };
        Some(Judged {
            verdict: verdict.name(),
            namespace: key.namespace.clone(),
            kind: key.kind.clone(),
            observed_at,
        })
    }
}

/// Every metric of a running Driftwarden; clones share them.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("namespaces", &self.0.namespaces)
            .finish_non_exhaustive()
    }
}

struct Inner {
    registry: Registry,
    /// Namespaces named in labels; the rest are [`OTHER`].
    namespaces: BTreeSet<String>,
    kinds: Capped,
    changes_observed: Family<ObservedLabels, Counter>,
    verdicts: Family<VerdictLabels, Counter>,
    detect_latency: Histogram,
    reverts: Family<RevertLabels, Counter>,
    revert_latency: Histogram,
    flap_stops: Family<WriterLabels, Counter>,
    breaker_trips: Counter,
    enforcement_paused: Gauge,
    bus_lag: Gauge<f64, AtomicU64>,
    bus_errors: Family<OperationLabels, Counter>,
    ledger_records: Counter,
    ledger_size: Gauge,
    open_drifts: Family<NamespaceLabels, Gauge>,
    last_verify: Gauge<f64, AtomicU64>,
    last_verify_ok: Gauge,
    git_fetch_age: Family<SourceLabels, Gauge<f64, AtomicU64>>,
    git_fetch_errors: Family<SourceLabels, Counter>,
    watcher_state: Family<StateLabels, Gauge>,
    watcher_errors: Family<KindLabels, Counter>,
    api_requests: Family<RequestLabels, Counter>,
    api_auth_failures: Family<ReasonLabels, Counter>,
    alerts_queued: Family<SinkLabels, Counter>,
    alert_deliveries: Family<DeliveryLabels, Counter>,
    alerts_pending: Family<SinkLabels, Gauge>,
    verdicts_published: Counter,
    /// When each git source last fetched.
    git_fetched: Mutex<BTreeMap<String, Instant>>,
    /// What the watchers of each kind are doing.
    watchers: Mutex<WatcherStates>,
    /// The ledger read at scrape, and its directory.
    ledger: Mutex<Option<(Arc<Ledger>, PathBuf)>>,
}

impl Default for Metrics {
    /// Metrics naming no namespace (every one is [`OTHER`]).
    fn default() -> Self {
        Self::with_namespaces(BTreeSet::new())
    }
}

impl Metrics {
    /// The metrics of `config`'s process: namespaces named in
    /// `watch.namespaces` or in a policy are named in labels.
    pub fn new(config: &Config) -> Self {
        let mut namespaces: BTreeSet<String> = config.watch.namespaces.iter().cloned().collect();
        for policy in &config.policies {
            namespaces.extend(policy.matches.namespaces.iter().cloned());
        }
        let metrics = Self::with_namespaces(namespaces);
        for source in &config.sources {
            let labels = SourceLabels {
                source: source.name.clone(),
            };
            let _ = metrics.0.git_fetch_errors.get_or_create(&labels);
        }
        metrics
    }

    /// Metrics naming `namespaces` in labels.
    pub fn with_namespaces(namespaces: BTreeSet<String>) -> Self {
        let mut registry = Registry::with_prefix("driftwarden");
        let inner = Inner {
            registry: Registry::default(),
            namespaces,
            kinds: Capped::new(MAX_KINDS),
            changes_observed: Family::default(),
            verdicts: Family::default(),
            // 5ms to about 3 minutes.
            detect_latency: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
            // 10ms to about 22 minutes: grace periods count.
            revert_latency: Histogram::new(exponential_buckets(0.01, 2.0, 18)),
            reverts: Family::default(),
            flap_stops: Family::default(),
            breaker_trips: Counter::default(),
            enforcement_paused: Gauge::default(),
            bus_lag: Gauge::default(),
            bus_errors: Family::default(),
            ledger_records: Counter::default(),
            ledger_size: Gauge::default(),
            open_drifts: Family::default(),
            last_verify: Gauge::default(),
            last_verify_ok: Gauge::default(),
            git_fetch_age: Family::default(),
            git_fetch_errors: Family::default(),
            watcher_state: Family::default(),
            watcher_errors: Family::default(),
            api_requests: Family::default(),
            api_auth_failures: Family::default(),
            alerts_queued: Family::default(),
            alert_deliveries: Family::default(),
            alerts_pending: Family::default(),
            verdicts_published: Counter::default(),
            git_fetched: Mutex::default(),
            watchers: Mutex::default(),
            ledger: Mutex::default(),
        };
        let i = &inner;
        registry.register(
            "changes_observed",
            "Change events the correlator took from the bus, by kind and change (added, modified, deleted, resync)",
            i.changes_observed.clone(),
        );
        registry.register(
            "verdicts",
            "Changes judged and recorded (amendments included), by verdict, namespace and kind",
            i.verdicts.clone(),
        );
        registry.register_with_unit(
            "detect_latency",
            "From a watcher observing a change to its judgement being in the ledger (resyncs excluded)",
            Unit::Seconds,
            i.detect_latency.clone(),
        );
        registry.register(
            "reverts",
            "Decisions on drift by revert action (apply, patch, create, delete) and result (would_revert, reverted, superseded, held, failed)",
            i.reverts.clone(),
        );
        registry.register_with_unit(
            "revert_latency",
            "From a watcher observing a drifting change to its revert written (grace included)",
            Unit::Seconds,
            i.revert_latency.clone(),
        );
        registry.register(
            "flap_stops",
            "Revert wars: reverts stopped against an automated writer, or a person's war reported (reverts go on with backoff)",
            i.flap_stops.clone(),
        );
        registry.register(
            "breaker_trips",
            "Times the circuit breaker paused enforcement",
            i.breaker_trips.clone(),
        );
        registry.register(
            "enforcement_paused",
            "1 while enforcement is paused (circuit breaker, or by hand), else 0",
            i.enforcement_paused.clone(),
        );
        registry.register_with_unit(
            "bus_lag",
            "Age of the oldest change in the correlator's last batch from the bus; 0 when the bus had nothing waiting",
            Unit::Seconds,
            i.bus_lag.clone(),
        );
        registry.register(
            "bus_errors",
            "Bus errors by operation (receive, commit, dead_letter, publish)",
            i.bus_errors.clone(),
        );
        registry.register(
            "ledger_records",
            "Records in the ledger",
            i.ledger_records.clone(),
        );
        registry.register_with_unit(
            "ledger_size",
            "Size of the ledger's files on disk",
            Unit::Bytes,
            i.ledger_size.clone(),
        );
        registry.register(
            "open_drifts",
            "Objects with an unresolved drift now, by namespace",
            i.open_drifts.clone(),
        );
        registry.register_with_unit(
            "ledger_last_verify_timestamp",
            "When the ledger was last verified through the API (Unix time; 0: not since the start)",
            Unit::Seconds,
            i.last_verify.clone(),
        );
        registry.register(
            "ledger_last_verify_ok",
            "1 when the last verification found the ledger intact, else 0",
            i.last_verify_ok.clone(),
        );
        registry.register_with_unit(
            "git_fetch_age",
            "Time since each git source last fetched successfully",
            Unit::Seconds,
            i.git_fetch_age.clone(),
        );
        registry.register(
            "git_fetch_errors",
            "Failed fetches per git source",
            i.git_fetch_errors.clone(),
        );
        registry.register(
            "watcher_state",
            "1 for what the watchers of each kind are doing (listing, synced, failing, unresolved), 0 for the other states",
            i.watcher_state.clone(),
        );
        registry.register(
            "watcher_errors",
            "Watchers of each kind starting to fail, or the kind not resolving",
            i.watcher_errors.clone(),
        );
        registry.register(
            "api_requests",
            "API requests by route template, method and status",
            i.api_requests.clone(),
        );
        registry.register(
            "api_auth_failures",
            "API requests refused for their bearer token (missing, unknown)",
            i.api_auth_failures.clone(),
        );
        registry.register(
            "alerts_queued",
            "Alerts written to the outbox, by sink",
            i.alerts_queued.clone(),
        );
        registry.register(
            "alert_deliveries",
            "Messages posted to a sink, by sink and result (delivered, failed: retried)",
            i.alert_deliveries.clone(),
        );
        registry.register(
            "alerts_pending",
            "Alerts in the outbox a sink has not taken yet",
            i.alerts_pending.clone(),
        );
        registry.register(
            "verdicts_published",
            "Verdicts published to the SIEM topics",
            i.verdicts_published.clone(),
        );
        // Series of fixed label sets exist from the start, at 0, so that a
        // dashboard shows 0 rather than nothing.
        for action in ACTIONS {
            for result in RESULTS {
                let _ = inner
                    .reverts
                    .get_or_create(&RevertLabels { action, result });
            }
        }
        for writer in ["automated", "person"] {
            let _ = inner.flap_stops.get_or_create(&WriterLabels { writer });
        }
        for operation in BUS_OPERATIONS {
            let _ = inner
                .bus_errors
                .get_or_create(&OperationLabels { operation });
        }
        for reason in ["missing", "unknown"] {
            let _ = inner
                .api_auth_failures
                .get_or_create(&ReasonLabels { reason });
        }
        Self(Arc::new(Inner { registry, ..inner }))
    }

    /// The `namespace` label of `namespace`.
    fn namespace(&self, namespace: &str) -> String {
        if namespace.is_empty() {
            CLUSTER.to_owned()
        } else if self.0.namespaces.contains(namespace) {
            namespace.to_owned()
        } else {
            OTHER.to_owned()
        }
    }

    /// The correlator took `event` from the bus.
    pub fn observed(&self, event: &ChangeEvent) {
        let change = match event.kind {
            ChangeKind::Added => "added",
            ChangeKind::Modified => "modified",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Resync => "resync",
        };
        let labels = ObservedLabels {
            kind: self.0.kinds.label(&event.key.kind),
            change,
        };
        self.0.changes_observed.get_or_create(&labels).inc();
    }

    /// A judged record is in the ledger (flushed) at `now`: its verdict is
    /// counted, and for a change its detection latency.
    pub fn recorded(&self, judged: &Judged, now: DateTime<Utc>) {
        if let Some(observed_at) = judged.observed_at {
            let latency = (now - observed_at).num_milliseconds().max(0);
            self.0.detect_latency.observe(latency as f64 / 1000.0);
        }
        let labels = VerdictLabels {
            verdict: judged.verdict,
            namespace: self.namespace(&judged.namespace),
            kind: self.0.kinds.label(&judged.kind),
        };
        self.0.verdicts.get_or_create(&labels).inc();
    }

    /// The enforcer recorded `enforcement`; a sync (drift record 0) and an
    /// intent are no decision on drift and are not counted.
    pub fn enforced(&self, enforcement: &Enforcement) {
        if enforcement.drift_seq == 0 {
            return;
        }
        let result = match enforcement.outcome {
            Outcome::Intended => return,
            Outcome::WouldRevert => "would_revert",
            Outcome::Reverted { .. } => "reverted",
            Outcome::Superseded { .. } => "superseded",
            Outcome::Held { .. } => "held",
            Outcome::Failed { .. } => "failed",
        };
        let action = match enforcement.action {
            RevertAction::Apply { .. } => "apply",
            RevertAction::Patch { .. } => "patch",
            RevertAction::Create { .. } => "create",
            RevertAction::Delete { .. } => "delete",
        };
        self.0
            .reverts
            .get_or_create(&RevertLabels { action, result })
            .inc();
    }

    /// A drift observed at `observed_at` was reverted at `now`.
    pub fn reverted(&self, observed_at: DateTime<Utc>, now: DateTime<Utc>) {
        let latency = (now - observed_at).num_milliseconds().max(0);
        self.0.revert_latency.observe(latency as f64 / 1000.0);
    }

    /// The flap limit stopped reverts against an automated writer
    /// (`automated: true`), or reported a war with a person.
    pub fn flap_stop(&self, automated: bool) {
        let writer = if automated { "automated" } else { "person" };
        self.0
            .flap_stops
            .get_or_create(&WriterLabels { writer })
            .inc();
    }

    /// The circuit breaker tripped.
    pub fn breaker_tripped(&self) {
        self.0.breaker_trips.inc();
    }

    /// Whether enforcement is paused now.
    pub fn enforcement_paused(&self, paused: bool) {
        self.0.enforcement_paused.set(i64::from(paused));
    }

    /// The oldest change of the batch just taken from the bus was observed
    /// at `oldest` (`None`: nothing was waiting).
    pub fn bus_lag(&self, oldest: Option<DateTime<Utc>>, now: DateTime<Utc>) {
        let lag = oldest.map_or(0, |at| (now - at).num_milliseconds().max(0));
        self.0.bus_lag.set(lag as f64 / 1000.0);
    }

    /// A bus `operation` failed: `receive`, `commit`, `dead_letter` or
    /// `publish`.
    pub fn bus_error(&self, operation: &'static str) {
        self.0
            .bus_errors
            .get_or_create(&OperationLabels { operation })
            .inc();
    }

    /// Reads `ledger` (in `dir`) at every scrape: records, size, open drifts.
    pub fn watch_ledger(&self, ledger: Arc<Ledger>, dir: PathBuf) {
        *lock(&self.0.ledger) = Some((ledger, dir));
    }

    /// The ledger was verified at `at`; `ok` when intact.
    pub fn verified(&self, ok: bool, at: DateTime<Utc>) {
        self.0
            .last_verify
            .set(at.timestamp_millis() as f64 / 1000.0);
        self.0.last_verify_ok.set(i64::from(ok));
    }

    /// Sink `sink` exists: its series start at 0.
    pub fn sink(&self, sink: &str) {
        self.alert_pending(sink, 0);
        for result in ["delivered", "failed"] {
            let _ = self.0.alert_deliveries.get_or_create(&DeliveryLabels {
                sink: sink.to_owned(),
                result,
            });
        }
        let _ = self.0.alerts_queued.get_or_create(&SinkLabels {
            sink: sink.to_owned(),
        });
    }

    /// An alert was written to the outbox for `sink`.
    pub fn alert_queued(&self, sink: &str) {
        let labels = SinkLabels {
            sink: sink.to_owned(),
        };
        self.0.alerts_queued.get_or_create(&labels).inc();
    }

    /// A message was posted to `sink`: taken or not.
    pub fn alert_delivery(&self, sink: &str, delivered: bool) {
        let labels = DeliveryLabels {
            sink: sink.to_owned(),
            result: if delivered { "delivered" } else { "failed" },
        };
        self.0.alert_deliveries.get_or_create(&labels).inc();
    }

    /// `pending` alerts wait for `sink`.
    pub fn alert_pending(&self, sink: &str, pending: usize) {
        let labels = SinkLabels {
            sink: sink.to_owned(),
        };
        self.0
            .alerts_pending
            .get_or_create(&labels)
            .set(pending as i64);
    }

    /// `count` verdicts were published to the SIEM topics.
    pub fn verdicts_published(&self, count: u64) {
        self.0.verdicts_published.inc_by(count);
    }

    /// Git source `source` fetched successfully just now.
    pub fn git_fetched(&self, source: &str) {
        lock(&self.0.git_fetched).insert(source.to_owned(), Instant::now());
    }

    /// A fetch of git source `source` failed.
    pub fn git_fetch_failed(&self, source: &str) {
        let labels = SourceLabels {
            source: source.to_owned(),
        };
        self.0.git_fetch_errors.get_or_create(&labels).inc();
    }

    /// The watchers of `kinds` are started (or being started): each kind is
    /// listing until its watchers say otherwise. Returns whether every
    /// watched kind is synced, and what the watchers are doing.
    pub fn watching<'a>(&self, kinds: impl IntoIterator<Item = &'a str>) -> (bool, String) {
        let mut watchers = lock(&self.0.watchers);
        for kind in kinds {
            watchers.expect(kind);
            self.set_watcher_state(kind, watchers.state(kind));
            let labels = KindLabels {
                kind: self.0.kinds.label(kind),
            };
            let _ = self.0.watcher_errors.get_or_create(&labels);
        }
        watchers.readiness()
    }

    /// A watcher's state changed. Returns whether every watched kind is
    /// synced, and what the watchers are doing.
    pub fn watcher_status(&self, status: &WatcherStatus) -> (bool, String) {
        if matches!(
            status.state,
            WatcherState::Failing { .. } | WatcherState::Unresolved { .. }
        ) {
            let labels = KindLabels {
                kind: self.0.kinds.label(&status.kind),
            };
            self.0.watcher_errors.get_or_create(&labels).inc();
        }
        let mut watchers = lock(&self.0.watchers);
        watchers.report(status);
        self.set_watcher_state(&status.kind, watchers.state(&status.kind));
        watchers.readiness()
    }

    fn set_watcher_state(&self, kind: &str, now: Summary) {
        let kind = self.0.kinds.label(kind);
        for state in STATES {
            let labels = StateLabels {
                kind: kind.clone(),
                state,
            };
            self.0
                .watcher_state
                .get_or_create(&labels)
                .set(i64::from(state == now.name()));
        }
    }

    /// An API request to `route` (the matched route template, `None`: no
    /// route matched) with `method` was answered `status`.
    pub fn api_request(&self, route: Option<&str>, method: &str, status: u16) {
        let method = match method {
            "GET" => "GET",
            "POST" => "POST",
            "PUT" => "PUT",
            "PATCH" => "PATCH",
            "DELETE" => "DELETE",
            "HEAD" => "HEAD",
            "OPTIONS" => "OPTIONS",
            _ => OTHER,
        };
        let labels = RequestLabels {
            route: route.unwrap_or(UNMATCHED).to_owned(),
            method,
            status,
        };
        self.0.api_requests.get_or_create(&labels).inc();
    }

    /// An API request was refused for its token: `missing` or `unknown`.
    pub fn auth_failure(&self, reason: &'static str) {
        self.0
            .api_auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Every metric as OpenMetrics text ([`CONTENT_TYPE`]). Reads the ledger
    /// (records, size, open drifts): call it on the blocking pool.
    pub fn encode(&self) -> String {
        self.refresh();
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.0.registry) {
            tracing::error!(error = %err, "cannot encode the metrics");
        }
        text
    }

    /// Updates what is read at scrape: git ages and the ledger.
    fn refresh(&self) {
        for (source, at) in lock(&self.0.git_fetched).iter() {
            let labels = SourceLabels {
                source: source.clone(),
            };
            self.0
                .git_fetch_age
                .get_or_create(&labels)
                .set(at.elapsed().as_secs_f64());
        }
        let Some((ledger, dir)) = lock(&self.0.ledger).clone() else {
            return;
        };
        let records = ledger.len();
        let counted = self.0.ledger_records.get();
        if records > counted {
            self.0.ledger_records.inc_by(records - counted);
        }
        self.0
            .ledger_size
            .set(i64::try_from(dir_size(&dir)).unwrap_or(i64::MAX));
        // Every namespace label there is, 0 when nothing drifts there.
        let mut open: BTreeMap<String, i64> = self
            .0
            .namespaces
            .iter()
            .map(String::as_str)
            .chain([OTHER, CLUSTER])
            .map(|namespace| (namespace.to_owned(), 0))
            .collect();
        for entry in ledger.open_drifts() {
            match entry {
                Ok((key, _)) => *open.entry(self.namespace(&key.namespace)).or_default() += 1,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot count the open drifts for the metrics");
                    return;
                }
            }
        }
        for (namespace, count) in open {
            self.0
                .open_drifts
                .get_or_create(&NamespaceLabels { namespace })
                .set(count);
        }
    }
}

/// The size of the files under `dir`, recursively; 0 for what cannot be read.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Label values of one kind of thing, the first `max` distinct ones named,
/// the rest [`OTHER`].
#[derive(Debug)]
struct Capped {
    max: usize,
    seen: Mutex<HashSet<String>>,
}

impl Capped {
    fn new(max: usize) -> Self {
        Self {
            max,
            seen: Mutex::default(),
        }
    }

    fn label(&self, value: &str) -> String {
        let mut seen = lock(&self.seen);
        if seen.contains(value) {
            return value.to_owned();
        }
        if seen.len() < self.max {
            seen.insert(value.to_owned());
            return value.to_owned();
        }
        OTHER.to_owned()
    }
}

/// What the watchers of one kind are doing, all its scopes taken together:
/// the worst of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Summary {
    /// Every scope listed and follows changes.
    Synced,
    /// A scope is (re)listing, or has not reported yet.
    Listing,
    /// A scope fails, retrying.
    Failing,
    /// The kind does not resolve.
    Unresolved,
}

impl Summary {
    /// The `state` label.
    pub fn name(self) -> &'static str {
        match self {
            Summary::Synced => "synced",
            Summary::Listing => "listing",
            Summary::Failing => "failing",
            Summary::Unresolved => "unresolved",
        }
    }
}

/// The state of every watcher, by kind and namespace (`None`: all
/// namespaces, or the kind while it does not resolve).
#[derive(Debug, Default)]
pub struct WatcherStates {
    kinds: BTreeMap<String, BTreeMap<Option<String>, WatcherState>>,
}

impl WatcherStates {
    /// `kind` is watched: listing until it reports.
    pub fn expect(&mut self, kind: &str) {
        self.kinds.entry(kind.to_owned()).or_default();
    }

    /// Takes in a watcher's new state.
    pub fn report(&mut self, status: &WatcherStatus) {
        let scopes = self.kinds.entry(status.kind.clone()).or_default();
        // A scope of the kind reporting means the kind resolves now.
        if !matches!(status.state, WatcherState::Unresolved { .. }) {
            scopes.retain(|_, state| !matches!(state, WatcherState::Unresolved { .. }));
        }
        scopes.insert(status.namespace.clone(), status.state.clone());
    }

    /// What the watchers of `kind` are doing.
    pub fn state(&self, kind: &str) -> Summary {
        let Some(scopes) = self.kinds.get(kind).filter(|s| !s.is_empty()) else {
            return Summary::Listing;
        };
        scopes
            .values()
            .map(|state| match state {
                WatcherState::Synced => Summary::Synced,
                WatcherState::Listing => Summary::Listing,
                WatcherState::Failing { .. } => Summary::Failing,
                WatcherState::Unresolved { .. } => Summary::Unresolved,
            })
            .max()
            .unwrap_or(Summary::Listing)
    }

    /// Whether every kind is synced, and a word on the watchers: the kinds
    /// not synced, with the error of each failing scope.
    pub fn readiness(&self) -> (bool, String) {
        let mut waiting = Vec::new();
        for (kind, scopes) in &self.kinds {
            let state = self.state(kind);
            if state == Summary::Synced {
                continue;
            }
            let errors: Vec<String> = scopes
                .iter()
                .filter_map(|(namespace, state)| match state {
                    WatcherState::Failing { error } | WatcherState::Unresolved { error } => {
                        Some(match namespace {
                            Some(namespace) => format!("in {namespace}: {error}"),
                            None => error.clone(),
                        })
                    }
                    _ => None,
                })
                .collect();
            waiting.push(match errors.is_empty() {
                true => format!("{kind}: {}", state.name()),
                false => format!("{kind}: {} ({})", state.name(), errors.join("; ")),
            });
        }
        if waiting.is_empty() {
            (true, format!("{} kinds synced", self.kinds.len()))
        } else {
            (false, waiting.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{ObjectKey, Verdict};

    fn change(namespace: &str, kind: &str, verdict: Verdict) -> RecordBody {
        let key = ObjectKey::new("prod", "", kind, namespace, "web");
        crate::fixtures::change(
            key,
            verdict,
            Utc::now() - chrono::Duration::milliseconds(250),
        )
    }

    fn judged(body: &RecordBody) -> Judged {
        Judged::of(body).expect("a judgement")
    }

    fn status(kind: &str, namespace: Option<&str>, state: WatcherState) -> WatcherStatus {
        WatcherStatus {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: namespace.map(str::to_owned),
            state,
        }
    }

    /// The sample lines of `name` (its label sets and values).
    fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .collect()
    }

    #[test]
    fn every_metric_is_in_the_text_once_used_and_nothing_else_is() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Arc::new(Ledger::open(dir.path().join("ledger")).expect("ledger"));
        ledger
            .append(
                vec![change("team-a", "ConfigMap", crate::fixtures::drift())],
                &[],
            )
            .expect("append");
        let metrics = Metrics::with_namespaces(["team-a".to_owned()].into());
        let body = change("team-a", "ConfigMap", crate::fixtures::drift());
        if let RecordBody::Change { event, .. } = &body {
            metrics.observed(event);
        }
        metrics.recorded(&judged(&body), Utc::now());
        metrics.enforced(&Enforcement {
            key: ObjectKey::new("prod", "", "ConfigMap", "team-a", "web"),
            drift_seq: 1,
            mode: model::Mode::Enforce,
            policy: "default".into(),
            action: RevertAction::Delete { uid: "u".into() },
            outcome: Outcome::Failed {
                error: "refused".into(),
            },
        });
        metrics.flap_stop(false);
        metrics.bus_error("commit");
        metrics.watch_ledger(ledger, dir.path().join("ledger"));
        metrics.git_fetched("apps");
        metrics.git_fetch_failed("apps");
        metrics.watcher_status(&status(
            "ConfigMap",
            None,
            WatcherState::Failing {
                error: "gone".into(),
            },
        ));
        metrics.api_request(Some("/metrics"), "GET", 200);
        metrics.auth_failure("missing");
        metrics.sink("oncall");
        metrics.alert_queued("oncall");
        metrics.alert_delivery("oncall", false);
        metrics.verdicts_published(2);
        let text = metrics.encode();
        let families: BTreeSet<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split(' ').next())
            .collect();
        let expected: BTreeSet<&str> = NAMES
            .iter()
            .map(|name| name.trim_end_matches("_total"))
            .collect();
        assert_eq!(families, expected, "{text}");
        for name in NAMES {
            assert!(
                text.lines().any(|line| line.starts_with(name)),
                "no sample of {name}:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
        assert!(!text.contains(".."), "{text}");
    }

    #[test]
    fn namespaces_outside_the_config_and_object_names_never_reach_a_label() {
        let metrics = Metrics::with_namespaces(["team-a".to_owned()].into());
        let now = Utc::now();
        metrics.recorded(
            &judged(&change("team-a", "ConfigMap", crate::fixtures::drift())),
            now,
        );
        metrics.recorded(
            &judged(&change(
                "someone-elses",
                "ConfigMap",
                crate::fixtures::drift(),
            )),
            now,
        );
        metrics.recorded(&judged(&change("", "ClusterRole", Verdict::Unmanaged)), now);
        let text = metrics.encode();
        let verdicts = samples(&text, "driftwarden_verdicts_total");
        assert_eq!(verdicts.len(), 3, "{verdicts:?}");
        let has = |labels: &str| verdicts.iter().any(|line| line.contains(labels));
        assert!(has(
            r#"verdict="drift_modified",namespace="team-a",kind="ConfigMap""#
        ));
        assert!(has(
            r#"verdict="drift_modified",namespace="_other",kind="ConfigMap""#
        ));
        assert!(has(
            r#"verdict="unmanaged",namespace="_cluster",kind="ClusterRole""#
        ));
        assert!(
            !text.contains("someone-elses") && !text.contains("\"web\""),
            "{text}"
        );
        // Each change's detection took about 250ms.
        assert!(
            text.contains("driftwarden_detect_latency_seconds_count 3"),
            "{text}"
        );
        assert!(
            text.contains(r#"driftwarden_detect_latency_seconds_bucket{le="0.16"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"driftwarden_detect_latency_seconds_bucket{le="0.32"} 3"#),
            "{text}"
        );
    }

    #[test]
    fn kinds_past_the_cap_count_as_other() {
        let capped = Capped::new(2);
        assert_eq!(capped.label("ConfigMap"), "ConfigMap");
        assert_eq!(capped.label("Deployment"), "Deployment");
        assert_eq!(capped.label("Widget"), OTHER);
        assert_eq!(capped.label("ConfigMap"), "ConfigMap");
    }

    #[test]
    fn api_labels_are_route_templates_and_known_methods() {
        let metrics = Metrics::default();
        metrics.api_request(Some("/v1/changes/{seq}"), "GET", 200);
        metrics.api_request(None, "BREW", 404);
        metrics.auth_failure("unknown");
        let text = metrics.encode();
        assert!(text.contains(
            r#"driftwarden_api_requests_total{route="/v1/changes/{seq}",method="GET",status="200"} 1"#
        ), "{text}");
        assert!(text.contains(
            r#"driftwarden_api_requests_total{route="_unmatched",method="_other",status="404"} 1"#
        ), "{text}");
        assert!(text.contains(r#"driftwarden_api_auth_failures_total{reason="unknown"} 1"#));
    }

    #[test]
    fn reverts_count_decisions_on_drift_not_intents_nor_syncs() {
        let metrics = Metrics::default();
        let enforcement = |drift_seq, outcome| Enforcement {
            key: ObjectKey::new("prod", "", "ConfigMap", "team-a", "web"),
            drift_seq,
            mode: model::Mode::Enforce,
            policy: "default".into(),
            action: RevertAction::Apply {
                commit: "abc".into(),
            },
            outcome,
        };
        metrics.enforced(&enforcement(7, Outcome::Intended));
        metrics.enforced(&enforcement(
            7,
            Outcome::Reverted {
                resource_version: None,
            },
        ));
        metrics.enforced(&enforcement(0, Outcome::WouldRevert));
        metrics.reverted(Utc::now() - chrono::Duration::seconds(2), Utc::now());
        metrics.flap_stop(true);
        metrics.breaker_tripped();
        metrics.enforcement_paused(true);
        let text = metrics.encode();
        let counted: Vec<&str> = samples(&text, "driftwarden_reverts_total")
            .into_iter()
            .filter(|line| !line.ends_with(" 0"))
            .collect();
        assert_eq!(
            counted,
            [r#"driftwarden_reverts_total{action="apply",result="reverted"} 1"#]
        );
        // Every action and result is there from the start, at 0.
        assert_eq!(samples(&text, "driftwarden_reverts_total").len(), 20);
        assert!(text.contains("driftwarden_revert_latency_seconds_count 1"));
        assert!(text.contains(r#"driftwarden_flap_stops_total{writer="automated"} 1"#));
        assert!(text.contains("driftwarden_breaker_trips_total 1"));
        assert!(text.contains("driftwarden_enforcement_paused 1"));
    }

    #[test]
    fn git_age_is_read_at_scrape_and_errors_counted_per_source() {
        let metrics = Metrics::default();
        metrics.git_fetched("apps");
        metrics.git_fetch_failed("platform");
        let text = metrics.encode();
        assert!(
            text.contains(r#"driftwarden_git_fetch_age_seconds{source="apps"} 0."#),
            "{text}"
        );
        assert!(text.contains(r#"driftwarden_git_fetch_errors_total{source="platform"} 1"#));
    }

    #[test]
    fn the_ledger_is_read_at_scrape() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Arc::new(Ledger::open(dir.path().join("ledger")).expect("ledger"));
        ledger
            .append(
                vec![change("team-a", "ConfigMap", crate::fixtures::drift())],
                &[],
            )
            .expect("append");
        ledger.flush().expect("flush");
        let metrics = Metrics::with_namespaces(["team-a".to_owned()].into());
        metrics.watch_ledger(ledger, dir.path().join("ledger"));
        metrics.verified(true, Utc::now());
        let text = metrics.encode();
        assert!(
            text.contains("driftwarden_ledger_records_total 1"),
            "{text}"
        );
        assert!(
            text.contains(r#"driftwarden_open_drifts{namespace="team-a"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"driftwarden_open_drifts{namespace="_other"} 0"#));
        assert!(!text.contains("driftwarden_ledger_size_bytes 0"), "{text}");
        assert!(text.contains("driftwarden_ledger_last_verify_ok 1"));
        // Read again, nothing counted twice.
        assert!(
            metrics
                .encode()
                .contains("driftwarden_ledger_records_total 1")
        );
    }

    #[test]
    fn watchers_are_ready_once_every_kind_listed_and_not_while_one_fails() {
        let metrics = Metrics::default();
        let (ready, detail) = metrics.watching(["ConfigMap", "Widget"]);
        assert!(!ready, "{detail}");
        metrics.watcher_status(&status("ConfigMap", Some("a"), WatcherState::Listing));
        metrics.watcher_status(&status("ConfigMap", Some("b"), WatcherState::Listing));
        metrics.watcher_status(&status("ConfigMap", Some("a"), WatcherState::Synced));
        let error = || "no CRD for widgets".to_owned();
        let (ready, detail) = metrics.watcher_status(&status(
            "Widget",
            None,
            WatcherState::Unresolved { error: error() },
        ));
        assert!(!ready);
        assert_eq!(
            detail,
            "ConfigMap: listing, Widget: unresolved (no CRD for widgets)"
        );
        metrics.watcher_status(&status("ConfigMap", Some("b"), WatcherState::Synced));
        metrics.watcher_status(&status("Widget", Some("a"), WatcherState::Listing));
        let (ready, detail) =
            metrics.watcher_status(&status("Widget", Some("a"), WatcherState::Synced));
        assert!(ready, "{detail}");
        let (ready, detail) = metrics.watcher_status(&status(
            "ConfigMap",
            Some("b"),
            WatcherState::Failing {
                error: "connection refused".into(),
            },
        ));
        assert!(!ready);
        assert_eq!(detail, "ConfigMap: failing (in b: connection refused)");
        let text = metrics.encode();
        assert!(text.contains(r#"driftwarden_watcher_state{kind="ConfigMap",state="failing"} 1"#));
        assert!(text.contains(r#"driftwarden_watcher_state{kind="ConfigMap",state="synced"} 0"#));
        assert!(text.contains(r#"driftwarden_watcher_state{kind="Widget",state="synced"} 1"#));
        assert!(text.contains(r#"driftwarden_watcher_errors_total{kind="ConfigMap"} 1"#));
        assert!(text.contains(r#"driftwarden_watcher_errors_total{kind="Widget"} 1"#));
        // The error text is for the readiness detail only.
        assert!(!text.contains("connection refused") && !text.contains("no CRD"));
    }
}
