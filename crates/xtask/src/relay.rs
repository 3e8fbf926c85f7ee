//! The audit relay: kube-apiserver's audit webhook posts `EventList` batches
//! here, over HTTPS with a bearer token, as it would to Driftwarden. Each
//! batch is
//! - appended, one event per line, to a JSON-lines file in one write, so any
//!   number of concurrent tests can read the same stream (readers ignore a
//!   last line without its newline: it is still being written);
//! - forwarded unchanged to every receiver registered by a JSON file in the
//!   receivers folder, each from its own queue, so a slow or dead receiver
//!   never holds up the apiserver or the other receivers.
//!
//! ```text
//!                   HTTPS + Bearer                ┌─append─► audit/events.jsonl
//! kube-apiserver ──POST EventList──► audit-relay ─┤
//!                                                 └─queue per receiver─► POST the same body to
//!                                                   each audit/receivers/*.json {url, token, ca_file}
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The largest batch accepted: 400 events at RequestResponse level can be
/// several megabytes.
const MAX_BATCH_BYTES: usize = 256 * 1024 * 1024;

/// Batches waiting for one receiver; beyond this, new batches for it are
/// dropped (and the drop logged) until it catches up.
const RECEIVER_QUEUE: usize = 1024;

/// Attempts to deliver one batch to one receiver.
const MAX_ATTEMPTS: u32 = 5;

/// The wait after the first failed attempt; it doubles after each one
/// (50, 100, 200, 400 ms).
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// How long one delivery attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The relay's command line (`cargo xtask audit-relay`, started by `env up`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Loopback address to listen on (HTTPS).
    #[arg(long)]
    listen: String,
    /// JSON-lines file the events are appended to.
    #[arg(long)]
    out: PathBuf,
    /// Serving certificate (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Serving key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// File holding the bearer token requests must carry.
    #[arg(long)]
    token_file: PathBuf,
    /// Folder of receiver files (`*.json`), read again for every batch.
    #[arg(long)]
    receivers: PathBuf,
    /// CA certificate (PEM) trusted for `https://` receivers without their
    /// own `ca_file`.
    #[arg(long)]
    ca: PathBuf,
}

/// Runs the relay until it is killed.
pub fn run(args: &Args) -> Result<()> {
    if let Some(parent) = args.out.parent() {
        crate::paths::ensure_dir(parent)?;
    }
    crate::paths::ensure_dir(&args.receivers)?;
    let events = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("opening {}", args.out.display()))?;
    let token = crate::paths::read(&args.token_file)?.trim().to_string();
    if token.is_empty() {
        bail!(
            "{} is empty: run `cargo xtask env down && cargo xtask env up` to write a new token",
            args.token_file.display()
        );
    }
    let tls = server_config(&args.cert, &args.key)?;
    let relay = Arc::new(Relay {
        token,
        events: Mutex::new(events),
        fanout: Fanout {
            dir: args.receivers.clone(),
            default_ca: std::fs::read(&args.ca)
                .with_context(|| format!("reading {}", args.ca.display()))?,
            receivers: Mutex::new(BTreeMap::new()),
        },
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(&args.listen, tls, relay))
}

/// What every request handler shares.
#[derive(Debug)]
struct Relay {
    /// The bearer token kube-apiserver sends.
    token: String,
    /// The JSON-lines file.
    events: Mutex<File>,
    /// The registered receivers.
    fanout: Fanout,
}

async fn serve(listen: &str, tls: rustls::ServerConfig, relay: Arc<Relay>) -> Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/", post(receive))
        .route("/{*path}", post(receive))
        .with_state(relay);
    let tcp = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let local = tcp.local_addr()?;
    let (accepted, queue) = mpsc::channel(64);
    tokio::spawn(accept_tls(tcp, TlsAcceptor::from(Arc::new(tls)), accepted));
    let listener = TlsListener { local, queue }.tap_io(|_| ());
    println!("audit relay listening on https://{local}");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .context("serving")
}

/// The relay's TLS settings: its certificate, HTTP/1.1, ring.
fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("reading certificates from {}", cert.display()))?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading a private key from {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .with_context(|| format!("using {} with {}", cert.display(), key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts TCP connections and completes each TLS handshake in its own task
/// (a slow client never holds up the others); hands finished ones over.
async fn accept_tls(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    accepted: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(connection) => connection,
            Err(err) => {
                eprintln!("accepting a connection failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let accepted = accepted.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = accepted.send((tls, peer)).await;
                }
                Ok(Err(err)) => eprintln!("TLS handshake with {peer} failed: {err}"),
                Err(_) => eprintln!(
                    "TLS handshake with {peer} took more than {}s: closed",
                    HANDSHAKE_TIMEOUT.as_secs()
                ),
            }
        });
    }
}

/// Connections whose TLS handshake is done.
#[derive(Debug)]
struct TlsListener {
    local: SocketAddr,
    queue: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.queue.recv().await {
            Some(connection) => connection,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Checks the token, appends the events of one batch and queues the batch
/// for every receiver. Answers 401 without a valid bearer token (before
/// reading the body), 400 to a body that is not an `EventList`, 500 when the
/// file cannot be written.
async fn receive(
    State(relay): State<Arc<Relay>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> (StatusCode, &'static str) {
    if let Err(reason) = authorize(request.headers(), &relay.token) {
        eprintln!(
            "refused {} {} from {peer}: {reason}",
            request.method(),
            request.uri().path()
        );
        return (
            StatusCode::UNAUTHORIZED,
            "an `Authorization: Bearer <token>` header with the token of the audit webhook config is required\n",
        );
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_BATCH_BYTES).await {
        Ok(body) => body,
        Err(err) => {
            eprintln!("rejected a batch from {peer}: reading the body failed: {err}");
            return (StatusCode::BAD_REQUEST, "the body could not be read\n");
        }
    };
    let lines = match event_lines(&body) {
        Ok(lines) => lines,
        Err(err) => {
            eprintln!("rejected a batch from {peer}: {err:#}");
            return (
                StatusCode::BAD_REQUEST,
                "the body is not an audit EventList\n",
            );
        }
    };
    let written = relay
        .events
        .lock()
        .map_err(|_| anyhow!("file lock poisoned"))
        .and_then(|mut f| {
            f.write_all(lines.as_bytes())?;
            f.flush()?;
            Ok(())
        });
    if let Err(err) = written {
        eprintln!("writing events failed: {err:#}");
        return (StatusCode::INTERNAL_SERVER_ERROR, "writing events failed\n");
    }
    relay.fanout.forward(&body);
    (StatusCode::OK, "ok\n")
}

/// Whether `headers` carry `Authorization: Bearer <token>`; else why not.
fn authorize(headers: &HeaderMap, token: &str) -> Result<(), &'static str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or("no Authorization header")?;
    let given = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or("the Authorization header is not `Bearer <token>`")?;
    if same_secret(given.trim().as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err("wrong bearer token")
    }
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

/// The receivers registered in a folder, each with its delivery task.
#[derive(Debug)]
struct Fanout {
    /// The receivers folder.
    dir: PathBuf,
    /// The CA (PEM) trusted for receivers without their own.
    default_ca: Vec<u8>,
    /// By file name.
    receivers: Mutex<BTreeMap<OsString, Registered>>,
}

/// One receiver file as last read.
#[derive(Debug)]
struct Registered {
    /// Modification time and size when read: the file is read again when
    /// they change.
    stamp: (Option<SystemTime>, u64),
    /// The delivery queue; none when the file is invalid (logged once).
    sink: Option<Sink>,
}

/// The queue of one receiver and its delivery task (aborted on drop).
#[derive(Debug)]
struct Sink {
    queue: mpsc::Sender<Bytes>,
    task: tokio::task::AbortHandle,
    /// Whether the queue is full (logged once until it drains).
    overflowing: bool,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fanout {
    /// Reads the folder again and queues `batch` for every receiver in it;
    /// never waits.
    fn forward(&self, batch: &Bytes) {
        let Ok(mut receivers) = self.receivers.lock() else {
            eprintln!("the receivers lock is poisoned: batch not forwarded");
            return;
        };
        self.refresh(&mut receivers);
        for (name, registered) in receivers.iter_mut() {
            let Some(sink) = registered.sink.as_mut() else {
                continue;
            };
            match sink.queue.try_send(batch.clone()) {
                Ok(()) if sink.overflowing => {
                    sink.overflowing = false;
                    println!("receiver {}: queue drains again", name.to_string_lossy());
                }
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if !sink.overflowing {
                        sink.overflowing = true;
                        eprintln!(
                            "receiver {}: {RECEIVER_QUEUE} batches waiting; dropping new ones until it catches up",
                            name.to_string_lossy()
                        );
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    eprintln!(
                        "receiver {}: its delivery task has stopped; batch dropped",
                        name.to_string_lossy()
                    );
                }
            }
        }
    }

    /// Registers new and changed receiver files, forgets removed ones.
    fn refresh(&self, receivers: &mut BTreeMap<OsString, Registered>) {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) => {
                if err.kind() != std::io::ErrorKind::NotFound {
                    eprintln!("reading {} failed: {err}", self.dir.display());
                }
                forget(receivers, &BTreeSet::new());
                return;
            }
        };
        let mut present = BTreeSet::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|ext| ext != "json") {
                continue;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let name = entry.file_name();
            let stamp = (meta.modified().ok(), meta.len());
            present.insert(name.clone());
            if receivers.get(&name).is_some_and(|r| r.stamp == stamp) {
                continue;
            }
            let sink = match Receiver::load(&path, &self.default_ca) {
                Ok(receiver) => {
                    println!(
                        "receiver {}: registered, sending to {}",
                        name.to_string_lossy(),
                        receiver.url
                    );
                    Some(start(name.to_string_lossy().into_owned(), receiver))
                }
                Err(err) => {
                    eprintln!("ignoring {}: {err:#}", path.display());
                    None
                }
            };
            // Replacing an entry drops its sink, which stops its task.
            receivers.insert(name, Registered { stamp, sink });
        }
        forget(receivers, &present);
    }
}

/// Drops the receivers whose file is not in `present`.
fn forget(receivers: &mut BTreeMap<OsString, Registered>, present: &BTreeSet<OsString>) {
    receivers.retain(|name, registered| {
        let keep = present.contains(name);
        if !keep && registered.sink.is_some() {
            println!(
                "receiver {}: forgotten (its file is gone)",
                name.to_string_lossy()
            );
        }
        keep
    });
}

/// A receiver file: `{"url": "https://127.0.0.1:PORT/audit", "token": "…",
/// "ca_file": "…"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiverFile {
    /// Where batches are POSTed: `https://…` or `http://…`.
    url: String,
    /// Sent as `Authorization: Bearer <token>` when present.
    #[serde(default)]
    token: Option<String>,
    /// The CA certificate (PEM) that signed the receiver's certificate; the
    /// environment's CA when absent.
    #[serde(default)]
    ca_file: Option<PathBuf>,
}

/// A receiver ready to be posted to.
#[derive(Debug)]
struct Receiver {
    url: reqwest::Url,
    token: Option<String>,
    client: reqwest::Client,
}

impl Receiver {
    /// Reads and checks a receiver file.
    fn load(path: &Path, default_ca: &[u8]) -> Result<Receiver> {
        let text = std::fs::read(path).context("reading it")?;
        let file: ReceiverFile = serde_json::from_slice(&text).context(
            r#"it is not {"url": "https://127.0.0.1:PORT/audit", "token": "…", "ca_file": "…"} (token and ca_file optional)"#,
        )?;
        let url = reqwest::Url::parse(&file.url)
            .with_context(|| format!("url `{}` is not a URL", file.url))?;
        match url.scheme() {
            "https" => {}
            "http" if file.ca_file.is_none() => {}
            "http" => bail!("ca_file is only used with an https:// url, not `{url}`"),
            _ => bail!("url `{url}` must start with https:// or http://"),
        }
        let ca = match (&file.ca_file, url.scheme()) {
            (Some(ca_file), _) => Some(
                std::fs::read(ca_file)
                    .with_context(|| format!("reading ca_file {}", ca_file.display()))?,
            ),
            (None, "https") => Some(default_ca.to_vec()),
            (None, _) => None,
        };
        Ok(Receiver {
            url,
            token: file.token.filter(|t| !t.is_empty()),
            client: client(ca.as_deref())?,
        })
    }
}

/// An HTTP client (rustls with ring) trusting only the CA `ca_pem`, or
/// nothing when it is `None` (plain HTTP).
fn client(ca_pem: Option<&[u8]>) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .no_proxy()
        .timeout(ATTEMPT_TIMEOUT);
    if let Some(ca_pem) = ca_pem {
        let certs =
            reqwest::Certificate::from_pem_bundle(ca_pem).context("the CA file is not PEM")?;
        if certs.is_empty() {
            bail!("the CA file holds no PEM certificate");
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().context("building the HTTP client")
}

/// Starts the delivery task of one receiver.
fn start(name: String, receiver: Receiver) -> Sink {
    let (queue, batches) = mpsc::channel(RECEIVER_QUEUE);
    let task = tokio::spawn(deliver(name, receiver, batches)).abort_handle();
    Sink {
        queue,
        task,
        overflowing: false,
    }
}

/// Posts each queued batch, in order; logs when the receiver starts and
/// stops failing, not every failure.
async fn deliver(name: String, receiver: Receiver, mut batches: mpsc::Receiver<Bytes>) {
    let mut dropped_since_failing: Option<u64> = None;
    while let Some(batch) = batches.recv().await {
        match send_batch(&receiver, batch).await {
            Ok(()) => {
                if let Some(dropped) = dropped_since_failing.take() {
                    println!("receiver {name}: answers again ({dropped} batches dropped)");
                }
            }
            Err(err) => match dropped_since_failing.as_mut() {
                Some(dropped) => *dropped += 1,
                None => {
                    dropped_since_failing = Some(1);
                    eprintln!(
                        "receiver {name}: batch dropped, {} failed: {err:#} (said once until it answers again)",
                        receiver.url
                    );
                }
            },
        }
    }
}

/// One batch to one receiver, retried with a doubling backoff on connection
/// errors, timeouts, 408, 429 and 5xx.
async fn send_batch(receiver: &Receiver, batch: Bytes) -> Result<()> {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        let mut request = receiver
            .client
            .post(receiver.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(batch.clone());
        if let Some(token) = &receiver.token {
            request = request.bearer_auth(token);
        }
        let (retry, err) = match request.send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => {
                let status = response.status();
                let retry = status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT;
                let text = response.text().await.unwrap_or_default();
                (retry, anyhow!("answered {status}: {}", text.trim()))
            }
            Err(err) => (true, anyhow::Error::new(err)),
        };
        if !retry || attempt == MAX_ATTEMPTS {
            return Err(err.context(format!("attempt {attempt} of {MAX_ATTEMPTS}")));
        }
        tokio::time::sleep(backoff).await;
        backoff *= 2;
        attempt += 1;
    }
}

/// Whether the relay at `addr` answers `GET /healthz` over HTTPS, its
/// certificate checked against `ca`.
pub fn healthy(addr: &str, ca: &Path) -> bool {
    let probe = async {
        let ca = std::fs::read(ca)?;
        let answer = client(Some(&ca))?
            .get(format!("https://{addr}/healthz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        anyhow::Ok(answer.trim() == "ok")
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .is_ok_and(|runtime| runtime.block_on(probe).unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

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

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("a header value"),
        );
        headers
    }

    #[test]
    fn only_the_right_bearer_token_is_authorized() {
        assert_eq!(
            authorize(&with_authorization("Bearer s3cret"), "s3cret"),
            Ok(())
        );
        assert_eq!(
            authorize(&HeaderMap::new(), "s3cret"),
            Err("no Authorization header")
        );
        assert_eq!(
            authorize(&with_authorization("Bearer s3cres"), "s3cret"),
            Err("wrong bearer token")
        );
        assert_eq!(
            authorize(&with_authorization("Bearer s3cret2"), "s3cret"),
            Err("wrong bearer token")
        );
        assert!(authorize(&with_authorization("Basic czNjcmV0"), "s3cret").is_err());
    }

    #[tokio::test]
    async fn the_health_probe_runs_from_a_blocking_task() {
        // `xtask test` brings the environment up inside `spawn_blocking`.
        let probe =
            tokio::task::spawn_blocking(|| healthy("127.0.0.1:1", Path::new("/nonexistent")));
        assert!(!probe.await.expect("the probe does not panic"));
    }

    /// Loads `json` as a receiver file.
    fn receiver_file(json: &str) -> Result<Receiver> {
        static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("xtask-relay-test-{}-{n}.json", std::process::id()));
        crate::paths::write(&path, json)?;
        let loaded = Receiver::load(&path, b"");
        let _ = std::fs::remove_file(&path);
        loaded
    }

    #[test]
    fn a_plain_http_receiver_needs_only_a_url() {
        let receiver = receiver_file(r#"{"url": "http://127.0.0.1:9/audit"}"#).expect("valid");
        assert_eq!(receiver.url.as_str(), "http://127.0.0.1:9/audit");
        assert_eq!(receiver.token, None);
    }

    #[test]
    fn receiver_files_are_strict() {
        let unknown = receiver_file(r#"{"url": "http://127.0.0.1:9/", "tokn": "x"}"#);
        assert!(format!("{:#}", unknown.expect_err("unknown key")).contains("tokn"));
        let scheme = receiver_file(r#"{"url": "ftp://127.0.0.1:9/"}"#);
        assert!(format!("{:#}", scheme.expect_err("bad scheme")).contains("https://"));
        let ca = receiver_file(r#"{"url": "http://127.0.0.1:9/", "ca_file": "/nonexistent"}"#);
        assert!(format!("{:#}", ca.expect_err("ca_file with http")).contains("ca_file"));
    }
}
