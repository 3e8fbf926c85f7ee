//! A git source against real repositories, made with git2 and cloned
//! through `file://` URLs.

use std::cell::Cell;
use std::path::Path;

use driftwarden_gitstate::{CommitChange, Error, GitSource, SourceSpec};
use git2::{Oid, Repository, RepositoryInitOptions, ResetType, Signature, Time};
use model::ObjectKey;
use serde_json::json;
use tempfile::TempDir;

/// A repository with a work tree on branch `main`, built commit by commit.
struct TestRepo {
    dir: TempDir,
    repo: Repository,
    /// Seconds added to each commit's time, so commits are ordered.
    clock: Cell<i64>,
}

impl TestRepo {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut options = RepositoryInitOptions::new();
        options.initial_head("main");
        let repo = Repository::init_opts(dir.path(), &options).expect("init repo");
        Self {
            dir,
            repo,
            clock: Cell::new(1_700_000_000),
        }
    }

    /// Writes `files` (path, content) and commits them.
    fn commit(self, message: &str, files: &[(&str, &str)]) -> Self {
        self.write(files);
        self.commit_index(message);
        self
    }

    /// Deletes `paths` and commits.
    fn delete(self, message: &str, paths: &[&str]) -> Self {
        let mut index = self.repo.index().expect("index");
        for path in paths {
            std::fs::remove_file(self.dir.path().join(path)).expect("remove file");
            index.remove_path(Path::new(path)).expect("unstage file");
        }
        index.write().expect("write index");
        self.commit_index(message);
        self
    }

    /// Moves `from` to `to` and commits.
    fn rename(self, message: &str, from: &str, to: &str) -> Self {
        let content = std::fs::read_to_string(self.dir.path().join(from)).expect("read file");
        let mut index = self.repo.index().expect("index");
        std::fs::remove_file(self.dir.path().join(from)).expect("remove file");
        index.remove_path(Path::new(from)).expect("unstage file");
        index.write().expect("write index");
        self.write(&[(to, &content)]);
        self.commit_index(message);
        self
    }

    /// Commits `files` on a side branch off HEAD, then merges that branch
    /// into `main` with a merge commit (HEAD first parent).
    fn merge(self, side_message: &str, message: &str, files: &[(&str, &str)]) -> Self {
        self.write(files);
        {
            let tree_id = self
                .repo
                .index()
                .expect("index")
                .write_tree()
                .expect("write tree");
            let tree = self.repo.find_tree(tree_id).expect("tree");
            let head = self.head_commit();
            let sig = self.signature();
            let side = self
                .repo
                .commit(None, &sig, &sig, side_message, &tree, &[&head])
                .expect("side commit");
            let side = self.repo.find_commit(side).expect("side commit");
            let sig = self.signature();
            self.repo
                .commit(Some("HEAD"), &sig, &sig, message, &tree, &[&head, &side])
                .expect("merge commit");
        }
        self
    }

    /// Resets `main` (and the work tree) to `id`, as before a force push.
    fn reset_to(self, id: Oid) -> Self {
        {
            let object = self.repo.find_object(id, None).expect("commit");
            self.repo
                .reset(&object, ResetType::Hard, None)
                .expect("reset");
        }
        self
    }

    fn head(&self) -> Oid {
        self.head_commit().id()
    }

    fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }

    fn write(&self, files: &[(&str, &str)]) {
        let mut index = self.repo.index().expect("index");
        for (path, content) in files {
            let full = self.dir.path().join(path);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent).expect("create dirs");
            }
            std::fs::write(&full, content).expect("write file");
            index.add_path(Path::new(path)).expect("stage file");
        }
        index.write().expect("write index");
    }

    fn commit_index(&self, message: &str) {
        let tree_id = self
            .repo
            .index()
            .expect("index")
            .write_tree()
            .expect("write tree");
        let tree = self.repo.find_tree(tree_id).expect("tree");
        let sig = self.signature();
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        self.repo
            .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .expect("commit");
    }

    fn head_commit(&self) -> git2::Commit<'_> {
        self.repo
            .head()
            .and_then(|h| h.peel_to_commit())
            .expect("head commit")
    }

    fn signature(&self) -> Signature<'static> {
        self.clock.set(self.clock.get() + 60);
        Signature::new(
            "Dana Dev",
            "dana@example.com",
            &Time::new(self.clock.get(), 0),
        )
        .expect("signature")
    }
}

/// A data directory and the spec of a source over `repo`.
struct Setup {
    data: TempDir,
    spec: SourceSpec,
}

impl Setup {
    fn new(repo: &TestRepo) -> Self {
        Self {
            data: tempfile::tempdir().expect("temp dir"),
            spec: SourceSpec {
                name: "apps".to_owned(),
                url: repo.url(),
                branch: "main".to_owned(),
                paths: Vec::new(),
                default_namespace: "team-a".to_owned(),
                cluster: "prod".to_owned(),
                cluster_scoped: Vec::new(),
            },
        }
    }

    fn paths(mut self, paths: &[&str]) -> Self {
        self.spec.paths = paths.iter().map(|p| (*p).to_owned()).collect();
        self
    }

    fn open(&self) -> GitSource {
        self.reopen(&[])
    }

    /// Opens the source after `applied` were recorded.
    fn reopen(&self, applied: &[String]) -> GitSource {
        GitSource::open(self.spec.clone(), self.data.path(), applied).expect("open source")
    }
}

fn config_map(name: &str, value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  v: \"{value}\"\n")
}

fn cm_key(name: &str) -> ObjectKey {
    ObjectKey::new("prod", "", "ConfigMap", "team-a", name)
}

/// The `data.v` of the config map `name` declared at HEAD.
fn declared_value(source: &GitSource, name: &str) -> Option<String> {
    let manifest = source.index().history(&cm_key(name))?.current()?;
    Some(manifest["data"]["v"].as_str()?.to_owned())
}

fn summaries(changes: &[CommitChange]) -> Vec<&str> {
    changes.iter().map(|c| c.commit.summary.as_str()).collect()
}

#[test]
fn the_whole_first_parent_history_is_indexed_oldest_first() {
    let repo = TestRepo::new()
        .commit("add web", &[("apps/web.yaml", &config_map("web", "1"))])
        .commit("bump web", &[("apps/web.yaml", &config_map("web", "2"))]);
    let setup = Setup::new(&repo);
    let mut source = setup.open();
    assert!(
        source.index().head().is_none(),
        "nothing is applied before the first fetch"
    );

    let changes = source.fetch().expect("fetch");
    assert_eq!(summaries(&changes), ["add web", "bump web"]);
    assert!(changes.iter().all(|c| c.changed == [cm_key("web")]));
    let history = source.index().history(&cm_key("web")).expect("declared");
    let commits: Vec<&str> = history
        .entries
        .iter()
        .map(|e| e.commit.id.as_str())
        .collect();
    assert_eq!(
        commits,
        [changes[0].commit.id.as_str(), changes[1].commit.id.as_str()]
    );
    assert_eq!(declared_value(&source, "web").as_deref(), Some("2"));
    assert_eq!(
        source.index().head().map(|c| c.id.clone()),
        Some(repo.head().to_string())
    );
    assert_eq!(changes[1].commit.author, "Dana Dev <dana@example.com>");
    assert!(changes[0].commit.time < changes[1].commit.time);
}

#[test]
fn a_later_commit_is_fetched_and_only_its_changed_files_are_parsed() {
    let repo = TestRepo::new().commit(
        "start",
        &[
            ("a.yaml", &config_map("a", "1")),
            ("b.yaml", "kind: [broken\n"),
        ],
    );
    let setup = Setup::new(&repo);
    let mut source = setup.open();
    let first = source.fetch().expect("fetch");
    assert_eq!(first[0].errors.len(), 1, "the broken file is reported once");
    assert!(source.fetch().expect("fetch again").is_empty());

    let repo = repo.commit("bump a", &[("a.yaml", &config_map("a", "2"))]);
    let later = source.fetch().expect("fetch");
    assert_eq!(summaries(&later), ["bump a"]);
    assert_eq!(later[0].changed, [cm_key("a")]);
    assert!(
        later[0].errors.is_empty(),
        "the unchanged broken file is not parsed again"
    );
    assert_eq!(later[0].commit.id, repo.head().to_string());
    assert_eq!(declared_value(&source, "a").as_deref(), Some("2"));
}

#[test]
fn a_deleted_file_makes_its_objects_absent() {
    let repo = TestRepo::new()
        .commit(
            "add",
            &[
                ("a.yaml", &config_map("a", "1")),
                ("b.yaml", &config_map("b", "1")),
            ],
        )
        .delete("drop a", &["a.yaml"]);
    let setup = Setup::new(&repo);
    let mut source = setup.open();
    let changes = source.fetch().expect("fetch");
    assert_eq!(changes[1].changed, [cm_key("a")]);
    let history = source.index().history(&cm_key("a")).expect("known");
    assert_eq!(history.entries.len(), 2);
    assert_eq!(history.current(), None);
    assert_eq!(
        history.head().map(|e| e.commit.summary.as_str()),
        Some("drop a")
    );
    let declared: Vec<&ObjectKey> = source.index().declared_keys().collect();
    assert_eq!(declared, [&cm_key("b")]);
}

#[test]
fn a_moved_object_is_not_deleted() {
    let repo = TestRepo::new()
        .commit("add", &[("old/a.yaml", &config_map("a", "1"))])
        .rename("move", "old/a.yaml", "new/a.yaml");
    let setup = Setup::new(&repo);
    let mut source = setup.open();
    let changes = source.fetch().expect("fetch");
    assert_eq!(summaries(&changes), ["add", "move"]);
    assert!(changes[1].changed.is_empty(), "{:?}", changes[1].changed);
    let history = source.index().history(&cm_key("a")).expect("declared");
    assert_eq!(history.entries.len(), 1);
    assert!(history.current().is_some());
    assert_eq!(
        source.index().declaring_file(&cm_key("a")),
        Some("new/a.yaml")
    );
}

#[test]
fn multi_document_yaml_and_json_files_declare_all_their_objects() {
    let yaml = format!("{}---\n{}", config_map("a", "1"), config_map("b", "1"));
    let json = r#"{"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": 2}}"#;
    let repo = TestRepo::new().commit("add", &[("multi.yaml", &yaml), ("web.json", json)]);
    let setup = Setup::new(&repo);
    let mut source = setup.open();
    let changes = source.fetch().expect("fetch");
    let web = ObjectKey::new("prod", "apps", "Deployment", "shop", "web");
    assert_eq!(changes[0].changed, [cm_key("a"), cm_key("b"), web.clone()]);
    let manifest = source
        .index()
        .history(&web)
        .and_then(|h| h.current())
        .expect("declared");
    assert_eq!(manifest["spec"]["replicas"], json!(2));
    let kinds: Vec<(String, String)> = source.index().kinds().into_iter().collect();
    assert_eq!(
        kinds,
        [
            ("apps/v1".to_owned(), "Deployment".to_owned()),
            ("v1".to_owned(), "ConfigMap".to_owned())
        ]
    );
}

#[test]
fn namespaces_default_and_cluster_scoped_kinds_have_none() {
    let files = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n---\n\
                 apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: fast\n\
                 provisioner: x\n---\n\
                 apiVersion: cert-manager.io/v1\nkind: ClusterIssuer\nmetadata:\n  name: le\n";
    let repo = TestRepo::new().commit(
        "add",
        &[("infra.yaml", files), ("cfg.yaml", &config_map("cfg", "1"))],
    );
    let setup = Setup::new(&repo);
    let mut source = setup.open();
    source.fetch().expect("fetch");
    let index = source.index();
    let manifest = index
        .history(&cm_key("cfg"))
        .and_then(|h| h.current())
        .expect("declared");
    assert_eq!(manifest["metadata"]["namespace"], json!("team-a"));
    assert!(
        index
            .history(&ObjectKey::new("prod", "", "Namespace", "", "team-a"))
            .is_some()
    );
    assert!(
        index
            .history(&ObjectKey::new(
                "prod",
                "storage.k8s.io",
                "StorageClass",
                "",
                "fast"
            ))
            .is_some()
    );
    let namespaced_issuer =
        ObjectKey::new("prod", "cert-manager.io", "ClusterIssuer", "team-a", "le");
    assert!(
        index.history(&namespaced_issuer).is_some(),
        "unknown kinds are namespaced"
    );

    let kinds = [("cert-manager.io".to_owned(), "ClusterIssuer".to_owned())];
    assert!(source.learn_cluster_scoped(&kinds).expect("rebuild"), "new");
    let issuer = ObjectKey::new("prod", "cert-manager.io", "ClusterIssuer", "", "le");
    assert!(source.index().history(&issuer).is_some());
    assert!(source.index().history(&namespaced_issuer).is_none());
    assert!(
        !source.learn_cluster_scoped(&kinds).expect("known"),
        "nothing new"
    );

    let mut setup = setup;
    setup.spec.cluster_scoped = kinds.to_vec();
    let applied = vec![source.head().expect("a head")];
    let reopened = setup.reopen(&applied);
    assert!(reopened.index().history(&issuer).is_some(), "from the spec");
}

#[test]
fn a_malformed_file_is_an_error_and_keeps_its_last_good_state() {
    let repo = TestRepo::new()
        .commit(
            "add",
            &[
                ("a.yaml", &config_map("a", "1")),
                ("b.yaml", &config_map("b", "1")),
            ],
        )
        .commit(
            "break a, bump b",
            &[
                (
                    "a.yaml",
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels: {x: [1}\n",
                ),
                ("b.yaml", &config_map("b", "2")),
            ],
        );
    let setup = Setup::new(&repo);
    let mut source = setup.open();
    let changes = source.fetch().expect("fetch");
    let broken = &changes[1];
    assert_eq!(broken.changed, [cm_key("b")]);
    assert_eq!(broken.errors.len(), 1);
    let error = &broken.errors[0];
    assert_eq!(error.file, "a.yaml");
    assert_eq!(error.source, "apps");
    assert_eq!(error.commit, repo.head().to_string());
    assert_eq!(error.line, Some(5), "{}", error.message);
    assert!(error.message.contains("invalid YAML"), "{}", error.message);
    assert_eq!(declared_value(&source, "a").as_deref(), Some("1"));
    assert_eq!(
        source
            .index()
            .history(&cm_key("a"))
            .map(|h| h.entries.len()),
        Some(1)
    );
    assert_eq!(declared_value(&source, "b").as_deref(), Some("2"));

    let repo = repo.commit("fix a", &[("a.yaml", &config_map("a", "3"))]);
    let fixed = source.fetch().expect("fetch");
    assert_eq!(fixed[0].changed, [cm_key("a")]);
    assert_eq!(fixed[0].commit.id, repo.head().to_string());
    assert_eq!(declared_value(&source, "a").as_deref(), Some("3"));
}

#[test]
fn a_document_without_a_name_is_an_error_naming_the_document() {
    let text = format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{}}\n",
        config_map("a", "1")
    );
    let repo = TestRepo::new().commit("add", &[("a.yaml", &text)]);
    let setup = Setup::new(&repo);
    let mut source = setup.open();
    let changes = source.fetch().expect("fetch");
    let error = &changes[0].errors[0];
    assert_eq!(error.file, "a.yaml");
    assert!(
        error.message.contains("document 2") && error.message.contains("metadata.name"),
        "{}",
        error.message
    );
    assert!(
        source.index().history(&cm_key("a")).is_none(),
        "a rejected file declares nothing"
    );
}

#[test]
fn change_references_are_parsed_from_the_whole_message() {
    let repo = TestRepo::new().commit(
        "Scale web for OPS-42\n\nRequested in #456.\n",
        &[("web.yaml", &config_map("web", "1"))],
    );
    let setup = Setup::new(&repo);
    let mut source = setup.open();
    let changes = source.fetch().expect("fetch");
    assert_eq!(changes[0].commit.summary, "Scale web for OPS-42");
    assert_eq!(changes[0].commit.refs, ["OPS-42", "#456"]);
}

#[test]
fn only_manifest_files_under_the_configured_paths_count() {
    let repo = TestRepo::new()
        .commit(
            "add",
            &[
                ("apps/a.yaml", &config_map("a", "1")),
                ("other/b.yaml", &config_map("b", "1")),
                ("apps/notes.md", "not yaml: ["),
                (".github/workflows/ci.yaml", "on: push\n"),
            ],
        )
        .commit("touch outside", &[("other/b.yaml", &config_map("b", "2"))]);
    let setup = Setup::new(&repo).paths(&["apps"]);
    let mut source = setup.open();
    let changes = source.fetch().expect("fetch");
    assert_eq!(changes[0].changed, [cm_key("a")]);
    assert!(changes.iter().all(|c| c.errors.is_empty()), "{changes:?}");
    assert!(changes[1].changed.is_empty());
    assert!(source.index().history(&cm_key("b")).is_none());
}

#[test]
fn a_merge_is_one_change_and_side_branch_commits_are_not_walked() {
    let repo = TestRepo::new()
        .commit("add a", &[("a.yaml", &config_map("a", "1"))])
        .merge(
            "side work",
            "merge side",
            &[("b.yaml", &config_map("b", "1"))],
        );
    let setup = Setup::new(&repo);
    let mut source = setup.open();
    let changes = source.fetch().expect("fetch");
    assert_eq!(summaries(&changes), ["add a", "merge side"]);
    assert_eq!(changes[1].changed, [cm_key("b")]);
}

#[test]
fn reopening_reuses_the_clone_and_continues_after_the_last_processed_commit() {
    let repo = TestRepo::new()
        .commit("one", &[("a.yaml", &config_map("a", "1"))])
        .commit("two", &[("a.yaml", &config_map("a", "2"))]);
    let setup = Setup::new(&repo);
    let (before, applied) = {
        let mut source = setup.open();
        let changes = source.fetch().expect("fetch");
        let applied: Vec<String> = changes.iter().map(|c| c.commit.id.clone()).collect();
        let history = source.index().history(&cm_key("a")).cloned();
        (history.expect("declared"), applied)
    };
    assert!(
        setup.data.path().join("git/apps/HEAD").exists(),
        "bare clone in the data dir"
    );

    let repo = repo.commit("three", &[("a.yaml", &config_map("a", "3"))]);
    let mut source = setup.reopen(&applied);
    assert_eq!(
        source.index().history(&cm_key("a")),
        Some(&before),
        "rebuilt on open"
    );
    let changes = source.fetch().expect("fetch");
    assert_eq!(summaries(&changes), ["three"]);
    assert_eq!(changes[0].commit.id, repo.head().to_string());
    assert_eq!(
        source
            .index()
            .history(&cm_key("a"))
            .map(|h| h.entries.len()),
        Some(3)
    );
    assert!(source.fetch().expect("fetch again").is_empty());
}

#[test]
fn opening_needs_no_network_when_the_clone_holds_the_recorded_commits() {
    let repo = TestRepo::new().commit("one", &[("a.yaml", &config_map("a", "1"))]);
    let mut setup = Setup::new(&repo);
    let applied: Vec<String> = {
        let mut source = setup.open();
        let changes = source.fetch().expect("fetch");
        changes.iter().map(|c| c.commit.id.clone()).collect()
    };
    setup.spec.url = format!("{}/gone", repo.url());
    let mut source = setup.reopen(&applied);
    assert_eq!(declared_value(&source, "a").as_deref(), Some("1"));
    assert_eq!(source.head(), Some(repo.head().to_string()));
    let err = source.fetch().expect_err("remote away");
    assert!(matches!(err, Error::Git { .. }), "{err}");
    assert_eq!(declared_value(&source, "a").as_deref(), Some("1"), "kept");
}

#[test]
fn a_recorded_commit_no_history_holds_is_skipped() {
    let repo = TestRepo::new().commit("one", &[("a.yaml", &config_map("a", "1"))]);
    let setup = Setup::new(&repo);
    let source = setup.reopen(&["0123456789abcdef0123456789abcdef01234567".to_owned()]);
    assert_eq!(source.head(), None);
}

#[test]
fn a_rewritten_branch_leaves_the_index_at_the_new_head() {
    let repo = TestRepo::new().commit("one", &[("a.yaml", &config_map("a", "1"))]);
    let fork = repo.head();
    let repo = repo.commit("two", &[("b.yaml", &config_map("b", "1"))]);
    let setup = Setup::new(&repo);
    let mut source = setup.open();
    source.fetch().expect("fetch");

    let repo = repo
        .reset_to(fork)
        .commit("two again", &[("a.yaml", &config_map("a", "2"))]);
    let dropped = repo_commit_id(&source, "two");
    let changes = source.fetch().expect("fetch");
    assert_eq!(summaries(&changes), ["two again"]);
    assert_eq!(changes[0].changed, [cm_key("a"), cm_key("b")]);
    let rewrite = changes[0].rewrite.as_ref().expect("rewrite named");
    assert_eq!(rewrite.from, dropped);
    assert_eq!(rewrite.to, repo.head().to_string());
    let dropped_summaries: Vec<&str> = rewrite.dropped.iter().map(|c| c.summary.as_str()).collect();
    assert_eq!(dropped_summaries, ["two"]);
    assert_eq!(declared_value(&source, "a").as_deref(), Some("2"));
    assert_eq!(
        declared_value(&source, "b"),
        None,
        "b only existed on the dropped commit"
    );

    let repo = repo.reset_to(fork);
    let changes = source.fetch().expect("fetch");
    assert_eq!(
        summaries(&changes),
        ["one"],
        "a reset re-applies the older commit"
    );
    let rewrite = changes[0].rewrite.as_ref().expect("reset is a rewrite");
    let dropped_summaries: Vec<&str> = rewrite.dropped.iter().map(|c| c.summary.as_str()).collect();
    assert_eq!(dropped_summaries, ["two again"]);
    let history = source
        .index()
        .history(&cm_key("b"))
        .expect("b kept its history");
    assert!(
        history.entries.iter().any(|e| e.commit.summary == "two"),
        "{history:?}"
    );
    assert_eq!(declared_value(&source, "a").as_deref(), Some("1"));
    assert_eq!(
        source.index().head().map(|c| c.id.clone()),
        Some(repo.head().to_string())
    );
}

#[test]
fn a_missing_branch_is_an_error_naming_it() {
    let repo = TestRepo::new().commit("one", &[("a.yaml", &config_map("a", "1"))]);
    let mut setup = Setup::new(&repo);
    setup.spec.branch = "release".to_owned();
    let mut source = setup.open();
    let err = source.fetch().expect_err("no such branch");
    assert!(matches!(err, Error::BranchNotFound { .. }), "{err}");
    assert!(err.to_string().contains("`release`"), "{err}");
}

#[test]
fn an_unreachable_repository_opens_empty_and_fails_to_fetch() {
    let repo = TestRepo::new().commit("one", &[("a.yaml", &config_map("a", "1"))]);
    let mut setup = Setup::new(&repo);
    setup.spec.url = format!("{}/missing", repo.url());
    let mut source = setup.open();
    assert_eq!(source.head(), None);
    let err = source.fetch().expect_err("no repository");
    assert!(matches!(err, Error::Git { .. }), "{err}");
}

#[test]
fn a_source_name_that_is_not_a_directory_name_is_rejected() {
    let repo = TestRepo::new();
    let mut setup = Setup::new(&repo);
    setup.spec.name = "../escape".to_owned();
    let err = GitSource::open(setup.spec.clone(), setup.data.path(), &[]).expect_err("bad name");
    assert!(matches!(err, Error::InvalidName(_)), "{err}");
}

#[test]
fn a_source_can_move_to_a_blocking_thread() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<GitSource>();
}

#[test]
fn a_directory_that_is_not_a_clone_is_an_error_naming_it() {
    let repo = TestRepo::new().commit("one", &[("a.yaml", &config_map("a", "1"))]);
    let setup = Setup::new(&repo);
    std::fs::create_dir_all(setup.data.path().join("git/apps")).expect("create dir");
    let err = GitSource::open(setup.spec.clone(), setup.data.path(), &[]).expect_err("not a clone");
    assert!(err.to_string().contains("remove the directory"), "{err}");
}

#[test]
fn a_second_file_declaring_an_object_is_an_error_for_that_file() {
    let repo = TestRepo::new()
        .commit("add a", &[("a.yaml", &config_map("a", "1"))])
        .commit("copy a", &[("b.yaml", &config_map("a", "2"))]);
    let setup = Setup::new(&repo);
    let mut source = setup.open();
    let changes = source.fetch().expect("fetch");
    assert!(changes[1].changed.is_empty());
    let error = &changes[1].errors[0];
    assert_eq!(error.file, "b.yaml");
    assert!(
        error.message.contains("already declared in `a.yaml`"),
        "{}",
        error.message
    );
    assert_eq!(declared_value(&source, "a").as_deref(), Some("1"));
}

/// The id of the commit the source applied with `summary`.
fn repo_commit_id(source: &GitSource, summary: &str) -> String {
    source
        .index()
        .histories()
        .flat_map(|(_, history)| &history.entries)
        .find(|entry| entry.commit.summary == summary)
        .map(|entry| entry.commit.id.clone())
        .expect("commit applied")
}

#[test]
fn a_crd_declaring_a_cluster_scoped_kind_keys_its_resources_without_namespace() {
    let widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n";
    let crd = concat!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n",
        "metadata:\n  name: widgets.example.com\n",
        "spec:\n  group: example.com\n  scope: Cluster\n  names: {kind: Widget, plural: widgets}\n",
    );
    let repo = TestRepo::new().commit("widget", &[("w.yaml", widget)]);
    let setup = Setup::new(&repo);
    let mut source = setup.open();
    source.fetch().expect("fetch");
    let namespaced = ObjectKey::new("prod", "example.com", "Widget", "team-a", "w");
    assert!(
        source.index().history(&namespaced).is_some(),
        "no CRD yet: namespaced"
    );

    let repo = repo.commit("crd", &[("crd.yaml", crd)]);
    source.fetch().expect("fetch");
    let cluster = ObjectKey::new("prod", "example.com", "Widget", "", "w");
    assert!(
        source.index().history(&cluster).is_some(),
        "keyed without namespace"
    );
    assert!(source.index().history(&namespaced).is_none());

    let applied = vec![repo.head().to_string()];
    let reopened = setup.reopen(&applied);
    assert!(
        reopened.index().history(&cluster).is_some(),
        "also when rebuilt"
    );
}
