//! Round-robin request broker (ROUTER frontend, ROUTER backend) (work in progress).
