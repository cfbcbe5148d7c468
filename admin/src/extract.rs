//! Extractors whose rejections have the shared error shape.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use qyzar_shared::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;

use crate::error::AdminError;

/// `axum::Json`, but a bad body answers in the shared error shape: 400
/// malformed JSON, 415 wrong content type, 413 too large, 422 a field of the
/// wrong type (naming it when serde can), 400 a missing field.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AdminError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(json_rejection(&rej).into()),
        }
    }
}

fn json_rejection(rej: &JsonRejection) -> ApiError {
    match rej {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(ErrorCode::UnsupportedMediaType),
        JsonRejection::JsonSyntaxError(_) => ApiError::new(ErrorCode::MalformedJson),
        JsonRejection::JsonDataError(e) => {
            let text = e.body_text();
            if let Some(field) = text.split("missing field `").nth(1).and_then(|r| r.split('`').next()) {
                ApiError::new(ErrorCode::MissingField).field(field.to_owned())
            } else {
                let field = text.split(": ").nth(1).and_then(|r| r.split(':').next()).filter(|f| !f.contains(' ') && !f.is_empty());
                let err = ApiError::with_message(ErrorCode::InvalidField, "a field has the wrong type or value");
                match field {
                    Some(f) => err.field(f.to_owned()),
                    None => err,
                }
            }
        }
        JsonRejection::BytesRejection(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge)
        }
        _ => ApiError::new(ErrorCode::MalformedJson),
    }
}

/// `axum::extract::Query` with the shared error shape on rejection.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(rej) => {
                let _: &QueryRejection = &rej;
                let text = rej.body_text();
                let err = match text.split("missing field `").nth(1).and_then(|r| r.split('`').next()) {
                    Some(f) => ApiError::new(ErrorCode::MissingField).field(f.to_owned()),
                    None => ApiError::new(ErrorCode::MalformedQuery),
                };
                Err(err.into())
            }
        }
    }
}
