//! History format and per-key linearizability checker (work in progress).
