//! Benchmarks of Qyzar's hot operations.
//!
//! Every structural choice the engine makes is measured against a naive or
//! well-known baseline *behind one trait*, so the bench compares structures
//! and not call shapes, and the unit tests here can check that all
//! implementations of a trait give the same answers before their speed is
//! compared:
//!
//! - [`tokens`]: [`tokens::TokenCodec`], the hand-written JWT path of
//!   `qyzar_shared::crypto` against the `jsonwebtoken` crate;
//! - [`session_map`]: [`session_map::SessionMap`], the engine's `moka` session
//!   cache against `Mutex<HashMap>` and `dashmap`;
//! - [`limiters`]: [`limiters::SingleBucket`], the engine's GCRA limiter
//!   against `governor`'s keyed limiter;
//! - [`fixtures`]: realistic inputs (claims, browser entropy, a snapshot of
//!   many projects) shared by the bench files and the tests.
//!
//! The criterion drivers live in `benches/crypto.rs` and
//! `benches/structures.rs`; BENCHMARKS.md at the workspace root says how to
//! run them and what the last numbers were.

pub mod fixtures;
pub mod limiters;
pub mod session_map;
pub mod tokens;
