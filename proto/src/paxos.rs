//! Node ↔ node messages of Multi-Paxos, carried over the proxy. Filled in with the
//! Paxos core.
