//! Errors of the ledger.

use std::path::PathBuf;

/// A failure of the storage engine under the ledger, kept opaque so the
/// engine does not leak into the public API.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StorageError(#[from] pub(crate) sled::Error);

/// What can go wrong with the ledger.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be opened.
    #[error("cannot open the ledger at `{path}`: {source}; check that the directory is writable")]
    Open {
        /// The directory given.
        path: PathBuf,
        /// Why.
        #[source]
        source: StorageError,
    },
    /// Another process has the database open.
    #[error(
        "the ledger at `{path}` is in use by another process (another driftwarden); \
         stop it, or leave the ledger to it"
    )]
    Locked {
        /// The directory given.
        path: PathBuf,
    },
    /// The database's files are damaged: the storage engine cannot read them.
    #[error("the ledger at `{path}` is damaged: {reason}; its records cannot be read as they are")]
    Damaged {
        /// The directory given.
        path: PathBuf,
        /// What the storage engine said.
        reason: String,
    },
    /// Checkpoints could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] crate::CheckpointError),
    /// The derived trees are not rebuilt from a chain that does not verify.
    #[error(
        "the chain itself does not verify ({problems} problem(s), first: {first}); the indexes \
         are rebuilt only from an intact chain: run `driftwarden verify` and restore the ledger \
         from a backup"
    )]
    ChainBroken {
        /// How many problems the chain has.
        problems: u64,
        /// The first, for people.
        first: String,
    },
    /// A loss was to be accepted but the chain is not merely shorter than
    /// its checkpoint.
    #[error("no truncation to accept: {status}")]
    NotTruncated {
        /// How the chain stands against the checkpoint.
        status: crate::CheckpointStatus,
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

/// What a storage error says, for people (sled's corruption errors print a
/// debug backtrace placeholder).
pub(crate) fn describe(err: &sled::Error) -> String {
    match err {
        sled::Error::Corruption { at: Some(at), .. } => format!("corrupted data at {at:?}"),
        sled::Error::Corruption { at: None, .. } => "corrupted data".to_owned(),
        other => other.to_string(),
    }
}
