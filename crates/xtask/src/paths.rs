//! Where things live: the workspace, the per-user build cache, and the
//! per-run state under `target/testenv/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The workspace root: the nearest ancestor of the package directory (as
/// `cargo run` reports it, else as compiled in) whose Cargo.toml declares
/// `[workspace]`.
pub fn workspace_root() -> PathBuf {
    let package = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    package
        .ancestors()
        .find(|dir| is_workspace_root(dir))
        .map_or(package.clone(), Path::to_path_buf)
}

fn is_workspace_root(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml"))
        .is_ok_and(|manifest| manifest.lines().any(|line| line.trim() == "[workspace]"))
}

/// The per-user cache of built binaries and jars, shared by every clone on
/// this machine: `${XDG_CACHE_HOME:-$HOME/.cache}/driftwarden/testenv`.
pub fn cache_root() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home =
                std::env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set")?;
            PathBuf::from(home).join(".cache")
        }
    };
    Ok(base.join("driftwarden").join("testenv"))
}

/// The layout of one run's state under `<workspace>/target/testenv/`.
#[derive(Debug, Clone)]
pub struct State {
    /// `target/testenv` itself.
    pub dir: PathBuf,
}

impl State {
    /// The state directory of this workspace.
    pub fn of_workspace() -> Self {
        State {
            dir: workspace_root().join("target").join("testenv"),
        }
    }

    /// Certificates and keys.
    pub fn certs(&self) -> PathBuf {
        self.dir.join("certs")
    }

    /// Static token file, audit webhook config and token of the apiserver.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config")
    }

    /// One kubeconfig per user.
    pub fn kubeconfig(&self, user: &str) -> PathBuf {
        self.dir.join("kubeconfig").join(format!("{user}.yaml"))
    }

    /// etcd's data directory.
    pub fn etcd_data(&self) -> PathBuf {
        self.dir.join("etcd")
    }

    /// Kafka's config and log directories.
    pub fn kafka(&self) -> PathBuf {
        self.dir.join("kafka")
    }

    /// The password file of SCRAM user `user` of Kafka's TLS listener.
    pub fn kafka_password(&self, user: &str) -> PathBuf {
        self.kafka().join("users").join(format!("{user}.password"))
    }

    /// The audit relay's JSON-lines file.
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit").join("events.jsonl")
    }

    /// The folder where tests register audit receivers, one JSON file each.
    pub fn audit_receivers(&self) -> PathBuf {
        self.dir.join("audit").join("receivers")
    }

    /// Every component's log (kept by `down`).
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// The log file of one component.
    pub fn log(&self, component: &str) -> PathBuf {
        self.logs().join(format!("{component}.log"))
    }

    /// The pid file of one component.
    pub fn pid_file(&self, component: &str) -> PathBuf {
        self.dir.join("pids").join(format!("{component}.pid"))
    }

    /// Ports and addresses of the running environment.
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Shell exports for tests and people.
    pub fn env_sh(&self) -> PathBuf {
        self.dir.join("env.sh")
    }
}

/// Creates `dir` and its parents.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Writes `contents` to `path`, creating the parent directory.
pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    if let Some(parent) = path.parent() {
        ensure_dir(parent)?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// Writes `contents` to `path`, readable by its owner only, creating the
/// parent directory.
pub fn write_private(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(parent) = path.parent() {
        ensure_dir(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_ref())
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads a file to a string, naming it on error.
pub fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Shows `path` relative to the workspace when it is inside it.
pub fn show(path: &Path) -> String {
    let root = workspace_root();
    path.strip_prefix(&root)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.display().to_string())
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace
/// when not absolute) or `<workspace>/target`.
pub fn cargo_target_dir() -> PathBuf {
    let root = workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}
