//! Errors of the ledger.

use std::path::PathBuf;

/// A failure of the storage engine under the ledger, kept opaque so the
/// engine does not leak into the public API.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StorageError(#[from] sled::Error);

/// What can go wrong with the ledger.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be opened.
    #[error(
        "cannot open the ledger at `{path}`: {source}; check that the directory is writable \
         and that no other driftwarden process has it open"
    )]
    Open {
        /// The directory given.
        path: PathBuf,
        /// Why.
        #[source]
        source: StorageError,
    },
    /// Reading or writing the database failed.
    #[error("ledger storage failed while {op}: {source}")]
    Storage {
        /// What the ledger was doing.
        op: &'static str,
        /// Why.
        #[source]
        source: StorageError,
    },
    /// A record or object state could not be serialized.
    #[error("cannot serialize {what}: {source}")]
    Encode {
        /// What was being serialized.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A stored entry could not be decoded.
    #[error(
        "the ledger's `{tree}` tree holds an unreadable entry at {key}: {reason}; \
         run `driftwarden verify` to check the ledger"
    )]
    Corrupt {
        /// The tree holding the entry.
        tree: &'static str,
        /// The entry's key, for people.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// A storage failure while doing `op`.
    pub(crate) fn storage(op: &'static str) -> impl FnOnce(sled::Error) -> Self {
        move |source| Error::Storage {
            op,
            source: source.into(),
        }
    }

    /// An unreadable entry in `tree` at `key`.
    pub(crate) fn corrupt(tree: &'static str, key: impl ToString, reason: impl ToString) -> Self {
        Error::Corrupt {
            tree,
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// The ledger's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
