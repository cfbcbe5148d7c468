//! What the engine and the admin must agree on.
//!
//! - [`ids`]: ids and newtypes that parse once;
//! - [`identifier`]: the one normalised spelling of an anti-ATO identifier;
//! - [`error`]: the one error-code table and the JSON error shape;
//! - [`crypto`]: secrets, secrets at rest, HMAC/HKDF and client-token JWTs on `ring`;
//! - [`settings`] and [`snapshot`]: the project settings document and the
//!   versioned config snapshot admin pushes to engines;
//! - [`control`]: the control plane between admin and engines (paths, messages, keys, TLS, client);
//! - [`deadline`]: the request-body deadline both servers put on uploads;
//! - [`usage`]: verification traffic engines report to admin, and the
//!   calendar months plan quotas are counted in.

pub mod captcha;
pub mod control;
pub mod crypto;
pub mod deadline;
pub mod error;
pub mod identifier;
pub mod ids;
pub mod net;
pub mod periodic;
pub mod process;
pub mod settings;
pub mod snapshot;
pub mod telemetry;
pub mod testing;
pub mod time;
pub mod usage;

pub use error::{ApiError, ErrorCode};
