//! Enforcement: what Driftwarden does about a drift, and the records that
//! say so (reverts, exemptions, pauses, amended judgements).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Actor, Judgement, ObjectKey};

/// What Driftwarden does about drift in a scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Record and alert.
    #[default]
    Audit,
    /// Record what enforce would do, change nothing.
    DryRun,
    /// Revert unauthorized changes.
    Enforce,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Audit => "audit",
            Mode::DryRun => "dry_run",
            Mode::Enforce => "enforce",
        })
    }
}

/// How an object is put back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RevertAction {
    /// Server-side apply of the desired manifest of `commit` (field manager
    /// `driftwarden`, forced): for drift of declared fields and rollbacks.
    Apply {
        /// The desired commit.
        commit: String,
    },
    /// A JSON patch back to the last known-good state, guarded by the
    /// `resourceVersion` it was computed against: for out-of-band changes.
    Patch {
        /// RFC 6902 operations.
        patch: Value,
        /// The version the patch expects to find.
        resource_version: String,
    },
    /// Create the object from the desired manifest of `commit`: for deletion.
    Create {
        /// The desired commit.
        commit: String,
    },
    /// Delete an unmanaged object (only where `prune` is on).
    Delete {
        /// The incarnation to delete; another incarnation is left alone.
        uid: String,
    },
}

impl fmt::Display for RevertAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = |c: &str| c.get(..12).unwrap_or(c).to_owned();
        match self {
            RevertAction::Apply { commit } => write!(f, "apply desired state of {}", short(commit)),
            RevertAction::Patch { patch, .. } => write!(f, "patch {patch}"),
            RevertAction::Create { commit } => write!(f, "create from {}", short(commit)),
            RevertAction::Delete { uid } => write!(f, "delete (uid {uid})"),
        }
    }
}

/// What came of a planned revert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Dry run: recorded, nothing changed.
    WouldRevert,
    /// Reverted; the object's version after the write.
    Reverted {
        /// `resourceVersion` after the write, when known.
        resource_version: Option<String>,
    },
    /// A newer write got there first; it is judged on its own, never clobbered.
    Superseded {
        /// What the apiserver said.
        detail: String,
    },
    /// Not reverted on purpose: flap limit, circuit breaker, grace, exemption.
    Held {
        /// Why.
        reason: String,
    },
    /// The write failed.
    Failed {
        /// The error.
        error: String,
    },
    /// About to write: recorded before the write, its result follows in
    /// another record. An intent without a result (the process stopped in
    /// between) is planned again at start, from the object as it is then.
    Intended,
}

/// A revert planned, held or done, linked to the drift it answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enforcement {
    /// Which object.
    pub key: ObjectKey,
    /// Ledger sequence number of the drift (or unmanaged) record it
    /// answers; 0 when it applies a new commit (`sync`) rather than a drift.
    pub drift_seq: u64,
    /// `dry_run` or `enforce`.
    pub mode: Mode,
    /// The policy rule that governs the object.
    pub policy: String,
    /// How the object is put back.
    pub action: RevertAction,
    /// What came of it.
    pub outcome: Outcome,
}

/// A later judgement of an earlier change: a commit adopting a drift, or an
/// actor learnt after the fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Amendment {
    /// Which object.
    pub key: ObjectKey,
    /// Ledger sequence number of the record amended.
    pub amends: u64,
    /// The new judgement.
    pub judgement: Judgement,
}

/// The actor of an earlier change, learnt after it was judged: its audit
/// record arrived later than the change. The verdict stands (when the
/// identity changes the verdict, an [`Amendment`] is written instead).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    /// Which object.
    pub key: ObjectKey,
    /// Ledger sequence number of the change record attributed.
    pub amends: u64,
    /// Who made that change.
    pub actor: Actor,
}

/// What an exemption covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum ExemptionScope {
    /// One object.
    Object {
        /// The object.
        key: ObjectKey,
    },
    /// Every object of a namespace in a cluster.
    Namespace {
        /// The cluster.
        cluster: String,
        /// The namespace.
        namespace: String,
    },
}

impl ExemptionScope {
    /// Whether the scope covers `key`.
    pub fn covers(&self, key: &ObjectKey) -> bool {
        match self {
            ExemptionScope::Object { key: exempt } => exempt == key,
            ExemptionScope::Namespace { cluster, namespace } => {
                &key.cluster == cluster && &key.namespace == namespace
            }
        }
    }
}

impl fmt::Display for ExemptionScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExemptionScope::Object { key } => write!(f, "{key}"),
            ExemptionScope::Namespace { cluster, namespace } => {
                write!(f, "namespace {namespace} in {cluster}")
            }
        }
    }
}

/// A break-glass exemption: changes in scope are allowed until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exemption {
    /// What it covers.
    pub scope: ExemptionScope,
    /// When it starts.
    pub from: DateTime<Utc>,
    /// When it expires.
    pub until: DateTime<Utc>,
    /// Why, as given by whoever granted it.
    pub reason: String,
    /// Who granted it (the local user running the command).
    pub granted_by: String,
}

impl Exemption {
    /// Whether the exemption covers `key` at `at`.
    pub fn applies(&self, key: &ObjectKey, at: DateTime<Utc>) -> bool {
        self.from <= at && at < self.until && self.scope.covers(key)
    }
}

/// An exemption ended before its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The ledger record of the exemption revoked.
    pub exemption: u64,
    /// Why.
    pub reason: String,
    /// Who revoked it.
    pub revoked_by: String,
}

/// Enforcement paused or resumed cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Control {
    /// Enforcement paused (circuit breaker tripped, or by hand).
    Paused {
        /// Why.
        reason: String,
        /// When it resumes on its own, if ever.
        until: Option<DateTime<Utc>>,
    },
    /// Enforcement resumed.
    Resumed {
        /// Why (by hand, or the pause timed out).
        reason: String,
    },
    /// A person (or an untrusted identity) keeps changing an object back:
    /// a critical revert war. Reverts go on with a capped backoff.
    RevertWar {
        /// The object fought over.
        key: ObjectKey,
        /// Who keeps changing it.
        writer: String,
        /// Reverts within the flap window so far.
        reverts: usize,
        /// The flap window, for people (`5m`).
        window: String,
    },
    /// The ledger's indexes (trees derived from the chain) disagreed with
    /// the chain and were rebuilt from it.
    Repaired {
        /// The trees rebuilt, e.g. `dedup`, `objects`.
        trees: Vec<String>,
        /// How many entries differed from what the chain says.
        differences: u64,
    },
    /// The chain was found shorter than its last signed checkpoint, and the
    /// loss was accepted by hand: records `from..=to` are gone.
    TruncationAccepted {
        /// The first record lost.
        from: u64,
        /// The last record lost (the checkpoint's sequence number).
        to: u64,
        /// When the checkpoint that names the lost records was signed.
        checkpoint_at: DateTime<Utc>,
        /// Its head hash, hex.
        checkpoint_head: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exemptions_cover_their_scope_until_they_expire() {
        let web = ObjectKey::new("prod", "apps", "Deployment", "team-a", "web");
        let other = ObjectKey::new("prod", "apps", "Deployment", "team-b", "web");
        let start = DateTime::from_timestamp(1_800_000_000, 0).expect("valid time");
        let exemption = Exemption {
            scope: ExemptionScope::Namespace {
                cluster: "prod".into(),
                namespace: "team-a".into(),
            },
            from: start,
            until: start + chrono::Duration::hours(2),
            reason: "incident 42".into(),
            granted_by: "oncall".into(),
        };
        assert!(exemption.applies(&web, start + chrono::Duration::minutes(5)));
        assert!(!exemption.applies(&other, start + chrono::Duration::minutes(5)));
        assert!(!exemption.applies(&web, start + chrono::Duration::hours(2)));
        assert!(!exemption.applies(&web, start - chrono::Duration::seconds(1)));
    }

    #[test]
    fn enforcement_round_trips_through_json() {
        let record = Enforcement {
            key: ObjectKey::new("prod", "", "ConfigMap", "team-a", "cfg"),
            drift_seq: 9,
            mode: Mode::DryRun,
            policy: "team-a".into(),
            action: RevertAction::Patch {
                patch: serde_json::json!([{"op": "remove", "path": "/metadata/labels/owner"}]),
                resource_version: "41".into(),
            },
            outcome: Outcome::WouldRevert,
        };
        let text = serde_json::to_string(&record).expect("serializes");
        assert!(text.contains(r#""mode":"dry_run""#), "{text}");
        assert!(text.contains(r#""action":"patch""#), "{text}");
        let back: Enforcement = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, record);
    }
}
