//! `GET /projects?limit=&cursor=`: the caller's projects, newest first,
//! cursor-paged.
//!
//! parse (`limit` 1–100, default 20; `cursor` opaque) → decide (keyset
//! query on `(created_at, id)`, so pages stay stable while projects are
//! added) → answer `{projects: [{projectId, name, createdAt}], nextCursor}`
//! with `nextCursor: null` on the last page.

use axum::extract::State;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use qyzar_shared::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::ProjectSummary;
use crate::auth::CurrentUser;
use crate::error::AdminResult;
use crate::extract::ApiQuery;
use crate::AppState;

/// Page size when none is asked for.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page.
pub const MAX_LIMIT: u32 = 100;

/// The query.
#[derive(Deserialize)]
pub struct Query {
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    projects: Vec<ProjectSummary>,
    next_cursor: Option<String>,
}

/// Lists the caller's projects.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<Query>,
) -> AdminResult<Json<Output>> {
    // parse
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::with_message(
            ErrorCode::InvalidField,
            "limit must be between 1 and 100",
        )
        .field("limit")
        .into());
    }
    let (before_at, before_id) = match q.cursor.as_deref() {
        Some(c) => decode_cursor(c).ok_or_else(|| {
            ApiError::with_message(
                ErrorCode::InvalidField,
                "cursor is not a cursor from this route",
            )
            .field("cursor")
        })?,
        None => (i64::MAX, String::new()),
    };
    // decide: one row more than asked tells whether another page exists.
    let rows = sqlx::query(
        "SELECT id, name, created_at FROM projects \
         WHERE owner_id = $1 AND (created_at < $2 OR (created_at = $2 AND id < $3)) \
         ORDER BY created_at DESC, id DESC LIMIT $4",
    )
    .bind(&user.user_id)
    .bind(before_at)
    .bind(&before_id)
    .bind(i64::from(limit) + 1)
    .fetch_all(state.db.pool())
    .await?;
    let mut page = Vec::with_capacity(rows.len());
    for r in &rows {
        page.push((
            r.try_get::<String, _>("id")?,
            r.try_get::<String, _>("name")?,
            r.try_get::<i64, _>("created_at")?,
        ));
    }
    let next_cursor = if page.len() > limit as usize {
        page.truncate(limit as usize);
        page.last().map(|(id, _, at)| encode_cursor(*at, id))
    } else {
        None
    };
    // answer
    let projects = page
        .into_iter()
        .map(|(id, name, at)| ProjectSummary {
            project_id: id,
            name,
            created_at: qyzar_shared::time::rfc3339(at),
        })
        .collect();
    Ok(Json(Output {
        projects,
        next_cursor,
    }))
}

/// `base64url("{created_at}.{id}")`: opaque to clients, so its form may change.
fn encode_cursor(created_at: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{created_at}.{id}"))
}

fn decode_cursor(cursor: &str) -> Option<(i64, String)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (at, id) = raw.split_once('.')?;
    qyzar_shared::ids::ProjectId::parse(id).ok()?;
    Some((at.parse().ok()?, id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_junk() {
        let id = qyzar_shared::ids::ProjectId::generate();
        let c = encode_cursor(1_700_000_000_000, id.as_str());
        assert_eq!(decode_cursor(&c), Some((1_700_000_000_000, id.to_string())));
        assert_eq!(decode_cursor("!!"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("x.prj_short")), None);
    }
}
