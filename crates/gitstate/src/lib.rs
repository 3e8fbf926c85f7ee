//! Desired state from git.
//!
//! ```text
//! git repo ──fetch (git2)──▶ changed files ──parse──▶ desired history per object key
//! ```
//!
//! Clones each configured source once, fetches new first-parent commits, parses
//! only the files a commit changed, and keeps for every object key the list of
//! commits where its manifest changed.
