//! Trusted actors: whose changes to undeclared fields do not matter.
//!
//! Trust never makes drift authorized: it only decides whether a change to
//! fields git does not declare (an HPA scaling, a webhook's annotation) is
//! `in_sync` or `drift(out_of_band)`.

use model::Actor;
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

/// Trusted identities. Each entry is a name, or a prefix ending in `*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Trust {
    /// Field managers, e.g. `kube-controller-manager`, `argocd-controller`.
    pub managers: Vec<String>,
    /// User names, e.g. `admin`.
    pub users: Vec<String>,
    /// Groups, e.g. `system:masters`.
    pub groups: Vec<String>,
    /// Service accounts as `namespace:name` or as the full user name
    /// `system:serviceaccount:namespace:name`, e.g. `system:serviceaccount:argocd:*`.
    pub service_accounts: Vec<String>,
}

impl Trust {
    /// This trust, also trusting field manager `pattern`.
    pub fn manager(mut self, pattern: impl Into<String>) -> Self {
        self.managers.push(pattern.into());
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

    /// Checks that every entry is a name or a prefix ending in `*`.
    pub fn validate(&self) -> Result<()> {
        let lists = [
            ("managers", &self.managers),
            ("users", &self.users),
            ("groups", &self.groups),
            ("service_accounts", &self.service_accounts),
        ];
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

    /// Whether `actor` is trusted. An unknown actor never is.
    pub fn trusts(&self, actor: &Actor) -> bool {
        match actor {
            Actor::Audit { user, groups, .. } => {
                any_match(&self.users, user)
                    || groups.iter().any(|group| any_match(&self.groups, group))
                    || self.trusts_service_account(user)
            }
            Actor::Manager { manager, .. } => any_match(&self.managers, manager),
            Actor::Unknown { .. } => false,
        }
    }

    fn trusts_service_account(&self, user: &str) -> bool {
        let Some(short) = user.strip_prefix(SERVICE_ACCOUNT) else {
            return false;
        };
        self.service_accounts.iter().any(|pattern| {
            if pattern.starts_with(SERVICE_ACCOUNT) {
                glob(pattern, user)
            } else {
                glob(pattern, short)
            }
        })
    }
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

    fn person(user: &str, groups: &[&str]) -> Actor {
        Actor::Audit {
            user: user.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            user_agent: "kubectl/v1.35".to_owned(),
            source_ips: vec!["127.0.0.1".to_owned()],
            audit_id: "a-1".to_owned(),
        }
    }

    fn manager(name: &str) -> Actor {
        Actor::Manager {
            manager: name.to_owned(),
            operation: "Update".to_owned(),
            time: None,
        }
    }

    #[test]
    fn managers_match_exactly_or_by_prefix() {
        let trust = Trust::default()
            .manager("kube-controller-manager")
            .manager("argocd-*");
        assert!(trust.trusts(&manager("kube-controller-manager")));
        assert!(trust.trusts(&manager("argocd-application-controller")));
        assert!(!trust.trusts(&manager("kube-controller-manager-2")));
        assert!(!trust.trusts(&manager("kubectl-edit")));
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
    fn unknown_actors_are_never_trusted() {
        let everyone = Trust::default().manager("*").user("*");
        assert!(everyone.trusts(&manager("anything")));
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
    }

    #[test]
    fn trust_reads_from_config_and_rejects_unknown_keys() {
        let trust: Trust =
            serde_json::from_str(r#"{"managers": ["kube-controller-manager"]}"#).expect("parses");
        assert_eq!(trust.managers, ["kube-controller-manager"]);
        let err = serde_json::from_str::<Trust>(r#"{"manager": ["x"]}"#).expect_err("typo");
        assert!(err.to_string().contains("manager"), "{err}");
    }
}
