//! What a watch-only process has published, kept in a file, so that after a
//! restart it reports the objects deleted while it was down (a process with
//! a ledger knows them from the ledger instead).
//!
//! ```text
//! change published ──record(key, uid, kind)──▶ KnownObjects (key → uid) ──every interval, if changed──▶ known.json
//! start ──load(known.json)──▶ WatchSpec::known ──▶ first listing ──▶ Deleted for the missing ones
//! ```
//!
//! The file is replaced atomically (written beside it, synced, renamed), so
//! a crash leaves the old or the new one, never half of one. It is saved
//! every few moments rather than at every event: a crash loses at most the
//! changes of the last interval, and an object created and deleted within
//! it, while down, goes unreported.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use model::{ChangeKind, ObjectKey};
use serde::{Deserialize, Serialize};

use crate::watcher::KnownObject;

/// Version of the file format.
pub const FILE_SCHEMA: u32 = 1;

/// The file's name in its directory.
pub const FILE_NAME: &str = "known.json";

/// The known-objects file could not be read or written. Each variant says
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the file failed.
    #[error("cannot read the known-objects file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a known-objects file of this version.
    #[error(
        "the known-objects file {} is damaged or of another version; remove it to start \
         afresh (objects deleted while the watcher was down then go unreported)",
        path.display()
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ParseError,
    },
    /// Creating the file's directory failed.
    #[error(
        "cannot create the directory {} of the known-objects file; check the data directory's \
         permissions",
        path.display()
    )]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the file failed.
    #[error("cannot write the known-objects file {}; check the data directory's space and permissions", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a file's contents are not known objects.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON of the expected shape.
    #[error("not a known-objects document")]
    Json(#[from] serde_json::Error),
    /// A schema version this build does not read.
    #[error("schema version {found}, expected {FILE_SCHEMA}")]
    Schema {
        /// The version found.
        found: u32,
    },
    /// A key that is not an object key.
    #[error(transparent)]
    Key(#[from] model::KeyError),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The file's contents.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    /// [`FILE_SCHEMA`].
    schema: u32,
    /// One entry per object, sorted by key.
    objects: Vec<Entry>,
}

/// One object in the file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// The object key's string form, `cluster/group/kind/namespace/name`.
    key: String,
    /// The incarnation last published.
    uid: String,
}

/// The objects published and not deleted since: key → uid of the latest
/// incarnation. Pure; [`KnownFile`] keeps it in a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownObjects {
    objects: BTreeMap<ObjectKey, String>,
    changed: bool,
}

impl KnownObjects {
    /// Notes a published change: the object is known (at this uid) after
    /// anything but a deletion; a deletion forgets it unless a newer
    /// incarnation is known already.
    pub fn record(&mut self, object: KnownObject, kind: ChangeKind) {
        let KnownObject { key, uid } = object;
        match kind {
            ChangeKind::Added | ChangeKind::Modified | ChangeKind::Resync => {
                if self.objects.get(&key) != Some(&uid) {
                    self.objects.insert(key, uid);
                    self.changed = true;
                }
            }
            ChangeKind::Deleted => {
                if self.objects.get(&key) == Some(&uid) {
                    self.objects.remove(&key);
                    self.changed = true;
                }
            }
        }
    }

    /// The known objects, for [`WatchSpec::known`](crate::WatchSpec::known).
    pub fn objects(&self) -> Vec<KnownObject> {
        self.objects
            .iter()
            .map(|(key, uid)| KnownObject {
                key: key.clone(),
                uid: uid.clone(),
            })
            .collect()
    }

    /// How many objects are known.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether no object is known.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Whether anything changed since the last [`KnownObjects::take_changed`].
    pub fn is_changed(&self) -> bool {
        self.changed
    }

    /// Whether anything changed since the last call; clears the mark.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The file's contents.
    pub fn to_json(&self) -> Vec<u8> {
        let document = Document {
            schema: FILE_SCHEMA,
            objects: self
                .objects
                .iter()
                .map(|(key, uid)| Entry {
                    key: key.to_string(),
                    uid: uid.clone(),
                })
                .collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&document).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Reads the file's contents.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ParseError> {
        let document: Document = serde_json::from_slice(bytes)?;
        if document.schema != FILE_SCHEMA {
            return Err(ParseError::Schema {
                found: document.schema,
            });
        }
        let mut objects = BTreeMap::new();
        for entry in document.objects {
            objects.insert(entry.key.parse()?, entry.uid);
        }
        Ok(Self {
            objects,
            changed: false,
        })
    }
}

/// [`KnownObjects`] shared by the tasks that publish, and the file they are
/// saved to. Clones share the objects.
#[derive(Debug, Clone)]
pub struct KnownFile {
    path: PathBuf,
    objects: Arc<Mutex<KnownObjects>>,
}

impl KnownFile {
    /// Opens `dir/known.json`, creating `dir` (and its parents) if missing;
    /// no file yet means no known objects.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Directory {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let objects = match std::fs::read(&path) {
            Ok(bytes) => KnownObjects::from_json(&bytes).map_err(|source| Error::Parse {
                path: path.clone(),
                source,
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => KnownObjects::default(),
            Err(source) => return Err(Error::Read { path, source }),
        };
        Ok(Self {
            path,
            objects: Arc::new(Mutex::new(objects)),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The known objects now.
    pub fn objects(&self) -> Vec<KnownObject> {
        self.lock().objects()
    }

    /// Notes a published change (see [`KnownObjects::record`]).
    pub fn record(&self, object: KnownObject, kind: ChangeKind) {
        self.lock().record(object, kind);
    }

    /// Writes the file if anything changed since it was last written.
    /// Blocks on file I/O: call it from blocking code.
    pub fn save_if_changed(&self) -> Result<()> {
        let bytes = {
            let mut objects = self.lock();
            if !objects.take_changed() {
                return Ok(());
            }
            objects.to_json()
        };
        let written = write_atomically(&self.path, &bytes);
        if written.is_err() {
            // Try again at the next save.
            self.lock().changed = true;
        }
        written
    }

    /// Saves every `interval` when something changed, and once more when
    /// dropped (a process stopping in order loses nothing). Runs until
    /// dropped; a failed write is logged and tried again at the next one.
    pub async fn save_every(self, interval: Duration) {
        let saver = SaveOnDrop(self);
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut health = crate::retry::Health::default();
        loop {
            ticks.tick().await;
            let file = saver.0.clone();
            let saved = tokio::task::spawn_blocking(move || file.save_if_changed()).await;
            match saved {
                Ok(Ok(())) => {
                    if health.recovered() {
                        tracing::info!(path = %saver.0.path.display(), "known objects saved again");
                    }
                }
                Ok(Err(err)) => {
                    if health.failed() {
                        tracing::warn!(error = ?err, "cannot save the known objects; retrying");
                    }
                }
                Err(err) => tracing::warn!(error = ?err, "saving the known objects panicked"),
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, KnownObjects> {
        // The objects stay consistent even if a holder panicked: every
        // change is one map operation.
        self.objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Saves a last time when the saving loop ends.
struct SaveOnDrop(KnownFile);

impl Drop for SaveOnDrop {
    fn drop(&mut self) {
        if let Err(err) = self.0.save_if_changed() {
            tracing::warn!(error = ?err, "cannot save the known objects on stopping");
        }
    }
}

/// Replaces `path` by `bytes`: written to a temporary file beside it,
/// synced, then renamed over it.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let error = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".tmp-{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary).map_err(error)?;
    file.write_all(bytes).map_err(error)?;
    file.sync_all().map_err(error)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(error)?;
    if let Some(dir) = path.parent()
        && let Ok(dir) = std::fs::File::open(dir)
    {
        // Makes the rename itself durable; not every platform allows it.
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, uid: &str) -> KnownObject {
        KnownObject {
            key: ObjectKey::new("prod", "", "ConfigMap", "team-a", name),
            uid: uid.into(),
        }
    }

    fn uids(known: &KnownObjects) -> Vec<(String, String)> {
        known
            .objects()
            .into_iter()
            .map(|o| (o.key.name, o.uid))
            .collect()
    }

    fn pair(name: &str, uid: &str) -> (String, String) {
        (name.to_owned(), uid.to_owned())
    }

    #[test]
    fn published_objects_are_known_until_deleted() {
        let mut known = KnownObjects::default();
        known.record(object("a", "u-a"), ChangeKind::Resync);
        known.record(object("b", "u-b"), ChangeKind::Added);
        known.record(object("b", "u-b"), ChangeKind::Modified);
        known.record(object("a", "u-a"), ChangeKind::Deleted);
        assert_eq!(uids(&known), vec![pair("b", "u-b")]);
    }

    #[test]
    fn a_re_created_object_is_known_by_its_new_uid_and_an_old_deletion_keeps_it() {
        let mut known = KnownObjects::default();
        known.record(object("a", "u-1"), ChangeKind::Added);
        known.record(object("a", "u-2"), ChangeKind::Added);
        known.record(object("a", "u-1"), ChangeKind::Deleted);
        assert_eq!(uids(&known), vec![pair("a", "u-2")]);
    }

    #[test]
    fn only_real_changes_mark_the_objects_for_saving() {
        let mut known = KnownObjects::default();
        assert!(!known.take_changed());
        known.record(object("a", "u-a"), ChangeKind::Added);
        assert!(known.take_changed());
        assert!(!known.take_changed(), "cleared");
        known.record(object("a", "u-a"), ChangeKind::Modified);
        known.record(object("x", "u-x"), ChangeKind::Deleted);
        assert!(!known.is_changed(), "nothing new");
        known.record(object("a", "u-a"), ChangeKind::Deleted);
        assert!(known.is_changed());
    }

    #[test]
    fn the_file_round_trips_and_keeps_cluster_scoped_keys() {
        let mut known = KnownObjects::default();
        known.record(object("a", "u-a"), ChangeKind::Added);
        let namespace = KnownObject {
            key: ObjectKey::new("prod", "", "Namespace", "", "team-a"),
            uid: "u-ns".into(),
        };
        known.record(namespace.clone(), ChangeKind::Resync);
        let bytes = known.to_json();
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        assert!(text.contains("\"prod/core/Namespace//team-a\""), "{text}");
        assert!(text.contains("\"schema\": 1"), "{text}");
        let back = KnownObjects::from_json(&bytes).expect("reads back");
        assert_eq!(back.objects(), known.objects());
        assert!(back.objects().contains(&namespace));
        assert!(!back.is_changed());
    }

    #[test]
    fn damaged_or_foreign_files_are_refused() {
        for (text, what) in [
            (r#"{"schema":2,"objects":[]}"#, "schema version 2"),
            (
                r#"{"schema":1,"objects":[{"key":"a/b","uid":"u"}]}"#,
                "five segments",
            ),
            (r#"{"schema":1,"objects":[],"extra":1}"#, "known-objects"),
            (r#"{"schema":1,"objects":[{"key":"#, "known-objects"),
        ] {
            let err = KnownObjects::from_json(text.as_bytes()).expect_err(text);
            assert!(err.to_string().contains(what), "{text}: {err}");
        }
    }

    #[test]
    fn the_file_is_created_with_its_directory_replaced_whole_and_read_back() {
        let scratch = tempfile::tempdir().expect("temp dir");
        let dir = scratch.path().join("data").join("watch");
        let file = KnownFile::open(&dir).expect("opens without a file");
        assert!(dir.is_dir(), "the directory is created");
        assert!(file.objects().is_empty());
        file.save_if_changed().expect("nothing to save");
        assert!(!file.path().exists(), "nothing written while unchanged");

        file.record(object("a", "u-a"), ChangeKind::Added);
        file.save_if_changed().expect("saved");
        file.record(object("b", "u-b"), ChangeKind::Added);
        file.save_if_changed().expect("saved again");
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .expect("lists")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(leftovers, [FILE_NAME], "no temporary file is left");

        let reopened = KnownFile::open(&dir).expect("reads the file");
        assert_eq!(
            reopened.objects(),
            vec![object("a", "u-a"), object("b", "u-b")]
        );
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it_and_what_to_do() {
        let scratch = tempfile::tempdir().expect("temp dir");
        std::fs::write(scratch.path().join(FILE_NAME), "{not json").expect("written");
        let err = KnownFile::open(scratch.path()).expect_err("damaged");
        let text = err.to_string();
        assert!(
            text.contains(FILE_NAME) && text.contains("remove it"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn changes_are_saved_on_the_next_tick_and_when_the_saver_stops() {
        let scratch = tempfile::tempdir().expect("temp dir");
        let file = KnownFile::open(scratch.path()).expect("opens");
        let saver = tokio::spawn(file.clone().save_every(Duration::from_millis(50)));
        file.record(object("a", "u-a"), ChangeKind::Added);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let saved = KnownFile::open(scratch.path()).expect("reads");
        assert_eq!(saved.objects(), vec![object("a", "u-a")]);

        file.record(object("b", "u-b"), ChangeKind::Added);
        saver.abort();
        let _ = saver.await;
        let saved = KnownFile::open(scratch.path()).expect("reads");
        assert_eq!(saved.objects().len(), 2, "saved when the saver stopped");
    }
}
