//! Readiness of the parts of a running Driftwarden, for `/readyz`: each
//! part sets its own state, named, with a word on what it is doing.
//!
//! ```text
//! ledger thread ─┐
//! bus ───────────┼─▶ Health ──▶ GET /readyz: 200 when every part is ready, 503 naming those not
//! git fetches ───┤
//! watchers ──────┘
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The state of every part, shared by the parts and the API.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<BTreeMap<String, Part>>>);

/// One part's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Whether it is ready.
    pub ready: bool,
    /// What it is doing, or what is wrong.
    pub detail: String,
}

impl Health {
    /// Sets part `name`'s state.
    pub fn set(&self, name: impl Into<String>, ready: bool, detail: impl Into<String>) {
        let part = Part {
            ready,
            detail: detail.into(),
        };
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.into(), part);
    }

    /// Every part, by name.
    pub fn parts(&self) -> BTreeMap<String, Part> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether every part is ready (and at least one has reported).
    pub fn ready(&self) -> bool {
        let parts = self.parts();
        !parts.is_empty() && parts.values().all(|part| part.ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_part_is() {
        let health = Health::default();
        assert!(!health.ready(), "no part reported yet");
        health.set("ledger", true, "writable");
        health.set("git/apps", false, "fetch failing for 3m");
        assert!(!health.ready());
        health.set("git/apps", true, "fetched 2s ago");
        assert!(health.ready());
        assert_eq!(health.parts()["git/apps"].detail, "fetched 2s ago");
    }
}
