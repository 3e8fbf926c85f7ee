//! The server over real TLS sockets on 127.0.0.1, with certificates made
//! by rcgen.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::ClientConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::*;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// A CA, a server certificate for `localhost` signed by it, and files.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = ca("driftwarden test CA");
        let server_key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = params.signed_by(&server_key, &ca).expect("server cert");
        let pki = Pki { dir, ca };
        pki.write("server.pem", &server.pem());
        pki.write("server-key.pem", &server_key.serialize_pem());
        pki.write("ca.pem", &pki.ca.pem());
        pki.write(
            "tokens",
            &format!(
                "# the apiserver\n\n  {TOKEN}  \n# old one\nfedcba9876543210fedcba9876543210\n"
            ),
        );
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("file written");
        path
    }

    fn settings(&self, auth: WebhookAuth) -> WebhookServer {
        WebhookServer {
            listen: "127.0.0.1:0".parse().expect("address"),
            tls: TlsFiles {
                cert_file: self.path("server.pem"),
                key_file: self.path("server-key.pem"),
            },
            auth,
        }
    }

    fn bearer(&self) -> WebhookServer {
        self.settings(WebhookAuth::BearerToken {
            token_file: self.path("tokens"),
        })
    }

    fn client_certificate(&self) -> WebhookServer {
        self.settings(WebhookAuth::ClientCertificate {
            ca_file: self.path("ca.pem"),
        })
    }

    /// A client trusting the CA, with no certificate of its own.
    fn client(&self) -> ClientConfig {
        self.client_builder().with_no_client_auth()
    }

    /// A client presenting a certificate signed by `issuer`.
    fn client_with_cert_of(&self, issuer: &CertifiedIssuer<'static, KeyPair>) -> ClientConfig {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, issuer).expect("client cert");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        self.client_builder()
            .with_client_auth_cert(vec![cert.der().clone()], key)
            .expect("client cert fits its key")
    }

    fn client_builder(
        &self,
    ) -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("CA added");
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

fn write_batch() -> String {
    json!({
        "kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {},
        "items": [{
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
            "auditID": "a-1", "stage": "ResponseComplete", "verb": "create",
            "requestURI": "/api/v1/namespaces/a/configmaps",
            "user": {"username": "alice", "groups": ["system:authenticated"]},
            "objectRef": {"resource": "configmaps", "namespace": "a", "name": "cfg", "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": 201},
            "responseObject": {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "cfg", "namespace": "a", "uid": "u-1", "resourceVersion": "5"}},
            "requestReceivedTimestamp": "2026-01-02T03:04:04Z",
            "stageTimestamp": "2026-01-02T03:04:05Z"
        }]
    })
    .to_string()
}

/// POSTs `body` to `/audit` over TLS, as the apiserver's webhook does.
async fn post(
    server: &RunningWebhook,
    client: ClientConfig,
    authorization: Option<&str>,
    body: String,
) -> anyhow::Result<(StatusCode, String)> {
    let tcp = TcpStream::connect(server.local_addr()).await?;
    let tls = TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await
        .context("TLS handshake")?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let mut request = Request::post("/audit")
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(authorization) = authorization {
        request = request.header(header::AUTHORIZATION, authorization);
    }
    let response = sender
        .send_request(request.body(Body::from(body))?)
        .await
        .context("request")?;
    let status = response.status();
    let bytes = axum::body::to_bytes(Body::new(response.into_body()), 1 << 20).await?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

/// Waits up to 5 s for `done`: a refusal in the handshake is counted by the
/// server after the client has seen it fail.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn start(settings: WebhookServer) -> (RunningWebhook, mpsc::Receiver<AuditRecord>) {
    let (tx, rx) = mpsc::channel(16);
    let server = serve_audit_webhook(settings, "prod", tx)
        .await
        .expect("server starts");
    (server, rx)
}

#[tokio::test]
async fn authenticated_batch_reaches_the_sink() {
    let pki = Pki::new();
    let (server, mut rx) = start(pki.bearer()).await;
    assert_ne!(server.local_addr().port(), 0);
    let (status, text) = post(
        &server,
        pki.client(),
        bearer(TOKEN).as_deref(),
        write_batch(),
    )
    .await
    .expect("request answered");
    assert_eq!(status, StatusCode::OK, "{text}");
    let record = rx.recv().await.expect("record forwarded");
    assert_eq!(record.audit_id, "a-1");
    assert_eq!(record.cluster, "prod");
    let counters = server.counters();
    assert_eq!(
        (
            counters.refused(),
            counters.accepted_batches(),
            counters.records()
        ),
        (0, 1, 1)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn every_token_of_the_file_is_accepted_and_the_scheme_is_case_insensitive() {
    let pki = Pki::new();
    let (server, _rx) = start(pki.bearer()).await;
    for authorization in [
        "bearer 0123456789abcdef0123456789abcdef",
        "Bearer fedcba9876543210fedcba9876543210",
    ] {
        let (status, text) = post(&server, pki.client(), Some(authorization), write_batch())
            .await
            .expect("request answered");
        assert_eq!(status, StatusCode::OK, "{text}");
    }
    assert_eq!(server.counters().accepted_batches(), 2);
}

#[tokio::test]
async fn request_without_a_token_gets_401_and_is_counted() {
    let pki = Pki::new();
    let (server, mut rx) = start(pki.bearer()).await;
    let (status, _) = post(&server, pki.client(), None, write_batch())
        .await
        .expect("request answered");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(server.counters().refused(), 1);
    assert_eq!(server.counters().accepted_batches(), 0);
    assert!(rx.try_recv().is_err(), "nothing forwarded");
}

#[tokio::test]
async fn wrong_or_malformed_tokens_get_401() {
    let pki = Pki::new();
    let (server, mut rx) = start(pki.bearer()).await;
    let wrong = [
        format!("Bearer {TOKEN}x"),
        format!("Bearer {}", &TOKEN[1..]),
        "Bearer ".to_owned(),
        format!("Basic {TOKEN}"),
        TOKEN.to_owned(),
    ];
    for authorization in &wrong {
        let (status, _) = post(&server, pki.client(), Some(authorization), write_batch())
            .await
            .expect("request answered");
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization}");
    }
    assert_eq!(server.counters().refused(), wrong.len() as u64);
    assert!(rx.try_recv().is_err(), "nothing forwarded");
}

#[tokio::test]
async fn unauthenticated_requests_cannot_probe_paths() {
    let pki = Pki::new();
    let (server, _rx) = start(pki.bearer()).await;
    let tcp = TcpStream::connect(server.local_addr())
        .await
        .expect("connects");
    let tls = TlsConnector::from(Arc::new(pki.client()))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP");
    tokio::spawn(connection);
    let request = Request::get("/elsewhere")
        .header(header::HOST, "localhost")
        .body(Body::empty())
        .expect("request");
    let response = sender.send_request(request).await.expect("answered");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers().get(header::WWW_AUTHENTICATE),
        Some(&HeaderValue::from_static("Bearer"))
    );
    assert_eq!(
        response.headers().get(header::CONNECTION),
        Some(&HeaderValue::from_static("close"))
    );
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_refused() {
    let pki = Pki::new();
    let (server, mut rx) = start(pki.bearer()).await;
    let mut tcp = TcpStream::connect(server.local_addr())
        .await
        .expect("connects");
    let body = write_batch();
    let request = format!(
        "POST /audit HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.expect("sent");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    eventually("the refusal to be counted", || {
        server.counters().refused() == 1
    })
    .await;
    assert!(rx.try_recv().is_err(), "nothing forwarded");
}

#[tokio::test]
async fn a_connection_closed_before_tls_is_not_a_refusal() {
    let pki = Pki::new();
    let (server, _rx) = start(pki.bearer()).await;
    drop(
        TcpStream::connect(server.local_addr())
            .await
            .expect("connects"),
    );
    let (status, _) = post(
        &server,
        pki.client(),
        bearer(TOKEN).as_deref(),
        write_batch(),
    )
    .await
    .expect("request answered");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.counters().refused(), 0);
}

#[tokio::test]
async fn client_with_a_certificate_of_the_ca_is_accepted() {
    let pki = Pki::new();
    let (server, mut rx) = start(pki.client_certificate()).await;
    let client = pki.client_with_cert_of(&pki.ca);
    let (status, text) = post(&server, client, None, write_batch())
        .await
        .expect("request answered");
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(rx.recv().await.expect("forwarded").audit_id, "a-1");
    assert_eq!(server.counters().refused(), 0);
}

#[tokio::test]
async fn client_without_a_certificate_is_refused_in_the_handshake() {
    let pki = Pki::new();
    let (server, mut rx) = start(pki.client_certificate()).await;
    // The token is of no use: this server takes certificates only.
    let result = post(
        &server,
        pki.client(),
        bearer(TOKEN).as_deref(),
        write_batch(),
    )
    .await;
    assert!(result.is_err(), "{result:?}");
    eventually("the refusal to be counted", || {
        server.counters().refused() == 1
    })
    .await;
    assert!(rx.try_recv().is_err(), "nothing forwarded");
}

#[tokio::test]
async fn client_with_a_certificate_of_another_ca_is_refused() {
    let pki = Pki::new();
    let (server, mut rx) = start(pki.client_certificate()).await;
    let client = pki.client_with_cert_of(&ca("another CA"));
    let result = post(&server, client, None, write_batch()).await;
    assert!(result.is_err(), "{result:?}");
    eventually("the refusal to be counted", || {
        server.counters().refused() == 1
    })
    .await;
    assert!(rx.try_recv().is_err(), "nothing forwarded");
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let pki = Pki::new();
    let (server, _rx) = start(pki.bearer()).await;
    let addr = server.local_addr();
    server.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_taken_port_is_a_bind_error() {
    let pki = Pki::new();
    let (server, _rx) = start(pki.bearer()).await;
    let mut settings = pki.bearer();
    settings.listen = server.local_addr();
    let (tx, _rx2) = mpsc::channel(1);
    let err = serve_audit_webhook(settings, "prod", tx)
        .await
        .expect_err("port taken");
    assert!(matches!(err, Error::Bind { .. }), "{err:?}");
}

fn check_error(settings: &WebhookServer) -> Error {
    settings.check().expect_err("settings must be rejected")
}

#[test]
fn good_files_pass_the_check() {
    let pki = Pki::new();
    pki.bearer().check().expect("bearer settings");
    pki.client_certificate()
        .check()
        .expect("client certificate settings");
}

#[test]
fn unreadable_and_unparseable_tls_files_name_the_file() {
    let pki = Pki::new();
    let mut settings = pki.bearer();
    settings.tls.cert_file = pki.path("missing.pem");
    let err = check_error(&settings);
    assert!(
        matches!(
            err,
            Error::Read {
                file: WebhookFile::Certificate,
                ..
            }
        ),
        "{err:?}"
    );

    settings.tls.cert_file = pki.write("garbage.pem", "not a certificate\n");
    let err = check_error(&settings);
    assert_eq!(err.file(), Some(WebhookFile::Certificate), "{err}");
    assert!(err.to_string().contains("BEGIN CERTIFICATE"), "{err}");

    settings.tls.cert_file = pki.write(
        "bad-der.pem",
        "-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n",
    );
    let err = check_error(&settings);
    assert_eq!(err.file(), Some(WebhookFile::Certificate), "{err}");

    let mut settings = pki.bearer();
    settings.tls.key_file = pki.path("server.pem");
    let err = check_error(&settings);
    assert_eq!(err.file(), Some(WebhookFile::Key), "{err}");
    assert!(err.to_string().contains("PRIVATE KEY"), "{err}");

    settings.tls.key_file = pki.write(
        "other-key.pem",
        &KeyPair::generate().expect("key").serialize_pem(),
    );
    let err = check_error(&settings);
    assert_eq!(err.file(), Some(WebhookFile::Key), "{err}");
    assert!(err.to_string().contains("not the key of"), "{err}");
}

#[test]
fn token_files_without_usable_tokens_are_rejected() {
    let pki = Pki::new();
    let cases = [
        ("", "holds no token"),
        ("# only a comment\n\n", "holds no token"),
        ("short\n", "shorter than 16"),
        ("0123456789abcdef 0123456789abcdef\n", "one word"),
    ];
    for (text, expected) in cases {
        let settings = pki.settings(WebhookAuth::BearerToken {
            token_file: pki.write("bad-tokens", text),
        });
        let err = check_error(&settings);
        assert_eq!(err.file(), Some(WebhookFile::Tokens), "{err}");
        assert!(
            err.to_string().contains(expected),
            "{err} should say {expected}"
        );
        assert!(
            !err.to_string().contains("0123456789abcdef"),
            "{err} quotes the token"
        );
    }
    let settings = pki.settings(WebhookAuth::BearerToken {
        token_file: pki.path("no-such-tokens"),
    });
    assert!(matches!(
        check_error(&settings),
        Error::Read {
            file: WebhookFile::Tokens,
            ..
        }
    ));
}

#[test]
fn ca_files_must_hold_ca_certificates() {
    let pki = Pki::new();
    for text in [
        "",
        "-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n",
    ] {
        let settings = pki.settings(WebhookAuth::ClientCertificate {
            ca_file: pki.write("bad-ca.pem", text),
        });
        let err = check_error(&settings);
        assert_eq!(err.file(), Some(WebhookFile::ClientCa), "{err}");
    }
}
