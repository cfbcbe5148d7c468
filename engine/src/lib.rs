//! The Qyzar engine: the data plane customer backends call on their hot path.
//!
//! A hand-written hyper 1.x service, no web framework: requests are routed on
//! `(method, path)` in [`router`], each route lives in its own file under
//! [`routes`] and reads top to bottom (parse → authorise → decide → answer),
//! and fixed answers are built once in [`response`].
//!
//! The binary (`src/main.rs`) and the tests start the server the same way:
//! [`server::run`] with a bound listener and a shutdown future.

pub mod background;
pub mod budget;
pub mod client_addr;
pub mod config;
pub mod config_view;
pub mod decide;
pub mod geo;
pub mod internal;
pub mod limit_sync;
pub mod limiter;
pub mod metrics;
pub mod profiles;
pub mod request;
pub mod response;
pub mod router;
pub mod routes;
pub mod server;
pub mod sessions;
pub mod state;
pub mod token_cache;
pub mod traffic;

pub use server::{run, ServerLimits};
pub use state::{Engine, StateOptions};
