//! `GET /projects/client/extra-metadata?projectId=`: the extra-metadata
//! document for a customer backend (project secret: the whole document) or
//! a browser holding a client JWT (only `{"public": …}`, the member meant
//! for clients; `{}` when there is none).
//!
//! parse → credentials present (`401`) → project known (`404`) →
//! credentials right (`401`) → answer.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use qyzar_shared::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_client_credential, client_credential, ClientCredential};
use crate::error::{AdminError, AdminResult};
use crate::extract::ApiQuery;
use crate::{projects, AppState};

/// The query.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    project_id: String,
    client_token: Option<String>,
}

/// Answers the document, or its public part.
pub async fn handle(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<Query>,
) -> AdminResult<Json<Value>> {
    // parse
    projects::parse_project_id(&q.project_id)?;
    let credential = client_credential(&headers, q.client_token.as_deref())
        .ok_or(ApiError::new(ErrorCode::MissingCredentials))?;
    // authorise
    let project = projects::by_id(state.db.pool(), &q.project_id).await?;
    check_client_credential(&state, &project, &credential).await?;
    // answer
    let doc: Value = serde_json::from_str(&project.extra_metadata).map_err(AdminError::internal)?;
    Ok(Json(match credential {
        ClientCredential::Secret(_) => doc,
        ClientCredential::Token(_) => {
            json!({"public": doc.get("public").cloned().unwrap_or_else(|| json!({}))})
        }
    }))
}
