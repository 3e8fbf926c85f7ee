//! Serving the API: on TCP (HTTPS when `api.tls` is set) for tokens, and
//! on `data_dir/api.sock` for local callers known by their uid.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinSet;

use super::{ApiError, Caller};
use crate::config::AuditWebhookTls;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// The server side of TLS from `tls`'s files; the error names the file at
/// fault (`cert_file` or `key_file`).
pub fn tls_config(
    tls: &AuditWebhookTls,
) -> Result<rustls::ServerConfig, (&'static str, anyhow::Error)> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|certs| certs.collect())
        .map_err(|err| {
            let err = anyhow::anyhow!(
                "cannot read certificates from {}: {err}",
                tls.cert_file.display()
            );
            ("cert_file", err)
        })?;
    if certs.is_empty() {
        let err = anyhow::anyhow!("{} holds no PEM certificate", tls.cert_file.display());
        return Err(("cert_file", err));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|err| {
        let err = anyhow::anyhow!(
            "cannot read a private key from {}: {err}",
            tls.key_file.display()
        );
        ("key_file", err)
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|err| {
            (
                "key_file",
                anyhow::anyhow!("the key does not fit the certificate: {err}"),
            )
        })
}

/// Serves `router` on `listen` (HTTPS with `tls`), in `tasks`. Returns the
/// address bound (port 0 picks one).
pub async fn tcp(
    router: Router,
    listen: SocketAddr,
    tls: Option<&AuditWebhookTls>,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on api.listen {listen}"))?;
    let local = listener.local_addr()?;
    let acceptor = match tls {
        Some(tls) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            tls_config(tls).map_err(|(file, err)| err.context(format!("api.tls.{file}")))?,
        ))),
        None => None,
    };
    tasks.spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "API: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let router = router.clone();
            let acceptor = acceptor.clone();
            connections.spawn(async move {
                match acceptor {
                    None => serve_connection(stream, router).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(stream)) => serve_connection(stream, router).await,
                            Ok(Err(err)) => {
                                tracing::warn!(%peer, error = %err, "API: TLS handshake failed");
                            }
                            Err(_) => tracing::warn!(%peer, "API: TLS handshake timed out"),
                        }
                    }
                }
            });
            while connections.try_join_next().is_some() {}
        }
    });
    Ok(local)
}

/// Serves HTTP/1.1 on one connection.
async fn serve_connection<S>(stream: S, router: Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(err) = served {
        tracing::debug!(error = %err, "API connection ended");
    }
}

/// The uid at the other end of a Unix socket connection.
#[derive(Debug, Clone, Copy)]
struct Peer(Option<u32>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, UnixListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, UnixListener>) -> Self {
        Peer(stream.io().peer_cred().ok().map(|cred| cred.uid()))
    }
}

/// Serves `router` on the Unix socket `path` (mode 0600), in `tasks`;
/// callers are known by their uid and may do what an operator may.
pub fn unix(
    router: Router,
    path: &Path,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    // A socket left by a process that stopped; one that runs holds the
    // ledger, so this process would not have got here.
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(err)
                .with_context(|| format!("cannot remove the old socket {}", path.display()));
        }
        _ => {}
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} private", path.display()))?;
    let router = router
        .layer(axum::middleware::from_fn(local_caller))
        .into_make_service_with_connect_info::<Peer>();
    tasks.spawn(async move {
        axum::serve(listener, router)
            .await
            .context("the API socket stopped")
    });
    Ok(())
}

/// Names a Unix-socket caller by the uid the kernel gives.
async fn local_caller(
    ConnectInfo(Peer(uid)): ConnectInfo<Peer>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(uid) = uid else {
        return ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "the socket's peer credentials are unknown",
        )
        .into_response();
    };
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|user| user.name);
    request.extensions_mut().insert(Caller::Local { uid, user });
    next.run(request).await
}
