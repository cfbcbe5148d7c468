//! `GET /opt-out/confirm?projectId&deviceId|identifier&exp&sig`: a signed
//! link a customer sends its end user; following it marks the device (or
//! the identifier) opted out, and engines stop storing its entropy.
//!
//! The link is signed by the customer's backend, which holds the project
//! secret, so Qyzar stores nothing per link:
//!
//! ```text
//! key = opt-out key = HKDF-SHA256(secret, salt "qyzar/opt-out/v1", info projectId)
//! msg = "opt-out/v1|{projectId}|device:{deviceId}|{exp}"
//!    or "opt-out/v1|{projectId}|identifier:{identifier}|{exp}"
//! sig = base64url(HMAC-SHA256(key, msg)), no padding
//! ```
//!
//! `exp` is Unix seconds. The identifier is signed exactly as given (the
//! query value after URL-decoding); only its SHA-256 is stored and pushed.
//! During a secret rotation's grace period links signed with the old secret
//! still work. Following a link twice is harmless (opting out is
//! idempotent), which also makes mail scanners that prefetch links safe.
//!
//! parse → authorise (project known `404`, link unexpired `422 exp`,
//! signature right `401 sig`) → decide (record the opt-out, rebuild and push
//! the snapshot) → answer a small HTML page to browsers (`Accept:
//! text/html`), `{optedOut, projectId, subject}` JSON to anything else.

use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use qyzar_shared::crypto::{hmac_verify, opt_out_key};
use qyzar_shared::ids::DeviceId;
use qyzar_shared::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::json;

use crate::error::AdminResult;
use crate::extract::ApiQuery;
use crate::{projects, push, AppState};

/// Longest identifier accepted: the engine's identifier limit.
const MAX_IDENTIFIER_BYTES: usize = 256;

/// The query of an opt-out link.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    project_id: String,
    device_id: Option<String>,
    identifier: Option<String>,
    exp: String,
    sig: String,
}

/// Who opts out.
enum Subject {
    Device(DeviceId),
    Identifier(String),
}

impl Subject {
    fn canonical(&self) -> String {
        match self {
            Subject::Device(d) => format!("device:{d}"),
            Subject::Identifier(i) => format!("identifier:{i}"),
        }
    }
}

/// The message an opt-out link's `sig` signs (see the module docs).
pub fn message(project_id: &str, subject_canonical: &str, exp: i64) -> String {
    format!("opt-out/v1|{project_id}|{subject_canonical}|{exp}")
}

/// Confirms an opt-out link.
pub async fn handle(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<Query>,
) -> AdminResult<Response> {
    let now = qyzar_shared::time::now_ms();
    // parse
    let subject = match (q.device_id.as_deref(), q.identifier) {
        (Some(d), None) => Subject::Device(DeviceId::parse(d).map_err(|_| {
            ApiError::with_message(ErrorCode::InvalidField, "deviceId is not a device id")
                .field("deviceId")
        })?),
        (None, Some(i)) if !i.is_empty() && i.len() <= MAX_IDENTIFIER_BYTES => {
            Subject::Identifier(i)
        }
        (None, Some(_)) => {
            return Err(ApiError::with_message(
                ErrorCode::InvalidField,
                "identifier must be 1 to 256 bytes",
            )
            .field("identifier")
            .into())
        }
        (None, None) => {
            return Err(ApiError::with_message(
                ErrorCode::MissingField,
                "give deviceId or identifier",
            )
            .field("deviceId")
            .into())
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::with_message(
                ErrorCode::InvalidField,
                "give deviceId or identifier, not both",
            )
            .field("identifier")
            .into())
        }
    };
    let exp: i64 = q.exp.trim().parse().map_err(|_| {
        ApiError::with_message(ErrorCode::InvalidField, "exp must be Unix seconds").field("exp")
    })?;
    let sig = URL_SAFE_NO_PAD
        .decode(q.sig.trim().trim_end_matches('='))
        .map_err(|_| {
            ApiError::with_message(
                ErrorCode::InvalidCredentials,
                "the link signature is not valid",
            )
            .field("sig")
        })?;
    // authorise
    let project = projects::by_id(state.db.pool(), &q.project_id).await?;
    if exp <= now / 1000 {
        return Err(ApiError::with_message(
            ErrorCode::InvalidField,
            "this opt-out link has expired",
        )
        .field("exp")
        .into());
    }
    let msg = message(project.id.as_str(), &subject.canonical(), exp);
    let generations =
        projects::generations(state.db.pool(), &state.secrets, &project.id, now).await?;
    let signed = generations
        .iter()
        .any(|g| hmac_verify(&opt_out_key(&g.secret, &project.id), msg.as_bytes(), &sig));
    if !signed {
        return Err(ApiError::with_message(
            ErrorCode::InvalidCredentials,
            "the link signature is not valid",
        )
        .field("sig")
        .into());
    }
    // decide
    let (kind, stored) = match &subject {
        Subject::Device(d) => ("device", d.as_str().to_owned()),
        Subject::Identifier(i) => ("identifier", projects::hex(&projects::sha256(i.as_bytes()))),
    };
    let inserted = sqlx::query(
        "INSERT INTO opt_outs (project_id, kind, subject, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (project_id, kind, subject) DO NOTHING",
    )
    .bind(project.id.as_str())
    .bind(kind)
    .bind(&stored)
    .bind(now)
    .execute(state.db.pool())
    .await?
    .rows_affected();
    if inserted > 0 {
        push::after_change(&state).await;
    }
    // answer
    let wants_html = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if wants_html {
        let page = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Opted out</title>\
                    <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head>\
                    <body style=\"font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem\">\
                    <h1>You are opted out</h1><p>This site will no longer store device signals for you.</p></body></html>";
        let mut res = (StatusCode::OK, page).into_response();
        res.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        return Ok(res);
    }
    Ok(Json(json!({"optedOut": true, "projectId": project.id, "subject": kind})).into_response())
}
