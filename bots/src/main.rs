//! The `bots` binary.

fn main() {}
