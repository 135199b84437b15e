//! The `reference` binary.

fn main() {}
