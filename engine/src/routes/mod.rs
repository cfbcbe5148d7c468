//! One file per route; each reads parse → authorise → decide → answer.

pub mod ato_add_identifier;
pub mod ato_login_attempt;
pub mod common;
pub mod connect;
pub mod connect_js;
pub mod cors;
pub mod jwks;
pub mod ping;
pub mod rate_limit_check;
pub mod reverify;
pub mod session_verify;
pub mod token;
pub mod token_verify;
