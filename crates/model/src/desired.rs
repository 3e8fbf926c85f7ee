//! Desired state: what git declares for an object, commit by commit.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A git commit that changed desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// Full hex object id.
    pub id: String,
    /// Commit time.
    pub time: DateTime<Utc>,
    /// Author as `Name <email>`.
    pub author: String,
    /// First line of the message.
    pub summary: String,
    /// Change references found in the message (`JIRA-123`, `#456`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<String>,
}

impl Commit {
    /// The first 12 hex digits, for people.
    pub fn short(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }
}

/// The manifest of one object as of one commit; `None` when the commit
/// removed it from git.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredEntry {
    /// The commit that made this the desired state.
    pub commit: Commit,
    /// The declared manifest, or `None` when no longer declared.
    pub manifest: Option<Value>,
}

/// The desired history of one object key, oldest first: one entry per commit
/// where its manifest changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DesiredHistory {
    /// Entries, oldest first.
    pub entries: Vec<DesiredEntry>,
}

impl DesiredHistory {
    /// The current desired entry (git HEAD), if git ever declared the object.
    pub fn head(&self) -> Option<&DesiredEntry> {
        self.entries.last()
    }

    /// The currently declared manifest, if git declares the object now.
    pub fn current(&self) -> Option<&Value> {
        self.head().and_then(|e| e.manifest.as_ref())
    }

    /// Older entries, newest first, excluding HEAD.
    pub fn older(&self) -> impl Iterator<Item = &DesiredEntry> {
        self.entries.iter().rev().skip(1)
    }
}
