//! The adversarial group: token theft, lock-outs, floods that freeze
//! configuration for every tenant, slow clients, one module per concern.
//! Each test fails without its fix.

mod accounts;
mod config;
mod server;
