//! Desired state from git.
//!
//! ```text
//! git repo ──fetch (git2)──▶ changed files ──parse──▶ desired history per object key
//! ```
//!
//! Clones each configured source once, fetches new first-parent commits, parses
//! only the files a commit changed, and keeps for every object key the list of
//! commits where its manifest changed.
//!
//! A file that does not parse is an error for that file only: it is reported
//! with the commit, and the last good desired state of its objects stays in
//! force.
//!
//! Everything here blocks. From async code, move the source into
//! `tokio::task::spawn_blocking` and take it back with the result:
//!
//! ```text
//! let (source, changes) = tokio::task::spawn_blocking(move || {
//!     let changes = source.fetch();
//!     (source, changes)
//! })
//! .await?;
//! ```

mod index;
mod manifest;
mod refs;
mod source;
mod spec;
mod yaml;

pub use index::DesiredIndex;
pub use manifest::{Declared, DocRef, KeyRules, ManifestError, is_manifest_path, parse_file};
pub use refs::parse_refs;
pub use source::{CommitChange, Error, GitSource, Result};
pub use spec::SourceSpec;
