//! Command line interface: parse arguments, run one command, map errors to
//! an exit code with a readable message.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Bus, Config};

/// Driftwarden: who changed what in the cluster, when, and was it declared in git?
#[derive(Debug, Parser)]
#[command(name = "driftwarden", version, about)]
pub struct Cli {
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
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
    },
}

/// Runs the CLI with the process arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command and returns what it prints.
pub fn run(cli: Cli) -> anyhow::Result<String> {
    match cli.command {
        Command::Check { config } => {
            let config = Config::load(&config)?;
            Ok(match cli.output {
                Output::Human => describe(&config),
                Output::Json => serde_json::to_string_pretty(&summary(&config))? + "\n",
            })
        }
    }
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
            ..
        } => writeln!(
            w,
            "bus: kafka {brokers} (topics {topic_prefix}driftwarden.*.v1, group {group_id})"
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
    let _ = writeln!(
        w,
        "trusted for undeclared fields: managers [{}], users [{}], groups [{}], service accounts [{}]",
        trust.managers.join(", "),
        trust.users.join(", "),
        trust.groups.join(", "),
        trust.service_accounts.join(", ")
    );
    if config.policies.is_empty() {
        let _ = writeln!(w, "policies: none (everything in audit mode)");
    }
    for p in &config.policies {
        let m = &p.matches;
        let _ = writeln!(
            w,
            "policy {}: mode {} for namespaces [{}] kinds [{}] labels [{}]",
            p.name,
            p.mode,
            m.namespaces.join(", "),
            m.kinds.join(", "),
            m.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out
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
