//! The audit relay: kube-apiserver's audit webhook posts `EventList` batches
//! here; each batch's events are appended, one JSON object per line, to a
//! file and flushed in one write, so any number of concurrent tests can read
//! the same stream (fan-out by file). Readers should ignore a last line
//! without its newline: it is still being written.
//!
//! ```text
//! kube-apiserver ──POST EventList──► audit-relay ──append──► target/testenv/audit/events.jsonl
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::Value;

/// The largest batch accepted: 400 events at RequestResponse level can be
/// several megabytes.
const MAX_BATCH_BYTES: usize = 256 * 1024 * 1024;

/// Runs the relay until it is killed.
pub fn run(listen: &str, out: &Path) -> Result<()> {
    if let Some(parent) = out.parent() {
        crate::paths::ensure_dir(parent)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .with_context(|| format!("opening {}", out.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(listen, Arc::new(Mutex::new(file))))
}

async fn serve(listen: &str, file: Arc<Mutex<File>>) -> Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/", post(receive))
        .route("/{*path}", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BATCH_BYTES))
        .with_state(file);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!("audit relay listening on {listen}");
    axum::serve(listener, app).await.context("serving")
}

/// Appends the events of one batch; answers 400 to a body that is not an
/// `EventList`, 500 when the file cannot be written.
async fn receive(State(file): State<Arc<Mutex<File>>>, body: axum::body::Bytes) -> StatusCode {
    let lines = match event_lines(&body) {
        Ok(lines) => lines,
        Err(err) => {
            eprintln!("rejected a batch: {err:#}");
            return StatusCode::BAD_REQUEST;
        }
    };
    let written = file
        .lock()
        .map_err(|_| anyhow::anyhow!("file lock poisoned"))
        .and_then(|mut f| {
            f.write_all(lines.as_bytes())?;
            f.flush()?;
            Ok(())
        });
    match written {
        Ok(()) => StatusCode::OK,
        Err(err) => {
            eprintln!("writing events failed: {err:#}");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// The items of an `EventList`, one compact JSON object per line.
fn event_lines(body: &[u8]) -> Result<String> {
    let list: Value = serde_json::from_slice(body).context("body is not JSON")?;
    let items = list
        .get("items")
        .and_then(Value::as_array)
        .context("body has no items array")?;
    let mut lines = String::new();
    for item in items {
        lines.push_str(&serde_json::to_string(item)?);
        lines.push('\n');
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_list_becomes_one_line_per_event() {
        let body = br#"{"kind":"EventList","items":[{"verb":"patch"},{"verb":"create"}]}"#;
        let lines = event_lines(body).expect("valid list");
        assert_eq!(lines, "{\"verb\":\"patch\"}\n{\"verb\":\"create\"}\n");
    }

    #[test]
    fn a_body_without_items_is_rejected() {
        assert!(event_lines(br#"{"kind":"Status"}"#).is_err());
        assert!(event_lines(b"not json").is_err());
    }
}
