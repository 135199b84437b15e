//! Load generators, history recorder and linearizability check (work in progress).
