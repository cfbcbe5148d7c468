//! Admin errors: user errors say what is wrong in the shared shape;
//! internal errors answer an opaque 500 and are logged once with their cause.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use qyzar_shared::{ApiError, ErrorCode};

/// What a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A public error: code, message, field.
    #[error("{0}")]
    Api(#[from] ApiError),
    /// A database failure: logged, answered as 503 (the store is down) or 500.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Anything else unexpected: logged, answered as an opaque 500.
    #[error("internal: {0}")]
    Internal(String),
    /// The caller is throttled: `429 rate_limited` with `Retry-After` set to
    /// this many seconds (when the limiter knows; see [`crate::throttle`]).
    #[error("rate limited for {0} s")]
    RateLimited(u64),
}

impl From<ErrorCode> for AdminError {
    fn from(code: ErrorCode) -> Self {
        AdminError::Api(ApiError::new(code))
    }
}

/// Shorthand for handler results.
pub type AdminResult<T> = Result<T, AdminError>;

impl AdminError {
    /// An internal error from anything displayable; the text is logged only.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        AdminError::Internal(e.to_string())
    }

    /// The public error this answers with.
    pub fn api(&self) -> ApiError {
        match self {
            AdminError::Api(e) => e.clone(),
            AdminError::Db(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_),
            ) => ApiError::new(ErrorCode::StoreUnavailable),
            AdminError::RateLimited(_) => ApiError::new(ErrorCode::RateLimited),
            AdminError::Db(_) | AdminError::Internal(_) => ApiError::new(ErrorCode::Internal),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let api = self.api();
        if !matches!(self, AdminError::Api(_) | AdminError::RateLimited(_)) {
            tracing::error!(error = %self, "request failed");
        }
        let status =
            StatusCode::from_u16(api.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            api.to_json(),
        )
            .into_response();
        if api.code == ErrorCode::RateLimited {
            let retry_after = match self {
                AdminError::RateLimited(secs) => axum::http::HeaderValue::from(secs.max(1)),
                _ => axum::http::HeaderValue::from_static("60"),
            };
            res.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, retry_after);
        }
        res
    }
}
