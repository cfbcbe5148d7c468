//! Engine integration tests: one binary, one module per area.
#![allow(unreachable_pub)] // test helpers are `pub` for the modules of this one binary

mod abuse;
mod ato_identifier;
mod ato_profile;
mod browser;
mod cql_kill;
mod fuzz;
mod geo;
mod helpers;
mod internal;
mod limits_across;
mod openapi;
mod outage;
mod routes;
mod server;
