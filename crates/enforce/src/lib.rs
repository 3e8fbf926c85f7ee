//! Enforcement: revert planning and execution, behind safety rails.
//!
//! ```text
//! verdict + desired + last good ──▶ plan ──▶ RevertAction ──▶ Executor ──▶ kube-apiserver
//!                                             ▲                  │  ▲
//!               Rails (flap limit, backoff, breaker), Grace,     │  └── ResolveKind, given by the caller
//!               exemptions decide whether it runs                └──▶ Outcome
//! ```
//!
//! Reverts unauthorized changes where a scope is in enforce mode:
//! - [`plan()`] (pure) turns a judged change into a [`RevertAction`]: apply the
//!   desired manifest, an inverse JSON patch to the last known-good state on
//!   the out-of-band fields only, create a deleted object, or delete an
//!   unmanaged one where `prune` is on.
//! - [`Executor`] performs the action with field manager `driftwarden`,
//!   never clobbering a newer write: such a revert is
//!   [`Outcome::Superseded`]. It finds a kind's API resource through the
//!   [`ResolveKind`] its caller gives it, and does no discovery itself.
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
mod own_writes;
pub mod plan;
pub mod policy;
pub mod rails;

pub use execute::{Executor, FIELD_MANAGER, ResolveKind, Resolving};
pub use grace::Grace;
pub use own_writes::OwnWrites;
pub use plan::{PlanInput, desired_manifest, plan};
pub use policy::{Match, Policies, Policy, labels_of, may_prune, policy_index};
pub use rails::{
    BACKOFF_BASE, Held, Rails, RailsConfig, WarReport, Writer, exempt, exempted, expire,
};
