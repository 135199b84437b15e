//! # lincheck — histories of key-value operations and a linearizability checker
//!
//! The bots and the Paxos simulator record every `put`/`get`/`cas`/`delete` they issue as
//! an [`Operation`] (one JSON object per line: the *History format* of DESIGN.md), and
//! [`check`] decides whether some order of the operations, each taking effect at one
//! instant between its call and its return, explains every observed result.
//!
//! ```text
//! {"client":3,"op":"put","key":"k","value":"v1","outcome":"ok","call":100,"return":250}
//! {"client":4,"op":"get","key":"k","output":"v1","outcome":"ok","call":120,"return":300}
//! ```
//!
//! ## The model
//! One register per key, initially absent (`null`). `put` sets it, `delete` clears it,
//! `get` returns it, `cas` sets it to `value` iff it holds `expected` (`null`: absent); a
//! `cas` with output `false` took no effect but observed a different value.
//!
//! Outcomes: `ok` operations must take effect within `[call, return]`; `fail` operations
//! certainly took no effect and are dropped; `unknown` operations (a timeout, a lost
//! reply) may have taken effect at any instant after their call, or never, and their
//! output is not known: they are modelled with an infinite return and are allowed never
//! to take effect (an unknown `get` observes nothing and is dropped).
//!
//! ## The search
//! Keys are independent registers, so the history is linearizable iff each key's
//! sub-history is (P-compositionality, Herlihy & Wing); keys are checked on parallel
//! threads. Each key is a Wing & Gong search over the call/return events, with Lowe's
//! memoisation of every (set of linearized operations, register value) configuration
//! already explored — the algorithm of Porcupine. A budget of search steps per key
//! ([`CheckOptions::max_steps_per_key`]) bounds the time and [`MAX_MEMO_BYTES_PER_KEY`] the
//! memory: over either, the verdict is [`Verdict::Inconclusive`], never a guess.
//!
//! ## Invariants kept here
//! - A verdict of [`Verdict::NotLinearizable`] is a proof: the whole search space of that
//!   key was explored. [`Verdict::Linearizable`] comes with a witness order internally.
//! - Parsing never panics; a bad line is a [`ParseError`] naming its line number, and a
//!   line is at most [`MAX_LINE_BYTES`] bytes.

mod check;
mod history;

pub use check::{
    CheckOptions, DEFAULT_MAX_STEPS_PER_KEY, MAX_MEMO_BYTES_PER_KEY, Verdict, Violation, check,
    check_file,
};
pub use history::{
    MAX_LINE_BYTES, OpKind, Operation, Outcome, Output, ParseError, parse_history, write_operation,
};
