//! Policy rules and which one governs an object.
//!
//! ```text
//! key + git's labels (or the last known-good ones) ──▶ most specific matching rule
//!                                                       ──▶ mode, trust, ignored paths, prune, grace, sync
//! ```
//!
//! The rule is chosen from the labels git declares for the object, else its
//! last known-good labels, never from labels the judged change wrote: one
//! patch that removes the label an `enforce` rule matches does not move the
//! object out of that rule. Pure: no clock, no cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use model::{Actor, DesiredHistory, FieldPath, Mode, ObjectKey, PathError, Trust};
use serde::Deserialize;
use serde_json::Value;

/// Which objects a policy rule governs. Empty lists match everything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Namespaces.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Kinds, e.g. `Deployment`.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Labels the object must carry (in git, or when git does not declare
    /// it, in its last known-good state).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Match {
    fn covers(&self, namespace: &str, kind: &str, labels: &BTreeMap<String, String>) -> bool {
        (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace))
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind))
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    fn specificity(&self) -> usize {
        usize::from(!self.namespaces.is_empty())
            + usize::from(!self.kinds.is_empty())
            + self.labels.len()
    }
}

/// A policy rule for a scope.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Name shown in verdicts and reports.
    pub name: String,
    /// The scope.
    #[serde(default, rename = "match")]
    pub matches: Match,
    /// What to do about drift.
    #[serde(default)]
    pub mode: Mode,
    /// Fields never judged, as JSON pointers, e.g. `/spec/replicas`.
    #[serde(default)]
    pub ignored_paths: Vec<String>,
    /// Identities trusted in this scope, on top of the global `trust`.
    #[serde(default)]
    pub trust: Trust,
    /// Delete objects git does not declare (enforce mode only).
    #[serde(default)]
    pub prune: bool,
    /// How long a drift may wait for a commit that adopts it before it is
    /// reverted, e.g. `5m`; `0s` reverts at once.
    #[serde(default, deserialize_with = "model::duration")]
    pub grace: Duration,
    /// Apply new commits in this scope (and, with `prune`, delete what a
    /// commit removed): Driftwarden acts as the GitOps agent.
    #[serde(default)]
    pub sync: bool,
}

/// The position of the rule governing an object with `labels`: the matching
/// rule with the most specific scope, the first of equals; `None` when no
/// rule matches.
pub fn policy_index(
    policies: &[Policy],
    namespace: &str,
    kind: &str,
    labels: &BTreeMap<String, String>,
) -> Option<usize> {
    // `max_by_key` keeps the last of equals; reversed, that is the first.
    policies
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, p)| p.matches.covers(namespace, kind, labels))
        .max_by_key(|(_, p)| p.matches.specificity())
        .map(|(i, _)| i)
}

/// The labels of an object or manifest.
pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// What decides an object's scope: git's latest manifest of the key (also
/// when a commit removed it since), else its last known-good state.
pub fn scope_basis<'a>(
    desired: Option<&'a DesiredHistory>,
    last_good: Option<&'a Value>,
) -> Option<&'a Value> {
    desired
        .and_then(|h| h.entries.iter().rev().find_map(|e| e.manifest.as_ref()))
        .or(last_good)
}

/// Whether `prune` may ever delete `key`: never the cluster's own objects,
/// those in a `kube-*` namespace, the `kube-*` and `default` namespaces
/// themselves, or anything named `system:*` (bootstrap RBAC).
pub fn may_prune(key: &ObjectKey) -> bool {
    let clusters_own = key.namespace.starts_with("kube-")
        || key.name.starts_with("system:")
        || (key.kind == "Namespace"
            && key.group.is_empty()
            && (key.name.starts_with("kube-") || key.name == "default"));
    !clusters_own
}

/// The global trust and the policy rules, with ignored paths parsed once.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    trust: Trust,
    rules: Vec<Policy>,
    ignored: Vec<Vec<FieldPath>>,
}

impl Policies {
    /// The rules under the global `trust`; fails on an ignored path that is
    /// not a JSON pointer.
    pub fn new(trust: Trust, rules: Vec<Policy>) -> Result<Self, PathError> {
        let ignored = rules
            .iter()
            .map(|policy| {
                policy
                    .ignored_paths
                    .iter()
                    .map(|p| FieldPath::from_json_pointer(p))
                    .collect::<Result<_, _>>()
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            trust,
            rules,
            ignored,
        })
    }

    /// The global trust.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// Whether a rule names `kind` in its match: how a cluster-scoped kind
    /// git does not declare is brought into scope.
    pub fn names_kind(&self, kind: &str) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.matches.kinds.iter().any(|k| k == kind))
    }

    /// The rule governing an object and its ignored paths, chosen by the
    /// labels of [`scope_basis`]; an object with neither is matched without
    /// labels.
    pub fn governing(
        &self,
        key: &ObjectKey,
        desired: Option<&DesiredHistory>,
        last_good: Option<&Value>,
    ) -> Option<(&Policy, &[FieldPath])> {
        let labels = scope_basis(desired, last_good)
            .map(labels_of)
            .unwrap_or_default();
        let i = policy_index(&self.rules, &key.namespace, &key.kind, &labels)?;
        Some((&self.rules[i], self.ignored[i].as_slice()))
    }

    /// The trust in force for an object governed by `policy`: the global
    /// trust plus the scope's own.
    pub fn trust_under(&self, policy: Option<&Policy>) -> std::borrow::Cow<'_, Trust> {
        match policy {
            Some(policy) if !policy.trust.is_empty() => {
                std::borrow::Cow::Owned(self.trust.merged(&policy.trust))
            }
            _ => std::borrow::Cow::Borrowed(&self.trust),
        }
    }

    /// Whether `actor` is an automated identity: a `system:` user or service
    /// account, or an audited identity the global trust names (another
    /// GitOps agent). A revert war with one is a misconfiguration; with
    /// anyone else it goes on.
    pub fn is_automated(&self, actor: &Actor) -> bool {
        actor.is_automated() || (matches!(actor, Actor::Audit { .. }) && self.trust.trusts(actor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use model::{Commit, DesiredEntry};
    use serde_json::json;

    fn rule(name: &str, mode: Mode, namespaces: &[&str], labels: &[(&str, &str)]) -> Policy {
        Policy {
            name: name.into(),
            matches: Match {
                namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
                kinds: Vec::new(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            },
            mode,
            ignored_paths: Vec::new(),
            trust: Trust::default(),
            prune: false,
            grace: Duration::ZERO,
            sync: false,
        }
    }

    fn policies() -> Policies {
        Policies::new(
            Trust::default().user("gitops"),
            vec![
                rule("everything", Mode::Audit, &[], &[]),
                rule("team", Mode::Audit, &["team-a"], &[]),
                rule("prod", Mode::Enforce, &["team-a"], &[("tier", "prod")]),
            ],
        )
        .expect("valid rules")
    }

    fn key() -> ObjectKey {
        ObjectKey::new("c", "apps", "Deployment", "team-a", "web")
    }

    fn git(labels: Value) -> DesiredHistory {
        DesiredHistory {
            entries: vec![DesiredEntry {
                commit: Commit {
                    id: "c1".into(),
                    time: DateTime::from_timestamp(1_800_000_000, 0).expect("valid time"),
                    author: "gitops <gitops@example.com>".into(),
                    summary: "web".into(),
                    refs: Vec::new(),
                },
                manifest: Some(json!({"metadata": {"labels": labels}})),
            }],
        }
    }

    fn governing(desired: Option<&DesiredHistory>, last_good: Option<&Value>) -> String {
        let policies = policies();
        let (policy, _) = policies
            .governing(&key(), desired, last_good)
            .expect("a rule matches");
        policy.name.clone()
    }

    #[test]
    fn the_scope_comes_from_the_labels_git_declares() {
        let declared = git(json!({"tier": "prod"}));
        assert_eq!(governing(Some(&declared), None), "prod");
        // The live object's labels are not asked at all: only git's.
        let unlabelled_live = json!({"metadata": {"labels": {}}});
        assert_eq!(governing(Some(&declared), Some(&unlabelled_live)), "prod");
    }

    #[test]
    fn an_undeclared_object_is_scoped_by_its_last_known_good_labels() {
        let good = json!({"metadata": {"labels": {"tier": "prod"}}});
        assert_eq!(governing(None, Some(&good)), "prod");
        assert_eq!(governing(None, None), "team");
    }

    #[test]
    fn the_most_specific_rule_governs_and_the_first_of_equals() {
        let rules = vec![
            rule("a", Mode::Audit, &["team-a"], &[]),
            rule("b", Mode::Enforce, &["team-a"], &[]),
        ];
        let labels = BTreeMap::new();
        assert_eq!(
            policy_index(&rules, "team-a", "Deployment", &labels),
            Some(0)
        );
        assert_eq!(policy_index(&rules, "team-b", "Deployment", &labels), None);
    }

    #[test]
    fn machines_are_automated_people_are_not() {
        let policies = policies();
        let audited = |user: &str| Actor::Audit {
            user: user.into(),
            groups: vec![],
            service_account: None,
            impersonated_by: None,
            user_agent: String::new(),
            source_ips: vec![],
            audit_id: "a".into(),
            manager: None,
        };
        assert!(policies.is_automated(&audited("system:serviceaccount:argocd:app")));
        assert!(policies.is_automated(&audited("gitops")));
        assert!(!policies.is_automated(&audited("mallory")));
        assert!(!policies.is_automated(&Actor::ManagedFields {
            manager: "kube-controller-manager".into(),
            operation: "Update".into(),
            time: None,
        }));
    }

    #[test]
    fn the_clusters_own_objects_are_never_pruned() {
        let key = |kind: &str, namespace: &str, name: &str| {
            let group = if kind == "ClusterRole" {
                "rbac.authorization.k8s.io"
            } else {
                ""
            };
            ObjectKey::new("c", group, kind, namespace, name)
        };
        assert!(may_prune(&key("ConfigMap", "team-a", "stray")));
        assert!(may_prune(&key("Namespace", "", "team-a")));
        assert!(may_prune(&key("ClusterRole", "", "team-a-reader")));
        assert!(!may_prune(&key("ConfigMap", "kube-system", "stray")));
        assert!(!may_prune(&key("ConfigMap", "kube-public", "cluster-info")));
        assert!(!may_prune(&key("ClusterRole", "", "system:node")));
        assert!(!may_prune(&key("Namespace", "", "kube-node-lease")));
        assert!(!may_prune(&key("Namespace", "", "default")));
    }

    #[test]
    fn only_rules_naming_a_kind_name_it() {
        let mut named = rule("roles", Mode::Audit, &[], &[]);
        named.matches.kinds = vec!["ClusterRole".into()];
        let policies = Policies::new(
            Trust::default(),
            vec![named, rule("all", Mode::Audit, &[], &[])],
        )
        .expect("valid");
        assert!(policies.names_kind("ClusterRole"));
        assert!(!policies.names_kind("CustomResourceDefinition"));
    }
}
