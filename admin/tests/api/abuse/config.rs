//! Abuse cases: config.
