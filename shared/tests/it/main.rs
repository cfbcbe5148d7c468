//! Integration tests of the shared crate: one binary, one module per area.
#![allow(unreachable_pub)] // test helpers are `pub` for the modules of this one binary

mod crypto;
mod fuzz;
mod snapshot;
