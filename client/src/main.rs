//! The `client` binary.

fn main() {}
