//! The adversarial group: every way an outsider or another tenant could
//! exhaust the engine, switch off a tenant's protection or read what is not
//! theirs, one module per concern. Each test fails without its fix.

mod caches;
mod channel;
mod edges;
mod limits;
