//! The HTTP API of a running Driftwarden: the ledger, the open drift and
//! exemptions read (and granted) while it runs.
//!
//! ```text
//! TCP (TLS optional) ──bearer token──▶ caller {reader | operator} ─┐
//! data_dir/api.sock ──peer uid──────▶ caller {operator} ───────────┼─▶ /v1 routes ──▶ ledger (blocking pool)
//!                                                                  │                └─▶ requests ──▶ correlator
//! /healthz, /readyz, /v1/openapi.json: no token ───────────────────┘
//! every request ──▶ driftwarden_api_requests_total{route template, method, status}
//! ```
//!
//! Every GET needs a reader token; granting or revoking exemptions and
//! resuming enforcement need an operator token. A caller on the Unix
//! socket is whoever the kernel says connected (mode 0600: the owner of
//! `data_dir`), recorded by uid. Ledger reads run on tokio's blocking pool,
//! never on a worker. Writes go to the correlator, which owns the ledger's
//! chain, and the reply names the record written. `GET /metrics` (a reader
//! token) answers the Prometheus metrics (see [`crate::metrics`]).

pub mod client;
mod routes;
pub mod serve;
pub mod views;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ledger::Ledger;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{Mutex, mpsc, watch as latest};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use crate::config::{ApiRole, Config};
use crate::desired::Desired;
use crate::health::Health;
use crate::requests::Submitted;
use views::{ErrorView, VerifiedView};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A bearer token from the config.
    Token {
        /// The token's name in the config.
        name: String,
        /// What it may do.
        role: ApiRole,
    },
    /// A local process on the Unix socket.
    Local {
        /// Its user id, from the socket's peer credentials.
        uid: u32,
        /// That user's name, when the system knows it.
        user: Option<String>,
    },
}

impl Caller {
    /// What the caller may do: a local caller owns `data_dir` and may
    /// already do anything to the ledger.
    pub fn role(&self) -> ApiRole {
        match self {
            Caller::Token { role, .. } => *role,
            Caller::Local { .. } => ApiRole::Operator,
        }
    }

    /// The caller as the ledger records it (`granted_by`).
    pub fn recorded_as(&self) -> String {
        match self {
            Caller::Token { name, .. } => format!("api token {name}"),
            Caller::Local {
                uid,
                user: Some(user),
            } => format!("{user} (uid {uid}, local socket)"),
            Caller::Local { uid, user: None } => format!("uid {uid} (local socket)"),
        }
    }
}

/// The tokens the API accepts: their SHA-256 (compared in constant time),
/// names and roles. Read once, at start.
#[derive(Clone)]
pub struct Tokens(Vec<([u8; 32], String, ApiRole)>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.0.iter().map(|(_, name, role)| (name, role)).collect();
        f.debug_tuple("Tokens").field(&names).finish()
    }
}

impl Tokens {
    /// The tokens of `config`'s `api.tokens`, read from their files.
    pub fn load(config: &Config) -> anyhow::Result<Tokens> {
        let Some(api) = &config.api else {
            return Ok(Tokens(Vec::new()));
        };
        let mut tokens = Vec::new();
        for token in &api.tokens {
            let secret = token.read()?;
            tokens.push((
                Sha256::digest(secret.as_bytes()).into(),
                token.name.clone(),
                token.role,
            ));
        }
        Ok(Tokens(tokens))
    }

    /// The caller holding `presented`, if it is one of the tokens.
    fn caller(&self, presented: &str) -> Option<Caller> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every token is compared, so the time taken says nothing of which
        // one (nearly) matched.
        let mut found = None;
        for (hash, name, role) in &self.0 {
            if bool::from(hash.ct_eq(&digest)) {
                found = Some(Caller::Token {
                    name: name.clone(),
                    role: *role,
                });
            }
        }
        found
    }
}

/// What the routes share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The ledger, read on the blocking pool.
    pub ledger: Arc<Ledger>,
    /// The desired state the correlator judges against now.
    pub desired: latest::Receiver<Desired>,
    /// Exemptions and resumes, to the correlator.
    pub requests: mpsc::Sender<Submitted>,
    /// Readiness of every part.
    pub health: Health,
    /// The key Secret values are digested with (for the open drift).
    pub digest_key: model::redact::DigestKey,
    /// The config (cluster name, data_dir, checkpoint locations).
    pub config: Arc<Config>,
    /// The accepted bearer tokens.
    pub tokens: Tokens,
    /// The last verification; one runs at a time.
    pub verified: Arc<Mutex<Option<VerifiedView>>>,
    /// The process's metrics, served on `/metrics`.
    pub metrics: crate::metrics::Metrics,
}

/// The API's OpenAPI document, filled from the routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Driftwarden API",
        description = "Who changed what, when, and was it declared in git: the ledger of a running Driftwarden."
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// Declares the bearer token security scheme.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's routes and its OpenAPI document.
pub fn router(state: ApiState) -> (axum::Router, utoipa::openapi::OpenApi) {
    let (authenticated, mut doc) = routes::authenticated()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .split_for_parts();
    let (open, open_doc) = routes::open().split_for_parts();
    doc.merge(open_doc);
    let served = doc.clone();
    let router = authenticated
        .merge(open)
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || async move { Json(served) }),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            count_request,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state);
    (router, doc)
}

/// The routes as an [`OpenApiRouter`], for [`router`].
fn api_router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
}

/// Counts a request by its route template (never its path), method and
/// status.
async fn count_request(
    State(metrics): State<crate::metrics::Metrics>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let method = request.method().clone();
    let response = next.run(request).await;
    metrics.api_request(
        route.as_deref(),
        method.as_str(),
        response.status().as_u16(),
    );
    response
}

/// Checks the bearer token of a request (a Unix-socket caller is already
/// known) and hands the caller to the route.
async fn authenticate(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    if request.extensions().get::<Caller>().is_none() {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        let Some(presented) = presented else {
            state.metrics.auth_failure("missing");
            return unauthorized("no bearer token: send `Authorization: Bearer <token>`");
        };
        let Some(caller) = state.tokens.caller(presented.trim()) else {
            state.metrics.auth_failure("unknown");
            tracing::warn!(path = %request.uri().path(), "API request with an unknown token refused");
            return unauthorized("the bearer token is not one of api.tokens");
        };
        request.extensions_mut().insert(caller);
    }
    next.run(request).await
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"driftwarden\""),
    );
    response
}

/// An error answer: a status and [`ErrorView`].
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    view: ErrorView,
}

impl ApiError {
    /// `status` with `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            view: ErrorView {
                error: message.into(),
                field: None,
            },
        }
    }

    /// 400 for `field`: `message` says why and what to send instead.
    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        let mut error = ApiError::new(StatusCode::BAD_REQUEST, message);
        error.view.field = Some(field.to_owned());
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.view)).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> ApiError {
        tracing::error!(error = %format!("{err:#}"), "API request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}"))
    }
}

/// Where the Unix socket of `config`'s process is.
pub fn socket_path(config: &Config) -> PathBuf {
    config.data_dir.join("api.sock")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt as _;

    /// The router over a fresh ledger, with one reader token.
    fn served(dir: &std::path::Path) -> axum::Router {
        let token = dir.join("reader.token");
        std::fs::write(&token, "r".repeat(40)).expect("token");
        let path = dir.join("driftwarden.yaml");
        let text = format!(
            "version: 1\ncluster: {{name: prod}}\ndata_dir: {}\n\
             sources: [{{name: apps, url: 'file:///srv/apps'}}]\n\
             api: {{listen: '127.0.0.1:0', tokens: [{{name: secops, file: {}, role: reader}}]}}\n",
            dir.join("data").display(),
            token.display()
        );
        let config = Config::parse(&path, &text).expect("config");
        let (requests, _) = mpsc::channel(1);
        let state = ApiState {
            ledger: Arc::new(Ledger::open(dir.join("ledger")).expect("ledger")),
            desired: latest::channel(Desired::default()).1,
            requests,
            health: Health::default(),
            digest_key: model::redact::DigestKey::from_bytes([7; 32]),
            tokens: Tokens::load(&config).expect("tokens"),
            config: Arc::new(config),
            verified: Arc::default(),
            metrics: Default::default(),
        };
        router(state).0
    }

    async fn status(router: &axum::Router, path: &str, token: Option<&str>) -> StatusCode {
        let mut request = axum::http::Request::get(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Body::empty()).expect("request");
        router
            .clone()
            .oneshot(request)
            .await
            .expect("answer")
            .status()
    }

    #[tokio::test]
    async fn the_page_and_probes_need_no_token_and_the_rest_does() {
        let dir = tempfile::tempdir().expect("temp dir");
        let router = served(dir.path());
        let mut statuses = Vec::new();
        for path in ["/", "/app.js", "/app.css", "/healthz", "/v1/openapi.json"] {
            statuses.push((path, status(&router, path, None).await));
        }
        assert!(
            statuses.iter().all(|(_, s)| *s == StatusCode::OK),
            "{statuses:?}"
        );
        assert_eq!(
            status(&router, "/v1/changes", None).await,
            StatusCode::UNAUTHORIZED
        );
        let reader = "r".repeat(40);
        assert_eq!(
            status(&router, "/v1/changes", Some(&reader)).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&router, "/v1/nothing", Some(&reader)).await,
            StatusCode::NOT_FOUND
        );
    }
}
