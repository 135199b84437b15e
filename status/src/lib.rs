//! # status — the consistency report of a paxos-zmq cluster
//!
//! `./status.sh` runs this crate's binary. It asks every node's `/status` endpoint and
//! reads every `data/node-*/store.json`, then prints an etcdctl-style table and a verdict
//! ([`report`]): CONSISTENT when replicas at the same applied slot have the same digest
//! (lagging replicas are listed with how far behind they are), INCONSISTENT naming the
//! nodes that differ and the first key where they differ. It still reports from the files
//! alone when the cluster is off.
//!
//! It also shows the fabric around the replicas ([`fabric`]: the reference, each broker
//! and proxy, up or down and what it carries) and warns when it is degraded; the verdict
//! and the exit codes stay about the replicas.
//!
//! Exit codes: 0 consistent, 1 inconsistent, 2 nothing reachable.
//!
//! Only [`gather`] does I/O (a plain HTTP/1.0 GET on loopback and file reads); the verdict
//! is a pure function of what was gathered, unit-tested in [`report`].

pub mod fabric;
pub mod gather;
pub mod keys;
pub mod render;
pub mod report;

pub use report::{Observation, Report, Verdict};
