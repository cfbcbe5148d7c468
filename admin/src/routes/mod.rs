//! One file per route.

pub mod ping;
