//! A report made by the running Driftwarden (it holds the ledger): `GET
//! /v1/report` over its Unix socket or its HTTP API, the body copied to the
//! output as it arrives.

use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, bail};
use axum::http::{Method, StatusCode, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::{Format, Scope};
use crate::api::client::Client;
use crate::api::views::ErrorView;

/// The API path of the report of `scope` in `format`.
pub fn path(scope: &Scope, format: Format) -> String {
    let time =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let mut path = format!(
        "/v1/report?since={}&until={}&format={format}",
        time(scope.since),
        time(scope.until)
    );
    if let Some(namespace) = &scope.namespace {
        // Checked by `Scope::new`: letters, digits and `-` need no escaping.
        path.push_str("&namespace=");
        path.push_str(namespace);
    }
    path
}

/// Has the running Driftwarden behind `client` make the report of `scope`
/// in `format`, and writes it to `out`.
pub async fn fetch(
    client: &Client,
    scope: &Scope,
    format: Format,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let path = path(scope, format);
    match client {
        Client::Socket(socket) => socket_fetch(socket, &path, out).await,
        Client::Http {
            base,
            token,
            client,
        } => {
            let url = base.join(&path)?;
            let mut response = client
                .get(url.clone())
                .bearer_auth(token)
                .send()
                .await
                .with_context(|| format!("cannot reach {url}"))?;
            let status = response.status();
            if !status.is_success() {
                let body = response.bytes().await.unwrap_or_default();
                bail!(refusal(status, &body));
            }
            while let Some(chunk) = response.chunk().await? {
                out.write_all(&chunk)?;
            }
            Ok(())
        }
    }
}

/// `GET path` over the Unix socket `socket`, the body written to `out`.
async fn socket_fetch(socket: &Path, path: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| {
            format!(
                "the ledger is in use, but the running driftwarden's socket {} does not answer",
                socket.display()
            )
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("cannot talk to the running driftwarden")?;
    tokio::spawn(connection);
    let request = axum::http::Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::HOST, "localhost")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let bytes = body.collect().await?.to_bytes();
        bail!(refusal(status, &bytes));
    }
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            out.write_all(&data)?;
        }
    }
    Ok(())
}

/// What the running Driftwarden said when it refused.
fn refusal(status: StatusCode, body: &[u8]) -> String {
    let error = serde_json::from_slice::<ErrorView>(body)
        .map(|e| match e.field {
            Some(field) => format!("{field}: {}", e.error),
            None => e.error,
        })
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    format!("the running driftwarden answered {status}: {error}")
}
