//! A ledger of one million realistic change records about 10 000 objects:
//! history query latency and full-chain verification time.
//!
//! Prints `history_query_p99_ms=<N>` and `verify_1m_records_s=<N>` (and the
//! build rate as `ledger_build_appends_per_s=<N>`). `LEDGER_BENCH_RECORDS`
//! overrides the record count for a quick run; `LEDGER_BENCH_DIR` keeps the
//! ledger in that directory and reuses it on the next run instead of building
//! it again; `LEDGER_BENCH_CACHE_MB` sets the storage cache.

mod common;

use std::time::{Duration, Instant};

use common::{Rng, batch, key};
use driftwarden_ledger::{Ledger, Options};

const BATCH: usize = 1000;
const OBJECTS: u64 = 10_000;
const QUERIES: usize = 2000;

fn main() {
    let records: u64 = std::env::var("LEDGER_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let temp = tempfile::tempdir().expect("temp dir");
    let dir =
        std::env::var_os("LEDGER_BENCH_DIR").map_or_else(|| temp.path().to_owned(), Into::into);
    let mut options = Options::default();
    if let Some(mb) = std::env::var("LEDGER_BENCH_CACHE_MB")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    {
        options.cache_capacity = mb << 20;
    }
    build(&dir, records, &options);

    let start = Instant::now();
    let ledger = Ledger::open_with(&dir, &options).expect("reopens");
    println!("reopen: {:.2} s", start.elapsed().as_secs_f64());
    assert_eq!(ledger.len(), records);

    history_queries(&ledger);
    verify(&ledger, records);
}

/// Appends `records` records in batches, printing progress.
fn build(path: &std::path::Path, records: u64, options: &Options) {
    let ledger = Ledger::open_with(path, options).expect("opens");
    if ledger.len() >= records {
        println!("reusing the {} records in {}", ledger.len(), path.display());
        return;
    }
    let mut rng = Rng::new(42);
    let mut revision = 0;
    let mut spent = Duration::ZERO;
    let start = Instant::now();
    while ledger.len() < records {
        let size = BATCH.min((records - ledger.len()) as usize);
        let bodies = batch(&mut rng, OBJECTS, size, &mut revision);
        let offsets = [("changes-0".to_owned(), revision as i64)];
        let t = Instant::now();
        ledger.append(bodies, &offsets).expect("appends");
        ledger.flush().expect("flushes");
        spent += t.elapsed();
        if ledger.len().is_multiple_of(100_000) {
            println!(
                "built {} records in {:.0} s ({:.0} appends/s so far)",
                ledger.len(),
                start.elapsed().as_secs_f64(),
                ledger.len() as f64 / spent.as_secs_f64()
            );
        }
    }
    println!(
        "ledger_build_appends_per_s={:.0}",
        records as f64 / spent.as_secs_f64()
    );
}

/// Times history queries of random objects; prints percentiles.
fn history_queries(ledger: &Ledger) {
    let mut rng = Rng::new(9);
    let mut found = 0;
    for _ in 0..100 {
        found += ledger
            .history(&key(rng.below(OBJECTS)))
            .expect("history")
            .len();
    }
    let mut times: Vec<Duration> = (0..QUERIES)
        .map(|_| {
            let key = key(rng.below(OBJECTS));
            let start = Instant::now();
            let history = ledger.history(&key).expect("history");
            let spent = start.elapsed();
            found += history.len();
            spent
        })
        .collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "history of one object: {} queries, {:.1} records each; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        QUERIES,
        found as f64 / (QUERIES + 100) as f64,
        ms(at(0.5)),
        ms(at(0.99)),
        ms(times[times.len() - 1]),
    );
    println!("history_query_p99_ms={:.2}", ms(at(0.99)));
}

/// Times a full verification; the chain must be intact.
fn verify(ledger: &Ledger, records: u64) {
    let start = Instant::now();
    let report = ledger.verify().expect("verifies");
    let spent = start.elapsed().as_secs_f64();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.records, records);
    println!("verified {records} records in {spent:.2} s");
    println!("verify_1m_records_s={:.2}", spent * 1e6 / records as f64);
}
