//! One file per route.

pub mod auth;
pub mod billing;
pub mod internal_engines;
pub mod internal_snapshot;
pub mod internal_traffic;
pub mod opt_out;
pub mod origin_tokens;
pub mod ping;
pub mod projects;
pub mod stripe_webhook;
pub mod test_captcha;
