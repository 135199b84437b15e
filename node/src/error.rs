//! [`NodeError`]: why a node stops. Operating errors (a port taken, a disk that fails, a
//! corrupt file, a refused registration) are typed here and end the process cleanly
//! with a message naming what happened; a broken invariant is an `assert!` instead.

use paxos::Rank;
use transport::TransportError;

use crate::config;
use crate::files::FileError;
use crate::wal::WalError;

/// Why the node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(#[from] config::ConfigError),
    /// A socket could not be opened.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The status port could not be bound.
    #[error("cannot serve status on {addr}: {source}")]
    Status {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The WAL cannot be read or written.
    #[error(transparent)]
    WalFile(#[from] WalError),
    /// The WAL writer failed while running.
    #[error("WAL writer failed: {0}")]
    Wal(String),
    /// node.json or store.json cannot be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// Another process runs on this node's folder.
    #[error("{0} is locked: another node process runs on this folder")]
    Locked(String),
    /// The rank is not a member of the configured cluster.
    #[error(
        "rank {rank} is not a member of a cluster of {cluster_size} (ranks 1..={cluster_size})"
    )]
    Rank {
        /// The rank.
        rank: Rank,
        /// `--cluster-size`.
        cluster_size: u32,
    },
    /// The reference refused to register this node.
    #[error("the reference refused to register this node: {0}")]
    Refused(String),
    /// The cluster key is missing, unreadable, or not the cluster's.
    #[error("{0}")]
    WrongKey(String),
    /// A bug or an unexpected stop of an internal part.
    #[error("internal error: {0}")]
    Internal(String),
}
