//! The audit webhook receiver: an axum [`Router`] the apiserver POSTs audit
//! batches to.
//!
//! ```text
//! kube-apiserver ──POST /audit (EventList)──▶ parse ──▶ mpsc::Sender<AuditRecord>
//! ```
//!
//! The router is plain HTTP; [`serve_audit_webhook`] serves it over TLS
//! behind authentication. Records are forwarded with `send().await`, so a full
//! channel slows the apiserver's webhook down instead of dropping records.
//!
//! [`serve_audit_webhook`]: crate::serve_audit_webhook

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::post;
use model::AuditRecord;
use tokio::sync::mpsc;

use crate::audit::parse_audit_batch;
use crate::server::WebhookCounters;

/// The largest audit batch accepted, in bytes. The apiserver sends at most
/// `--audit-webhook-batch-max-size` (default 400) events per batch; bodies
/// of write requests make most of their size.
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug)]
struct Receiver {
    cluster: String,
    sink: mpsc::Sender<AuditRecord>,
    counters: WebhookCounters,
}

/// The audit webhook routes: `POST /audit` and `POST /`.
///
/// Answers `200` once every record of the batch is handed to `sink`, `400`
/// with the reason when the body is not an audit `EventList` (nothing of it is
/// forwarded), and `503` when `sink` is closed.
pub fn audit_router(cluster: impl Into<String>, sink: mpsc::Sender<AuditRecord>) -> Router {
    counted_router(cluster.into(), sink, WebhookCounters::default())
}

/// [`audit_router`] counting accepted and rejected batches and forwarded
/// records in `counters`.
pub(crate) fn counted_router(
    cluster: String,
    sink: mpsc::Sender<AuditRecord>,
    counters: WebhookCounters,
) -> Router {
    let receiver = Arc::new(Receiver {
        cluster,
        sink,
        counters,
    });
    Router::new()
        .route("/audit", post(receive))
        .route("/", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BATCH_BYTES))
        .with_state(receiver)
}

async fn receive(State(receiver): State<Arc<Receiver>>, body: Bytes) -> (StatusCode, String) {
    let records = match parse_audit_batch(&receiver.cluster, &body) {
        Ok(records) => records,
        Err(err) => {
            let reason = error_chain(&err);
            tracing::warn!(
                cluster = %receiver.cluster,
                bytes = body.len(),
                error = %reason,
                "rejected audit webhook batch"
            );
            receiver.counters.add_rejected_batch();
            return (StatusCode::BAD_REQUEST, reason);
        }
    };
    let count = records.len();
    for record in records {
        if receiver.sink.send(record).await.is_err() {
            tracing::error!(cluster = %receiver.cluster, "audit records cannot be forwarded: the receiving stage has stopped");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "audit records cannot be forwarded: the receiving stage has stopped\n".into(),
            );
        }
        receiver.counters.add_record();
    }
    receiver.counters.add_accepted_batch();
    tracing::debug!(cluster = %receiver.cluster, records = count, "accepted audit webhook batch");
    (StatusCode::OK, format!("accepted {count} audit records\n"))
}

/// The error and its causes, one line: `outer: cause: cause`.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use serde_json::json;
    use tower::ServiceExt as _;

    fn write_batch() -> String {
        json!({
            "kind": "EventList",
            "apiVersion": "audit.k8s.io/v1",
            "items": [{
                "auditID": "a-1", "stage": "ResponseComplete", "verb": "create",
                "user": {"username": "alice"},
                "objectRef": {"resource": "configmaps", "namespace": "a", "name": "cfg"},
                "responseStatus": {"code": 201},
                "responseObject": {"metadata": {"uid": "u-1", "resourceVersion": "5"}},
                "stageTimestamp": "2026-01-02T03:04:05Z"
            }, {
                "auditID": "a-2", "stage": "ResponseComplete", "verb": "get",
                "user": {"username": "alice"},
                "objectRef": {"resource": "configmaps", "namespace": "a", "name": "cfg"},
                "stageTimestamp": "2026-01-02T03:04:05Z"
            }]
        })
        .to_string()
    }

    async fn post_to(router: Router, path: &str, body: impl Into<Body>) -> (StatusCode, String) {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .body(body.into())
            .expect("valid request");
        let response = router.oneshot(request).await.expect("router answers");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body reads");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn batch_is_forwarded_and_acknowledged_on_both_paths() {
        for path in ["/audit", "/"] {
            let (tx, mut rx) = mpsc::channel(8);
            let (status, text) = post_to(audit_router("prod", tx), path, write_batch()).await;
            assert_eq!(status, StatusCode::OK, "{text}");
            assert_eq!(text, "accepted 1 audit records\n");
            let record = rx.recv().await.expect("one record forwarded");
            assert_eq!(record.audit_id, "a-1");
            assert_eq!(record.cluster, "prod");
            assert_eq!(record.response_resource_version.as_deref(), Some("5"));
            assert!(rx.try_recv().is_err(), "the read is not forwarded");
        }
    }

    #[tokio::test]
    async fn bad_payloads_get_400_with_the_reason_and_forward_nothing() {
        let bodies = [
            "garbage".to_owned(),
            json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1beta1", "items": []})
                .to_string(),
            json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [{"stage": 1}]})
                .to_string(),
        ];
        for body in bodies {
            let (tx, mut rx) = mpsc::channel(8);
            let (status, text) = post_to(audit_router("prod", tx), "/audit", body.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(text.contains("audit webhook body"), "{text}");
            assert!(rx.try_recv().is_err());
        }
    }

    #[tokio::test]
    async fn closed_sink_answers_503() {
        let (tx, rx) = mpsc::channel(8);
        drop(rx);
        let (status, text) = post_to(audit_router("prod", tx), "/audit", write_batch()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    }

    #[tokio::test]
    async fn full_sink_applies_back_pressure_until_drained() {
        let (tx, mut rx) = mpsc::channel(1);
        tx.send(AuditRecord::new(
            "earlier",
            "prod",
            model::AuditUser::default(),
            "create",
            model::AuditObjectRef::default(),
            chrono::DateTime::from_timestamp(0, 0).expect("valid time"),
        ))
        .await
        .expect("channel open");
        let mut request = tokio::spawn(post_to(audit_router("prod", tx), "/audit", write_batch()));
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(200), &mut request).await;
        assert!(waited.is_err(), "the answer waits for room in the channel");
        assert_eq!(rx.recv().await.expect("earlier record").audit_id, "earlier");
        let (status, _) = request.await.expect("request task");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(rx.recv().await.expect("forwarded record").audit_id, "a-1");
    }

    #[tokio::test]
    async fn other_methods_and_paths_are_refused() {
        let (tx, _rx) = mpsc::channel(8);
        let (status, _) = post_to(
            audit_router("prod", tx.clone()),
            "/elsewhere",
            write_batch(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let request = Request::get("/audit")
            .body(Body::empty())
            .expect("valid request");
        let response = audit_router("prod", tx)
            .oneshot(request)
            .await
            .expect("answers");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
