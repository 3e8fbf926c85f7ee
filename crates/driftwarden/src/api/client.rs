//! The command line's way into a running Driftwarden: its Unix socket in
//! `data_dir`, or its HTTP API with a token.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use axum::http::{Method, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
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

    /// GETs `path` (with its query) and hands back the body to be read as
    /// it arrives, for answers too large to hold (a report).
    pub async fn get_stream(&self, path: &str) -> anyhow::Result<Body> {
        self.request(Method::GET, path, None).await
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

    /// `method path` with a JSON body (empty when `body` is `None`), its
    /// JSON answer.
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
        let bytes = self
            .request(method, path, Some(body))
            .await?
            .bytes()
            .await?;
        serde_json::from_slice(&bytes).with_context(|| {
            format!("the running driftwarden's answer to {path} is not understood")
        })
    }

    /// `method path`, with `json` sent as `application/json` when given; the
    /// body of a successful answer, unread, or an error saying what the
    /// running process answered instead.
    async fn request(
        &self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
    ) -> anyhow::Result<Body> {
        let (status, body) = match self {
            Client::Socket(socket) => unix_request(socket, method, path, json).await?,
            Client::Http {
                base,
                token,
                client,
            } => {
                let url = base.join(path)?;
                let mut request = client.request(method, url.clone()).bearer_auth(token);
                if let Some(json) = json {
                    request = request
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(json);
                }
                let response = request
                    .send()
                    .await
                    .with_context(|| format!("cannot reach {url}"))?;
                (response.status(), Body::Http(response))
            }
        };
        if !status.is_success() {
            let bytes = body.bytes().await.unwrap_or_default();
            bail!(refusal(status, &bytes));
        }
        Ok(body)
    }
}

/// The body of an answer of the running process, read as it arrives.
#[derive(Debug)]
pub enum Body {
    /// Coming over the Unix socket.
    Socket(Incoming),
    /// Coming over HTTP.
    Http(reqwest::Response),
}

impl Body {
    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> anyhow::Result<Option<Bytes>> {
        match self {
            Body::Socket(body) => {
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame?.into_data() {
                        return Ok(Some(data));
                    }
                }
                Ok(None)
            }
            Body::Http(response) => Ok(response.chunk().await?),
        }
    }

    /// The whole body.
    pub async fn bytes(self) -> anyhow::Result<Bytes> {
        Ok(match self {
            Body::Socket(body) => body.collect().await?.to_bytes(),
            Body::Http(response) => response.bytes().await?,
        })
    }
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

/// `method path` over the Unix socket `socket`, with `json` sent as
/// `application/json` when given; the status and the body, unread.
async fn unix_request(
    socket: &Path,
    method: Method,
    path: &str,
    json: Option<Vec<u8>>,
) -> anyhow::Result<(StatusCode, Body)> {
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
    // The connection is driven until the body is read, then closes: the
    // sender, dropped on return, sends nothing more.
    tokio::spawn(connection);
    let mut request = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "localhost");
    if json.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request.body(Full::new(Bytes::from(json.unwrap_or_default())))?;
    let response = sender.send_request(request).await?;
    Ok((response.status(), Body::Socket(response.into_body())))
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::{get, post};
    use serde_json::{Value, json};

    use super::*;

    /// A body of many chunks, larger than one read.
    fn big() -> String {
        (0..20_000).map(|i| format!("line {i}\n")).collect()
    }

    /// A client of a small server on a Unix socket under `dir`: `/big`
    /// answers [`big`], `/echo` the JSON it is sent, `/refused` a 400.
    async fn socket_client(dir: &Path) -> Client {
        let path = dir.join("api.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("listen");
        let router = Router::new()
            .route("/big", get(|| async { big() }))
            .route(
                "/echo",
                post(|axum::Json(body): axum::Json<Value>| async move { axum::Json(body) }),
            )
            .route(
                "/refused",
                get(|| async {
                    let error = ErrorView {
                        error: "`soon` is not a time: use e.g. 7d".to_owned(),
                        field: Some("until".to_owned()),
                    };
                    (StatusCode::BAD_REQUEST, axum::Json(error))
                }),
            );
        tokio::spawn(async move { axum::serve(listener, router).await });
        Client::Socket(path)
    }

    #[tokio::test]
    async fn a_streamed_answer_arrives_whole_over_the_socket() {
        let dir = tempfile::tempdir().expect("dir");
        let client = socket_client(dir.path()).await;
        let mut body = client.get_stream("/big").await.expect("an answer");
        let mut got = Vec::new();
        while let Some(chunk) = body.chunk().await.expect("a chunk") {
            got.extend_from_slice(&chunk);
        }
        assert_eq!(String::from_utf8(got).expect("text"), big());
    }

    #[tokio::test]
    async fn json_is_sent_and_answered_over_the_socket() {
        let dir = tempfile::tempdir().expect("dir");
        let client = socket_client(dir.path()).await;
        let sent = json!({ "reason": "JIRA-1" });
        let answer: Value = client
            .send(Method::POST, "/echo", &sent)
            .await
            .expect("an answer");
        assert_eq!(answer, sent);
    }

    #[tokio::test]
    async fn a_refusal_names_the_status_and_the_field() {
        let dir = tempfile::tempdir().expect("dir");
        let client = socket_client(dir.path()).await;
        for err in [
            client.get_stream("/refused").await.err(),
            client.get::<Value>("/refused").await.err(),
        ] {
            let err = format!("{:#}", err.expect("a refusal"));
            assert_eq!(
                err,
                "the running driftwarden answered 400 Bad Request: until: `soon` is not a time: use e.g. 7d"
            );
        }
    }

    #[tokio::test]
    async fn a_silent_socket_says_the_ledger_is_in_use() {
        let dir = tempfile::tempdir().expect("dir");
        let client = Client::Socket(dir.path().join("api.sock"));
        let err = client.get_stream("/big").await.expect_err("no server");
        assert!(
            format!("{err:#}").contains("the ledger is in use"),
            "{err:#}"
        );
    }
}
