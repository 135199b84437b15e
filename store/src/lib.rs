//! The replicated state machine: keys, chat, sessions (work in progress).
