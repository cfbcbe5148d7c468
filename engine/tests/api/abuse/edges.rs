//! Abuse cases: edges.
