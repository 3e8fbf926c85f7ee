//! The installation's key for Secret digests, kept in a file only its owner
//! can read.
//!
//! ```text
//! secrets.digest_key_file ──read──▶ DigestKey
//! (none) ──data_dir/digest.key exists? read : create (0600, random)──▶ DigestKey
//! ```
//!
//! The file holds 64 hex digits. A file that others may read is refused:
//! with the key, a digest on the bus or in the ledger can be tested against
//! a dictionary of passwords.

use anyhow::Context as _;
use ledger::secret;
use model::redact::DigestKey;

use crate::config::Config;

/// The name of the key file created in `data_dir`.
pub const DIGEST_KEY_FILE: &str = "digest.key";

/// The digest key of `config`: its configured file, or `data_dir/digest.key`,
/// created with a random key on first use.
pub fn digest_key(config: &Config) -> anyhow::Result<DigestKey> {
    let bytes = match &config.secrets.digest_key_file {
        Some(path) => secret::read(path).with_context(|| {
            format!(
                "secrets.digest_key_file `{}`: give a file of 64 hex digits, mode 0600",
                path.display()
            )
        })?,
        None => {
            let path = config.data_dir.join(DIGEST_KEY_FILE);
            secret::read_or_create(&path, "Secret digest key")?
        }
    };
    Ok(DigestKey::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::{Path, PathBuf};

    use super::*;

    fn config(data_dir: &Path, key_file: Option<PathBuf>) -> Config {
        let text = format!(
            "version: 1\ncluster: {{name: prod}}\ndata_dir: {}\n\
             sources: [{{name: apps, url: \"file:///repo\"}}]\n",
            data_dir.display()
        );
        let mut config = Config::parse(Path::new("k.yaml"), &text).expect("valid config");
        config.secrets.digest_key_file = key_file;
        config
    }

    #[test]
    fn a_key_is_created_once_owner_only_and_read_back_the_same() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = config_in(dir.path());
        let first = digest_key(&config).expect("created");
        let path = dir.path().join(DIGEST_KEY_FILE);
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let again = digest_key(&config).expect("read");
        assert_eq!(first, again, "digests stay comparable across restarts");
        let other = tempfile::tempdir().expect("temp dir");
        assert_ne!(
            first,
            digest_key(&config_in(other.path())).expect("another")
        );
    }

    fn config_in(dir: &Path) -> Config {
        config(dir, None)
    }

    #[test]
    fn a_configured_key_file_is_shared_and_must_be_private() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("shared.key");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let config = config(dir.path(), Some(path.clone()));
        let err = digest_key(&config).expect_err("readable by others");
        let text = format!("{err:#}");
        assert!(
            text.contains("secrets.digest_key_file") && text.contains("chmod 600"),
            "{text}"
        );

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let key = digest_key(&config).expect("read");
        assert_eq!(key, DigestKey::from_bytes([0xab; 32]));
        assert!(!dir.path().join(DIGEST_KEY_FILE).exists(), "none created");

        std::fs::write(&path, "not hex\n").expect("write");
        let err = digest_key(&config).expect_err("not a key");
        assert!(format!("{err:#}").contains("64 hex digits"), "{err:#}");
    }
}
