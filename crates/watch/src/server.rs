//! The audit webhook server: TLS, authentication and counters around
//! [`audit_router`].
//!
//! ```text
//!          TCP ──TLS (rustls, ring) ──▶ bearer token? ──▶ audit_router ──▶ sink
//!                 │ handshake fails       │ missing or unknown: 401
//!                 ▼                       ▼
//!        refused + warn log (peer address and reason, never the token)
//! ```
//!
//! Every request is authenticated by exactly one method: a bearer token from
//! a token file, or a client certificate chaining to a CA file (checked in
//! the TLS handshake, which fails without one). Nothing is served in plain
//! text. The files are read once, when the server starts.
//!
//! [`audit_router`]: crate::audit_router

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use model::AuditRecord;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::webhook::counted_router;

/// Connections served at once; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client may take from connecting to the end of the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to send a request's headers, and how long an
/// idle connection is kept open.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`RunningWebhook::shutdown`] lets requests in flight finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The shortest bearer token accepted in a token file.
pub const MIN_TOKEN_LEN: usize = 16;

/// Where and how the audit webhook is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookServer {
    /// The address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The server certificate and key.
    pub tls: TlsFiles,
    /// How clients are authenticated.
    pub auth: WebhookAuth,
}

/// The server's PEM certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the first certificate.
    pub key_file: PathBuf,
}

/// How the webhook authenticates clients: exactly one method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookAuth {
    /// `Authorization: Bearer <token>` with a token of this file: one per
    /// line, blank lines and lines starting with `#` ignored.
    BearerToken {
        /// The token file.
        token_file: PathBuf,
    },
    /// A client certificate chaining to a CA of this PEM file.
    ClientCertificate {
        /// The CA file.
        ca_file: PathBuf,
    },
}

/// Which file of [`WebhookServer`] an [`Error`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFile {
    /// [`TlsFiles::cert_file`].
    Certificate,
    /// [`TlsFiles::key_file`].
    Key,
    /// The token file of [`WebhookAuth::BearerToken`].
    Tokens,
    /// The CA file of [`WebhookAuth::ClientCertificate`].
    ClientCa,
}

impl fmt::Display for WebhookFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WebhookFile::Certificate => "TLS certificate file",
            WebhookFile::Key => "TLS key file",
            WebhookFile::Tokens => "token file",
            WebhookFile::ClientCa => "client CA file",
        })
    }
}

/// The audit webhook cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file cannot be read: check the path and its permissions.
    #[error("cannot read the {file} {path}")]
    Read {
        /// Which file.
        file: WebhookFile,
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is read but unusable; `problem` says what to put there.
    #[error("the {file} {path} {problem}")]
    Invalid {
        /// Which file.
        file: WebhookFile,
        /// Its path.
        path: PathBuf,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The listen address cannot be bound: another process has it, or the
    /// port needs privileges.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The file this error is about, if any.
    pub fn file(&self) -> Option<WebhookFile> {
        match self {
            Error::Read { file, .. } | Error::Invalid { file, .. } => Some(*file),
            Error::Bind { .. } => None,
        }
    }
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Counters of the audit webhook, cheap to clone and read (atomics), for
/// metrics.
#[derive(Debug, Clone, Default)]
pub struct WebhookCounters(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    refused: AtomicU64,
    accepted_batches: AtomicU64,
    rejected_batches: AtomicU64,
    records: AtomicU64,
}

impl WebhookCounters {
    /// Connections and requests refused: failed or timed-out TLS handshakes
    /// (plain HTTP, no or a foreign client certificate) and requests without a
    /// known bearer token.
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }

    /// Authenticated batches whose records were all forwarded.
    pub fn accepted_batches(&self) -> u64 {
        self.0.accepted_batches.load(Ordering::Relaxed)
    }

    /// Authenticated bodies that are no audit `EventList` (answered `400`).
    pub fn rejected_batches(&self) -> u64 {
        self.0.rejected_batches.load(Ordering::Relaxed)
    }

    /// Audit records forwarded to the sink.
    pub fn records(&self) -> u64 {
        self.0.records.load(Ordering::Relaxed)
    }

    fn add_refused(&self) {
        self.0.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_accepted_batch(&self) {
        self.0.accepted_batches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_rejected_batch(&self) {
        self.0.rejected_batches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_record(&self) {
        self.0.records.fetch_add(1, Ordering::Relaxed);
    }
}

/// A running audit webhook server. Dropping it stops the server at once;
/// [`shutdown`](Self::shutdown) lets requests in flight finish first.
#[derive(Debug)]
pub struct RunningWebhook {
    local_addr: SocketAddr,
    counters: WebhookCounters,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningWebhook {
    /// The address the server listens on (the picked port when it was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's counters; clone them to read them elsewhere.
    pub fn counters(&self) -> &WebhookCounters {
        &self.counters
    }

    /// Stops accepting connections, lets requests in flight finish for up
    /// to [`SHUTDOWN_GRACE`], then closes every connection.
    pub async fn shutdown(self) {
        let RunningWebhook { stop, task, .. } = self;
        stop.send_replace(true);
        if let Err(err) = task.await {
            tracing::error!(error = %err, "audit webhook server task failed");
        }
    }
}

impl WebhookServer {
    /// Reads and checks every file as [`serve_audit_webhook`] does, without
    /// listening: the certificate parses and fits the key, the token file
    /// holds tokens, the CA file holds CA certificates.
    pub fn check(&self) -> Result<()> {
        self.load().map(drop)
    }

    fn load(&self) -> Result<(Arc<ServerConfig>, Option<Tokens>)> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (verifier, tokens) = match &self.auth {
            WebhookAuth::BearerToken { token_file } => (
                WebPkiClientVerifier::no_client_auth(),
                Some(Tokens::load(token_file)?),
            ),
            WebhookAuth::ClientCertificate { ca_file } => {
                (client_verifier(ca_file, provider.clone())?, None)
            }
        };
        let certs = read_certificates(WebhookFile::Certificate, &self.tls.cert_file)?;
        let key = read_key(&self.tls.key_file)?;
        let cert_file = &self.tls.cert_file;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| Error::Invalid {
                file: WebhookFile::Key,
                path: self.tls.key_file.clone(),
                problem: format!("cannot be used: {err}"),
            })?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|err| match err {
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    Error::Invalid {
                        file: WebhookFile::Certificate,
                        path: cert_file.clone(),
                        problem: format!(
                            "does not hold a usable X.509 certificate ({err}): put the server's \
                             PEM certificate first"
                        ),
                    }
                }
                rustls::Error::InconsistentKeys(_) => Error::Invalid {
                    file: WebhookFile::Key,
                    path: self.tls.key_file.clone(),
                    problem: format!(
                        "is not the key of the first certificate of {} ({err}): use the key \
                         the certificate was issued for",
                        cert_file.display()
                    ),
                },
                err => Error::Invalid {
                    file: WebhookFile::Key,
                    path: self.tls.key_file.clone(),
                    problem: format!(
                        "holds a key that cannot be used ({err}): use an RSA, ECDSA or Ed25519 key"
                    ),
                },
            })?;
        // HTTP/1.1 only: the apiserver's client falls back to it, and the
        // server has no HTTP/2 code to attack.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok((Arc::new(config), tokens))
    }
}

/// Serves [`audit_router`](crate::audit_router) on `settings.listen` over
/// TLS, authenticating every request by `settings.auth`, until the returned
/// handle is shut down or dropped.
///
/// Reads the files of `settings` (as [`WebhookServer::check`] does) and binds
/// before it returns, so a bad file or a taken port is an error here.
pub async fn serve_audit_webhook(
    settings: WebhookServer,
    cluster: impl Into<String>,
    sink: mpsc::Sender<AuditRecord>,
) -> Result<RunningWebhook> {
    // A few small files, read once at start-up.
    let (tls, tokens) = settings.load()?;
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: settings.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: settings.listen,
        source,
    })?;
    let counters = WebhookCounters::default();
    let server = Arc::new(Server {
        tls: TlsAcceptor::from(tls),
        tokens,
        router: counted_router(cluster.into(), sink, counters.clone()),
        counters: counters.clone(),
    });
    let (stop, stopped) = watch::channel(false);
    let method = match settings.auth {
        WebhookAuth::BearerToken { .. } => "bearer_token",
        WebhookAuth::ClientCertificate { .. } => "client_certificate",
    };
    tracing::info!(addr = %local_addr, auth = method, "audit webhook listening (TLS)");
    let task = tokio::spawn(accept_loop(listener, server, stopped));
    Ok(RunningWebhook {
        local_addr,
        counters,
        stop,
        task,
    })
}

struct Server {
    tls: TlsAcceptor,
    /// `None` when clients are authenticated by their certificate.
    tokens: Option<Tokens>,
    router: Router,
    counters: WebhookCounters,
}

/// Resolves once the server is asked to stop (or its handle is dropped).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    // An error means the sender, held by the handle, is gone: stop too.
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn accept_loop(
    listener: TcpListener,
    server: Arc<Server>,
    mut stopped: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            () = stop_requested(&mut stopped) => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = stop_requested(&mut stopped) => break,
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((tcp, peer)) => {
                connections.spawn(serve_connection(
                    tcp,
                    peer,
                    server.clone(),
                    stopped.clone(),
                    permit,
                ));
            }
            Err(err) => {
                // Out of file descriptors and the like: wait, then go on.
                tracing::warn!(error = %err, "audit webhook cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "audit webhook connections still busy after the shutdown grace: closing them"
        );
    }
    connections.shutdown().await;
    tracing::info!("audit webhook stopped");
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    server: Arc<Server>,
    mut stopped: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = tcp.set_nodelay(true);
    let handshake = async {
        // A client that closes without sending a byte (a TCP probe) is not
        // refused, only gone.
        let mut first = [0_u8; 1];
        if tcp.peek(&mut first).await? == 0 {
            return Ok(None);
        }
        server.tls.accept(tcp).await.map(Some)
    };
    let outcome = tokio::select! {
        () = stop_requested(&mut stopped) => return,
        outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => outcome,
    };
    let stream = match outcome {
        Ok(Ok(Some(stream))) => stream,
        Ok(Ok(None)) => {
            tracing::debug!(peer = %peer, "audit webhook client closed before TLS");
            return;
        }
        Ok(Err(err)) => {
            server.refuse(peer, &format!("TLS handshake failed: {err}"));
            return;
        }
        Err(_) => {
            server.refuse(peer, "TLS handshake timed out");
            return;
        }
    };
    let service = {
        let server = server.clone();
        hyper::service::service_fn(move |request| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(server.handle(request, peer).await) }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop_requested(&mut stopped) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(peer = %peer, error = %err, "audit webhook connection ended with an error");
    }
}

impl Server {
    async fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        if let Some(tokens) = &self.tokens
            && let Err(reason) = tokens.check(request.headers())
        {
            self.refuse(peer, reason);
            return unauthorized(request.version());
        }
        match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    fn refuse(&self, peer: SocketAddr, reason: &str) {
        self.counters.add_refused();
        tracing::warn!(peer = %peer, reason, "audit webhook refused a client");
    }
}

/// `401` with a bearer challenge; on HTTP/1 the connection is closed after it.
fn unauthorized(version: Version) -> Response<Body> {
    let mut response = Response::new(Body::from("unauthorized\n"));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if version <= Version::HTTP_11 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// SHA-256 digests of the accepted bearer tokens; the tokens themselves are
/// not kept.
struct Tokens(Vec<[u8; 32]>);

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} digests)", self.0.len())
    }
}

impl Tokens {
    fn load(path: &Path) -> Result<Self> {
        let invalid = |problem: String| Error::Invalid {
            file: WebhookFile::Tokens,
            path: path.to_owned(),
            problem,
        };
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            file: WebhookFile::Tokens,
            path: path.to_owned(),
            source,
        })?;
        let text = String::from_utf8(bytes)
            .map_err(|_| invalid("is not UTF-8 text: write one token per line".into()))?;
        let mut digests = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let token = line.trim();
            if token.is_empty() || token.starts_with('#') {
                continue;
            }
            // Never quote the token: the error may end up in a log.
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(format!(
                    "line {}: a token is one word of printable ASCII; put each token on a line \
                     of its own",
                    i + 1
                )));
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(invalid(format!(
                    "line {}: the token is shorter than {MIN_TOKEN_LEN} characters: generate one \
                     with e.g. `openssl rand -hex 32`",
                    i + 1
                )));
            }
            digests.push(Sha256::digest(token.as_bytes()).into());
        }
        if digests.is_empty() {
            return Err(invalid(
                "holds no token: write one token per line (blank lines and `#` comments are \
                 ignored)"
                    .into(),
            ));
        }
        Ok(Tokens(digests))
    }

    /// `Ok` when the request carries one known bearer token, else the reason
    /// to refuse it (which never quotes the token).
    fn check(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let value = match (values.next(), values.next()) {
            (Some(value), None) => value,
            (None, _) => return Err("no Authorization header"),
            (Some(_), Some(_)) => return Err("several Authorization headers"),
        };
        let value = value.as_bytes();
        let token = match value.split_at_checked(7) {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"bearer ") => token.trim_ascii(),
            _ => return Err("Authorization is not a bearer token"),
        };
        // Every digest is compared, each in constant time, so neither the
        // token nor which one matched shows in the time taken.
        let digest: [u8; 32] = Sha256::digest(token).into();
        let known = self.0.iter().fold(subtle::Choice::from(0), |found, known| {
            found | known.ct_eq(&digest)
        });
        if bool::from(known) {
            Ok(())
        } else {
            Err("unknown bearer token")
        }
    }
}

fn read_file(file: WebhookFile, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read {
        file,
        path: path.to_owned(),
        source,
    })
}

fn read_certificates(file: WebhookFile, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read_file(file, path)?;
    let invalid = |problem: String| Error::Invalid {
        file,
        path: path.to_owned(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| invalid(format!("is not valid PEM ({err}): use PEM certificates")))?;
    if certs.is_empty() {
        return Err(invalid(
            "holds no `BEGIN CERTIFICATE` block: use PEM certificates".into(),
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = read_file(WebhookFile::Key, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|err| Error::Invalid {
        file: WebhookFile::Key,
        path: path.to_owned(),
        problem: format!(
            "holds no PEM private key ({err}): use a `BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` \
             or `BEGIN EC PRIVATE KEY` block"
        ),
    })
}

fn client_verifier(
    ca_file: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let invalid = |problem: String| Error::Invalid {
        file: WebhookFile::ClientCa,
        path: ca_file.to_owned(),
        problem,
    };
    let mut roots = RootCertStore::empty();
    for (i, cert) in read_certificates(WebhookFile::ClientCa, ca_file)?
        .into_iter()
        .enumerate()
    {
        roots.add(cert).map_err(|err| {
            invalid(format!(
                "certificate {} is not a usable CA certificate ({err})",
                i + 1
            ))
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|err| invalid(format!("cannot verify client certificates: {err}")))
}

#[cfg(test)]
mod tests;
