//! Driftwarden's own identity in a test: a ServiceAccount in the test's
//! namespace, bound by exactly the manifests `check --rbac` prints for the
//! config it runs (applied again at every start, so its rights follow the
//! config), and a kubeconfig holding a token of it. Never admin.
//!
//! ```text
//! Config ──rbac::for_config (as admin, git cloned aside)──▶ manifests ──server-side apply──▶ bound
//! TokenRequest ──▶ kubeconfig ◀── Config.cluster.kubeconfig ──▶ Driftwarden runs as the ServiceAccount
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use driftwarden::config::Config;
use driftwarden::rbac::{Manifest, Resolved, ServiceAccount};
use futures::future::try_join_all;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::{TestEnv, User, eventually};

/// The name of Driftwarden's ServiceAccount in a test's namespace.
pub const ACCOUNT: &str = "driftwarden";

/// The field manager of the harness's writes of the RBAC.
const MANAGER: &str = "e2e-rbac";

/// How long a token of the ServiceAccount lives: longer than any test.
const TOKEN_SECONDS: i64 = 2 * 3600;

/// How long the apiserver may take to honour applied RBAC.
const BOUND: Duration = Duration::from_secs(20);

/// An object applied, as `(kind, namespace, name)`; the namespace is empty
/// for cluster-scoped objects.
type Applied = (String, String, String);

/// Driftwarden's ServiceAccount in one test, created with its first
/// [`Identity::bind`]. Its ClusterRoles and ClusterRoleBindings are owned
/// by the ServiceAccount's namespace, so the garbage collector deletes them
/// with it; its Roles go with their namespaces.
#[derive(Debug)]
pub struct Identity {
    env: &'static TestEnv,
    account: ServiceAccount,
    /// The kubeconfig and the git clone the RBAC is computed from (apart
    /// from Driftwarden's own `data_dir`).
    dir: TempDir,
    /// The uid of the ServiceAccount's namespace, once read.
    namespace_uid: Option<String>,
    token: bool,
    applied: BTreeSet<Applied>,
    bound: Option<Resolved>,
}

impl Identity {
    /// ServiceAccount [`ACCOUNT`] in `namespace`; nothing is created yet.
    pub fn new(env: &'static TestEnv, namespace: &str) -> Result<Identity> {
        Ok(Identity {
            env,
            account: ServiceAccount {
                namespace: namespace.to_owned(),
                name: ACCOUNT.to_owned(),
            },
            dir: tempfile::Builder::new().prefix("e2e-identity-").tempdir()?,
            namespace_uid: None,
            token: false,
            applied: BTreeSet::new(),
            bound: None,
        })
    }

    /// The kubeconfig of the ServiceAccount's token, for
    /// `cluster.kubeconfig`; written by the first [`Identity::bind`].
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    /// The ServiceAccount.
    pub fn account(&self) -> &ServiceAccount {
        &self.account
    }

    /// What the last [`Identity::bind`] applied.
    pub fn bound(&self) -> Option<&Resolved> {
        self.bound.as_ref()
    }

    /// The user name the apiserver sees:
    /// `system:serviceaccount:<namespace>:<name>`.
    pub fn username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.account.namespace, self.account.name
        )
    }

    /// Binds the ServiceAccount by what `check --rbac` prints for
    /// `config` (whose `cluster.kubeconfig` must be [`Identity::kubeconfig`]):
    /// the RBAC is computed as the admin, with git read in a clone of its
    /// own, and applied as the admin (server-side apply, all at once) with
    /// the ServiceAccount; objects an earlier bind applied and this one does
    /// not are deleted, so rights follow the config. Waits until the
    /// apiserver honours every role. Returns what was applied. When git
    /// cannot be read (`check --rbac` warns that kinds are missing), the
    /// RBAC of the last bind stays as it is.
    pub async fn bind(&mut self, config: &Config) -> Result<Resolved> {
        let kubeconfig = self.kubeconfig();
        ensure!(
            config.cluster.kubeconfig.as_deref() == Some(kubeconfig.as_path()),
            "the config runs Driftwarden with kubeconfig {:?}, not as its ServiceAccount ({})",
            config.cluster.kubeconfig,
            kubeconfig.display()
        );
        let mut as_admin = config.clone();
        as_admin.cluster.kubeconfig = Some(self.env.kubeconfig(User::Admin).to_path_buf());
        as_admin.data_dir = self.dir.path().join("rbac-data");
        let resolved = driftwarden::rbac::for_config(&as_admin, self.account.clone())
            .await
            .context("computing the RBAC `check --rbac` prints")?;
        if !resolved.warnings.is_empty()
            && let Some(bound) = &self.bound
        {
            // Git could not be read: the kinds it declares are missing, and
            // an operator keeps the RBAC applied when git was readable.
            eprintln!(
                "{}: keeping the RBAC of the last start: {}",
                self.account,
                resolved.warnings.join(" ")
            );
            return Ok(bound.clone());
        }

        let admin = self.env.client(User::Admin).await?;
        let namespace_uid = match &self.namespace_uid {
            Some(uid) => uid.clone(),
            None => {
                let namespaces: Api<Namespace> = Api::all(admin.clone());
                let namespace = namespaces.get(&self.account.namespace).await?;
                let uid = namespace.metadata.uid.context("a namespace without uid")?;
                self.namespace_uid = Some(uid.clone());
                uid
            }
        };
        let mut objects = vec![json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": self.account.name, "namespace": self.account.namespace},
        })];
        for manifest in &resolved.manifests {
            let mut object = manifest.object.clone();
            if object.pointer("/metadata/namespace").is_none() {
                object["metadata"]["ownerReferences"] = json!([{
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "name": self.account.namespace,
                    "uid": namespace_uid,
                }]);
            }
            objects.push(object);
        }
        let applied: BTreeSet<Applied> = objects.iter().map(applied_of).collect();
        let params = PatchParams::apply(MANAGER).force();
        try_join_all(objects.iter().map(|object| {
            let (api, name) = api_of(&admin, &applied_of(object));
            let params = params.clone();
            async move {
                api.patch(&name, &params, &Patch::Apply(object))
                    .await
                    .with_context(|| format!("applying {object}"))
            }
        }))
        .await?;
        let stale: Vec<&Applied> = self.applied.difference(&applied).collect();
        try_join_all(stale.into_iter().map(|object| {
            let (api, name) = api_of(&admin, object);
            async move {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                    Err(err) => Err(err).with_context(|| format!("deleting {object:?}")),
                }
            }
        }))
        .await?;
        self.applied = applied;

        if !self.token {
            let token = self.create_token(&admin).await?;
            token_kubeconfig(self.env, &token, &kubeconfig)?;
            self.token = true;
        }
        self.wait_bound(&resolved.manifests).await?;
        self.bound = Some(resolved.clone());
        Ok(resolved)
    }

    /// A token of the ServiceAccount (the TokenRequest API).
    async fn create_token(&self, admin: &kube::Client) -> Result<String> {
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(admin.clone(), &self.account.namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(TOKEN_SECONDS),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let answer = accounts
            .create_token_request(&self.account.name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("a token of {}", self.account))?;
        Ok(answer
            .status
            .context("a TokenRequest without status")?
            .token)
    }

    /// Waits until the apiserver authenticates the token and honours one
    /// rule of every role applied (RBAC reaches the authorizer through
    /// informers, a moment after the write).
    async fn wait_bound(&self, manifests: &[Manifest]) -> Result<()> {
        let client = client_of(&self.kubeconfig()).await?;
        let reviews: Api<SelfSubjectAccessReview> = Api::all(client);
        let probes: Vec<ResourceAttributes> = manifests.iter().filter_map(probe).collect();
        for attributes in probes {
            let what = format!("{} may {attributes:?}", self.account);
            eventually(BOUND, &what, || {
                let review = SelfSubjectAccessReview {
                    spec: SelfSubjectAccessReviewSpec {
                        resource_attributes: Some(attributes.clone()),
                        ..SelfSubjectAccessReviewSpec::default()
                    },
                    ..SelfSubjectAccessReview::default()
                };
                let reviews = reviews.clone();
                async move {
                    let allowed = match reviews.create(&PostParams::default(), &review).await {
                        Ok(answer) => answer.status.is_some_and(|s| s.allowed),
                        // A token of a ServiceAccount just made may not
                        // authenticate yet.
                        Err(_) => false,
                    };
                    Ok(allowed.then_some(()))
                }
            })
            .await?;
        }
        Ok(())
    }
}

/// The API of an object this module applies (a ServiceAccount or an RBAC
/// object), and its name.
fn api_of(
    client: &kube::Client,
    (kind, namespace, name): &Applied,
) -> (Api<DynamicObject>, String) {
    let (group, plural) = match kind.as_str() {
        "ServiceAccount" => ("", "serviceaccounts".to_owned()),
        other => (
            "rbac.authorization.k8s.io",
            format!("{}s", other.to_lowercase()),
        ),
    };
    let gvk = GroupVersionKind::gvk(group, "v1", kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let api = if namespace.is_empty() {
        Api::all_with(client.clone(), &resource)
    } else {
        Api::namespaced_with(client.clone(), namespace, &resource)
    };
    (api, name.clone())
}

/// `(kind, namespace, name)` of a manifest.
fn applied_of(object: &Value) -> Applied {
    let field = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (
        field("/kind"),
        field("/metadata/namespace"),
        field("/metadata/name"),
    )
}

/// What to ask to know a Role or ClusterRole is honoured: its first
/// resource rule's first verb on its first resource.
fn probe(manifest: &Manifest) -> Option<ResourceAttributes> {
    let object = &manifest.object;
    if !matches!(object["kind"].as_str(), Some("Role" | "ClusterRole")) {
        return None;
    }
    let rule = object["rules"]
        .as_array()?
        .iter()
        .find(|rule| rule.get("resources").is_some())?;
    let first = |field: &str| rule[field][0].as_str().map(str::to_owned);
    Some(ResourceAttributes {
        namespace: object["metadata"]["namespace"].as_str().map(str::to_owned),
        group: first("apiGroups"),
        resource: first("resources"),
        verb: first("verbs"),
        ..ResourceAttributes::default()
    })
}

/// A kube-rs client with the kubeconfig at `path`.
pub async fn client_of(path: &Path) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("kubeconfig {}", path.display()))?;
    Ok(kube::Client::try_from(config)?)
}

/// Runs the built kubectl with the kubeconfig at `kubeconfig`; the output
/// is returned whatever the exit status.
pub fn kubectl_as(env: &TestEnv, kubeconfig: &Path, args: &[&str]) -> Result<Output> {
    Command::new(&env.kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .with_context(|| format!("running kubectl {}", args.join(" ")))
}

/// Writes to `path` a kubeconfig for `token`, with the admin kubeconfig's
/// server and CA.
pub fn token_kubeconfig(env: &TestEnv, token: &str, path: &Path) -> Result<()> {
    let admin = Kubeconfig::read_from(env.kubeconfig(User::Admin))?;
    let cluster = admin
        .clusters
        .first()
        .and_then(|named| named.cluster.clone())
        .context("the admin kubeconfig names no cluster")?;
    let ca = cluster
        .certificate_authority_data
        .context("the admin kubeconfig has no CA data")?;
    let server = cluster
        .server
        .context("the admin kubeconfig has no server")?;
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testenv", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": "driftwarden", "user": {"token": token}}],
        "contexts": [{"name": "driftwarden", "context": {"cluster": "testenv", "user": "driftwarden"}}],
        "current-context": "driftwarden",
    });
    std::fs::write(path, serde_norway::to_string(&kubeconfig)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// The text `driftwarden check --rbac -c config --service-account account`
/// prints (`account` as `NAMESPACE:NAME`).
pub async fn printed_rbac(config: &Path, account: &str) -> Result<String> {
    let cli = driftwarden::cli::Cli {
        output: driftwarden::cli::Output::Human,
        remote: Default::default(),
        command: driftwarden::cli::Command::Check {
            config: config.to_path_buf(),
            object: None,
            labels: Vec::new(),
            rbac: true,
            service_account: account.parse()?,
        },
    };
    let outcome = driftwarden::cli::run(cli).await?;
    ensure!(outcome.ok, "check --rbac failed:\n{}", outcome.text);
    Ok(outcome.text)
}
