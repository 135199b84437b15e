//! The paxos-zmq replica process (work in progress).
