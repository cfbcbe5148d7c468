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
//! signature right `401 sig`; at most [`OPT_OUTS_PER_PROJECT`] confirms a
//! minute per project, `429` with `Retry-After`) → decide (already opted
//! out: nothing to do, not counted; the project at its plan's opt-out cap
//! ([`projects::snapshot_caps`]): `422 quota_exceeded`; the snapshot at its
//! budget: `409 config_budget_exceeded`; else record the opt-out and join
//! the next coalesced snapshot build) → answer a small HTML page to
//! browsers (`Accept: text/html`), `{optedOut, projectId, subject}` JSON to
//! anything else.
//!
//! Why the limits: links are signed by the customer, so a customer (or
//! whoever holds its secret) can mint them without end, and each new row
//! lands in every engine's snapshot. Unthrottled and uncapped, one tenant
//! could grow the snapshot past what engines accept and freeze every
//! tenant's configuration. The throttle counts only correctly signed links
//! (strangers cannot use up a project's budget) and only those that would
//! record something new (mail scanners prefetching links are not counted).

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
use crate::throttle::Policy;
use crate::{projects, push, AppState};

/// Opt-out confirms per project: 120 a minute is far above what people
/// clicking links produce, and bounds how fast a tenant can grow its rows.
pub const OPT_OUTS_PER_PROJECT: Policy = Policy {
    name: "opt-out-project",
    limit: 120,
    window: std::time::Duration::from_secs(60),
};

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

/// Whether this subject already opted out of `id`.
async fn already_opted_out(
    state: &AppState,
    id: &qyzar_shared::ids::ProjectId,
    kind: &str,
    subject: &str,
) -> AdminResult<bool> {
    Ok(
        sqlx::query("SELECT 1 FROM opt_outs WHERE project_id = $1 AND kind = $2 AND subject = $3")
            .bind(id.as_str())
            .bind(kind)
            .bind(subject)
            .fetch_optional(state.db.pool())
            .await?
            .is_some(),
    )
}

/// Records one opt-out unless it is already there; answers whether a row
/// was added. The project's row is locked first, so concurrent confirms
/// count and insert one after the other and cannot race past the cap.
async fn record(
    state: &AppState,
    id: &qyzar_shared::ids::ProjectId,
    kind: &str,
    subject: &str,
    now: i64,
) -> AdminResult<bool> {
    use sqlx::Row as _;
    let mut tx = state.db.pool().begin().await?;
    sqlx::query("UPDATE projects SET settings_json = settings_json WHERE id = $1")
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
    let present =
        sqlx::query("SELECT 1 FROM opt_outs WHERE project_id = $1 AND kind = $2 AND subject = $3")
            .bind(id.as_str())
            .bind(kind)
            .bind(subject)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
    if present {
        return Ok(false);
    }
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM opt_outs WHERE project_id = $1")
        .bind(id.as_str())
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    let plan = projects::owner_plan(&mut *tx, id).await?;
    let cap = projects::snapshot_caps(&plan).opt_outs;
    if usize::try_from(count).unwrap_or(usize::MAX) >= cap {
        return Err(ApiError::with_message(
            ErrorCode::QuotaExceeded,
            format!("this project has reached its plan's {cap} opt-outs; its owner must upgrade or contact support"),
        )
        .into());
    }
    push::admit(state, push::OPT_OUT_BYTES)?;
    let inserted = sqlx::query(
        "INSERT INTO opt_outs (project_id, kind, subject, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (project_id, kind, subject) DO NOTHING",
    )
    .bind(id.as_str())
    .bind(kind)
    .bind(subject)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(inserted > 0)
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
    // decide: a link already followed is answered as before without
    // counting (mail scanners prefetch links); a new one is throttled.
    let (kind, stored) = match &subject {
        Subject::Device(d) => ("device", d.as_str().to_owned()),
        Subject::Identifier(i) => ("identifier", projects::hex(&projects::sha256(i.as_bytes()))),
    };
    if !already_opted_out(&state, &project.id, kind, &stored).await? {
        let hits = state
            .throttle
            .hit(&[(&OPT_OUTS_PER_PROJECT, project.id.as_str())])?;
        if record(&state, &project.id, kind, &stored, now).await? {
            push::after_change(&state).await;
        } else {
            state.throttle.forgive(hits);
        }
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
