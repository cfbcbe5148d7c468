//! One file per route; each reads parse → authorise → decide → answer.

pub mod common;
pub mod jwks;
pub mod ping;
pub mod session_verify;
pub mod token;
pub mod token_verify;
