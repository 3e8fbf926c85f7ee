//! End-to-end benchmarks of Driftwarden on the real test environment
//! (`cargo xtask env up`), each phase in its own namespace:
//!
//! ```text
//!  detect     mallory patches a ConfigMap ──watch──▶ bus ──▶ correlator ──▶ ledger
//!             (in-process Driftwarden, embedded bus, then Kafka)   t0 ─────────▶ record.at
//!             each twice: without the API, then with it served and read as the page reads it
//!  throughput N ConfigMaps created 64 at a time ──▶ … Kafka … ──▶ ledger: events/s
//!             then a fresh Driftwarden drains the same N objects as its initial list;
//!             meanwhile a probe measures how long tasks wait for a runtime worker
//!  memory     the `driftwarden run` binary: VmRSS watching 1 object, then M objects
//! ```
//!
//! Prints one `name=value` line per number (`cargo xtask bench` collects
//! them) and progress lines in between. Sizes: `DW_BENCH_CHANGES` (changes
//! per bus, default 200), `DW_BENCH_WRITES` (throughput writes, 5000),
//! `DW_BENCH_OBJECTS` (memory phase objects, 10000). `DW_DRIFTWARDEN_BIN`
//! names the binary for the memory phase (default: target/release, else
//! target/debug). Work files and logs: `target/bench/e2e/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use driftwarden::run::{Role, Running};
use driftwarden_e2e::git::GitRepo;
use driftwarden_e2e::scenario::{self, BusSettings, Settings};
use driftwarden_e2e::{TestEnv, TestNamespace, User, unique_suffix, workspace_root};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use ledger::Ledger;
use model::{ObjectKey, RecordBody};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

/// Writes in flight at once in the throughput and memory phases.
const CONCURRENCY: usize = 64;

/// How long one change may take to reach the ledger.
const DETECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a phase may wait for the ledger or the binary to catch up.
const CATCH_UP: Duration = Duration::from_secs(300);

/// The ConfigMap every phase declares in git and watches first.
const PROBE: &str = "probe";

fn main() -> Result<()> {
    let sizes = Sizes::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(&sizes))
}

/// How much work each phase does.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Changes timed per bus.
    changes: usize,
    /// ConfigMaps written in the throughput phase.
    writes: usize,
    /// ConfigMaps watched in the memory phase.
    objects: usize,
}

impl Sizes {
    fn from_env() -> Result<Sizes> {
        let size = |name: &str, default: usize| -> Result<usize> {
            match std::env::var(name) {
                Ok(text) if !text.is_empty() => text
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 2)
                    .with_context(|| format!("{name}={text}: expected a whole number ≥ 2")),
                _ => Ok(default),
            }
        };
        Ok(Sizes {
            changes: size("DW_BENCH_CHANGES", 200)?,
            writes: size("DW_BENCH_WRITES", 5_000)?,
            objects: size("DW_BENCH_OBJECTS", 10_000)?,
        })
    }
}

async fn run(sizes: &Sizes) -> Result<()> {
    let env = TestEnv::load()?;
    env.check_answering()?;
    let work = workspace_root().join("target").join("bench").join("e2e");
    match std::fs::remove_dir_all(&work) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(err).with_context(|| format!("removing {}", work.display()));
        }
        _ => {}
    }
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let bench = Bench { env, work };
    // Namespaces are deleted at the end, so their deletion does not load
    // the apiserver during later phases.
    let mut namespaces = Vec::new();
    for bus in ["embedded", "kafka"] {
        let (namespace, off) = bench.detect(bus, sizes.changes, false).await?;
        namespaces.push(namespace);
        let (namespace, on) = bench.detect(bus, sizes.changes, true).await?;
        namespaces.push(namespace);
        println!("detect_p99_api_on_off_ratio_{bus}={:.2}", on / off);
    }
    namespaces.push(bench.throughput(sizes.writes).await?);
    namespaces.push(bench.memory(sizes.objects).await?);
    println!("deleting the bench namespaces (in the background)");
    drop(namespaces);
    Ok(())
}

/// The environment and the work directory.
#[derive(Debug)]
struct Bench {
    env: TestEnv,
    work: PathBuf,
}

/// One phase's namespace and git repository, with the probe declared and
/// applied.
#[derive(Debug)]
struct Scene {
    namespace: TestNamespace,
    repo: GitRepo,
}

impl Scene {
    /// The key of `name`, a ConfigMap of this scene.
    fn key(&self, name: &str) -> ObjectKey {
        scenario::key("v1", "ConfigMap", &self.namespace.name, name)
    }
}

impl Bench {
    /// A fresh namespace whose git repository declares the probe, applied
    /// by the GitOps agent.
    async fn scene(&self, phase: &str) -> Result<Scene> {
        let namespace = self.env.fresh_namespace(&format!("bench-{phase}")).await?;
        let manifest = probe(&namespace.name);
        let repo = GitRepo::new()?;
        repo.write("apps/probe.yaml", &serde_json::to_string_pretty(&manifest)?)?;
        repo.commit("BENCH-1: the probe ConfigMap")?;
        let api: Api<ConfigMap> =
            Api::namespaced(self.env.client(User::Gitops).await?, &namespace.name);
        api.patch(
            PROBE,
            &PatchParams::apply("gitops").force(),
            &Patch::Apply(manifest),
        )
        .await
        .context("applying the probe as gitops")?;
        Ok(Scene { namespace, repo })
    }

    /// Settings for a Driftwarden watching `scene` on `bus`, with its data in
    /// `work/<name>`.
    fn settings(&self, scene: &Scene, bus: BusSettings, name: &str) -> Settings {
        Settings {
            kubeconfig: self.env.kubeconfig(User::Admin).to_path_buf(),
            data_dir: self.work.join(name),
            repo_url: scene.repo.url(),
            paths: vec!["apps".into()],
            namespace: scene.namespace.name.clone(),
            bus,
            extra_kinds: vec!["v1/ConfigMap".into()],
            trusted_managers: vec!["kube-controller-manager".into()],
            trusted_users: Vec::new(),
            audit_webhook: None,
        }
    }

    /// Kafka with topics and a consumer group of their own.
    fn kafka(&self, phase: &str) -> BusSettings {
        BusSettings::kafka(
            &self.env.kafka_brokers,
            &format!("bench-{phase}-{}.", unique_suffix()),
        )
    }

    /// Detect latency on `bus_name`: `changes` patches of the probe by
    /// mallory, one at a time, each timed from just before the write to the
    /// `at` of its change record in the ledger. With `served`, the HTTP API is
    /// served and read meanwhile as the drift feed page reads it (new
    /// changes every 100 ms, the open drift every 500 ms). Returns the
    /// namespace and the p99.
    async fn detect(
        &self,
        bus_name: &str,
        changes: usize,
        served: bool,
    ) -> Result<(TestNamespace, f64)> {
        let name = format!("detect-{bus_name}{}", if served { "-api" } else { "" });
        println!(
            "detect latency, {bus_name} bus{}: {changes} changes to one ConfigMap",
            if served { ", API served and read" } else { "" }
        );
        let scene = self.scene(&name).await?;
        let bus = match bus_name {
            "kafka" => self.kafka("detect"),
            _ => BusSettings::Embedded,
        };
        let settings = self.settings(&scene, bus, &name);
        let mut config = settings.config()?;
        let reader = served
            .then(|| serve_api(&mut config, &self.work.join(&name)))
            .transpose()?;
        let running = driftwarden::run::start(config, Role::All).await?;
        let ledger = running.ledger.clone().context("role all has a ledger")?;
        let feed = match (&reader, running.api_addr) {
            (Some(token), Some(addr)) => Some(tokio::spawn(read_feed(addr, token.clone()))),
            _ => None,
        };
        let key = scene.key(PROBE);
        wait_present(&ledger, &key).await?;

        let api: Api<ConfigMap> =
            Api::namespaced(self.env.client(User::Mallory).await?, &scene.namespace.name);
        let mut latencies = Vec::with_capacity(changes);
        for i in 0..changes {
            // Alternately away from git and back: drift, then authorized.
            let value = if i % 2 == 0 {
                format!("drift-{i}")
            } else {
                "0".to_string()
            };
            let patch = json!({"data": {"value": value}});
            let sent = now_micros();
            let written = api
                .patch(PROBE, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .context("patching the probe as mallory")?;
            let version = written
                .metadata
                .resource_version
                .context("the apiserver returned no resourceVersion")?;
            let recorded = wait_version(&ledger, &key, &version).await?;
            latencies.push((recorded - sent) as f64 / 1e3);
            if (i + 1) % 50 == 0 {
                let so_far = Percentiles::of(&latencies);
                println!(
                    "  {}/{changes} changes: p50 {:.1} ms, p99 {:.1} ms",
                    i + 1,
                    so_far.p50,
                    so_far.p99
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(feed) = feed {
            feed.abort();
        }
        running.stop().await;
        let all = Percentiles::of(&latencies);
        let suffix = if served { "_api" } else { "" };
        println!("detect_first_ms_{bus_name}{suffix}={:.1}", latencies[0]);
        println!("detect_p50_ms_{bus_name}{suffix}={:.1}", all.p50);
        println!("detect_p99_ms_{bus_name}{suffix}={:.1}", all.p99);
        println!("detect_max_ms_{bus_name}{suffix}={:.1}", all.max);
        Ok((scene.namespace, all.p99))
    }

    /// Sustained throughput through Kafka: `writes` ConfigMaps created
    /// `CONCURRENCY` at a time while Driftwarden runs; then a fresh
    /// Driftwarden drains the same objects as its initial list.
    async fn throughput(&self, writes: usize) -> Result<TestNamespace> {
        println!("throughput through Kafka: {writes} ConfigMaps created, {CONCURRENCY} at a time");
        let scene = self.scene("throughput").await?;
        let settings = self.settings(&scene, self.kafka("throughput"), "throughput");
        let (running, ledger) = start(&settings).await?;
        wait_present(&ledger, &scene.key(PROBE)).await?;
        let before = ledger.len();

        let api: Api<ConfigMap> =
            Api::namespaced(self.env.client(User::Mallory).await?, &scene.namespace.name);
        let probe = StallProbe::start();
        let first_write = now_micros();
        let written = create_many(&api, writes, |done| {
            format!(
                "  {done}/{writes} written, {}/{writes} in the ledger",
                ledger.len() - before
            )
        })
        .await?;
        let target = before + writes as u64;
        wait_len(&ledger, target, |n| {
            format!("  {}/{writes} in the ledger", n - before)
        })
        .await?;
        let last = record_at(&ledger, ledger.len())?;
        let stalls = probe.stop().await?;
        running.stop().await;
        let e2e = writes as f64 / ((last - first_write) as f64 / 1e6);
        let stall = Percentiles::of(&stalls);
        println!(
            "  runtime stalls over {} probes: p50 {:.3} ms",
            stalls.len(),
            stall.p50
        );
        println!("runtime_stall_p99_ms={:.3}", stall.p99);
        println!("runtime_stall_max_ms={:.3}", stall.max);
        println!(
            "apiserver_writes_per_s={:.0}",
            writes as f64 / written.as_secs_f64()
        );
        println!("e2e_events_per_s_kafka={e2e:.0}");

        println!(
            "  a fresh Driftwarden drains the {} objects as its initial list",
            writes + 1
        );
        let settings = self.settings(&scene, self.kafka("backlog"), "backlog");
        let (running, ledger) = start(&settings).await?;
        // One git sync record, then one change per object.
        wait_len(&ledger, writes as u64 + 2, |n| {
            format!("  {n}/{} in the ledger", writes + 2)
        })
        .await?;
        running.stop().await;
        let (observed, last) = change_span(&ledger)?;
        let backlog = (writes + 1) as f64 / ((last - observed) as f64 / 1e6);
        println!("e2e_backlog_events_per_s_kafka={backlog:.0}");
        Ok(scene.namespace)
    }

    /// Memory of the `driftwarden run` binary (embedded bus) watching the
    /// probe alone, then `objects` more ConfigMaps, each after its initial
    /// list settled.
    async fn memory(&self, objects: usize) -> Result<TestNamespace> {
        let binary = driftwarden_binary()?;
        println!(
            "memory: {} watching 1, then {} ConfigMaps",
            binary.display(),
            objects + 1
        );
        let scene = self.scene("memory").await?;
        let base = self.measure_rss(&binary, &scene, "memory-base", 1).await?;
        println!("  {base:.1} MiB watching the probe alone");

        let api: Api<ConfigMap> =
            Api::namespaced(self.env.client(User::Mallory).await?, &scene.namespace.name);
        let written =
            create_many(&api, objects, |done| format!("  {done}/{objects} created")).await?;
        println!(
            "  created {objects} ConfigMaps in {:.1}s ({:.0}/s)",
            written.as_secs_f64(),
            objects as f64 / written.as_secs_f64()
        );
        let sample = api.get("cm-00000").await?;
        let object_bytes = serde_json::to_vec(&sample)?.len();
        let loaded = self
            .measure_rss(&binary, &scene, "memory-loaded", objects + 1)
            .await?;
        println!("  {loaded:.1} MiB watching {} objects", objects + 1);
        let per_object_kib = (loaded - base) * 1024.0 / objects as f64;
        println!("rss_base_mib={base:.1}");
        println!("rss_loaded_mib={loaded:.1}");
        println!(
            "rss_mib_per_10k_objects={:.1}",
            per_object_kib * 10_000.0 / 1024.0
        );
        println!("rss_kib_per_object={per_object_kib:.2}");
        println!("object_json_bytes={object_bytes}");
        Ok(scene.namespace)
    }

    /// Runs the binary on `scene` until it has judged `expect` objects and
    /// its RSS settled; returns that RSS in MiB.
    async fn measure_rss(
        &self,
        binary: &Path,
        scene: &Scene,
        name: &str,
        expect: usize,
    ) -> Result<f64> {
        let settings = self.settings(scene, BusSettings::Embedded, name);
        let config = self.work.join(format!("{name}.yaml"));
        settings.write(&config)?;
        let log_path = self.work.join(format!("{name}.log"));
        let mut child = Binary::spawn(binary, &config, &log_path)?;
        let started = Instant::now();
        let mut last_report = Instant::now();
        loop {
            let judged = child.judged()?;
            if judged >= expect {
                break;
            }
            if started.elapsed() > CATCH_UP {
                bail!(
                    "{name}: the binary judged {judged} of {expect} objects within {CATCH_UP:?} (log {})",
                    log_path.display()
                );
            }
            if last_report.elapsed() > Duration::from_secs(3) {
                println!("  {judged}/{expect} judged, {:.1} MiB", child.rss_mib()?);
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let rss = child.settled_rss().await?;
        child.stop()?;
        Ok(rss)
    }
}

/// The probe ConfigMap as git declares it.
fn probe(namespace: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": PROBE, "namespace": namespace},
        "data": {"value": "0"},
    })
}

/// Starts Driftwarden in this process.
async fn start(settings: &Settings) -> Result<(Running, Arc<Ledger>)> {
    let running = driftwarden::run::start(settings.config()?, Role::All).await?;
    let ledger = running
        .ledger
        .clone()
        .context("role all runs the correlator, so it has a ledger")?;
    Ok((running, ledger))
}

/// Adds an API on a free loopback port to `config`, with a reader token
/// written under `dir`; returns the token.
fn serve_api(config: &mut driftwarden::config::Config, dir: &Path) -> Result<String> {
    std::fs::create_dir_all(dir)?;
    let token = format!("bench-reader-{}-{}", unique_suffix(), unique_suffix());
    let file = dir.join("reader.token");
    std::fs::write(&file, &token)?;
    config.api = Some(driftwarden::config::Api {
        listen: "127.0.0.1:0".parse()?,
        tls: None,
        tokens: vec![driftwarden::config::ApiToken {
            name: "bench".into(),
            file,
            role: driftwarden::config::ApiRole::Reader,
        }],
    });
    Ok(token)
}

/// Reads the API as the drift feed page does, until aborted: new changes
/// every 100 ms, the open drift every 500 ms.
async fn read_feed(addr: std::net::SocketAddr, token: String) -> Result<()> {
    let client = reqwest::Client::new();
    let mut cursor = 0;
    for round in 0_u64.. {
        let page: serde_json::Value = client
            .get(format!(
                "http://{addr}/v1/changes?limit=500&cursor={cursor}"
            ))
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if let Some(last) = page["changes"].as_array().and_then(|c| c.last()) {
            cursor = last["seq"].as_u64().unwrap_or(cursor);
        }
        if round % 5 == 0 {
            client
                .get(format!("http://{addr}/v1/drift"))
                .bearer_auth(&token)
                .send()
                .await?
                .error_for_status()?;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Waits until the ledger holds `key` (its initial observation).
async fn wait_present(ledger: &Ledger, key: &ObjectKey) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while ledger.object_state(key)?.is_none() {
        if Instant::now() >= deadline {
            bail!("Driftwarden did not record {key} within 60s of starting");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Polls the ledger every millisecond until `key` is at `version`; returns
/// the `at` (µs since the epoch) of the record holding that version.
async fn wait_version(ledger: &Ledger, key: &ObjectKey, version: &str) -> Result<i64> {
    let deadline = Instant::now() + DETECT_TIMEOUT;
    loop {
        if let Some(state) = ledger.object_state(key)?
            && state.resource_version == version
        {
            return record_at(ledger, state.latest_seq);
        }
        if Instant::now() >= deadline {
            bail!(
                "the change of {key} to resourceVersion {version} was not recorded within {DETECT_TIMEOUT:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until the ledger holds `len` records, printing `progress` every
/// 2 s.
async fn wait_len(ledger: &Ledger, len: u64, progress: impl Fn(u64) -> String) -> Result<()> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    while ledger.len() < len {
        if started.elapsed() > CATCH_UP {
            bail!(
                "the ledger holds {} of {len} records after {CATCH_UP:?}",
                ledger.len()
            );
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            println!("{}", progress(ledger.len()));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// When record `seq` was written, in µs since the epoch.
fn record_at(ledger: &Ledger, seq: u64) -> Result<i64> {
    let record = ledger
        .get(seq)?
        .with_context(|| format!("the ledger lost record #{seq}"))?;
    Ok(record.at.timestamp_micros())
}

/// The earliest `observed_at` of any change and the `at` of the last
/// record, in µs since the epoch.
fn change_span(ledger: &Ledger) -> Result<(i64, i64)> {
    let mut first_observed = i64::MAX;
    let mut last_at = i64::MIN;
    for record in scenario::records(ledger)? {
        if let RecordBody::Change { event, .. } = &record.body {
            first_observed = first_observed.min(event.observed_at.timestamp_micros());
            last_at = last_at.max(record.at.timestamp_micros());
        }
    }
    if first_observed == i64::MAX {
        bail!("the ledger holds no change");
    }
    Ok((first_observed, last_at))
}

/// Creates ConfigMaps `cm-00000` … as mallory, `CONCURRENCY` at a time,
/// printing `progress(done)` every 2 s; returns the time it took.
async fn create_many(
    api: &Api<ConfigMap>,
    count: usize,
    progress: impl Fn(usize) -> String,
) -> Result<Duration> {
    let started = Instant::now();
    let mut creates = futures::stream::iter(0..count)
        .map(|i| {
            let config_map = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(format!("cm-{i:05}")),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/part-of".to_string(),
                        "bench".to_string(),
                    )])),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([("value".to_string(), format!("{i:064}"))])),
                ..ConfigMap::default()
            };
            async move { api.create(&PostParams::default(), &config_map).await }
        })
        .buffer_unordered(CONCURRENCY);
    let mut done = 0;
    let mut last_report = Instant::now();
    while let Some(created) = creates.next().await {
        created.context("creating a ConfigMap as mallory")?;
        done += 1;
        if last_report.elapsed() > Duration::from_secs(2) {
            println!("{}", progress(done));
            last_report = Instant::now();
        }
    }
    Ok(started.elapsed())
}

/// Now, in µs since the epoch (the clock of ledger records' `at`).
fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// How long tasks wait for a worker of this runtime, the one Driftwarden's
/// watchers, webhook and git fetches share: every millisecond a probe task
/// yields and measures, in ms, how long until it is polled again. A task
/// that blocks a worker (a disk write, a long computation) shows up here.
struct StallProbe {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<f64>>,
}

impl StallProbe {
    fn start() -> StallProbe {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let mut stalls = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let yielded = Instant::now();
                tokio::task::yield_now().await;
                stalls.push(yielded.elapsed().as_secs_f64() * 1e3);
            }
            stalls
        });
        StallProbe { stop, task }
    }

    /// The stalls measured, in ms.
    async fn stop(self) -> Result<Vec<f64>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let stalls = self.task.await.context("the stall probe panicked")?;
        anyhow::ensure!(!stalls.is_empty(), "the stall probe measured nothing");
        Ok(stalls)
    }
}

/// Percentiles of a sample, in its unit.
#[derive(Debug, Clone, Copy)]
struct Percentiles {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of a non-empty sample.
    fn of(sample: &[f64]) -> Percentiles {
        let mut sorted = sample.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let i = (q * sorted.len() as f64).ceil() as usize;
            sorted[i.clamp(1, sorted.len()) - 1]
        };
        Percentiles {
            p50: rank(0.50),
            p99: rank(0.99),
            max: sorted[sorted.len() - 1],
        }
    }
}

/// The driftwarden binary for the memory phase.
fn driftwarden_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("DW_DRIFTWARDEN_BIN").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    };
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("driftwarden"))
        .find(|path| path.exists())
        .context("no driftwarden binary: run `cargo build --release -p driftwarden` or set DW_DRIFTWARDEN_BIN")
}

/// `driftwarden run` as a child process, with its log.
#[derive(Debug)]
struct Binary {
    child: Child,
    log: PathBuf,
    offset: usize,
    judged: usize,
}

impl Binary {
    fn spawn(binary: &Path, config: &Path, log: &Path) -> Result<Binary> {
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(binary)
            .arg("run")
            .arg("-c")
            .arg(config)
            // The correlator logs each judgement at debug level: its
            // `judged` lines are what `judged()` counts.
            .env("RUST_LOG", "info,driftwarden=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Binary {
            child,
            log: log.to_path_buf(),
            offset: 0,
            judged: 0,
        })
    }

    /// Objects judged so far (`judged` lines of the log); fails if the
    /// process exited.
    fn judged(&mut self) -> Result<usize> {
        if let Some(status) = self.child.try_wait()? {
            bail!("driftwarden exited ({status}); see {}", self.log.display());
        }
        let bytes =
            std::fs::read(&self.log).with_context(|| format!("reading {}", self.log.display()))?;
        let new = bytes.get(self.offset..).unwrap_or_default();
        let complete = new.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.judged += String::from_utf8_lossy(&new[..complete])
            .lines()
            .filter(|line| line.contains(" judged "))
            .count();
        self.offset += complete;
        Ok(self.judged)
    }

    /// VmRSS of the process in MiB.
    fn rss_mib(&self) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .context("reading the process status")?;
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .context("no VmRSS in the process status")?;
        Ok(kib / 1024.0)
    }

    /// The RSS once it moved less than 1 MiB over 3 s (sampled every
    /// 500 ms), or after 30 s.
    async fn settled_rss(&mut self) -> Result<f64> {
        let started = Instant::now();
        let mut samples = Vec::new();
        loop {
            samples.push(self.rss_mib()?);
            let recent = &samples[samples.len().saturating_sub(7)..];
            let spread = recent.iter().copied().fold(f64::MIN, f64::max)
                - recent.iter().copied().fold(f64::MAX, f64::min);
            if (recent.len() == 7 && spread < 1.0) || started.elapsed() > Duration::from_secs(30) {
                return Ok(samples[samples.len() - 1]);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// SIGINT, as Ctrl-C; SIGKILL after 15 s.
    fn stop(&mut self) -> Result<()> {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).context("pid out of range")?);
        let _ = kill(pid, Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                self.child.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
