//! `driftwarden run`: wires the roles together.
//!
//! ```text
//! role watch:     kube-apiserver ──watch──▶ publisher ──▶ bus
//!                 kube-apiserver ──audit webhook──▶ publisher ──▶ bus
//! role correlate: bus ──▶ correlator ──▶ ledger     git ──fetch──▶ correlator
//! role all:       both, over the configured bus (the embedded bus needs `all`)
//! ```

use std::collections::BTreeSet;
use std::os::unix::fs::DirBuilderExt as _;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use bus::{Consumer, Message, Publisher, Sent};
use futures::{StreamExt as _, TryStreamExt as _};
use ledger::{CheckpointKey, CheckpointStatus, Ledger, checkpoint};
use tokio::sync::{Notify, mpsc, oneshot, watch as latest};
use tokio::task::JoinSet;

use crate::api::ApiState;
use crate::config::{Bus, Config, Mode};
use crate::correlator::Correlator;
use crate::desired::{self, Desired};
use crate::enforcer::Enforcer;
use crate::health::Health;
use crate::kinds;
use enforce::OwnWrites;

/// Which parts of Driftwarden a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Watchers and correlator in one process.
    All,
    /// Only watchers, publishing to Kafka.
    Watch,
    /// Only the correlator, consuming from Kafka and writing the ledger.
    Correlate,
}

/// Requests (exemptions, resumes) waiting for the correlator.
const REQUESTS: usize = 64;

/// How many publishes may be in flight at once; order per key is kept.
const IN_FLIGHT: usize = 256;

/// Where a process without a ledger keeps the objects it published, under
/// `data_dir`.
const KNOWN_DIR: &str = "watch";

/// How often that record is saved (when it changed).
const KNOWN_SAVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Audit records received and not yet published; a full buffer slows the
/// webhook (and so the apiserver's batches) down, never drops a record.
const AUDIT_BUFFER: usize = 10_000;

/// A running Driftwarden: its ledger and its tasks.
#[derive(Debug)]
pub struct Running {
    /// The ledger the correlator writes (`None` for the watch role).
    pub ledger: Option<Arc<Ledger>>,
    /// Fetches every git source now (`notify_waiters`; SIGHUP does this).
    pub fetch_now: Arc<Notify>,
    /// The audit webhook server, when configured (watch roles).
    pub audit_webhook: Option<watch::RunningWebhook>,
    /// Where the API listens, when configured.
    pub api_addr: Option<std::net::SocketAddr>,
    /// Readiness of every part.
    pub health: Health,
    /// The process's metrics.
    pub metrics: crate::metrics::Metrics,
    ledger_threads: Vec<LedgerThread>,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Running {
    /// Waits until a task ends; an error of any task ends the run.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        while let Some(done) = self.tasks.join_next().await {
            done.context("a driftwarden task panicked")??;
        }
        Ok(())
    }

    /// Stops every task.
    pub async fn stop(mut self) {
        if let Some(webhook) = self.audit_webhook.take() {
            webhook.shutdown().await;
        }
        self.tasks.shutdown().await;
        for thread in std::mem::take(&mut self.ledger_threads) {
            thread.stop().await;
        }
    }
}

/// A thread of the ledger's readers and writers. The correlator and the
/// enforcer read and append sled records, which waits on the disk; each
/// runs on a thread like this, on a runtime of its own, so no worker of the
/// main runtime (watchers, audit webhook, git fetches, API) ever waits on
/// the ledger.
#[derive(Debug)]
struct LedgerThread {
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl LedgerThread {
    /// Runs `work` on a new ledger thread; the future returned ends with
    /// `work`'s result. Dropping the thread's handle stops `work`.
    fn spawn(
        name: &str,
        work: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) -> anyhow::Result<(Self, impl Future<Output = anyhow::Result<()>>)> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (done_tx, done) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start the ledger thread's runtime")
                    .and_then(|runtime| {
                        runtime.block_on(async {
                            tokio::select! {
                                result = work => result,
                                // Asked to stop, or the handle was dropped.
                                _ = stopped => Ok(()),
                            }
                        })
                    });
                if let Err(err) = &result {
                    tracing::error!(error = %format!("{err:#}"), "{} stopped", std::thread::current().name().unwrap_or("a ledger thread"));
                }
                let _ = done_tx.send(result);
            })
            .context("cannot start the ledger thread")?;
        let done = async move { done.await.context("the ledger thread panicked")? };
        Ok((Self { stop, thread }, done))
    }

    /// Stops the work and waits until the thread has let go of the ledger.
    async fn stop(self) {
        let _ = self.stop.send(());
        let thread = self.thread;
        if let Ok(Err(panic)) = tokio::task::spawn_blocking(move || thread.join()).await {
            tracing::error!(?panic, "the ledger thread panicked");
        }
    }
}

/// Opens the ledger in the config's data directory, refusing one whose
/// chain is shorter than, or differs from, its last signed checkpoint:
/// records lost or altered are never written over in silence.
pub fn open_ledger(config: &Config) -> anyhow::Result<Ledger> {
    let ledger = open_ledger_unchecked(config)?;
    if let Some((checkpoint, _)) = last_checkpoint(config)? {
        refuse_unless_matching(config, &ledger, &checkpoint, "its last checkpoint")?;
    }
    Ok(ledger)
}

/// Refuses `ledger` when its chain is shorter than, or differs from,
/// `checkpoint` (`what` names where that was found).
fn refuse_unless_matching(
    config: &Config,
    ledger: &Ledger,
    checkpoint: &ledger::Checkpoint,
    what: &str,
) -> anyhow::Result<()> {
    let path = config.data_dir.join("ledger");
    match ledger.check_against_checkpoint(checkpoint)? {
        CheckpointStatus::Matches => Ok(()),
        status @ CheckpointStatus::Behind { .. } => bail!(
            "the ledger in {} is shorter than {what}: {status}. Run `driftwarden \
             verify` to see what else is damaged; restore the ledger from a backup, or start \
             with `driftwarden run --accept-truncation` to record the loss and go on",
            path.display()
        ),
        status => bail!(
            "the ledger in {} does not match {what}: {status}. Someone rewrote it, \
             or it was replaced: run `driftwarden verify`, and restore the ledger from a backup",
            path.display()
        ),
    }
}

/// On a Kafka bus, checks `ledger` against the last checkpoint on the
/// checkpoint topic too: a ledger cut back together with the file beside
/// it is still refused.
async fn check_against_kafka(config: &Config, ledger: &Ledger) -> anyhow::Result<()> {
    if config.bus.kafka_config().is_none() {
        return Ok(());
    }
    let chosen = crate::checkpoints::for_verify(config, None).await?;
    if chosen.kafka_tampered {
        bail!("{}", chosen.text().trim());
    }
    let Some(found) = chosen.found else {
        return Ok(());
    };
    let source = found.source.to_string();
    refuse_unless_matching(config, ledger, &signed(config, found)?, &source)
}

/// The checkpoint `found`, once its signature checks against the key
/// beside the ledger.
fn signed(config: &Config, found: crate::checkpoints::Found) -> anyhow::Result<ledger::Checkpoint> {
    let trusted = checkpoint::trusted_key(&config.data_dir.join(checkpoint::KEY_FILE))?;
    found.checkpoint.verify(trusted.as_ref()).with_context(|| {
        format!(
            "the checkpoint in {} is not valid: someone altered it",
            found.source
        )
    })?;
    Ok(found.checkpoint)
}

/// Opens the ledger as it is, for `verify` to report on. A ledger another
/// process holds is said to be in use; one the storage engine cannot read is
/// reported as damaged, with what its last checkpoint says it held.
pub fn open_ledger_unchecked(config: &Config) -> anyhow::Result<Ledger> {
    let path = config.data_dir.join("ledger");
    match Ledger::open(&path) {
        Ok(ledger) => Ok(ledger),
        Err(err @ ledger::Error::Damaged { .. }) => {
            let log = config.data_dir.join(checkpoint::LOG_FILE);
            let held = match checkpoint::latest(&log) {
                Ok(Some(last)) => format!(
                    "its last checkpoint ({}) says it held {} records, the last with hash {}, \
                     at {}",
                    log.display(),
                    last.seq,
                    last.head,
                    last.at.to_rfc3339()
                ),
                Ok(None) => format!(
                    "no checkpoint ({}) says how many records it held",
                    log.display()
                ),
                Err(err) => format!("its checkpoints cannot be read either: {err}"),
            };
            Err(anyhow::Error::new(err).context(format!(
                "the ledger in {} is damaged, not in use: {held}. To go on, move the directory \
                 aside (keep it for investigation), restore the ledger from a backup if there is \
                 one, and run `driftwarden verify`; or start with an empty ledger and \
                 `driftwarden run --accept-truncation`, which records the records lost",
                path.display()
            )))
        }
        Err(err) => Err(anyhow::Error::new(err)),
    }
}

/// The last checkpoint beside the ledger, checked against the ledger's
/// checkpoint key (when it has one), and that key.
pub fn last_checkpoint(
    config: &Config,
) -> anyhow::Result<Option<(ledger::Checkpoint, Option<ledger::PublicKey>)>> {
    let log = config.data_dir.join(checkpoint::LOG_FILE);
    let Some(last) = checkpoint::latest(&log)? else {
        return Ok(None);
    };
    let trusted = checkpoint::trusted_key(&config.data_dir.join(checkpoint::KEY_FILE))?;
    last.verify(trusted.as_ref()).with_context(|| {
        format!(
            "the last checkpoint in {} is not valid: someone altered it; run `driftwarden verify`",
            log.display()
        )
    })?;
    Ok(Some((last, trusted)))
}

/// The checkpointer of `ledger`: its key is `data_dir/checkpoint.key`,
/// created on first use, and its checkpoints go to
/// `data_dir/checkpoints.jsonl`.
pub fn checkpointer(config: &Config, ledger: &Ledger) -> anyhow::Result<ledger::Checkpointer> {
    let key = CheckpointKey::load_or_create(&config.data_dir.join(checkpoint::KEY_FILE))?;
    Ok(ledger.checkpointer(key, config.data_dir.join(checkpoint::LOG_FILE))?)
}

/// Accepts the records lost from the end of the ledger (`run
/// --accept-truncation`): records a `control` record naming them and signs
/// a fresh checkpoint. Says what was accepted; nothing when the ledger
/// holds everything its checkpoint names.
pub async fn accept_truncation(config: &Config) -> anyhow::Result<Option<String>> {
    // The newer of the file's and, on Kafka, the topic's last checkpoint.
    let chosen = crate::checkpoints::for_verify(config, None).await?;
    let ledger = open_ledger_unchecked(config)?;
    let Some(found) = chosen.found else {
        return Ok(None);
    };
    let checkpoint = signed(config, found)?;
    match ledger.check_against_checkpoint(&checkpoint)? {
        CheckpointStatus::Matches => Ok(None),
        CheckpointStatus::Behind { .. } => {
            let accepted =
                ledger.accept_truncation(&checkpoint, &checkpointer(config, &ledger)?)?;
            Ok(Some(format!(
                "accepted the loss of records {}..={} (recorded as ledger record #{})",
                accepted.from, accepted.to, accepted.record
            )))
        }
        status => bail!("not a truncation, not accepted: {status}; run `driftwarden verify`"),
    }
}

/// The kinds the cluster's discovery calls cluster-scoped, so git's
/// manifests of them are keyed as the watchers key the objects; none
/// without cluster access (the built-in kinds and git's CRDs still count).
pub async fn cluster_scoped_kinds(client: Option<&kube::Client>) -> Vec<(String, String)> {
    let Some(client) = client else {
        return Vec::new();
    };
    watch::discovery::cluster_scoped_kinds(client)
        .await
        .unwrap_or_else(|err| {
            tracing::warn!(error = %err, "cannot read the cluster's kinds; using the built-in cluster-scoped kinds");
            Vec::new()
        })
}

/// A Kubernetes client for the configured cluster.
pub async fn kube_client(config: &Config) -> anyhow::Result<kube::Client> {
    let kube_config = match &config.cluster.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("kubeconfig {} is not usable", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig: set cluster.kubeconfig, $KUBECONFIG, or run in a cluster")?,
    };
    kube::Client::try_from(kube_config).context("cannot build a Kubernetes client")
}

/// Starts the roles `role` of `config` in the background.
pub async fn start(config: Config, role: Role) -> anyhow::Result<Running> {
    // The ledger, keys and socket are the process's alone.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let health = Health::default();
    let metrics = crate::metrics::Metrics::new(&config);
    let (publisher, consumer) = connect_bus(&config, role).await?;
    let mut tasks = JoinSet::new();
    let fetch_now = Arc::new(Notify::new());
    let digest_key = crate::keys::digest_key(&config)?;

    let ledger = match consumer {
        Some(_) => {
            let ledger = open_ledger(&config)?;
            check_against_kafka(&config, &ledger).await?;
            Some(Arc::new(ledger))
        }
        None => None,
    };
    if let Some(opened) = &ledger {
        health.set("ledger", true, format!("open, {} records", opened.len()));
        metrics.watch_ledger(opened.clone(), config.data_dir.join("ledger"));
    }
    // Signed checkpoints of the chain head beside the ledger: every
    // DEFAULT_INTERVAL, and once more when the ledger closes; on Kafka,
    // each is also published to the checkpoint topic, off the host.
    if let Some(opened) = &ledger {
        let mut checkpoints = checkpointer(&config, opened)?;
        if let Some(publish) = crate::checkpoints::publisher(&config).await? {
            checkpoints = checkpoints.on_checkpoint(publish);
        }
        opened.start_checkpoints(checkpoints, checkpoint::DEFAULT_INTERVAL)?;
    }
    // The cluster's own view of which kinds are cluster-scoped keys git's
    // manifests; CRD changes refresh it. A correlator without cluster
    // access (audit only) keys by the built-in kinds and git's CRDs.
    let enforcing = config
        .policies
        .iter()
        .any(|p| p.mode == Mode::Enforce || p.sync);
    let client = match kube_client(&config).await {
        Ok(client) => Some(client),
        Err(err) if publisher.is_none() && !enforcing => {
            tracing::warn!(error = %format!("{err:#}"), "no cluster access: cluster-scoped custom resources are known from git's CRDs only");
            None
        }
        Err(err) => return Err(err),
    };
    let cluster_scoped = cluster_scoped_kinds(client.as_ref()).await;
    let mut crds = None;
    if let Some(client) = &client {
        // One CRD watch for every watcher and source: a kind whose CRD
        // arrives later is watched, and keyed, at once.
        let (changes, watching_crds) = watch::watch_crds(client.clone());
        tasks.spawn(async move {
            watching_crds.await;
            Ok(())
        });
        crds = Some(changes);
    }
    let scopes = || {
        Some(desired::Scopes {
            client: client.clone()?,
            crds: crds.clone()?,
        })
    };
    // The correlator continues from the commits its ledger recorded; the
    // watch role alone reads git only to know which kinds to watch.
    let (desired, initial, sources) =
        desired::open_sources(&config, ledger.as_deref(), &cluster_scoped).await?;
    let (kinds_tx, kinds_rx) = latest::channel(watched_kinds(&config, &desired));
    let (git_tx, mut git_rx) = mpsc::channel(16);
    for (i, git) in sources.into_iter().enumerate() {
        let source = config.sources[i].clone();
        tasks.spawn(desired::fetch_loop(
            i,
            git,
            source,
            fetch_now.clone(),
            scopes(),
            git_tx.clone(),
            health.clone(),
            metrics.clone(),
        ));
    }

    let mut known = Vec::new();
    let mut ledger_threads = Vec::new();
    let mut api_addr = None;
    if let (Some(consumer), Some(opened)) = (consumer, ledger.clone()) {
        known = known_objects(&opened)?;
        let executor = client
            .as_ref()
            .filter(|_| enforcing)
            .map(|client| kinds::executor(client.clone(), digest_key.clone()));
        let own_writes = OwnWrites::default();
        let enforcer = Enforcer::new(
            &config,
            opened.clone(),
            executor,
            desired.clone(),
            own_writes.clone(),
        )?
        .with_metrics(metrics.clone());
        let (enforce_tx, enforce_rx) = mpsc::channel(64);
        let (requests_tx, requests_rx) = mpsc::channel(REQUESTS);
        let (desired_tx, desired_rx) = latest::channel(desired.clone());
        let mut correlator = Correlator::new(&config, opened.clone(), desired)?
            .with_enforcer(enforce_tx, own_writes)
            .with_requests(requests_rx)
            .with_health(health.clone())
            .with_metrics(metrics.clone());
        let notifier = crate::notifier::Notifier::new(
            &config,
            opened.clone(),
            desired_rx.clone(),
            health.clone(),
            metrics.clone(),
        )?;
        let siem = crate::siem::Publisher::new(&config, opened.clone(), metrics.clone()).await?;
        let state = ApiState {
            ledger: opened.clone(),
            desired: desired_rx,
            requests: requests_tx,
            health: health.clone(),
            digest_key: digest_key.clone(),
            config: Arc::new(config.clone()),
            tokens: crate::api::Tokens::load(&config)?,
            verified: Default::default(),
            metrics: metrics.clone(),
        };
        let (router, _) = crate::api::router(state);
        if let Some(api) = &config.api {
            let local =
                crate::api::serve::tcp(router.clone(), api.listen, api.tls.as_ref(), &mut tasks)
                    .await?;
            tracing::info!(listen = %local, tls = api.tls.is_some(), "API listening");
            api_addr = Some(local);
        }
        // The command line reaches the process on its socket, token or not.
        crate::api::serve::unix(router, &crate::api::socket_path(&config), &mut tasks)?;
        let kinds_config = config.clone();
        // Each on a thread of its own: they judge and enforce in parallel.
        let (thread, done) = LedgerThread::spawn("driftwarden-enforcer", enforcer.run(enforce_rx))?;
        tasks.spawn(done);
        ledger_threads.push(thread);
        let (thread, done) = LedgerThread::spawn("driftwarden-correlator", async move {
            let on_desired = move |desired: &Desired| {
                kinds_tx.send_replace(watched_kinds(&kinds_config, desired));
                desired_tx.send_replace(desired.clone());
            };
            for update in initial {
                correlator.on_git(update).await?;
            }
            on_desired(correlator.desired());
            correlator.run(consumer, git_rx, on_desired).await
        })?;
        tasks.spawn(done);
        ledger_threads.push(thread);
        if let Some(notifier) = notifier {
            let (thread, done) = LedgerThread::spawn("driftwarden-notifier", notifier.run())?;
            tasks.spawn(done);
            ledger_threads.push(thread);
        }
        if let Some(siem) = siem {
            let (thread, done) = LedgerThread::spawn("driftwarden-siem", siem.run())?;
            tasks.spawn(done);
            ledger_threads.push(thread);
        }
    } else {
        // The watch role follows new commits for the kinds they declare.
        let mut desired = desired;
        let kinds_config = config.clone();
        tasks.spawn(async move {
            while let Some(update) = git_rx.recv().await {
                desired.update(update.source, update.index);
                kinds_tx.send_replace(watched_kinds(&kinds_config, &desired));
            }
            Ok(())
        });
    }
    let mut audit_webhook = None;
    if let Some(publisher) = publisher {
        if let Some(webhook) = &config.audit_webhook {
            let (records_tx, records_rx) = mpsc::channel(AUDIT_BUFFER);
            let running = watch::serve_audit_webhook(
                webhook.server_settings(),
                config.cluster.name.clone(),
                records_tx,
            )
            .await
            .with_context(|| format!("cannot serve the audit webhook on {}", webhook.listen))?;
            tracing::info!(listen = %running.local_addr(), "audit webhook listening");
            tasks.spawn(publish_audits(
                records_rx,
                publisher.clone(),
                metrics.clone(),
            ));
            audit_webhook = Some(running);
        }
        let (Some(client), Some(crds)) = (client, crds) else {
            bail!("the watch role needs cluster access");
        };
        // Without a ledger, the watchers remember what they published.
        let published = match ledger {
            Some(_) => None,
            None => Some(watch::KnownFile::open(&config.data_dir.join(KNOWN_DIR))?),
        };
        // What every watcher shares; each adds its kinds and known objects.
        let mut base = watch::WatchSpec::new(config.cluster.name.clone(), digest_key)
            .record_derived(config.watch.record_derived);
        base.namespaces = config.watch.namespaces.clone();
        base.label_selector = config.watch.label_selector.clone();
        let watchers = Watchers {
            health: health.clone(),
            metrics: metrics.clone(),
        };
        tasks.spawn(watch_loop(
            base, client, publisher, kinds_rx, known, crds, published, watchers,
        ));
    }
    Ok(Running {
        ledger,
        fetch_now,
        audit_webhook,
        api_addr,
        health,
        metrics,
        ledger_threads,
        tasks,
    })
}

/// The bus ends this process uses: a publisher for watchers, a consumer for
/// the correlator.
async fn connect_bus(
    config: &Config,
    role: Role,
) -> anyhow::Result<(Option<Publisher>, Option<Consumer>)> {
    match (&config.bus, role) {
        (Bus::Embedded { capacity }, Role::All) => {
            let (publisher, consumer) = bus::embedded(*capacity)?;
            Ok((Some(publisher), Some(consumer)))
        }
        (Bus::Embedded { .. }, _) => bail!(
            "--role {role:?} needs a shared bus: set `bus: {{type: kafka, ...}}` in the config, or run --role all"
        ),
        (Bus::Kafka { partitions, .. }, role) => {
            let kafka = config
                .bus
                .kafka_config()
                .context("a Kafka bus has Kafka settings")?;
            // The first request: refused credentials end the start here.
            bus::ensure_topics(&kafka, *partitions)
                .await
                .map_err(|err| kafka_error(&config.bus, err))?;
            let publisher = matches!(role, Role::All | Role::Watch)
                .then(|| Publisher::kafka(&kafka))
                .transpose()
                .map_err(|err| kafka_error(&config.bus, err))?;
            let consumer = matches!(role, Role::All | Role::Correlate)
                .then(|| Consumer::kafka(&kafka))
                .transpose()
                .map_err(|err| kafka_error(&config.bus, err))?;
            Ok((publisher, consumer))
        }
    }
}

/// A Kafka bus error at start, naming the config setting to fix.
fn kafka_error(bus: &Bus, err: bus::Error) -> anyhow::Error {
    let Bus::Kafka {
        brokers, security, ..
    } = bus
    else {
        return err.into();
    };
    let sasl = security.as_ref().and_then(|s| s.sasl.as_ref());
    let message = match (&err, sasl) {
        (
            bus::Error::Refused {
                kind: bus::Refusal::Authentication,
                ..
            },
            Some(sasl),
        ) => format!(
            "`bus.security.sasl` is refused: Kafka at {brokers} did not authenticate user `{}` \
             with {}; check `bus.security.sasl.username` and the password in {}",
            sasl.username,
            sasl.mechanism,
            sasl.password_file.display()
        ),
        (
            bus::Error::Refused {
                kind: bus::Refusal::Authentication,
                ..
            },
            None,
        ) => format!(
            "`bus.security` is refused: Kafka at {brokers} asks for authentication; \
             set `protocol` and `sasl`"
        ),
        (
            bus::Error::Refused {
                kind: bus::Refusal::Tls,
                ..
            },
            _,
        ) => format!(
            "`bus.security`: the TLS handshake with Kafka at {brokers} failed; check \
             `bus.security.ca_file` (the CA of the brokers' certificates) and \
             `bus.security.cert_file`/`key_file`"
        ),
        (bus::Error::Security(security), _) => {
            format!("`bus.security.{}` is not usable", security.setting())
        }
        (bus::Error::Kafka { action, .. }, _) if action.starts_with("create the") => format!(
            "cannot set up the Kafka client for {brokers}: check `bus.security` and `bus.librdkafka`"
        ),
        _ => format!("cannot reach Kafka at {brokers}"),
    };
    anyhow::Error::new(err).context(message)
}

/// Every kind git declares plus the configured extra kinds.
fn watched_kinds(config: &Config, desired: &Desired) -> BTreeSet<(String, String)> {
    let mut kinds = desired.kinds();
    kinds.extend(
        config
            .watch
            .extra_kinds
            .iter()
            .map(|k| (k.api_version.clone(), k.kind.clone())),
    );
    kinds
}

/// Objects the ledger holds alive, so the watchers report the ones deleted
/// while nobody watched.
fn known_objects(ledger: &Ledger) -> anyhow::Result<Vec<watch::KnownObject>> {
    let mut known = Vec::new();
    for entry in ledger.objects() {
        let (key, state) = entry?;
        if state.latest.is_some() {
            known.push(watch::KnownObject {
                key,
                uid: state.uid,
            });
        }
    }
    Ok(known)
}

/// Watches the kinds in `kinds`, starting watchers for kinds that new
/// commits add, and publishes every change.
///
/// `known` are the objects the ledger holds alive; a process without a
/// ledger passes `published` instead, the file of what it published, which
/// is then read for `known` and kept up to date (saved every
/// [`KNOWN_SAVE_INTERVAL`] when it changed, and on stopping).
// Each part is a separate concern the caller wires; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
async fn watch_loop(
    base: watch::WatchSpec,
    client: kube::Client,
    publisher: Publisher,
    mut kinds: latest::Receiver<BTreeSet<(String, String)>>,
    known: Vec<watch::KnownObject>,
    crds: watch::CrdChanges,
    published: Option<watch::KnownFile>,
    reports: Watchers,
) -> anyhow::Result<()> {
    let base = base.on_state(reports.hook());
    reports.set(reports.metrics.watching([]));
    let mut watching = BTreeSet::new();
    let mut watchers = JoinSet::new();
    let known = match &published {
        Some(file) => {
            let known = file.objects();
            tracing::info!(
                path = %file.path().display(),
                objects = known.len(),
                "known objects read"
            );
            let file = file.clone();
            watchers.spawn(async move {
                file.save_every(KNOWN_SAVE_INTERVAL).await;
                Ok(())
            });
            known
        }
        None => known,
    };
    loop {
        let wanted = kinds.borrow_and_update().clone();
        let new: Vec<_> = wanted.difference(&watching).cloned().collect();
        if !new.is_empty() {
            tracing::info!(kinds = ?new, "watching");
            reports.set(
                reports
                    .metrics
                    .watching(new.iter().map(|(_, kind)| kind.as_str())),
            );
            // Every spec gets every known object; each watcher keeps those
            // of its kind and namespace.
            let mut spec = base.clone().known(known.iter().cloned());
            spec.kinds = new.clone();
            watchers.spawn(publish_changes(
                client.clone(),
                spec,
                crds.clone(),
                publisher.clone(),
                published.clone(),
                reports.metrics.clone(),
            ));
            watching.extend(new);
        }
        tokio::select! {
            changed = kinds.changed() => if changed.is_err() {
                // The correlator stopped; keep watching what we watch.
                break;
            },
            Some(done) = watchers.join_next() => {
                done.context("a watcher panicked")??;
            }
        }
    }
    while let Some(done) = watchers.join_next().await {
        done.context("a watcher panicked")??;
    }
    Ok(())
}

/// Publishes every change `spec` yields, noting each published one in
/// `published` when given; watch errors are logged (once per failing
/// streak: the watchers retry quietly).
async fn publish_changes(
    client: kube::Client,
    spec: watch::WatchSpec,
    crds: watch::CrdChanges,
    publisher: Publisher,
    published: Option<watch::KnownFile>,
    metrics: crate::metrics::Metrics,
) -> anyhow::Result<()> {
    watch::watch_with_crds(client, spec, crds)
        .filter_map(|item| async move {
            item.map_err(|err| {
                let err = anyhow::Error::new(err);
                tracing::warn!(error = format!("{err:#}"), "watch error; retrying");
            })
            .ok()
        })
        .map(|event| {
            let publisher = publisher.clone();
            async move {
                let seen = (watch::KnownObject::from(&event), event.kind);
                let key = event.key.to_string();
                let message = Message::Change(event);
                // An object too large for the bus goes truncated, marked
                // with its digest and size, rather than ending the watch.
                if let Sent::Truncated {
                    bytes,
                    identity_only,
                } = publisher.publish_fitting(&message).await?
                {
                    tracing::warn!(
                        %key,
                        bytes,
                        identity_only,
                        "change too large for the bus: published truncated"
                    );
                }
                Ok::<_, bus::Error>(seen)
            }
        })
        .buffered(IN_FLIGHT)
        .try_for_each(|(object, kind)| {
            if let Some(file) = &published {
                file.record(object, kind);
            }
            async { Ok(()) }
        })
        .await
        .inspect_err(|_| metrics.bus_error("publish"))
        .context("cannot publish to the bus")
}

/// Where the watchers report their state: the readiness part `watchers`
/// (ready once every kind's first listing is done, not while a watcher
/// fails) and the metrics.
#[derive(Debug, Clone)]
struct Watchers {
    health: Health,
    metrics: crate::metrics::Metrics,
}

impl Watchers {
    fn set(&self, (ready, detail): (bool, String)) {
        self.health.set("watchers", ready, detail);
    }

    /// The hook the watchers call when their state changes.
    fn hook(&self) -> watch::StateHook {
        let reports = self.clone();
        watch::StateHook::new(move |status| reports.set(reports.metrics.watcher_status(&status)))
    }
}

/// Publishes every audit record the webhook receives, in order.
async fn publish_audits(
    mut records: mpsc::Receiver<model::AuditRecord>,
    publisher: Publisher,
    metrics: crate::metrics::Metrics,
) -> anyhow::Result<()> {
    while let Some(record) = records.recv().await {
        publisher
            .publish(&Message::Audit(record))
            .await
            .inspect_err(|_| metrics.bus_error("publish"))
            .context("cannot publish an audit record to the bus")?;
    }
    Ok(())
}
