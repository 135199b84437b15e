//! One-shot CLI and interactive chat client (work in progress).
