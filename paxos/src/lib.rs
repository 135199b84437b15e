//! # paxos — a sans-I/O Multi-Paxos replica core
//!
//! One [`Replica`] per node: acceptor, learner and, when elected, the distinguished
//! proposer (leader). It is a deterministic state machine in the style of `raft-rs`:
//!
//! ```text
//!   step(envelope) ─┐                      ┌─ persist:  one group of records to append (and fsync)
//!   tick()         ─┼─▶ Replica ─ ready() ─┼─ messages: envelopes that may leave now
//!   propose(cmd)   ─┘      ▲               ├─ install_snapshot, then decided: apply in order
//!                          │               └─ rejected: commands that never reached the log
//!   persisted(group) ──────┘  (outputs that waited for those records come out of the next ready())
//! ```
//!
//! **The core alone decides what may leave before which fsync** ([`gate`]): a `Ready`
//! only ever holds what may be carried out now; a `Promise`, an `Accepted`, a decision
//! that counts this replica's own vote stay inside the replica until the driver reports
//! the records they depend on durable. The node and the simulator run the same gate.
//!
//! It owns no socket, file, clock or unseeded randomness: the node process drives it over
//! ZeroMQ and a write-ahead log, and the simulator in `tests/` drives it over a faulty
//! simulated network with crashes. Time is counted in [`Ticks`]; randomness (election
//! back-off) comes from a ChaCha generator seeded by [`Config::seed`].
//!
//! ## Layout
//! - [`config`]: [`Config`] and its [`Config::validate`].
//! - [`persist`]: the durable [`Record`]s and their fold [`Persisted`] (WAL replay and the
//!   simulator's crash-restart use the same fold).
//! - [`gate`]: the durability gate, [`Ready`] and [`Group`]: which output waits for which
//!   records.
//! - [`replica`]: [`Replica`], [`Status`]: the state, the public API (`step`, `tick`,
//!   `propose`, `read`, `ready`, `persisted`) and the outputs; one room per role beside it
//!   (`replica/`: `acceptor`, `learner` with catching up, `election`, `leader`,
//!   `read_index`, `commands`), each a further `impl Replica` over the same fields.
//! - [`reads`]: linearizable reads without a log slot (ReadIndex) and why not leases.
//! - The wire types ([`Envelope`], [`Message`], [`Ballot`], [`Value`]) live in
//!   [`proto::paxos`] and are re-exported here.
//!
//! ## Protocol
//! - **Ballots** are `(round, rank)`, compared round first. A candidate persists its round
//!   ([`Record::Round`]) before sending a `Prepare`, so a node never reuses a ballot, and
//!   a ballot names at most one value per slot.
//! - **Acceptor**: its promise never decreases (persisted with [`Record::Promise`]); it
//!   accepts an `Accept` whose ballot is at least its promise and records it
//!   ([`Record::Accept`]) before the `Accepted` leaves (the gate holds the `Accepted`
//!   until the driver reports the record durable); anything lower gets a `Nack` carrying
//!   the promise.
//! - **Election (Bully)**: every node heartbeats. A follower that has not heard its leader
//!   for `election_timeout_ticks` runs for leader if no live member (heard within the
//!   timeout) has a higher rank — or, after three timeouts without a leader, anyway, so
//!   that a higher node that hears nobody cannot stall the cluster. A node that starts or
//!   returns first listens for a timeout, and follows the leader whose heartbeats it
//!   hears, even if its own rank is higher. A candidate that fails (timeout or `Nack`)
//!   backs off for a seeded random number of ticks, so duelling candidates separate.
//! - **Phase 1 once for all slots**: the candidate asks for every slot from its first
//!   undecided one. Acceptors report their accepted values (and decided ones) in chunks
//!   of at most [`proto::paxos::MAX_PROMISE_ENTRIES`]; the candidate asks again for the
//!   rest. With a quorum of complete reports, the new leader re-proposes in every slot up
//!   to the highest reported one the value with the **highest** ballot, fills the other
//!   holes with no-ops, and only then gives slots to new commands. An acceptor that
//!   truncated its log behind a snapshot cannot report those slots; the candidate first
//!   catches up to them.
//! - **Steady state**: pending commands are batched into one slot per [`Replica::ready`]
//!   call (bounded by `max_batch_commands` / `max_batch_bytes`), with up to
//!   `window_slots` slots in flight; `Accept`s of undecided slots are retransmitted every
//!   `retransmit_ticks`; a quorum of `Accepted` decides the slot and the leader broadcasts
//!   `Decide { slot, ballot }` — without the value, which every acceptor that accepted in
//!   that ballot holds (a leader proposes one value per slot in its ballot); the others
//!   fetch the slot. Every vote goes to every node, the leader's own included (once its
//!   `Accept` record is durable): a replica that accepted the slot learns it from a
//!   quorum of votes of one ballot, with three replicas its own and the leader's,
//!   without waiting for the `Decide`. A leader that has not heard a majority for a
//!   timeout steps down. A `Nack` or a heartbeat of a higher-ballot leader makes a leader
//!   step down.
//! - **Learning**: decided slots are handed out strictly in order without gaps
//!   ([`Ready::decided`]). Heartbeats and `Accept`s carry the sender's decided prefix; a
//!   replica behind asks for the missing slots (`Fetch`), and a peer that truncated them
//!   answers with its snapshot in chunks ([`Ready::install_snapshot`]). The log is
//!   truncated when the driver reports a durable snapshot ([`Replica::snapshot_taken`]).
//! - **Lamport clock**: every envelope carries the sender's clock; a receiver moves to
//!   `max(local, received) + 1`; the leader stamps each value with its clock when it
//!   proposes it, and the store records it with the applied entries.
//! - **Reads** ([`Replica::read`], [`reads`]) take no slot: ReadIndex. The leader gives
//!   each ask the index `next_slot - 1` and confirms that a quorum promised no higher
//!   ballot after the reads arrived: by a round sent after the ask arrived (one for
//!   every ask that arrived meanwhile), or, with two or three replicas, by the asking
//!   follower's promise carried in its ask. The serving replica — any of them — releases the read in
//!   [`Ready::reads`] once it applied that far; the driver reads its own state. A
//!   read-only command proposed like any other goes through the log and is linearizable
//!   too; a `local` read is the driver's business (it answers from its applied state at
//!   once).
//! - **Clients**: a follower forwards commands to the leader it knows — at once when the
//!   leader has no slot in flight (as far as this follower accepted, or learnt from
//!   votes before the leader's `Decide`), otherwise with its
//!   next `Accepted`, which is when the leader cuts its next batch (and at the latest on
//!   the next tick): one `Forward` per slot instead of one per arrival. Without a leader
//!   it buffers them (bounded) and rejects them with `unavailable` after
//!   `pending_timeout_ticks`. Exactly-once effects come from the store's session table:
//!   a command may appear in the log twice (a client retry), and takes effect once.
//!
//! ## Invariants
//! - Agreement: one value per slot per replica — learning a second, different value for a
//!   slot is an `assert!` (it would mean the protocol is broken; stop before spreading it).
//! - The promise never decreases, across restarts too ([`Persisted::apply`] keeps the
//!   maximum).
//! - Persist before send: every output that depends on a record is handed out only once
//!   the driver reported that record's group durable ([`Replica::persisted`]); the
//!   exceptions are argued in [`gate`]. Reporting a group never handed out is an
//!   `assert!`.
//! - In-order apply: [`Ready::decided`] continues exactly where the last one stopped, or
//!   right after [`Ready::install_snapshot`].
//! - Bounded: the pending queue, the window, batches, promise and fetch answers, snapshot
//!   chunks and snapshot size all have named limits.
//!
//! ## Testing
//! - Unit tests of the acceptor rules, phase 1, batching and catch-up (`src/tests.rs`) and
//!   of the [`Persisted`] fold.
//! - `tests/scenarios.rs`: the classic traps, one per test, on a deterministic cluster
//!   whose test decides which messages are lost.
//! - `tests/simulator.rs`: the seeded fault simulator (`tests/sim/mod.rs`), which drives
//!   each replica through this same API and gate — loss, duplication, reordering, delays,
//!   (asymmetric) partitions, a disk slower or faster than the network, crashes that keep
//!   a random prefix of what was not fsynced, snapshots; agreement, one value per ballot
//!   and slot, promises/rounds/votes kept across restarts, every applied slot durably
//!   held by a quorum, in-order apply, digests and exactly-once checked after every
//!   event, convergence after the heal, and the clients' history checked by `lincheck`.
//!   `cargo test -p paxos` runs 2,000 seeds;
//!   `SIM_SEEDS=100000 cargo test -p paxos --release --test simulator` runs more;
//!   `SIM_SEED=n` replays one seed exactly.
//! - The `bug-injection` feature (enabled only by this crate's own dev-dependency, so it
//!   does not exist in the builds of other crates) adds `Replica::inject_bug`; the
//!   `teeth_*` tests break one safety rule each — the gate's rules among them — and
//!   require the simulator to catch it within 5,000 seeds.

pub mod config;
pub mod gate;
pub mod persist;
pub mod reads;
pub mod replica;

pub use config::{Config, ConfigError, MAX_PENDING_COMMANDS, MAX_WINDOW_SLOTS};
pub use gate::{Group, MAX_HELD_GROUPS, Ready};
pub use persist::{Persisted, Record};
pub use reads::{MAX_READ_ASKS, RIDING_ROUND_PATIENCE_TICKS, ReadId};
#[cfg(feature = "bug-injection")]
pub use replica::Bug;
pub use replica::{PeerStatus, Replica, Role, Status};

pub use proto::paxos::{Ballot, Envelope, Message, Rank, Round, Slot, Value};

/// Logical time: the driver calls [`Replica::tick`] once per tick.
pub type Ticks = u32;

#[cfg(test)]
mod tests;
