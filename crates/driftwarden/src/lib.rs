//! The Driftwarden binary: configuration, CLI, and the wiring of every stage.
//!
//! ```text
//! config ──▶ watch ──▶ bus ──▶ correlate ──▶ ledger ──▶ enforce / notify / API
//! ```

pub mod api;
pub mod checkpoints;
pub mod cli;
pub mod config;
pub mod correlator;
pub mod desired;
pub mod enforcer;
#[cfg(test)]
mod fixtures;
pub mod health;
pub mod inspect;
pub mod keys;
pub mod kinds;
pub mod metrics;
pub mod notifier;
pub mod rbac;
pub mod replay;
pub mod report;
pub mod requests;
pub mod run;
pub mod siem;
