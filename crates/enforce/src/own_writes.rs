//! Driftwarden's own writes, so the correlator can name Driftwarden as the
//! actor of a revert that leaves no trace in managedFields (a removed field
//! has no owner) when no audit record says who wrote.
//!
//! ```text
//! executor: begin(uid) ──write──▶ done(uid, resourceVersion) | forget(uid)
//! correlator: claim(uid, resourceVersion) ──▶ "driftwarden" or someone else
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Reverts in flight or just done, by object uid, so the correlator can
/// name Driftwarden as the actor of a write that leaves no trace in
/// managedFields (a removed field has no owner).
#[derive(Debug, Clone, Default)]
pub struct OwnWrites(Arc<Mutex<HashMap<String, Option<String>>>>);

impl OwnWrites {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<String>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A revert of `uid` is being written.
    pub fn begin(&self, uid: &str) {
        self.lock().insert(uid.to_owned(), None);
    }

    /// The revert of `uid` produced `resource_version`.
    pub fn done(&self, uid: &str, resource_version: Option<String>) {
        self.lock().insert(uid.to_owned(), resource_version);
    }

    /// The revert of `uid` wrote nothing.
    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }

    /// Whether the change of `uid` to `resource_version` is (very likely)
    /// Driftwarden's own revert: the one it reported, or one still in flight.
    /// The entry is consumed once matched.
    pub fn claim(&self, uid: &str, resource_version: &str) -> bool {
        let mut writes = self.lock();
        match writes.get(uid) {
            Some(Some(version)) if version == resource_version => {
                writes.remove(uid);
                true
            }
            Some(None) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reported_revert_is_claimed_once_at_its_version() {
        let own = OwnWrites::default();
        own.begin("u1");
        assert!(own.claim("u1", "any"), "in flight: any version");
        own.begin("u1");
        own.done("u1", Some("7".into()));
        assert!(!own.claim("u1", "6"));
        assert!(own.claim("u1", "7"));
        assert!(!own.claim("u1", "7"), "consumed");
    }

    #[test]
    fn a_revert_that_wrote_nothing_claims_nothing() {
        let own = OwnWrites::default();
        own.begin("u1");
        own.forget("u1");
        assert!(!own.claim("u1", "7"));
    }
}
