#[path = "../benches/common/mod.rs"]
mod common;
use sled::Transactional;
use std::time::{Duration, Instant};
fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = sled::Config::new().path(dir.path());
    if mode.contains("ht") {
        cfg = cfg.mode(sled::Mode::HighThroughput);
    }
    if mode.contains("bigcache") {
        cfg = cfg.cache_capacity(4 << 30);
    }
    if mode.contains("noflush") {
        cfg = cfg.flush_every_ms(None);
    }
    let db = cfg.open().unwrap();
    let names = [
        "records",
        "by_object",
        "by_time",
        "objects",
        "dedup",
        "offsets",
        "meta",
    ];
    let trees: Vec<sled::Tree> = names.iter().map(|n| db.open_tree(n).unwrap()).collect();
    let mut rng = common::Rng::new(3);
    let mut rev = 0;
    let mut seq = 0u64;
    let (mut ser, mut com) = (Duration::ZERO, Duration::ZERO);
    let value = vec![7u8; 2700];
    for _ in 0..30 {
        let bodies = common::batch(&mut rng, 10_000, 1000, &mut rev);
        let t = Instant::now();
        let mut recs = Vec::new();
        for b in bodies {
            seq += 1;
            let r = model::LedgerRecord::new(seq, chrono::Utc::now(), b);
            let bytes = if mode.contains("noser") {
                value.clone()
            } else {
                serde_json::to_vec(&r).unwrap()
            };
            let s = model::Sealed::new(seq, [0; 32], bytes);
            recs.push((seq, s.bytes));
        }
        ser += t.elapsed();
        let t = Instant::now();
        let res: Result<(), sled::transaction::TransactionError<()>> = (
            &trees[0], &trees[1], &trees[2], &trees[3], &trees[4],
        )
            .transaction(|(r, bo, bt, o, d)| {
                for (s, bytes) in &recs {
                    if !mode.contains("norec") {
                        r.insert(&s.to_be_bytes()[..], bytes.as_slice())?;
                    }
                    if mode.contains("idx") {
                        let mut k = format!(
                            "prod\0apps\0Deployment\0team-{:02}\0service-{:05}\0",
                            s % 50,
                            s % 10000
                        )
                        .into_bytes();
                        k.extend_from_slice(&s.to_be_bytes());
                        bo.insert(k, &[][..])?;
                        let mut k = (1_800_000_000_000_000_000u64 + s / 1000)
                            .to_be_bytes()
                            .to_vec();
                        k.extend_from_slice(&s.to_be_bytes());
                        bt.insert(k, &[][..])?;
                        d.insert(
                            format!("prod-eu-1/0b7d2c1e-service-{:05}/{s}", s % 10000).into_bytes(),
                            &s.to_be_bytes()[..],
                        )?;
                        o.insert(
                            format!(
                                "prod\0apps\0Deployment\0team-{:02}\0service-{:05}\0",
                                s % 50,
                                s % 10000
                            )
                            .into_bytes(),
                            vec![1u8; 300],
                        )?;
                    }
                }
                Ok(())
            });
        res.unwrap();
        com += t.elapsed();
    }
    println!(
        "{mode}: seal {:.0}/s commit {:.0}/s",
        30000.0 / ser.as_secs_f64(),
        30000.0 / com.as_secs_f64()
    );
}
