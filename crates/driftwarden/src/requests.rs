//! Requests from the command line to a running Driftwarden.
//!
//! The ledger is open in one process at a time. `driftwarden exempt` and
//! `driftwarden resume` write their record straight into the ledger when no
//! Driftwarden runs; when one runs, they leave a request file in
//! `data_dir/requests/` and the running process records it within a second.
//! Whoever can write the data directory can already rewrite the ledger, so
//! the folder needs no other authentication.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use model::{Control, RecordBody};
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// A request to a running Driftwarden.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Record this exemption.
    Exempt(model::Exemption),
    /// Resume enforcement.
    Resume {
        /// Who asked and why.
        reason: String,
    },
}

impl Request {
    /// The ledger record the request becomes.
    pub fn record(&self) -> RecordBody {
        match self {
            Request::Exempt(exemption) => RecordBody::Exemption(exemption.clone()),
            Request::Resume { reason } => RecordBody::Control(Control::Resumed {
                reason: reason.clone(),
            }),
        }
    }
}

/// The folder of pending requests.
pub fn folder(config: &Config) -> PathBuf {
    config.data_dir.join("requests")
}

/// Leaves `request` for the running process: written to a temporary name,
/// then renamed, so the reader never sees half a file.
pub fn submit(config: &Config, request: &Request) -> anyhow::Result<PathBuf> {
    let dir = folder(config);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = format!(
        "{}-{}.json",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.9f"),
        std::process::id()
    );
    let path = dir.join(name);
    let partial = path.with_extension("partial");
    std::fs::write(&partial, serde_json::to_vec_pretty(request)?)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Takes every complete request in `dir`, oldest first. A file that does not
/// parse is renamed to `*.rejected` and reported, never retried forever.
pub fn take(dir: &Path) -> anyhow::Result<Vec<Request>> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", dir.display())),
    };
    paths.sort();
    let mut requests = Vec::new();
    for path in paths {
        let text =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        match serde_json::from_slice(&text) {
            Ok(request) => {
                requests.push(request);
                std::fs::remove_file(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
            }
            Err(err) => {
                tracing::error!(path = %path.display(), error = %err, "request rejected");
                std::fs::rename(&path, path.with_extension("rejected"))
                    .with_context(|| format!("cannot set aside {}", path.display()))?;
            }
        }
    }
    Ok(requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submitted_requests_are_taken_once_in_order_and_bad_ones_set_aside() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Config::parse(
            Path::new("test.yaml"),
            &format!(
                "version: 1\ncluster: {{name: c}}\ndata_dir: {}\nsources: [{{name: a, url: 'file:///x'}}]\n",
                dir.path().display()
            ),
        )
        .expect("config");
        let first = Request::Resume {
            reason: "one".into(),
        };
        let second = Request::Resume {
            reason: "two".into(),
        };
        submit(&config, &first).expect("submit");
        submit(&config, &second).expect("submit");
        std::fs::write(folder(&config).join("zz-bad.json"), b"{not json").expect("write");

        assert_eq!(take(&folder(&config)).expect("take"), vec![first, second]);
        assert!(take(&folder(&config)).expect("take again").is_empty());
        assert!(folder(&config).join("zz-bad.rejected").exists());
    }
}
