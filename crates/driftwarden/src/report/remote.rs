//! A report made by the running Driftwarden (it holds the ledger): `GET
//! /v1/report` over its Unix socket or its HTTP API, the body copied to the
//! output as it arrives.

use std::io::Write;

use super::{Format, Scope};
use crate::api::client::Client;

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
/// in `format`, and writes it to `out` as it arrives.
pub async fn fetch(
    client: &Client,
    scope: &Scope,
    format: Format,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut body = client.get_stream(&path(scope, format)).await?;
    while let Some(chunk) = body.chunk().await? {
        out.write_all(&chunk)?;
    }
    Ok(())
}
