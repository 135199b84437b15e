//! Registry of node ranks, heartbeats and membership (work in progress).
