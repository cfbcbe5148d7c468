//! Abuse cases: accounts.
