//! What the tests of the API, the page and the dashboards share: a
//! scenario declaring one ConfigMap, mallory's change to it, and the `api:`
//! section of the Driftwarden under test with its tokens.
//!
//! ```text
//! settings_scenario ──▶ ConfigMap `settings` (level: info) in git and applied
//! ApiAccess::new ──▶ reader.token, operator.token ──▶ yaml() ──▶ `api:` appended to the config
//! ApiAccess::configure(s, yaml) ──▶ tokens and the config file, checked
//! start(binary, s, config, access) ──▶ the process, watching, `/readyz` answering 200
//! run_cli(binary, config, args) ──▶ what `driftwarden args -c config` printed, no error in it
//! set_level(s, "debug") ──▶ mallory's change, judged drift
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::app::config_map_yaml;
use crate::process::Process;
use crate::scenario::{Bus, Scenario};
use crate::{User, eventually, unique_suffix};

/// A scenario whose git declares ConfigMap `settings` (`level: info`),
/// applied by the GitOps agent.
pub async fn settings_scenario(bus: Bus, name: &str) -> Result<Scenario> {
    let mut s = Scenario::prepare(bus, name, &[]).await?;
    let yaml = config_map_yaml(s.namespace(), "settings", &[], &[("level", "info")]);
    s.repo.write("apps/settings.yaml", &yaml)?;
    s.commit("Declare settings (OPS-7)")?;
    s.apply_as_gitops(&["apps/settings.yaml"])?;
    Ok(s)
}

/// Mallory sets ConfigMap `settings` to `level: <level>`.
pub fn set_level(s: &Scenario, level: &str) -> Result<()> {
    let patch = json!({"data": {"level": level}}).to_string();
    s.kubectl(
        User::Mallory,
        &["patch", "configmap", "settings", "-p", &patch],
    )?;
    Ok(())
}

/// The API of the Driftwarden under test: a free loopback port, a reader
/// token (`secops`) and an operator token (`oncall`).
#[derive(Debug, Clone)]
pub struct ApiAccess {
    /// Where it listens.
    pub listen: SocketAddr,
    /// The reader's token.
    pub reader: String,
    /// The file holding it.
    pub reader_file: PathBuf,
    /// The operator's token.
    pub operator: String,
    /// The file holding it.
    pub operator_file: PathBuf,
}

impl ApiAccess {
    /// Tokens written under `dir`, and a free port.
    pub fn new(dir: &Path) -> Result<ApiAccess> {
        std::fs::create_dir_all(dir)?;
        let token = |role: &str| {
            format!(
                "{role}-{}-{}-{}",
                unique_suffix(),
                unique_suffix(),
                unique_suffix()
            )
        };
        let access = ApiAccess {
            listen: std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?,
            reader: token("reader"),
            reader_file: dir.join("reader.token"),
            operator: token("operator"),
            operator_file: dir.join("operator.token"),
        };
        std::fs::write(&access.reader_file, &access.reader)?;
        std::fs::write(&access.operator_file, &access.operator)?;
        Ok(access)
    }

    /// Tokens beside `s`'s data dir, and `s`'s config file holding `yaml`
    /// (the config without its API) and the `api:` section, loaded once to
    /// check it. Returns the access and the config file.
    pub fn configure(s: &Scenario, yaml: &str) -> Result<(ApiAccess, PathBuf)> {
        let access = ApiAccess::new(&s.settings.data_dir.with_extension("api"))?;
        let config = s.settings.data_dir.with_extension("yaml");
        std::fs::write(&config, format!("{yaml}{}", access.yaml()))?;
        driftwarden::config::Config::load(&config)?;
        Ok((access, config))
    }

    /// The `api:` section of the config.
    pub fn yaml(&self) -> String {
        let q = |p: &Path| Value::from(p.to_string_lossy()).to_string();
        format!(
            "api:\n  listen: \"{}\"\n  tokens:\n    - {{name: secops, file: {}, role: reader}}\n    - {{name: oncall, file: {}, role: operator}}\n",
            self.listen,
            q(&self.reader_file),
            q(&self.operator_file),
        )
    }

    /// The API's base URL.
    pub fn base(&self) -> String {
        format!("http://{}", self.listen)
    }
}

/// Runs `binary` (`env!("CARGO_BIN_EXE_driftwarden-under-test")`) with
/// `config` as `s`'s ServiceAccount, its log beside the config, and waits
/// until it watches and its API at `access` says it is ready.
pub async fn start(
    binary: &Path,
    s: &mut Scenario,
    config: &Path,
    access: &ApiAccess,
) -> Result<Process> {
    let log = config.with_extension("log");
    let mut process = Process::run(binary, config, &log, s.identity_mut()?).await?;
    process.wait_watching(0).await?;
    let client = reqwest::Client::new();
    let readyz = format!("{}/readyz", access.base());
    eventually(Duration::from_secs(30), "/readyz answering 200", || {
        let request = client.get(&readyz).send();
        async move {
            Ok(request
                .await
                .ok()
                .filter(|r| r.status() == StatusCode::OK)
                .map(|_| ()))
        }
    })
    .await?;
    Ok(process)
}

/// Runs `binary`'s command line with `args` and `-c config`; what it
/// printed. Fails, with its stderr, when that says `error:`.
pub fn run_cli(binary: &Path, config: &Path, args: &[&str]) -> Result<std::process::Output> {
    let out = std::process::Command::new(binary)
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .context("running the driftwarden command line")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !stderr.contains("error:"),
        "driftwarden {args:?} failed: {stderr}"
    );
    Ok(out)
}
