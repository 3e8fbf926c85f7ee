//! Driftwarden configured to act: policy rules (mode, scope, grace, prune,
//! sync), the safety rails, and more watched namespaces, on top of a
//! [`Settings`] whose config audits everything.
//!
//! ```text
//! Settings ──yaml()──▶ base config ──▶ + watch.namespaces, policies, enforcement ──▶ Config
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use driftwarden::config::Config;
use model::Mode;
use serde_json::{Value, json};

use crate::scenario::Settings;

/// One policy rule: its scope and what Driftwarden does about drift there.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Name shown in enforcement records.
    pub name: String,
    /// Namespaces it covers; empty: all.
    pub namespaces: Vec<String>,
    /// Kinds it covers, e.g. `ConfigMap`; empty: all.
    pub kinds: Vec<String>,
    /// Labels an object must carry to be covered.
    pub labels: BTreeMap<String, String>,
    /// `audit`, `dry_run` or `enforce`.
    pub mode: Mode,
    /// Delete objects git does not declare.
    pub prune: bool,
    /// How long a drift waits for an adopting commit before it is reverted.
    pub grace: Duration,
    /// Apply new commits (Driftwarden as the GitOps agent).
    pub sync: bool,
}

impl Rule {
    /// A rule named `name` in `mode` covering everything, without grace,
    /// prune or sync.
    pub fn new(name: &str, mode: Mode) -> Rule {
        Rule {
            name: name.to_string(),
            namespaces: Vec::new(),
            kinds: Vec::new(),
            labels: BTreeMap::new(),
            mode,
            prune: false,
            grace: Duration::ZERO,
            sync: false,
        }
    }

    /// Covers only `namespace` (and the namespaces given before).
    pub fn in_namespace(mut self, namespace: &str) -> Rule {
        self.namespaces.push(namespace.to_string());
        self
    }

    /// Covers only objects of `kind` (and the kinds given before).
    pub fn of_kind(mut self, kind: &str) -> Rule {
        self.kinds.push(kind.to_string());
        self
    }

    /// Covers only objects labelled `name=value` (and the labels given before).
    pub fn labelled(mut self, name: &str, value: &str) -> Rule {
        self.labels.insert(name.to_string(), value.to_string());
        self
    }

    /// Deletes objects git does not declare.
    pub fn pruning(mut self) -> Rule {
        self.prune = true;
        self
    }

    /// Waits `grace` for an adopting commit before reverting.
    pub fn with_grace(mut self, grace: Duration) -> Rule {
        self.grace = grace;
        self
    }

    /// Applies new commits.
    pub fn syncing(mut self) -> Rule {
        self.sync = true;
        self
    }

    /// The rule as the config file writes it.
    fn to_value(&self) -> Value {
        json!({
            "name": self.name,
            "match": {
                "namespaces": self.namespaces,
                "kinds": self.kinds,
                "labels": self.labels,
            },
            "mode": self.mode.to_string(),
            "prune": self.prune,
            "grace": duration(self.grace),
            "sync": self.sync,
        })
    }
}

/// The safety rails (`enforcement:` in the config); a limit of 0 is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rails {
    /// Reverts of one object within `flap_window` that stop its reverts.
    pub flap_limit: u32,
    /// The window of `flap_limit`.
    pub flap_window: Duration,
    /// Drifts within `breaker_window` beyond which enforcement pauses.
    pub breaker_limit: u32,
    /// The window of `breaker_limit`.
    pub breaker_window: Duration,
    /// How long a tripped breaker pauses enforcement.
    pub breaker_pause: Duration,
}

impl Default for Rails {
    /// The config's defaults: 5 reverts in 5 minutes, 50 drifts in a
    /// minute, a pause of 10 minutes.
    fn default() -> Rails {
        Rails {
            flap_limit: 5,
            flap_window: Duration::from_secs(300),
            breaker_limit: 50,
            breaker_window: Duration::from_secs(60),
            breaker_pause: Duration::from_secs(600),
        }
    }
}

impl Rails {
    fn to_value(self) -> Value {
        json!({
            "flap_limit": self.flap_limit,
            "flap_window": duration(self.flap_window),
            "breaker_limit": self.breaker_limit,
            "breaker_window": duration(self.breaker_window),
            "breaker_pause": duration(self.breaker_pause),
        })
    }
}

/// The config of a Driftwarden that acts: `settings`, plus namespaces
/// watched beyond `settings.namespace`, with `rules` in place of the default
/// audit-everything rule.
#[derive(Debug, Clone)]
pub struct Enforcing {
    /// Everything but policies, rails and the extra namespaces.
    pub settings: Settings,
    /// Namespaces watched besides `settings.namespace`.
    pub also_watch: Vec<String>,
    /// The policy rules; none: nothing is governed.
    pub rules: Vec<Rule>,
    /// The safety rails.
    pub rails: Rails,
}

impl Enforcing {
    /// `settings` with no rule, default rails and no extra namespace.
    pub fn new(settings: Settings) -> Enforcing {
        Enforcing {
            settings,
            also_watch: Vec::new(),
            rules: Vec::new(),
            rails: Rails::default(),
        }
    }

    /// The config file's text.
    pub fn yaml(&self) -> Result<String> {
        let base = self.settings.yaml();
        let mut config: Value = serde_norway::from_str(&base)
            .with_context(|| format!("the base test config is not YAML:\n{base}"))?;
        let namespaces = config
            .pointer_mut("/watch/namespaces")
            .and_then(Value::as_array_mut)
            .context("the base test config names no watched namespaces")?;
        namespaces.extend(self.also_watch.iter().map(|n| Value::from(n.as_str())));
        let top = config
            .as_object_mut()
            .context("the base test config is not a mapping")?;
        top.insert(
            "policies".into(),
            self.rules.iter().map(Rule::to_value).collect(),
        );
        top.insert("enforcement".into(), self.rails.to_value());
        serde_norway::to_string(&config).context("writing the test config as YAML")
    }

    /// The parsed and validated config.
    pub fn config(&self) -> Result<Config> {
        let text = self.yaml()?;
        Config::parse(Path::new("e2e-enforce.yaml"), &text)
            .with_context(|| format!("the test config does not load:\n{text}"))
    }
}

/// A duration as the config writes it: `1500ms`.
fn duration(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::scenario::BusSettings;

    fn settings() -> Settings {
        Settings {
            kubeconfig: PathBuf::from("/tmp/admin.yaml"),
            data_dir: PathBuf::from("/tmp/data"),
            repo_url: "file:///tmp/repo".into(),
            paths: vec!["apps".into()],
            namespace: "enforce-1".into(),
            bus: BusSettings::Embedded,
            extra_kinds: vec!["v1/ConfigMap".into()],
            trusted_managers: vec!["trusted-bot".into()],
            trusted_users: Vec::new(),
            audit_webhook: None,
        }
    }

    #[test]
    fn rules_rails_and_extra_namespaces_reach_the_config() {
        let mut enforcing = Enforcing::new(settings());
        enforcing.also_watch.push("enforce-2".into());
        enforcing.rules = vec![
            Rule::new("team", Mode::Enforce)
                .in_namespace("enforce-1")
                .with_grace(Duration::from_secs(5)),
            Rule::new("strays", Mode::Enforce)
                .in_namespace("enforce-1")
                .of_kind("ConfigMap")
                .labelled("prune", "on")
                .pruning()
                .syncing(),
            Rule::new("look", Mode::DryRun),
        ];
        enforcing.rails = Rails {
            flap_limit: 3,
            breaker_limit: 10,
            breaker_pause: Duration::from_millis(1500),
            ..Rails::default()
        };
        let config = enforcing.config().expect("the config loads");

        assert_eq!(config.watch.namespaces, ["enforce-1", "enforce-2"]);
        assert_eq!(config.trust.managers[0].name, "trusted-bot");
        assert!(config.trust.accept_unverified_managers);
        let team = &config.policies[0];
        assert_eq!((team.name.as_str(), team.mode), ("team", Mode::Enforce));
        assert_eq!(team.matches.namespaces, ["enforce-1"]);
        assert_eq!(team.grace, Duration::from_secs(5));
        assert!(!team.prune && !team.sync);
        let strays = &config.policies[1];
        assert_eq!(strays.matches.kinds, ["ConfigMap"]);
        assert_eq!(
            strays.matches.labels.get("prune").map(String::as_str),
            Some("on")
        );
        assert!(strays.prune && strays.sync);
        assert_eq!(config.policies[2].mode, Mode::DryRun);
        assert!(config.policies[2].matches.namespaces.is_empty());

        let e = &config.enforcement;
        assert_eq!((e.flap_limit, e.breaker_limit), (3, 10));
        assert_eq!(e.flap_window, Duration::from_secs(300));
        assert_eq!(e.breaker_pause, Duration::from_millis(1500));
    }

    #[test]
    fn without_rules_nothing_is_governed() {
        let config = Enforcing::new(settings()).config().expect("loads");
        assert!(config.policies.is_empty());
        let labels = BTreeMap::new();
        assert_eq!(config.policy_index("enforce-1", "ConfigMap", &labels), None);
    }
}
