//! Abuse cases: channel.
