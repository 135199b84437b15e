//! Where the registry's names and ranks live on disk: one JSON file,
//! `<data dir>/registry.json`, replaced atomically (write a temporary file, fsync it,
//! rename it over the old one, fsync the folder), so that a crash at any instant leaves
//! either the old or the new file, never a torn one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::registry::Persisted;

/// File name of the registry inside the data folder.
pub const FILE_NAME: &str = "registry.json";
/// Largest registry file read back: far above what [`crate::registry::MAX_MEMBERS`]
/// members take, so a bigger file is not ours.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A failure to read or write the registry file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file exists but is not a registry this build can trust.
    #[error(
        "{path} is corrupt: {reason}. Move it away to start with an empty registry (every node then gets a new rank)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The registry file of one data folder.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    path: PathBuf,
}

impl Store {
    /// The store in `data_dir`, created if missing.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.to_owned(),
            source,
        })?;
        Ok(Store {
            dir: data_dir.to_owned(),
            path: data_dir.join(FILE_NAME),
        })
    }

    /// The registry file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the registry back; `None` when there is none yet.
    pub fn load(&self) -> Result<Option<Persisted>, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let metadata = match fs::metadata(&self.path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        if metadata.len() > MAX_FILE_BYTES {
            return Err(corrupt(format!(
                "{} bytes, over the limit of {MAX_FILE_BYTES}",
                metadata.len()
            )));
        }
        let text = fs::read(&self.path).map_err(io)?;
        let persisted: Persisted =
            serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
        persisted.validate().map_err(corrupt)?;
        Ok(Some(persisted))
    }

    /// Replaces the registry file atomically and durably.
    pub fn save(&self, persisted: &Persisted) -> Result<(), StoreError> {
        let temporary = self.dir.join(format!("{FILE_NAME}.tmp"));
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { path, source }
        };
        let mut text = serde_json::to_vec_pretty(persisted).map_err(|e| StoreError::Io {
            path: temporary.clone(),
            source: std::io::Error::other(e),
        })?;
        text.push(b'\n');
        let mut file = File::create(&temporary).map_err(io(&temporary))?;
        file.write_all(&text).map_err(io(&temporary))?;
        file.sync_all().map_err(io(&temporary))?;
        drop(file);
        fs::rename(&temporary, &self.path).map_err(io(&self.path))?;
        // The rename is durable only once the folder is.
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io(&self.dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{PERSISTED_FORMAT, PersistedMember};

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "reference-store-{name}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temporary() {
        let dir = temp_dir("round-trip");
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let persisted = Persisted {
            format: PERSISTED_FORMAT,
            epoch: 7,
            members: vec![PersistedMember {
                node: "node-1".into(),
                rank: 1,
                status_addr: "127.0.0.1:7001".into(),
                stamp: proto::fabric::Stamp::default(),
            }],
        };
        store.save(&persisted).unwrap();
        store.save(&persisted).unwrap();
        assert_eq!(store.load().unwrap(), Some(persisted));
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_an_error_that_names_it() {
        let dir = temp_dir("corrupt");
        let store = Store::open(&dir).unwrap();
        for bad in [
            &b"{ not json"[..],
            b"",
            br#"{"format":1,"epoch":1,"members":[{"node":"a","rank":1},{"node":"b","rank":1}]}"#,
            br#"{"format":2,"epoch":1,"members":[]}"#,
        ] {
            fs::write(store.path(), bad).unwrap();
            let error = store.load().unwrap_err();
            assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
            assert!(
                error
                    .to_string()
                    .contains(&store.path().display().to_string()),
                "{error}"
            );
        }
        fs::remove_dir_all(dir).unwrap();
    }
}
