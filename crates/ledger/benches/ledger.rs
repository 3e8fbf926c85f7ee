//! Batched append throughput.
//!
//! Prints `ledger_appends_per_s=<N>` (append of 1000-record batches) and
//! `ledger_appends_flushed_per_s=<N>` (the same with a flush after each batch,
//! as the pipeline does before committing bus offsets).

mod common;

use std::cell::Cell;
use std::time::{Duration, Instant};

use common::{Rng, batch};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use driftwarden_ledger::Ledger;

const BATCH: usize = 1000;
const OBJECTS: u64 = 10_000;

fn appends(c: &mut Criterion, name: &str, flush: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path()).expect("opens");
    let mut rng = Rng::new(7);
    let mut revision = 0;
    let records = Cell::new(0u64);
    let spent = Cell::new(Duration::ZERO);
    let mut group = c.benchmark_group("ledger");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let bodies = batch(&mut rng, OBJECTS, BATCH, &mut revision);
                let offsets = [("changes-0".to_owned(), revision as i64)];
                let start = Instant::now();
                let appended = ledger.append(bodies, &offsets).expect("appends");
                if flush {
                    ledger.flush().expect("flushes");
                }
                total += start.elapsed();
                assert_eq!(appended.seqs.len(), BATCH);
            }
            records.set(records.get() + iters * BATCH as u64);
            spent.set(spent.get() + total);
            total
        });
    });
    group.finish();
    let rate = records.get() as f64 / spent.get().as_secs_f64();
    println!("{name}_per_s={rate:.0}");
    println!("ledger_records_in_bench_ledger={}", ledger.len());
}

fn bench(c: &mut Criterion) {
    appends(c, "ledger_appends", false);
    appends(c, "ledger_appends_flushed", true);
}

criterion_group!(benches, bench);
criterion_main!(benches);
