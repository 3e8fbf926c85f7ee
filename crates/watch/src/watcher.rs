//! Watching the cluster: one kube-rs watcher per (kind, namespace), merged
//! into one stream of [`ChangeEvent`]s.
//!
//! ```text
//! kind ──discovery::resolve (retried: backoff, CRD changes)──▶ watcher(kind, ns) ──▶ Tracker ──┐
//! kind ──discovery::resolve ...                            ──▶ watcher(kind, ns) ──▶ Tracker ──┼─▶ select_all ──▶ ChangeEvent
//! CRD watch ──CrdChanges──▶ wakes kinds waiting to resolve and watchers backing off           ┘
//! ```
//!
//! Each kind resolves on its own, so one whose CRD is missing waits
//! (retried with backoff, and at once when a CRD changes) while the others
//! are watched. Failures are reported when they start, recoveries logged
//! when they happen; retries in between are silent but for `debug!`.
//!
//! A tracker turns one watcher's events into change events: a listing
//! (start, re-list after `410 Gone`, or a fresh watcher after the collection
//! answered `404`, its CRD deleted and back) gives `Resync` for every listed
//! object and `Deleted` for known objects missing from it; afterwards
//! `Added`/`Modified`/`Deleted`, with churn dropped. It keeps per object
//! only its namespace, name, uid and a content digest.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt, future};
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{ApiResource, Scope};
use kube::runtime::watcher as kube_watcher;
use kube::runtime::watcher::{self, Event};
use model::redact::DigestKey;
use model::{ChangeEvent, ChangeKind, ObjectKey};
use serde_json::{Value, json};

use crate::crds::{CrdChanges, watch_crds};
use crate::discovery;
use crate::event::to_change_event;
use crate::retry::{self, Backoff, Health};
#[cfg(doc)]
use crate::retry::{FIRST_DELAY, MAX_DELAY};
#[cfg(doc)]
use model::churn::is_derived;
use model::churn::{ContentDigest, content_digest};

/// Objects fetched per page when (re)listing.
pub const PAGE_SIZE: u32 = 500;

/// Attempts at reading a collection's current `resourceVersion` before
/// giving up on reporting objects deleted while unobserved.
const VERSION_ATTEMPTS: u32 = 3;

/// A watch that failed or an object that could not be turned into an event.
/// The merged stream keeps going after an error: watchers retry with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec names no kind to watch.
    #[error(
        "watch spec of cluster `{cluster}` lists no kinds to watch; add at least one (apiVersion, kind)"
    )]
    NoKinds {
        /// The spec's cluster.
        cluster: String,
    },
    /// A kind that will never resolve as written (a malformed `apiVersion`);
    /// the error says what to do. It is not retried.
    #[error(transparent)]
    Kind(#[from] discovery::Error),
    /// A kind does not resolve (yet); it is retried with backoff and
    /// whenever a CRD changes, and watched once it resolves. Reported once
    /// per failing streak.
    #[error(
        "kind `{kind}` of `{api_version}` does not resolve (yet); retrying with backoff and \
         whenever a CRD changes"
    )]
    Unresolved {
        /// The apiVersion looked up.
        api_version: String,
        /// The kind looked up.
        kind: String,
        /// Why it does not resolve, and what to check.
        #[source]
        source: discovery::Error,
    },
    /// A watcher started failing; it retries with backoff (cut short when a
    /// CRD changes). Reported once per failing streak; its recovery is
    /// logged.
    #[error("watching {scope} failed (retrying with backoff)")]
    Watch {
        /// The resource and namespace watched, e.g. `configmaps in team-a`.
        scope: String,
        /// The watcher's error.
        #[source]
        source: watcher::Error,
    },
    /// An object could not be turned into a change event.
    #[error("an object of {scope} was skipped")]
    Event {
        /// The resource and namespace watched.
        scope: String,
        /// Why the object was skipped.
        #[source]
        source: crate::event::Error,
    },
    /// A watched object could not be converted to JSON.
    #[error("an object of {scope} could not be converted to JSON")]
    Serialize {
        /// The resource and namespace watched.
        scope: String,
        /// The conversion error.
        #[source]
        source: serde_json::Error,
    },
    /// Objects found deleted while unobserved could not be reported, because
    /// the collection's current `resourceVersion` could not be read.
    #[error("{count} objects of {scope} deleted while unobserved could not be reported")]
    DeletionVersion {
        /// The resource and namespace watched.
        scope: String,
        /// How many deletions are unreported.
        count: usize,
        /// Why the version could not be read.
        #[source]
        source: kube::Error,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to watch in one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    /// Name of the cluster as configured; the first segment of every key.
    pub cluster: String,
    /// The installation's key for Secret digests.
    pub digest_key: DigestKey,
    /// `(apiVersion, kind)` pairs, e.g. `("apps/v1", "Deployment")`;
    /// custom resources work the same way.
    pub kinds: Vec<(String, String)>,
    /// Namespaces to watch; empty watches all. Ignored for cluster-scoped kinds.
    pub namespaces: Vec<String>,
    /// Label selector limiting the watched objects, e.g. `app=web`.
    pub label_selector: Option<String>,
    /// Emit events for controller-owned objects (marked `derived`) instead
    /// of skipping them.
    pub record_derived: bool,
    /// Objects known from before this watch (the ledger's latest state), so
    /// that ones deleted while nobody watched are reported as `Deleted`.
    pub known: Vec<KnownObject>,
    /// Told whenever a watcher's state changes (for metrics and readiness).
    pub on_state: Option<StateHook>,
}

/// What one watcher is doing, as told to [`WatchSpec::on_state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatcherState {
    /// The kind does not resolve (its CRD is missing, or its `apiVersion`
    /// is malformed); retried with backoff and whenever a CRD changes.
    Unresolved {
        /// Why, for people (never for a metric label).
        error: String,
    },
    /// Listing the collection: at start, or again after `410 Gone` or a
    /// failure.
    Listing,
    /// Listed; following changes.
    Synced,
    /// Failing; retried with backoff.
    Failing {
        /// Why, for people (never for a metric label).
        error: String,
    },
}

/// A change of one watcher's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatcherStatus {
    /// The kind's `apiVersion`.
    pub api_version: String,
    /// The kind.
    pub kind: String,
    /// The namespace watched; `None` for all namespaces (and cluster-scoped
    /// kinds), and for the kind itself while it does not resolve.
    pub namespace: Option<String>,
    /// What it is doing now.
    pub state: WatcherState,
}

/// A callback told of every change of a watcher's state; called on the
/// watch stream's task, so it must be quick.
#[derive(Clone)]
pub struct StateHook(Arc<dyn Fn(WatcherStatus) + Send + Sync>);

impl StateHook {
    /// A hook calling `report`.
    pub fn new(report: impl Fn(WatcherStatus) + Send + Sync + 'static) -> Self {
        Self(Arc::new(report))
    }

    fn report(&self, status: WatcherStatus) {
        (self.0)(status);
    }
}

impl std::fmt::Debug for StateHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateHook")
    }
}

impl PartialEq for StateHook {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for StateHook {}

impl WatchSpec {
    /// A spec for `cluster` watching nothing yet, digesting Secret values
    /// with `digest_key`.
    pub fn new(cluster: impl Into<String>, digest_key: DigestKey) -> Self {
        Self {
            cluster: cluster.into(),
            digest_key,
            kinds: Vec::new(),
            namespaces: Vec::new(),
            label_selector: None,
            record_derived: false,
            known: Vec::new(),
            on_state: None,
        }
    }

    /// Also watch `kind` of `api_version`.
    pub fn kind(mut self, api_version: impl Into<String>, kind: impl Into<String>) -> Self {
        self.kinds.push((api_version.into(), kind.into()));
        self
    }

    /// Also watch `namespace` (once any is given, only the given ones).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespaces.push(namespace.into());
        self
    }

    /// Only watch objects matching `selector`.
    pub fn label_selector(mut self, selector: impl Into<String>) -> Self {
        self.label_selector = Some(selector.into());
        self
    }

    /// Whether to emit controller-owned objects.
    pub fn record_derived(mut self, record: bool) -> Self {
        self.record_derived = record;
        self
    }

    /// Objects known from before this watch.
    pub fn known(mut self, known: impl IntoIterator<Item = KnownObject>) -> Self {
        self.known.extend(known);
        self
    }

    /// Tells `hook` whenever a watcher's state changes.
    pub fn on_state(mut self, hook: StateHook) -> Self {
        self.on_state = Some(hook);
        self
    }
}

/// An object seen before this watch started, as the ledger last recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownObject {
    /// Which object.
    pub key: ObjectKey,
    /// The incarnation.
    pub uid: String,
}

impl From<&ChangeEvent> for KnownObject {
    fn from(event: &ChangeEvent) -> Self {
        Self {
            key: event.key.clone(),
            uid: event.uid.clone(),
        }
    }
}

/// Watches what `spec` names and yields its change events, merged across
/// kinds and namespaces; runs until dropped.
///
/// Runs its own watch of the cluster's CRDs (see [`watch_crds`]), so a
/// custom resource whose CRD arrives later is watched as soon as the CRD is
/// established. A process with several watches shares one CRD watch
/// through [`watch_with_crds`] instead.
pub fn watch(
    client: kube::Client,
    spec: WatchSpec,
) -> impl Stream<Item = Result<ChangeEvent>> + Send + 'static {
    let (crds, driver) = watch_crds(client.clone());
    // The CRD watch ends once the watchers (the receivers) are gone.
    let driving = stream::once(driver).filter_map(|()| future::ready(None));
    stream::select(watch_with_crds(client, spec, crds), driving)
}

/// [`watch`], told of CRD changes by `crds` (from [`watch_crds`]).
///
/// Each kind is resolved through discovery on its own. A kind that does not
/// resolve (a CRD not installed yet, or not established) is retried with
/// backoff ([`FIRST_DELAY`] doubling to [`MAX_DELAY`]) and at once whenever
/// a CRD changes; meanwhile the other kinds are watched. Its failure is
/// yielded once, as [`Error::Unresolved`], and its resolution logged once.
/// A malformed `apiVersion` yields [`Error::Kind`] and is not retried.
///
/// A watcher that fails (e.g. its CRD was deleted) retries with the same
/// backoff, cut short by a CRD change; it yields [`Error::Watch`] when it
/// starts failing and logs when it works again, never at every retry. The
/// stream keeps going after an error, so a consumer logs it and keeps
/// polling.
pub fn watch_with_crds(
    client: kube::Client,
    spec: WatchSpec,
    crds: CrdChanges,
) -> impl Stream<Item = Result<ChangeEvent>> + Send + 'static {
    if spec.kinds.is_empty() {
        return failed(Error::NoKinds {
            cluster: spec.cluster,
        });
    }
    let spec = Arc::new(spec);
    let kinds: Vec<_> = spec
        .kinds
        .iter()
        .map(|(api_version, kind)| {
            kind_stream(
                client.clone(),
                spec.clone(),
                api_version.clone(),
                kind.clone(),
                crds.clone(),
            )
        })
        .collect();
    stream::select_all(kinds).boxed()
}

fn failed(err: Error) -> BoxStream<'static, Result<ChangeEvent>> {
    stream::once(async move { Err(err) }).boxed()
}

/// One kind: resolved (retrying until it does), then one watcher per
/// namespace.
fn kind_stream(
    client: kube::Client,
    spec: Arc<WatchSpec>,
    api_version: String,
    kind: String,
    crds: CrdChanges,
) -> BoxStream<'static, Result<ChangeEvent>> {
    let resolving = Resolving {
        client: client.clone(),
        api_version: api_version.clone(),
        kind: kind.clone(),
        crds: crds.clone(),
        backoff: Backoff::default(),
        health: Health::default(),
        pause: None,
    };
    stream::unfold(Some(resolving), |resolving| async move {
        let (item, next) = resolving?.next().await;
        Some((item, next))
    })
    .flat_map(move |resolved| match resolved {
        Ok((resource, scope)) => {
            let namespaces: Vec<Option<&str>> =
                if scope == Scope::Cluster || spec.namespaces.is_empty() {
                    vec![None]
                } else {
                    spec.namespaces.iter().map(|ns| Some(ns.as_str())).collect()
                };
            // Every scope is listing before any reports: a kind is synced
            // only once all of its scopes are.
            if let Some(hook) = &spec.on_state {
                for namespace in &namespaces {
                    hook.report(WatcherStatus {
                        api_version: resource.api_version.clone(),
                        kind: resource.kind.clone(),
                        namespace: namespace.map(str::to_owned),
                        state: WatcherState::Listing,
                    });
                }
            }
            let scopes = namespaces
                .into_iter()
                .map(|namespace| scope_stream(&client, &spec, &resource, namespace, crds.clone()));
            stream::select_all(scopes).boxed()
        }
        Err(err) => {
            if let Some(hook) = &spec.on_state {
                hook.report(WatcherStatus {
                    api_version: api_version.clone(),
                    kind: kind.clone(),
                    namespace: None,
                    state: WatcherState::Unresolved {
                        error: format!("{err}"),
                    },
                });
            }
            failed(err)
        }
    })
    .boxed()
}

/// A kind being resolved: attempts, backoff, and whether its failure has
/// been reported.
struct Resolving {
    client: kube::Client,
    api_version: String,
    kind: String,
    crds: CrdChanges,
    backoff: Backoff,
    health: Health,
    /// The wait before the next attempt, after a failure just reported.
    pause: Option<Duration>,
}

impl Resolving {
    /// Attempts until the kind resolves (`Ok`, and nothing follows) or a
    /// failure is to be reported (`Err`, and `self` goes on after it).
    async fn next(mut self) -> (Result<(ApiResource, Scope)>, Option<Self>) {
        loop {
            if let Some(delay) = self.pause.take()
                && retry::wait(delay, &mut self.crds).await
            {
                self.backoff.reset();
            }
            // Changes from now on may be what the next attempt needs.
            self.crds.borrow_and_update();
            let err = match discovery::resolve(&self.client, &self.api_version, &self.kind).await {
                Ok(resolved) => {
                    if self.health.recovered() {
                        tracing::info!(
                            api_version = %self.api_version,
                            kind = %self.kind,
                            "kind resolves now; watching it"
                        );
                    }
                    return (Ok(resolved), None);
                }
                Err(err @ discovery::Error::ApiVersion { .. }) => return (Err(err.into()), None),
                Err(err) => err,
            };
            let delay = self.backoff.next_delay();
            if self.health.failed() {
                self.pause = Some(delay);
                let err = Error::Unresolved {
                    api_version: self.api_version.clone(),
                    kind: self.kind.clone(),
                    source: err,
                };
                return (Err(err), Some(self));
            }
            tracing::debug!(
                api_version = %self.api_version,
                kind = %self.kind,
                retry_in = ?delay,
                error = %err,
                "kind still does not resolve"
            );
            self.pause = Some(delay);
        }
    }
}

fn scope_stream(
    client: &kube::Client,
    spec: &WatchSpec,
    resource: &ApiResource,
    namespace: Option<&str>,
    crds: CrdChanges,
) -> BoxStream<'static, Result<ChangeEvent>> {
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    };
    let mut config = watcher::Config::default().page_size(PAGE_SIZE);
    if let Some(selector) = &spec.label_selector {
        config = config.labels(selector);
    }
    let mut tracker = Tracker::new(spec, resource, namespace);
    tracing::debug!(scope = %tracker.scope, "starting watcher");
    let listing = api.clone();
    let mut reporting = spec.on_state.clone().map(|hook| Reporting {
        hook,
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
        namespace: namespace.map(str::to_owned),
        last: Some(WatcherState::Listing),
    });
    retry::backing_off(move || kube_watcher(listing.clone(), config.clone()), crds)
        .inspect(move |event| {
            if let Some(reporting) = &mut reporting {
                reporting.saw(event);
            }
        })
        .then(move |event| {
            let step = tracker.step(event, Utc::now());
            let api = api.clone();
            async move { step.complete(&api).await }
        })
        .flat_map(stream::iter)
        .boxed()
}

/// Tells a [`StateHook`] when one watcher's state changes.
struct Reporting {
    hook: StateHook,
    api_version: String,
    kind: String,
    namespace: Option<String>,
    last: Option<WatcherState>,
}

impl Reporting {
    /// Reports the state `event` puts the watcher in, if it changed.
    fn saw(&mut self, event: &Result<Event<DynamicObject>, watcher::Error>) {
        let state = match (event, &self.last) {
            (Err(_), Some(WatcherState::Failing { .. })) => return,
            (Err(err), _) => WatcherState::Failing {
                error: err.to_string(),
            },
            (Ok(Event::Init | Event::InitApply(_)), _) => WatcherState::Listing,
            (Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_)), _) => WatcherState::Synced,
        };
        if self.last.as_ref() == Some(&state) {
            return;
        }
        self.last = Some(state.clone());
        self.hook.report(WatcherStatus {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            state,
        });
    }
}

/// What the tracker remembers of one object: its names and 32 bytes of
/// digest, never its content.
#[derive(Debug, Clone)]
struct Seen {
    namespace: String,
    name: String,
    /// `None` for objects known only from before this watch.
    digest: Option<ContentDigest>,
}

/// An object that was known but is absent from a complete listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Vanished {
    uid: String,
    namespace: String,
    name: String,
}

/// Turns one watcher's events into change events. Pure apart from the
/// clock value it is given; the I/O around it lives in [`scope_stream`].
#[derive(Debug)]
pub(crate) struct Tracker {
    cluster: String,
    digest_key: DigestKey,
    api_version: String,
    kind: String,
    scope: String,
    record_derived: bool,
    seen: HashMap<String, Seen>,
    /// The uids listed since the last `Init`, while a listing is under way.
    listed: Option<HashSet<String>>,
    /// Whether the watcher is failing, so only the first error of a streak
    /// is passed on.
    health: Health,
}

/// The outcome of one watcher event: the events ready now, and objects
/// found deleted while unobserved, which need the collection's current
/// `resourceVersion` to be reported.
#[derive(Debug)]
pub(crate) struct Step {
    events: Vec<Result<ChangeEvent>>,
    vanished: Vec<Vanished>,
    context: DeletionContext,
}

#[derive(Debug, Clone)]
struct DeletionContext {
    cluster: String,
    digest_key: DigestKey,
    api_version: String,
    kind: String,
    scope: String,
    observed_at: DateTime<Utc>,
}

impl Tracker {
    pub(crate) fn new(spec: &WatchSpec, resource: &ApiResource, namespace: Option<&str>) -> Self {
        let scope = match namespace {
            Some(ns) => format!("{} in {ns}", resource.plural),
            None => format!("{} in all namespaces", resource.plural),
        };
        let seen = spec
            .known
            .iter()
            .filter(|known| {
                known.key.cluster == spec.cluster
                    && known.key.group == resource.group
                    && known.key.kind == resource.kind
                    && namespace.is_none_or(|ns| known.key.namespace == ns)
            })
            .map(|known| {
                let seen = Seen {
                    namespace: known.key.namespace.clone(),
                    name: known.key.name.clone(),
                    digest: None,
                };
                (known.uid.clone(), seen)
            })
            .collect();
        Self {
            cluster: spec.cluster.clone(),
            digest_key: spec.digest_key.clone(),
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
            scope,
            record_derived: spec.record_derived,
            seen,
            listed: None,
            health: Health::default(),
        }
    }

    /// Handles one item of the watcher stream.
    pub(crate) fn step(
        &mut self,
        item: Result<Event<DynamicObject>, watcher::Error>,
        observed_at: DateTime<Utc>,
    ) -> Step {
        let mut step = Step {
            events: Vec::new(),
            vanished: Vec::new(),
            context: DeletionContext {
                cluster: self.cluster.clone(),
                digest_key: self.digest_key.clone(),
                api_version: self.api_version.clone(),
                kind: self.kind.clone(),
                scope: self.scope.clone(),
                observed_at,
            },
        };
        let event = match item {
            Ok(event) => event,
            Err(source) => {
                if self.health.failed() {
                    step.events.push(Err(Error::Watch {
                        scope: self.scope.clone(),
                        source,
                    }));
                } else {
                    tracing::debug!(scope = %self.scope, error = %source, "watcher still failing");
                }
                return step;
            }
        };
        // `Init` comes before every listing attempt, failed ones too.
        if !matches!(event, Event::Init) && self.health.recovered() {
            tracing::info!(scope = %self.scope, "watching again");
        }
        match event {
            Event::Init => self.listed = Some(HashSet::new()),
            Event::InitApply(obj) => self.listed_object(obj, observed_at, &mut step),
            Event::InitDone => step.vanished = self.listing_done(),
            Event::Apply(obj) => self.applied(obj, observed_at, &mut step),
            Event::Delete(obj) => self.deleted(obj, observed_at, &mut step),
        }
        step
    }

    fn listed_object(&mut self, obj: DynamicObject, observed_at: DateTime<Utc>, step: &mut Step) {
        let Some(event) = self.event(ChangeKind::Resync, obj, observed_at, step) else {
            return;
        };
        self.listed
            .get_or_insert_with(HashSet::new)
            .insert(event.uid.clone());
        self.remember(&event, content_digest(&event.object));
        step.events.push(Ok(event));
    }

    fn listing_done(&mut self) -> Vec<Vanished> {
        let listed = self.listed.take().unwrap_or_default();
        let gone: Vec<String> = self
            .seen
            .keys()
            .filter(|uid| !listed.contains(*uid))
            .cloned()
            .collect();
        let mut vanished: Vec<Vanished> = gone
            .into_iter()
            .filter_map(|uid| {
                let seen = self.seen.remove(&uid)?;
                Some(Vanished {
                    uid,
                    namespace: seen.namespace,
                    name: seen.name,
                })
            })
            .collect();
        vanished.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        if !vanished.is_empty() {
            tracing::info!(scope = %self.scope, count = vanished.len(), "objects deleted while unobserved");
        }
        vanished
    }

    fn applied(&mut self, obj: DynamicObject, observed_at: DateTime<Utc>, step: &mut Step) {
        let Some(mut event) = self.event(ChangeKind::Modified, obj, observed_at, step) else {
            return;
        };
        let digest = content_digest(&event.object);
        match self.seen.get(&event.uid) {
            Some(seen) if seen.digest == Some(digest) => {
                tracing::trace!(key = %event.key, "dropped churn");
                return;
            }
            Some(_) => {}
            None => event.kind = ChangeKind::Added,
        }
        self.remember(&event, digest);
        step.events.push(Ok(event));
    }

    fn deleted(&mut self, obj: DynamicObject, observed_at: DateTime<Utc>, step: &mut Step) {
        let Some(event) = self.event(ChangeKind::Deleted, obj, observed_at, step) else {
            return;
        };
        self.seen.remove(&event.uid);
        step.events.push(Ok(event));
    }

    /// The change event for `obj`, or `None` when it is skipped (derived
    /// and not recorded) or malformed (then the error is in `step`).
    fn event(
        &mut self,
        kind: ChangeKind,
        obj: DynamicObject,
        observed_at: DateTime<Utc>,
        step: &mut Step,
    ) -> Option<ChangeEvent> {
        if !self.record_derived && is_controlled(&obj) {
            if let Some(uid) = &obj.metadata.uid {
                self.seen.remove(uid);
            }
            return None;
        }
        let value = match self.to_value(obj) {
            Ok(value) => value,
            Err(source) => {
                step.events.push(Err(Error::Serialize {
                    scope: self.scope.clone(),
                    source,
                }));
                return None;
            }
        };
        match to_change_event(&self.cluster, kind, value, observed_at, &self.digest_key) {
            Ok(event) => Some(event),
            Err(source) => {
                step.events.push(Err(Error::Event {
                    scope: self.scope.clone(),
                    source,
                }));
                None
            }
        }
    }

    /// The object as JSON, with `apiVersion` and `kind` filled in when the
    /// apiserver left them out.
    fn to_value(&self, obj: DynamicObject) -> Result<Value, serde_json::Error> {
        let mut value = serde_json::to_value(obj)?;
        if let Some(map) = value.as_object_mut() {
            map.entry("apiVersion")
                .or_insert_with(|| Value::String(self.api_version.clone()));
            map.entry("kind")
                .or_insert_with(|| Value::String(self.kind.clone()));
        }
        Ok(value)
    }

    fn remember(&mut self, event: &ChangeEvent, digest: ContentDigest) {
        let seen = Seen {
            namespace: event.key.namespace.clone(),
            name: event.key.name.clone(),
            digest: Some(digest),
        };
        self.seen.insert(event.uid.clone(), seen);
    }
}

impl Step {
    /// The events of this step, with `Deleted` events for vanished objects
    /// at the collection's current `resourceVersion` (read from the apiserver).
    async fn complete(self, api: &Api<DynamicObject>) -> Vec<Result<ChangeEvent>> {
        if self.vanished.is_empty() {
            return self.events;
        }
        match current_version(api).await {
            Ok(version) => self.with_deletions(&version),
            Err(source) => {
                let mut events = self.events;
                events.push(Err(Error::DeletionVersion {
                    scope: self.context.scope,
                    count: self.vanished.len(),
                    source,
                }));
                events
            }
        }
    }

    /// The events of this step plus a `Deleted` event per vanished object,
    /// at `version`: the collection's version when the deletion was noticed,
    /// which is later than the deletion and unique to this observation.
    pub(crate) fn with_deletions(self, version: &str) -> Vec<Result<ChangeEvent>> {
        let Step {
            mut events,
            vanished,
            context,
        } = self;
        for gone in vanished {
            let mut metadata = json!({
                "name": gone.name,
                "uid": gone.uid,
                "resourceVersion": version,
            });
            if !gone.namespace.is_empty() {
                metadata["namespace"] = Value::String(gone.namespace);
            }
            let stub = json!({
                "apiVersion": context.api_version,
                "kind": context.kind,
                "metadata": metadata,
            });
            let event = to_change_event(
                &context.cluster,
                ChangeKind::Deleted,
                stub,
                context.observed_at,
                &context.digest_key,
            )
            .map_err(|source| Error::Event {
                scope: context.scope.clone(),
                source,
            });
            events.push(event);
        }
        events
    }
}

/// Whether a controller owns `obj`, read before the object is converted,
/// so skipped objects cost nothing more (see [`is_derived`](model::churn::is_derived) for JSON).
fn is_controlled(obj: &DynamicObject) -> bool {
    obj.metadata
        .owner_references
        .as_ref()
        .is_some_and(|owners| owners.iter().any(|owner| owner.controller == Some(true)))
}

/// The collection's current `resourceVersion`, retried briefly.
async fn current_version(api: &Api<DynamicObject>) -> Result<String, kube::Error> {
    let params = ListParams::default().limit(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match api.list_metadata(&params).await {
            Ok(list) => return Ok(list.metadata.resource_version.unwrap_or_default()),
            Err(err) if attempt >= VERSION_ATTEMPTS => return Err(err),
            Err(_) => tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_map_resource() -> ApiResource {
        ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
        }
    }

    fn config_map(name: &str, uid: &str, rv: &str, data: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name, "namespace": "team-a", "uid": uid, "resourceVersion": rv,
                "managedFields": [{"manager": "kubectl-create", "operation": "Update",
                                   "time": format!("2026-01-01T00:00:{:02}Z", rv.len()),
                                   "fieldsV1": {"f:data": {"f:k": {}}}}]
            },
            "data": data
        }))
        .expect("valid object")
    }

    #[test]
    fn a_watcher_reports_listing_synced_failing_and_synced_again_once_each() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let hook = {
            let seen = seen.clone();
            StateHook::new(move |status: WatcherStatus| {
                seen.lock().expect("lock").push(status.state);
            })
        };
        let mut reporting = Reporting {
            hook,
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("team-a".into()),
            last: Some(WatcherState::Listing),
        };
        let object = || config_map("a", "uid-a", "1", json!({"k": "v"}));
        reporting.saw(&Ok(Event::Init));
        reporting.saw(&Ok(Event::InitApply(object())));
        reporting.saw(&Ok(Event::InitDone));
        reporting.saw(&Err(watcher::Error::NoResourceVersion));
        reporting.saw(&Err(watcher::Error::NoResourceVersion));
        reporting.saw(&Ok(Event::Apply(object())));
        reporting.saw(&Ok(Event::Apply(object())));
        let states = seen.lock().expect("lock").clone();
        assert!(
            matches!(
                states.as_slice(),
                [WatcherState::Synced, WatcherState::Failing { error }, WatcherState::Synced]
                    if error.contains("resourceVersion")
            ),
            "{states:?}"
        );
    }

    fn owned(mut obj: DynamicObject) -> DynamicObject {
        obj.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "web".into(),
                uid: "owner".into(),
                controller: Some(true),
                ..Default::default()
            },
        ]);
        obj
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("valid time")
    }

    fn tracker(spec: &WatchSpec) -> Tracker {
        Tracker::new(spec, &config_map_resource(), Some("team-a"))
    }

    /// Feeds events and returns (kind, name, resourceVersion) of what came out.
    fn feed(
        tracker: &mut Tracker,
        events: Vec<Event<DynamicObject>>,
    ) -> Vec<(ChangeKind, String, String)> {
        events
            .into_iter()
            .flat_map(|event| tracker.step(Ok(event), now()).with_deletions("999"))
            .map(|event| {
                let event = event.expect("valid event");
                (event.kind, event.key.name, event.resource_version)
            })
            .collect()
    }

    fn seen(kind: ChangeKind, name: &str, rv: &str) -> (ChangeKind, String, String) {
        (kind, name.to_owned(), rv.to_owned())
    }

    #[test]
    fn per_object_state_stays_far_below_two_kib() {
        // Map key (uid) and entry, before the strings' heap bytes (uid 36,
        // namespace and name at most 63 and 253): far below the 2 KiB budget.
        let inline = std::mem::size_of::<(String, Seen)>();
        assert!(inline <= 128, "{inline} bytes inline per watched object");
    }

    #[test]
    fn listing_gives_resync_then_watch_gives_added_modified_deleted() {
        let mut tracker = tracker(&WatchSpec::new("prod", DigestKey::from_bytes([1; 32])));
        let out = feed(
            &mut tracker,
            vec![
                Event::Init,
                Event::InitApply(config_map("a", "u-a", "1", json!({"k": "1"}))),
                Event::InitDone,
                Event::Apply(config_map("b", "u-b", "2", json!({"k": "1"}))),
                Event::Apply(config_map("b", "u-b", "3", json!({"k": "2"}))),
                Event::Apply(config_map("a", "u-a", "4", json!({"k": "2"}))),
                Event::Delete(config_map("b", "u-b", "5", json!({"k": "2"}))),
            ],
        );
        assert_eq!(
            out,
            vec![
                seen(ChangeKind::Resync, "a", "1"),
                seen(ChangeKind::Added, "b", "2"),
                seen(ChangeKind::Modified, "b", "3"),
                seen(ChangeKind::Modified, "a", "4"),
                seen(ChangeKind::Deleted, "b", "5"),
            ]
        );
    }

    #[test]
    fn churn_is_dropped_but_a_later_real_change_is_not() {
        let mut tracker = tracker(&WatchSpec::new("prod", DigestKey::from_bytes([1; 32])));
        let mut status_only = config_map("a", "u-a", "22", json!({"k": "1"}));
        status_only.data["status"] = json!({"phase": "whatever"});
        let out = feed(
            &mut tracker,
            vec![
                Event::Apply(config_map("a", "u-a", "1", json!({"k": "1"}))),
                Event::Apply(config_map("a", "u-a", "333", json!({"k": "1"}))),
                Event::Apply(status_only),
                Event::Apply(config_map("a", "u-a", "4444", json!({"k": "2"}))),
            ],
        );
        assert_eq!(
            out,
            vec![
                seen(ChangeKind::Added, "a", "1"),
                seen(ChangeKind::Modified, "a", "4444"),
            ]
        );
    }

    #[test]
    fn relisting_reports_objects_deleted_while_unobserved() {
        let mut tracker = tracker(&WatchSpec::new("prod", DigestKey::from_bytes([1; 32])));
        let out = feed(
            &mut tracker,
            vec![
                Event::Init,
                Event::InitApply(config_map("a", "u-a", "1", json!({}))),
                Event::InitApply(config_map("b", "u-b", "2", json!({}))),
                Event::InitDone,
                // 410 Gone: the watcher lists again; `b` is gone.
                Event::Init,
                Event::InitApply(config_map("a", "u-a", "1", json!({}))),
                Event::InitDone,
            ],
        );
        assert_eq!(
            out,
            vec![
                seen(ChangeKind::Resync, "a", "1"),
                seen(ChangeKind::Resync, "b", "2"),
                seen(ChangeKind::Resync, "a", "1"),
                seen(ChangeKind::Deleted, "b", "999"),
            ]
        );
    }

    #[test]
    fn known_objects_missing_from_the_first_listing_are_deleted() {
        let known = |name: &str, uid: &str, namespace: &str, kind: &str| KnownObject {
            key: ObjectKey::new("prod", "", kind, namespace, name),
            uid: uid.into(),
        };
        let spec = WatchSpec::new("prod", DigestKey::from_bytes([1; 32])).known([
            known("kept", "u-kept", "team-a", "ConfigMap"),
            known("gone", "u-gone", "team-a", "ConfigMap"),
            known("elsewhere", "u-x", "team-b", "ConfigMap"),
            known("secret", "u-s", "team-a", "Secret"),
        ]);
        let mut tracker = tracker(&spec);
        let mut steps: Vec<Step> = vec![
            Event::Init,
            Event::InitApply(config_map("kept", "u-kept", "8", json!({}))),
        ]
        .into_iter()
        .map(|event| tracker.step(Ok(event), now()))
        .collect();
        let done = tracker.step(Ok(Event::InitDone), now());
        assert_eq!(
            done.vanished,
            vec![Vanished {
                uid: "u-gone".into(),
                namespace: "team-a".into(),
                name: "gone".into()
            }]
        );
        steps.push(done);
        let events: Vec<ChangeEvent> = steps
            .into_iter()
            .flat_map(|step| step.with_deletions("12"))
            .map(|event| event.expect("valid event"))
            .collect();
        let deleted = events.last().expect("a deletion");
        assert_eq!(deleted.kind, ChangeKind::Deleted);
        assert_eq!(deleted.key.to_string(), "prod/core/ConfigMap/team-a/gone");
        assert_eq!(deleted.uid, "u-gone");
        assert_eq!(deleted.resource_version, "12");
        assert_eq!(events[0].kind, ChangeKind::Resync);
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn known_object_seen_again_on_the_watch_is_modified_not_added() {
        let spec = WatchSpec::new("prod", DigestKey::from_bytes([1; 32])).known([KnownObject {
            key: ObjectKey::new("prod", "", "ConfigMap", "team-a", "a"),
            uid: "u-a".into(),
        }]);
        let mut tracker = tracker(&spec);
        let out = feed(
            &mut tracker,
            vec![Event::Apply(config_map("a", "u-a", "2", json!({})))],
        );
        assert_eq!(out, vec![seen(ChangeKind::Modified, "a", "2")]);
    }

    #[test]
    fn derived_objects_are_skipped_unless_recorded() {
        let events = || {
            vec![
                Event::Init,
                Event::InitApply(owned(config_map("rs", "u-rs", "1", json!({})))),
                Event::InitDone,
                Event::Apply(owned(config_map("rs", "u-rs", "2", json!({"k": "v"})))),
                Event::Delete(owned(config_map("rs", "u-rs", "3", json!({"k": "v"})))),
            ]
        };
        let mut skipping = tracker(&WatchSpec::new("prod", DigestKey::from_bytes([1; 32])));
        assert!(feed(&mut skipping, events()).is_empty());

        let mut recording =
            tracker(&WatchSpec::new("prod", DigestKey::from_bytes([1; 32])).record_derived(true));
        let derived: Vec<bool> = events()
            .into_iter()
            .flat_map(|event| recording.step(Ok(event), now()).with_deletions("9"))
            .map(|event| event.expect("valid event").derived)
            .collect();
        assert_eq!(derived, vec![true, true, true]);
    }

    #[test]
    fn malformed_objects_and_watch_errors_become_errors_not_panics() {
        let mut tracker = tracker(&WatchSpec::new("prod", DigestKey::from_bytes([1; 32])));
        let mut nameless = config_map("x", "u-x", "1", json!({}));
        nameless.metadata.uid = None;
        let step = tracker.step(Ok(Event::Apply(nameless)), now());
        let err = step.events[0].as_ref().expect_err("uid is required");
        assert!(err.to_string().contains("configmaps in team-a"), "{err}");
        let step = tracker.step(Err(watcher::Error::NoResourceVersion), now());
        let err = step.events[0].as_ref().expect_err("watch error passed on");
        assert!(matches!(err, Error::Watch { .. }), "{err}");
    }

    #[test]
    fn a_failing_watcher_reports_its_first_error_only_until_it_recovers() {
        let mut tracker = tracker(&WatchSpec::new("prod", DigestKey::from_bytes([1; 32])));
        let errors = |tracker: &mut Tracker, item: watcher::Result<Event<DynamicObject>>| {
            let step = tracker.step(item, now());
            step.events.iter().filter(|event| event.is_err()).count()
        };
        let failure = || Err(watcher::Error::NoResourceVersion);
        assert_eq!(errors(&mut tracker, failure()), 1, "the first is reported");
        // The watcher yields `Init` before every listing attempt, failed or not.
        assert_eq!(errors(&mut tracker, Ok(Event::Init)), 0);
        assert_eq!(errors(&mut tracker, failure()), 0, "retries are not");
        assert_eq!(errors(&mut tracker, Ok(Event::Init)), 0);
        assert_eq!(errors(&mut tracker, failure()), 0);
        assert_eq!(errors(&mut tracker, Ok(Event::Init)), 0);
        assert_eq!(errors(&mut tracker, Ok(Event::InitDone)), 0, "recovered");
        assert_eq!(
            errors(&mut tracker, failure()),
            1,
            "a new streak is reported"
        );
    }

    #[test]
    fn secrets_are_redacted_before_they_leave_the_tracker() {
        let resource = ApiResource {
            kind: "Secret".into(),
            plural: "secrets".into(),
            ..config_map_resource()
        };
        let mut tracker = Tracker::new(
            &WatchSpec::new("prod", DigestKey::from_bytes([1; 32])),
            &resource,
            None,
        );
        let secret: DynamicObject = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "a", "uid": "u", "resourceVersion": "1"},
            "data": {"password": "aHVudGVyMg=="}
        }))
        .expect("valid object");
        let events = tracker
            .step(Ok(Event::Apply(secret)), now())
            .with_deletions("1");
        let event = events[0].as_ref().expect("valid event");
        let text = serde_json::to_string(event).expect("serializes");
        assert!(!text.contains("aHVudGVyMg=="), "{text}");
        assert!(text.contains("sha256:"), "{text}");
        assert_eq!(event.api_version, "v1");
        assert_eq!(event.key.kind, "Secret");
    }
}
