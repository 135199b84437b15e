//! ZeroMQ sockets bridged to tokio: the only code that touches ZeroMQ (work in progress).
