//! # e2e — end-to-end tests of paxos-zmq over real processes (work in progress)
