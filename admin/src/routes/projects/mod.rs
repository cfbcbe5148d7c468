//! `/projects*` routes of the control plane, one file per route. Every
//! dashboard route resolves the project through
//! [`crate::projects::owned`], so another account's project is a `404`
//! exactly like a missing one.

pub mod client_extra_metadata_get;
pub mod client_extra_metadata_patch;
pub mod create;
pub mod delete;
pub mod detail;
pub mod devices_data;
pub mod entropy_snapshot;
pub mod extra_metadata_get;
pub mod extra_metadata_patch;
pub mod list;
pub mod rate_limit_check;
pub mod rename;
pub mod secret_2fa;
pub mod secret_reveal;
pub mod settings_get;
pub mod settings_patch;

use axum::http::HeaderMap;
use qyzar_shared::crypto::{client_token_key, verify, Ed25519Signer, Ed25519Verifier, VerifyKeys};
use qyzar_shared::time::rfc3339;
use qyzar_shared::{ApiError, ErrorCode};
use serde::Serialize;

use crate::error::{AdminError, AdminResult};
use crate::projects::{self, ProjectRow};
use crate::AppState;

/// A project as lists and single-project answers show it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSummary {
    project_id: String,
    name: String,
    created_at: String,
}

impl From<&ProjectRow> for ProjectSummary {
    fn from(p: &ProjectRow) -> Self {
        Self {
            project_id: p.id.to_string(),
            name: p.name.clone(),
            created_at: rfc3339(p.created_at),
        }
    }
}

/// What a caller of the `client/` routes presented.
pub enum ClientCredential {
    /// The project secret (`X-Qyzar-Project-Secret`, or `Authorization:
    /// Bearer qz_sk_…`): read and write.
    Secret(String),
    /// A client JWT (`Authorization: Bearer <jwt>`, `X-Qyzar-Client-Token`
    /// or the `clientToken` query parameter): read the `public` part only.
    Token(String),
}

/// The credential on a `client/` request; the secret wins when both are sent.
pub fn client_credential(
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Option<ClientCredential> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(secret) = header("x-qyzar-project-secret") {
        return Some(ClientCredential::Secret(secret.to_owned()));
    }
    let bearer = header("authorization")
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, v)| v.trim().to_owned());
    match bearer {
        Some(b) if b.starts_with(qyzar_shared::crypto::ProjectSecret::PREFIX) => {
            Some(ClientCredential::Secret(b))
        }
        Some(b) => Some(ClientCredential::Token(b)),
        None => header("x-qyzar-client-token")
            .or(query_token.map(str::trim).filter(|t| !t.is_empty()))
            .map(|t| ClientCredential::Token(t.to_owned())),
    }
}

/// Checks a client credential against `project`: the secret against every
/// valid secret hash (constant time), a client JWT against every valid
/// HS256 and Ed25519 key of the project (so tokens minted before a rotation
/// still read during its grace). Wrong credentials are `401`.
pub async fn check_client_credential(
    state: &AppState,
    project: &ProjectRow,
    credential: &ClientCredential,
) -> AdminResult<()> {
    let now = qyzar_shared::time::now_ms();
    match credential {
        ClientCredential::Secret(secret) => {
            if projects::secret_matches(state.db.pool(), &project.id, secret, now).await? {
                Ok(())
            } else {
                Err(ApiError::with_message(
                    ErrorCode::InvalidCredentials,
                    "the project secret is not valid",
                )
                .into())
            }
        }
        ClientCredential::Token(token) => {
            let mut keys = VerifyKeys::new();
            for g in
                projects::generations(state.db.pool(), &state.secrets, &project.id, now).await?
            {
                keys = keys.with_hs256(client_token_key(&g.secret, &project.id));
                let signer =
                    Ed25519Signer::from_pkcs8(&g.ed25519_pkcs8).map_err(AdminError::internal)?;
                let verifier = Ed25519Verifier::from_public_key(signer.verifier().public_key())
                    .map_err(AdminError::internal)?;
                keys = keys.with_ed25519(verifier);
            }
            verify(token, &keys, now / 1000, project.id.as_str())
                .map(|_| ())
                .map_err(|e| {
                    ApiError::with_message(
                        ErrorCode::InvalidCredentials,
                        format!("the client token is not valid: {}", e.reason()),
                    )
                    .into()
                })
        }
    }
}
