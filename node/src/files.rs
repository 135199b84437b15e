//! The node's small files: `node.json` (its rank and the names of its peers, so that it
//! can restart while the reference service is down) and `store.json` (the applied
//! state), both written atomically.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use paxos::Rank;
use serde::{Deserialize, Serialize};
use store::{SnapshotError, Store, StoreConfig};

/// Largest `node.json` read: it holds a name per rank.
pub const MAX_IDENTITY_BYTES: u64 = 64 * 1024;

/// Why a node file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A file operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file does not parse or does not check.
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Replaces `path` with `bytes` atomically and durably: a temporary file beside it is
/// written and fsynced, renamed over `path`, and the folder is fsynced. A crash at any
/// point leaves either the old or the new file, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    file.write_all(bytes).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_error(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// `node.json`: who this node is in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Node name.
    pub node: String,
    /// Its rank, from the reference service; never changes once persisted (its promises
    /// in the WAL are made under it).
    pub rank: Rank,
    /// The names of the other members, by rank, as last known.
    #[serde(default)]
    pub peers: BTreeMap<Rank, String>,
}

impl Identity {
    /// Reads `path`; `None` if it does not exist.
    pub fn load(path: &Path) -> Result<Option<Identity>, FileError> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(path)(e)),
        };
        if bytes.len() as u64 > MAX_IDENTITY_BYTES {
            return Err(FileError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("{} bytes, over {MAX_IDENTITY_BYTES}", bytes.len()),
            });
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| FileError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
    }

    /// Writes `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), FileError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| FileError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        write_atomically(path, &bytes)
    }
}

/// Loads `store.json` (its digest verified); `None` if it does not exist.
pub fn load_store(
    path: &Path,
    node: &str,
    config: StoreConfig,
) -> Result<Option<Store>, FileError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path)(e)),
    };
    let corrupt = |reason: String| FileError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let (owner, store) =
        Store::from_json(&bytes, config).map_err(|e: SnapshotError| corrupt(e.to_string()))?;
    if owner != node {
        return Err(corrupt(format!("it belongs to {owner:?}, not {node:?}")));
    }
    Ok(Some(store))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{Command, Op};

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("node-files-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn identity_round_trips() {
        let dir = temp_dir("identity");
        let path = dir.join("node.json");
        assert_eq!(Identity::load(&path).unwrap(), None);
        let identity = Identity {
            node: "node-2".to_owned(),
            rank: 2,
            peers: BTreeMap::from([(1, "node-1".to_owned())]),
        };
        identity.save(&path).unwrap();
        assert_eq!(Identity::load(&path).unwrap(), Some(identity));
        assert!(!dir.join("node.json.tmp").exists());
        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            Identity::load(&path),
            Err(FileError::Corrupt { .. })
        ));
    }

    #[test]
    fn store_json_round_trips_and_is_checked() {
        let dir = temp_dir("store");
        let path = dir.join("store.json");
        let config = StoreConfig::default();
        assert!(load_store(&path, "node-1", config).unwrap().is_none());
        let mut store = Store::new(config);
        let _ = store.apply(
            1,
            1,
            &[Command {
                client_id: 9,
                seq: 1,
                op: Op::Put {
                    key: "k".to_owned(),
                    value: "v".to_owned(),
                },
                session: None,
            }],
        );
        write_atomically(&path, &store.to_json("node-1")).unwrap();
        let loaded = load_store(&path, "node-1", config).unwrap().unwrap();
        assert_eq!(loaded.digest(), store.digest());
        assert!(load_store(&path, "node-2", config).is_err());
        let text = fs::read_to_string(&path).unwrap().replace("\"v\"", "\"w\"");
        fs::write(&path, text).unwrap();
        let error = load_store(&path, "node-1", config).unwrap_err().to_string();
        assert!(error.contains("digest"), "{error}");
    }
}
