//! 32-byte secrets of an installation (the checkpoint signing key, the
//! Secret digest key), each kept as 64 hex digits in a file only its owner
//! may read.
//!
//! ```text
//! read_or_create(path) ──exists? read : write random (0600), never over another's──▶ [u8; 32]
//! ```

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// A secret file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be read or written.
    #[error("cannot use the key file `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold a key.
    #[error(
        "the key file `{path}` does not hold a key of 64 hex digits; move it aside to have a \
         new key created, or give the right file"
    )]
    Format {
        /// The file.
        path: PathBuf,
    },
    /// Others may read the file.
    #[error("the key file `{path}` may be read by others (mode {mode:o}): `chmod 600 {path}`")]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// No randomness could be had for a new key.
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// The secret in `path`, refusing a file that group or others may read.
pub fn read(path: &Path) -> Result<[u8; 32], SecretFileError> {
    let io = |source| SecretFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let mut secret = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut secret).map_err(|_| SecretFileError::Format {
        path: path.to_path_buf(),
    })?;
    Ok(secret)
}

/// The secret in `path`, created (random, mode 0600) when there is no such
/// file; `what` names it in the log.
pub fn read_or_create(path: &Path, what: &str) -> Result<[u8; 32], SecretFileError> {
    if !path.exists() {
        create(path)?;
        tracing::info!(path = %path.display(), "created the {what}");
    }
    read(path)
}

/// Writes a new random secret to `path`, readable by its owner only; a
/// file another process created meanwhile is kept, never replaced.
fn create(path: &Path) -> Result<(), SecretFileError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|err| SecretFileError::Random(err.to_string()))?;
    let partial = PathBuf::from(format!("{}.partial", path.display()));
    let io = |source| SecretFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(io)?;
    writeln!(file, "{}", hex::encode(secret))
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    std::fs::hard_link(&partial, path)
        .or_else(|err| match err.kind() {
            std::io::ErrorKind::AlreadyExists => Ok(()),
            _ => Err(err),
        })
        .map_err(io)?;
    let _ = std::fs::remove_file(&partial);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_created_once_owner_only_and_read_back_the_same() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("some.key");
        let first = read_or_create(&path, "test key").expect("created");
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_or_create(&path, "test key").expect("read"), first);
        assert!(!dir.path().join("some.key.partial").exists());
    }

    #[test]
    fn exposed_and_malformed_files_are_refused_naming_the_fix() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("shared.key");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read(&path).expect_err("readable by others");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read(&path).expect("read"), [0xab; 32]);
        std::fs::write(&path, "not hex\n").expect("write");
        let err = read(&path).expect_err("not a key");
        assert!(err.to_string().contains("64 hex digits"), "{err}");
    }
}
