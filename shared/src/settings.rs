//! The project settings document: one JSON object per project, edited in
//! admin, validated whole when written and pushed to engines in the config
//! snapshot.
//!
//! The shape is exactly PRODUCT.md "Project settings". Every field has a
//! default, so `{}` is a valid document; unknown keys are refused so a typo
//! (`"sessionTTLSeconds"`) is a 422 naming the key instead of a silently
//! ignored setting. The same types derive `rkyv` so the snapshot carries them
//! typed and the engine never parses JSON when it swaps a snapshot.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};

/// Largest settings document accepted. Every valid document fits: 100
/// origins of the longest valid form are about 27 KiB; anything bigger is
/// not a settings document and is refused before parsing.
pub const MAX_SETTINGS_BYTES: usize = 32 * 1024;

/// Shortest session lifetime: below a minute a session would expire between
/// `/connect` and the backend's first verify.
pub const MIN_SESSION_TTL_SECONDS: u32 = 60;
/// Longest session lifetime (90 days), the longest peers allow for a
/// device-bound session before re-collecting entropy.
pub const MAX_SESSION_TTL_SECONDS: u32 = 90 * 24 * 3600;
/// Shortest client-token lifetime: enough for one backend round trip.
pub const MIN_CLIENT_TOKEN_TTL_SECONDS: u32 = 30;
/// Longest client-token lifetime: a bearer JWT cannot be revoked offline, so
/// it must stay short-lived.
pub const MAX_CLIENT_TOKEN_TTL_SECONDS: u32 = 24 * 3600;
/// Longest cookie name: names travel in every request header of the customer.
pub const MAX_COOKIE_NAME_BYTES: usize = 64;
/// Most allowed origins: the CORS check scans them on every preflight.
pub const MAX_ALLOWED_ORIGINS: usize = 100;
/// Longest origin: a DNS name (253) plus scheme and port.
pub const MAX_ORIGIN_BYTES: usize = 270;
/// Largest rate-limit burst; also bounds the GCRA arithmetic.
pub const MAX_RATE_LIMIT: u32 = 1_000_000;
/// Longest rate-limit window (one day): longer windows belong to quotas.
pub const MAX_RATE_WINDOW_SECONDS: u32 = 86_400;
/// Most metadata buckets: each one is a limiter consulted on every check.
pub const MAX_METADATA_BUCKETS: usize = 16;
/// Longest metadata bucket name; names appear in `deniedBy: "metadata:<name>"`.
pub const MAX_BUCKET_NAME_BYTES: usize = 32;
/// Highest ATO score: scores are 0–100.
pub const MAX_ATO_SCORE: u32 = 100;
/// Shortest failed-attempt window: shorter would miss slow credential stuffing.
pub const MIN_ATO_WINDOW_SECONDS: u32 = 60;
/// Longest failed-attempt window (one day).
pub const MAX_ATO_WINDOW_SECONDS: u32 = 86_400;

/// The settings of one project.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProjectSettings {
    /// How long a verify session lives; also the cookies' `Max-Age`.
    pub session_ttl_seconds: u32,
    /// Default and maximum lifetime of a client token.
    pub client_token_ttl_seconds: u32,
    /// Cookie names the engine sets and reads, so a customer can avoid clashes.
    pub cookie_names: CookieNames,
    /// Origins allowed to call `/connect` cross-origin (reflected in CORS).
    pub allowed_origins: Vec<String>,
    /// Lets `/connect` accept test captcha tokens; never on in production.
    pub test_mode: bool,
    /// How client tokens are signed.
    pub token_algorithm: TokenAlgorithm,
    /// Rate-limit rules applied by `/projects/client/rate-limit-check`.
    pub rate_limit: RateLimitSettings,
    /// Per-client-IP limits on the browser routes (`/connect`,
    /// `/connect/reverify`), so one client cannot spend the project's
    /// monthly verifications or fill its stores.
    pub browser_rate_limit: BrowserRateLimit,
    /// Thresholds of the anti-account-takeover decision.
    pub ato: AtoSettings,
}

impl Default for ProjectSettings {
    fn default() -> Self {
        Self {
            session_ttl_seconds: 604_800,
            client_token_ttl_seconds: 900,
            cookie_names: CookieNames::default(),
            allowed_origins: Vec::new(),
            test_mode: false,
            token_algorithm: TokenAlgorithm::Hs256,
            rate_limit: RateLimitSettings::default(),
            browser_rate_limit: BrowserRateLimit::default(),
            ato: AtoSettings::default(),
        }
    }
}

/// Names of the two session cookies.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CookieNames {
    /// Cookie carrying the session id.
    pub session_id: String,
    /// Cookie carrying the session token.
    pub session_token: String,
}

impl Default for CookieNames {
    fn default() -> Self {
        Self {
            session_id: "qyzar_session_id".into(),
            session_token: "qyzar_session_token".into(),
        }
    }
}

/// How client tokens are signed.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum TokenAlgorithm {
    /// HMAC-SHA256 with a key derived from the project secret: a backend
    /// holding the secret verifies offline with any JWT library.
    #[default]
    #[serde(rename = "HS256")]
    Hs256,
    /// Ed25519: public keys are published at `/projects/client/jwks`, so
    /// parties without the secret can verify.
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl TokenAlgorithm {
    /// The JWT `alg` header value.
    pub const fn as_str(self) -> &'static str {
        match self {
            TokenAlgorithm::Hs256 => "HS256",
            TokenAlgorithm::EdDsa => "EdDSA",
        }
    }
}

/// One GCRA rule: a burst of `limit` refilled at `limit / windowSeconds` per
/// second. Also the shape of each rule in a rate-limit check's
/// `settingsOverride`, so both are validated by [`RateRule::validate`].
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateRule {
    /// Burst size and number of cells per window.
    pub limit: u32,
    /// Time for a full bucket to refill.
    pub window_seconds: u32,
}

impl RateRule {
    /// Checks the ranges; `path` is the JSON path of this rule (e.g.
    /// `rateLimit.ip` or `settingsOverride.metadata.email`), so the error
    /// names the exact member at fault.
    pub fn validate(&self, path: &str) -> Result<(), ApiError> {
        if !(1..=MAX_RATE_LIMIT).contains(&self.limit) {
            return Err(invalid(
                format!("{path}.limit"),
                "limit must be between 1 and 1000000",
            ));
        }
        if !(1..=MAX_RATE_WINDOW_SECONDS).contains(&self.window_seconds) {
            return Err(invalid(
                format!("{path}.windowSeconds"),
                "windowSeconds must be between 1 and 86400",
            ));
        }
        Ok(())
    }
}

/// The rate-limit section: an IP rule plus one rule per metadata key.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Rule keyed by the caller-reported client IP.
    pub ip: RateRule,
    /// Rules keyed by a metadata value (`email`, `userId`, …) of the check.
    /// A `BTreeMap` so the snapshot encoding and the JSON are deterministic.
    pub metadata: BTreeMap<String, RateRule>,
    /// Whether denies are recorded for analytics unless the call says otherwise.
    pub analytics_on_deny: bool,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            ip: RateRule {
                limit: 60,
                window_seconds: 60,
            },
            metadata: BTreeMap::from([(
                "email".to_owned(),
                RateRule {
                    limit: 5,
                    window_seconds: 300,
                },
            )]),
            analytics_on_deny: true,
        }
    }
}

impl RateLimitSettings {
    /// Checks every rule and bucket name; `path` is where this section sits
    /// (`rateLimit` in settings, `settingsOverride` in a check).
    pub fn validate(&self, path: &str) -> Result<(), ApiError> {
        self.ip.validate(&format!("{path}.ip"))?;
        if self.metadata.len() > MAX_METADATA_BUCKETS {
            return Err(invalid(
                format!("{path}.metadata"),
                "at most 16 metadata buckets are allowed",
            ));
        }
        for (name, rule) in &self.metadata {
            if !is_bucket_name(name) {
                return Err(invalid(
                    format!("{path}.metadata.{name}"),
                    "bucket names are 1 to 32 characters of a-z, A-Z, 0-9 and _",
                ));
            }
            rule.validate(&format!("{path}.metadata.{name}"))?;
        }
        Ok(())
    }
}

/// Limits per (project, client IP; an IPv6 client by its /64) on the
/// browser routes. Each call costs one cell of its route's rule; a throttled
/// call is answered `429 rate_limited` with `Retry-After`, stores nothing
/// and is not counted.
///
/// Why these defaults: a page opens one session per visit and re-verifies a
/// few times an hour per open tab, so even an office or a carrier NAT with
/// many users behind one address stays far below 120 new sessions and 600
/// re-verifications a minute, while a script opening sessions in a loop (the
/// abuse these limits exist for) is stopped within a second.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BrowserRateLimit {
    /// `POST /connect` per client IP.
    pub connect: RateRule,
    /// `POST /connect/reverify` per client IP.
    pub reverify: RateRule,
}

impl Default for BrowserRateLimit {
    fn default() -> Self {
        Self {
            connect: RateRule {
                limit: 120,
                window_seconds: 60,
            },
            reverify: RateRule {
                limit: 600,
                window_seconds: 60,
            },
        }
    }
}

/// The plan of a project's owner, as the engine sees it (admin puts it in
/// the snapshot): it sizes the project's share of the engine's limiter and
/// bounds what a rate-limit check's `settingsOverride` may ask.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PlanTier {
    /// The default of every account (and of an unknown plan key).
    #[default]
    Free,
    /// Paid, self-serve.
    Pro,
    /// Paid, large.
    Enterprise,
}

/// What a [`PlanTier`] grants a project inside an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Rate-limit keys the engine holds for the project at once: its share
    /// of the limiter's memory (about 64 bytes a key, table slack included).
    /// A project at its budget forgets its own idle or most-refilled keys,
    /// never another project's.
    pub limiter_keys: usize,
    /// Most metadata rules a `settingsOverride` may carry.
    pub override_max_buckets: usize,
    /// Longest `windowSeconds` a `settingsOverride` rule may ask: a key is
    /// held (not idle) for up to one window after its last use, so long
    /// windows are what keeps limiter memory busy.
    pub override_max_window_seconds: u32,
    /// Highest `limit` a `settingsOverride` rule may ask.
    pub override_max_limit: u32,
}

impl PlanTier {
    /// Parses admin's plan key (`free`, `pro`, `enterprise`); anything else
    /// is free, the least a project can have.
    pub fn from_key(key: &str) -> Self {
        match key {
            "pro" => PlanTier::Pro,
            "enterprise" => PlanTier::Enterprise,
            _ => PlanTier::Free,
        }
    }

    /// The plan's key, as admin stores it.
    pub const fn as_str(self) -> &'static str {
        match self {
            PlanTier::Free => "free",
            PlanTier::Pro => "pro",
            PlanTier::Enterprise => "enterprise",
        }
    }

    /// The one table of what each plan grants inside an engine.
    pub const fn limits(self) -> PlanLimits {
        match self {
            PlanTier::Free => PlanLimits {
                limiter_keys: 10_000,
                override_max_buckets: 4,
                override_max_window_seconds: 3_600,
                override_max_limit: 10_000,
            },
            PlanTier::Pro => PlanLimits {
                limiter_keys: 100_000,
                override_max_buckets: MAX_METADATA_BUCKETS,
                override_max_window_seconds: MAX_RATE_WINDOW_SECONDS,
                override_max_limit: MAX_RATE_LIMIT,
            },
            PlanTier::Enterprise => PlanLimits {
                limiter_keys: 500_000,
                override_max_buckets: MAX_METADATA_BUCKETS,
                override_max_window_seconds: MAX_RATE_WINDOW_SECONDS,
                override_max_limit: MAX_RATE_LIMIT,
            },
        }
    }
}

impl RateLimitSettings {
    /// Validates a rate-limit check's `settingsOverride` (at `path`): the
    /// ranges of [`RateLimitSettings::validate`], then what `plan` allows
    /// (bucket count, window length, limit), each refused as 422
    /// `invalid_field` naming the member.
    pub fn validate_override(&self, path: &str, plan: PlanTier) -> Result<(), ApiError> {
        self.validate(path)?;
        let limits = plan.limits();
        if self.metadata.len() > limits.override_max_buckets {
            return Err(ApiError::with_message(
                ErrorCode::InvalidField,
                format!(
                    "the {} plan allows at most {} metadata buckets in an override",
                    plan.as_str(),
                    limits.override_max_buckets
                ),
            )
            .field(format!("{path}.metadata")));
        }
        let rules = std::iter::once((format!("{path}.ip"), &self.ip)).chain(
            self.metadata
                .iter()
                .map(|(name, rule)| (format!("{path}.metadata.{name}"), rule)),
        );
        for (at, rule) in rules {
            if rule.window_seconds > limits.override_max_window_seconds {
                return Err(ApiError::with_message(
                    ErrorCode::InvalidField,
                    format!(
                        "the {} plan allows override windows of at most {} seconds",
                        plan.as_str(),
                        limits.override_max_window_seconds
                    ),
                )
                .field(format!("{at}.windowSeconds")));
            }
            if rule.limit > limits.override_max_limit {
                return Err(ApiError::with_message(
                    ErrorCode::InvalidField,
                    format!(
                        "the {} plan allows override limits of at most {}",
                        plan.as_str(),
                        limits.override_max_limit
                    ),
                )
                .field(format!("{at}.limit")));
            }
        }
        Ok(())
    }
}

/// Thresholds of the anti-ATO decision: `score >= blockScore` blocks,
/// `score >= challengeScore` challenges, anything lower allows.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AtoSettings {
    /// Lowest score answered with `challenge`.
    pub challenge_score: u32,
    /// Lowest score answered with `block`.
    pub block_score: u32,
    /// Window over which failed attempts count towards velocity.
    pub failed_attempts_window_seconds: u32,
    /// Compare identifiers with their case (`Alice` and `alice` are two
    /// accounts). Off by default: emails and usernames are case-insensitive
    /// nearly everywhere, and a case-sensitive history lets an attacker dodge
    /// it with an unseen capitalisation. NFKC, trimming and the phone rule
    /// apply either way ([`crate::identifier`]).
    pub case_sensitive_identifiers: bool,
}

impl Default for AtoSettings {
    fn default() -> Self {
        Self {
            challenge_score: 60,
            block_score: 85,
            failed_attempts_window_seconds: 900,
            case_sensitive_identifiers: false,
        }
    }
}

impl ProjectSettings {
    /// Checks every field against its documented range. The first fault is
    /// answered as 422 `invalid_field` naming its JSON path, because the
    /// document is accepted or refused whole.
    pub fn validate(&self) -> Result<(), ApiError> {
        if !(MIN_SESSION_TTL_SECONDS..=MAX_SESSION_TTL_SECONDS).contains(&self.session_ttl_seconds)
        {
            return Err(invalid(
                "sessionTtlSeconds",
                "sessionTtlSeconds must be between 60 and 7776000 (90 days)",
            ));
        }
        if !(MIN_CLIENT_TOKEN_TTL_SECONDS..=MAX_CLIENT_TOKEN_TTL_SECONDS)
            .contains(&self.client_token_ttl_seconds)
        {
            return Err(invalid(
                "clientTokenTtlSeconds",
                "clientTokenTtlSeconds must be between 30 and 86400 (24 hours)",
            ));
        }
        validate_cookie_name(&self.cookie_names.session_id, "cookieNames.sessionId")?;
        validate_cookie_name(&self.cookie_names.session_token, "cookieNames.sessionToken")?;
        if self.cookie_names.session_id == self.cookie_names.session_token {
            return Err(invalid(
                "cookieNames.sessionToken",
                "the two cookie names must differ",
            ));
        }
        if self.allowed_origins.len() > MAX_ALLOWED_ORIGINS {
            return Err(invalid(
                "allowedOrigins",
                "at most 100 allowed origins are allowed",
            ));
        }
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            validate_origin(origin).map_err(|why| invalid(format!("allowedOrigins[{i}]"), why))?;
            if self.allowed_origins[..i].contains(origin) {
                return Err(invalid(
                    format!("allowedOrigins[{i}]"),
                    "this origin is listed twice",
                ));
            }
        }
        self.rate_limit.validate("rateLimit")?;
        self.browser_rate_limit
            .connect
            .validate("browserRateLimit.connect")?;
        self.browser_rate_limit
            .reverify
            .validate("browserRateLimit.reverify")?;
        let ato = &self.ato;
        if ato.block_score > MAX_ATO_SCORE {
            return Err(invalid(
                "ato.blockScore",
                "blockScore must be between 1 and 100",
            ));
        }
        if ato.challenge_score >= ato.block_score {
            return Err(invalid(
                "ato.challengeScore",
                "challengeScore must be lower than blockScore",
            ));
        }
        if !(MIN_ATO_WINDOW_SECONDS..=MAX_ATO_WINDOW_SECONDS)
            .contains(&ato.failed_attempts_window_seconds)
        {
            return Err(invalid(
                "ato.failedAttemptsWindowSeconds",
                "failedAttemptsWindowSeconds must be between 60 and 86400",
            ));
        }
        Ok(())
    }

    /// Parses and validates a settings document as written by a client.
    ///
    /// - larger than [`MAX_SETTINGS_BYTES`] → 413 `payload_too_large`;
    /// - not JSON, or not an object → 400 `malformed_json`;
    /// - an unknown key, a wrong type, a missing rule member, an array where
    ///   an object belongs → 422 `invalid_field` with its JSON path;
    /// - a value out of range → 422 `invalid_field` from [`Self::validate`].
    pub fn parse_and_validate(json: &[u8]) -> Result<ProjectSettings, ApiError> {
        if json.len() > MAX_SETTINGS_BYTES {
            return Err(ApiError::with_message(
                ErrorCode::PayloadTooLarge,
                "the settings document is larger than 32 KiB",
            ));
        }
        let input: serde_json::Value =
            serde_json::from_slice(json).map_err(|_| ApiError::new(ErrorCode::MalformedJson))?;
        if !input.is_object() {
            return Err(ApiError::with_message(
                ErrorCode::MalformedJson,
                "the settings document must be a JSON object",
            ));
        }
        let settings: ProjectSettings =
            serde_path_to_error::deserialize(&input).map_err(from_serde_error)?;
        // serde's derived structs also accept an array of the members in
        // order; the document is objects only, so refuse that form.
        let canonical =
            serde_json::to_value(&settings).map_err(|_| ApiError::new(ErrorCode::Internal))?;
        check_objects(&input, &canonical, &mut String::new())?;
        settings.validate()?;
        Ok(settings)
    }

    /// The document as compact JSON, as admin stores and answers it.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }
}

/// Maps a serde failure below the root to 422 naming the JSON path serde
/// reached (the input already parsed as a JSON object, so every failure here
/// is a field's).
fn from_serde_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = err.path().to_string();
    let text = err.into_inner().to_string();
    // For a missing member the path stops at its parent; name the member.
    let missing = text
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'));
    let field = match (path.as_str(), missing) {
        (".", Some(name)) => name.to_owned(),
        (parent, Some(name)) => format!("{parent}.{name}"),
        (at, None) => at.to_owned(),
    };
    ApiError::with_message(ErrorCode::InvalidField, text).field(field)
}

/// Walks the input beside its typed re-serialisation and refuses an input
/// that is not an object where the document has one.
fn check_objects(
    input: &serde_json::Value,
    canonical: &serde_json::Value,
    path: &mut String,
) -> Result<(), ApiError> {
    use serde_json::Value;
    match (input, canonical) {
        (Value::Object(given), Value::Object(typed)) => {
            for (key, value) in given {
                if let Some(expected) = typed.get(key) {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                    check_objects(value, expected, path)?;
                    path.truncate(len);
                }
            }
            Ok(())
        }
        (_, Value::Object(_)) => Err(invalid(path.clone(), "must be a JSON object")),
        _ => Ok(()),
    }
}

fn invalid(field: impl Into<Cow<'static, str>>, message: &'static str) -> ApiError {
    ApiError::with_message(ErrorCode::InvalidField, message).field(field)
}

/// RFC 6265 `cookie-name` is an RFC 2616 `token`: visible ASCII except the
/// separators, so the name needs no quoting in `Set-Cookie` or `Cookie`.
fn validate_cookie_name(name: &str, field: &'static str) -> Result<(), ApiError> {
    const SEPARATORS: &[u8] = b"()<>@,;:\\\"/[]?={} \t";
    if name.is_empty() || name.len() > MAX_COOKIE_NAME_BYTES {
        return Err(invalid(field, "cookie names are 1 to 64 characters"));
    }
    if !name
        .bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && !SEPARATORS.contains(&b))
    {
        return Err(invalid(
            field,
            "cookie names may hold only visible ASCII without separators ()<>@,;:\\\"/[]?={}",
        ));
    }
    Ok(())
}

fn is_bucket_name(name: &str) -> bool {
    (1..=MAX_BUCKET_NAME_BYTES).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks that `origin` is a serialised web origin, `scheme://host[:port]`,
/// exactly as a browser sends it in the `Origin` header: lowercase host, no
/// path, no trailing slash, no default port. Anything else could never match
/// a real `Origin` header, so it is refused rather than stored uselessly.
/// Plain `http` is accepted only for loopback hosts (local development).
/// Shared with admin's origin-token routes.
pub fn validate_origin(origin: &str) -> Result<(), &'static str> {
    const SHAPE: &str =
        "must be an origin like https://shop.example: scheme, host and optional port, no path";
    if origin.len() > MAX_ORIGIN_BYTES {
        return Err("origins are at most 270 characters");
    }
    let (secure, rest) = if let Some(rest) = origin.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = origin.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err("origins start with https:// (or http:// for localhost)");
    };
    let (host, port) = if rest.starts_with('[') {
        let end = rest.find(']').ok_or(SHAPE)?;
        let (host, after) = rest.split_at(end + 1);
        let inner = &host[1..host.len() - 1];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            || inner.bytes().any(|b| b.is_ascii_uppercase())
        {
            return Err(SHAPE);
        }
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or(SHAPE)?)),
        }
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if !host.starts_with('[') && !is_dns_host(host) {
        return Err(SHAPE);
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && !port.starts_with('0')
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| p <= 65_535);
        if !valid {
            return Err(SHAPE);
        }
        if port == if secure { "443" } else { "80" } {
            return Err("leave out the default port: browsers never send it");
        }
    }
    if !secure && !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
        return Err("http:// is allowed only for localhost and 127.0.0.1");
    }
    Ok(())
}

/// A lowercase DNS name or IPv4 literal: dot-separated labels of 1–63
/// characters `a-z0-9-`, no label starting or ending with `-`, ≤ 253 bytes.
fn is_dns_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example document of PRODUCT.md "Project settings".
    const PRODUCT_EXAMPLE: &str = r#"{
      "sessionTtlSeconds": 604800,
      "clientTokenTtlSeconds": 900,
      "cookieNames": {"sessionId": "qyzar_session_id", "sessionToken": "qyzar_session_token"},
      "allowedOrigins": ["https://shop.example"],
      "testMode": false,
      "tokenAlgorithm": "HS256",
      "rateLimit": {
        "ip": {"limit": 60, "windowSeconds": 60},
        "metadata": {"email": {"limit": 5, "windowSeconds": 300}},
        "analyticsOnDeny": true
      },
      "browserRateLimit": {
        "connect": {"limit": 120, "windowSeconds": 60},
        "reverify": {"limit": 600, "windowSeconds": 60}
      },
      "ato": {"challengeScore": 60, "blockScore": 85, "failedAttemptsWindowSeconds": 900,
              "caseSensitiveIdentifiers": false}
    }"#;

    fn field_of(json: &str) -> (ErrorCode, Option<String>) {
        let e = ProjectSettings::parse_and_validate(json.as_bytes()).expect_err(json);
        (e.code, e.field.map(|f| f.into_owned()))
    }

    fn refused(edit: impl FnOnce(&mut ProjectSettings)) -> String {
        let mut s = ProjectSettings::default();
        edit(&mut s);
        let e = s.validate().expect_err("must be refused");
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert_eq!(e.status(), 422);
        e.field.expect("names the field").into_owned()
    }

    fn accepted(edit: impl FnOnce(&mut ProjectSettings)) {
        let mut s = ProjectSettings::default();
        edit(&mut s);
        s.validate().expect("must be accepted");
    }

    #[test]
    fn defaults_are_the_product_example_without_origins() {
        let example = ProjectSettings::parse_and_validate(PRODUCT_EXAMPLE.as_bytes()).unwrap();
        let expected = ProjectSettings {
            allowed_origins: vec!["https://shop.example".into()],
            ..ProjectSettings::default()
        };
        assert_eq!(example, expected);
        assert_eq!(
            ProjectSettings::parse_and_validate(b"{}").unwrap(),
            ProjectSettings::default()
        );
        ProjectSettings::default().validate().unwrap();
    }

    #[test]
    fn json_round_trips_in_camel_case() {
        let s = ProjectSettings::parse_and_validate(PRODUCT_EXAMPLE.as_bytes()).unwrap();
        let json = s.to_json();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let example: serde_json::Value = serde_json::from_str(PRODUCT_EXAMPLE).unwrap();
        assert_eq!(v, example);
        assert_eq!(ProjectSettings::parse_and_validate(&json).unwrap(), s);
    }

    #[test]
    fn partial_sections_keep_their_other_defaults() {
        let s = ProjectSettings::parse_and_validate(
            br#"{"ato": {"blockScore": 90}, "tokenAlgorithm": "EdDSA"}"#,
        )
        .unwrap();
        assert_eq!(
            s.ato,
            AtoSettings {
                block_score: 90,
                ..AtoSettings::default()
            }
        );
        assert_eq!(s.token_algorithm, TokenAlgorithm::EdDsa);
        assert_eq!(s.rate_limit, RateLimitSettings::default());
    }

    #[test]
    fn case_sensitive_identifiers_is_optional_and_off_by_default() {
        // A document written before the field existed still parses.
        let old = ProjectSettings::parse_and_validate(
            br#"{"ato": {"challengeScore": 60, "blockScore": 85, "failedAttemptsWindowSeconds": 900}}"#,
        )
        .unwrap();
        assert!(!old.ato.case_sensitive_identifiers);
        let on =
            ProjectSettings::parse_and_validate(br#"{"ato": {"caseSensitiveIdentifiers": true}}"#)
                .unwrap();
        assert_eq!(
            on.ato,
            AtoSettings {
                case_sensitive_identifiers: true,
                ..AtoSettings::default()
            }
        );
        let json: serde_json::Value = serde_json::from_slice(&on.to_json()).unwrap();
        assert_eq!(json["ato"]["caseSensitiveIdentifiers"], true);
        assert_eq!(
            field_of(r#"{"ato": {"caseSensitiveIdentifiers": "yes"}}"#),
            (
                ErrorCode::InvalidField,
                Some("ato.caseSensitiveIdentifiers".into())
            )
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_path() {
        assert_eq!(
            field_of(r#"{"sessionTTLSeconds": 60}"#),
            (ErrorCode::InvalidField, Some("sessionTTLSeconds".into()))
        );
        assert_eq!(
            field_of(r#"{"rateLimit": {"ip": {"limit": 1, "windowSeconds": 1, "burst": 3}}}"#),
            (ErrorCode::InvalidField, Some("rateLimit.ip.burst".into()))
        );
        assert_eq!(
            field_of(r#"{"ato": {"x": 1}}"#),
            (ErrorCode::InvalidField, Some("ato.x".into()))
        );
    }

    #[test]
    fn wrong_types_and_missing_rule_members_name_the_field() {
        assert_eq!(
            field_of(r#"{"testMode": "yes"}"#),
            (ErrorCode::InvalidField, Some("testMode".into()))
        );
        assert_eq!(
            field_of(r#"{"sessionTtlSeconds": -1}"#),
            (ErrorCode::InvalidField, Some("sessionTtlSeconds".into()))
        );
        assert_eq!(
            field_of(r#"{"tokenAlgorithm": "RS256"}"#),
            (ErrorCode::InvalidField, Some("tokenAlgorithm".into()))
        );
        assert_eq!(
            field_of(r#"{"allowedOrigins": [1]}"#),
            (ErrorCode::InvalidField, Some("allowedOrigins[0]".into()))
        );
        assert_eq!(
            field_of(r#"{"rateLimit": {"metadata": {"email": {"windowSeconds": 5}}}}"#),
            (
                ErrorCode::InvalidField,
                Some("rateLimit.metadata.email.limit".into())
            )
        );
    }

    #[test]
    fn arrays_are_not_accepted_for_objects() {
        assert_eq!(
            field_of(r#"{"rateLimit": {"ip": [5, 60]}}"#),
            (ErrorCode::InvalidField, Some("rateLimit.ip".into()))
        );
        assert_eq!(
            field_of(r#"{"cookieNames": ["a", "b"]}"#),
            (ErrorCode::InvalidField, Some("cookieNames".into()))
        );
        assert_eq!(
            field_of(r#"{"rateLimit": {"metadata": {"email": [5, 60]}}}"#),
            (
                ErrorCode::InvalidField,
                Some("rateLimit.metadata.email".into())
            )
        );
    }

    #[test]
    fn non_json_is_malformed_and_big_documents_too_large() {
        for bad in ["", "{", "nope", "{} {}", "[]", "null", "\"x\""] {
            let e = ProjectSettings::parse_and_validate(bad.as_bytes()).expect_err(bad);
            assert_eq!(
                (e.code, e.status()),
                (ErrorCode::MalformedJson, 400),
                "{bad:?}"
            );
        }
        let big = format!("{{\"testMode\": false{}}}", " ".repeat(MAX_SETTINGS_BYTES));
        assert_eq!(
            ProjectSettings::parse_and_validate(big.as_bytes())
                .unwrap_err()
                .code,
            ErrorCode::PayloadTooLarge
        );
    }

    #[test]
    fn ttls_have_inclusive_bounds() {
        accepted(|s| s.session_ttl_seconds = 60);
        accepted(|s| s.session_ttl_seconds = 7_776_000);
        assert_eq!(refused(|s| s.session_ttl_seconds = 59), "sessionTtlSeconds");
        assert_eq!(
            refused(|s| s.session_ttl_seconds = 7_776_001),
            "sessionTtlSeconds"
        );
        accepted(|s| s.client_token_ttl_seconds = 30);
        accepted(|s| s.client_token_ttl_seconds = 86_400);
        assert_eq!(
            refused(|s| s.client_token_ttl_seconds = 29),
            "clientTokenTtlSeconds"
        );
        assert_eq!(
            refused(|s| s.client_token_ttl_seconds = 86_401),
            "clientTokenTtlSeconds"
        );
    }

    #[test]
    fn cookie_names_are_tokens_short_and_distinct() {
        accepted(|s| s.cookie_names.session_id = "a".repeat(64));
        accepted(|s| s.cookie_names.session_token = "__Host-qz.tok!#$%&'*+-^_`|~".into());
        assert_eq!(
            refused(|s| s.cookie_names.session_id = "a".repeat(65)),
            "cookieNames.sessionId"
        );
        assert_eq!(
            refused(|s| s.cookie_names.session_id = String::new()),
            "cookieNames.sessionId"
        );
        for bad in ["a b", "a;b", "a=b", "a,b", "é", "a\tb", "a\"b", "a/b"] {
            assert_eq!(
                refused(|s| s.cookie_names.session_token = bad.into()),
                "cookieNames.sessionToken",
                "{bad:?}"
            );
        }
        assert_eq!(
            refused(|s| s.cookie_names.session_token = "qyzar_session_id".into()),
            "cookieNames.sessionToken"
        );
    }

    #[test]
    fn origins_must_be_exact_browser_origins() {
        for good in [
            "https://shop.example",
            "https://a.b-c.example:8443",
            "https://xn--bcher-kva.example",
            "http://localhost",
            "http://localhost:3000",
            "http://127.0.0.1:8080",
            "http://[::1]:5173",
            "https://[2001:db8::1]",
            "https://10.0.0.1:65535",
        ] {
            assert_eq!(validate_origin(good), Ok(()), "{good}");
        }
        for bad in [
            "shop.example",
            "https://",
            "https://shop.example/",
            "https://shop.example/path",
            "https://Shop.example",
            "https://shop.example:443",
            "http://localhost:80",
            "https://shop.example:0",
            "https://shop.example:65536",
            "https://shop.example:08",
            "https://shop.example:",
            "https://*.shop.example",
            "https://user@shop.example",
            "https://shop..example",
            "https://-shop.example",
            "https://shop.example.",
            "https://shop.example?x",
            "http://shop.example",
            "http://10.0.0.1",
            "ftp://shop.example",
            "https://[::1",
            "https://[::1]x",
        ] {
            assert!(validate_origin(bad).is_err(), "{bad}");
        }
        assert!(validate_origin(&format!("https://{}.example", "a".repeat(64))).is_err());
        assert_eq!(
            refused(|s| s.allowed_origins = vec!["https://ok.example".into(), "https://x/".into()]),
            "allowedOrigins[1]"
        );
        assert_eq!(
            refused(|s| s.allowed_origins =
                vec!["https://ok.example".into(), "https://ok.example".into()]),
            "allowedOrigins[1]"
        );
    }

    #[test]
    fn at_most_a_hundred_origins() {
        let many = |n: usize| {
            (0..n)
                .map(|i| format!("https://s{i}.example"))
                .collect::<Vec<_>>()
        };
        accepted(|s| s.allowed_origins = many(100));
        assert_eq!(refused(|s| s.allowed_origins = many(101)), "allowedOrigins");
    }

    #[test]
    fn rate_rules_have_inclusive_bounds() {
        accepted(|s| {
            s.rate_limit.ip = RateRule {
                limit: 1,
                window_seconds: 1,
            }
        });
        accepted(|s| {
            s.rate_limit.ip = RateRule {
                limit: 1_000_000,
                window_seconds: 86_400,
            }
        });
        assert_eq!(refused(|s| s.rate_limit.ip.limit = 0), "rateLimit.ip.limit");
        assert_eq!(
            refused(|s| s.rate_limit.ip.limit = 1_000_001),
            "rateLimit.ip.limit"
        );
        assert_eq!(
            refused(|s| s.rate_limit.ip.window_seconds = 0),
            "rateLimit.ip.windowSeconds"
        );
        assert_eq!(
            refused(|s| s.rate_limit.ip.window_seconds = 86_401),
            "rateLimit.ip.windowSeconds"
        );
        let rule = RateRule {
            limit: 0,
            window_seconds: 10,
        };
        assert_eq!(
            refused(|s| _ = s.rate_limit.metadata.insert("email".into(), rule)),
            "rateLimit.metadata.email.limit"
        );
        let e = ProjectSettings::parse_and_validate(
            br#"{"rateLimit": {"metadata": {"email": {"limit": 5, "windowSeconds": 0}}}}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.field.as_deref(),
            Some("rateLimit.metadata.email.windowSeconds")
        );
    }

    #[test]
    fn metadata_buckets_are_few_and_well_named() {
        let rule = RateRule {
            limit: 5,
            window_seconds: 60,
        };
        let buckets = |n: usize| {
            (0..n)
                .map(|i| (format!("b_{i}"), rule))
                .collect::<BTreeMap<_, _>>()
        };
        accepted(|s| s.rate_limit.metadata = buckets(16));
        assert_eq!(
            refused(|s| s.rate_limit.metadata = buckets(17)),
            "rateLimit.metadata"
        );
        accepted(|s| {
            s.rate_limit.metadata =
                BTreeMap::from([("A".repeat(32), rule), ("user_Id9".into(), rule)])
        });
        accepted(|s| s.rate_limit.metadata = BTreeMap::new());
        let long = "a".repeat(33);
        assert_eq!(
            refused(|s| s.rate_limit.metadata = BTreeMap::from([(long.clone(), rule)])),
            format!("rateLimit.metadata.{long}")
        );
        for bad in ["", "user-id", "e.mail", "ü"] {
            assert_eq!(
                refused(|s| s.rate_limit.metadata = BTreeMap::from([(bad.to_owned(), rule)])),
                format!("rateLimit.metadata.{bad}")
            );
        }
    }

    #[test]
    fn ato_scores_are_ordered_and_bounded() {
        accepted(|s| {
            s.ato = AtoSettings {
                challenge_score: 0,
                block_score: 1,
                ..AtoSettings::default()
            }
        });
        accepted(|s| {
            s.ato = AtoSettings {
                challenge_score: 99,
                block_score: 100,
                ..AtoSettings::default()
            }
        });
        assert_eq!(refused(|s| s.ato.block_score = 101), "ato.blockScore");
        assert_eq!(
            refused(|s| s.ato.challenge_score = 85),
            "ato.challengeScore"
        );
        assert_eq!(
            refused(|s| s.ato = AtoSettings {
                challenge_score: 0,
                block_score: 0,
                ..AtoSettings::default()
            }),
            "ato.challengeScore"
        );
        accepted(|s| s.ato.failed_attempts_window_seconds = 60);
        accepted(|s| s.ato.failed_attempts_window_seconds = 86_400);
        assert_eq!(
            refused(|s| s.ato.failed_attempts_window_seconds = 59),
            "ato.failedAttemptsWindowSeconds"
        );
        assert_eq!(
            refused(|s| s.ato.failed_attempts_window_seconds = 86_401),
            "ato.failedAttemptsWindowSeconds"
        );
    }

    #[test]
    fn override_paths_follow_the_caller() {
        let mut rl = RateLimitSettings::default();
        rl.ip.window_seconds = 0;
        assert_eq!(
            rl.validate("settingsOverride")
                .unwrap_err()
                .field
                .as_deref(),
            Some("settingsOverride.ip.windowSeconds")
        );
        assert_eq!(TokenAlgorithm::EdDsa.as_str(), "EdDSA");
    }

    #[test]
    fn browser_rules_are_validated_with_their_path() {
        accepted(|s| s.browser_rate_limit.connect.limit = 1);
        assert_eq!(
            refused(|s| s.browser_rate_limit.connect.limit = 0),
            "browserRateLimit.connect.limit"
        );
        assert_eq!(
            refused(|s| s.browser_rate_limit.reverify.window_seconds = 86_401),
            "browserRateLimit.reverify.windowSeconds"
        );
        let s = ProjectSettings::parse_and_validate(
            br#"{"browserRateLimit": {"connect": {"limit": 5, "windowSeconds": 10}}}"#,
        )
        .unwrap();
        assert_eq!(
            s.browser_rate_limit.connect,
            RateRule {
                limit: 5,
                window_seconds: 10
            }
        );
        assert_eq!(
            s.browser_rate_limit.reverify,
            BrowserRateLimit::default().reverify
        );
    }

    #[test]
    fn overrides_are_bounded_by_plan() {
        let rule = |limit, window_seconds| RateRule {
            limit,
            window_seconds,
        };
        let field = |o: &RateLimitSettings, plan| {
            o.validate_override("settingsOverride", plan)
                .err()
                .map(|e| (e.status(), e.field.unwrap().into_owned()))
        };
        let mut o = RateLimitSettings::default();
        assert_eq!(field(&o, PlanTier::Free), None);
        o.ip = rule(10, 3_601);
        assert_eq!(
            field(&o, PlanTier::Free),
            Some((422, "settingsOverride.ip.windowSeconds".into()))
        );
        assert_eq!(field(&o, PlanTier::Pro), None);
        o.ip = rule(10, 60);
        o.metadata.insert("email".into(), rule(10_001, 60));
        assert_eq!(
            field(&o, PlanTier::Free),
            Some((422, "settingsOverride.metadata.email.limit".into()))
        );
        assert_eq!(field(&o, PlanTier::Enterprise), None);
        o.metadata = (0..5).map(|i| (format!("b{i}"), rule(1, 1))).collect();
        assert_eq!(
            field(&o, PlanTier::Free),
            Some((422, "settingsOverride.metadata".into()))
        );
        assert_eq!(field(&o, PlanTier::Pro), None);
        // The plain range checks still come first.
        o.ip = rule(0, 60);
        assert_eq!(
            field(&o, PlanTier::Enterprise),
            Some((422, "settingsOverride.ip.limit".into()))
        );
        for p in [PlanTier::Free, PlanTier::Pro, PlanTier::Enterprise] {
            assert_eq!(PlanTier::from_key(p.as_str()), p);
        }
        assert_eq!(PlanTier::from_key("gold"), PlanTier::Free);
        assert!(PlanTier::Free.limits().limiter_keys < PlanTier::Pro.limits().limiter_keys);
    }
}
