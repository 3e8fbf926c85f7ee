//! The command line's way into a running Driftwarden: its Unix socket in
//! `data_dir`, or its HTTP API with a token.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use axum::http::{Method, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::views::ErrorView;

/// Where the running process is reached.
#[derive(Debug, Clone)]
pub enum Client {
    /// `data_dir/api.sock`: the caller is known by its uid.
    Socket(PathBuf),
    /// The HTTP API at `base`, with a bearer token.
    Http {
        /// E.g. `https://driftwarden.example:8080`.
        base: reqwest::Url,
        /// The token sent.
        token: String,
        /// The client (with the CA given, for HTTPS).
        client: reqwest::Client,
    },
}

impl Client {
    /// The API at `server`, with the token in `token_file` and, for HTTPS,
    /// the CA certificates in `ca_file`.
    pub fn http(server: &str, token_file: &Path, ca_file: Option<&Path>) -> anyhow::Result<Client> {
        let base = reqwest::Url::parse(server)
            .with_context(|| format!("--server `{server}` is not a URL, e.g. https://host:8080"))?;
        let token = std::fs::read_to_string(token_file)
            .with_context(|| format!("cannot read --token-file {}", token_file.display()))?
            .trim()
            .to_owned();
        let mut builder = reqwest::Client::builder().use_rustls_tls();
        match (base.scheme(), ca_file) {
            ("https", Some(ca)) => {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("cannot read --ca-file {}", ca.display()))?;
                for cert in reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                    format!("--ca-file {} holds no PEM certificate", ca.display())
                })? {
                    builder = builder.add_root_certificate(cert);
                }
            }
            ("https", None) => bail!("--server {server} is HTTPS: give its CA with --ca-file"),
            ("http", _) => {}
            (scheme, _) => bail!("--server {server}: `{scheme}` is not http or https"),
        }
        let client = builder.build().context("cannot build an HTTP client")?;
        Ok(Client::Http {
            base,
            token,
            client,
        })
    }

    /// GETs `path` (with its query).
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    /// Sends `body` to `path` with `method`.
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        self.call(method, path, Some(body)).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        let body = match body {
            Some(body) => serde_json::to_vec(body)?,
            None => Vec::new(),
        };
        let (status, bytes) = match self {
            Client::Socket(socket) => unix_call(socket, method, path, body).await?,
            Client::Http {
                base,
                token,
                client,
            } => {
                let url = base.join(path)?;
                let response = client
                    .request(method, url.clone())
                    .bearer_auth(token)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                    .with_context(|| format!("cannot reach {url}"))?;
                let status = response.status();
                (status, response.bytes().await?)
            }
        };
        if !status.is_success() {
            let error = serde_json::from_slice::<ErrorView>(&bytes)
                .map(|e| match e.field {
                    Some(field) => format!("{field}: {}", e.error),
                    None => e.error,
                })
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            bail!("the running driftwarden answered {status}: {error}");
        }
        serde_json::from_slice(&bytes).with_context(|| {
            format!("the running driftwarden's answer to {path} is not understood")
        })
    }
}

/// One request over the Unix socket `socket`.
async fn unix_call(
    socket: &Path,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<(StatusCode, Bytes)> {
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
        .method(method)
        .uri(path)
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}
