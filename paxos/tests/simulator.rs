//! Runs the seeded fault simulator ([`sim`]) over many seeds, and shows it has teeth.
//!
//! - `cargo test -p paxos --test simulator` runs 1,000 seeds with 3 replicas and 1,000
//!   with 5 (the two tests run in parallel).
//! - `SIM_SEEDS=100000 cargo test -p paxos --release --test simulator` runs more per test;
//!   `SIM_SEED_START=n` moves the window.
//! - `SIM_SEED=1234 cargo test -p paxos --test simulator three_replicas` replays one seed
//!   exactly (a failure prints the command).
//! - The `teeth_*` tests break one safety rule each and require the simulator to report a
//!   violation within [`TEETH_MAX_SEEDS`] seeds; they print after how many seeds it did.

mod sim;

use std::time::Instant;

use paxos::Bug;
use sim::{RunStats, SimBug, SimConfig};

/// Seeds per replica count when `SIM_SEEDS` is not set.
const DEFAULT_SEEDS: u64 = 1_000;
/// A broken rule must be caught within this many seeds.
const TEETH_MAX_SEEDS: u64 = 5_000;

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    match text.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={text:?} is not a number"),
    }
}

fn sweep(replicas: usize, test: &str) {
    let config = SimConfig::new(replicas);
    let (start, count) = match env_u64("SIM_SEED") {
        Some(seed) => (seed, 1),
        None => (
            env_u64("SIM_SEED_START").unwrap_or(0),
            env_u64("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS),
        ),
    };
    let began = Instant::now();
    let mut total = RunStats::default();
    for seed in start..start + count {
        match sim::run(seed, &config) {
            Ok(stats) => total += stats,
            Err(message) => panic!(
                "simulation FAILED: seed {seed}, {replicas} replicas: {message}\n\
                 replay: SIM_SEED={seed} cargo test -p paxos --test simulator {test}"
            ),
        }
    }
    println!(
        "simulator: {replicas} replicas, {count} seeds from {start}: {} events, {} slots decided, \
         {} client ops ({} unknown), {} crashes, {} elections, {} snapshot installs, in {:.1} s",
        total.events,
        total.slots,
        total.ops,
        total.unknown,
        total.crashes,
        total.elections,
        total.installs,
        began.elapsed().as_secs_f64()
    );
    assert!(total.ops > 0, "the clients did nothing");
}

#[test]
fn three_replicas() {
    sweep(3, "three_replicas");
}

#[test]
fn five_replicas() {
    sweep(5, "five_replicas");
}

/// Runs seeds of `config` until one fails; returns (seed, seeds run, message).
fn first_failure(config: &SimConfig) -> (u64, u64, String) {
    let bug = config.bug;
    for (n, seed) in (0..TEETH_MAX_SEEDS).enumerate() {
        if let Err(message) = sim::run(seed, config) {
            return (seed, n as u64 + 1, message);
        }
    }
    panic!("{bug:?} was not caught within {TEETH_MAX_SEEDS} seeds");
}

fn teeth(config: SimConfig) -> String {
    let (seed, runs, message) = first_failure(&config);
    let first_line = message.lines().next().unwrap_or_default();
    println!(
        "teeth: {:?} ({} replicas, invariant checks {}) caught at seed {seed}, after {runs} seeds: {first_line}",
        config.bug.map(|b| format!("{b:?}")).unwrap_or_default(),
        config.replicas,
        if config.check_invariants { "on" } else { "off" },
    );
    // The same seed fails the same way again: runs replay exactly.
    assert_eq!(sim::run(seed, &config).err(), Some(message.clone()));
    message
}

fn with_bug(bug: SimBug) -> SimConfig {
    SimConfig {
        bug: Some(bug),
        ..SimConfig::new(3)
    }
}

#[test]
fn teeth_ack_before_fsync() {
    // A driver that reports its groups durable before the fsync releases promises and
    // votes a crash can lose. Caught by a restarted replica's promise or votes (below
    // what it announced), or by a decision too few replicas hold durably.
    let message = teeth(with_bug(SimBug::AckBeforeFsync));
    assert!(
        message.contains("below the ballot")
            || message.contains("without its vote")
            || message.contains("hold durably"),
        "{message}"
    );
    // Without the direct checks, the consequences show: two values chosen for one slot,
    // replicas that diverge, or a history that is not linearizable.
    consequence(SimBug::AckBeforeFsync);
}

/// Runs `bug` with the direct invariant checks off: the simulator must still catch it
/// by what it breaks for users.
fn consequence(bug: SimBug) {
    // Every get through the log, as when these consequences were first shown: a read
    // in a slot makes one more slot for a lost vote to matter in (with two gets in three
    // served by ReadIndex, `DecisionBeforeOwnVote`'s consequence outlasts 5,000 seeds).
    let message = teeth(SimConfig {
        check_invariants: false,
        log_reads: 1.0,
        ..with_bug(bug)
    });
    assert!(
        message.contains("agreement violated")
            || message.contains("divergence")
            || message.contains("exactly-once violated")
            || message.contains("not linearizable"),
        "{message}"
    );
}

#[test]
fn teeth_promise_before_durable() {
    // Caught by a restarted replica's promise below what it announced, or by what the
    // lost promise lets through: a slot applied that too few replicas hold.
    let message = teeth(with_bug(SimBug::Core(Bug::PromiseBeforeDurable)));
    assert!(
        message.contains("below the ballot") || message.contains("hold durably"),
        "{message}"
    );
}

#[test]
fn teeth_accepted_before_durable() {
    let message = teeth(with_bug(SimBug::Core(Bug::AcceptedBeforeDurable)));
    assert!(
        message.contains("without its vote")
            || message.contains("below the ballot")
            || message.contains("hold durably"),
        "{message}"
    );
}

#[test]
fn teeth_decision_before_own_vote() {
    let message = teeth(with_bug(SimBug::Core(Bug::DecisionBeforeOwnVote)));
    assert!(message.contains("hold durably"), "{message}");
    consequence(SimBug::Core(Bug::DecisionBeforeOwnVote));
}

#[test]
fn teeth_ballot_before_durable() {
    // Caught by a restarted candidate's round (below one it ran with) or its promise,
    // or by the consequence: the same ballot proposing two values for one slot.
    let message = teeth(with_bug(SimBug::Core(Bug::BallotBeforeDurable)));
    assert!(
        message.contains("below the round")
            || message.contains("below the ballot")
            || message.contains("proposed two values"),
        "{message}"
    );
}

#[test]
fn teeth_adopt_lowest_ballot() {
    teeth(with_bug(SimBug::Core(Bug::AdoptLowestBallot)));
}

#[test]
fn teeth_stale_leader_read() {
    let message = teeth(with_bug(SimBug::StaleLeaderRead));
    assert!(message.contains("not linearizable"), "{message}");
}

#[test]
fn a_seed_replays_exactly() {
    let config = SimConfig::new(3);
    for seed in [7, 8] {
        let a = sim::run(seed, &config).unwrap();
        let b = sim::run(seed, &config).unwrap();
        assert_eq!((a.events, a.slots, a.ops), (b.events, b.slots, b.ops));
    }
}

#[test]
fn teeth_read_without_confirmation() {
    // A leader that answers read-index asks without its confirmation round may have been
    // deposed: the reads it serves miss newer writes. With three replicas a follower's ask
    // needs no round (the ask and the leader are a quorum), so what this breaks is the
    // leader's own reads.
    // The window is short (between a leader's deposition and its hearing of it, and only
    // while it has no slot in flight), so this tooth needs more seeds than most: caught
    // at seed 2,840 when it was written, at 3,770 once asks went one at a time, at 534
    // once the simulator isolated the leader in half of its isolations, at 2,061 when a
    // replica began to ask a new leader at once (fewer asks reach a deposed one), at 249
    // since (also once a follower's ask counted as a confirmation): the seed moves with
    // every change to the schedules.
    let message = teeth(with_bug(SimBug::Core(Bug::ReadWithoutConfirmation)));
    assert!(message.contains("not linearizable"), "{message}");
}
