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
use gitstate::{CommitChange, DesiredIndex, GitSource, SourceSpec};
use model::{DesiredHistory, GitSync, ObjectKey, RecordBody};
use tokio::sync::{Notify, mpsc};

use crate::config::Config;

/// New commits from one source, with the index as of the last of them.
#[derive(Debug)]
pub struct GitUpdate {
    /// Position of the source in the config.
    pub source: usize,
    /// The commits, oldest first.
    pub changes: Vec<CommitChange>,
    /// The source's index after them.
    pub index: Arc<DesiredIndex>,
}

impl GitUpdate {
    /// The ledger records these commits produce: one sync per commit and one
    /// error per file that did not parse.
    pub fn records(&self, source_name: &str) -> Vec<RecordBody> {
        let mut bodies = Vec::new();
        for change in &self.changes {
            bodies.push(RecordBody::GitSync(GitSync {
                source: source_name.to_owned(),
                commit: change.commit.clone(),
                objects_changed: change.changed.len(),
            }));
            bodies.extend(change.errors.iter().cloned().map(RecordBody::GitError));
        }
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
}

impl Desired {
    /// Replaces one source's index.
    pub fn update(&mut self, source: usize, index: Arc<DesiredIndex>) {
        if let Some(slot) = self.indexes.get_mut(source) {
            *slot = index;
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
}

/// Opens (cloning if needed) every source and reads its history so far.
///
/// Returns the desired state, the updates to record, and the sources, ready
/// for [`fetch_loop`].
pub async fn open_sources(
    config: &Config,
) -> anyhow::Result<(Desired, Vec<GitUpdate>, Vec<GitSource>)> {
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
        };
        let data_dir = config.data_dir.clone();
        let (git, changes) = tokio::task::spawn_blocking(move || open_and_fetch(spec, &data_dir))
            .await
            .context("git task panicked")??;
        tracing::info!(source = %source.name, commits = changes.len(), "desired state loaded");
        let index = Arc::new(git.index().clone());
        desired.names.push(source.name.clone());
        desired.indexes.push(index.clone());
        if !changes.is_empty() {
            updates.push(GitUpdate {
                source: i,
                changes,
                index,
            });
        }
        sources.push(git);
    }
    Ok((desired, updates, sources))
}

fn open_and_fetch(
    spec: SourceSpec,
    data_dir: &Path,
) -> anyhow::Result<(GitSource, Vec<CommitChange>)> {
    let name = spec.name.clone();
    let mut git = GitSource::open(spec, data_dir)
        .with_context(|| format!("cannot open git source `{name}`"))?;
    let changes = git
        .fetch()
        .with_context(|| format!("cannot fetch git source `{name}`"))?;
    Ok((git, changes))
}

/// Fetches `git` every `interval` (and whenever `poke` fires) and sends new
/// commits to the correlator. Fetch errors are logged and retried on the
/// next tick: the last good desired state stays in force.
pub async fn fetch_loop(
    source: usize,
    mut git: GitSource,
    interval: Duration,
    poke: Arc<Notify>,
    updates: mpsc::Sender<GitUpdate>,
) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = poke.notified() => {}
        }
        let fetched = tokio::task::spawn_blocking(move || {
            let changes = git.fetch();
            (git, changes)
        })
        .await;
        let (returned, changes) = fetched.context("git fetch task panicked")?;
        git = returned;
        match changes {
            Ok(changes) if changes.is_empty() => {}
            Ok(changes) => {
                let update = GitUpdate {
                    source,
                    changes,
                    index: Arc::new(git.index().clone()),
                };
                if updates.send(update).await.is_err() {
                    return Ok(());
                }
            }
            Err(err) => {
                tracing::warn!(source = %git.spec().name, error = %err, "git fetch failed; keeping the last good desired state");
            }
        }
    }
}
