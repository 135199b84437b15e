//! XSUB/XPUB forwarder for the Paxos and chat topics (work in progress).
