//! Raft cluster layer (issue 4).
