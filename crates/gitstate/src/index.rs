//! The desired-state index: for every object key, the manifests git declared
//! for it, commit by commit, and which file declares it now.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use model::{Commit, DesiredEntry, DesiredHistory, ObjectKey};
use serde_json::Value;

use crate::manifest::{Declared, ManifestError};

/// Desired history per object key of one source, built commit by commit.
#[derive(Debug, Clone, Default)]
pub struct DesiredIndex {
    /// Every key git ever declared, with its history.
    histories: HashMap<ObjectKey, DesiredHistory>,
    /// The file that declares each currently declared key.
    owners: HashMap<ObjectKey, String>,
    /// The keys each file declares, as of its last good parse.
    files: HashMap<String, BTreeSet<ObjectKey>>,
    /// The last commit applied.
    head: Option<Commit>,
}

/// What one commit did to the manifest files of a source.
#[derive(Debug, Default)]
pub(crate) struct FileChanges {
    /// Files that are gone (deleted, moved away, or no longer manifests).
    pub removed: Vec<String>,
    /// Files added or modified, with their parse outcome, in path order.
    pub parsed: Vec<(String, Result<Vec<Declared>, ManifestError>)>,
}

/// What applying one commit changed.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Keys whose desired manifest changed, sorted.
    pub changed: Vec<ObjectKey>,
    /// Files rejected, with why; their objects keep their last good state.
    pub failures: Vec<(String, ManifestError)>,
}

/// The working state of one commit being applied.
#[derive(Debug, Default)]
struct Pending {
    /// Keys that lost or gained a declaration.
    touched: BTreeSet<ObjectKey>,
    /// New manifests of keys declared by files parsed in this commit.
    manifests: HashMap<ObjectKey, Value>,
}

impl DesiredIndex {
    /// The desired history of `key`, if git ever declared it.
    pub fn history(&self, key: &ObjectKey) -> Option<&DesiredHistory> {
        self.histories.get(key)
    }

    /// Keys git declares at HEAD, in no particular order.
    pub fn declared_keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.owners.keys()
    }

    /// Every key git ever declared, with its history, in no particular order.
    pub fn histories(&self) -> impl Iterator<Item = (&ObjectKey, &DesiredHistory)> {
        self.histories.iter()
    }

    /// The file that declares `key` at HEAD.
    pub fn declaring_file(&self, key: &ObjectKey) -> Option<&str> {
        self.owners.get(key).map(String::as_str)
    }

    /// `(apiVersion, kind)` of every object declared at HEAD: what the
    /// watchers should watch.
    pub fn kinds(&self) -> BTreeSet<(String, String)> {
        self.owners
            .keys()
            .filter_map(|key| self.histories.get(key)?.current())
            .filter_map(|manifest| {
                let api_version = manifest.get("apiVersion")?.as_str()?;
                let kind = manifest.get("kind")?.as_str()?;
                Some((api_version.to_owned(), kind.to_owned()))
            })
            .collect()
    }

    /// The last commit applied to the index.
    pub fn head(&self) -> Option<&Commit> {
        self.head.as_ref()
    }

    /// Applies one commit's file changes: removed files release their
    /// objects, parsed files declare theirs, rejected files change nothing.
    /// Each key whose manifest differs from its previous one gets an entry.
    pub(crate) fn apply(&mut self, commit: &Commit, changes: FileChanges) -> Applied {
        let mut pending = Pending::default();
        let mut failures = Vec::new();
        for path in &changes.removed {
            self.release_file(path, &mut pending);
        }
        let mut parsed: BTreeMap<String, Vec<Declared>> = BTreeMap::new();
        for (path, outcome) in changes.parsed {
            match outcome {
                Ok(declared) => {
                    parsed.insert(path, declared);
                }
                Err(err) => failures.push((path, err)),
            }
        }
        for (path, declared) in &parsed {
            self.release_undeclared(path, declared, &mut pending);
        }
        for (path, declared) in parsed {
            if let Err(err) = self.claim(&path, declared, &mut pending) {
                failures.push((path, err));
            }
        }
        self.head = Some(commit.clone());
        Applied {
            changed: self.record(commit, pending),
            failures,
        }
    }

    /// Forgets a file that is gone; its keys lose their declaration.
    fn release_file(&mut self, path: &str, pending: &mut Pending) {
        for key in self.files.remove(path).unwrap_or_default() {
            self.release_key(&key, path, pending);
        }
    }

    /// Releases the keys `path` declared before but no longer declares.
    fn release_undeclared(&mut self, path: &str, declared: &[Declared], pending: &mut Pending) {
        let Some(old) = self.files.get(path) else {
            return;
        };
        let now: BTreeSet<&ObjectKey> = declared.iter().map(|d| &d.key).collect();
        let gone: Vec<ObjectKey> = old.iter().filter(|k| !now.contains(k)).cloned().collect();
        for key in gone {
            self.release_key(&key, path, pending);
        }
    }

    /// Drops `path`'s declaration of `key`.
    fn release_key(&mut self, key: &ObjectKey, path: &str, pending: &mut Pending) {
        if self.owners.get(key).is_some_and(|owner| owner == path) {
            self.owners.remove(key);
            pending.touched.insert(key.clone());
        }
    }

    /// Makes `path` declare exactly `declared`, unless another file declares
    /// one of those keys: then `path` keeps what it declared before.
    fn claim(
        &mut self,
        path: &str,
        declared: Vec<Declared>,
        pending: &mut Pending,
    ) -> Result<(), ManifestError> {
        let taken = declared.iter().find_map(|d| {
            let owner = self.owners.get(&d.key)?;
            (owner != path).then(|| (d.key.clone(), owner.clone()))
        });
        if let Some((key, other)) = taken {
            self.restore(path);
            return Err(ManifestError::DeclaredElsewhere {
                key: Box::new(key),
                other,
            });
        }
        let mut keys = BTreeSet::new();
        for object in declared {
            self.owners.insert(object.key.clone(), path.to_owned());
            pending.touched.insert(object.key.clone());
            pending
                .manifests
                .insert(object.key.clone(), object.manifest);
            keys.insert(object.key);
        }
        self.files.insert(path.to_owned(), keys);
        Ok(())
    }

    /// Gives a rejected file back the keys it released in this commit and
    /// nobody else claimed, so its last good state stays in force.
    fn restore(&mut self, path: &str) {
        let Some(keys) = self.files.get_mut(path) else {
            return;
        };
        keys.retain(|key| match self.owners.get(key) {
            Some(owner) => owner == path,
            None => {
                self.owners.insert(key.clone(), path.to_owned());
                true
            }
        });
    }

    /// Appends an entry for every touched key whose manifest changed.
    fn record(&mut self, commit: &Commit, mut pending: Pending) -> Vec<ObjectKey> {
        let mut changed = Vec::new();
        for key in pending.touched {
            let history = self.histories.entry(key.clone()).or_default();
            let manifest = match pending.manifests.remove(&key) {
                Some(manifest) => Some(manifest),
                None if self.owners.contains_key(&key) => history.current().cloned(),
                None => None,
            };
            let previous = history.head().and_then(|entry| entry.manifest.as_ref());
            if previous == manifest.as_ref() {
                if history.entries.is_empty() {
                    self.histories.remove(&key);
                }
                continue;
            }
            history.entries.push(DesiredEntry {
                commit: commit.clone(),
                manifest,
            });
            changed.push(key);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::DocRef;
    use chrono::DateTime;
    use serde_json::json;

    fn commit(id: &str) -> Commit {
        Commit {
            id: id.to_owned(),
            time: DateTime::from_timestamp(1_700_000_000, 0).expect("valid time"),
            author: "Dev <dev@example.com>".to_owned(),
            summary: id.to_owned(),
            refs: Vec::new(),
        }
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("prod", "", "ConfigMap", "team-a", name)
    }

    fn object(name: &str, value: &str) -> Declared {
        Declared {
            key: key(name),
            manifest: json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "team-a"}, "data": {"v": value}}),
            at: DocRef {
                document: 1,
                item: None,
                line: 1,
            },
        }
    }

    fn parsed(path: &str, objects: Vec<Declared>) -> FileChanges {
        FileChanges {
            removed: Vec::new(),
            parsed: vec![(path.to_owned(), Ok(objects))],
        }
    }

    fn value_of(index: &DesiredIndex, name: &str) -> Option<String> {
        let manifest = index.history(&key(name))?.current()?;
        Some(manifest["data"]["v"].as_str()?.to_owned())
    }

    #[test]
    fn each_changed_manifest_adds_one_entry() {
        let mut index = DesiredIndex::default();
        let first = index.apply(&commit("c1"), parsed("a.yaml", vec![object("a", "1")]));
        assert_eq!(first.changed, [key("a")]);
        let second = index.apply(&commit("c2"), parsed("a.yaml", vec![object("a", "2")]));
        assert_eq!(second.changed, [key("a")]);
        let history = index.history(&key("a")).expect("declared");
        let commits: Vec<&str> = history
            .entries
            .iter()
            .map(|e| e.commit.id.as_str())
            .collect();
        assert_eq!(commits, ["c1", "c2"]);
        assert_eq!(index.head().map(|c| c.id.as_str()), Some("c2"));
    }

    #[test]
    fn identical_redeclarations_add_no_entry() {
        let mut index = DesiredIndex::default();
        index.apply(&commit("c1"), parsed("a.yaml", vec![object("a", "1")]));
        let again = index.apply(&commit("c2"), parsed("a.yaml", vec![object("a", "1")]));
        assert!(again.changed.is_empty());
        assert_eq!(index.history(&key("a")).map(|h| h.entries.len()), Some(1));
        assert_eq!(index.head().map(|c| c.id.as_str()), Some("c2"));
    }

    #[test]
    fn removed_files_make_their_objects_absent() {
        let mut index = DesiredIndex::default();
        index.apply(&commit("c1"), parsed("a.yaml", vec![object("a", "1")]));
        let gone = FileChanges {
            removed: vec!["a.yaml".to_owned()],
            parsed: Vec::new(),
        };
        assert_eq!(index.apply(&commit("c2"), gone).changed, [key("a")]);
        let history = index.history(&key("a")).expect("kept");
        assert_eq!(history.entries.len(), 2);
        assert!(history.current().is_none());
        assert_eq!(index.declared_keys().count(), 0);
    }

    #[test]
    fn objects_dropped_from_a_file_become_absent() {
        let mut index = DesiredIndex::default();
        index.apply(
            &commit("c1"),
            parsed("a.yaml", vec![object("a", "1"), object("b", "1")]),
        );
        let applied = index.apply(&commit("c2"), parsed("a.yaml", vec![object("a", "1")]));
        assert_eq!(applied.changed, [key("b")]);
        assert_eq!(value_of(&index, "b"), None);
        assert_eq!(value_of(&index, "a").as_deref(), Some("1"));
    }

    #[test]
    fn moving_an_object_between_files_is_not_a_change() {
        let mut index = DesiredIndex::default();
        index.apply(&commit("c1"), parsed("old.yaml", vec![object("a", "1")]));
        let moved = FileChanges {
            removed: vec!["old.yaml".to_owned()],
            parsed: vec![("new.yaml".to_owned(), Ok(vec![object("a", "1")]))],
        };
        let applied = index.apply(&commit("c2"), moved);
        assert!(applied.changed.is_empty() && applied.failures.is_empty());
        assert_eq!(index.declaring_file(&key("a")), Some("new.yaml"));
    }

    #[test]
    fn moving_an_object_to_an_earlier_file_in_one_commit_is_allowed() {
        let mut index = DesiredIndex::default();
        index.apply(
            &commit("c1"),
            parsed("b.yaml", vec![object("x", "1"), object("y", "1")]),
        );
        let moved = FileChanges {
            removed: Vec::new(),
            parsed: vec![
                ("a.yaml".to_owned(), Ok(vec![object("x", "1")])),
                ("b.yaml".to_owned(), Ok(vec![object("y", "1")])),
            ],
        };
        let applied = index.apply(&commit("c2"), moved);
        assert!(applied.failures.is_empty(), "{:?}", applied.failures);
        assert!(applied.changed.is_empty());
        assert_eq!(index.declaring_file(&key("x")), Some("a.yaml"));
    }

    #[test]
    fn a_bad_file_keeps_its_last_good_state() {
        let mut index = DesiredIndex::default();
        index.apply(&commit("c1"), parsed("a.yaml", vec![object("a", "1")]));
        let bad = FileChanges {
            removed: Vec::new(),
            parsed: vec![
                (
                    "a.yaml".to_owned(),
                    Err(ManifestError::Yaml {
                        line: Some(3),
                        message: "bad".to_owned(),
                    }),
                ),
                ("b.yaml".to_owned(), Ok(vec![object("b", "1")])),
            ],
        };
        let applied = index.apply(&commit("c2"), bad);
        assert_eq!(applied.changed, [key("b")]);
        assert_eq!(applied.failures.len(), 1);
        assert_eq!(applied.failures[0].0, "a.yaml");
        assert_eq!(value_of(&index, "a").as_deref(), Some("1"));
        assert_eq!(index.history(&key("a")).map(|h| h.entries.len()), Some(1));
    }

    #[test]
    fn a_second_file_declaring_a_key_is_rejected_whole() {
        let mut index = DesiredIndex::default();
        index.apply(&commit("c1"), parsed("a.yaml", vec![object("a", "1")]));
        index.apply(&commit("c2"), parsed("b.yaml", vec![object("b", "1")]));
        let clash = parsed("b.yaml", vec![object("b", "2"), object("a", "9")]);
        let applied = index.apply(&commit("c3"), clash);
        assert!(applied.changed.is_empty());
        let (file, err) = &applied.failures[0];
        assert_eq!(file, "b.yaml");
        assert!(
            err.to_string().contains("already declared in `a.yaml`"),
            "{err}"
        );
        assert_eq!(value_of(&index, "a").as_deref(), Some("1"));
        assert_eq!(value_of(&index, "b").as_deref(), Some("1"));
    }

    #[test]
    fn a_rejected_file_keeps_objects_it_tried_to_drop() {
        let mut index = DesiredIndex::default();
        index.apply(&commit("c1"), parsed("a.yaml", vec![object("a", "1")]));
        index.apply(&commit("c2"), parsed("b.yaml", vec![object("b", "1")]));
        let applied = index.apply(&commit("c3"), parsed("b.yaml", vec![object("a", "2")]));
        assert_eq!(applied.failures.len(), 1);
        assert!(applied.changed.is_empty(), "{:?}", applied.changed);
        assert_eq!(index.declaring_file(&key("b")), Some("b.yaml"));
        assert_eq!(value_of(&index, "b").as_deref(), Some("1"));
    }

    #[test]
    fn kinds_are_those_declared_at_head() {
        let mut index = DesiredIndex::default();
        let mut deployment = object("web", "1");
        deployment.key = ObjectKey::new("prod", "apps", "Deployment", "team-a", "web");
        deployment.manifest["apiVersion"] = json!("apps/v1");
        deployment.manifest["kind"] = json!("Deployment");
        index.apply(
            &commit("c1"),
            parsed("a.yaml", vec![object("a", "1"), deployment]),
        );
        let kinds: Vec<(String, String)> = index.kinds().into_iter().collect();
        assert_eq!(
            kinds,
            [
                ("apps/v1".to_owned(), "Deployment".to_owned()),
                ("v1".to_owned(), "ConfigMap".to_owned())
            ]
        );
        index.apply(&commit("c2"), parsed("a.yaml", vec![object("a", "1")]));
        assert_eq!(index.kinds().len(), 1);
    }
}
