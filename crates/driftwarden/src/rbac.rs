//! The least RBAC a config needs, as Kubernetes manifests.
//!
//! ```text
//! policies + watch.namespaces + watched kinds (resource, scope) ──▶ reads, writes
//!   reads:  ClusterRole/ClusterRoleBinding `<sa>-read` (CRDs, cluster-scoped kinds,
//!           namespaced kinds when every namespace is watched)
//!           Role/RoleBinding `<sa>-read` per watched namespace otherwise
//!   writes: Role/RoleBinding `<sa>-write` per namespace an enforce or sync rule covers
//!           (ClusterRole/ClusterRoleBinding `<sa>-write` for cluster-wide rules)
//! ```
//!
//! Reads are `get`, `list` and `watch` on exactly the kinds Driftwarden
//! watches; writes are `create` and `patch` (`delete` with `prune`) on the
//! watched kinds an `enforce` or `sync: true` rule covers. Rules matching by
//! labels get their kinds' write rights in their namespaces: RBAC cannot
//! select by label. Pure: the caller resolves kinds and checks discovery.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use enforce::Policy;
use model::Mode;
use serde_json::{Value, json};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `--service-account` that is not `NAMESPACE:NAME`.
    #[error("`{0}` is not a service account: write NAMESPACE:NAME, e.g. `driftwarden:driftwarden`")]
    Subject(String),
    /// A manifest that cannot be written as YAML.
    #[error("cannot write the manifests as YAML")]
    Yaml(#[source] serde_norway::Error),
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The ServiceAccount the manifests bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// Its namespace.
    pub namespace: String,
    /// Its name; also the prefix of the roles' names.
    pub name: String,
}

impl Default for ServiceAccount {
    fn default() -> Self {
        Self {
            namespace: "driftwarden".to_owned(),
            name: "driftwarden".to_owned(),
        }
    }
}

impl FromStr for ServiceAccount {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text.split_once(':') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains(':') =>
            {
                Ok(Self {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(Error::Subject(text.to_owned())),
        }
    }
}

impl fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.namespace, self.name)
    }
}

/// A kind Driftwarden watches, with its resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedKind {
    /// `v1`, `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// The resource, e.g. `deployments`.
    pub resource: String,
    /// Whether its objects live in namespaces.
    pub namespaced: bool,
    /// True when `resource` and the scope are guesses (no discovery).
    pub guessed: bool,
    /// Why it is watched, e.g. `declared in git`, `watch.extra_kinds`.
    pub why: String,
}

impl WatchedKind {
    /// A kind whose resource and scope are guessed without a cluster: the
    /// lower-case plural of the kind, cluster-scoped only for the built-in
    /// cluster-scoped kinds.
    pub fn guess(api_version: &str, kind: &str, why: &str) -> Self {
        let group = group_of(api_version);
        let namespaced = !gitstate::KeyRules::new("", "").is_cluster_scoped(group, kind);
        Self {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            resource: plural(kind),
            namespaced,
            guessed: true,
            why: why.to_owned(),
        }
    }

    /// The API group: empty for the core group.
    pub fn group(&self) -> &str {
        group_of(&self.api_version)
    }
}

/// Whether the cluster lets every authenticated user read discovery
/// (`/api`, `/apis`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// Checked: open (the built-in `system:discovery` binding).
    Open,
    /// Checked: closed, so the ClusterRole grants it.
    Closed,
    /// Not checked (no cluster).
    Unchecked,
}

/// What the manifests are computed from.
#[derive(Debug, Clone)]
pub struct Needs<'a> {
    /// The config's policy rules.
    pub policies: &'a [Policy],
    /// `watch.namespaces`; empty: every namespace.
    pub namespaces: &'a [String],
    /// Every watched kind.
    pub kinds: Vec<WatchedKind>,
    /// Whether discovery is open.
    pub discovery: Discovery,
    /// Who the manifests bind.
    pub subject: ServiceAccount,
}

/// One manifest and the comments printed above it.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Lines of explanation, without `#`.
    pub comments: Vec<String>,
    /// The object.
    pub object: Value,
}

const READ: &[&str] = &["get", "list", "watch"];
const RBAC: &str = "rbac.authorization.k8s.io/v1";

/// `(API group, resource)` ─▶ verbs, for one scope.
type Grants = BTreeMap<(String, String), BTreeSet<&'static str>>;

/// Where a grant applies: `None` is cluster-wide.
type Scoped = BTreeMap<Option<String>, Grants>;

/// The manifests binding `needs.subject` to exactly what `needs` requires:
/// read roles first (cluster, then each namespace), then write roles.
pub fn manifests(needs: &Needs<'_>) -> Vec<Manifest> {
    let mut reads = Scoped::new();
    grant(
        &mut reads,
        None,
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        READ,
    );
    for kind in &needs.kinds {
        if kind.namespaced && !needs.namespaces.is_empty() {
            for namespace in needs.namespaces {
                grant(
                    &mut reads,
                    Some(namespace),
                    kind.group(),
                    &kind.resource,
                    READ,
                );
            }
        } else {
            grant(&mut reads, None, kind.group(), &kind.resource, READ);
        }
    }
    let mut writes = Scoped::new();
    for policy in needs.policies {
        if policy.mode != Mode::Enforce && !policy.sync {
            continue;
        }
        let verbs: &[&str] = if policy.prune {
            &["create", "patch", "delete"]
        } else {
            &["create", "patch"]
        };
        let covered = needs
            .kinds
            .iter()
            .filter(|k| policy.matches.kinds.is_empty() || policy.matches.kinds.contains(&k.kind));
        for kind in covered {
            for scope in write_scopes(policy, needs.namespaces, kind.namespaced) {
                grant(
                    &mut writes,
                    scope.as_deref(),
                    kind.group(),
                    &kind.resource,
                    verbs,
                );
            }
        }
    }
    let mut out = Vec::new();
    let read_name = format!("{}-read", needs.subject.name);
    let write_name = format!("{}-write", needs.subject.name);
    for (scope, grants) in &reads {
        let mut comments = vec![match scope {
            None => "Reads: the CRD watch, cluster-scoped kinds and (when every namespace is watched) the namespaced kinds Driftwarden watches.".to_owned(),
            Some(namespace) => format!("Reads of the namespaced kinds watched in `{namespace}`."),
        }];
        let mut extra = Vec::new();
        if scope.is_none() {
            comments.push(discovery_comment(needs.discovery));
            if needs.discovery == Discovery::Closed {
                extra.push(json!({
                    "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*"],
                    "verbs": ["get"],
                }));
            }
        }
        comments.extend(kind_comments(needs, grants));
        out.extend(role_and_binding(
            &read_name,
            scope.as_deref(),
            grants,
            extra,
            comments,
            &needs.subject,
        ));
    }
    for (scope, grants) in &writes {
        let mut comments = vec![match scope {
            None => "Writes of cluster-wide enforce or sync rules.".to_owned(),
            Some(namespace) => {
                format!("Writes in `{namespace}`, where an enforce or sync rule acts.")
            }
        }];
        comments.extend(kind_comments(needs, grants));
        out.extend(role_and_binding(
            &write_name,
            scope.as_deref(),
            grants,
            Vec::new(),
            comments,
            &needs.subject,
        ));
    }
    out
}

/// The manifests as one YAML stream, comments above each document.
pub fn yaml(manifests: &[Manifest]) -> Result<String> {
    let mut out = String::new();
    for (i, manifest) in manifests.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        for comment in &manifest.comments {
            out.push_str("# ");
            out.push_str(comment);
            out.push('\n');
        }
        out.push_str(&serde_norway::to_string(&manifest.object).map_err(Error::Yaml)?);
    }
    Ok(out)
}

/// The manifests as a `v1/List`, which `kubectl apply -f` takes.
pub fn list(manifests: &[Manifest]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": manifests.iter().map(|m| m.object.clone()).collect::<Vec<_>>(),
    })
}

/// The lower-case plural of a kind, as most APIs name their resource.
pub fn plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    if let Some(stem) = lower.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'o', 'u'])
    {
        return format!("{stem}ies");
    }
    if lower.ends_with(['s', 'x', 'z']) || lower.ends_with("ch") || lower.ends_with("sh") {
        return format!("{lower}es");
    }
    format!("{lower}s")
}

/// The API group of an `apiVersion`: empty for `v1`.
fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

fn grant(scoped: &mut Scoped, scope: Option<&str>, group: &str, resource: &str, verbs: &[&str]) {
    let verbs = verbs
        .iter()
        .filter_map(|v| VERBS.iter().find(|known| *known == v));
    scoped
        .entry(scope.map(str::to_owned))
        .or_default()
        .entry((group.to_owned(), resource.to_owned()))
        .or_default()
        .extend(verbs.copied());
}

/// Every verb this module grants, in the order rules list them.
const VERBS: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

/// Where `policy` writes objects of a kind: each namespace it covers (of
/// those watched), or cluster-wide (`None`).
fn write_scopes(policy: &Policy, watched: &[String], namespaced: bool) -> Vec<Option<String>> {
    let covers = &policy.matches.namespaces;
    if !namespaced {
        // A namespace-limited rule never covers a cluster-scoped object.
        return if covers.is_empty() {
            vec![None]
        } else {
            Vec::new()
        };
    }
    match (covers.is_empty(), watched.is_empty()) {
        (true, true) => vec![None],
        (true, false) => watched.iter().cloned().map(Some).collect(),
        (false, true) => covers.iter().cloned().map(Some).collect(),
        (false, false) => covers
            .iter()
            .filter(|n| watched.contains(n))
            .cloned()
            .map(Some)
            .collect(),
    }
}

fn discovery_comment(discovery: Discovery) -> String {
    match discovery {
        Discovery::Open => "Discovery (/api, /apis) needs no rule: the cluster opens it to every authenticated user (built-in ClusterRoleBinding system:discovery; checked).".to_owned(),
        Discovery::Closed => "Discovery (/api, /apis) is not open to every authenticated user on this cluster: granted below.".to_owned(),
        Discovery::Unchecked => "Discovery (/api, /apis) needs no rule where the built-in ClusterRoleBinding system:discovery opens it to every authenticated user, as by default (not checked: no cluster).".to_owned(),
    }
}

/// Comments on what `grants` hold: guessed resources, Secrets.
fn kind_comments(needs: &Needs<'_>, grants: &Grants) -> Vec<String> {
    let mut comments = Vec::new();
    let mut seen = BTreeSet::new();
    for kind in &needs.kinds {
        let granted = grants.contains_key(&(kind.group().to_owned(), kind.resource.clone()));
        if !granted || !seen.insert((kind.group().to_owned(), kind.resource.clone())) {
            continue;
        }
        if kind.guessed {
            comments.push(format!(
                "`{}` ({}/{}) is a guess, not from the cluster's discovery: check it.",
                kind.resource, kind.api_version, kind.kind
            ));
        }
        if kind.group().is_empty() && kind.kind == "Secret" {
            let rules: Vec<&str> = needs
                .policies
                .iter()
                .filter(|p| {
                    p.matches.kinds.is_empty() || p.matches.kinds.iter().any(|k| k == "Secret")
                })
                .map(|p| p.name.as_str())
                .collect();
            comments.push(format!(
                "Secrets are watched ({}): watching them gives read access to their values. Driftwarden keeps only keyed digests, but this ServiceAccount can read every Secret here. Policy rules governing Secrets: [{}].",
                kind.why,
                rules.join(", ")
            ));
        }
    }
    comments
}

/// A Role (or ClusterRole) named `name` with `grants`, and its binding.
fn role_and_binding(
    name: &str,
    scope: Option<&str>,
    grants: &Grants,
    extra: Vec<Value>,
    comments: Vec<String>,
    subject: &ServiceAccount,
) -> [Manifest; 2] {
    // One rule per (group, verbs), listing its resources.
    let mut rules: BTreeMap<(String, Vec<&str>), Vec<&str>> = BTreeMap::new();
    for ((group, resource), verbs) in grants {
        let mut verbs: Vec<&str> = verbs.iter().copied().collect();
        verbs.sort_by_key(|v| VERBS.iter().position(|known| known == v));
        rules
            .entry((group.clone(), verbs))
            .or_default()
            .push(resource);
    }
    let mut rules: Vec<Value> = rules
        .into_iter()
        .map(|((group, verbs), resources)| {
            json!({"apiGroups": [group], "resources": resources, "verbs": verbs})
        })
        .collect();
    rules.extend(extra);
    let (role_kind, binding_kind) = match scope {
        None => ("ClusterRole", "ClusterRoleBinding"),
        Some(_) => ("Role", "RoleBinding"),
    };
    let metadata = match scope {
        None => json!({"name": name}),
        Some(namespace) => json!({"name": name, "namespace": namespace}),
    };
    let role = json!({
        "apiVersion": RBAC,
        "kind": role_kind,
        "metadata": metadata,
        "rules": rules,
    });
    let binding = json!({
        "apiVersion": RBAC,
        "kind": binding_kind,
        "metadata": metadata,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": subject.name, "namespace": subject.namespace}],
    });
    [
        Manifest {
            comments,
            object: role,
        },
        Manifest {
            comments: Vec::new(),
            object: binding,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Policy {
        serde_norway::from_str(yaml).expect("test policy parses")
    }

    fn kind(api_version: &str, kind: &str, resource: &str, namespaced: bool) -> WatchedKind {
        WatchedKind {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            resource: resource.to_owned(),
            namespaced,
            guessed: false,
            why: "declared in git".to_owned(),
        }
    }

    fn needs<'a>(policies: &'a [Policy], namespaces: &'a [String]) -> Needs<'a> {
        Needs {
            policies,
            namespaces,
            kinds: vec![
                kind("v1", "ConfigMap", "configmaps", true),
                kind("apps/v1", "Deployment", "deployments", true),
                kind(
                    "rbac.authorization.k8s.io/v1",
                    "ClusterRole",
                    "clusterroles",
                    false,
                ),
            ],
            discovery: Discovery::Open,
            subject: ServiceAccount::default(),
        }
    }

    /// `(kind, namespace, name)` of every manifest.
    fn shape(manifests: &[Manifest]) -> Vec<(String, String, String)> {
        manifests
            .iter()
            .map(|m| {
                let field = |p: &str| {
                    m.object
                        .pointer(p)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                };
                (
                    field("/kind"),
                    field("/metadata/namespace"),
                    field("/metadata/name"),
                )
            })
            .collect()
    }

    /// Every `(group, resource, verbs)` a role of `kind` in `namespace` grants.
    fn granted(
        manifests: &[Manifest],
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for m in manifests {
            let o = &m.object;
            if o["kind"] != kind
                || o["metadata"]["name"] != name
                || o["metadata"]["namespace"].as_str().unwrap_or("") != namespace
            {
                continue;
            }
            for rule in o["rules"].as_array().into_iter().flatten() {
                let verbs: Vec<&str> = rule["verbs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                for group in rule["apiGroups"].as_array().into_iter().flatten() {
                    for resource in rule["resources"].as_array().into_iter().flatten() {
                        out.push((
                            group.as_str().unwrap_or("").to_owned(),
                            resource.as_str().unwrap_or("").to_owned(),
                            verbs.join(","),
                        ));
                    }
                }
            }
        }
        out.sort();
        out
    }

    fn triple(group: &str, resource: &str, verbs: &str) -> (String, String, String) {
        (group.to_owned(), resource.to_owned(), verbs.to_owned())
    }

    #[test]
    fn audit_everywhere_reads_cluster_wide_and_writes_nothing() {
        let policies = [policy("{name: default, mode: audit}")];
        let out = manifests(&needs(&policies, &[]));
        assert_eq!(
            shape(&out),
            [
                (
                    "ClusterRole".into(),
                    String::new(),
                    "driftwarden-read".into()
                ),
                (
                    "ClusterRoleBinding".into(),
                    String::new(),
                    "driftwarden-read".into()
                ),
            ]
        );
        assert_eq!(
            granted(&out, "ClusterRole", "", "driftwarden-read"),
            [
                triple("", "configmaps", "get,list,watch"),
                triple(
                    "apiextensions.k8s.io",
                    "customresourcedefinitions",
                    "get,list,watch"
                ),
                triple("apps", "deployments", "get,list,watch"),
                triple(
                    "rbac.authorization.k8s.io",
                    "clusterroles",
                    "get,list,watch"
                ),
            ]
        );
        let binding = &out[1].object;
        assert_eq!(binding["subjects"][0]["namespace"], "driftwarden");
        assert_eq!(binding["roleRef"]["name"], "driftwarden-read");
    }

    #[test]
    fn watched_namespaces_get_roles_and_cluster_scoped_kinds_stay_cluster_wide() {
        let policies = [policy("{name: default, mode: audit}")];
        let namespaces = ["team-a".to_owned(), "team-b".to_owned()];
        let out = manifests(&needs(&policies, &namespaces));
        assert_eq!(
            granted(&out, "ClusterRole", "", "driftwarden-read"),
            [
                triple(
                    "apiextensions.k8s.io",
                    "customresourcedefinitions",
                    "get,list,watch"
                ),
                triple(
                    "rbac.authorization.k8s.io",
                    "clusterroles",
                    "get,list,watch"
                ),
            ]
        );
        for namespace in ["team-a", "team-b"] {
            assert_eq!(
                granted(&out, "Role", namespace, "driftwarden-read"),
                [
                    triple("", "configmaps", "get,list,watch"),
                    triple("apps", "deployments", "get,list,watch"),
                ]
            );
        }
        assert!(
            shape(&out)
                .iter()
                .all(|(_, _, name)| name == "driftwarden-read")
        );
    }

    #[test]
    fn writes_only_where_a_rule_enforces_or_syncs_and_delete_only_with_prune() {
        let policies = [
            policy("{name: default, mode: audit}"),
            policy("{name: a, mode: enforce, match: {namespaces: [team-a], kinds: [ConfigMap]}}"),
            policy(
                "{name: b, mode: audit, sync: true, prune: true, match: {namespaces: [team-b, elsewhere]}}",
            ),
            policy("{name: c, mode: dry_run, match: {namespaces: [team-c]}}"),
        ];
        let namespaces = [
            "team-a".to_owned(),
            "team-b".to_owned(),
            "team-c".to_owned(),
        ];
        let out = manifests(&needs(&policies, &namespaces));
        assert_eq!(
            granted(&out, "Role", "team-a", "driftwarden-write"),
            [triple("", "configmaps", "create,patch")]
        );
        assert_eq!(
            granted(&out, "Role", "team-b", "driftwarden-write"),
            [
                triple("", "configmaps", "create,patch,delete"),
                triple("apps", "deployments", "create,patch,delete"),
            ]
        );
        let names = shape(&out);
        assert!(
            !names.iter().any(|(_, ns, name)| name.ends_with("write")
                && (ns == "team-c" || ns == "elsewhere" || ns.is_empty())),
            "{names:?}"
        );
    }

    #[test]
    fn a_cluster_wide_enforce_rule_writes_cluster_scoped_kinds_with_a_cluster_role() {
        let policies = [policy("{name: all, mode: enforce}")];
        let out = manifests(&needs(&policies, &[]));
        assert_eq!(
            granted(&out, "ClusterRole", "", "driftwarden-write"),
            [
                triple("", "configmaps", "create,patch"),
                triple("apps", "deployments", "create,patch"),
                triple("rbac.authorization.k8s.io", "clusterroles", "create,patch"),
            ]
        );
        assert!(shape(&out).contains(&(
            "ClusterRoleBinding".into(),
            String::new(),
            "driftwarden-write".into()
        )));
    }

    #[test]
    fn secrets_are_read_only_when_watched_and_the_comment_says_so() {
        let policies = [policy("{name: default, mode: audit}")];
        let namespaces = ["team-a".to_owned()];
        let out = manifests(&needs(&policies, &namespaces));
        assert!(!yaml(&out).expect("yaml").contains("secrets"));

        let mut with_secrets = needs(&policies, &namespaces);
        with_secrets.kinds.push(WatchedKind {
            why: "watch.extra_kinds".into(),
            ..kind("v1", "Secret", "secrets", true)
        });
        let out = manifests(&with_secrets);
        assert!(
            granted(&out, "Role", "team-a", "driftwarden-read").contains(&triple(
                "",
                "secrets",
                "get,list,watch"
            ))
        );
        let role = out
            .iter()
            .find(|m| m.object["kind"] == "Role")
            .expect("a role");
        let comments = role.comments.join("\n");
        assert!(
            comments.contains("read access to their values"),
            "{comments}"
        );
        assert!(
            comments.contains("watch.extra_kinds") && comments.contains("[default]"),
            "{comments}"
        );
    }

    #[test]
    fn guessed_resources_are_marked_and_closed_discovery_is_granted() {
        let policies = [];
        let mut needs = needs(&policies, &[]);
        needs.kinds = vec![WatchedKind::guess(
            "example.com/v1",
            "Policy",
            "declared in git",
        )];
        needs.discovery = Discovery::Closed;
        let out = manifests(&needs);
        let text = yaml(&out).expect("yaml");
        assert!(
            text.contains("# `policies` (example.com/v1/Policy) is a guess"),
            "{text}"
        );
        assert!(text.contains("nonResourceURLs"), "{text}");
        let parsed: Vec<Value> = text
            .split("\n---\n")
            .map(|doc| serde_norway::from_str(doc).expect("each document parses"))
            .collect();
        assert_eq!(
            parsed,
            out.iter().map(|m| m.object.clone()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn guesses_follow_english_plurals_and_built_in_scopes() {
        for (kind, resource) in [
            ("ConfigMap", "configmaps"),
            ("Ingress", "ingresses"),
            ("NetworkPolicy", "networkpolicies"),
            ("Gateway", "gateways"),
            ("Mesh", "meshes"),
        ] {
            assert_eq!(plural(kind), resource);
        }
        assert!(!WatchedKind::guess("v1", "Namespace", "").namespaced);
        assert!(WatchedKind::guess("v1", "Secret", "").namespaced);
    }

    #[test]
    fn service_accounts_are_namespace_colon_name() {
        let sa: ServiceAccount = "ops:watcher".parse().expect("parses");
        assert_eq!(
            (sa.namespace.as_str(), sa.name.as_str()),
            ("ops", "watcher")
        );
        for bad in ["watcher", ":watcher", "ops:", "a:b:c"] {
            assert!(bad.parse::<ServiceAccount>().is_err(), "{bad}");
        }
    }
}
