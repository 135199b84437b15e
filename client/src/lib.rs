//! # client — talking to a paxos-zmq cluster
//!
//! The library under the `client` binary and the `bots`:
//!
//! | module | what |
//! |---|---|
//! | [`session`] | [`Connection`] (one DEALER to the broker frontend) and [`Session`]s over it: `call(op)` retries with the same `(client_id, seq)` until an answer or the deadline; `login` opens a chat session whose credential every later call carries |
//! | [`live`] | [`LiveFeed`]: a SUB socket on the proxy backend that receives the notices of followed channels and users; [`live::Reader`] reads the committed messages they announce |
//! | [`login`] | who a chat command speaks as: `--credential`, or a login with `--password` |
//! | [`args`] | the flags shared by the command line, the menu and the `bots`: [`args::Endpoints`], [`args::Timeouts`] |
//! | [`cli`] | the `client` command line: one-shot commands, `-o json` |
//! | [`exit`] | [`exit::Exit`]: the exit codes of the command line and the menu |
//! | [`menu`] | the interactive chat menu (the seeds' chat client), with live messages printed above the prompt |
//! | [`status`] | `GET /status` of the nodes, and `health`: one write through consensus per node |
//! | [`table`] | plain-text tables for people |
//! | `fake` (feature `fake-cluster`) | a stand-in for broker + nodes + proxy, for tests |
//!
//! ## Invariants kept here
//! - **Exactly once from the client's side** (DESIGN.md invariant 4): a [`Session`] has at
//!   most one request in flight (`call` takes `&mut self`) and every attempt of one call
//!   carries the same `(client_id, seq)`; the replicated session table then applies it
//!   once. `seq` strictly increases within a session, and `client_id` is random and never
//!   0 (0 is the cluster's internal client).
//! - **Honest outcomes**: a call that got no answer reports
//!   [`CallError::Timeout`] — outcome unknown, it may still take effect — and
//!   [`CallError::certainly_not_applied`] is true only when every attempt was answered by a
//!   code that guarantees no effect ([`proto::ErrorCode::certainly_not_applied`]) or the
//!   request never left the process. A history built on it never records `fail` for an
//!   operation that might have happened.
//! - **Bounded**: calls in flight per connection ([`session::MAX_IN_FLIGHT`]), followed
//!   topics per feed ([`live::MAX_FOLLOWED_TOPICS`]), the transport's bounded queues.
//!   Nothing from the network is trusted: replies and deliveries are decoded and
//!   validated by `proto`'s codec, and bad frames are counted and dropped.

pub mod args;
pub mod cli;
pub mod exit;
#[cfg(feature = "fake-cluster")]
pub mod fake;
pub mod live;
pub mod login;
pub mod menu;
pub mod session;
pub mod status;
pub mod table;

pub use live::{LiveError, LiveFeed};
pub use session::{Answer, CallError, CallOptions, Connection, ConnectionStats, Session};
