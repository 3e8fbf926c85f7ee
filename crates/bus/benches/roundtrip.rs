//! Publish → consume latency of one message at a time, and throughput of a
//! burst published concurrently, embedded and through the real Kafka broker
//! of the test environment (`cargo xtask env up`).
//!
//! Prints `bus_roundtrip_p50_ms_<bus>=<N>`, `bus_roundtrip_p99_ms_<bus>=<N>`
//! and `bus_throughput_msgs_per_s_<bus>=<N>`. Under `cargo bench` it measures
//! 200 round trips and a burst of 20 000 messages per bus; otherwise (as under
//! `cargo test --benches`) a few, to check that it runs.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use driftwarden_bus::{Consumer, KafkaConfig, Message, Publisher, ensure_topics};
use model::{ChangeEvent, ChangeKind, ObjectKey};
use serde_json::json;
use testenv::NOT_RUNNING;
use tokio::task::JoinSet;

const WARMUP: usize = 20;
/// Publishes in flight at once during the burst.
const IN_FLIGHT: usize = 256;

fn main() {
    let (samples, burst) = if std::env::args().any(|arg| arg == "--bench") {
        (200, 20_000)
    } else {
        (5, 100)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let (publisher, consumer) =
            driftwarden_bus::embedded(driftwarden_bus::DEFAULT_CAPACITY).expect("embedded bus");
        run("embedded", &publisher, consumer, samples, burst).await;

        let brokers = brokers();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let prefix = format!("bench-{nanos}.");
        let config = KafkaConfig::new(brokers, format!("{prefix}group")).with_prefix(prefix);
        ensure_topics(&config, 3)
            .await
            .unwrap_or_else(|err| panic!("{NOT_RUNNING} ({err})"));
        let publisher = Publisher::kafka(&config).expect("kafka publisher");
        let consumer = Consumer::kafka(&config).expect("kafka consumer");
        run("kafka", &publisher, consumer, samples, burst).await;
    });
}

async fn run(
    bus: &str,
    publisher: &Publisher,
    mut consumer: Consumer,
    samples: usize,
    burst: usize,
) {
    report(bus, &mut measure(publisher, &mut consumer, samples).await);
    let rate = throughput(publisher, &mut consumer, burst).await;
    println!("bus_throughput_msgs_per_s_{bus}={rate:.0}");
    consumer.close().await;
}

/// Messages per second through the bus when `count` are published with
/// [`IN_FLIGHT`] publishes outstanding while the consumer takes batches.
async fn throughput(publisher: &Publisher, consumer: &mut Consumer, count: usize) -> f64 {
    let start = Instant::now();
    let publishing = async {
        let mut tasks = JoinSet::new();
        for i in 0..count {
            if tasks.len() >= IN_FLIGHT {
                finish_one(&mut tasks).await;
            }
            let publisher = publisher.clone();
            tasks.spawn(async move { publisher.publish(&change(i % 100, i)).await });
        }
        while !tasks.is_empty() {
            finish_one(&mut tasks).await;
        }
    };
    let consuming = async {
        let mut received = 0;
        while received < count {
            received += consumer
                .next_batch(1_000, Duration::from_secs(30))
                .await
                .expect("bus delivers")
                .len();
        }
    };
    tokio::join!(publishing, consuming);
    count as f64 / start.elapsed().as_secs_f64()
}

async fn finish_one(tasks: &mut JoinSet<driftwarden_bus::Result<()>>) {
    if let Some(done) = tasks.join_next().await {
        done.expect("publish task ran").expect("published");
    }
}

/// Round trips of one message each, after a warm-up that lets the consumer
/// join its group.
async fn measure(publisher: &Publisher, consumer: &mut Consumer, samples: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..WARMUP + samples {
        let message = change(0, i);
        let start = Instant::now();
        let (published, received) = tokio::join!(publisher.publish(&message), async {
            loop {
                let batch = consumer
                    .next_batch(1, Duration::from_secs(30))
                    .await
                    .expect("bus delivers");
                if let Some(delivery) = batch.into_iter().next() {
                    break delivery;
                }
            }
        });
        published.expect("published");
        let elapsed = start.elapsed();
        assert_eq!(received.message, message, "messages arrive in order");
        if i >= WARMUP {
            latencies.push(elapsed);
        }
    }
    latencies
}

/// Version `version` of object number `object`.
fn change(object: usize, version: usize) -> Message {
    let name = format!("web-{object}");
    Message::Change(ChangeEvent::new(
        ObjectKey::new("bench", "apps", "Deployment", "team-a", &name),
        "apps/v1",
        format!("uid-{name}"),
        version.to_string(),
        ChangeKind::Modified,
        Utc::now(),
        json!({"spec": {"replicas": version, "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}),
    ))
}

fn report(bus: &str, latencies: &mut [Duration]) {
    latencies.sort();
    let at = |q: f64| {
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1].as_secs_f64() * 1e3
    };
    println!("bus_roundtrip_samples_{bus}={}", latencies.len());
    println!("bus_roundtrip_p50_ms_{bus}={:.3}", at(0.50));
    println!("bus_roundtrip_p99_ms_{bus}={:.3}", at(0.99));
}

/// The broker of the test environment; fails with the command to run when
/// the environment is missing.
fn brokers() -> String {
    testenv::TestEnv::get().kafka_brokers.clone()
}
