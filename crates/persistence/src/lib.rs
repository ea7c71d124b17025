//! sled-backed storage (issue 4).
