//! The API's routes, each documented in the OpenAPI document by its
//! `#[utoipa::path]`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use ledger::Ledger;
use model::{Exemption, ExemptionScope, Revocation};
use tokio::sync::oneshot;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::views::{
    ChangeView, ChangesPage, ChangesQuery, DEFAULT_PAGE, DriftView, ErrorView, ExemptionView,
    GrantRequest, HistoryQuery, HistoryView, LedgerView, MAX_TEXT, PartView, ReadinessView,
    ReasonRequest, RecordView, Recorded, ReplayRequest, ReplayView, ReportQuery, VerifiedView,
};
use super::{ApiError, ApiState, Caller, api_router};
use crate::config::ApiRole;
use crate::requests::{Request, Submitted};

/// Most records one page of changes reads; a page with fewer changes than
/// asked for still has a `next` while more records remain.
const MAX_SCAN: usize = 50_000;

/// Longest exemption the API grants.
const MAX_EXEMPTION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Routes that need a token.
pub(super) fn authenticated() -> OpenApiRouter<ApiState> {
    api_router()
        .routes(routes!(changes))
        .routes(routes!(change))
        .routes(routes!(history))
        .routes(routes!(drift))
        .routes(routes!(exemptions, grant))
        .routes(routes!(revoke))
        .routes(routes!(resume))
        .routes(routes!(ledger_head))
        .routes(routes!(verify))
        .routes(routes!(replay))
        .routes(routes!(metrics))
        .routes(routes!(report))
}

/// Routes anyone may call: probes.
pub(super) fn open() -> OpenApiRouter<ApiState> {
    api_router()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(page))
        .routes(routes!(page_script))
        .routes(routes!(page_style))
}

/// The page's policy: its own script and style only, requests to this
/// server only, never framed.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// A static part of the page.
fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, content_type),
            (axum::http::header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
            (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (axum::http::header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// The drift feed page: live feed, open drift, an object's timeline.
#[utoipa::path(get, path = "/", responses((status = 200, content_type = "text/html", body = String)))]
async fn page() -> Response {
    static_file("text/html; charset=utf-8", include_str!("page/index.html"))
}

/// The page's script.
#[utoipa::path(get, path = "/app.js", responses((status = 200, content_type = "text/javascript", body = String)))]
async fn page_script() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("page/app.js"),
    )
}

/// The page's style.
#[utoipa::path(get, path = "/app.css", responses((status = 200, content_type = "text/css", body = String)))]
async fn page_style() -> Response {
    static_file("text/css; charset=utf-8", include_str!("page/app.css"))
}

type Answer<T> = Result<Json<T>, ApiError>;

/// Runs `read` on the ledger on the blocking pool.
async fn read<T: Send + 'static>(
    state: &ApiState,
    read: impl FnOnce(&Ledger) -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let ledger = state.ledger.clone();
    tokio::task::spawn_blocking(move || read(&ledger))
        .await
        .map_err(|err| anyhow::anyhow!("a ledger read panicked: {err}"))?
        .map_err(ApiError::from)
}

/// Refuses a caller below `role`.
fn require(caller: &Caller, role: ApiRole) -> Result<(), ApiError> {
    if caller.role() < role {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this needs an {role} token; {} is a {}",
                caller.recorded_as(),
                caller.role()
            ),
        ));
    }
    Ok(())
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|err| ApiError::field("query", err.body_text()))
}

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(|err| {
        let mut error = ApiError::field("body", err.body_text());
        error.status = err.status();
        error
    })
}

/// Judged changes, oldest first, filtered, a page at a time.
#[utoipa::path(get, path = "/v1/changes", params(ChangesQuery),
    responses((status = 200, body = ChangesPage), (status = 400, body = ErrorView)),
    security(("bearer" = [])))]
async fn changes(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<ChangesQuery>, QueryRejection>,
) -> Answer<ChangesPage> {
    require(&caller, ApiRole::Reader)?;
    let q = query(q)?;
    if let Some((field, message)) = q.invalid() {
        return Err(ApiError::field(field, message));
    }
    let page = read(&state, move |ledger| changes_page(ledger, &q)).await?;
    Ok(Json(page))
}

/// The page of changes `q` asks for.
pub fn changes_page(ledger: &Ledger, q: &ChangesQuery) -> anyhow::Result<ChangesPage> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    let records: Box<dyn Iterator<Item = ledger::Result<model::LedgerRecord>>> =
        match (q.cursor, q.since) {
            (Some(cursor), _) => Box::new(ledger.from_seq(cursor + 1)),
            (None, Some(since)) => Box::new(ledger.since(since)),
            (None, None) => Box::new(ledger.from_seq(1)),
        };
    let mut changes = Vec::new();
    let mut next = None;
    for (scanned, record) in records.enumerate() {
        let record = record?;
        if scanned == MAX_SCAN {
            next = Some(record.seq - 1);
            break;
        }
        if q.since.is_some_and(|since| record.at < since) {
            continue;
        }
        // Records are written in time order.
        if q.until.is_some_and(|until| record.at >= until) {
            break;
        }
        let Some(view) = ChangeView::of(&record).filter(|view| q.matches(view)) else {
            continue;
        };
        if changes.len() == limit {
            next = changes.last().map(|last: &ChangeView| last.seq);
            break;
        }
        changes.push(view);
    }
    Ok(ChangesPage { changes, next })
}

/// One ledger record, by sequence number.
#[utoipa::path(get, path = "/v1/changes/{seq}",
    params(("seq" = u64, Path, description = "The record's sequence number")),
    responses((status = 200, body = RecordView), (status = 404, body = ErrorView)),
    security(("bearer" = [])))]
async fn change(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    seq: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Answer<RecordView> {
    require(&caller, ApiRole::Reader)?;
    let Path(seq) = seq.map_err(|err| ApiError::field("seq", err.body_text()))?;
    let record = read(&state, move |ledger| Ok(ledger.get(seq)?)).await?;
    match record {
        Some(record) => Ok(Json(RecordView::from(record))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("the ledger holds no record #{seq}"),
        )),
    }
}

/// Every record about one object, oldest first.
#[utoipa::path(get, path = "/v1/history", params(HistoryQuery),
    responses((status = 200, body = HistoryView), (status = 400, body = ErrorView)),
    security(("bearer" = [])))]
async fn history(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Answer<HistoryView> {
    require(&caller, ApiRole::Reader)?;
    let q = query(q)?;
    let key = crate::cli::parse_key(&state.config, &q.key)
        .map_err(|err| ApiError::field("key", format!("{err:#}")))?;
    let records = {
        let key = key.clone();
        read(&state, move |ledger| Ok(ledger.history(&key)?)).await?
    };
    Ok(Json(HistoryView {
        key: key.to_string(),
        records: records.into_iter().map(RecordView::from).collect(),
    }))
}

/// Open drift now, as `driftwarden diff` shows it.
#[utoipa::path(get, path = "/v1/drift",
    responses((status = 200, body = DriftView)),
    security(("bearer" = [])))]
async fn drift(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Answer<DriftView> {
    require(&caller, ApiRole::Reader)?;
    let desired = state.desired.borrow().clone();
    let key = state.digest_key.clone();
    let view = read(&state, move |ledger| {
        let head_seq = ledger.head().0;
        let drift = crate::inspect::drift(ledger, &desired, &key)?;
        Ok(DriftView {
            head_seq,
            drift: drift
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?,
        })
    })
    .await?;
    Ok(Json(view))
}

/// Exemptions in force.
#[utoipa::path(get, path = "/v1/exemptions",
    responses((status = 200, body = Vec<ExemptionView>)),
    security(("bearer" = [])))]
async fn exemptions(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Answer<Vec<ExemptionView>> {
    require(&caller, ApiRole::Reader)?;
    let recorded = read(&state, |ledger| Ok(ledger.exemption_records()?)).await?;
    Ok(Json(
        recorded
            .into_iter()
            .map(|(seq, e)| ExemptionView {
                seq,
                scope: e.scope.to_string(),
                from: e.from,
                until: e.until,
                reason: e.reason,
                granted_by: e.granted_by,
            })
            .collect(),
    ))
}

/// Grants a break-glass exemption (operator).
#[utoipa::path(post, path = "/v1/exemptions", request_body = GrantRequest,
    responses((status = 201, body = Recorded), (status = 400, body = ErrorView),
        (status = 403, body = ErrorView)),
    security(("bearer" = [])))]
async fn grant(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    grant: Result<Json<GrantRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    require(&caller, ApiRole::Operator)?;
    let grant = body(grant)?;
    let scope = match (&grant.key, &grant.namespace) {
        (Some(key), None) => ExemptionScope::Object {
            key: crate::cli::parse_key(&state.config, key)
                .map_err(|err| ApiError::field("key", format!("{err:#}")))?,
        },
        (None, Some(namespace)) if !namespace.is_empty() && namespace.len() <= 253 => {
            ExemptionScope::Namespace {
                cluster: state.config.cluster.name.clone(),
                namespace: namespace.clone(),
            }
        }
        (None, Some(_)) => return Err(ApiError::field("namespace", "not a namespace name")),
        _ => {
            return Err(ApiError::field(
                "key",
                "give exactly one of `key` (one object) or `namespace`",
            ));
        }
    };
    let duration = humantime::parse_duration(&grant.duration)
        .ok()
        .filter(|d| !d.is_zero() && *d <= MAX_EXEMPTION)
        .ok_or_else(|| {
            ApiError::field(
                "duration",
                format!("`{}` is not a duration up to 7d, e.g. `2h`", grant.duration),
            )
        })?;
    let reason = reason(&grant.reason)?;
    let from = Utc::now();
    let exemption = Exemption {
        scope,
        from,
        until: from + chrono::Duration::from_std(duration).map_err(anyhow::Error::from)?,
        reason,
        granted_by: caller.recorded_as(),
    };
    let text = format!(
        "exemption for {} until {}: {}",
        exemption.scope, exemption.until, exemption.reason
    );
    let seq = submit(&state, Request::Exempt(exemption)).await?;
    Ok((StatusCode::CREATED, Json(Recorded { seq, text })).into_response())
}

/// Revokes an exemption before it expires (operator).
#[utoipa::path(delete, path = "/v1/exemptions/{seq}", request_body = ReasonRequest,
    params(("seq" = u64, Path, description = "The exemption's ledger record")),
    responses((status = 200, body = Recorded), (status = 404, body = ErrorView),
        (status = 403, body = ErrorView)),
    security(("bearer" = [])))]
async fn revoke(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    seq: Result<Path<u64>, axum::extract::rejection::PathRejection>,
    why: Result<Json<ReasonRequest>, JsonRejection>,
) -> Answer<Recorded> {
    require(&caller, ApiRole::Operator)?;
    let Path(seq) = seq.map_err(|err| ApiError::field("seq", err.body_text()))?;
    let reason = reason(&body(why)?.reason)?;
    let in_force = read(&state, |ledger| Ok(ledger.exemption_records()?)).await?;
    let Some((_, exemption)) = in_force.iter().find(|(s, _)| *s == seq) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no exemption in force was granted by record #{seq}"),
        ));
    };
    let text = format!("revoked the exemption for {}: {reason}", exemption.scope);
    let revocation = Revocation {
        exemption: seq,
        reason,
        revoked_by: caller.recorded_as(),
    };
    let seq = submit(&state, Request::Revoke(revocation)).await?;
    Ok(Json(Recorded { seq, text }))
}

/// Resumes enforcement paused by the circuit breaker or by hand (operator).
#[utoipa::path(post, path = "/v1/resume", request_body = ReasonRequest,
    responses((status = 200, body = Recorded), (status = 403, body = ErrorView)),
    security(("bearer" = [])))]
async fn resume(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    why: Result<Json<ReasonRequest>, JsonRejection>,
) -> Answer<Recorded> {
    require(&caller, ApiRole::Operator)?;
    let reason = format!(
        "{} (by {})",
        reason(&body(why)?.reason)?,
        caller.recorded_as()
    );
    let text = format!("enforcement resumed: {reason}");
    let seq = submit(&state, Request::Resume { reason }).await?;
    Ok(Json(Recorded { seq, text }))
}

/// A reason given: not empty, not too long.
fn reason(text: &str) -> Result<String, ApiError> {
    let text = text.trim();
    if text.is_empty() || text.len() > MAX_TEXT {
        return Err(ApiError::field(
            "reason",
            format!("give a reason (an incident or ticket), 1 to {MAX_TEXT} bytes"),
        ));
    }
    Ok(text.to_owned())
}

/// Hands `request` to the correlator and waits for its record.
async fn submit(state: &ApiState, request: Request) -> Result<u64, ApiError> {
    let (reply, recorded) = oneshot::channel();
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the correlator is not running; nothing was recorded",
        )
    };
    state
        .requests
        .send(Submitted { request, reply })
        .await
        .map_err(|_| unavailable())?;
    Ok(recorded.await.map_err(|_| unavailable())??)
}

/// The ledger's head and its last verification.
#[utoipa::path(get, path = "/v1/ledger",
    responses((status = 200, body = LedgerView)),
    security(("bearer" = [])))]
async fn ledger_head(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Answer<LedgerView> {
    require(&caller, ApiRole::Reader)?;
    let (seq, head) = state.ledger.head();
    Ok(Json(LedgerView {
        seq,
        head: hex::encode(head),
        verified: state.verified.lock().await.clone(),
    }))
}

/// Verifies the ledger now (chain, checkpoint, derived trees) and answers
/// the report; one verification runs at a time.
#[utoipa::path(post, path = "/v1/verify",
    responses((status = 200, body = VerifiedView)),
    security(("bearer" = [])))]
async fn verify(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Answer<VerifiedView> {
    require(&caller, ApiRole::Reader)?;
    let mut last = state.verified.lock().await;
    let config = state.config.clone();
    let ledger = state.ledger.clone();
    let verified = verify_now(config, ledger).await?;
    state.metrics.verified(verified.ok, verified.at);
    *last = Some(verified.clone());
    Ok(Json(verified))
}

/// Verifies `ledger` against the checkpoints `config` names.
async fn verify_now(
    config: Arc<crate::config::Config>,
    ledger: Arc<Ledger>,
) -> anyhow::Result<VerifiedView> {
    let chosen = crate::checkpoints::for_verify(&config, None).await?;
    let report = tokio::task::spawn_blocking(move || {
        let trusted =
            ledger::checkpoint::trusted_key(&config.data_dir.join(ledger::checkpoint::KEY_FILE))?;
        let report = ledger.verify_with(chosen.checkpoint(), trusted.as_ref())?;
        let text = crate::inspect::verify(&report, None, false) + &chosen.text();
        let ok = report.is_ok() && !chosen.kafka_tampered;
        anyhow::Ok((chosen.annotate(serde_json::to_value(&report)?), text, ok))
    })
    .await??;
    let (report, text, ok) = report;
    Ok(VerifiedView {
        at: Utc::now(),
        ok,
        report,
        text,
    })
}

/// The Prometheus metrics, `driftwarden_*`, as OpenMetrics text (scrape
/// with a reader token, e.g. `authorization: {credentials_file: ...}`).
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, body = String,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")),
    security(("bearer" = [])))]
async fn metrics(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    require(&caller, ApiRole::Reader)?;
    let metrics = state.metrics.clone();
    // Reads the ledger (records, size, open drifts).
    let text = tokio::task::spawn_blocking(move || metrics.encode())
        .await
        .map_err(|err| anyhow::anyhow!("encoding the metrics panicked: {err}"))?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

/// Longest history `replay` judges again.
const MAX_REPLAY: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);

/// Judges recorded history again under another policy and reports what it
/// would have reverted (nothing is written).
#[utoipa::path(post, path = "/v1/replay", request_body = ReplayRequest,
    responses((status = 200, body = ReplayView), (status = 400, body = ErrorView)),
    security(("bearer" = [])))]
async fn replay(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    asked: Result<Json<ReplayRequest>, JsonRejection>,
) -> Answer<ReplayView> {
    require(&caller, ApiRole::Reader)?;
    let asked = body(asked)?;
    let policy = crate::replay::PolicyFile::parse(&asked.policy, "in the request")
        .map_err(|err| ApiError::field("policy", format!("{err:#}")))?;
    let since = humantime::parse_duration(&asked.since)
        .ok()
        .filter(|d| *d <= MAX_REPLAY)
        .ok_or_else(|| {
            ApiError::field(
                "since",
                format!("`{}` is not a duration up to 366d, e.g. `7d`", asked.since),
            )
        })?;
    let since = Utc::now() - chrono::Duration::from_std(since).map_err(anyhow::Error::from)?;
    let desired = state.desired.borrow().clone();
    let config = state.config.clone();
    let ledger = state.ledger.clone();
    let view = tokio::task::spawn_blocking(move || {
        let report = crate::replay::replay(&config, policy, ledger, desired, since)?;
        anyhow::Ok(ReplayView {
            text: crate::replay::text(&report),
            report: serde_json::to_value(&report)?,
        })
    })
    .await
    .map_err(|err| anyhow::anyhow!("replay panicked: {err}"))??;
    Ok(Json(view))
}

/// A report of a period: drift by namespace, kind and actor, unresolved
/// drift with its diff, time to revert and adopt, exemptions granted and
/// git commits applied; as Markdown, one self-contained HTML file, JSON or
/// CSV (one row per change, sent as the ledger is read).
#[utoipa::path(get, path = "/v1/report", params(ReportQuery),
    responses(
        (status = 200, content(
            (String = "text/markdown"),
            (String = "text/html"),
            (String = "application/json"),
            (String = "text/csv"))),
        (status = 400, body = ErrorView)),
    security(("bearer" = [])))]
async fn report(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    use crate::report::{self, Verification};
    require(&caller, ApiRole::Reader)?;
    let q = query(q)?;
    let now = Utc::now();
    let since =
        report_time("since", q.since.as_deref(), now)?.unwrap_or(now - chrono::Duration::days(7));
    let until = report_time("until", q.until.as_deref(), now)?.unwrap_or(now);
    let format = match q.format.as_deref() {
        None => report::Format::Md,
        Some(text) => text
            .parse()
            .map_err(|err: report::Error| ApiError::field("format", err.to_string()))?,
    };
    if q.namespace.as_ref().is_some_and(|n| n.len() > MAX_TEXT) {
        return Err(ApiError::field(
            "namespace",
            format!("longer than {MAX_TEXT} bytes"),
        ));
    }
    let scope = report::Scope::new(since, until, q.namespace)
        .map_err(|err| ApiError::field(err.field().unwrap_or("query"), err.to_string()))?;
    let verification = match state.verified.lock().await.as_ref() {
        Some(verified) => Verification::Verified {
            at: verified.at,
            ok: verified.ok,
        },
        None => Verification::NotVerified {
            note: "not verified since this driftwarden started: `driftwarden verify` runs one"
                .into(),
        },
    };
    let context = report::Context {
        cluster: state.config.cluster.name.clone(),
        verification,
        now,
        // The correlator and the enforcer keep the other core.
        readers: 1,
    };
    // One report at a time: a reader asking for many at once must not
    // take every blocking thread (and the disk) from the rest.
    static REPORTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let permit = REPORTS
        .acquire()
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
    let (sender, mut chunks) = tokio::sync::mpsc::channel(4);
    let ledger = state.ledger.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut out = Chunks {
            sender: sender.clone(),
            buffer: Vec::new(),
        };
        if let Err(err) = report::write(&ledger, &scope, &context, format, &mut out) {
            let err = anyhow::Error::from(err);
            tracing::warn!(error = %format!("{err:#}"), "making a report failed");
            let _ = sender.blocking_send(Err(std::io::Error::other(format!("{err:#}"))));
        }
    });
    // Everything before the first bytes decides the status; a failure
    // after them cuts the body short (never a body that looks whole).
    let first = match chunks.recv().await {
        Some(Ok(first)) => first,
        Some(Err(err)) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("making the report failed: {err}"),
            ));
        }
        None => axum::body::Bytes::new(),
    };
    let rest = futures::stream::unfold(chunks, |mut chunks| async move {
        chunks.recv().await.map(|chunk| (chunk, chunks))
    });
    let body = axum::body::Body::from_stream(futures::StreamExt::chain(
        futures::stream::iter([Ok(first)]),
        rest,
    ));
    let disposition = format!(
        "inline; filename=\"driftwarden-report.{}\"",
        format.as_str()
    );
    let mut response = (
        [
            (
                axum::http::header::CONTENT_TYPE,
                format.content_type().to_owned(),
            ),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
            (
                axum::http::header::X_CONTENT_TYPE_OPTIONS,
                "nosniff".to_owned(),
            ),
        ],
        body,
    )
        .into_response();
    if format == report::Format::Html {
        response.headers_mut().insert(
            axum::http::header::CONTENT_SECURITY_POLICY,
            axum::http::HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
            ),
        );
    }
    Ok(response)
}

/// The time `field` of a report query names, if given: a duration back
/// from `now` or an RFC 3339 time.
fn report_time(
    field: &str,
    text: Option<&str>,
    now: chrono::DateTime<Utc>,
) -> Result<Option<chrono::DateTime<Utc>>, ApiError> {
    let Some(text) = text else {
        return Ok(None);
    };
    if text.len() > MAX_TEXT {
        return Err(ApiError::field(
            field,
            format!("longer than {MAX_TEXT} bytes"),
        ));
    }
    text.parse::<crate::report::When>()
        .map(|when| Some(when.at(now)))
        .map_err(|err| ApiError::field(field, err.to_string()))
}

/// A report's bytes, handed to the response body in chunks of 64 KiB.
struct Chunks {
    sender: tokio::sync::mpsc::Sender<std::io::Result<axum::body::Bytes>>,
    buffer: Vec<u8>,
}

impl Chunks {
    const SIZE: usize = 64 * 1024;

    fn send(&mut self) -> std::io::Result<()> {
        let chunk = axum::body::Bytes::from(std::mem::take(&mut self.buffer));
        self.sender.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl std::io::Write for Chunks {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= Self::SIZE {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Every part is ready: 200, or 503 naming the parts that are not.
#[utoipa::path(get, path = "/readyz",
    responses((status = 200, body = ReadinessView), (status = 503, body = ReadinessView)))]
async fn readyz(State(state): State<ApiState>) -> Response {
    let parts: Vec<PartView> = state
        .health
        .parts()
        .into_iter()
        .map(|(name, part)| PartView {
            name,
            ready: part.ready,
            detail: part.detail,
        })
        .collect();
    let ready = state.health.ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(ReadinessView { ready, parts })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Actor, ObjectKey, RecordBody, Verdict};

    /// A change of ConfigMap `cm-i` in namespace `ns-(i % 3)`, claimed by
    /// manager mallory; every fifth a drift, the rest in sync.
    fn change(i: usize) -> RecordBody {
        let key = ObjectKey::new(
            "prod",
            "",
            "ConfigMap",
            format!("ns-{}", i % 3),
            format!("cm-{i}"),
        );
        let verdict = if i.is_multiple_of(5) {
            crate::fixtures::drift()
        } else {
            Verdict::InSync
        };
        let mut body = crate::fixtures::change(key, verdict, Utc::now());
        if let RecordBody::Change { judgement, .. } = &mut body {
            judgement.actor = Actor::ManagedFields {
                manager: "mallory".into(),
                operation: "Update".into(),
                time: None,
            };
        }
        body
    }

    /// Every page of `q`, followed from the first to the last.
    fn all_pages(ledger: &Ledger, mut q: ChangesQuery) -> Vec<u64> {
        let mut seqs = Vec::new();
        loop {
            let page = changes_page(ledger, &q).expect("page");
            assert!(page.changes.len() <= q.limit.unwrap_or(DEFAULT_PAGE));
            seqs.extend(page.changes.iter().map(|c| c.seq));
            match page.next {
                Some(next) => q.cursor = Some(next),
                None => return seqs,
            }
        }
    }

    #[test]
    fn pages_give_every_change_exactly_once_with_and_without_filters() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path().join("ledger")).expect("ledger");
        const CHANGES: usize = 3_000;
        for chunk in (0..CHANGES).collect::<Vec<_>>().chunks(500) {
            ledger
                .append(chunk.iter().map(|i| change(*i)).collect(), &[])
                .expect("append");
        }
        let every = all_pages(
            &ledger,
            ChangesQuery {
                limit: Some(97),
                ..Default::default()
            },
        );
        assert_eq!(every, (1..=CHANGES as u64).collect::<Vec<_>>());

        let drifts_in_ns1 = all_pages(
            &ledger,
            ChangesQuery {
                namespace: Some("ns-1".into()),
                verdict: Some("drift".into()),
                limit: Some(50),
                ..Default::default()
            },
        );
        let expected: Vec<u64> = (0..CHANGES)
            .filter(|i| i % 3 == 1 && i.is_multiple_of(5))
            .map(|i| i as u64 + 1)
            .collect();
        assert_eq!(drifts_in_ns1, expected);

        let by_actor = all_pages(
            &ledger,
            ChangesQuery {
                actor: Some("mallory".into()),
                source: Some("managed_fields".into()),
                verdict: Some("in_sync".into()),
                ..Default::default()
            },
        );
        assert_eq!(by_actor.len(), CHANGES - CHANGES / 5);
        let nobody = all_pages(
            &ledger,
            ChangesQuery {
                source: Some("audit".into()),
                ..Default::default()
            },
        );
        assert!(nobody.is_empty());
    }

    #[test]
    fn bad_filters_name_their_field() {
        let q = ChangesQuery {
            limit: Some(0),
            ..Default::default()
        };
        assert_eq!(q.invalid().map(|(f, _)| f), Some("limit"));
        let now = Utc::now();
        let q = ChangesQuery {
            since: Some(now),
            until: Some(now),
            ..Default::default()
        };
        assert_eq!(q.invalid().map(|(f, _)| f), Some("until"));
        let q = ChangesQuery {
            kind: Some("k".repeat(MAX_TEXT + 1)),
            ..Default::default()
        };
        assert_eq!(q.invalid().map(|(f, _)| f), Some("kind"));
    }
}
