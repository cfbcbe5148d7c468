//! The one public error contract of both services.
//!
//! Every error either service returns is an [`ErrorCode`] from this closed
//! table: the code fixes the HTTP status and the snake_case name clients match
//! on. The JSON body is always
//! `{"error": {"code": "...", "message": "...", "field": "..."}}` with `field`
//! only when one input field is at fault. Crate-local `thiserror` enums map
//! into this table; nothing else reaches the wire.

use std::borrow::Cow;

use serde::Serialize;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident => ($status:literal, $name:literal, $msg:literal), )*) => {
        /// A public error code: status, wire name and a default message.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, for tests and for the OpenAPI documents.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The HTTP status this code is answered with.
            pub const fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// The snake_case name clients match on.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $name,)* }
            }

            /// A human message for when the caller has nothing more specific.
            pub const fn default_message(self) -> &'static str {
                match self { $(ErrorCode::$variant => $msg,)* }
            }
        }
    };
}

error_codes! {
    /// The body is not well-formed JSON, or not the expected shape.
    MalformedJson => (400, "malformed_json", "the request body is not valid JSON of the expected shape"),
    /// The query string could not be parsed.
    MalformedQuery => (400, "malformed_query", "the query string is not valid"),
    /// A required field or parameter is absent.
    MissingField => (400, "missing_field", "a required field is missing"),
    /// No credentials were presented.
    MissingCredentials => (401, "missing_credentials", "credentials are required"),
    /// Credentials were presented and are wrong.
    InvalidCredentials => (401, "invalid_credentials", "the credentials are not valid"),
    /// A second factor is required before this is allowed.
    TwoFactorRequired => (401, "two_factor_required", "a second factor is required"),
    /// Authenticated, but this is not allowed.
    Forbidden => (403, "forbidden", "this action is not allowed"),
    /// The email address has not been verified yet.
    EmailNotVerified => (403, "email_not_verified", "the email address is not verified"),
    /// The origin is not allowed for this project.
    OriginNotAllowed => (403, "origin_not_allowed", "the origin is not allowed for this project"),
    /// No such route.
    RouteNotFound => (404, "route_not_found", "no such route"),
    /// No such object, or not one the caller may see.
    NotFound => (404, "not_found", "not found"),
    /// No project with that id is known.
    ProjectNotFound => (404, "project_not_found", "no project with that id"),
    /// The route exists but not for this method; the answer carries `Allow`.
    MethodNotAllowed => (405, "method_not_allowed", "method not allowed on this route"),
    /// The client did not send its whole request body within the server's
    /// body deadline (a slow or stalled upload); the connection is closed.
    RequestTimeout => (408, "request_timeout", "the request body did not arrive in time"),
    /// The object already exists or changed meanwhile.
    Conflict => (409, "conflict", "the request conflicts with the current state"),
    /// The change would make the config snapshot larger than every engine
    /// accepts: refused alone, so every other tenant's changes still reach
    /// the engines. Free some room (invalidate origin tokens, trim settings)
    /// or contact the operator.
    ConfigBudgetExceeded => (409, "config_budget_exceeded", "this change would make the configuration too large to deliver to the engines"),
    /// Internal (admin → engine push): the engine already serves this
    /// snapshot version or a newer one; nothing to do.
    SnapshotNotNewer => (409, "snapshot_not_newer", "the engine already serves this configuration version or a newer one"),
    /// Internal (admin → engine push): the delta applies to a version the
    /// engine does not hold; send the full snapshot.
    SnapshotNeedsFull => (409, "snapshot_needs_full", "the engine does not hold the delta's base version; send the full snapshot"),
    /// The idempotency key was used before with a different request.
    IdempotencyKeyReused => (409, "idempotency_key_reused", "this idempotency key was used for a different request"),
    /// The body is larger than the route allows.
    PayloadTooLarge => (413, "payload_too_large", "the request body is too large"),
    /// The body is not `application/json`.
    UnsupportedMediaType => (415, "unsupported_media_type", "the request body must be application/json"),
    /// A field is present but its value is not acceptable.
    InvalidField => (422, "invalid_field", "a field has an invalid value"),
    /// A plan quota would be exceeded.
    QuotaExceeded => (422, "quota_exceeded", "the plan's quota is reached"),
    /// The caller itself is throttled; the answer carries `Retry-After`.
    RateLimited => (429, "rate_limited", "too many requests; retry later"),
    /// The project owner's plan has used up its verifications for this
    /// calendar month (UTC); new browser verifications resume at the next
    /// month or after an upgrade. Sessions already open keep verifying.
    VerificationQuotaExceeded => (429, "verification_quota_exceeded", "the plan's monthly verifications are used up; upgrade or wait for the next month"),
    /// Billing is not configured on this deployment (no Stripe key or
    /// price). A lasting state of the deployment, not an outage: `409` (the
    /// request conflicts with how this deployment is set up), so clients,
    /// load balancers and monitors do not retry it or count it as a failure
    /// the way they do a `503`.
    BillingNotConfigured => (409, "billing_not_configured", "billing is not configured on this deployment"),
    /// The engine has no config snapshot yet and will not guess.
    NotConfigured => (503, "not_configured", "the engine has no configuration yet"),
    /// A backing store is down and no safe answer exists.
    StoreUnavailable => (503, "store_unavailable", "a backing store is unavailable; retry later"),
    /// The server did not finish the request within its handler deadline.
    /// The work is not cancelled half-way: it completes or fails as a whole
    /// in the background, so a retry (with the same `Idempotency-Key`, where
    /// the route takes one) is safe.
    DeadlineExceeded => (503, "deadline_exceeded", "the request took too long to answer; retry later"),
    /// A bug or an unexpected failure; details are logged, never answered.
    Internal => (500, "internal", "internal error"),
}

/// One error answer: a code, a message for humans and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The public code.
    pub code: ErrorCode,
    /// The human message; static on the hot path so errors cost no formatting.
    pub message: Cow<'static, str>,
    /// The input field at fault, when there is exactly one.
    pub field: Option<Cow<'static, str>>,
}

impl ApiError {
    /// An error with the code's default message.
    pub const fn new(code: ErrorCode) -> Self {
        Self {
            code,
            message: Cow::Borrowed(code.default_message()),
            field: None,
        }
    }

    /// An error with its own message.
    pub fn with_message(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// Names the field at fault.
    pub fn field(mut self, field: impl Into<Cow<'static, str>>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The JSON body, serialised.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'static str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            field: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct Outer<'a> {
            error: Inner<'a>,
        }
        serde_json::to_vec(&Outer {
            error: Inner {
                code: self.code.as_str(),
                message: &self.message,
                field: self.field.as_deref(),
            },
        })
        .unwrap_or_else(|_| br#"{"error":{"code":"internal","message":"internal error"}}"#.to_vec())
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        Self::new(code)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case_and_statuses_are_client_or_server_errors() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate name {}", c.as_str());
            assert!(
                c.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                c.as_str()
            );
            assert!((400..600).contains(&c.status()));
            assert!(!c.default_message().is_empty());
        }
    }

    #[test]
    fn body_has_the_documented_shape() {
        let e = ApiError::new(ErrorCode::InvalidField).field("rateLimit.ip.limit");
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["error"]["code"], "invalid_field");
        assert_eq!(v["error"]["field"], "rateLimit.ip.limit");
        assert!(v["error"]["message"].as_str().unwrap().len() > 3);
        let v: serde_json::Value =
            serde_json::from_slice(&ApiError::new(ErrorCode::NotFound).to_json()).unwrap();
        assert!(
            v["error"].get("field").is_none(),
            "field is omitted when no field is at fault"
        );
        assert_eq!(ErrorCode::PayloadTooLarge.status(), 413);
        assert_eq!(ErrorCode::StoreUnavailable.status(), 503);
    }
}
