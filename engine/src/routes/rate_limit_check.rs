//! `POST /projects/client/rate-limit-check`: may this client do this now?
//!
//! parse (projectId, ip, metadata buckets, cost, settingsOverride, analytics,
//! dryRun) → authorise (project secret; a `settingsOverride` within what the
//! owner's plan allows) → decide (GCRA over every bucket in the project's own
//! limiter partition, sized by its plan; all-or-nothing: a denied call
//! consumes from no bucket; `dryRun` consumes nothing) → answer `{allowed, deniedBy, limit, remaining, retryAfterMs,
//! resetAt, buckets}`. A deny is an answer (`200`), not an error: `429` is
//! only for the caller itself being throttled. Denies are recorded off the
//! hot path when analytics is on.
//!
//! # Why no allocation on an allowed call (beyond the answer)
//! This route is called before every sign-in or sign-up a customer serves,
//! often several times, so its per-call cost is the product's overhead. The
//! body's strings are borrowed from the request ([`Text`]), the metadata
//! fields land in a small sorted list instead of a `serde_json::Map`, bucket
//! names are never built (`metadata:` + field is hashed in two parts and
//! written straight into the answer), keys are lower-cased only when they
//! have something to lower, and the answer is written into one buffer.
//! Tests at the bottom check each piece against the straightforward
//! `serde_json::Map` / `#[derive(Serialize)]` version it replaced.

use std::borrow::Cow;
use std::net::IpAddr;

use http::{Response, StatusCode};
use qyzar_shared::settings::RateLimitSettings;
use qyzar_shared::{ApiError, ErrorCode};
use qyzar_store::DenyEvent;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::common;
use crate::limiter::{BucketCheck, BucketOutcome, Rule, MAX_BUCKETS, MAX_KEY_LEN};
use crate::request::Headers;
use crate::request::{self, Text};
use crate::response::{self, Body};
use crate::state::Engine;
use crate::traffic::Dims;
use qyzar_shared::usage::{TrafficOutcome, TrafficRoute};

/// Most cells one call may consume.
pub const MAX_COST: u32 = 1000;

/// Prefix of a metadata bucket's name (`metadata:email`).
const METADATA: &str = "metadata:";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Input<'a> {
    #[serde(borrow)]
    project_id: Option<Text<'a>>,
    #[serde(borrow)]
    ip: Option<Text<'a>>,
    #[serde(borrow, default)]
    metadata: Metadata<'a>,
    cost: Option<u32>,
    settings_override: Option<RateLimitSettings>,
    analytics: Option<bool>,
    #[serde(default)]
    dry_run: bool,
}

/// The `metadata` object: its members sorted by name, the last of a repeated
/// name kept, exactly the order and choice a `serde_json::Map` (a
/// `BTreeMap`) would give, without a map or an owned string per member.
#[derive(Default)]
struct Metadata<'a>(Vec<(Text<'a>, Value<'a>)>);

/// A metadata member's value, as far as a bucket key cares.
#[derive(Debug, PartialEq)]
enum Value<'a> {
    /// A string: the key after trimming and lower-casing.
    Str(Text<'a>),
    /// A number: the key is its JSON text as `serde_json` prints it.
    Num(serde_json::Number),
    /// `null`: no bucket.
    Null,
    /// `true`, `false`, an array or an object: refused if the field has a rule.
    Other,
}

/// For any `'a` the input outlives (not only `'de` itself), so that
/// `#[serde(borrow, default)]` can use it.
impl<'de: 'a, 'a> Deserialize<'de> for Metadata<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Metadata<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metadata<'de>, A::Error> {
                let mut members: Vec<(Text<'de>, Value<'de>)> = Vec::with_capacity(4);
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                // Stable, so among equal names the last given stays last.
                members.sort_by(|a, b| a.0.cmp(&b.0));
                let mut kept: Vec<(Text<'de>, Value<'de>)> = Vec::with_capacity(members.len());
                for member in members {
                    match kept.last_mut() {
                        Some(last) if last.0 == member.0 => *last = member,
                        _ => kept.push(member),
                    }
                }
                Ok(Metadata(kept))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Value<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Value<'de>, E> {
                Ok(Value::Str(Text(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value<'de>, E> {
                Ok(Value::Str(Text(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Value<'de>, E> {
                Ok(Value::Str(Text(Cow::Owned(v))))
            }
            // Numbers as `serde_json::Value` keeps them.
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value<'de>, E> {
                Ok(Value::Num(v.into()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value<'de>, E> {
                Ok(Value::Num(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value<'de>, E> {
                Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Num))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Value<'de>, E> {
                Ok(Value::Null)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Value<'de>, E> {
                Ok(Value::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Value::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Value::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// The buckets of one call, in answer order: `ip` first, then one per
/// metadata field that has a rule and a non-null value, by field name.
struct Buckets<'a> {
    /// How many of the arrays are in use.
    len: usize,
    /// The metadata field of each bucket; `""` for the `ip` bucket (index 0).
    fields: [&'a str; MAX_BUCKETS],
    /// The key of each bucket: the canonical IP, then the normalised values.
    keys: [Cow<'a, str>; MAX_BUCKETS],
    /// The rule of each bucket.
    rules: [Rule; MAX_BUCKETS],
}

impl<'a> Buckets<'a> {
    /// Only the `ip` bucket, keyed by the canonical text of the IP.
    fn new(ip: Cow<'a, str>, rules: &RateLimitSettings) -> Self {
        let mut keys: [Cow<'a, str>; MAX_BUCKETS] = Default::default();
        keys[0] = ip;
        Self {
            len: 1,
            fields: [""; MAX_BUCKETS],
            keys,
            rules: [Rule::new(rules.ip.limit, rules.ip.window_seconds); MAX_BUCKETS],
        }
    }

    /// The bucket's name as answered and hashed: `ip` or `metadata:<field>`.
    fn name(&self, i: usize) -> (&'static str, &str) {
        if i == 0 {
            ("ip", "")
        } else {
            (METADATA, self.fields[i])
        }
    }
}

/// Lists the call's buckets; `ip` is the canonical text of the parsed IP.
/// Errors as the route answers them: a value of the wrong type or too long
/// for a field that has a rule, or more than [`MAX_BUCKETS`] buckets.
/// Fills `b`, which holds the `ip` bucket already, in place: the arrays are
/// most of a kilobyte, too much to copy around on every call.
fn buckets<'a>(
    b: &mut Buckets<'a>,
    metadata: &'a Metadata<'a>,
    rules: &RateLimitSettings,
) -> Result<(), ApiError> {
    let mut named = 1;
    for (field, value) in &metadata.0 {
        let Some(rule) = rules.metadata.get(&**field) else {
            continue;
        };
        let key = match value {
            Value::Str(s) => lowercase(s.trim()),
            Value::Num(n) => Cow::Owned(n.to_string()),
            Value::Null => continue,
            Value::Other => {
                return Err(ApiError::with_message(
                    ErrorCode::InvalidField,
                    "metadata values must be strings or numbers",
                )
                .field(format!("metadata.{}", &**field)))
            }
        };
        if key.len() > MAX_KEY_LEN {
            return Err(ApiError::with_message(
                ErrorCode::InvalidField,
                "a metadata value is longer than 256 bytes",
            )
            .field(format!("metadata.{}", &**field)));
        }
        // Counted past the arrays' end so the error comes after every
        // value was checked, as it always has.
        if named < MAX_BUCKETS {
            b.fields[named] = field;
            b.keys[named] = key;
            b.rules[named] = Rule::new(rule.limit, rule.window_seconds);
            b.len = named + 1;
        }
        named += 1;
    }
    if named > MAX_BUCKETS {
        return Err(too_many_buckets());
    }
    Ok(())
}

/// `s.to_lowercase()`, borrowed when that changes nothing (ASCII without
/// capitals: almost every email and user id).
fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) {
        Cow::Owned(s.to_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// The IP as parsed, in canonical text. An IPv4 address that parses is
/// already canonical (std refuses leading zeros and other spellings), so it
/// is borrowed; IPv6 has several spellings and is printed.
fn canonical_ip(raw: &str) -> Result<Cow<'_, str>, ApiError> {
    let raw = raw.trim();
    match raw.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => Ok(Cow::Borrowed(raw)),
        Ok(ip) => Ok(Cow::Owned(ip.to_string())),
        Err(_) => Err(
            ApiError::with_message(ErrorCode::InvalidField, "ip is not an IP address").field("ip"),
        ),
    }
}

fn too_many_buckets() -> ApiError {
    ApiError::with_message(ErrorCode::InvalidField, "too many buckets").field("metadata")
}

/// Handles one call; the body has been read by the router.
pub async fn handle(
    engine: &Engine,
    headers: &Headers<'_>,
    body: &[u8],
    arrived: std::time::Instant,
) -> Response<Body> {
    match run(engine, headers, body, arrived) {
        Ok(r) => r,
        Err(e) => response::error(&e),
    }
}

fn run(
    engine: &Engine,
    headers: &Headers<'_>,
    body: &[u8],
    arrived: std::time::Instant,
) -> Result<Response<Body>, ApiError> {
    let now = qyzar_shared::time::now_ms();
    // parse
    let input: Input<'_> = request::json_body(headers, body)?;
    let project = common::project_id(input.project_id.as_deref())?;
    let ip_raw = input
        .ip
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorCode::MissingField).field("ip"))?;
    let ip = canonical_ip(ip_raw)?;
    let cost = input.cost.unwrap_or(1);
    if cost > MAX_COST {
        return Err(
            ApiError::with_message(ErrorCode::InvalidField, "cost must be at most 1000")
                .field("cost"),
        );
    }
    if let Some(o) = &input.settings_override {
        o.validate("settingsOverride")?;
    }
    // authorise
    let live = common::live(engine, now)?;
    let (cfg, _) = common::authorise(&live, &project, headers, now)?;
    // What an override may ask depends on the plan: its windows keep keys
    // busy in the project's share of the limiter.
    if let Some(o) = &input.settings_override {
        o.validate_override("settingsOverride", cfg.plan)?;
    }
    let rules = input
        .settings_override
        .as_ref()
        .unwrap_or(&cfg.settings.rate_limit);
    // The project's own partition, sized by its plan (state only now that
    // the caller is authenticated).
    let limiter = engine
        .limiter
        .project(project.as_str(), cfg.plan.limits().limiter_keys);
    // decide: the ip bucket, then one bucket per metadata value with a rule.
    let mut b = Buckets::new(ip, rules);
    buckets(&mut b, &input.metadata, rules)?;
    let mut checks = [BucketCheck {
        key: bucket_key(&limiter, &project, ("ip", ""), &b.keys[0])?,
        rule: b.rules[0],
    }; MAX_BUCKETS];
    for (i, check) in checks.iter_mut().enumerate().take(b.len).skip(1) {
        *check = BucketCheck {
            key: bucket_key(&limiter, &project, b.name(i), &b.keys[i])?,
            rule: b.rules[i],
        };
    }
    let decision = limiter
        .check(
            limiter.nanos_at(arrived),
            &checks[..b.len],
            cost,
            input.dry_run,
        )
        .map_err(|_| too_many_buckets())?;
    // Cross-engine limits: hot keys' consumption, published off the path.
    if let (Some(sync), true, false) = (&engine.limit_sync, decision.allowed, input.dry_run) {
        for (c, o) in checks[..b.len].iter().zip(decision.buckets()) {
            let used = crate::limit_sync::Consumed {
                cost,
                limit: o.limit,
                remaining: o.remaining,
                interval: c.rule.emission_interval_nanos(),
            };
            sync.record(&project, c.key, used, now);
        }
    }
    if !decision.allowed && !input.dry_run && input.analytics.unwrap_or(rules.analytics_on_deny) {
        if let Some(i) = decision.denied_by {
            let (prefix, field) = b.name(i);
            engine.background.deny(&project, || DenyEvent {
                project_id: project.clone(),
                at: now,
                bucket: format!("{prefix}{field}"),
                key: b.keys[i].clone().into_owned(),
                ip: Some(b.keys[0].clone().into_owned()),
            });
        }
    }
    if !input.dry_run {
        let outcome = if decision.allowed {
            TrafficOutcome::Allowed
        } else {
            TrafficOutcome::Denied
        };
        engine.traffic.record(
            project.as_str(),
            TrafficRoute::RateLimitCheck,
            outcome,
            Dims::SERVER,
            now,
        );
    }
    // answer: the headline numbers are those of the denying bucket, or of
    // the bucket closest to denying.
    let outcomes = decision.buckets();
    let primary = decision.primary().map_or(outcomes[0], |i| outcomes[i]);
    let reset_after = outcomes.iter().map(|o| o.reset_after_ms).max().unwrap_or(0);
    let headline = Headline {
        allowed: decision.allowed,
        denied_by: decision.denied_by,
        limit: primary.limit,
        remaining: primary.remaining,
        retry_after_ms: if decision.allowed {
            Some(0)
        } else {
            primary.retry_after_ms
        },
        // bounded by the plan's window today; saturating so it stays so
        reset_at_ms: now.saturating_add(i64::try_from(reset_after).unwrap_or(i64::MAX)),
    };
    Ok(response::json(
        StatusCode::OK,
        answer(&headline, &b, outcomes),
    ))
}

/// The bucket key of (project, `prefix` + `field`, key), hashed without
/// building the name.
fn bucket_key(
    limiter: &crate::limiter::Limiter,
    project: &qyzar_shared::ids::ProjectId,
    (prefix, field): (&str, &str),
    key: &str,
) -> Result<crate::limiter::BucketKey, ApiError> {
    limiter
        .bucket_key_parts(project.as_str(), [prefix, field], key.as_bytes())
        .map_err(|_| {
            ApiError::with_message(
                ErrorCode::InvalidField,
                "a bucket key is longer than 256 bytes",
            )
            .field("metadata")
        })
}

/// The top-level fields of the answer.
struct Headline {
    allowed: bool,
    denied_by: Option<usize>,
    limit: u32,
    remaining: u32,
    retry_after_ms: Option<u64>,
    reset_at_ms: i64,
}

/// Writes `{allowed, deniedBy, limit, remaining, retryAfterMs, resetAt,
/// buckets: [{bucket, allowed, limit, remaining, retryAfterMs}]}`, byte for
/// byte what `serde_json` makes of the equivalent derived structs (a test
/// compares them), into one buffer sized up front.
fn answer(h: &Headline, b: &Buckets<'_>, outcomes: &[BucketOutcome]) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + 96 * outcomes.len());
    out.extend_from_slice(b"{\"allowed\":");
    push_bool(&mut out, h.allowed);
    out.extend_from_slice(b",\"deniedBy\":");
    match h.denied_by {
        Some(i) => push_name(&mut out, b.name(i)),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"limit\":");
    push_u64(&mut out, u64::from(h.limit));
    out.extend_from_slice(b",\"remaining\":");
    push_u64(&mut out, u64::from(h.remaining));
    out.extend_from_slice(b",\"retryAfterMs\":");
    push_opt(&mut out, h.retry_after_ms);
    out.extend_from_slice(b",\"resetAt\":");
    response::push_rfc3339(&mut out, h.reset_at_ms);
    out.extend_from_slice(b",\"buckets\":[");
    for (i, o) in outcomes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"bucket\":");
        push_name(&mut out, b.name(i));
        out.extend_from_slice(b",\"allowed\":");
        push_bool(&mut out, o.allowed);
        out.extend_from_slice(b",\"limit\":");
        push_u64(&mut out, u64::from(o.limit));
        out.extend_from_slice(b",\"remaining\":");
        push_u64(&mut out, u64::from(o.remaining));
        out.extend_from_slice(b",\"retryAfterMs\":");
        push_opt(&mut out, o.retry_after_ms);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

fn push_bool(out: &mut Vec<u8>, v: bool) {
    out.extend_from_slice(if v { b"true" } else { b"false" });
}

fn push_u64(out: &mut Vec<u8>, v: u64) {
    // serde_json writes integers with `itoa`: no formatting machinery.
    let _ = serde_json::to_writer(&mut *out, &v);
}

fn push_opt(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => push_u64(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// A bucket name (`prefix` + `field`) as a JSON string; the field comes
/// from the request, so it is escaped by `serde_json`. JSON escaping is per
/// character, so the name's escape is the two halves' escapes joined: the
/// first's closing quote and the second's opening quote are dropped. (Was
/// `collect_str` over `format_args!`, which ran the formatter on every
/// answer; `push_name_is_the_escaped_concatenation` checks the two agree.)
fn push_name(out: &mut Vec<u8>, (prefix, field): (&str, &str)) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, prefix);
    if !field.is_empty() {
        out.pop();
        let open = out.len();
        let _ = serde_json::to_writer(&mut *out, field);
        out.remove(open);
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_name_is_the_escaped_concatenation() {
        for (prefix, field) in [
            ("ip", ""),
            ("metadata.", "email"),
            ("metadata.", "e\"m\\a\u{1}il\n"),
            ("", "x"),
            ("", ""),
            ("m.", "ü\u{2028}\u{7f}"),
        ] {
            let mut out = b"[".to_vec();
            push_name(&mut out, (prefix, field));
            let want = format!(
                "[{}",
                serde_json::to_string(&format!("{prefix}{field}")).unwrap()
            );
            assert_eq!(std::str::from_utf8(&out).unwrap(), want);
        }
    }
    use qyzar_shared::settings::RateRule;
    use serde::Serialize;

    /// The route's output types before the hand-written answer.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct RefBucket {
        bucket: String,
        allowed: bool,
        limit: u32,
        remaining: u32,
        retry_after_ms: Option<u64>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct RefOutput {
        allowed: bool,
        denied_by: Option<String>,
        limit: u32,
        remaining: u32,
        retry_after_ms: Option<u64>,
        reset_at: String,
        buckets: Vec<RefBucket>,
    }

    /// The route's bucket listing before borrowed input: `metadata` as a
    /// `serde_json::Map`, names and keys as owned strings.
    fn ref_buckets(
        metadata: &serde_json::Map<String, serde_json::Value>,
        rules: &RateLimitSettings,
    ) -> Result<Vec<(String, String, Rule)>, ApiError> {
        let mut out = Vec::new();
        for (field, value) in metadata {
            let Some(rule) = rules.metadata.get(field) else {
                continue;
            };
            let key = match value {
                serde_json::Value::String(s) => s.trim().to_lowercase(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Null => continue,
                _ => {
                    return Err(ApiError::with_message(
                        ErrorCode::InvalidField,
                        "metadata values must be strings or numbers",
                    )
                    .field(format!("metadata.{field}")))
                }
            };
            if key.len() > MAX_KEY_LEN {
                return Err(ApiError::with_message(
                    ErrorCode::InvalidField,
                    "a metadata value is longer than 256 bytes",
                )
                .field(format!("metadata.{field}")));
            }
            out.push((
                format!("metadata:{field}"),
                key,
                Rule::new(rule.limit, rule.window_seconds),
            ));
        }
        if out.len() + 1 > MAX_BUCKETS {
            return Err(too_many_buckets());
        }
        Ok(out)
    }

    fn rules(fields: &[&str]) -> RateLimitSettings {
        RateLimitSettings {
            ip: RateRule {
                limit: 10,
                window_seconds: 60,
            },
            metadata: fields
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    (
                        (*f).to_owned(),
                        RateRule {
                            limit: 5 + i as u32,
                            window_seconds: 300,
                        },
                    )
                })
                .collect(),
            analytics_on_deny: true,
        }
    }

    #[test]
    fn metadata_buckets_match_the_map_based_listing() {
        let many: Vec<String> = (0..20).map(|i| format!("f{i:02}")).collect();
        let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let cases: &[(&str, &[&str])] = &[
            (r#"{}"#, &["email"]),
            (
                r#"{"email":"  Ann@Example.COM ","userId":"u1","plan":"pro"}"#,
                &["email", "userId"],
            ),
            (
                r#"{"userId":7,"email":"b@x","zeta":1.5,"alpha":-3}"#,
                &["email", "userId", "zeta", "alpha"],
            ),
            (r#"{"email":null,"userId":"x"}"#, &["email", "userId"]),
            (r#"{"email":"a@x","email":"LAST@x"}"#, &["email"]),
            (
                r#"{"email":"dup@x","userId":"u","email":null}"#,
                &["email", "userId"],
            ),
            (
                r#"{"e\u006dail":"esc\"aped@x","b\"q":"v"}"#,
                &["email", "b\"q"],
            ),
            (
                r#"{"email":"ÀÉÎ@exämple.com","userId":"ÇA"}"#,
                &["email", "userId"],
            ),
            (r#"{"email":true}"#, &["email"]),
            (r#"{"email":true}"#, &["userId"]),
            (r#"{"email":[1,{"a":2}],"userId":"u"}"#, &["userId"]),
            (r#"{"email":{"a":[1]}}"#, &["email"]),
            (
                r#"{"n":12345678901234567890,"m":1e3,"o":-0.0}"#,
                &["n", "m", "o"],
            ),
        ];
        let long = format!(r#"{{"email":"{}"}}"#, "a".repeat(MAX_KEY_LEN + 1));
        let exact = format!(r#"{{"email":"{}"}}"#, "A".repeat(MAX_KEY_LEN));
        let seventeen = format!(
            "{{{}}}",
            many.iter()
                .map(|f| format!(r#""{f}":"v""#))
                .collect::<Vec<_>>()
                .join(",")
        );
        let sixteen = format!(
            "{{{}}}",
            many[..16]
                .iter()
                .map(|f| format!(r#""{f}":"v""#))
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut all: Vec<(&str, &[&str])> = cases.to_vec();
        all.push((&long, &["email"]));
        all.push((&exact, &["email"]));
        all.push((&seventeen, &many_refs));
        all.push((&sixteen, &many_refs));
        for (json, fields) in all {
            let rules = rules(fields);
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(json).unwrap();
            let want = ref_buckets(&map, &rules);
            let ours: Metadata<'_> = serde_json::from_str(json).unwrap();
            let mut b = Buckets::new(Cow::Borrowed("203.0.113.7"), &rules);
            let got = buckets(&mut b, &ours, &rules).map(|()| {
                (1..b.len)
                    .map(|i| {
                        let (prefix, field) = b.name(i);
                        (
                            format!("{prefix}{field}"),
                            b.keys[i].to_string(),
                            b.rules[i],
                        )
                    })
                    .collect::<Vec<_>>()
            });
            match (&want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(w, g, "{json}"),
                (Err(w), Err(g)) => assert_eq!(w.to_json(), g.to_json(), "{json}"),
                _ => panic!("{json}: {want:?} vs {:?}", got.as_ref().map(|_| ())),
            }
        }
        // Not an object, as a `serde_json::Map` refuses it too.
        for json in ["null", "[]", "\"x\"", "1"] {
            assert!(
                serde_json::from_str::<Metadata<'_>>(json).is_err(),
                "{json}"
            );
            assert!(
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json).is_err()
            );
        }
    }

    #[test]
    fn the_body_is_borrowed_when_it_has_no_escapes() {
        let body = br#"{"projectId":"prj_x","ip":"203.0.113.7","metadata":{"email":"a@x"}}"#;
        let input: Input<'_> = serde_json::from_slice(body).unwrap();
        assert!(matches!(input.ip.unwrap().0, Cow::Borrowed(_)));
        assert!(matches!(
            &input.metadata.0[0],
            (
                Text(Cow::Borrowed("email")),
                Value::Str(Text(Cow::Borrowed("a@x")))
            )
        ));
        assert!(serde_json::from_slice::<Input<'_>>(br#"{"unknown":1}"#).is_err());
    }

    #[test]
    fn lowercase_and_ip_text_match_std() {
        for s in ["a@x", "Ann@Example.com", "ÀB", "straße", "", "ǅ", "İ"] {
            assert_eq!(lowercase(s), s.to_lowercase(), "{s}");
        }
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v4 = std::net::Ipv4Addr::from((x >> 16) as u32).to_string();
            assert_eq!(canonical_ip(&format!(" {v4} ")).unwrap(), v4);
            let v6 = std::net::Ipv6Addr::from(u128::from(x) << (x % 64)).to_string();
            assert_eq!(canonical_ip(&v6).unwrap(), v6);
        }
        for s in ["2001:DB8::1", "::ffff:1.2.3.4", "0:0:0:0:0:0:0:1"] {
            let want = s.parse::<IpAddr>().unwrap().to_string();
            assert_eq!(canonical_ip(s).unwrap(), want);
        }
        for s in ["010.1.1.1", "1.1.1", "x", ""] {
            assert!(canonical_ip(s).is_err(), "{s}");
        }
    }

    #[test]
    fn the_answer_matches_the_derived_serialisation() {
        let meta: Metadata<'_> =
            serde_json::from_str(r#"{"email":"a@x","user\"Id":"u","zz\u00e9":"v","plan":"p"}"#)
                .unwrap();
        let rules = rules(&["email", "user\"Id", "zzé", "plan"]);
        let mut b = Buckets::new(Cow::Borrowed("198.51.100.1"), &rules);
        buckets(&mut b, &meta, &rules).unwrap();
        let outcome = |i: u32| BucketOutcome {
            allowed: i % 3 != 2,
            limit: 10 + i,
            remaining: i,
            retry_after_ms: match i % 3 {
                0 => Some(0),
                1 => None,
                _ => Some(u64::MAX - u64::from(i)),
            },
            reset_after_ms: 5,
        };
        let outcomes: Vec<BucketOutcome> = (0..b.len as u32).map(outcome).collect();
        for (denied_by, retry, reset_at_ms) in [
            (None, Some(0), 1_764_000_000_123),
            (Some(0), Some(4_000), 0),
            (Some(2), None, 253_402_300_799_999),
            (Some(b.len - 1), Some(1), -1),
        ] {
            let h = Headline {
                allowed: denied_by.is_none(),
                denied_by,
                limit: 7,
                remaining: 3,
                retry_after_ms: retry,
                reset_at_ms,
            };
            let name = |i: usize| {
                let (prefix, field) = b.name(i);
                format!("{prefix}{field}")
            };
            let want = serde_json::to_vec(&RefOutput {
                allowed: h.allowed,
                denied_by: h.denied_by.map(name),
                limit: h.limit,
                remaining: h.remaining,
                retry_after_ms: h.retry_after_ms,
                reset_at: qyzar_shared::time::rfc3339(h.reset_at_ms),
                buckets: outcomes
                    .iter()
                    .enumerate()
                    .map(|(i, o)| RefBucket {
                        bucket: name(i),
                        allowed: o.allowed,
                        limit: o.limit,
                        remaining: o.remaining,
                        retry_after_ms: o.retry_after_ms,
                    })
                    .collect(),
            })
            .unwrap();
            let got = answer(&h, &b, &outcomes);
            assert_eq!(
                String::from_utf8(got).unwrap(),
                String::from_utf8(want).unwrap()
            );
        }
    }
}
