//! The `alerts:` section of the config: sinks, routes, severities, and how
//! delivery paces itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use model::Severity;
use serde::Deserialize;

use crate::SinkKind;

/// Alerting: where verdicts go and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// Where people read an object's history (the API's address as they
    /// reach it, e.g. `https://driftwarden.example.com`): alerts link to
    /// `<link_base>/#history=<key>`.
    #[serde(default)]
    pub link_base: Option<String>,
    /// The services alerts go to.
    pub sinks: Vec<SinkConfig>,
    /// Which alerts go to which sinks; every matching route adds its sinks.
    pub routes: Vec<Route>,
    /// Severities that replace the default table; the first match wins.
    #[serde(default)]
    pub severities: Vec<SeverityRule>,
    /// How long a sink's first alert waits for others, so a mass change
    /// becomes one digest.
    #[serde(default = "default_group_wait", deserialize_with = "model::duration")]
    pub group_wait: Duration,
    /// Alerts waiting for one sink at once that are sent as one digest.
    #[serde(default = "default_digest_min")]
    pub digest_min: usize,
    /// Backoff between delivery attempts.
    #[serde(default)]
    pub retry: Retry,
}

fn default_group_wait() -> Duration {
    Duration::from_millis(500)
}

fn default_digest_min() -> usize {
    5
}

/// Exponential backoff with jitter between attempts of one message; a
/// `Retry-After` from the service takes precedence. Attempts never stop:
/// an alert is not dropped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// The first wait.
    #[serde(default = "default_initial", deserialize_with = "model::duration")]
    pub initial: Duration,
    /// The longest wait.
    #[serde(default = "default_max", deserialize_with = "model::duration")]
    pub max: Duration,
}

fn default_initial() -> Duration {
    Duration::from_secs(1)
}

fn default_max() -> Duration {
    Duration::from_secs(300)
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            initial: default_initial(),
            max: default_max(),
        }
    }
}

/// One sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Its name, as routes and metrics name it.
    pub name: String,
    /// The service.
    #[serde(rename = "type")]
    pub kind: SinkKind,
    /// The webhook URL: a secret (it lets anyone post), so from a file or an
    /// environment variable.
    pub url: SecretRef,
    /// The HMAC-SHA256 keys of a `webhook` sink, one per line (at least 32
    /// characters each; a second line while keys rotate).
    #[serde(default)]
    pub secret: Option<SecretRef>,
}

/// A secret read from a file or an environment variable, never written in
/// the config itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSecret")]
pub enum SecretRef {
    /// A file holding it (surrounding whitespace trimmed).
    File(PathBuf),
    /// An environment variable holding it.
    Env(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSecret {
    Ref {
        #[serde(default)]
        file: Option<PathBuf>,
        #[serde(default)]
        env: Option<String>,
    },
    Inline(serde::de::IgnoredAny),
}

impl TryFrom<RawSecret> for SecretRef {
    type Error = String;

    fn try_from(raw: RawSecret) -> Result<Self, String> {
        match raw {
            RawSecret::Inline(_) => Err(
                "secrets are not written in the config: give `{file: PATH}` or `{env: VARIABLE}`"
                    .into(),
            ),
            RawSecret::Ref {
                file: Some(file),
                env: None,
            } => Ok(SecretRef::File(file)),
            RawSecret::Ref {
                file: None,
                env: Some(env),
            } => Ok(SecretRef::Env(env)),
            RawSecret::Ref { .. } => Err("give exactly one of `file` and `env`".into()),
        }
    }
}

impl SecretRef {
    /// The secret. The error names where it was looked for, never its value.
    pub fn read(&self) -> Result<String, String> {
        let value = match self {
            SecretRef::File(path) => std::fs::read_to_string(path).map_err(|err| {
                format!(
                    "cannot read {} ({err}): check the path and that Driftwarden may read it",
                    path.display()
                )
            })?,
            SecretRef::Env(name) => std::env::var(name).map_err(|_| {
                format!("environment variable {name} is not set (or not valid UTF-8)")
            })?,
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("{self} is empty"));
        }
        Ok(value.to_owned())
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::File(path) => write!(f, "file {}", path.display()),
            SecretRef::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

/// Routes alerts matching `match` to `sinks`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Which alerts; an empty match takes every alert of `low` severity or
    /// more.
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    /// Sink names.
    pub sinks: Vec<String>,
}

/// What a route takes. Every field given must match.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// The least severity (default `low`).
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// Criteria shared with severity rules.
    #[serde(flatten)]
    pub on: Criteria,
}

/// Sets the severity of what `match` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityRule {
    /// Which alerts.
    #[serde(rename = "match")]
    pub matches: Criteria,
    /// Their severity.
    pub severity: Severity,
}

/// Criteria on a verdict. Labels are the labels git declares for the object
/// (a label set by hand in the cluster is a claim and never matches);
/// actors are identities from the apiserver's audit events (a field-manager
/// name never matches).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Criteria {
    /// Verdict names (`drift` takes every `drift_*`).
    #[serde(default)]
    pub verdicts: Vec<String>,
    /// Namespaces; a trailing `*` matches a prefix.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Kinds, e.g. `Secret`.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Labels git declares, all of which must be present.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Audit identities (users, `system:serviceaccount:ns:name`); a
    /// trailing `*` matches a prefix.
    #[serde(default)]
    pub actors: Vec<String>,
}

/// Verdict names a route or severity rule may name.
pub const VERDICTS: [&str; 9] = [
    "drift",
    "drift_modified",
    "drift_rollback",
    "drift_deleted",
    "drift_out_of_band",
    "unmanaged",
    "allowed",
    "authorized",
    "in_sync",
];

/// The shortest HMAC key accepted for a webhook sink.
pub const MIN_HMAC_KEY: usize = 32;

impl Alerts {
    /// Checks names and references and reads every secret as delivery
    /// will; the error is the key path (under `alerts.`) and the message.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let mut names = BTreeSet::new();
        for (i, sink) in self.sinks.iter().enumerate() {
            let at = |field: &str| format!("alerts.sinks[{i}].{field}");
            if sink.name.is_empty() || !names.insert(sink.name.as_str()) {
                return Err((at("name"), "sink names must be non-empty and unique".into()));
            }
            let url = sink.url.read().map_err(|err| (at("url"), err))?;
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err((
                    at("url"),
                    format!("{} does not hold an http(s) URL", sink.url),
                ));
            }
            match (&sink.secret, sink.kind) {
                (Some(secret), SinkKind::Webhook) => {
                    let keys = secret.read().map_err(|err| (at("secret"), err))?;
                    let short = keys
                        .lines()
                        .map(str::trim)
                        .any(|key| !key.is_empty() && key.len() < MIN_HMAC_KEY);
                    if short {
                        return Err((
                            at("secret"),
                            format!(
                                "{secret} must hold keys of at least {MIN_HMAC_KEY} characters, \
                                 one per line (e.g. `openssl rand -hex 32`)"
                            ),
                        ));
                    }
                }
                (None, SinkKind::Webhook) => {
                    return Err((
                        at("secret"),
                        "a webhook sink signs every message: give its HMAC key as \
                         `{file: PATH}` or `{env: VARIABLE}`"
                            .into(),
                    ));
                }
                (Some(_), _) => {
                    return Err((
                        at("secret"),
                        "only `webhook` sinks are signed; remove it".into(),
                    ));
                }
                (None, _) => {}
            }
        }
        if self.routes.is_empty() {
            return Err((
                "alerts.routes".into(),
                "give at least one route (`{match: …, sinks: [NAME]}`)".into(),
            ));
        }
        for (i, route) in self.routes.iter().enumerate() {
            if route.sinks.is_empty() {
                return Err((
                    format!("alerts.routes[{i}].sinks"),
                    "name at least one sink".into(),
                ));
            }
            for (j, sink) in route.sinks.iter().enumerate() {
                if !names.contains(sink.as_str()) {
                    return Err((
                        format!("alerts.routes[{i}].sinks[{j}]"),
                        format!(
                            "no sink is named `{sink}`; known: {}",
                            names.iter().copied().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
            route
                .matches
                .on
                .validate()
                .map_err(|(field, m)| (format!("alerts.routes[{i}].match.{field}"), m))?;
        }
        for (i, rule) in self.severities.iter().enumerate() {
            rule.matches
                .validate()
                .map_err(|(field, m)| (format!("alerts.severities[{i}].match.{field}"), m))?;
        }
        if self.digest_min < 2 {
            return Err((
                "alerts.digest_min".into(),
                "must be 2 or more: a digest gathers several alerts".into(),
            ));
        }
        if self.group_wait > Duration::from_secs(60) {
            return Err((
                "alerts.group_wait".into(),
                "at most 1m: on-call must hear of a drift within seconds".into(),
            ));
        }
        if self.retry.initial.is_zero() || self.retry.initial > self.retry.max {
            return Err((
                "alerts.retry".into(),
                "`initial` must be above zero and at most `max`".into(),
            ));
        }
        if let Some(base) = &self.link_base
            && !(base.starts_with("https://") || base.starts_with("http://"))
        {
            return Err((
                "alerts.link_base".into(),
                format!("`{base}` is not an http(s) URL"),
            ));
        }
        Ok(())
    }
}

impl Criteria {
    fn validate(&self) -> Result<(), (String, String)> {
        for (i, verdict) in self.verdicts.iter().enumerate() {
            if !VERDICTS.contains(&verdict.as_str()) {
                return Err((
                    format!("verdicts[{i}]"),
                    format!(
                        "`{verdict}` is not a verdict; use one of {}",
                        VERDICTS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Alerts, String> {
        serde_json::from_str(json).map_err(|err| err.to_string())
    }

    fn url_file(dir: &std::path::Path, text: &str) -> String {
        let path = dir.join(format!("{}.secret", text.len()));
        std::fs::write(&path, text).expect("writes");
        path.display().to_string()
    }

    #[test]
    fn a_secret_written_in_the_config_is_refused() {
        let err = parse(r#"{"sinks": [{"name": "a", "type": "slack", "url": "https://hooks.slack.com/x"}], "routes": []}"#)
            .expect_err("inline URL");
        assert!(err.contains("not written in the config"), "{err}");
        let err = parse(r#"{"sinks": [{"name": "a", "type": "slack", "url": {"file": "a", "env": "B"}}], "routes": []}"#)
            .expect_err("both");
        assert!(err.contains("exactly one"), "{err}");
    }

    #[test]
    fn validation_names_the_key_and_the_fix() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = url_file(dir.path(), "https://hooks.example/abc");
        let short = url_file(dir.path(), "too-short");
        let check = |json: String| {
            parse(&json)
                .expect("parses")
                .validate()
                .expect_err("invalid")
        };
        let (at, message) = check(format!(
            r#"{{"sinks": [{{"name": "h", "type": "webhook", "url": {{"file": "{url}"}}}}], "routes": [{{"sinks": ["h"]}}]}}"#
        ));
        assert_eq!(at, "alerts.sinks[0].secret");
        assert!(message.contains("HMAC key"), "{message}");
        let (at, _) = check(format!(
            r#"{{"sinks": [{{"name": "h", "type": "webhook", "url": {{"file": "{url}"}}, "secret": {{"file": "{short}"}}}}], "routes": [{{"sinks": ["h"]}}]}}"#
        ));
        assert_eq!(at, "alerts.sinks[0].secret");
        let (at, message) = check(format!(
            r#"{{"sinks": [{{"name": "s", "type": "slack", "url": {{"file": "{url}"}}}}], "routes": [{{"sinks": ["pager"]}}]}}"#
        ));
        assert_eq!(at, "alerts.routes[0].sinks[0]");
        assert!(message.contains("known: s"), "{message}");
        let (at, message) = check(
            r#"{"sinks": [{"name": "s", "type": "slack", "url": {"env": "DRIFTWARDEN_TEST_UNSET_URL"}}], "routes": [{"sinks": ["s"]}]}"#
                .to_owned(),
        );
        assert_eq!(at, "alerts.sinks[0].url");
        assert!(message.contains("DRIFTWARDEN_TEST_UNSET_URL"), "{message}");
        let (at, _) = check(format!(
            r#"{{"sinks": [{{"name": "s", "type": "slack", "url": {{"file": "{url}"}}}}], "routes": [{{"match": {{"verdicts": ["dirft"]}}, "sinks": ["s"]}}]}}"#
        ));
        assert_eq!(at, "alerts.routes[0].match.verdicts[0]");
    }
}
