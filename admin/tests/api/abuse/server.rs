//! Abuse cases: server.
