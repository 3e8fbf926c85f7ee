#[path = "../benches/common/mod.rs"]
mod common;
use std::time::Instant;
fn main() {
    let r = model::LedgerRecord::new(
        1,
        chrono::Utc::now(),
        common::change(5, 77, chrono::Utc::now()),
    );
    let mut n = 0;
    let t = Instant::now();
    let cpu0 = std::fs::read_to_string("/proc/self/stat").unwrap();
    for _ in 0..20000 {
        n += serde_json::to_vec(&r).unwrap().len();
    }
    let el = t.elapsed();
    let cpu1 = std::fs::read_to_string("/proc/self/stat").unwrap();
    let ut = |s: &str| s.split(' ').nth(13).unwrap().parse::<u64>().unwrap();
    println!(
        "serialize: {:.1} us/rec wall, cpu ticks {} , {} bytes",
        el.as_secs_f64() * 1e6 / 20000.0,
        ut(&cpu1) - ut(&cpu0),
        n / 20000
    );
    let bytes = serde_json::to_vec(&r).unwrap();
    let t = Instant::now();
    for i in 0..20000u64 {
        std::hint::black_box(model::chain_hash(&[0; 32], i, &bytes));
    }
    println!(
        "sha: {:.2} us/rec",
        t.elapsed().as_secs_f64() * 1e6 / 20000.0
    );
    #[derive(serde::Deserialize)]
    struct E {
        #[allow(dead_code)]
        seq: u64,
    }
    let t = Instant::now();
    for _ in 0..20000u64 {
        std::hint::black_box(serde_json::from_slice::<E>(&bytes).unwrap());
    }
    println!(
        "probe-decode: {:.2} us/rec",
        t.elapsed().as_secs_f64() * 1e6 / 20000.0
    );
    let t = Instant::now();
    for _ in 0..20000u64 {
        std::hint::black_box(serde_json::from_slice::<model::LedgerRecord>(&bytes).unwrap());
    }
    println!(
        "full-decode: {:.2} us/rec",
        t.elapsed().as_secs_f64() * 1e6 / 20000.0
    );
}
