//! One git source: a bare clone in the data directory, fetched on demand,
//! whose new first-parent commits are applied to the desired-state index.
//!
//! All of it blocks (git2 does file and network I/O); async callers run it in
//! `tokio::task::spawn_blocking`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use git2::{
    AutotagOption, Cred, CredentialType, Delta, FetchOptions, FileMode, Oid, RemoteCallbacks,
    Repository, Tree,
};
use model::{Commit, GitError, GitRewrite, ObjectKey};
use tracing::{debug, info, info_span, warn};

use crate::index::{DesiredIndex, FileChanges};
use crate::manifest::{KeyRules, is_manifest_path, parse_file};
use crate::refs::parse_refs;
use crate::spec::SourceSpec;

/// Errors of a git source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The source name cannot name a directory.
    #[error(
        "source name `{0}` cannot name its clone: use letters, digits, `-`, `_` and `.`, \
         not starting with `.`"
    )]
    InvalidName(String),
    /// The data directory could not be created.
    #[error("cannot create directory `{path}`")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A git operation failed.
    #[error("source `{name}`: cannot {action}")]
    Git {
        /// The source.
        name: String,
        /// What was being done, e.g. `fetch branch main from <url>`.
        action: String,
        /// The git error.
        #[source]
        source: git2::Error,
    },
    /// The configured branch does not exist in the repository.
    #[error("source `{name}`: branch `{branch}` not found at {url}; check the branch name")]
    BranchNotFound {
        /// The source.
        name: String,
        /// The configured branch.
        branch: String,
        /// The repository URL.
        url: String,
    },
}

/// Result of git source operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What one new commit changed in the desired state.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitChange {
    /// The commit.
    pub commit: Commit,
    /// Keys whose desired manifest changed (declared, changed or removed), sorted.
    pub changed: Vec<ObjectKey>,
    /// Files of this commit that were rejected; their objects keep their
    /// last good desired state.
    pub errors: Vec<GitError>,
    /// On the first commit applied after the branch was rewritten: the
    /// commits applied before that the new history drops.
    pub rewrite: Option<GitRewrite>,
}

/// A git source: its clone, and the desired-state index built from the
/// first-parent history of its branch.
pub struct GitSource {
    spec: SourceSpec,
    rules: KeyRules,
    repo: Repository,
    index: DesiredIndex,
    /// Every commit applied to the index, in order: the caller records
    /// them (the ledger does) and hands them back to [`GitSource::open`].
    applied: Vec<Oid>,
    /// The last commit applied to the index.
    processed: Option<Oid>,
    /// The first-parent chain of `processed`, back to the root.
    processed_chain: HashSet<Oid>,
    /// Whether a CRD taught the rules a cluster-scoped kind since the
    /// index was last built: objects declared before it need keys again.
    rules_learnt: bool,
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("spec", &self.spec)
            .field("repo", &self.repo.path())
            .field("processed", &self.processed)
            .finish_non_exhaustive()
    }
}

impl GitSource {
    /// Opens the source's clone in `data_dir/git/<name>` (creating an empty
    /// one the first time) and rebuilds the index from `applied`: the
    /// commits applied before, in order, as the caller recorded them. Opening
    /// needs no network while the clone holds those commits, so a source
    /// whose remote is away still has its last desired state. Nothing is
    /// reported as new until [`fetch`] finds commits after the last of them.
    ///
    /// [`fetch`]: GitSource::fetch
    pub fn open(spec: SourceSpec, data_dir: &Path, applied: &[String]) -> Result<Self> {
        if !spec.name_is_valid() {
            return Err(Error::InvalidName(spec.name));
        }
        let parent = data_dir.join("git");
        std::fs::create_dir_all(&parent).map_err(|source| Error::CreateDir {
            path: parent.clone(),
            source,
        })?;
        let dir = parent.join(&spec.name);
        let repo = if dir.exists() {
            Repository::open_bare(&dir)
        } else {
            Repository::init_bare(&dir)
        }
        .map_err(|source| {
            let action = format!(
                "open clone `{}` (remove the directory to clone again)",
                dir.display()
            );
            git_error(&spec, action, source)
        })?;
        let rules = KeyRules::new(&spec.cluster, &spec.default_namespace)
            .with_cluster_scoped(spec.cluster_scoped.iter().cloned());
        let mut source = Self {
            spec,
            rules,
            repo,
            index: DesiredIndex::default(),
            applied: Vec::new(),
            processed: None,
            processed_chain: HashSet::new(),
            rules_learnt: false,
        };
        source.applied = source.known_commits(applied);
        source.rebuild()?;
        Ok(source)
    }

    /// The commits of `ids` the clone holds (fetching once when some are
    /// missing); a commit no longer anywhere, dropped by a rewrite before
    /// this clone was made, is skipped.
    fn known_commits(&self, ids: &[String]) -> Vec<Oid> {
        let parse = |id: &String| Oid::from_str(id).ok();
        let missing = |id: &Oid| self.repo.find_commit(*id).is_err();
        if ids.iter().filter_map(parse).any(|id| missing(&id))
            && let Err(err) = self.download()
        {
            warn!(source = %self.spec.name, error = %err, "cannot fetch the recorded commits; using what the clone holds");
        }
        ids.iter()
            .filter_map(parse)
            .filter(|id| {
                let gone = missing(id);
                if gone {
                    warn!(source = %self.spec.name, commit = %id, "recorded commit is in no history any more; skipped");
                }
                !gone
            })
            .collect()
    }

    /// Treats these `(API group, kind)`s as cluster-scoped too (e.g. from API
    /// discovery after a CRD appeared); when any is new, rebuilds the index
    /// so objects of those kinds are keyed without a namespace. Returns
    /// whether any was new.
    pub fn learn_cluster_scoped(&mut self, kinds: &[(String, String)]) -> Result<bool> {
        let new: Vec<(String, String)> = kinds
            .iter()
            .filter(|(group, kind)| !self.rules.is_cluster_scoped(group, kind))
            .cloned()
            .collect();
        if new.is_empty() {
            return Ok(false);
        }
        debug!(source = %self.spec.name, kinds = ?new, "cluster-scoped kinds from discovery");
        self.rules = self.rules.clone().with_cluster_scoped(new);
        self.rebuild()?;
        Ok(true)
    }

    /// The source's configuration.
    pub fn spec(&self) -> &SourceSpec {
        &self.spec
    }

    /// The desired-state index as of the last processed commit.
    pub fn index(&self) -> &DesiredIndex {
        &self.index
    }

    /// The last commit applied to the index, if any.
    pub fn head(&self) -> Option<String> {
        self.processed.map(|id| id.to_string())
    }

    /// Fetches the branch and applies every first-parent commit not yet
    /// processed, oldest first, each diffed against the one before it.
    /// Returned commits count as processed until the source is opened again;
    /// the caller records them to make that last.
    ///
    /// When the branch was rewritten (force-pushed), the new commits since
    /// the fork are applied on top of the old state (each diff then
    /// starts from the last applied tree, so the index matches the new
    /// HEAD, and the dropped commits stay in each object's history); when
    /// it was reset to an older commit, that commit is applied again. The
    /// first change then names the dropped commits.
    pub fn fetch(&mut self) -> Result<Vec<CommitChange>> {
        self.download()?;
        let tip = self.tip()?;
        let (new, diverged) = self.unprocessed(tip)?;
        let mut rewrite = if diverged {
            let rewrite = self.rewrite(tip)?;
            warn!(source = %self.spec.name, branch = %self.spec.branch, dropped = rewrite.dropped.len(), "branch history was rewritten");
            Some(rewrite)
        } else {
            None
        };
        let before = self.applied.len();
        let mut changes = Vec::with_capacity(new.len());
        for id in new {
            match self.apply(id) {
                Ok(mut change) => {
                    change.rewrite = rewrite.take();
                    changes.push(change);
                }
                Err(err) => {
                    // Forget the commits applied so far, so that the next
                    // fetch reports them again.
                    self.applied.truncate(before);
                    if let Err(rebuild) = self.rebuild() {
                        warn!(source = %self.spec.name, error = %rebuild, "cannot rebuild the desired index");
                    }
                    return Err(err);
                }
            }
        }
        if diverged {
            self.processed_chain = self.first_parent_chain(tip)?.into_iter().collect();
        }
        if self.rules_learnt {
            self.rebuild()?;
        }
        if !changes.is_empty() {
            info!(source = %self.spec.name, commits = changes.len(), head = %tip, "applied new commits");
        }
        Ok(changes)
    }

    /// What a rewrite to `tip` dropped: the applied first-parent commits
    /// from the last processed one back to the first that `tip`'s history
    /// still holds, newest first.
    fn rewrite(&self, tip: Oid) -> Result<GitRewrite> {
        let kept: HashSet<Oid> = self.first_parent_chain(tip)?.into_iter().collect();
        let mut dropped = Vec::new();
        let mut id = self.processed;
        while let Some(current) = id.filter(|id| !kept.contains(id)) {
            let commit = self.repo.find_commit(current).map_err(|source| {
                git_error(&self.spec, format!("read commit {current}"), source)
            })?;
            dropped.push(describe(&commit));
            id = commit.parent_ids().next();
        }
        Ok(GitRewrite {
            source: self.spec.name.clone(),
            from: self.processed.map(|id| id.to_string()).unwrap_or_default(),
            to: tip.to_string(),
            dropped,
        })
    }

    /// Fetches the branch into `refs/remotes/origin/<branch>`.
    fn download(&self) -> Result<()> {
        let refspec = format!("+refs/heads/{0}:{1}", self.spec.branch, self.tracking_ref());
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(credentials())
            .download_tags(AutotagOption::None);
        let action = || format!("fetch branch `{}` from {}", self.spec.branch, self.spec.url);
        let mut remote = self
            .repo
            .remote_anonymous(&self.spec.url)
            .map_err(|source| git_error(&self.spec, action(), source))?;
        remote
            .fetch(&[refspec], Some(&mut options), None)
            .map_err(|source| git_error(&self.spec, action(), source))
    }

    /// Where the fetched branch is kept in the clone.
    fn tracking_ref(&self) -> String {
        format!("refs/remotes/origin/{}", self.spec.branch)
    }

    /// The fetched tip of the branch.
    fn tip(&self) -> Result<Oid> {
        self.repo
            .refname_to_id(&self.tracking_ref())
            .map_err(|_| Error::BranchNotFound {
                name: self.spec.name.clone(),
                branch: self.spec.branch.clone(),
                url: self.spec.url.clone(),
            })
    }

    /// The first-parent commits from `tip` back that are not processed yet,
    /// oldest first, and whether the walk missed the last processed commit
    /// (history rewritten). A branch reset to an already processed commit
    /// yields that commit again.
    fn unprocessed(&self, tip: Oid) -> Result<(Vec<Oid>, bool)> {
        if Some(tip) == self.processed {
            return Ok((Vec::new(), false));
        }
        let mut new = Vec::new();
        let mut id = Some(tip);
        while let Some(current) = id.filter(|id| !self.processed_chain.contains(id)) {
            new.push(current);
            id = self.first_parent(current)?;
        }
        let diverged = self.processed.is_some() && id != self.processed;
        if new.is_empty() {
            new.push(tip);
        }
        new.reverse();
        Ok((new, diverged))
    }

    /// The first parent of commit `id`, if it has one.
    fn first_parent(&self, id: Oid) -> Result<Option<Oid>> {
        let commit = self
            .repo
            .find_commit(id)
            .map_err(|source| git_error(&self.spec, format!("read commit {id}"), source))?;
        Ok(commit.parent_ids().next())
    }

    /// `tip` and its first-parent ancestors, newest first.
    fn first_parent_chain(&self, tip: Oid) -> Result<Vec<Oid>> {
        let mut chain = Vec::new();
        let mut id = Some(tip);
        while let Some(current) = id {
            chain.push(current);
            id = self.first_parent(current)?;
        }
        Ok(chain)
    }

    /// Rebuilds the index by applying the commits applied so far again, in
    /// order, without reporting anything.
    /// A CRD met on the way that makes a kind cluster-scoped starts it over
    /// with that rule, so every object of the kind is keyed without a
    /// namespace.
    fn rebuild(&mut self) -> Result<()> {
        let applied = std::mem::take(&mut self.applied);
        loop {
            self.index = DesiredIndex::default();
            self.processed = None;
            self.applied.clear();
            self.rules_learnt = false;
            for id in &applied {
                self.apply(*id)?;
            }
            if !self.rules_learnt {
                break;
            }
        }
        self.processed_chain = match self.processed {
            Some(last) => self.first_parent_chain(last)?.into_iter().collect(),
            None => HashSet::new(),
        };
        if let Some(last) = self.processed {
            debug!(source = %self.spec.name, head = %last, commits = applied.len(), "rebuilt desired index");
        }
        self.applied = applied;
        Ok(())
    }

    /// Applies commit `id` to the index: the manifest files that differ
    /// between the last applied tree and its tree are parsed or removed.
    fn apply(&mut self, id: Oid) -> Result<CommitChange> {
        let git_commit = self
            .repo
            .find_commit(id)
            .map_err(|source| git_error(&self.spec, format!("read commit {id}"), source))?;
        let commit = describe(&git_commit);
        let _span =
            info_span!("git commit", source = %self.spec.name, commit = %commit.short()).entered();
        let files = {
            let tree = self.tree_of(Some(id))?;
            let base = self.tree_of(self.processed)?;
            self.file_changes(base.as_ref(), tree.as_ref())?
        };
        self.rules_learnt |= learn_scopes(&mut self.rules, &files);
        let applied = self.index.apply(&commit, files);
        let errors: Vec<GitError> = applied
            .failures
            .into_iter()
            .map(|(file, err)| {
                warn!(file = %file, line = ?err.line(), error = %err, "manifest file rejected");
                GitError {
                    source: self.spec.name.clone(),
                    commit: commit.id.clone(),
                    file,
                    line: err.line(),
                    message: err.to_string(),
                }
            })
            .collect();
        self.processed = Some(id);
        self.processed_chain.insert(id);
        self.applied.push(id);
        debug!(
            changed = applied.changed.len(),
            errors = errors.len(),
            "applied commit"
        );
        Ok(CommitChange {
            commit,
            changed: applied.changed,
            errors,
            rewrite: None,
        })
    }

    /// The tree of commit `id`, or `None` for no commit.
    fn tree_of(&self, id: Option<Oid>) -> Result<Option<Tree<'_>>> {
        let Some(id) = id else {
            return Ok(None);
        };
        self.repo
            .find_commit(id)
            .and_then(|commit| commit.tree())
            .map(Some)
            .map_err(|source| {
                git_error(&self.spec, format!("read the tree of commit {id}"), source)
            })
    }

    /// The manifest files under the source's paths that differ between
    /// `base` and `tree`: which are gone, and the parse of each new version.
    fn file_changes(
        &self,
        base: Option<&Tree<'_>>,
        tree: Option<&Tree<'_>>,
    ) -> Result<FileChanges> {
        let diff = self
            .repo
            .diff_tree_to_tree(base, tree, None)
            .map_err(|source| git_error(&self.spec, "diff trees".to_owned(), source))?;
        let relevant = |path: &str| is_manifest_path(path) && self.spec.covers(path);
        let mut old_paths = BTreeSet::new();
        let mut new_blobs = BTreeMap::new();
        for delta in diff.deltas() {
            let old = delta.old_file();
            let new = delta.new_file();
            if delta.status() != Delta::Added {
                let path = path_of(old.path_bytes());
                if relevant(&path) {
                    old_paths.insert(path);
                }
            }
            let is_file = matches!(new.mode(), FileMode::Blob | FileMode::BlobExecutable);
            if delta.status() != Delta::Deleted && is_file {
                let path = path_of(new.path_bytes());
                if relevant(&path) {
                    new_blobs.insert(path, new.id());
                }
            }
        }
        let removed = old_paths
            .into_iter()
            .filter(|path| !new_blobs.contains_key(path))
            .collect();
        let mut parsed = Vec::with_capacity(new_blobs.len());
        for (path, blob_id) in new_blobs {
            let blob = self
                .repo
                .find_blob(blob_id)
                .map_err(|source| git_error(&self.spec, format!("read file `{path}`"), source))?;
            let outcome = parse_file(&path, blob.content(), &self.rules);
            parsed.push((path, outcome));
        }
        Ok(FileChanges { removed, parsed })
    }
}

/// Takes the scope of the custom resources that CRDs among `files` declare
/// cluster-scoped into `rules`; whether any was new.
fn learn_scopes(rules: &mut KeyRules, files: &FileChanges) -> bool {
    let learnt: Vec<(String, String)> = files
        .parsed
        .iter()
        .filter_map(|(_, outcome)| outcome.as_ref().ok())
        .flatten()
        .filter_map(|declared| cluster_scoped_crd(&declared.manifest))
        .filter(|(group, kind)| !rules.is_cluster_scoped(group, kind))
        .collect();
    if learnt.is_empty() {
        return false;
    }
    debug!(kinds = ?learnt, "cluster-scoped custom resources");
    *rules = rules.clone().with_cluster_scoped(learnt);
    true
}

/// The `(group, kind)` of the custom resources `manifest` defines, when it
/// is a CRD with `scope: Cluster`.
fn cluster_scoped_crd(manifest: &serde_json::Value) -> Option<(String, String)> {
    let is_crd = manifest.get("kind")?.as_str()? == "CustomResourceDefinition"
        && manifest
            .get("apiVersion")?
            .as_str()?
            .starts_with("apiextensions.k8s.io/");
    let spec = manifest.get("spec")?;
    if !is_crd || spec.get("scope")?.as_str()? != "Cluster" {
        return None;
    }
    let group = spec.get("group")?.as_str()?;
    let kind = spec.pointer("/names/kind")?.as_str()?;
    Some((group.to_owned(), kind.to_owned()))
}

/// A repository path as text (paths that are not UTF-8 are shown lossily).
fn path_of(bytes: Option<&[u8]>) -> String {
    bytes
        .map(String::from_utf8_lossy)
        .unwrap_or_default()
        .into_owned()
}

/// The model's view of a git commit.
fn describe(commit: &git2::Commit<'_>) -> Commit {
    let author = commit.author();
    let message = String::from_utf8_lossy(commit.message_bytes());
    let time: DateTime<Utc> =
        DateTime::from_timestamp(commit.time().seconds(), 0).unwrap_or_default();
    Commit {
        id: commit.id().to_string(),
        time,
        author: format!(
            "{} <{}>",
            String::from_utf8_lossy(author.name_bytes()),
            String::from_utf8_lossy(author.email_bytes())
        ),
        summary: commit
            .summary_bytes()
            .map(|summary| String::from_utf8_lossy(summary).into_owned())
            .unwrap_or_default(),
        refs: parse_refs(&message),
    }
}

/// Credentials for fetching: the ssh agent for ssh URLs, git's credential
/// helpers otherwise; each is offered once, so a refusal ends the fetch
/// instead of looping.
fn credentials<'a>() -> RemoteCallbacks<'a> {
    let mut callbacks = RemoteCallbacks::new();
    let mut tried = CredentialType::empty();
    callbacks.credentials(move |_url, username, allowed| {
        let user = username.unwrap_or("git");
        if allowed.contains(CredentialType::USERNAME) && !tried.contains(CredentialType::USERNAME) {
            tried |= CredentialType::USERNAME;
            return Cred::username(user);
        }
        if allowed.contains(CredentialType::SSH_KEY) && !tried.contains(CredentialType::SSH_KEY) {
            tried |= CredentialType::SSH_KEY;
            return Cred::ssh_key_from_agent(user);
        }
        if allowed.contains(CredentialType::DEFAULT) && !tried.contains(CredentialType::DEFAULT) {
            tried |= CredentialType::DEFAULT;
            return Cred::default();
        }
        Err(git2::Error::from_str(
            "no accepted credentials: use a URL that needs none, or load the ssh key into ssh-agent",
        ))
    });
    callbacks
}

/// A git error of `spec`'s source while doing `action`.
fn git_error(spec: &SourceSpec, action: String, source: git2::Error) -> Error {
    Error::Git {
        name: spec.name.clone(),
        action,
        source,
    }
}
