//! The domain types of Driftwarden, shared by every stage. No I/O.
//!
//! ```text
//! ChangeEvent ─┐
//! AuditRecord ─┼─▶ correlate ─▶ Verdict + Actor + diff ─▶ LedgerRecord
//! Desired     ─┘
//! ```
//!
//! Every type that crosses a process boundary (bus messages, ledger records)
//! carries a `schema` version so readers can reject what they do not know.

mod alert;
mod audit;
mod change;
pub mod churn;
mod desired;
mod enforcement;
mod key;
mod path;
mod record;
pub mod redact;
pub mod trust;
mod verdict;

pub use alert::{Alert, AlertAction, AlertEvent, AlertLine, AlertRecord, Delivery, Severity};
pub use audit::{AuditObjectRef, AuditRecord, AuditUser};
pub use change::{ChangeEvent, ChangeKind, ManagedField, Truncation};
pub use desired::{Commit, DesiredEntry, DesiredHistory};
pub use enforcement::{
    Amendment, Attribution, Control, Enforcement, Exemption, ExemptionScope, Mode, Outcome,
    RevertAction, Revocation,
};
pub use key::{KeyError, ObjectKey};
pub use path::{FieldPath, PathError, Segment};
pub use record::{
    GitError, GitFetch, GitFetchState, GitRewrite, GitSync, LedgerRecord, RecordBody,
    RejectedMessage, Sealed, chain_hash,
};
pub use trust::{ManagerBinding, Trust};
pub use verdict::{Actor, DriftKind, FieldChange, Judgement, PathVerdict, Verdict};

/// The wire and storage schema version written by this build.
pub const SCHEMA: u32 = 1;

/// Reads a duration written for people (`10s`, `2m`, `1h30m`) in config
/// files: `#[serde(deserialize_with = "model::duration")]`.
pub fn duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<std::time::Duration, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|err| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration ({err}): write e.g. `10s`, `2m`"
        ))
    })
}
