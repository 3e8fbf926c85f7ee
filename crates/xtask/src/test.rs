//! `cargo xtask test`: environment up, `cargo test --workspace` with the
//! variables of `env.sh` set, environment down (also when the tests fail or on
//! Ctrl-C), with each phase timed.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};

use crate::env;
use crate::paths::{State, workspace_root};

/// Exit code after an interrupt, as shells report SIGINT.
const INTERRUPTED: u8 = 130;

/// Runs the whole test suite against a fresh environment.
pub fn run(args: &[String]) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let code = runtime.block_on(up_test_down(args.to_vec()));
    let started = Instant::now();
    let down = env::stop_all(&State::of_workspace());
    println!(
        "xtask test: env down {:.1}s",
        started.elapsed().as_secs_f64()
    );
    down?;
    code
}

/// Brings the environment up and runs the tests; the caller stops it.
async fn up_test_down(args: Vec<String>) -> Result<ExitCode> {
    // Registered first, so a Ctrl-C from here on reaches the teardown.
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;

    let started = Instant::now();
    tokio::task::spawn_blocking(env::up)
        .await
        .context("env up panicked")??;
    println!("xtask test: env up {:.1}s", started.elapsed().as_secs_f64());

    let started = Instant::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = tokio::process::Command::new(cargo)
        .current_dir(workspace_root())
        .envs(env::running_exports(&State::of_workspace())?)
        .args(["test", "--workspace"])
        .args(&args)
        .spawn()
        .context("starting cargo test")?;
    let status = tokio::select! {
        status = child.wait() => Some(status.context("waiting for cargo test")?),
        _ = interrupt.recv() => None,
        _ = terminate.recv() => None,
    };
    let Some(status) = status else {
        println!("xtask test: interrupted, stopping the tests and the environment");
        let _ = child.start_kill();
        let _ = child.wait().await;
        return Ok(ExitCode::from(INTERRUPTED));
    };
    println!(
        "xtask test: cargo test {:.1}s ({status})",
        started.elapsed().as_secs_f64()
    );
    let code = status
        .code()
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(1);
    Ok(ExitCode::from(code))
}
