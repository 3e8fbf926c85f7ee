//! Trusted actors: whose changes to undeclared fields do not matter.
//!
//! Trust never makes drift authorized: it only decides whether a change to
//! fields git does not declare (an HPA scaling, a webhook's annotation) is
//! `in_sync` or `drift(out_of_band)`.
//!
//! Trust needs an identity. Users, groups and service accounts come from
//! kube-apiserver audit records. A field-manager name is chosen by the client
//! (`kubectl --field-manager=...`), so it is a claim: it counts only when the
//! audit identity behind the write is one the policy binds to that manager,
//! or, on clusters without audit webhooks, where the policy accepts
//! unverified managers.

use crate::Actor;
use serde::{Deserialize, Serialize};

/// A trust list that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// An entry is empty.
    #[error(
        "trusted {list} has an empty entry: remove it, or write a name (a trailing `*` matches any rest)"
    )]
    Empty {
        /// Which list: `managers`, `users`, `groups` or `service_accounts`.
        list: &'static str,
    },
    /// An entry has `*` before its end.
    #[error(
        "trusted {list} entry `{pattern}` has `*` before its end: only a trailing `*` is \
         supported, e.g. `system:serviceaccount:argocd:*`"
    )]
    Glob {
        /// Which list.
        list: &'static str,
        /// The entry as given.
        pattern: String,
    },
}

/// Result of validating a trust list.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Prefix of service account user names.
const SERVICE_ACCOUNT: &str = "system:serviceaccount:";

/// A field manager and the identities allowed to write under its name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManagerBinding {
    /// The manager name, e.g. `kube-controller-manager`; a trailing `*`
    /// matches a prefix.
    pub name: String,
    /// Users who may write as this manager, e.g. `system:kube-controller-manager`.
    pub users: Vec<String>,
    /// Groups whose members may write as this manager.
    pub groups: Vec<String>,
    /// Service accounts (`namespace:name` or the full user name) who may
    /// write as this manager.
    pub service_accounts: Vec<String>,
}

/// Trusted identities. Each entry is a name, or a prefix ending in `*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Trust {
    /// User names, e.g. `admin`.
    pub users: Vec<String>,
    /// Groups, e.g. `system:masters`.
    pub groups: Vec<String>,
    /// Service accounts as `namespace:name` or as the full user name
    /// `system:serviceaccount:namespace:name`, e.g. `system:serviceaccount:argocd:*`.
    pub service_accounts: Vec<String>,
    /// Field managers, each bound to the identities that may use its name.
    pub managers: Vec<ManagerBinding>,
    /// Count a trusted manager name without an audit identity behind it.
    /// Only for clusters that cannot send audit events (managed control
    /// planes): any client can claim any manager name.
    pub accept_unverified_managers: bool,
}

impl Trust {
    /// This trust, also trusting the manager `name` when written by user `user`.
    pub fn manager_for_user(mut self, name: impl Into<String>, user: impl Into<String>) -> Self {
        self.managers.push(ManagerBinding {
            name: name.into(),
            users: vec![user.into()],
            ..ManagerBinding::default()
        });
        self
    }

    /// This trust, also trusting the manager `name` with no identity bound:
    /// it counts only where unverified managers are accepted.
    pub fn manager(mut self, name: impl Into<String>) -> Self {
        self.managers.push(ManagerBinding {
            name: name.into(),
            ..ManagerBinding::default()
        });
        self
    }

    /// This trust, also accepting manager names without an identity.
    pub fn accepting_unverified_managers(mut self) -> Self {
        self.accept_unverified_managers = true;
        self
    }

    /// This trust, also trusting user `pattern`.
    pub fn user(mut self, pattern: impl Into<String>) -> Self {
        self.users.push(pattern.into());
        self
    }

    /// This trust, also trusting members of group `pattern`.
    pub fn group(mut self, pattern: impl Into<String>) -> Self {
        self.groups.push(pattern.into());
        self
    }

    /// This trust, also trusting service account `pattern`.
    pub fn service_account(mut self, pattern: impl Into<String>) -> Self {
        self.service_accounts.push(pattern.into());
        self
    }

    /// This trust plus `other`'s entries (a scope's own trust on top of the
    /// global one); unverified managers are accepted if either accepts them.
    pub fn merged(&self, other: &Trust) -> Trust {
        let mut trust = self.clone();
        trust.users.extend(other.users.iter().cloned());
        trust.groups.extend(other.groups.iter().cloned());
        trust
            .service_accounts
            .extend(other.service_accounts.iter().cloned());
        trust.managers.extend(other.managers.iter().cloned());
        trust.accept_unverified_managers |= other.accept_unverified_managers;
        trust
    }

    /// Whether no identity or manager is named.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
            && self.groups.is_empty()
            && self.service_accounts.is_empty()
            && self.managers.is_empty()
    }

    /// Managers bound to no identity while unverified managers are not
    /// accepted: they never count (`check` warns about them).
    pub fn unbound_managers(&self) -> impl Iterator<Item = &str> {
        self.managers
            .iter()
            .filter(|b| {
                !self.accept_unverified_managers
                    && b.users.is_empty()
                    && b.groups.is_empty()
                    && b.service_accounts.is_empty()
            })
            .map(|b| b.name.as_str())
    }

    /// Checks that every entry is a name or a prefix ending in `*`.
    pub fn validate(&self) -> Result<()> {
        let names: Vec<String> = self.managers.iter().map(|b| b.name.clone()).collect();
        let mut lists = vec![
            ("managers", &names),
            ("users", &self.users),
            ("groups", &self.groups),
            ("service_accounts", &self.service_accounts),
        ];
        for binding in &self.managers {
            lists.push(("managers[].users", &binding.users));
            lists.push(("managers[].groups", &binding.groups));
            lists.push(("managers[].service_accounts", &binding.service_accounts));
        }
        for (list, patterns) in lists {
            for pattern in patterns {
                if pattern.is_empty() {
                    return Err(Error::Empty { list });
                }
                if pattern.trim_end_matches('*').contains('*') {
                    return Err(Error::Glob {
                        list,
                        pattern: pattern.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether `actor` is trusted. An unknown actor never is; a manager name
    /// alone only where unverified managers are accepted; an impersonated
    /// write only when the impersonator is trusted too.
    pub fn trusts(&self, actor: &Actor) -> bool {
        match actor {
            Actor::Audit {
                user,
                groups,
                impersonated_by,
                manager,
                ..
            } => {
                let manager = manager.as_deref();
                self.trusts_identity(user, groups, manager)
                    && impersonated_by
                        .as_ref()
                        .is_none_or(|by| self.trusts_identity(&by.username, &by.groups, manager))
            }
            Actor::ManagedFields { manager, .. } => {
                self.accept_unverified_managers
                    && self.managers.iter().any(|b| glob(&b.name, manager))
            }
            Actor::Unknown { .. } => false,
        }
    }

    /// Whether the identity is trusted itself, or bound to `manager`.
    fn trusts_identity(&self, user: &str, groups: &[String], manager: Option<&str>) -> bool {
        let listed = |users: &[String], group_list: &[String], accounts: &[String]| {
            any_match(users, user)
                || groups.iter().any(|group| any_match(group_list, group))
                || service_account_matches(accounts, user)
        };
        listed(&self.users, &self.groups, &self.service_accounts)
            || manager.is_some_and(|manager| {
                self.managers.iter().any(|b| {
                    glob(&b.name, manager) && listed(&b.users, &b.groups, &b.service_accounts)
                })
            })
    }
}

/// Whether `user` is a service account matching one of `patterns`.
fn service_account_matches(patterns: &[String], user: &str) -> bool {
    let Some(short) = user.strip_prefix(SERVICE_ACCOUNT) else {
        return false;
    };
    patterns.iter().any(|pattern| {
        if pattern.starts_with(SERVICE_ACCOUNT) {
            glob(pattern, user)
        } else {
            glob(pattern, short)
        }
    })
}

fn any_match(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|pattern| glob(pattern, name))
}

fn glob(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AuditUser;

    fn person(user: &str, groups: &[&str]) -> Actor {
        writing_as(user, groups, None)
    }

    fn writing_as(user: &str, groups: &[&str], manager: Option<&str>) -> Actor {
        Actor::Audit {
            user: user.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            service_account: None,
            impersonated_by: None,
            user_agent: "kubectl/v1.35".to_owned(),
            source_ips: vec!["127.0.0.1".to_owned()],
            audit_id: "a-1".to_owned(),
            manager: manager.map(str::to_owned),
        }
    }

    fn claim(name: &str) -> Actor {
        Actor::ManagedFields {
            manager: name.to_owned(),
            operation: "Update".to_owned(),
            time: None,
        }
    }

    #[test]
    fn a_manager_name_counts_only_with_the_identity_bound_to_it() {
        let trust = Trust::default()
            .manager_for_user("kube-controller-manager", "system:kube-controller-manager");
        let controller = writing_as(
            "system:kube-controller-manager",
            &[],
            Some("kube-controller-manager"),
        );
        let mallory = writing_as(
            "mallory",
            &["system:authenticated"],
            Some("kube-controller-manager"),
        );
        assert!(trust.trusts(&controller));
        assert!(
            !trust.trusts(&mallory),
            "a spoofed manager name is not trusted"
        );
        assert!(
            !trust.trusts(&writing_as(
                "system:kube-controller-manager",
                &[],
                Some("kubectl-edit")
            )),
            "the binding covers writes under that manager's name only"
        );
    }

    #[test]
    fn without_an_identity_a_manager_name_counts_only_when_accepted() {
        let strict = Trust::default()
            .manager("kube-controller-manager")
            .manager("argocd-*");
        assert!(!strict.trusts(&claim("kube-controller-manager")));
        let lenient = strict.accepting_unverified_managers();
        assert!(lenient.trusts(&claim("kube-controller-manager")));
        assert!(lenient.trusts(&claim("argocd-application-controller")));
        assert!(!lenient.trusts(&claim("kube-controller-manager-2")));
        assert!(!lenient.trusts(&claim("kubectl-edit")));
        assert_eq!(
            Trust::default()
                .manager("x")
                .unbound_managers()
                .collect::<Vec<_>>(),
            ["x"]
        );
    }

    #[test]
    fn service_accounts_match_in_short_or_full_form() {
        let full = Trust::default().service_account("system:serviceaccount:argocd:*");
        let short = Trust::default().service_account("flux-system:kustomize-controller");
        let argocd = person(
            "system:serviceaccount:argocd:argocd-application-controller",
            &[],
        );
        let flux = person(
            "system:serviceaccount:flux-system:kustomize-controller",
            &[],
        );
        assert!(full.trusts(&argocd));
        assert!(!full.trusts(&flux));
        assert!(short.trusts(&flux));
        assert!(!short.trusts(&person("flux-system:kustomize-controller", &[])));
    }

    #[test]
    fn users_and_groups_are_trusted_by_name() {
        let trust = Trust::default().user("admin").group("platform-*");
        assert!(trust.trusts(&person("admin", &[])));
        assert!(trust.trusts(&person("bob", &["system:authenticated", "platform-oncall"])));
        assert!(!trust.trusts(&person("intruder", &["system:authenticated"])));
    }

    #[test]
    fn an_impersonated_write_needs_a_trusted_impersonator() {
        let trust = Trust::default().user("gitops");
        let mut actor = person("gitops", &[]);
        if let Actor::Audit {
            impersonated_by, ..
        } = &mut actor
        {
            *impersonated_by = Some(AuditUser {
                username: "mallory".into(),
                groups: vec![],
            });
        }
        assert!(!trust.trusts(&actor));
    }

    #[test]
    fn unknown_actors_are_never_trusted() {
        let everyone = Trust::default()
            .manager("*")
            .user("*")
            .accepting_unverified_managers();
        assert!(everyone.trusts(&claim("anything")));
        assert!(!everyone.trusts(&Actor::Unknown {
            reason: "changed while unobserved".to_owned()
        }));
    }

    #[test]
    fn a_star_before_the_end_is_refused() {
        let err = Trust::default()
            .service_account("system:*:argocd")
            .validate()
            .expect_err("inner star");
        assert!(err.to_string().contains("system:*:argocd"), "{err}");
        assert_eq!(
            Trust::default().user("").validate(),
            Err(Error::Empty { list: "users" })
        );
        assert!(Trust::default().manager("argocd-*").validate().is_ok());
        let err = Trust::default()
            .manager_for_user("kcm", "system:*x")
            .validate()
            .expect_err("inner star in a binding");
        assert!(err.to_string().contains("managers[].users"), "{err}");
    }

    #[test]
    fn trust_reads_from_config_and_rejects_unknown_keys() {
        let trust: Trust = serde_json::from_str(
            r#"{"managers": [{"name": "kube-controller-manager", "users": ["system:kube-controller-manager"]}]}"#,
        )
        .expect("parses");
        assert_eq!(trust.managers[0].name, "kube-controller-manager");
        let err = serde_json::from_str::<Trust>(r#"{"manager": ["x"]}"#).expect_err("typo");
        assert!(err.to_string().contains("manager"), "{err}");
    }
}
