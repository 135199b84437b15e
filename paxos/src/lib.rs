//! Sans-I/O Multi-Paxos replica core (work in progress).
