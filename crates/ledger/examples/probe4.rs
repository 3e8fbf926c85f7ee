#[path = "../benches/common/mod.rs"]
mod common;
use std::time::Instant;
fn main() {
    let opts = driftwarden_ledger::Options {
        cache_capacity: 6 << 30,
    };
    let ledger = driftwarden_ledger::Ledger::open_with("/tmp/ledger1m/db", &opts).unwrap();
    for pass in 0..2 {
        let mut rng = common::Rng::new(77);
        let t = Instant::now();
        let mut n = 0;
        let mut times = Vec::new();
        for _ in 0..500 {
            let q = Instant::now();
            n += ledger
                .history(&common::key(rng.below(10_000)))
                .unwrap()
                .len();
            times.push(q.elapsed());
        }
        times.sort();
        println!(
            "pass {pass}: {:.1} us/record, p50 {:?} p99 {:?}",
            t.elapsed().as_secs_f64() * 1e6 / n as f64,
            times[250],
            times[495]
        );
    }
}
