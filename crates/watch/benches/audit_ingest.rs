//! Audit webhook ingest: how many audit records per second
//! [`serve_audit_webhook`] accepts over TLS on loopback, with bearer-token
//! authentication, in batches of 400 events shaped as kube-apiserver 1.35
//! sends them for `kubectl scale` and `kubectl set image`
//! (`fixtures/kubectl-writes.json`, captured from the test environment at
//! `RequestResponse` level with the shipped audit policy).
//!
//! ```text
//!  N clients ──TLS, keep-alive──▶ serve_audit_webhook ──▶ mpsc (10 000) ──▶ drain: count
//!  POST EventList ×400, batch after batch      token check, parse
//! ```
//!
//! Each measurement runs for `AUDIT_INGEST_SECONDS` (default 5) after a
//! warm-up; it ends when the sink has drained every record of the batches
//! sent. Prints `name=value` lines for `cargo xtask bench`:
//! `audit_ingest_events_per_s` (4 connections, the apiserver's batching
//! webhook posts batches concurrently), `audit_ingest_events_per_s_1_conn`
//! (one batch at a time), the batch size and the time one batch takes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use driftwarden_watch::{RunningWebhook, TlsFiles, WebhookAuth, WebhookServer};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

/// Events per batch: kube-apiserver's `--audit-webhook-batch-max-size`
/// default.
const BATCH: usize = 400;

/// Distinct batch bodies sent in turn (each event has its own auditID and
/// resourceVersion).
const BODIES: usize = 8;

/// The sink's capacity, as `driftwarden run` gives it.
const SINK: usize = 10_000;

/// The bearer token the clients send.
const TOKEN: &str = "bench-0123456789abcdef0123456789abcdef";

/// Batches each connection sends before the clock starts.
const WARM_UP: usize = 5;

fn main() -> Result<()> {
    let seconds = match std::env::var("AUDIT_INGEST_SECONDS") {
        Ok(text) if !text.is_empty() => text
            .parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0)
            .with_context(|| format!("AUDIT_INGEST_SECONDS={text}: expected seconds > 0"))?,
        _ => 5.0,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(Duration::from_secs_f64(seconds)))
}

async fn run(period: Duration) -> Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let pki = Pki::write(dir.path())?;
    let bodies = bodies()?;
    let bytes = bodies[0].len();
    println!(
        "audit webhook ingest: batches of {BATCH} events ({:.0} KiB, {} B an event), TLS + bearer token on loopback",
        bytes as f64 / 1024.0,
        bytes / BATCH
    );
    let mut figures = Vec::new();
    for connections in [1, 4] {
        let measured = measure(&pki, &bodies, connections, period).await?;
        println!(
            "  {connections} connection(s): {} batches in {:.1}s, {:.0} events/s ({:.1} MiB/s), a batch takes p50 {:.1} ms, p99 {:.1} ms",
            measured.batches,
            measured.elapsed.as_secs_f64(),
            measured.events_per_s(),
            measured.events_per_s() / BATCH as f64 * bytes as f64 / (1024.0 * 1024.0),
            measured.batch_ms(0.50),
            measured.batch_ms(0.99),
        );
        figures.push((connections, measured));
    }
    for (connections, measured) in &figures {
        let suffix = match connections {
            1 => "_1_conn",
            _ => "",
        };
        println!(
            "audit_ingest_events_per_s{suffix}={:.0}",
            measured.events_per_s()
        );
        println!(
            "audit_ingest_batch_p50_ms{suffix}={:.1}",
            measured.batch_ms(0.50)
        );
        println!(
            "audit_ingest_batch_p99_ms{suffix}={:.1}",
            measured.batch_ms(0.99)
        );
    }
    println!("audit_ingest_batch_kib={:.0}", bytes as f64 / 1024.0);
    Ok(())
}

/// What one measurement saw.
#[derive(Debug)]
struct Measured {
    /// Batches sent after the warm-up.
    batches: usize,
    /// From the first timed batch sent to its last record drained.
    elapsed: Duration,
    /// Milliseconds from sending each timed batch to its `200`, sorted.
    batch_ms: Vec<f64>,
}

impl Measured {
    fn events_per_s(&self) -> f64 {
        (self.batches * BATCH) as f64 / self.elapsed.as_secs_f64()
    }

    /// Nearest-rank percentile of the batch times.
    fn batch_ms(&self, q: f64) -> f64 {
        let i = (q * self.batch_ms.len() as f64).ceil() as usize;
        self.batch_ms[i.clamp(1, self.batch_ms.len()) - 1]
    }
}

/// A fresh server with a draining sink; `connections` clients send batch
/// after batch for `period`.
async fn measure(
    pki: &Pki,
    bodies: &[Bytes],
    connections: usize,
    period: Duration,
) -> Result<Measured> {
    let (sink, mut records) = mpsc::channel(SINK);
    let server = driftwarden_watch::serve_audit_webhook(pki.settings(), "bench", sink)
        .await
        .context("starting the audit webhook")?;
    let drained = Arc::new(AtomicU64::new(0));
    let drain = {
        let drained = drained.clone();
        tokio::spawn(async move {
            let mut buffer = Vec::with_capacity(1024);
            while records.recv_many(&mut buffer, 1024).await > 0 {
                drained.fetch_add(buffer.len() as u64, Ordering::Relaxed);
                buffer.clear();
            }
        })
    };
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut client = Client::connect(&server, pki.client()?).await?;
        for body in bodies.iter().cycle().take(WARM_UP) {
            client.post(body.clone()).await?;
        }
        clients.push(client);
    }
    let warmed = (connections * WARM_UP * BATCH) as u64;
    wait_drained(&drained, warmed).await?;

    let started = Instant::now();
    let deadline = started + period;
    let mut tasks = tokio::task::JoinSet::new();
    for (c, mut client) in clients.into_iter().enumerate() {
        let bodies = bodies.to_vec();
        tasks.spawn(async move {
            let mut times = Vec::new();
            let mut next = c;
            while Instant::now() < deadline {
                let sent = Instant::now();
                client.post(bodies[next % bodies.len()].clone()).await?;
                times.push(sent.elapsed().as_secs_f64() * 1e3);
                next += 1;
            }
            anyhow::Ok(times)
        });
    }
    let mut batch_ms = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        batch_ms.extend(joined.context("a client task failed")??);
    }
    let batches = batch_ms.len();
    wait_drained(&drained, warmed + (batches * BATCH) as u64).await?;
    let elapsed = started.elapsed();
    let counters = server.counters().clone();
    ensure!(
        counters.refused() == 0 && counters.rejected_batches() == 0,
        "the server refused {} clients and rejected {} batches",
        counters.refused(),
        counters.rejected_batches()
    );
    server.shutdown().await;
    drain.await.context("the drain task failed")?;
    batch_ms.sort_by(f64::total_cmp);
    Ok(Measured {
        batches,
        elapsed,
        batch_ms,
    })
}

/// Waits until `count` records were drained from the sink.
async fn wait_drained(drained: &AtomicU64, count: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while drained.load(Ordering::Relaxed) < count {
        if Instant::now() > deadline {
            bail!(
                "the sink got {} of {count} records within 60 s",
                drained.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok(())
}

/// One keep-alive HTTPS connection to the webhook.
struct Client {
    sender: SendRequest<Body>,
}

impl Client {
    async fn connect(server: &RunningWebhook, config: ClientConfig) -> Result<Client> {
        let tcp = TcpStream::connect(server.local_addr()).await?;
        tcp.set_nodelay(true)?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost")?, tcp)
            .await
            .context("TLS handshake")?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(connection);
        Ok(Client { sender })
    }

    /// POSTs one batch, as the apiserver's webhook does; fails unless it
    /// is answered `200`.
    async fn post(&mut self, body: Bytes) -> Result<()> {
        self.sender.ready().await.context("connection lost")?;
        let request = Request::post("/audit")
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::from(body))?;
        let response = self.sender.send_request(request).await.context("POST")?;
        let status = response.status();
        let answer = axum::body::to_bytes(Body::new(response.into_body()), 1 << 16).await?;
        if status != StatusCode::OK {
            bail!("answered {status}: {}", String::from_utf8_lossy(&answer));
        }
        Ok(())
    }
}

/// `BODIES` audit `EventList`s of `BATCH` events each: the fixture's
/// events in turn, each with its own auditID, resourceVersion and times.
fn bodies() -> Result<Vec<Bytes>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures/kubectl-writes.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let samples: Vec<Value> = serde_json::from_str(&text).context("parsing the fixture")?;
    ensure!(!samples.is_empty(), "the fixture holds no event");
    let mut bodies = Vec::with_capacity(BODIES);
    for b in 0..BODIES {
        let items: Vec<Value> = (0..BATCH)
            .map(|i| {
                let n = b * BATCH + i;
                let mut event = samples[n % samples.len()].clone();
                event["auditID"] = json!(format!("00000000-0000-4000-8000-{n:012}"));
                event["responseObject"]["metadata"]["resourceVersion"] =
                    json!((100_000 + n).to_string());
                let micros = n % 1_000_000;
                event["requestReceivedTimestamp"] =
                    json!(format!("2026-01-02T03:04:05.{micros:06}Z"));
                event["stageTimestamp"] = json!(format!("2026-01-02T03:04:06.{micros:06}Z"));
                event
            })
            .collect();
        let list = json!({
            "kind": "EventList",
            "apiVersion": "audit.k8s.io/v1",
            "metadata": {},
            "items": items,
        });
        bodies.push(Bytes::from(serde_json::to_vec(&list)?));
    }
    Ok(bodies)
}

/// A CA, a server certificate for `localhost` it signed, and the files the
/// server reads.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    cert_file: PathBuf,
    key_file: PathBuf,
    token_file: PathBuf,
}

impl Pki {
    fn write(dir: &Path) -> Result<Pki> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca)?;
        let pki = Pki {
            ca,
            cert_file: dir.join("server.pem"),
            key_file: dir.join("server-key.pem"),
            token_file: dir.join("tokens"),
        };
        std::fs::write(&pki.cert_file, cert.pem())?;
        std::fs::write(&pki.key_file, key.serialize_pem())?;
        std::fs::write(&pki.token_file, format!("{TOKEN}\n"))?;
        Ok(pki)
    }

    fn settings(&self) -> WebhookServer {
        WebhookServer {
            listen: ([127, 0, 0, 1], 0).into(),
            tls: TlsFiles {
                cert_file: self.cert_file.clone(),
                key_file: self.key_file.clone(),
            },
            auth: WebhookAuth::BearerToken {
                token_file: self.token_file.clone(),
            },
        }
    }

    /// A client trusting the CA.
    fn client(&self) -> Result<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone())?;
        Ok(
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}
