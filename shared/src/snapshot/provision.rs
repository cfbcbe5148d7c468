//! Turning a project's secret into its snapshot entry: the one place the
//! derived keys are made, used by admin, by `qyzar dev` and by tests.

use crate::crypto::{client_token_key, opt_out_key, Ed25519Signer, ProjectSecret};
use crate::ids::ProjectId;
use crate::settings::ProjectSettings;

use super::{Ed25519KeyEntry, Hs256KeyEntry, OriginTokenEntry, ProjectConfig};

/// A project entry for `secret`: its hash, the HKDF-derived HS256 and opt-out
/// keys, and (when `ed25519_pkcs8` is given) the EdDSA signing key with its
/// public half for the JWKS.
pub fn project_config(
    id: &ProjectId,
    secret: &ProjectSecret,
    settings: ProjectSettings,
    ed25519_pkcs8: Option<&[u8]>,
) -> Result<ProjectConfig, crate::crypto::CryptoError> {
    let hs = client_token_key(secret, id);
    let mut p = ProjectConfig::new(
        id,
        *secret.hash().as_bytes(),
        Hs256KeyEntry {
            kid: hs.kid().to_owned(),
            key: *hs.raw(),
            valid_until_ms: None,
        },
        opt_out_key(secret, id),
        settings,
    );
    if let Some(pkcs8) = ed25519_pkcs8 {
        let signer = Ed25519Signer::from_pkcs8(pkcs8)?;
        p.ed25519.push(Ed25519KeyEntry {
            kid: signer.kid().to_owned(),
            public_key: *signer.verifier().public_key(),
            pkcs8: Some(pkcs8.to_vec()),
            valid_until_ms: None,
        });
    }
    Ok(p)
}

/// An origin-token entry: only the token's SHA-256 travels to engines.
pub fn origin_token(token: &str, origin: &str, expires_at_ms: i64) -> OriginTokenEntry {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut token_hash = [0u8; 32];
    token_hash.copy_from_slice(d.as_ref());
    OriginTokenEntry {
        token_hash,
        origin: origin.to_owned(),
        expires_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_matches_the_secret_and_carries_derived_keys() {
        let id = ProjectId::generate();
        let secret = ProjectSecret::generate();
        let pk = Ed25519Signer::generate_pkcs8();
        let p = project_config(&id, &secret, ProjectSettings::default(), Some(&pk)).unwrap();
        assert!(p.secret_matches(secret.hash().as_bytes(), 0));
        assert!(!p.secret_matches(ProjectSecret::generate().hash().as_bytes(), 0));
        assert_eq!(p.hs256_keys[0].key, *client_token_key(&secret, &id).raw());
        assert_eq!(p.opt_out_key, opt_out_key(&secret, &id));
        assert!(p.ed25519_signing().is_some());
        let t = origin_token("qz_ot_x", "https://a.example", 5);
        assert_ne!(t.token_hash, [0u8; 32]);
    }
}
