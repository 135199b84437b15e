//! # bots — load, histories, the linearizability check, chat bots
//!
//! The library under the `bots` binary:
//!
//! | module | command | what |
//! |---|---|---|
//! | [`load`] | `bots load` | N concurrent client sessions for a duration with a mix of put/get/cas/delete/publish; a live progress line, then ops/s, latency percentiles (hdrhistogram) and errors by kind |
//! | [`history`] | `--history FILE` | every key operation in DESIGN.md's history format, from one monotonic clock shared by all clients |
//! | [`check`] | `bots check FILE` | `lincheck` over a history file: exit 0 linearizable, 1 not (naming the key and the operations), 2 inconclusive or unreadable |
//! | [`chat`] | `bots chat` | the seeds' chat bots: log in, create and join channels, post, private messages, live deliveries |
//! | [`report`] | | a load run's report: the table and `--json` |
//! | [`mix`] | | `--mix put=40,get=40,...` and `--rate 2/s` |
//! | [`cli`] | | the command line |
//!
//! Every request goes through [`client::Session::call`], which retries with the same
//! `(client_id, seq)` until an answer or its deadline.
//!
//! ## Invariants kept here
//! - **An honest history**: `call` is taken before the first attempt and kept through
//!   retries; `return` when the final answer arrives; both from one [`history::Clock`]. An
//!   operation is `fail` only when the client library proves it took no effect
//!   ([`client::CallError::certainly_not_applied`]); a timeout or any doubt is `unknown`,
//!   never `fail`. A CAS mismatch is `ok` with output `false`, a get of an absent key `ok`
//!   with output `null`. Every written value is unique (client, request number and a
//!   random tag). No operation is issued that could not be recorded: the history limit is
//!   checked before the call, so a history is never missing a completed operation.
//! - **Bounded**: clients ([`load::MAX_CLIENTS`]), keys, the history queue
//!   ([`history::HISTORY_QUEUE_CAPACITY`]) and length ([`history::MAX_HISTORY_OPERATIONS`]),
//!   the CAS value cache ([`load::CAS_CACHE_BYTES`]), chat bots and channels.
//! - **Graceful stop**: at the end of `--duration` or on Ctrl-C/SIGTERM no new operation
//!   starts, the ones in flight finish (within their deadline), the history is flushed and
//!   fsynced, and the report is printed.

pub mod chat;
pub mod check;
pub mod cli;
pub mod history;
pub mod load;
pub mod mix;
pub mod report;
