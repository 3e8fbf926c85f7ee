//! Verdicts: how one change is judged against git, and who made it.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{AuditRecord, AuditUser, FieldPath};

/// How a drift departs from git.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DriftKind {
    /// Declared fields now differ from desired HEAD.
    Modified {
        /// The declared fields that differ.
        paths: Vec<FieldPath>,
    },
    /// Declared fields now equal an older commit's state (`kubectl rollout undo`).
    Rollback {
        /// The older commit whose state the object returned to.
        commit: String,
        /// The declared fields that differ from HEAD.
        paths: Vec<FieldPath>,
    },
    /// An object git declares was deleted.
    Deleted,
    /// An untrusted actor changed fields git does not declare.
    OutOfBand {
        /// The undeclared fields that changed.
        paths: Vec<FieldPath>,
    },
}

/// The classification of one change (design §4.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The change brings the object to the desired commit's state, or creates or
    /// deletes it as git says.
    Authorized {
        /// The desired commit.
        commit: String,
    },
    /// Declared fields equal desired; only undeclared fields changed, by a
    /// trusted actor.
    InSync,
    /// The object departs from git.
    Drift {
        /// How.
        drift: DriftKind,
    },
    /// An object git does not declare was created or changed.
    Unmanaged,
    /// An object owned by a controller; recorded, never judged unmanaged.
    Derived,
    /// A policy rule or a break-glass exemption allows the change.
    Allowed {
        /// The rule or exemption that allows it.
        rule: String,
    },
    /// A later commit declared exactly the drifted state.
    Adopted {
        /// The adopting commit.
        commit: String,
        /// Ledger sequence number of the drift it amends.
        drift_seq: u64,
    },
}

impl Verdict {
    /// Whether the change departs from git and needs attention.
    pub fn is_drift(&self) -> bool {
        matches!(self, Verdict::Drift { .. })
    }

    /// Whether the object is in a known-good state after it: authorized,
    /// in sync or adopted (unless a drift stays open).
    pub fn is_good(&self) -> bool {
        matches!(
            self,
            Verdict::Authorized { .. } | Verdict::InSync | Verdict::Adopted { .. }
        )
    }

    /// Whether the object departs from git after it: drift, and drift a
    /// policy or exemption allows for now (judged again when that ends).
    pub fn departs(&self) -> bool {
        self.is_drift() || matches!(self, Verdict::Allowed { .. })
    }

    /// Whether it closes an open drift: git agreeing again (authorized,
    /// adopted); a trusted change to undeclared fields does not.
    pub fn resolves_drift(&self) -> bool {
        matches!(self, Verdict::Authorized { .. } | Verdict::Adopted { .. })
    }

    /// Short stable name, for metrics labels and filters.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Authorized { .. } => "authorized",
            Verdict::InSync => "in_sync",
            Verdict::Drift { drift } => match drift {
                DriftKind::Modified { .. } => "drift_modified",
                DriftKind::Rollback { .. } => "drift_rollback",
                DriftKind::Deleted => "drift_deleted",
                DriftKind::OutOfBand { .. } => "drift_out_of_band",
            },
            Verdict::Unmanaged => "unmanaged",
            Verdict::Derived => "derived",
            Verdict::Allowed { .. } => "allowed",
            Verdict::Adopted { .. } => "adopted",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = |c: &str| c.get(..12).unwrap_or(c).to_owned();
        let list = |paths: &[FieldPath]| {
            paths
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Verdict::Authorized { commit } => write!(f, "authorized({})", short(commit)),
            Verdict::InSync => f.write_str("in_sync"),
            Verdict::Drift { drift } => match drift {
                DriftKind::Modified { paths } => write!(f, "drift(modified: {})", list(paths)),
                DriftKind::Rollback { commit, .. } => {
                    write!(f, "drift(rollback to {})", short(commit))
                }
                DriftKind::Deleted => f.write_str("drift(deleted)"),
                DriftKind::OutOfBand { paths } => {
                    write!(f, "drift(out_of_band: {})", list(paths))
                }
            },
            Verdict::Unmanaged => f.write_str("unmanaged"),
            Verdict::Derived => f.write_str("derived"),
            Verdict::Allowed { rule } => write!(f, "allowed({rule})"),
            Verdict::Adopted { commit, drift_seq } => {
                write!(f, "adopted({}, drift #{drift_seq})", short(commit))
            }
        }
    }
}

/// Who made a change.
///
/// `source` says where the answer comes from: `audit` (a kube-apiserver
/// audit record joined to the change: an identity), `managed_fields` (the
/// field manager named in the object: a claim any client can make) or
/// `unknown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Actor {
    /// From a Kubernetes audit record joined to the change.
    Audit {
        /// The user the request acted as (the impersonated user, if any).
        user: String,
        /// That user's groups.
        groups: Vec<String>,
        /// `namespace:name` when the user is a service account.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service_account: Option<String>,
        /// The authenticated user who impersonated `user`, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        impersonated_by: Option<AuditUser>,
        /// Client user agent (client-controlled).
        user_agent: String,
        /// Client addresses (client-controlled but the last).
        source_ips: Vec<String>,
        /// The apiserver's audit id.
        audit_id: String,
        /// The field manager the write named in managedFields: a claim,
        /// shown next to the identity behind it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        manager: Option<String>,
    },
    /// From `metadata.managedFields`: the manager that owns the changed
    /// fields. A name the client chose, not an identity.
    ManagedFields {
        /// Field manager name.
        manager: String,
        /// `Apply` or `Update`.
        operation: String,
        /// When the manager wrote.
        time: Option<DateTime<Utc>>,
    },
    /// Not known, e.g. a change made while nobody watched.
    Unknown {
        /// Why the actor is unknown.
        reason: String,
    },
}

/// Prefix of service account user names.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

impl Actor {
    /// The actor an audit record names; `manager` is the field manager the
    /// write claimed, if known.
    pub fn from_audit(record: &AuditRecord, manager: Option<String>) -> Actor {
        let (user, impersonated_by) = match &record.impersonated {
            Some(impersonated) => (impersonated.clone(), Some(record.user.clone())),
            None => (record.user.clone(), None),
        };
        let service_account = user
            .username
            .strip_prefix(SERVICE_ACCOUNT_PREFIX)
            .map(str::to_owned);
        Actor::Audit {
            user: user.username,
            groups: user.groups,
            service_account,
            impersonated_by,
            user_agent: record.user_agent.clone(),
            source_ips: record.source_ips.clone(),
            audit_id: record.audit_id.clone(),
            manager,
        }
    }

    /// Where the answer comes from: `audit`, `managed_fields` or `unknown`.
    pub fn source(&self) -> &'static str {
        match self {
            Actor::Audit { .. } => "audit",
            Actor::ManagedFields { .. } => "managed_fields",
            Actor::Unknown { .. } => "unknown",
        }
    }

    /// Whether the actor is a machine: a service account, a `system:` user
    /// (the control plane's components) or, without an identity, nobody
    /// knows (`false`). Identities only: a manager name is a claim.
    pub fn is_automated(&self) -> bool {
        match self {
            Actor::Audit {
                user,
                impersonated_by,
                ..
            } => {
                let machine = |name: &str| name.starts_with("system:");
                machine(user)
                    && impersonated_by
                        .as_ref()
                        .is_none_or(|i| machine(&i.username))
            }
            Actor::ManagedFields { .. } | Actor::Unknown { .. } => false,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Audit {
                user,
                impersonated_by,
                manager,
                ..
            } => {
                write!(f, "{user}")?;
                if let Some(by) = impersonated_by {
                    write!(f, " (impersonated by {})", by.username)?;
                }
                if let Some(manager) = manager {
                    write!(f, " as manager {manager}")?;
                }
                Ok(())
            }
            Actor::ManagedFields { manager, .. } => write!(f, "manager {manager} (unverified)"),
            Actor::Unknown { reason } => write!(f, "unknown ({reason})"),
        }
    }
}

/// One field's change, for diffs shown to people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// Which field.
    pub path: FieldPath,
    /// Value before (or desired), absent when the field was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    /// Value after, absent when the field was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
    /// How this path alone is judged, when the change is judged per path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judged: Option<PathVerdict>,
}

impl FieldChange {
    /// A change of `path` from `from` to `to`, not judged yet.
    pub fn new(path: FieldPath, from: Option<Value>, to: Option<Value>) -> Self {
        Self {
            path,
            from,
            to,
            judged: None,
        }
    }

    /// This change, judged `verdict`.
    pub fn judged(mut self, verdict: PathVerdict) -> Self {
        self.judged = Some(verdict);
        self
    }
}

/// The verdict on one path of a change (design §4.5: judgement is per path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathVerdict {
    /// A declared path brought to git's value, or an undeclared path put back
    /// to the last known-good state.
    Authorized,
    /// A declared path that differs from git (`from` is git's value).
    Drift,
    /// An undeclared path set by an actor the policy does not trust and not
    /// known good (`from` is the last known-good value). Stays open, change
    /// after change, until it is put back or git adopts it.
    OutOfBand,
    /// An undeclared path changed by a trusted identity.
    Trusted,
}

impl PathVerdict {
    /// Whether the path departs from git or the known-good state.
    pub fn is_open(self) -> bool {
        matches!(self, PathVerdict::Drift | PathVerdict::OutOfBand)
    }
}

/// The correlator's judgement of one change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Who made the change.
    pub actor: Actor,
    /// The desired HEAD commit the change was judged against, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_commit: Option<String>,
    /// What differs: from desired to live for drift, from previous to live otherwise.
    /// Judged per path where the change was judged per path: the paths it
    /// set, and every drift still open on the object after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diff: Vec<FieldChange>,
    /// Judged while a git source the object depends on was stale: the
    /// desired state may be behind the branch, so nothing is enforced on
    /// this verdict and the change is judged again when git is back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub git_stale: bool,
}

impl Judgement {
    /// The paths of the diff judged `verdict`.
    pub fn paths_judged(&self, verdict: PathVerdict) -> impl Iterator<Item = &FieldPath> {
        self.diff
            .iter()
            .filter(move |change| change.judged == Some(verdict))
            .map(|change| &change.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_serialize_with_stable_tags() {
        let drift = Verdict::Drift {
            drift: DriftKind::Modified {
                paths: vec!["spec.replicas".parse().expect("path")],
            },
        };
        let text = serde_json::to_string(&drift).expect("serializes");
        assert_eq!(
            text,
            r#"{"verdict":"drift","drift":{"kind":"modified","paths":["spec.replicas"]}}"#
        );
        assert_eq!(drift.to_string(), "drift(modified: spec.replicas)");
        assert_eq!(drift.name(), "drift_modified");
        assert!(drift.is_drift());
    }

    #[test]
    fn judgement_round_trips_through_json() {
        let judgement = Judgement {
            git_stale: false,
            verdict: Verdict::Drift {
                drift: DriftKind::Rollback {
                    commit: "0123456789abcdef".into(),
                    paths: vec![
                        "spec.template.spec.containers[name=web].image"
                            .parse()
                            .expect("path"),
                    ],
                },
            },
            actor: Actor::ManagedFields {
                manager: "kubectl-rollout".into(),
                operation: "Update".into(),
                time: None,
            },
            desired_commit: Some("fedcba".into()),
            diff: vec![
                FieldChange::new(
                    "spec.replicas".parse().expect("path"),
                    Some(serde_json::json!(2)),
                    Some(serde_json::json!(5)),
                )
                .judged(PathVerdict::Drift),
            ],
        };
        let text = serde_json::to_string(&judgement).expect("serializes");
        let back: Judgement = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, judgement);
        assert_eq!(back.verdict.to_string(), "drift(rollback to 0123456789ab)");
    }
}
