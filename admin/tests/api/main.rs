//! Admin integration tests: one binary, one module per area.
#![allow(unreachable_pub, dead_code)] // test helpers are `pub` for the modules of this one binary; not every test uses each

mod abuse;
mod analytics;
mod auth;
mod billing;
mod db;
mod engines;
mod fuzz;
mod helpers;
mod openapi;
mod ping;
mod projects;
mod push;
mod ui;
mod usage;
