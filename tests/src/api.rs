//! What the tests of the API, the page and the dashboards share: a
//! scenario declaring one ConfigMap, mallory's change to it, and the `api:`
//! section of the Driftwarden under test with its tokens.
//!
//! ```text
//! settings_scenario ──▶ ConfigMap `settings` (level: info) in git and applied
//! ApiAccess::new ──▶ reader.token, operator.token ──▶ yaml() ──▶ `api:` appended to the config
//! set_level(s, "debug") ──▶ mallory's change, judged drift
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::{Value, json};

use crate::app::config_map_yaml;
use crate::scenario::{Bus, Scenario};
use crate::{User, unique_suffix};

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
