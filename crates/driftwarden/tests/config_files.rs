//! Every file shipped in `config/` is valid: Driftwarden configs pass
//! `driftwarden check`, Kubernetes files parse into objects with a kind.

use std::path::{Path, PathBuf};

use driftwarden::cli::{Cli, Command, Output, run};
use serde::Deserialize;

fn shipped_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("config/ is readable")
        .map(|entry| entry.expect("directory entry").path())
        // `schemas/` holds JSON Schemas, checked by their own test.
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
}

fn is_driftwarden_config(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("driftwarden"))
}

#[tokio::test]
async fn every_shipped_driftwarden_config_passes_check() {
    let configs: Vec<PathBuf> = shipped_files()
        .into_iter()
        .filter(|p| is_driftwarden_config(p))
        .collect();
    assert!(!configs.is_empty(), "no driftwarden*.yaml in config/");
    for path in configs {
        let cli = Cli {
            output: Output::Human,
            remote: Default::default(),
            command: Command::Check {
                config: path.clone(),
                object: None,
                labels: Vec::new(),
                rbac: false,
                service_account: Default::default(),
            },
        };
        let outcome = run(cli)
            .await
            .unwrap_or_else(|err| panic!("{}: {err:#}", path.display()));
        assert!(outcome.text.starts_with("config ok"), "{}", outcome.text);
    }
}

#[test]
fn every_shipped_kubernetes_file_parses_into_objects() {
    for path in shipped_files()
        .into_iter()
        .filter(|p| !is_driftwarden_config(p))
    {
        let text = std::fs::read_to_string(&path).expect("readable");
        let mut documents = 0;
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(document)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            for field in ["apiVersion", "kind"] {
                assert!(
                    value.get(field).is_some_and(serde_json::Value::is_string),
                    "{}: document {documents} has no {field}",
                    path.display()
                );
            }
            documents += 1;
        }
        assert!(documents > 0, "{} holds no document", path.display());
    }
}
