//! The `proxy` binary.

fn main() {}
