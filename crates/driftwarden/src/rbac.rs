//! The least RBAC a config needs, as Kubernetes manifests.
//!
//! ```text
//! policies + watch.namespaces + watched kinds (resource, scope) ──▶ reads, writes
//!   reads:  ClusterRole/ClusterRoleBinding `<ns>:<sa>-read` (CRDs, cluster-scoped kinds,
//!           namespaced kinds when every namespace is watched)
//!           Role/RoleBinding `<ns>:<sa>-read` per watched namespace otherwise
//!   writes: Role/RoleBinding `<ns>:<sa>-write` per namespace an enforce or sync rule covers
//!           (ClusterRole/ClusterRoleBinding `<ns>:<sa>-write` for cluster-wide rules)
//! config ──for_config (git, discovery)──▶ Needs ──manifests──▶ what `check --rbac` prints
//! ```
//!
//! Reads are `get`, `list` and `watch` on exactly the kinds Driftwarden
//! watches; writes are `create` and `patch` (`delete` with `prune`) on the
//! watched kinds an `enforce` or `sync: true` rule covers. Rules matching by
//! labels get their kinds' write rights in their namespaces: RBAC cannot
//! select by label. Writing roles needs `escalate` on them and writing
//! bindings `bind` on roles (the apiserver's escalation check), so those
//! come with the RBAC kinds an enforce or sync rule covers, and a comment
//! says what they allow. Every name carries the ServiceAccount's namespace and
//! name (`<ns>:<sa>`), so two installations never share a ClusterRole.
//!
//! [`manifests`] is pure: [`for_config`] resolves a config's kinds (git,
//! the cluster's discovery) and checks discovery for it.

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
    /// Its name.
    pub name: String,
}

impl ServiceAccount {
    /// The name of its roles and bindings for `what` (`read`, `write`):
    /// `<namespace>:<name>-<what>`, unique to this ServiceAccount in the
    /// cluster (ClusterRoles are cluster-wide).
    pub fn role_name(&self, what: &str) -> String {
        format!("{}:{}-{what}", self.namespace, self.name)
    }
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
    let read_name = needs.subject.role_name("read");
    let write_name = needs.subject.role_name("write");
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
    for grants in writes.values_mut() {
        grant_rbac_writes(grants);
    }
    for (scope, grants) in &writes {
        let mut comments = vec![match scope {
            None => "Writes of cluster-wide enforce or sync rules.".to_owned(),
            Some(namespace) => {
                format!("Writes in `{namespace}`, where an enforce or sync rule acts.")
            }
        }];
        comments.extend(kind_comments(needs, grants));
        if grants
            .values()
            .any(|verbs| verbs.contains("escalate") || verbs.contains("bind"))
        {
            comments.push("Roles and bindings are enforced: the apiserver refuses to write one granting rights this ServiceAccount does not hold itself, unless it may `escalate` (roles) and `bind` (bindings). With those it can grant any right in this scope, itself included: enforce RBAC kinds only where you accept that.".to_owned());
        }
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

/// What `check --rbac` prints for a config: warnings, then the manifests.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Lines to print above the manifests, e.g. a git source that could
    /// not be fetched (the kinds it declares may be missing).
    pub warnings: Vec<String>,
    /// The manifests.
    pub manifests: Vec<Manifest>,
}

/// The least RBAC `config` needs, bound to `subject`: reads the sources
/// (cloning them into `config.data_dir`) for the kinds git declares,
/// resolves them and `watch.extra_kinds` with the cluster's discovery when
/// `cluster.kubeconfig` answers (guessing otherwise), and asks the cluster
/// whether discovery is open to `subject`.
pub async fn for_config(
    config: &crate::config::Config,
    subject: ServiceAccount,
) -> anyhow::Result<Resolved> {
    let client = match crate::run::kube_client(config).await {
        Ok(client) => Some(client),
        Err(err) => {
            tracing::warn!(error = %format!("{err:#}"), "no cluster: resources are guessed");
            None
        }
    };
    let cluster_scoped = crate::run::cluster_scoped_kinds(client.as_ref()).await;
    let (desired, _, sources) = crate::desired::open_sources(config, None, &cluster_scoped).await?;
    let mut warnings = Vec::new();
    for (opened, source) in sources.iter().zip(&config.sources) {
        if opened.failing.is_some() {
            warnings.push(format!(
                "WARNING: git source `{}` could not be fetched: the kinds it declares may be missing.",
                source.name
            ));
            tracing::warn!(source = %source.name, "git source not fetched: the RBAC may miss kinds it declares");
        }
    }
    let mut wanted: BTreeMap<(String, String), &str> = desired
        .kinds()
        .into_iter()
        .map(|kind| (kind, "declared in git"))
        .collect();
    for kind in &config.watch.extra_kinds {
        wanted
            .entry((kind.api_version.clone(), kind.kind.clone()))
            .or_insert("watch.extra_kinds");
    }
    let mut kinds = Vec::new();
    for ((api_version, kind), why) in wanted {
        let resolved = match &client {
            Some(client) => watch::discovery::resolve(client, &api_version, &kind)
                .await
                .map_err(|err| tracing::warn!(%api_version, %kind, error = %err, "kind not served: resource guessed"))
                .ok(),
            None => None,
        };
        kinds.push(match resolved {
            Some((resource, scope)) => WatchedKind {
                api_version,
                kind,
                resource: resource.plural,
                namespaced: scope == kube::discovery::Scope::Namespaced,
                guessed: false,
                why: why.to_owned(),
            },
            None => WatchedKind::guess(&api_version, &kind, why),
        });
    }
    let discovery = match &client {
        Some(client) => discovery_open(client, &subject).await,
        None => Discovery::Unchecked,
    };
    let manifests = manifests(&Needs {
        policies: &config.policies,
        namespaces: &config.watch.namespaces,
        kinds,
        discovery,
        subject,
    });
    Ok(Resolved {
        warnings,
        manifests,
    })
}

/// Whether `subject` may read `/apis` without a rule of its own: a
/// SubjectAccessReview for it with no grants but the built-in ones.
async fn discovery_open(client: &kube::Client, subject: &ServiceAccount) -> Discovery {
    let gvk = kube::api::GroupVersionKind::gvk("authorization.k8s.io", "v1", "SubjectAccessReview");
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, "subjectaccessreviews");
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(client.clone(), &resource);
    let review = kube::api::DynamicObject::new("", &resource).data(json!({
        "spec": {
            "user": format!("system:serviceaccount:{}:{}", subject.namespace, subject.name),
            "groups": [
                "system:serviceaccounts",
                format!("system:serviceaccounts:{}", subject.namespace),
                "system:authenticated",
            ],
            "nonResourceAttributes": {"path": "/apis", "verb": "get"},
        }
    }));
    match api.create(&Default::default(), &review).await {
        Ok(answer) if answer.data.pointer("/status/allowed") == Some(&Value::Bool(true)) => {
            Discovery::Open
        }
        Ok(_) => Discovery::Closed,
        Err(err) => {
            tracing::warn!(error = %err, "cannot ask whether discovery is open");
            Discovery::Unchecked
        }
    }
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
const VERBS: &[&str] = &[
    "get", "list", "watch", "create", "patch", "delete", "escalate", "bind",
];

/// The API group of RBAC's own kinds.
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Writing RBAC's own kinds: a role that grants more than the writer holds
/// needs `escalate` on its kind, a binding needs `bind` on the roles it
/// may reference; without them the apiserver refuses the write.
fn grant_rbac_writes(grants: &mut Grants) {
    let mut binds = false;
    for ((group, resource), verbs) in grants.iter_mut() {
        if group != RBAC_GROUP {
            continue;
        }
        match resource.as_str() {
            "roles" | "clusterroles" => {
                verbs.insert("escalate");
            }
            "rolebindings" | "clusterrolebindings" => binds = true,
            _ => {}
        }
    }
    if binds {
        for resource in ["roles", "clusterroles"] {
            grants
                .entry((RBAC_GROUP.to_owned(), resource.to_owned()))
                .or_default()
                .insert("bind");
        }
    }
}

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
                    "driftwarden:driftwarden-read".into()
                ),
                (
                    "ClusterRoleBinding".into(),
                    String::new(),
                    "driftwarden:driftwarden-read".into()
                ),
            ]
        );
        assert_eq!(
            granted(&out, "ClusterRole", "", "driftwarden:driftwarden-read"),
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
        assert_eq!(binding["roleRef"]["name"], "driftwarden:driftwarden-read");
    }

    #[test]
    fn watched_namespaces_get_roles_and_cluster_scoped_kinds_stay_cluster_wide() {
        let policies = [policy("{name: default, mode: audit}")];
        let namespaces = ["team-a".to_owned(), "team-b".to_owned()];
        let out = manifests(&needs(&policies, &namespaces));
        assert_eq!(
            granted(&out, "ClusterRole", "", "driftwarden:driftwarden-read"),
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
                granted(&out, "Role", namespace, "driftwarden:driftwarden-read"),
                [
                    triple("", "configmaps", "get,list,watch"),
                    triple("apps", "deployments", "get,list,watch"),
                ]
            );
        }
        assert!(
            shape(&out)
                .iter()
                .all(|(_, _, name)| name == "driftwarden:driftwarden-read")
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
            granted(&out, "Role", "team-a", "driftwarden:driftwarden-write"),
            [triple("", "configmaps", "create,patch")]
        );
        assert_eq!(
            granted(&out, "Role", "team-b", "driftwarden:driftwarden-write"),
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
            granted(&out, "ClusterRole", "", "driftwarden:driftwarden-write"),
            [
                triple("", "configmaps", "create,patch"),
                triple("apps", "deployments", "create,patch"),
                triple(
                    "rbac.authorization.k8s.io",
                    "clusterroles",
                    "create,patch,escalate"
                ),
            ]
        );
        assert!(shape(&out).contains(&(
            "ClusterRoleBinding".into(),
            String::new(),
            "driftwarden:driftwarden-write".into()
        )));
    }

    #[test]
    fn enforced_roles_may_escalate_and_enforced_bindings_may_bind_and_the_comment_says_so() {
        let policies = [
            policy("{name: default, mode: audit}"),
            policy("{name: a, mode: enforce, match: {namespaces: [team-a]}}"),
        ];
        let namespaces = ["team-a".to_owned(), "team-b".to_owned()];
        let mut needs = needs(&policies, &namespaces);
        needs.kinds = vec![
            kind("rbac.authorization.k8s.io/v1", "Role", "roles", true),
            kind(
                "rbac.authorization.k8s.io/v1",
                "RoleBinding",
                "rolebindings",
                true,
            ),
            kind("v1", "ConfigMap", "configmaps", true),
        ];
        let out = manifests(&needs);
        assert_eq!(
            granted(&out, "Role", "team-a", "driftwarden:driftwarden-write"),
            [
                triple("", "configmaps", "create,patch"),
                triple("rbac.authorization.k8s.io", "clusterroles", "bind"),
                triple("rbac.authorization.k8s.io", "rolebindings", "create,patch"),
                triple(
                    "rbac.authorization.k8s.io",
                    "roles",
                    "create,patch,escalate,bind"
                ),
            ]
        );
        let comments = out
            .iter()
            .find(|m| {
                m.object["kind"] == "Role"
                    && m.object["metadata"]["namespace"] == "team-a"
                    && m.object["metadata"]["name"] == "driftwarden:driftwarden-write"
            })
            .map(|m| m.comments.join("\n"))
            .unwrap_or_default();
        assert!(comments.contains("`escalate`"), "{comments}");
        // Reads never escalate, and nothing is written where nothing enforces.
        assert!(
            granted(&out, "Role", "team-b", "driftwarden:driftwarden-read")
                .iter()
                .all(|(_, _, verbs)| verbs == "get,list,watch")
        );
        assert!(granted(&out, "Role", "team-b", "driftwarden:driftwarden-write").is_empty());

        // Without RBAC kinds among the enforced ones, neither verb.
        needs.kinds.retain(|k| k.group().is_empty());
        let plain = yaml(&manifests(&needs)).expect("yaml");
        assert!(
            !plain.contains("escalate") && !plain.contains("- bind"),
            "{plain}"
        );
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
            granted(&out, "Role", "team-a", "driftwarden:driftwarden-read").contains(&triple(
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
    fn names_carry_the_service_accounts_namespace_so_installations_never_share_a_cluster_role() {
        let policies = [policy("{name: all, mode: enforce}")];
        let names = |subject: &str| -> BTreeSet<(String, String, String)> {
            let mut needs = needs(&policies, &[]);
            needs.subject = subject.parse().expect("a service account");
            shape(&manifests(&needs)).into_iter().collect()
        };
        let ops = names("ops:driftwarden");
        let staging = names("staging:driftwarden");
        assert!(ops.iter().all(|(kind, _, name)| kind.starts_with("Cluster")
            && (name == "ops:driftwarden-read" || name == "ops:driftwarden-write")));
        assert!(ops.is_disjoint(&staging), "{ops:?} {staging:?}");
        let binding = manifests(&needs(&policies, &[]))
            .into_iter()
            .find(|m| m.object["kind"] == "ClusterRoleBinding")
            .expect("a binding");
        assert_eq!(
            binding.object["roleRef"]["name"],
            binding.object["metadata"]["name"]
        );
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
