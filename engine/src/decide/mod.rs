//! Pure decisions the hot routes make: no I/O, no clocks, no caches.
//!
//! The routes gather facts (the request body, what the store knows) and call
//! these functions; keeping them pure makes every weight and threshold unit
//! testable and the answers deterministic for the same input.
//!
//! - [`entropy`]: the browser entropy `/connect` receives, and its caps;
//! - [`device_id`](mod@device_id): the stable `dev_…` id and the drift between two entropies;
//! - [`ua`]: what a user-agent string says (browser, OS, desktop or mobile);
//! - [`bot`]: the bot score of one connect;
//! - [`ato`]: the anti-account-takeover judgement of one login attempt.

pub mod ato;
pub mod bot;
pub mod device_id;
pub mod entropy;
pub mod ua;

#[cfg(test)]
mod fixtures;

pub use ato::{score_login, Action, AtoDecision, Attempt, History, PriorSnapshot, Thresholds};
pub use bot::{score_bot, Risk};
pub use device_id::{device_id, diff_keys};
pub use entropy::{Entropy, EntropyError, Screen};
pub use ua::{OsFamily, Platform, UaInfo};
