//! `cargo xtask`: the real test environment, tests, demo and benchmarks.
//!
//! ```text
//!   cargo xtask env up ──► build (cached per user) ──► start under target/testenv/
//!        │                  kube-apiserver, kube-controller-manager,    etcd, kube-apiserver,
//!        │                  kubectl, etcd (Go proxy); Kafka (Maven)     kube-controller-manager,
//!        │                                                              Kafka, audit relay
//!   cargo xtask test   ──► env up ──► cargo test --workspace ──► env down
//!   cargo xtask demo   ──► env up ──► git repo, gitops apply, driftwarden run,
//!                          changes by hand, history / diff / verify
//!   cargo xtask bench  ──► env up ──► component benches + end-to-end bench
//!                          ──► target/bench/summary.json
//! ```

mod audit_config;
mod bench;
mod build;
mod certs;
mod cluster;
mod demo;
mod env;
mod kafka;
mod paths;
mod procs;
mod relay;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Developer tasks for Driftwarden.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the local test environment (etcd, kube-apiserver,
    /// kube-controller-manager, Kafka, audit relay).
    Env {
        #[command(subcommand)]
        action: EnvAction,
    },
    /// Start the environment, run `cargo test --workspace [ARGS]`, stop it.
    Test {
        /// Extra arguments passed to `cargo test --workspace`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Show Driftwarden at work: a GitOps-managed app in team-a, changed by
    /// hand by alice and mallory, each change judged and kept in the ledger.
    Demo,
    /// Run every benchmark (components and end to end on the environment)
    /// and write target/bench/summary.json.
    Bench {
        /// A shorter run: a 100 000-record ledger instead of 1 M (verify time
        /// scaled to 1 M) and fewer changes, writes and objects end to end.
        #[arg(long)]
        quick: bool,
    },
    /// Receive audit webhook batches, append their events to a JSON-lines
    /// file and forward them to the registered receivers (started by
    /// `env up`; not meant to be run by hand).
    #[command(hide = true)]
    AuditRelay(relay::Args),
}

#[derive(Debug, Subcommand)]
enum EnvAction {
    /// Build what is missing, start every part and wait until all answer.
    Up,
    /// Stop every process `up` started; logs are kept.
    Down,
    /// Show each part; exit 0 only when all of them answer.
    Status,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Dispatches one command.
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Env { action } => match action {
            EnvAction::Up => env::up().map(|()| ExitCode::SUCCESS),
            EnvAction::Down => env::down().map(|()| ExitCode::SUCCESS),
            EnvAction::Status => env::status(),
        },
        Command::Test { args } => test::run(&args),
        Command::Demo => demo::run(),
        Command::Bench { quick } => bench::run(quick),
        Command::AuditRelay(args) => relay::run(&args).map(|()| ExitCode::SUCCESS),
    }
}
