//! Enforcement: revert planning and execution, behind safety rails.
//!
//! ```text
//! verdict + desired + last good ──▶ plan ──▶ RevertAction ──▶ Executor ──▶ kube-apiserver
//!                                             ▲                  │
//!               Rails (flap limit, backoff, breaker), Grace,     └──▶ Outcome
//!               exemptions decide whether it runs
//! ```
//!
//! Reverts unauthorized changes where a scope is in enforce mode:
//! - [`plan()`] (pure) turns a judged change into a [`RevertAction`]: apply the
//!   desired manifest, an inverse JSON patch to the last known-good state on
//!   the out-of-band fields only, create a deleted object, or delete an
//!   unmanaged one where `prune` is on.
//! - [`Executor`] performs the action with field manager `driftwarden`,
//!   never clobbering a newer write: such a revert is
//!   [`Outcome::Superseded`].
//! - [`Rails`], [`Grace`] and [`exempted`] are pure state over an explicit
//!   `now`: the per-object flap limit (a revert war with an automated
//!   [`Writer`] stops; one with a person goes on with a capped backoff and is
//!   reported once as a [`WarReport`]), the global circuit breaker, the grace
//!   queue and break-glass exemptions.
//!
//! Objects and manifests are never logged: Secrets travel through here.
//!
//! [`RevertAction`]: model::RevertAction
//! [`Outcome::Superseded`]: model::Outcome::Superseded

pub mod execute;
pub mod grace;
mod inverse;
pub mod plan;
pub mod rails;

pub use execute::{Executor, FIELD_MANAGER};
pub use grace::Grace;
pub use plan::{PlanInput, desired_manifest, plan};
pub use rails::{BACKOFF_BASE, Held, Rails, RailsConfig, WarReport, Writer, exempted};
