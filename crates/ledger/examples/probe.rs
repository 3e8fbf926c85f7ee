#[path = "../benches/common/mod.rs"]
mod common;
use std::time::{Duration, Instant};
fn main() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = driftwarden_ledger::Ledger::open(dir.path()).unwrap();
    let mut rng = common::Rng::new(3);
    let mut rev = 0;
    let mut spent = Duration::ZERO;
    let mut batches = Vec::new();
    for _ in 0..40 {
        batches.push(common::batch(&mut rng, 10_000, 1000, &mut rev));
    }
    let ticks = || {
        std::fs::read_to_string("/proc/self/stat")
            .unwrap()
            .split(' ')
            .skip(13)
            .take(2)
            .map(|t| t.parse::<u64>().unwrap())
            .sum::<u64>()
    };
    let c0 = ticks();
    for bodies in batches {
        let t = Instant::now();
        ledger.append(bodies, &[]).unwrap();
        spent += t.elapsed();
    }
    let cpu = (ticks() - c0) as f64 / 100.0;
    println!(
        "wall {:.0}/s  cpu {:.0}/s",
        40000.0 / spent.as_secs_f64(),
        40000.0 / cpu
    );
}
