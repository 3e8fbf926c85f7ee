//! Desired state across every configured git source, and the loop that
//! fetches them.
//!
//! Each source is owned by its own fetch task; after a fetch that found new
//! commits it hands a snapshot of its index to the correlator together with
//! the commits, so the correlator judges with the index that matches the
//! records it writes.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use gitstate::{CommitChange, DesiredIndex, GitSource, SourceSpec};
use ledger::Ledger;
use model::{DesiredHistory, GitFetch, GitFetchState, GitSync, ObjectKey, RecordBody};
use tokio::sync::{Notify, mpsc};

use crate::config::Config;

/// News from one source: new commits with the index as of the last of
/// them, a change in how fetching goes, or both.
#[derive(Debug)]
pub struct GitUpdate {
    /// Position of the source in the config.
    pub source: usize,
    /// The commits, oldest first.
    pub changes: Vec<CommitChange>,
    /// The source's index after them.
    pub index: Arc<DesiredIndex>,
    /// Fetching started failing, went stale or recovered.
    pub fetch: Option<GitFetchState>,
}

impl GitUpdate {
    /// The ledger records these commits produce: a rewrite when the branch
    /// was rewritten, one sync per commit and one error per file that did
    /// not parse, then the fetch state.
    pub fn records(&self, source_name: &str) -> Vec<RecordBody> {
        let mut bodies = Vec::new();
        for change in &self.changes {
            bodies.extend(change.rewrite.clone().map(RecordBody::GitRewrite));
            bodies.push(RecordBody::GitSync(GitSync {
                source: source_name.to_owned(),
                commit: change.commit.clone(),
                objects_changed: change.changed.len(),
            }));
            bodies.extend(change.errors.iter().cloned().map(RecordBody::GitError));
        }
        bodies.extend(self.fetch.clone().map(|state| {
            RecordBody::GitFetch(GitFetch {
                source: source_name.to_owned(),
                state,
            })
        }));
        bodies
    }

    /// Keys any of the commits changed.
    pub fn changed_keys(&self) -> BTreeSet<&ObjectKey> {
        self.changes.iter().flat_map(|c| &c.changed).collect()
    }
}

/// The desired state of every source; the first source declaring a key wins.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    names: Vec<String>,
    indexes: Vec<Arc<DesiredIndex>>,
    /// Per source: stale since (the first failed fetch), when stale.
    stale: Vec<Option<DateTime<Utc>>>,
}

impl Desired {
    /// Replaces one source's index.
    pub fn update(&mut self, source: usize, index: Arc<DesiredIndex>) {
        if let Some(slot) = self.indexes.get_mut(source) {
            *slot = index;
        }
    }

    /// Marks source `source` stale since `since`, or fresh (`None`).
    pub fn set_stale(&mut self, source: usize, since: Option<DateTime<Utc>>) {
        if let Some(slot) = self.stale.get_mut(source) {
            *slot = since;
        }
    }

    /// Name of source `source`.
    pub fn name(&self, source: usize) -> &str {
        self.names.get(source).map_or("?", String::as_str)
    }

    /// Git's history for `key`.
    pub fn history(&self, key: &ObjectKey) -> Option<&DesiredHistory> {
        self.indexes.iter().find_map(|index| index.history(key))
    }

    /// The stale sources `key`'s verdict depends on, by name: the source
    /// that declares (or once declared) it, or, for an object no source
    /// declares, every stale source, since the commit that declares it may
    /// be the one not fetched yet.
    pub fn stale_for(&self, key: &ObjectKey) -> Vec<&str> {
        (0..self.stale.len())
            .filter(|&source| self.is_stale(source) && self.depends_on(key, source))
            .map(|source| self.name(source))
            .collect()
    }

    /// Whether source `source` is stale.
    pub fn is_stale(&self, source: usize) -> bool {
        self.stale.get(source).is_some_and(Option::is_some)
    }

    /// Whether `key`'s desired state comes from source `source`: it declares
    /// (or once declared) the key, or no source does.
    pub fn depends_on(&self, key: &ObjectKey, source: usize) -> bool {
        match self
            .indexes
            .iter()
            .position(|index| index.history(key).is_some())
        {
            Some(declaring) => declaring == source,
            None => true,
        }
    }

    /// Every `(apiVersion, kind)` declared at HEAD of any source.
    pub fn kinds(&self) -> BTreeSet<(String, String)> {
        self.indexes
            .iter()
            .flat_map(|index| index.kinds())
            .collect()
    }

    /// Every key declared by any source.
    pub fn declared_keys(&self) -> BTreeSet<&ObjectKey> {
        self.indexes
            .iter()
            .flat_map(|index| index.declared_keys())
            .collect()
    }

    /// Every key and its history, of every source, the first source
    /// declaring a key winning.
    pub fn histories(&self) -> impl Iterator<Item = (&ObjectKey, &DesiredHistory)> {
        let mut seen = std::collections::HashSet::new();
        self.indexes
            .iter()
            .flat_map(|index| index.histories())
            .filter(move |(key, _)| seen.insert(*key))
    }
}

/// A source opened, with the fetch that followed.
#[derive(Debug)]
pub struct Opened {
    /// The source, ready for [`fetch_loop`].
    pub git: GitSource,
    /// How fetching went at start, when the first fetch failed (the
    /// desired state is then what the clone held).
    pub failing: Option<FetchHealth>,
}

/// Opens every source at the commits the ledger recorded (cloning if
/// needed), keying `cluster_scoped` kinds (from the cluster's discovery)
/// without a namespace, and fetches it. A source whose remote is away keeps the desired
/// state its clone holds; that is an update to record too, never an exit.
///
/// Returns the desired state, the updates to record, and the sources.
pub async fn open_sources(
    config: &Config,
    ledger: Option<&Ledger>,
    cluster_scoped: &[(String, String)],
) -> anyhow::Result<(Desired, Vec<GitUpdate>, Vec<Opened>)> {
    let mut desired = Desired::default();
    let mut updates = Vec::new();
    let mut sources = Vec::new();
    for (i, source) in config.sources.iter().enumerate() {
        let spec = SourceSpec {
            name: source.name.clone(),
            url: source.url.clone(),
            branch: source.branch.clone(),
            paths: source.paths.clone(),
            default_namespace: source.default_namespace.clone(),
            cluster: config.cluster.name.clone(),
            cluster_scoped: cluster_scoped.to_vec(),
        };
        let applied: Vec<String> = match ledger {
            Some(ledger) => ledger
                .git_syncs(&source.name)?
                .into_iter()
                .map(|sync| sync.commit.id)
                .collect(),
            None => Vec::new(),
        };
        let data_dir = config.data_dir.clone();
        let (git, fetched) =
            tokio::task::spawn_blocking(move || open_and_fetch(spec, &data_dir, &applied))
                .await
                .context("git task panicked")??;
        let index = Arc::new(git.index().clone());
        let (changes, failing) = match fetched {
            Ok(changes) => {
                tracing::info!(source = %source.name, commits = changes.len(), "desired state loaded");
                (changes, None)
            }
            Err(err) => {
                tracing::error!(source = %source.name, error = %err, head = ?git.head(), "git unreachable at start; using the desired state of the clone");
                let mut health = FetchHealth::new(source.max_staleness, None);
                let since = Utc::now();
                let mut states = vec![health.failed(since, &format!("{err:#}"))];
                // Without a clone there is no desired state at all: judging
                // against nothing, nothing may be enforced.
                if git.head().is_none() {
                    states.push(health.stale_now());
                }
                for state in states {
                    updates.push(GitUpdate {
                        source: i,
                        changes: Vec::new(),
                        index: index.clone(),
                        fetch: state,
                    });
                }
                (Vec::new(), Some(health))
            }
        };
        desired.names.push(source.name.clone());
        desired.indexes.push(index.clone());
        desired.stale.push(None);
        if !changes.is_empty() {
            updates.push(GitUpdate {
                source: i,
                changes,
                index,
                fetch: None,
            });
        }
        sources.push(Opened { git, failing });
    }
    Ok((desired, updates, sources))
}

/// Opens the source; the fetch's outcome is returned, not raised.
fn open_and_fetch(
    spec: SourceSpec,
    data_dir: &Path,
    applied: &[String],
) -> anyhow::Result<(GitSource, anyhow::Result<Vec<CommitChange>>)> {
    let name = spec.name.clone();
    let mut git = GitSource::open(spec, data_dir, applied)
        .with_context(|| format!("cannot open git source `{name}`"))?;
    let fetched = git
        .fetch()
        .with_context(|| format!("cannot fetch git source `{name}`"));
    Ok((git, fetched))
}

/// How fetching one source goes, and what to record when that changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchHealth {
    max_staleness: Duration,
    /// The first failed fetch of the current outage.
    failing: Option<DateTime<Utc>>,
    stale: bool,
}

impl FetchHealth {
    /// Healthy, or failing since `failing`.
    pub fn new(max_staleness: Duration, failing: Option<DateTime<Utc>>) -> Self {
        Self {
            max_staleness,
            failing,
            stale: false,
        }
    }

    /// Stale at once, whatever the limit: what to record, if anything.
    pub fn stale_now(&mut self) -> Option<GitFetchState> {
        let since = self.failing?;
        if std::mem::replace(&mut self.stale, true) {
            return None;
        }
        Some(GitFetchState::Stale {
            since,
            max_staleness: humantime::format_duration(self.max_staleness).to_string(),
        })
    }

    /// A fetch failed at `now` with `error`: what to record, if anything.
    pub fn failed(&mut self, now: DateTime<Utc>, error: &str) -> Option<GitFetchState> {
        if self.failing.is_some() {
            return self.check(now);
        }
        self.failing = Some(now);
        Some(GitFetchState::Failing {
            since: now,
            error: error.to_owned(),
        })
    }

    /// Time passed: the stale record when the outage just outlasted the
    /// limit.
    pub fn check(&mut self, now: DateTime<Utc>) -> Option<GitFetchState> {
        let since = self.failing?;
        let limit = chrono::Duration::from_std(self.max_staleness).unwrap_or(chrono::Duration::MAX);
        if self.stale || now - since < limit {
            return None;
        }
        self.stale_now()
    }

    /// A fetch succeeded at tip `head`: the recovery to record, if there
    /// was an outage.
    pub fn succeeded(&mut self, head: Option<String>) -> Option<GitFetchState> {
        let since = self.failing.take()?;
        self.stale = false;
        Some(GitFetchState::Recovered {
            since,
            head: head.unwrap_or_default(),
        })
    }

    /// When the current outage becomes stale, if it is not yet.
    fn stale_at(&self) -> Option<DateTime<Utc>> {
        let since = self.failing.filter(|_| !self.stale)?;
        Some(since + chrono::Duration::from_std(self.max_staleness).ok()?)
    }
}

/// Fetches `git` every `timing.interval` (and whenever `poke` fires) and
/// sends new commits, and every change in how fetching goes, to the
/// correlator; `ready` says whether the last fetch worked. The last good
/// desired state stays in force while fetches fail, stale after
/// `timing.max_staleness`.
// Each part is a separate concern the caller wires; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub async fn fetch_loop(
    source: usize,
    opened: Opened,
    timing: crate::config::Source,
    poke: Arc<Notify>,
    mut scopes: Option<Scopes>,
    updates: mpsc::Sender<GitUpdate>,
    ready: crate::health::Health,
    metrics: crate::metrics::Metrics,
) -> anyhow::Result<()> {
    let mut git = opened.git;
    let name = git.spec().name.clone();
    let part = format!("git/{name}");
    match &opened.failing {
        Some(_) => ready.set(&part, false, "the last fetch failed"),
        None => {
            ready.set(&part, true, "fetched");
            metrics.git_fetched(&name);
        }
    }
    let mut health = opened
        .failing
        .unwrap_or_else(|| FetchHealth::new(timing.max_staleness, None));
    let mut ticker = tokio::time::interval(timing.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        let stale_in = health
            .stale_at()
            .map(|at| (at - Utc::now()).to_std().unwrap_or_default());
        tokio::select! {
            _ = ticker.tick() => {}
            () = poke.notified() => {}
            Some(kinds) = learn_scopes(&mut scopes) => {
                let learnt = tokio::task::spawn_blocking(move || {
                    let learnt = git.learn_cluster_scoped(&kinds);
                    (git, learnt)
                })
                .await;
                let (returned, learnt) = learnt.context("git task panicked")?;
                git = returned;
                if learnt.with_context(|| format!("cannot rebuild the desired state of `{}`", git.spec().name))? {
                    let update = update_of(source, &git, Vec::new(), None);
                    if updates.send(update).await.is_err() {
                        return Ok(());
                    }
                }
                continue;
            }
            () = sleep_or_never(stale_in) => {
                if let Some(state) = health.check(Utc::now()) {
                    tracing::error!(source = %git.spec().name, "git is stale: enforcement and sync paused for its objects");
                    let update = update_of(source, &git, Vec::new(), Some(state));
                    if updates.send(update).await.is_err() {
                        return Ok(());
                    }
                }
                continue;
            }
        }
        let fetched = tokio::task::spawn_blocking(move || {
            let changes = git.fetch();
            (git, changes)
        })
        .await;
        let (returned, changes) = fetched.context("git fetch task panicked")?;
        git = returned;
        let (changes, state) = match changes {
            Ok(changes) => {
                ready.set(
                    &part,
                    true,
                    format!("fetched at {}", Utc::now().to_rfc3339()),
                );
                metrics.git_fetched(&name);
                let state = health.succeeded(git.head());
                if state.is_some() {
                    tracing::info!(source = %git.spec().name, "git fetch works again");
                }
                (changes, state)
            }
            Err(err) => {
                tracing::warn!(source = %git.spec().name, error = %err, "git fetch failed; keeping the last good desired state");
                // `/readyz` answers without a token: the error (which may
                // name the remote) stays in the log and the ledger.
                ready.set(
                    &part,
                    false,
                    format!("the last fetch failed, at {}", Utc::now().to_rfc3339()),
                );
                metrics.git_fetch_failed(&name);
                (Vec::new(), health.failed(Utc::now(), &format!("{err:#}")))
            }
        };
        if changes.is_empty() && state.is_none() {
            continue;
        }
        let update = update_of(source, &git, changes, state);
        if updates.send(update).await.is_err() {
            return Ok(());
        }
    }
}

/// Where a source learns which kinds are cluster-scoped while it runs:
/// the cluster's discovery, asked again whenever its CRDs change.
pub struct Scopes {
    /// Discovery goes through it.
    pub client: kube::Client,
    /// Ticks when CRDs change.
    pub crds: watch::CrdChanges,
}

impl std::fmt::Debug for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scopes").finish_non_exhaustive()
    }
}

/// The cluster-scoped kinds after the next CRD change; never without
/// `scopes`, nor once its CRD watch ended. A failed discovery is logged and
/// waits for the next change.
async fn learn_scopes(scopes: &mut Option<Scopes>) -> Option<Vec<(String, String)>> {
    loop {
        let Some(current) = scopes.as_mut() else {
            return std::future::pending().await;
        };
        if current.crds.changed().await.is_err() {
            *scopes = None;
            continue;
        }
        match watch::discovery::cluster_scoped_kinds(&current.client).await {
            Ok(kinds) => return Some(kinds),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the cluster's kinds after a CRD change")
            }
        }
    }
}

/// An update of `git`'s source with its index now.
fn update_of(
    source: usize,
    git: &GitSource,
    changes: Vec<CommitChange>,
    fetch: Option<GitFetchState>,
) -> GitUpdate {
    GitUpdate {
        source,
        changes,
        index: Arc::new(git.index().clone()),
        fetch,
    }
}

/// Sleeps for `duration`, or forever without one.
async fn sleep_or_never(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("valid time")
    }

    #[test]
    fn an_outage_is_recorded_once_failing_once_stale_and_once_recovered() {
        let mut health = FetchHealth::new(Duration::from_secs(120), None);
        assert_eq!(health.succeeded(Some("a".into())), None, "no outage");
        assert!(matches!(
            health.failed(at(0), "refused"),
            Some(GitFetchState::Failing { since, .. }) if since == at(0)
        ));
        assert_eq!(health.failed(at(60), "refused"), None, "still failing");
        assert_eq!(health.stale_at(), Some(at(120)));
        assert_eq!(health.check(at(119)), None);
        assert!(matches!(
            health.check(at(120)),
            Some(GitFetchState::Stale { since, ref max_staleness }) if since == at(0) && max_staleness == "2m"
        ));
        assert_eq!(health.check(at(500)), None, "stale once");
        assert_eq!(health.stale_at(), None);
        assert_eq!(
            health.succeeded(Some("b".into())),
            Some(GitFetchState::Recovered {
                since: at(0),
                head: "b".into()
            })
        );
        assert_eq!(health.succeeded(Some("b".into())), None);
    }

    #[test]
    fn a_source_failing_at_start_goes_stale_after_the_limit() {
        let mut health = FetchHealth::new(Duration::from_secs(10), Some(at(0)));
        assert_eq!(health.failed(at(5), "refused"), None);
        assert!(matches!(
            health.failed(at(10), "refused"),
            Some(GitFetchState::Stale { .. })
        ));
    }

    #[test]
    fn a_source_without_desired_state_is_stale_at_once() {
        let mut health = FetchHealth::new(Duration::from_secs(120), None);
        assert_eq!(health.stale_now(), None, "not failing: not stale");
        health.failed(at(0), "refused");
        assert!(
            matches!(health.stale_now(), Some(GitFetchState::Stale { since, .. }) if since == at(0))
        );
        assert_eq!(health.stale_now(), None, "once");
        assert_eq!(health.check(at(500)), None);
    }
}
