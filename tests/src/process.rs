//! Driftwarden as a separate process, for tests that kill it: started with
//! a config file as its ServiceAccount (bound by what `check --rbac`
//! prints for that file), its output in a log file, stopped with SIGKILL or
//! SIGINT.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::eventually;
use crate::rbac::Identity;

/// A Driftwarden binary run with a config file; killed when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    /// `binary run -c config`, output appended to `log` (a test passes
    /// `env!("CARGO_BIN_EXE_driftwarden-under-test")`), once `identity` is
    /// bound for the config in the file (whose kubeconfig must be its).
    pub async fn run(
        binary: &Path,
        config: &Path,
        log: &Path,
        identity: &mut Identity,
    ) -> Result<Process> {
        let loaded = driftwarden::config::Config::load(config)
            .with_context(|| format!("loading {}", config.display()))?;
        identity.bind(&loaded).await?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = Command::new(binary)
            .arg("run")
            .arg("-c")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .context("starting driftwarden")?;
        Ok(Process {
            child,
            log: log.to_path_buf(),
        })
    }

    /// Fails, with the end of the log, when the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("driftwarden exited ({status}):\n{}", tail(&self.log, 30));
        }
        Ok(())
    }

    /// Waits until the log shows the watchers started.
    pub async fn wait_watching(&mut self, log_offset: usize) -> Result<()> {
        eventually(Duration::from_secs(60), "driftwarden watching", || {
            let ready = self.check_running().map(|()| {
                std::fs::read_to_string(&self.log)
                    .unwrap_or_default()
                    .get(log_offset..)
                    .is_some_and(|text| text.contains("watching"))
            });
            async move { Ok(ready?.then_some(())) }
        })
        .await
    }

    /// SIGKILL, and wait for the end.
    pub async fn kill(mut self) -> Result<()> {
        self.child.kill().await.context("killing driftwarden")?;
        Ok(())
    }

    /// SIGINT (Ctrl-C), and wait for a clean exit.
    pub async fn interrupt(mut self) -> Result<()> {
        let pid = self.child.id().context("driftwarden already exited")?;
        kill(
            Pid::from_raw(i32::try_from(pid).context("pid out of range")?),
            Signal::SIGINT,
        )?;
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("driftwarden did not stop within 30s of SIGINT")??;
        if !status.success() {
            bail!("driftwarden exited with {status}:\n{}", tail(&self.log, 30));
        }
        Ok(())
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
