//! Classification of changes against git.
//!
//! ```text
//! change event + previous state ─┐
//! desired history (git)          ├─▶ project / changed_fields ─▶ classify ─▶ verdict + actor + diff
//! trust + list semantics + policy┘
//! ```
//!
//! Pure functions over model types: projection diff, normalization and the
//! verdict table of the design. No I/O.
//!
//! - [`project`]: declared fields whose live value differs from git.
//! - [`changed_fields`] / [`changed_undeclared`]: what changed between two
//!   live states, split by whether git declares it.
//! - [`actor_from_managed_fields`]: who changed it, without an audit record.
//! - [`classify`] / [`judge_change`]: the verdict, path by path;
//!   [`adoption`]: a later commit adopting a drift.
//! - [`AuditJoin`]: audit records waiting for the change they caused.
//!
//! The benchmark `benches/classify.rs` reports the classification rate as
//! [`events_per_second`]: the median rate over the samples criterion timed.

mod actor;
mod changes;
mod classify;
pub mod join;
mod known;
pub mod lists;
mod normalize;
mod paths;
mod project;

#[cfg(test)]
mod fixtures;

pub use actor::actor_from_managed_fields;
pub use changes::{Changes, changed_fields, changed_undeclared};
pub use classify::{
    DELETED_UNATTRIBUTED, Input, Outcome, UNOBSERVED, adoption, classify, events_per_second,
    judge_change,
};
pub use join::{AuditJoin, JoinKey};
pub use known::Known;
pub use lists::{ListSemantics, ListType, MapKey};
pub use model::trust::{self, ManagerBinding, Trust};
pub use normalize::{Quantity, scalars_equal};
pub use paths::is_within;
pub use project::project;
