//! Starting a node, before its loop runs: take the folder's lock, learn who it is, and
//! recover its state.
//!
//! 1. **Lock** `data/node-N/LOCK`, so that two processes never write one WAL.
//! 2. **Identity**: `node.json` (rank and peers' names), or — on a first start — a
//!    registration with the reference, which hands out the rank; retried every
//!    [`REGISTER_RETRY`] until it answers.
//! 3. **Recovery**: `store.json` (its digest verified) and the WAL after it. Corruption
//!    stops the node with an error naming the file — unless `--rebuild-from-peers`,
//!    which moves `wal/` and `store.json` aside into `corrupt-<time>/` and starts empty,
//!    to catch up from the peers.
//!
//! The core is then told the snapshot's slot ([`paxos::Persisted::restore_snapshot`])
//! and hands out only the decided slots after it, so every slot is applied exactly once.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use paxos::Persisted;
use proto::ErrorCode;
use proto::fabric::{RefReply, RefRequest, Stamp};
use store::Store;
use tokio_util::sync::CancellationToken;
use transport::{Receiver, Sender};

use crate::auth::Seal;
use crate::config::{Config, ConfigError};
use crate::error::NodeError;
use crate::files::{self, FileError, Identity};
use crate::reference::{self, BadReply};
use crate::wal::{self, Recovery, WalError};

/// How long one registration attempt waits for the reference before asking again.
pub const REGISTER_RETRY: Duration = Duration::from_secs(1);

/// A node ready to run.
#[derive(Debug)]
pub(crate) struct Booted {
    /// The folder's lock, held until the process ends.
    pub(crate) lock: File,
    /// Who it is.
    pub(crate) identity: Identity,
    /// The applied state, from store.json.
    pub(crate) store: Store,
    /// What the WAL holds (the writer reopens it after this).
    pub(crate) recovery: Recovery,
    /// The core's durable state: the WAL's fold, with the store's snapshot restored.
    pub(crate) persisted: Persisted,
}

/// Boots the node of `config`. `None`: shut down while waiting for the reference.
pub(crate) async fn boot(
    config: &Config,
    reference: (&Sender, &mut Receiver),
    seal: &Seal,
    shutdown: &CancellationToken,
) -> Result<Option<Booted>, NodeError> {
    let node_dir = config.node_dir();
    fs::create_dir_all(&node_dir).map_err(|source| FileError::Io {
        path: node_dir.clone(),
        source,
    })?;
    let lock = lock(&node_dir)?;
    let Some(identity) = identity(config, reference, seal, shutdown).await? else {
        return Ok(None);
    };
    if identity.rank == 0 || identity.rank > config.cluster_size {
        return Err(NodeError::Rank {
            rank: identity.rank,
            cluster_size: config.cluster_size,
        });
    }
    let (store, recovery) = recover_or_rebuild(config)?;
    if let Some(torn) = &recovery.torn {
        tracing::warn!(
            file = %torn.path.display(),
            offset = torn.offset,
            discarded_bytes = torn.discarded_bytes,
            reason = %torn.reason,
            "cut off a torn record at the end of the WAL"
        );
    }
    let mut persisted = recovery.persisted.clone();
    if store.applied_slot() > 0 {
        persisted.restore_snapshot(store.applied_slot(), Arc::new(store.snapshot()));
    }
    tracing::info!(
        node = %identity.node,
        rank = identity.rank,
        snapshot_slot = store.applied_slot(),
        wal_records = recovery.records,
        wal_segments = recovery.segments.len(),
        promised = %persisted.promised,
        decided_in_log = persisted.decided.len(),
        "recovered"
    );
    Ok(Some(Booted {
        lock,
        identity,
        store,
        recovery,
        persisted,
    }))
}

/// Takes the folder's lock file, so that two processes never write one WAL.
fn lock(node_dir: &Path) -> Result<File, NodeError> {
    let path = node_dir.join("LOCK");
    let file = File::create(&path).map_err(|source| FileError::Io {
        path: path.clone(),
        source,
    })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => Err(NodeError::Locked(node_dir.display().to_string())),
    }
}

/// `node.json`, or a first registration with the reference (saved to node.json).
async fn identity(
    config: &Config,
    reference: (&Sender, &mut Receiver),
    seal: &Seal,
    shutdown: &CancellationToken,
) -> Result<Option<Identity>, NodeError> {
    let path = config.node_dir().join("node.json");
    if let Some(identity) = Identity::load(&path)? {
        tracing::info!(rank = identity.rank, "rank from node.json");
        return Ok(Some(identity));
    }
    let Some(identity) = register(config, reference, seal, shutdown).await? else {
        return Ok(None);
    };
    identity.save(&path)?;
    Ok(Some(identity))
}

/// Registers with the reference until it answers (or `shutdown`: `None`).
async fn register(
    config: &Config,
    (sender, receiver): (&Sender, &mut Receiver),
    seal: &Seal,
    shutdown: &CancellationToken,
) -> Result<Option<Identity>, NodeError> {
    let mut warned = false;
    loop {
        // A new stamp for every try: the reference takes each request at most once, and
        // refuses one not newer than the last it took (a replay).
        let register = RefRequest::Register {
            node: config.name(),
            status_addr: config.advertised_status_addr(),
            stamp: Stamp::next_of_process(),
        };
        let request = reference::seal_request(seal, &register)
            .ok_or_else(|| NodeError::Internal("cannot encode a registration".to_owned()))?;
        let _ = sender.try_send(vec![request]);
        let deadline = Instant::now() + REGISTER_RETRY;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let frames = tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(remaining) => break,
                frames = receiver.recv() => frames,
            };
            let Some(frames) = frames else {
                return Err(NodeError::Internal("reference socket closed".to_owned()));
            };
            match reference::open_reply(seal, &frames) {
                Ok(RefReply::Registered { rank, members }) => {
                    let peers = members
                        .into_iter()
                        .filter(|m| m.rank != rank && m.rank >= 1 && m.rank <= config.cluster_size)
                        .map(|m| (m.rank, m.node))
                        .collect();
                    tracing::info!(rank, "registered with the reference");
                    return Ok(Some(Identity {
                        node: config.name(),
                        rank,
                        peers,
                    }));
                }
                Ok(RefReply::Error(error))
                    if matches!(error.code, ErrorCode::Unavailable | ErrorCode::Overloaded) =>
                {
                    // E.g. the reference cannot save its registry (a full disk): it
                    // gives no new rank until it can. Ask again later.
                    tracing::warn!(%error, "the reference cannot register this node yet");
                    continue;
                }
                Ok(RefReply::Error(error))
                    if error.message.starts_with(proto::fabric::STALE_REQUEST) =>
                {
                    // The reference took a newer registration of this name before: this
                    // machine's clock is behind the previous start of this node. It passes
                    // in time; say so and ask again.
                    tracing::error!(
                        %error,
                        "the reference refuses this registration as stale: this node's \
                         clock is behind its previous start; retrying"
                    );
                    continue;
                }
                Ok(RefReply::Error(error)) => return Err(NodeError::Refused(error.to_string())),
                Err(BadReply::Unsealed {
                    refusal: Some(refusal),
                }) => {
                    // The reference cannot open what we send: another cluster key. A
                    // node that cannot register cannot start; say which key it holds.
                    return Err(NodeError::WrongKey(format!(
                        "the reference refuses this node's cluster key (key ids {:?}): \
                         {refusal}",
                        seal.report().key_ids
                    )));
                }
                Ok(_) | Err(_) => continue,
            }
        }
        if !warned {
            tracing::warn!(
                reference = %config.reference,
                "no answer from the reference yet; a first start needs it for a rank"
            );
            warned = true;
        }
    }
}

/// Recovers; on corruption with `--rebuild-from-peers`, moves the state aside and starts
/// empty.
fn recover_or_rebuild(config: &Config) -> Result<(Store, Recovery), NodeError> {
    match recover(config) {
        Err(error) if config.rebuild_from_peers && is_corruption(&error) => {
            let aside = move_aside(&config.node_dir())?;
            tracing::warn!(
                %error,
                moved_to = %aside.display(),
                "--rebuild-from-peers: state moved aside; catching up from the peers"
            );
            recover(config)
        }
        other => other,
    }
}

/// Loads store.json and reads the WAL.
fn recover(config: &Config) -> Result<(Store, Recovery), NodeError> {
    let node_dir = config.node_dir();
    let path = node_dir.join("store.json");
    let store = files::load_store(&path, &config.name(), config.store_config())?
        .map_or_else(|| Store::try_new(config.store_config()), Ok)
        .map_err(|e| NodeError::Config(ConfigError::Store(e)))?;
    let recovery = wal::recover(&node_dir.join("wal"))?;
    Ok((store, recovery))
}

fn is_corruption(error: &NodeError) -> bool {
    matches!(
        error,
        NodeError::WalFile(WalError::Corrupt { .. }) | NodeError::File(FileError::Corrupt { .. })
    )
}

/// Moves `wal/` and `store.json` into `corrupt-<unix ms>/` (kept for inspection;
/// node.json stays: the rank is still ours).
fn move_aside(node_dir: &Path) -> Result<PathBuf, NodeError> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let aside = node_dir.join(format!("corrupt-{stamp}"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FileError::Io { path, source }
    };
    fs::create_dir_all(&aside).map_err(io(&aside))?;
    for name in ["wal", "store.json"] {
        let from = node_dir.join(name);
        if from.exists() {
            fs::rename(&from, aside.join(name)).map_err(io(&from))?;
        }
    }
    wal::sync_dir(node_dir)?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "node-boot-{name}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn one_process_per_folder() {
        let dir = temp_dir("lock");
        let held = lock(&dir).unwrap();
        assert!(matches!(lock(&dir), Err(NodeError::Locked(_))));
        drop(held);
        lock(&dir).unwrap();
    }

    #[test]
    fn damaged_state_is_moved_aside_whole() {
        let dir = temp_dir("aside");
        fs::create_dir_all(dir.join("wal")).unwrap();
        fs::write(dir.join("wal").join("x.wal"), b"junk").unwrap();
        fs::write(dir.join("store.json"), b"{").unwrap();
        fs::write(dir.join("node.json"), b"{}").unwrap();
        let aside = move_aside(&dir).unwrap();
        assert!(aside.join("wal").join("x.wal").exists());
        assert!(aside.join("store.json").exists());
        assert!(!dir.join("wal").exists() && !dir.join("store.json").exists());
        assert!(dir.join("node.json").exists(), "the rank is kept");
    }
}
