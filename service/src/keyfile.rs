//! The cluster key file: where every cluster process (node, broker, reference) reads the
//! keys that seal its traffic ([`proto::seal::Keyring`]).
//!
//! A key file holds one key per line (64 hex digits); the first seals, every one opens —
//! so a rotation has a window where old and new are both accepted (docs/operations.md).
//! `./on.sh` creates `data/cluster.key` (mode 0600) when it is absent, with
//! `node keygen`; the deployments mount it as a compose or Swarm secret. Keys come from
//! files only, never from the command line (a command line is visible to every user of
//! the machine).
//!
//! A missing, unreadable or malformed key file stops the process at start with an error
//! that names the file and says how to make one.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use proto::seal::{KeyError, Keyring};

/// Largest key file read (a few keys and comments).
pub const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

/// The `--key-file` flag, shared by every binary that seals (`#[command(flatten)]`).
#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    /// The cluster key file: one key per line (64 hex digits), the first seals, all
    /// open. Every cluster process needs the same one (`./on.sh` creates
    /// data/cluster.key; `node keygen FILE` makes one).
    #[arg(long, env = "CLUSTER_KEY_FILE")]
    pub key_file: Option<PathBuf>,
}

impl KeyArgs {
    /// The keyring of the file given, or why there is none.
    pub fn load(&self) -> Result<Keyring, KeyFileError> {
        match &self.key_file {
            Some(path) => load(path),
            None => Err(KeyFileError::NotGiven),
        }
    }
}

/// Why a key file gives no keyring.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// No `--key-file`.
    #[error(
        "no cluster key: give --key-file FILE (or CLUSTER_KEY_FILE); ./on.sh creates \
         data/cluster.key, and `node keygen FILE` makes one"
    )]
    NotGiven,
    /// The file is not there.
    #[error("cluster key file {0} does not exist (`node keygen {0}` makes one)")]
    Missing(PathBuf),
    /// It cannot be read or written.
    #[error("cluster key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It does not hold keys.
    #[error("cluster key file {path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: KeyError,
    },
    /// `keygen` would overwrite a key.
    #[error("{0} exists: a cluster key is never overwritten (remove it first to replace it)")]
    Exists(PathBuf),
}

/// Reads a key file. Warns (once, in the log) when other users may read it.
pub fn load(path: &Path) -> Result<Keyring, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyFileError::Missing(path.to_path_buf()));
        }
        Err(e) => return Err(io(e)),
    };
    if metadata.len() > MAX_KEY_FILE_BYTES {
        return Err(io(std::io::Error::other(format!(
            "{} bytes, over {MAX_KEY_FILE_BYTES}",
            metadata.len()
        ))));
    }
    if metadata.permissions().mode() & 0o077 != 0 && !path.starts_with("/run/secrets") {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{:o}", metadata.permissions().mode() & 0o777),
            "the cluster key file may be read by other users: chmod 600 it"
        );
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let ring = Keyring::parse(&text).map_err(|source| KeyFileError::Invalid {
        path: path.to_path_buf(),
        source,
    })?;
    tracing::info!(file = %path.display(), key_ids = ?ring.key_ids(), "cluster key loaded");
    Ok(ring)
}

/// Creates a key file with one new random key, readable by its owner only; never
/// overwrites one.
pub fn generate(path: &Path) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(KeyFileError::Exists(path.to_path_buf()));
        }
        Err(e) => return Err(io(e)),
    };
    writeln!(
        file,
        "# paxos-zmq cluster key: the first line seals, every line opens\n{}",
        Keyring::generate_line()
    )
    .and_then(|()| file.sync_all())
    .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_and_are_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("keyfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub").join("cluster.key");
        assert!(matches!(load(&path), Err(KeyFileError::Missing(_))));
        generate(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let ring = load(&path).unwrap();
        assert_eq!(ring.key_ids().len(), 1);
        assert!(matches!(generate(&path), Err(KeyFileError::Exists(_))));
        assert_eq!(load(&path).unwrap().key_ids(), ring.key_ids(), "unchanged");
        std::fs::write(&path, "not a key\n").unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(error.contains("line 1 is not a key"), "{error}");
        assert!(matches!(
            KeyArgs { key_file: None }.load(),
            Err(KeyFileError::NotGiven)
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
