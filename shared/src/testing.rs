//! Support for tests that need a real backend server (PostgreSQL, a CQL node).
//!
//! The test command (`deploy/test.sh`) starts the servers and exports their
//! addresses together with `QYZAR_TEST_REQUIRE_BACKENDS=1`; then a backend
//! test that cannot find its server fails. A plain `cargo test` without those
//! variables skips such tests with one printed line each, so the rest of the
//! suite stays useful on a laptop without servers.

/// The value of the environment variable `var` naming a test backend, or
/// `None` after printing one `skipped:` line when the backend is not
/// configured and not required.
///
/// # Panics
/// When the variable is unset but `QYZAR_TEST_REQUIRE_BACKENDS=1`: under the
/// test command a missing backend is a failure, never a silent skip.
pub fn backend(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ if required() => {
            panic!("{what}: {var} is not set but QYZAR_TEST_REQUIRE_BACKENDS=1; run deploy/test.sh")
        }
        _ => {
            println!("skipped: {what} (set {var}, or run deploy/test.sh)");
            None
        }
    }
}

/// Whether backend tests must run (set by the test command).
pub fn required() -> bool {
    std::env::var("QYZAR_TEST_REQUIRE_BACKENDS").is_ok_and(|v| v == "1")
}

/// A short random lowercase name for a per-test database or keyspace.
pub fn unique_name(prefix: &str) -> String {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("system random source");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}{hex}")
}
