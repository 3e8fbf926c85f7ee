//! The HTTP API over a ledger of one million change records about 10 000
//! objects, served on loopback and called as a client would (a reader
//! token, JSON bodies): one object's history, and pages of 500 changes
//! from random places in the chain.
//!
//! Then makes the report of the last seven days (the whole ledger), as
//! JSON and as HTML, straight from the ledger as `driftwarden report` does
//! when no Driftwarden runs.
//!
//! Prints `api_history_p99_ms=<N>`, `api_changes_page_p99_ms=<N>` and
//! `report_7d_1m_records_s=<N>`.
//! `LEDGER_BENCH_RECORDS` overrides the record count; `LEDGER_BENCH_DIR`
//! reuses the ledger the `ledger_1m` bench built there (built here when
//! missing); `API_BENCH_REPORT_ONLY=1` measures only the report.

#[path = "../../ledger/benches/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Rng, batch, key};
use driftwarden::api::ApiState;
use driftwarden::config::Config;
use driftwarden::desired::Desired;
use ledger::Ledger;
use tokio::sync::{mpsc, watch};

const OBJECTS: u64 = 10_000;
const QUERIES: usize = 1_000;
const PAGE: u64 = 500;

fn main() -> anyhow::Result<()> {
    let records: u64 = std::env::var("LEDGER_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let temp = tempfile::tempdir()?;
    let dir =
        std::env::var_os("LEDGER_BENCH_DIR").map_or_else(|| temp.path().to_owned(), Into::into);
    let ledger = Arc::new(Ledger::open(&dir)?);
    build(&ledger, records)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if std::env::var_os("API_BENCH_REPORT_ONLY").is_none() {
        runtime.block_on(measure(ledger.clone(), temp.path()))?;
    }
    report_7d(&ledger)
}

/// Times the JSON and the HTML report of the last seven days, computed
/// once (one pass over the ledger) and rendered twice.
fn report_7d(ledger: &Ledger) -> anyhow::Result<()> {
    use driftwarden::report::{self, Context, Format, Scope, Verification};
    let now = chrono::Utc::now();
    let scope = Scope::new(now - chrono::Duration::days(7), now, None)?;
    let context = Context {
        cluster: "prod-eu-1".into(),
        verification: Verification::not_in_this_process(),
        now,
        readers: report::readers(),
    };
    let start = Instant::now();
    let made = report::build(ledger, &scope, &context)?;
    let mut json = Vec::new();
    report::render(&made, Format::Json, &mut json)?;
    let mut html = Vec::new();
    report::render(&made, Format::Html, &mut html)?;
    let elapsed = start.elapsed();
    let summary = &made.summary;
    println!(
        "report of 7 days: {} of {} records read, {} changes, {} drifts, {} unresolved; \
         JSON {} KiB and HTML {} KiB in {:.2} s",
        summary.records,
        ledger.len(),
        summary.changes,
        summary.drifts,
        summary.still_open,
        json.len() / 1024,
        html.len() / 1024,
        elapsed.as_secs_f64()
    );
    if summary.records < ledger.len() {
        println!(
            "note: the ledger holds records older than 7 days; the report read only the newer ones"
        );
    }
    println!("report_7d_1m_records_s={:.2}", elapsed.as_secs_f64());
    Ok(())
}

/// Appends change records until the ledger holds `records`.
fn build(ledger: &Ledger, records: u64) -> anyhow::Result<()> {
    if ledger.len() >= records {
        println!("reusing a ledger of {} records", ledger.len());
        return Ok(());
    }
    let mut rng = Rng::new(42);
    let mut revision = 0;
    while ledger.len() < records {
        let size = 1_000.min((records - ledger.len()) as usize);
        ledger.append(batch(&mut rng, OBJECTS, size, &mut revision), &[])?;
        if ledger.len().is_multiple_of(100_000) {
            println!("built {} records", ledger.len());
        }
    }
    ledger.flush()?;
    Ok(())
}

/// Serves the API on loopback and times calls to it.
async fn measure(ledger: Arc<Ledger>, work: &std::path::Path) -> anyhow::Result<()> {
    let token = "bench-reader-token-0123456789abcdef";
    let token_file = work.join("reader.token");
    std::fs::write(&token_file, token)?;
    let path = work.join("driftwarden.yaml");
    let text = format!(
        "version: 1\ncluster: {{name: prod}}\ndata_dir: {}\n\
         sources: [{{name: apps, url: 'file:///srv/apps'}}]\n\
         api: {{listen: '127.0.0.1:0', tokens: [{{name: bench, file: {}, role: reader}}]}}\n",
        work.join("data").display(),
        token_file.display()
    );
    let config = Config::parse(&path, &text)?;
    let (requests, _keep) = mpsc::channel(1);
    let state = ApiState {
        ledger: ledger.clone(),
        desired: watch::channel(Desired::default()).1,
        requests,
        health: Default::default(),
        digest_key: model::redact::DigestKey::from_bytes([1; 32]),
        tokens: driftwarden::api::Tokens::load(&config)?,
        config: Arc::new(config),
        verified: Default::default(),
        metrics: Default::default(),
    };
    let (router, _) = driftwarden::api::router(state);
    let mut tasks = tokio::task::JoinSet::new();
    let addr =
        driftwarden::api::serve::tcp(router, "127.0.0.1:0".parse()?, None, &mut tasks).await?;
    let client = reqwest::Client::new();
    let get = |path: String| {
        let request = client
            .get(format!("http://{addr}{path}"))
            .bearer_auth(token)
            .send();
        async move {
            let response = request.await?.error_for_status()?;
            Ok::<_, anyhow::Error>(response.bytes().await?.len())
        }
    };

    let mut rng = Rng::new(7);
    let mut history = Vec::with_capacity(QUERIES);
    let mut bytes = 0;
    for _ in 0..QUERIES {
        let object = key(rng.below(OBJECTS)).to_string().replace('/', "%2F");
        let start = Instant::now();
        bytes += get(format!("/v1/history?key={object}")).await?;
        history.push(start.elapsed());
    }
    report(
        "history of one object",
        "api_history_p99_ms",
        &mut history,
        bytes,
    );

    let mut pages = Vec::with_capacity(QUERIES);
    let mut bytes = 0;
    let last = ledger.len().saturating_sub(PAGE);
    for _ in 0..QUERIES {
        let cursor = rng.below(last.max(1));
        let start = Instant::now();
        bytes += get(format!("/v1/changes?limit={PAGE}&cursor={cursor}")).await?;
        pages.push(start.elapsed());
    }
    report(
        "a page of 500 changes",
        "api_changes_page_p99_ms",
        &mut pages,
        bytes,
    );
    Ok(())
}

/// Prints percentiles of `times`, and the p99 as `name=<ms>`.
fn report(what: &str, name: &str, times: &mut [Duration], bytes: usize) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "{what}: {} calls, {} KiB each; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        times.len(),
        bytes / times.len() / 1024,
        ms(at(0.5)),
        ms(at(0.99)),
        ms(times[times.len() - 1]),
    );
    println!("{name}={:.2}", ms(at(0.99)));
}
