//! Passwords: the policy, and argon2id hashes in PHC string format.
//!
//! Parameters are the argon2 crate's defaults, which are OWASP's recommended
//! minimum for argon2id (19 MiB memory, 2 passes, 1 lane): roughly 20–50 ms
//! on a server core in release builds. Hashing runs on tokio's blocking
//! pool so it never stalls the request workers. The PHC string carries its
//! own parameters, so raising them later keeps old hashes verifiable.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::Argon2;
use qyzar_shared::{ApiError, ErrorCode};

use crate::error::{AdminError, AdminResult};

/// Fewest characters a password may have (the product's rule). Length beats
/// composition rules (NIST SP 800-63B), so there are none.
pub const MIN_CHARS: usize = 10;
/// Most characters a password may have: long passphrases are welcome, but
/// hashing megabytes on request would be a denial-of-service lever.
pub const MAX_CHARS: usize = 256;

/// A PHC string with the default parameters and a random salt and digest,
/// which no known password matches. Sign-in verifies against it when the email has no account
/// (or no password), so the answer takes as long as for a wrong password on
/// a real account and its timing does not reveal which emails are members.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$2NoOa7obCsW6wScaP8VXgw$AOZCZBp+HGnFp4Pr7VQn2hqCb7Utg5tAzHYKwbWVEbs";

/// Checks the password policy; `field` names the JSON field in the error.
pub fn check_policy(password: &str, field: &'static str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if n < MIN_CHARS {
        return Err(ApiError::with_message(
            ErrorCode::InvalidField,
            "the password must have at least 10 characters",
        )
        .field(field));
    }
    if n > MAX_CHARS {
        return Err(ApiError::with_message(
            ErrorCode::InvalidField,
            "the password must have at most 256 characters",
        )
        .field(field));
    }
    Ok(())
}

fn hash_blocking(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| argon2::password_hash::Error::Crypto)?;
    let salt = SaltString::encode_b64(&salt)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

fn verify_blocking(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Hashes a password (argon2id, fresh random salt) off the request workers.
pub async fn hash(password: String) -> AdminResult<String> {
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(AdminError::internal)?
        .map_err(AdminError::internal)
}

/// Verifies `password` against `stored`, or against a dummy hash when there
/// is none (unknown email, account without a password), which then answers
/// `false` after the same amount of work.
pub async fn verify(password: String, stored: Option<String>) -> AdminResult<bool> {
    tokio::task::spawn_blocking(move || match stored {
        Some(phc) => verify_blocking(&password, &phc),
        None => {
            let _ = verify_blocking(&password, DUMMY_HASH);
            false
        }
    })
    .await
    .map_err(AdminError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_with_default_params_and_verify() {
        let phc = hash_blocking("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_blocking("correct horse battery", &phc));
        assert!(!verify_blocking("correct horse batterY", &phc));
        assert_ne!(
            hash_blocking("correct horse battery").unwrap(),
            phc,
            "salts must differ"
        );
        assert!(!verify_blocking("x", "not a phc string"));
    }

    #[test]
    fn the_dummy_hash_costs_what_a_real_one_costs() {
        let dummy = PasswordHash::new(DUMMY_HASH).unwrap();
        let real = hash_blocking("whatever password").unwrap();
        let real = PasswordHash::new(&real).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(
            dummy.params, real.params,
            "update DUMMY_HASH when the parameters change"
        );
    }

    #[test]
    fn policy_counts_characters_not_bytes() {
        assert!(check_policy("123456789", "password").is_err());
        assert!(check_policy("1234567890", "password").is_ok());
        assert!(
            check_policy("ééééééééé", "password").is_err(),
            "9 characters, 18 bytes"
        );
        assert!(check_policy(&"x".repeat(256), "password").is_ok());
        let e = check_policy(&"x".repeat(257), "newPassword").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("newPassword"));
        assert_eq!(e.code, ErrorCode::InvalidField);
    }
}
