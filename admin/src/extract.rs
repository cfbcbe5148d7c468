//! Extractors whose rejections have the shared error shape.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use qyzar_shared::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;

use crate::error::AdminError;

/// A JSON object body whose problems answer in the shared error shape:
/// 415 not declared as JSON, 413 too large, 400 malformed JSON or a missing
/// field, 422 a body that is not an object or a field of the wrong type or
/// value (named by its path, e.g. `settings.rateLimit.ip.limit`).
///
/// Only objects are accepted: serde would otherwise fill a struct from a
/// JSON array in field order, which no client means.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AdminError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let mime = v.split(';').next().unwrap_or("").trim();
                mime.eq_ignore_ascii_case("application/json")
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(rej) if rej.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::new(ErrorCode::PayloadTooLarge).into())
            }
            Err(_) => return Err(ApiError::new(ErrorCode::MalformedJson).into()),
        };
        if !is_json {
            return Err(ApiError::new(ErrorCode::UnsupportedMediaType).into());
        }
        parse_object(&bytes).map(ApiJson).map_err(AdminError::from)
    }
}

/// Parses a JSON object into `T` with the error mapping of [`ApiJson`].
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() => {
            return Err(ApiError::with_message(
                ErrorCode::InvalidField,
                "the body must be a JSON object",
            ));
        }
        _ => return Err(ApiError::new(ErrorCode::MalformedJson)),
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let text = inner.to_string();
                if let Some(field) = text
                    .split("missing field `")
                    .nth(1)
                    .and_then(|r| r.split('`').next())
                {
                    let full = if path == "." || path.is_empty() {
                        field.to_owned()
                    } else {
                        format!("{path}.{field}")
                    };
                    ApiError::new(ErrorCode::MissingField).field(full)
                } else {
                    let err = ApiError::with_message(
                        ErrorCode::InvalidField,
                        "a field has the wrong type or value",
                    );
                    if path == "." || path.is_empty() {
                        err
                    } else {
                        err.field(path)
                    }
                }
            }
            _ => ApiError::new(ErrorCode::MalformedJson),
        }
    })
}

/// A request field that holds a credential (password, TOTP or recovery
/// code, single-use token): deserialised like `T`, but its `Debug` prints
/// `<redacted>`, so a `{:?}` of a request body (a log line, a panic message,
/// a test failure) never shows the value. Reading it takes an explicit
/// [`Redacted::expose`], which is easy to spot in review.
#[derive(Clone, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself; do not log it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// The value itself, taking it out; do not log it.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
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
                let err = match text
                    .split("missing field `")
                    .nth(1)
                    .and_then(|r| r.split('`').next())
                {
                    Some(f) => ApiError::new(ErrorCode::MissingField).field(f.to_owned()),
                    None => ApiError::new(ErrorCode::MalformedQuery),
                };
                Err(err.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Inner {
        limit: u32,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Secretive {
        email: String,
        password: Redacted<String>,
        code: Option<Redacted<String>>,
    }

    #[test]
    fn redacted_fields_never_show_in_debug() {
        let body: Secretive = parse_object(
            br#"{"email":"ann@example.com","password":"hunter2-hunter2","code":"123456"}"#,
        )
        .unwrap();
        assert_eq!(body.password.expose(), "hunter2-hunter2");
        for text in [format!("{body:?}"), format!("{body:#?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("123456"), "{text}");
            assert!(
                text.contains("ann@example.com"),
                "other fields still show: {text}"
            );
            assert!(text.contains("<redacted>"), "{text}");
        }
        let e = parse_object::<Secretive>(br#"{"email":"a","password":7}"#).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::InvalidField, Some("password")),
            "a wrapped field is checked like the plain type"
        );
        let e = parse_object::<Secretive>(br#"{"email":"a"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::MissingField, Some("password"))
        );
    }

    #[test]
    fn only_objects_are_accepted_and_errors_name_their_field() {
        assert!(parse_object::<Body>(br#"{"name":"a"}"#).is_ok());
        let e = parse_object::<Body>(br#"["a"]"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField, "an array is not an object");
        assert_eq!(
            parse_object::<Body>(b"{").unwrap_err().code,
            ErrorCode::MalformedJson
        );
        assert_eq!(
            parse_object::<Body>(b"").unwrap_err().code,
            ErrorCode::MalformedJson
        );
        let e = parse_object::<Body>(b"{}").unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::MissingField, Some("name"))
        );
        let e = parse_object::<Body>(br#"{"name":"a","inner":{"limit":"x"}}"#).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::InvalidField, Some("inner.limit"))
        );
    }
}
