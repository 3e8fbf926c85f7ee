//! Command line interface: parse arguments, run one command, map errors to
//! an exit code with a readable message.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use model::{Exemption, ExemptionScope, ObjectKey};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

use crate::api::client::Client;
use crate::api::views;
use crate::config::{Bus, Config};
use crate::inspect;
use crate::requests::Request;
use crate::run::Role;
use anyhow::Context as _;
use axum::http::Method;

/// Driftwarden: who changed what in the cluster, when, and was it declared in git?
#[derive(Debug, Parser)]
#[command(name = "driftwarden", version, about)]
pub struct Cli {
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    /// How to reach a running Driftwarden.
    #[command(flatten)]
    pub remote: Remote,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// How `history`, `diff`, `verify`, `replay`, `exempt`, `revoke` and `resume` reach
/// a running Driftwarden (one that holds the ledger): its Unix socket in
/// `data_dir` unless `--server` is given.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Remote {
    /// Use the running Driftwarden's HTTP API at this URL (e.g.
    /// `https://driftwarden:8080`) instead of the ledger or the local socket.
    #[arg(long, global = true, requires = "token_file")]
    pub server: Option<String>,
    /// File holding the API token for `--server`.
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// CA certificates (PEM) of an HTTPS `--server`.
    #[arg(long, global = true)]
    pub ca_file: Option<PathBuf>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Readable text.
    Human,
    /// JSON for machines.
    Json,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config file and print what it would watch.
    Check {
        /// The config file.
        #[arg(short, long, env = "DRIFTWARDEN_CONFIG")]
        config: PathBuf,
        /// Also say which policy rule governs this object
        /// (`group/Kind/namespace/name`).
        #[arg(long)]
        object: Option<String>,
        /// With `--object`: the last known-good labels of an object git does
        /// not declare (`app=web,tier=front`); for a declared object the
        /// labels git declares decide, as when running.
        #[arg(long, requires = "object", value_delimiter = ',')]
        labels: Vec<String>,
        /// Print instead the least RBAC the config needs (Kubernetes YAML;
        /// a `v1/List` with `-o json`): reads of the watched kinds, writes
        /// only where a rule enforces or syncs.
        #[arg(long, conflicts_with = "object")]
        rbac: bool,
        /// With `--rbac`: the ServiceAccount to bind, `NAMESPACE:NAME`.
        #[arg(long, requires = "rbac", default_value = "driftwarden:driftwarden")]
        service_account: crate::rbac::ServiceAccount,
    },
    /// Watch the cluster, judge every change against git, keep the ledger.
    Run {
        /// The config file.
        #[arg(short, long, env = "DRIFTWARDEN_CONFIG")]
        config: PathBuf,
        /// Which parts to run in this process.
        #[arg(long, value_enum, default_value_t = Role::All)]
        role: Role,
        /// Start although the ledger holds fewer records than its last
        /// signed checkpoint names: the loss is recorded in the ledger.
        #[arg(long)]
        accept_truncation: bool,
    },
    /// Current drift against git HEAD, as last observed.
    Diff {
        /// The config file.
        #[arg(short, long, env = "DRIFTWARDEN_CONFIG")]
        config: PathBuf,
    },
    /// The timeline of one object: every change, its verdict and its diff.
    History {
        /// The config file.
        #[arg(short, long, env = "DRIFTWARDEN_CONFIG")]
        config: PathBuf,
        /// The object: `group/Kind/namespace/name` (group `core` for the core
        /// API group, empty namespace for cluster-scoped objects), optionally
        /// prefixed with the cluster name.
        key: String,
    },
    /// Walk the ledger's hash chain and report any record that was altered,
    /// removed or reordered; compare the indexes derived from it, and the
    /// chain with its last signed checkpoint (records lost from the end).
    Verify {
        /// The config file.
        #[arg(short, long, env = "DRIFTWARDEN_CONFIG")]
        config: PathBuf,
        /// Compare with the last checkpoint in this file (one kept
        /// elsewhere) instead of `checkpoints.jsonl` beside the ledger and,
        /// on a Kafka bus, the checkpoint topic (of those two, the one
        /// naming the longer chain is used).
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// Rebuild the indexes that differ from the chain (only when the
        /// chain itself verifies); the repair is recorded in the ledger.
        #[arg(long)]
        repair: bool,
    },
    /// Grant a time-boxed break-glass exemption: changes in scope are
    /// allowed (and not reverted) until it expires. Recorded in the ledger.
    Exempt {
        /// The config file.
        #[arg(short, long, env = "DRIFTWARDEN_CONFIG")]
        config: PathBuf,
        /// The object (as for `history`); or use `--scope`.
        #[arg(required_unless_present = "scope", conflicts_with = "scope")]
        key: Option<String>,
        /// Exempt a whole namespace instead of one object.
        #[arg(long)]
        scope: Option<String>,
        /// How long, e.g. `2h`, `30m`.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Why: recorded with the exemption and shown in reports.
        #[arg(long)]
        reason: String,
    },
    /// End an exemption before it expires. Recorded in the ledger.
    Revoke {
        /// The config file.
        #[arg(short, long, env = "DRIFTWARDEN_CONFIG")]
        config: PathBuf,
        /// The exemption's ledger record (`#N` in `exempt`'s answer).
        exemption: u64,
        /// Why: recorded with the revocation.
        #[arg(long)]
        reason: String,
    },
    /// Judge recorded history again under another policy and report what it
    /// would have reverted.
    Replay {
        /// The config file.
        #[arg(short, long, env = "DRIFTWARDEN_CONFIG")]
        config: PathBuf,
        /// A YAML file with `trust` and `policies`, as in the config.
        #[arg(long)]
        policy: PathBuf,
        /// How far back, e.g. `7d`, `12h`.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "7d")]
        since: std::time::Duration,
    },
    /// What happened in a period: drift by namespace, kind and actor,
    /// unresolved drift with its diff, time to revert and adopt,
    /// exemptions and git commits; as Markdown, HTML, JSON or CSV.
    Report {
        /// The config file.
        #[arg(short, long, env = "DRIFTWARDEN_CONFIG")]
        config: PathBuf,
        /// Start of the period: a duration back from now (`7d`, `36h`) or
        /// an RFC 3339 time (`2026-05-01T00:00:00Z`).
        #[arg(long, default_value = "7d", value_name = "TIME")]
        since: crate::report::When,
        /// End of the period (not included), as `--since`; default now.
        #[arg(long, value_name = "TIME")]
        until: Option<crate::report::When>,
        /// Only objects in this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// `md`, `html` (one self-contained file), `json` or `csv` (one row
        /// per change).
        #[arg(long, value_enum, default_value_t = crate::report::Format::Md)]
        format: crate::report::Format,
        /// Write the report to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Resume enforcement paused by the circuit breaker.
    Resume {
        /// The config file.
        #[arg(short, long, env = "DRIFTWARDEN_CONFIG")]
        config: PathBuf,
        /// Why: recorded with the resume.
        #[arg(long, default_value = "resumed by hand")]
        reason: String,
    },
}

/// Runs the CLI with the process arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Run { .. }) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(Outcome { text, ok }) => {
            print!("{text}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// What a command prints, and whether it succeeded.
#[derive(Debug)]
pub struct Outcome {
    /// Standard output.
    pub text: String,
    /// False when the command found a problem (e.g. a broken chain).
    pub ok: bool,
}

impl From<String> for Outcome {
    fn from(text: String) -> Self {
        Self { text, ok: true }
    }
}

/// Runs one command and returns what it prints.
pub async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let json = cli.output == Output::Json;
    let remote = cli.remote;
    match cli.command {
        Command::Check {
            config: path,
            object,
            labels,
            rbac,
            service_account,
        } => {
            let config = Config::load(&path)?;
            if rbac {
                return rbac_text(&config, &path, service_account, json)
                    .await
                    .map(Into::into);
            }
            let mut text = if json {
                to_json(&summary(&config))?
            } else {
                describe(&config)
            };
            if !json && config.policies.iter().any(|p| p.prune) {
                text.push_str(&prune_candidates(&config).await?);
            }
            if let Some(object) = object {
                let key = parse_key(&config, &object)?;
                let labels = labels
                    .iter()
                    .map(|pair| {
                        pair.split_once('=')
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .ok_or_else(|| anyhow::anyhow!("label `{pair}` is not key=value"))
                    })
                    .collect::<anyhow::Result<_>>()?;
                // The scope comes from git's labels, as when running; the
                // labels given stand for the last known-good ones of an
                // object git does not declare.
                let (desired, _, _) =
                    crate::desired::open_sources(&config, None, &cluster_scoped(&config).await)
                        .await?;
                let declared = desired
                    .history(&key)
                    .and_then(|h| h.entries.iter().rev().find_map(|e| e.manifest.as_ref()));
                let labels = match declared {
                    Some(manifest) => {
                        let _ = writeln!(text, "{key}: scope from the labels git declares");
                        enforce::labels_of(manifest)
                    }
                    None => labels,
                };
                let governing = config.policy_index(&key.namespace, &key.kind, &labels);
                let _ = match governing.map(|i| &config.policies[i]) {
                    Some(p) => writeln!(
                        text,
                        "{key} is governed by policy {} (mode {})",
                        p.name, p.mode
                    ),
                    None => writeln!(
                        text,
                        "{key} is governed by no policy: audit only, never written"
                    ),
                };
            }
            Ok(text.into())
        }
        Command::Run {
            config,
            role,
            accept_truncation,
        } => {
            let config = Config::load(&config)?;
            if accept_truncation
                && let Some(accepted) = crate::run::accept_truncation(&config).await?
            {
                tracing::warn!("{accepted}");
            }
            let running = crate::run::start(config, role).await?;
            // SIGHUP fetches every git source now (e.g. from a push hook).
            let fetch_now = running.fetch_now.clone();
            let mut hangups = signal(SignalKind::hangup())?;
            let mut terminate = signal(SignalKind::terminate())?;
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    tracing::info!("SIGHUP: fetching git now");
                    fetch_now.notify_waiters();
                }
            });
            tokio::select! {
                result = running.wait() => result?,
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
                _ = terminate.recv() => tracing::info!("terminated; stopping"),
            }
            Ok(String::new().into())
        }
        Command::Diff { config } => {
            let config = Config::load(&config)?;
            let (drift, head) = match reach(&config, &remote, crate::run::open_ledger)? {
                Reach::Ledger(ledger) => {
                    let (desired, _, _) = crate::desired::open_sources(
                        &config,
                        Some(&ledger),
                        &cluster_scoped(&config).await,
                    )
                    .await?;
                    let key = crate::keys::digest_key(&config)?;
                    (inspect::drift(&ledger, &desired, &key)?, ledger.head().0)
                }
                Reach::Running(client) => {
                    let view: views::DriftView = client.get("/v1/drift").await?;
                    let drift = view
                        .drift
                        .into_iter()
                        .map(serde_json::from_value)
                        .collect::<Result<_, _>>()?;
                    (drift, view.head_seq)
                }
            };
            let text = if json {
                to_json(&drift)?
            } else {
                inspect::drift_text(&drift, head)
            };
            Ok(Outcome {
                text,
                ok: drift.is_empty(),
            })
        }
        Command::History { config, key } => {
            let config = Config::load(&config)?;
            let key = parse_key(&config, &key)?;
            let records = match reach(&config, &remote, crate::run::open_ledger)? {
                Reach::Ledger(ledger) => ledger.history(&key)?,
                Reach::Running(client) => {
                    let path = format!("/v1/history?key={}", encode(&key.to_string()));
                    let view: views::HistoryView = client.get(&path).await?;
                    view.records.into_iter().map(Into::into).collect()
                }
            };
            Ok(if json {
                to_json(&records)?
            } else {
                inspect::history(&records)
            }
            .into())
        }
        Command::Exempt {
            config,
            key,
            scope,
            duration,
            reason,
        } => {
            let config = Config::load(&config)?;
            let scope = match (key, scope) {
                (Some(key), _) => ExemptionScope::Object {
                    key: parse_key(&config, &key)?,
                },
                (None, Some(namespace)) => ExemptionScope::Namespace {
                    cluster: config.cluster.name.clone(),
                    namespace,
                },
                (None, None) => anyhow::bail!("name an object KEY or a namespace with --scope"),
            };
            let from = chrono::Utc::now();
            let exemption = Exemption {
                scope,
                from,
                until: from + chrono::Duration::from_std(duration)?,
                reason,
                granted_by: local_user(),
            };
            let text = format!(
                "exemption for {} until {}: {}",
                exemption.scope, exemption.until, exemption.reason
            );
            let grant = views::GrantRequest {
                key: match &exemption.scope {
                    ExemptionScope::Object { key } => Some(key.to_string()),
                    ExemptionScope::Namespace { .. } => None,
                },
                namespace: match &exemption.scope {
                    ExemptionScope::Namespace { namespace, .. } => Some(namespace.clone()),
                    ExemptionScope::Object { .. } => None,
                },
                duration: humantime::format_duration(duration).to_string(),
                reason: exemption.reason.clone(),
            };
            let request = Request::Exempt(exemption);
            let recorded = deliver(
                &config,
                &remote,
                &request,
                Method::POST,
                "/v1/exemptions",
                &grant,
            )
            .await?;
            Ok(format!("{text}\n{recorded}").into())
        }
        Command::Revoke {
            config,
            exemption,
            reason,
        } => {
            let config = Config::load(&config)?;
            let why = views::ReasonRequest {
                reason: reason.clone(),
            };
            let request = Request::Revoke(model::Revocation {
                exemption,
                reason,
                revoked_by: local_user(),
            });
            let path = format!("/v1/exemptions/{exemption}");
            Ok(
                deliver(&config, &remote, &request, Method::DELETE, &path, &why)
                    .await?
                    .into(),
            )
        }
        Command::Replay {
            config,
            policy,
            since,
        } => {
            let config = Config::load(&config)?;
            let text = std::fs::read_to_string(&policy)
                .with_context(|| format!("cannot read policy file {}", policy.display()))?;
            let policy = crate::replay::PolicyFile::parse(&text, &policy.display().to_string())?;
            let ledger = match reach(&config, &remote, crate::run::open_ledger)? {
                Reach::Ledger(ledger) => std::sync::Arc::new(ledger),
                Reach::Running(client) => {
                    let asked = views::ReplayRequest {
                        policy: text,
                        since: humantime::format_duration(since).to_string(),
                    };
                    let view: views::ReplayView =
                        client.send(Method::POST, "/v1/replay", &asked).await?;
                    return Ok(if json {
                        to_json(&view.report)?
                    } else {
                        view.text
                    }
                    .into());
                }
            };
            let (desired, _, _) = crate::desired::open_sources(
                &config,
                Some(&ledger),
                &cluster_scoped(&config).await,
            )
            .await?;
            let since = chrono::Utc::now() - chrono::Duration::from_std(since)?;
            let report = crate::replay::replay(&config, policy, ledger, desired, since)?;
            Ok(if json {
                to_json(&report)?
            } else {
                crate::replay::text(&report)
            }
            .into())
        }
        Command::Report {
            config,
            since,
            until,
            namespace,
            format,
            out,
        } => {
            let config = Config::load(&config)?;
            let now = chrono::Utc::now();
            let scope = crate::report::Scope::new(
                since.at(now),
                until.map_or(now, |until| until.at(now)),
                namespace,
            )
            .map_err(|err| match err.field() {
                Some(field) => anyhow::anyhow!("--{field}: {err}"),
                None => err.into(),
            })?;
            let reached = reach(&config, &remote, crate::run::open_ledger)?;
            let mut sink: Box<dyn std::io::Write> = match &out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create --out {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            match reached {
                Reach::Ledger(ledger) => {
                    let context = crate::report::Context {
                        cluster: config.cluster.name.clone(),
                        verification: crate::report::Verification::not_in_this_process(),
                        now,
                        readers: crate::report::readers(),
                    };
                    crate::report::write(&ledger, &scope, &context, format, &mut sink)?;
                }
                Reach::Running(client) => {
                    crate::report::remote::fetch(&client, &scope, format, &mut sink).await?;
                }
            }
            sink.flush()?;
            Ok(match out {
                Some(path) => format!("{format} report written to {}\n", path.display()),
                None => String::new(),
            }
            .into())
        }
        Command::Resume { config, reason } => {
            let config = Config::load(&config)?;
            let why = views::ReasonRequest {
                reason: reason.clone(),
            };
            let request = Request::Resume {
                reason: format!("{reason} (by {})", local_user()),
            };
            Ok(
                deliver(&config, &remote, &request, Method::POST, "/v1/resume", &why)
                    .await?
                    .into(),
            )
        }
        Command::Verify {
            config,
            checkpoint,
            repair,
        } => {
            let config = Config::load(&config)?;
            let ledger = match reach(&config, &remote, crate::run::open_ledger_unchecked)? {
                Reach::Ledger(ledger) => ledger,
                Reach::Running(_) if repair => anyhow::bail!(
                    "the ledger is held by a running driftwarden: stop it before `verify --repair`"
                ),
                Reach::Running(_) if checkpoint.is_some() => anyhow::bail!(
                    "the ledger is held by a running driftwarden, which verifies against its own \
                     checkpoints: stop it to verify against --checkpoint FILE"
                ),
                Reach::Running(client) => {
                    let verified: views::VerifiedView =
                        client.send(Method::POST, "/v1/verify", &()).await?;
                    let text = if json {
                        to_json(&verified.report)?
                    } else {
                        verified.text
                    };
                    return Ok(Outcome {
                        text,
                        ok: verified.ok,
                    });
                }
            };
            let trusted = ledger::checkpoint::trusted_key(
                &config.data_dir.join(ledger::checkpoint::KEY_FILE),
            )?;
            // The file beside the ledger and, on Kafka, the checkpoint
            // topic: whichever names the longer chain.
            let chosen = crate::checkpoints::for_verify(&config, checkpoint.as_deref()).await?;
            let checkpoint = chosen.checkpoint();
            let mut report = ledger.verify_with(checkpoint, trusted.as_ref())?;
            let mut repaired = None;
            if repair && !report.is_ok() && report.chain_ok() {
                repaired = Some(ledger.repair(checkpoint, trusted.as_ref())?);
                report = ledger.verify_with(checkpoint, trusted.as_ref())?;
            }
            let text = match (json, &repaired) {
                (true, None) => to_json(&chosen.annotate(serde_json::to_value(&report)?))?,
                (true, Some(repaired)) => to_json(&serde_json::json!({
                    "repaired": repaired,
                    "report": chosen.annotate(serde_json::to_value(&report)?),
                }))?,
                (false, _) => inspect::verify(&report, repaired.as_ref(), repair) + &chosen.text(),
            };
            Ok(Outcome {
                text,
                ok: report.is_ok() && !chosen.kafka_tampered,
            })
        }
    }
}

/// Where a command reads the ledger.
enum Reach<L> {
    /// Itself: no Driftwarden runs.
    Ledger(L),
    /// Through the running Driftwarden, which holds the ledger.
    Running(Client),
}

/// Opens the ledger with `open`; when a running Driftwarden holds it (or
/// `--server` says so), the way to that process instead.
fn reach<L>(
    config: &Config,
    remote: &Remote,
    open: impl FnOnce(&Config) -> anyhow::Result<L>,
) -> anyhow::Result<Reach<L>> {
    if let Some(server) = &remote.server {
        let token = remote
            .token_file
            .as_deref()
            .context("--server needs --token-file")?;
        return Ok(Reach::Running(Client::http(
            server,
            token,
            remote.ca_file.as_deref(),
        )?));
    }
    match open(config) {
        Ok(ledger) => Ok(Reach::Ledger(ledger)),
        // Only a ledger another process holds is reached through it; a
        // damaged or truncated one is an error to fix.
        Err(err)
            if err
                .downcast_ref::<ledger::Error>()
                .is_some_and(|err| matches!(err, ledger::Error::Locked { .. })) =>
        {
            tracing::debug!(error = %err, "ledger in use; asking the running driftwarden");
            Ok(Reach::Running(Client::Socket(crate::api::socket_path(
                config,
            ))))
        }
        Err(err) => Err(err),
    }
}

/// Records `request` in the ledger, or has the running Driftwarden record
/// it (`body` to `path`).
async fn deliver(
    config: &Config,
    remote: &Remote,
    request: &Request,
    method: Method,
    path: &str,
    body: &impl serde::Serialize,
) -> anyhow::Result<String> {
    match reach(config, remote, crate::run::open_ledger)? {
        Reach::Ledger(ledger) => {
            let appended = ledger.append(vec![request.record()], &[])?;
            ledger.flush()?;
            let seq = appended.seqs.first().copied().unwrap_or_default();
            Ok(format!("recorded as ledger record #{seq}\n"))
        }
        Reach::Running(client) => {
            let recorded: views::Recorded = client.send(method, path, body).await?;
            Ok(format!(
                "recorded by the running driftwarden as ledger record #{}\n",
                recorded.seq
            ))
        }
    }
}

/// `text` for a URL's query.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The user running the command, for the record.
fn local_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// An object key from the command line; the cluster may be left out.
pub fn parse_key(config: &Config, key: &str) -> anyhow::Result<ObjectKey> {
    let full = if key.split('/').count() == 4 {
        format!("{}/{key}", config.cluster.name)
    } else {
        key.to_owned()
    };
    Ok(full.parse()?)
}

/// `value` as pretty JSON with a final newline.
fn to_json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// A human description of what a config watches.
fn describe(config: &Config) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "config ok: cluster `{}`, data in {}",
        config.cluster.name,
        config.data_dir.display()
    );
    let _ = match &config.bus {
        Bus::Embedded { capacity } => writeln!(w, "bus: embedded (capacity {capacity})"),
        Bus::Kafka {
            brokers,
            topic_prefix,
            group_id,
            security,
            ..
        } => writeln!(
            w,
            "bus: kafka {brokers} (topics {topic_prefix}driftwarden.*.v1, group {group_id}; {})",
            security.as_ref().map_or_else(
                || "plaintext, no authentication".to_owned(),
                |s| s.to_bus().summary()
            )
        ),
    };
    let _ = writeln!(w, "desired state:");
    for s in &config.sources {
        let paths = if s.paths.is_empty() {
            "/".to_owned()
        } else {
            s.paths.join(", ")
        };
        let _ = writeln!(
            w,
            "  {}: {} branch {} paths {} (default namespace {}, fetch every {})",
            s.name,
            s.url,
            s.branch,
            paths,
            s.default_namespace,
            humantime::format_duration(s.interval)
        );
    }
    let watch = &config.watch;
    let namespaces = if watch.namespaces.is_empty() {
        "all".to_owned()
    } else {
        watch.namespaces.join(", ")
    };
    let _ = writeln!(
        w,
        "watches: every kind git declares, in namespaces: {namespaces}"
    );
    for kind in &watch.extra_kinds {
        let _ = writeln!(w, "  also {kind} (to catch objects created outside git)");
    }
    if let Some(selector) = &watch.label_selector {
        let _ = writeln!(w, "  only objects matching labels `{selector}`");
    }
    let trust = &config.trust;
    let managers: Vec<String> = trust
        .managers
        .iter()
        .map(|b| {
            let bound: Vec<&str> = b
                .users
                .iter()
                .chain(&b.groups)
                .chain(&b.service_accounts)
                .map(String::as_str)
                .collect();
            format!("{} ⇐ {{{}}}", b.name, bound.join(", "))
        })
        .collect();
    let _ = writeln!(
        w,
        "trusted for undeclared fields: users [{}], groups [{}], service accounts [{}], managers [{}]",
        trust.users.join(", "),
        trust.groups.join(", "),
        trust.service_accounts.join(", "),
        managers.join(", ")
    );
    if trust.accept_unverified_managers {
        let _ = writeln!(
            w,
            "warning: trust.accept_unverified_managers is on: any client can claim a trusted manager name; use it only where the apiserver cannot send audit events"
        );
    }
    for name in trust.unbound_managers() {
        let _ = writeln!(
            w,
            "warning: trusted manager `{name}` is bound to no user, group or service account: it never counts (bind it, or accept unverified managers)"
        );
    }
    if config.policies.is_empty() {
        let _ = writeln!(w, "policies: none (everything in audit mode)");
    }
    for p in &config.policies {
        let m = &p.matches;
        let _ = writeln!(
            w,
            "policy {}: mode {} for namespaces [{}] kinds [{}] labels [{}]; grace {}, prune {}, sync {}",
            p.name,
            p.mode,
            m.namespaces.join(", "),
            m.kinds.join(", "),
            m.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
            humantime::format_duration(p.grace),
            if p.prune { "on" } else { "off" },
            if p.sync { "on" } else { "off" },
        );
    }
    if let Some(alerts) = &config.alerts {
        let sinks: Vec<String> = alerts
            .sinks
            .iter()
            .map(|s| format!("{} ({})", s.name, format!("{:?}", s.kind).to_lowercase()))
            .collect();
        let _ = writeln!(
            w,
            "alerts: sinks [{}], {} route(s); group wait {}, a digest from {} alerts",
            sinks.join(", "),
            alerts.routes.len(),
            humantime::format_duration(alerts.group_wait),
            alerts.digest_min
        );
    }
    if let (Some(siem), Bus::Kafka { topic_prefix, .. }) = (&config.siem, &config.bus) {
        let ocsf = if siem.ocsf {
            format!(
                ", OCSF events to {topic_prefix}{}",
                bus::VERDICTS_OCSF_TOPIC
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            w,
            "siem: every verdict to {topic_prefix}{}{ocsf}",
            bus::VERDICTS_TOPIC
        );
    }
    out
}

/// The cluster's cluster-scoped kinds, when the config's cluster answers.
async fn cluster_scoped(config: &Config) -> Vec<(String, String)> {
    let client = crate::run::kube_client(config).await.ok();
    crate::run::cluster_scoped_kinds(client.as_ref()).await
}

/// The least RBAC `config` needs, for `check --rbac`: reads the sources
/// for the kinds git declares, resolves them with the cluster's discovery
/// when it answers, and checks that discovery is open.
async fn rbac_text(
    config: &Config,
    path: &std::path::Path,
    subject: crate::rbac::ServiceAccount,
    json: bool,
) -> anyhow::Result<String> {
    let header = format!(
        "The least RBAC for {} (`driftwarden check --rbac`), bound to ServiceAccount {subject}.",
        path.display()
    );
    let resolved = crate::rbac::for_config(config, subject).await?;
    if json {
        return to_json(&crate::rbac::list(&resolved.manifests));
    }
    let mut text: String = std::iter::once(&header)
        .chain(&resolved.warnings)
        .map(|line| format!("# {line}\n"))
        .collect();
    text.push_str(&crate::rbac::yaml(&resolved.manifests)?);
    Ok(text)
}

/// What `prune` could delete, for `check`: from git, and from the ledger
/// unless a running Driftwarden holds it.
async fn prune_candidates(config: &Config) -> anyhow::Result<String> {
    let path = config.data_dir.join("ledger");
    let ledger = path
        .exists()
        .then(|| crate::run::open_ledger(config).ok())
        .flatten();
    let (desired, _, _) =
        crate::desired::open_sources(config, ledger.as_ref(), &cluster_scoped(config).await)
            .await?;
    let candidates = inspect::prune_candidates(config, &desired, ledger.as_ref())?;
    Ok(inspect::prune_text(&candidates, ledger.is_some()))
}

/// A machine-readable summary of what a config watches.
fn summary(config: &Config) -> serde_json::Value {
    serde_json::json!({
        "cluster": config.cluster.name,
        "data_dir": config.data_dir,
        "sources": config.sources.iter().map(|s| serde_json::json!({
            "name": s.name, "url": s.url, "branch": s.branch, "paths": s.paths,
        })).collect::<Vec<_>>(),
        "namespaces": config.watch.namespaces,
        "extra_kinds": config.watch.extra_kinds.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "policies": config.policies.iter().map(|p| serde_json::json!({
            "name": p.name, "mode": p.mode.to_string(),
        })).collect::<Vec<_>>(),
    })
}
