//! Project data shared by the project routes and the snapshot builder:
//! ownership lookups, secret generations sealed at rest, plan quotas and the
//! JSON Merge Patch both settings and extra metadata are edited with.
//!
//! Storage rules (migration `0003_projects`): a project secret is kept only
//! sealed under the master key ([`SecretBox`], associated data = the project
//! id, so a sealed value copied onto another project does not open) plus its
//! SHA-256, which is all a secret check needs. Each *generation* (one row of
//! `project_secrets`) also carries the project's Ed25519 signing key, so a
//! rotation changes the secret, the derived HS256 key and the EdDSA key
//! together and the old generation stays valid for the rotation's grace
//! ([`SECRET_GRACE_MS`] unless the rotation asks for less, down to none).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use qyzar_shared::crypto::{ct_eq, Ed25519Signer, ProjectSecret, SecretBox};
use qyzar_shared::ids::ProjectId;
use qyzar_shared::{ApiError, ErrorCode};
use sqlx::{Any, AnyConnection, Row};

use crate::error::{AdminError, AdminResult};

/// How long a rotated-out secret (and its HS256 and Ed25519 keys) keeps
/// working: a day is enough to roll a new secret through every customer
/// backend, short enough that a leaked old secret dies soon.
pub const SECRET_GRACE_MS: i64 = 24 * 3600 * 1000;

/// Projects a plan may own. Unknown plan names get the free quota, so a
/// typo in billing can never grant more than free.
pub fn project_quota(plan: &str) -> i64 {
    match plan {
        "enterprise" => 1_000,
        "pro" => 25,
        _ => 3,
    }
}

/// What one project may put into the config snapshot, by its owner's plan.
/// Every list a project carries is bounded, so one tenant's share of the
/// snapshot (and of every engine's memory) is bounded too:
///
/// | list in the snapshot | free | pro | enterprise | element size |
/// |---|---|---|---|---|
/// | opt-outs (devices + identifiers) | 300 | 10 000 | 100 000 | ≤ 76 B |
/// | live origin tokens | 20 | 200 | 1 000 | ≤ 320 B |
/// | settings (JSON, validated) | 32 KiB | 32 KiB | 32 KiB | |
/// | secret generations | 1 + those in grace | same | same | ≤ 300 B |
///
/// Extra metadata (≤ 32 KiB, [`MAX_EXTRA_METADATA_BYTES`]) is not part of
/// the snapshot. The routes that grow a list refuse past its cap with
/// `422 quota_exceeded`; the snapshot builder trims anything over it
/// (a plan downgrade), so a project can never exceed its share. A free
/// project at every cap encodes to under 64 KiB: a thousand of them stay
/// under the engines' 64 MiB limit (a test builds exactly that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotCaps {
    /// Opt-out rows (devices and identifiers together).
    pub opt_outs: usize,
    /// Live (unexpired, not invalidated) origin tokens.
    pub origin_tokens: usize,
}

/// The caps of `plan`; an unknown plan gets free's, like [`project_quota`].
pub fn snapshot_caps(plan: &str) -> SnapshotCaps {
    match plan {
        "enterprise" => SnapshotCaps {
            opt_outs: 100_000,
            origin_tokens: 1_000,
        },
        "pro" => SnapshotCaps {
            opt_outs: 10_000,
            origin_tokens: 200,
        },
        _ => SnapshotCaps {
            opt_outs: 300,
            origin_tokens: 20,
        },
    }
}

/// The plan of the account owning `id` (`free` when the row is gone).
pub async fn owner_plan<'c, E>(conn: E, id: &ProjectId) -> AdminResult<String>
where
    E: sqlx::Executor<'c, Database = Any>,
{
    let row = sqlx::query(
        "SELECT u.plan FROM projects p JOIN users u ON u.id = p.owner_id WHERE p.id = $1",
    )
    .bind(id.as_str())
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        Some(r) => r.try_get("plan")?,
        None => "free".to_owned(),
    })
}

/// Longest project name, in characters: fits a dashboard card.
pub const MAX_NAME_CHARS: usize = 100;

/// Checks and trims a project name: 1–100 characters, no control characters.
pub fn project_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_CHARS {
        return Err(ApiError::with_message(
            ErrorCode::InvalidField,
            "name must be 1 to 100 characters",
        )
        .field("name"));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::with_message(
            ErrorCode::InvalidField,
            "name must not contain control characters",
        )
        .field("name"));
    }
    Ok(name.to_owned())
}

/// Parses a project id from input: malformed is `422` naming the field.
pub fn parse_project_id(raw: &str) -> Result<ProjectId, ApiError> {
    ProjectId::parse(raw.trim()).map_err(|_| {
        ApiError::with_message(ErrorCode::InvalidField, "projectId is not a project id")
            .field("projectId")
    })
}

/// A project row as the dashboard routes see it.
#[derive(Debug, Clone)]
pub struct ProjectRow {
    /// The project id.
    pub id: ProjectId,
    /// Display name.
    pub name: String,
    /// The stored settings document (compact JSON, every field present).
    pub settings_json: String,
    /// The extra-metadata document (JSON object).
    pub extra_metadata: String,
    /// When the secret was last rotated (Unix ms).
    pub secret_rotated_at: Option<i64>,
    /// Creation time (Unix ms).
    pub created_at: i64,
}

const PROJECT_COLUMNS: &str =
    "id, name, settings_json, extra_metadata, secret_rotated_at, created_at";

fn project_row(row: &sqlx::any::AnyRow) -> AdminResult<ProjectRow> {
    let id: String = row.try_get("id")?;
    Ok(ProjectRow {
        id: ProjectId::parse(&id).map_err(AdminError::internal)?,
        name: row.try_get("name")?,
        settings_json: row.try_get("settings_json")?,
        extra_metadata: row.try_get("extra_metadata")?,
        secret_rotated_at: row.try_get("secret_rotated_at")?,
        created_at: row.try_get("created_at")?,
    })
}

/// The project `raw_id` if `user_id` owns it. A malformed id is `422`; a
/// project that does not exist and one owned by someone else are the same
/// `404 project_not_found`, so ids of other accounts cannot be probed.
pub async fn owned<'c, E>(conn: E, user_id: &str, raw_id: &str) -> AdminResult<ProjectRow>
where
    E: sqlx::Executor<'c, Database = Any>,
{
    let id = parse_project_id(raw_id)?;
    let row = sqlx::query(&format!(
        "SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1 AND owner_id = $2"
    ))
    .bind(id.as_str())
    .bind(user_id)
    .fetch_optional(conn)
    .await?
    .ok_or(ApiError::new(ErrorCode::ProjectNotFound))?;
    project_row(&row)
}

/// The project `raw_id`, whoever owns it (routes authenticated by the
/// project's own credentials, or none).
pub async fn by_id<'c, E>(conn: E, raw_id: &str) -> AdminResult<ProjectRow>
where
    E: sqlx::Executor<'c, Database = Any>,
{
    let id = parse_project_id(raw_id)?;
    let row = sqlx::query(&format!(
        "SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1"
    ))
    .bind(id.as_str())
    .fetch_optional(conn)
    .await?
    .ok_or(ApiError::new(ErrorCode::ProjectNotFound))?;
    project_row(&row)
}

/// One secret generation, opened.
pub struct Generation {
    /// The project secret.
    pub secret: ProjectSecret,
    /// PKCS#8 of the generation's Ed25519 signing key.
    pub ed25519_pkcs8: Vec<u8>,
    /// `None` for the current generation; the grace end (Unix ms) otherwise.
    pub valid_until: Option<i64>,
}

/// Associated data of a sealed secret: the project id.
fn secret_aad(id: &ProjectId) -> Vec<u8> {
    id.as_str().as_bytes().to_vec()
}

/// Associated data of a sealed Ed25519 key: distinct from the secret's, so
/// the two sealed columns cannot be swapped.
fn ed25519_aad(id: &ProjectId) -> Vec<u8> {
    format!("{}:ed25519", id.as_str()).into_bytes()
}

fn seal(secrets: &SecretBox, plain: &[u8], aad: &[u8]) -> String {
    STANDARD.encode(secrets.seal(plain, aad))
}

fn open(secrets: &SecretBox, sealed: &str, aad: &[u8]) -> AdminResult<Vec<u8>> {
    let raw = STANDARD.decode(sealed).map_err(AdminError::internal)?;
    secrets
        .open(&raw, aad)
        .map_err(|e| AdminError::internal(format!("a sealed project secret does not open: {e}")))
}

/// Opens a `project_secrets` row.
pub fn open_generation(
    secrets: &SecretBox,
    id: &ProjectId,
    secret_sealed: &str,
    ed25519_sealed: &str,
    valid_until: Option<i64>,
) -> AdminResult<Generation> {
    let plain = open(secrets, secret_sealed, &secret_aad(id))?;
    let text = String::from_utf8(plain).map_err(AdminError::internal)?;
    let secret = ProjectSecret::parse(&text).map_err(AdminError::internal)?;
    let ed25519_pkcs8 = open(secrets, ed25519_sealed, &ed25519_aad(id))?;
    Ok(Generation {
        secret,
        ed25519_pkcs8,
        valid_until,
    })
}

/// Inserts a new current generation (fresh secret and Ed25519 key) for
/// `id` and answers the secret. The caller has already ended the previous
/// current generation, if any, in the same transaction.
pub async fn insert_generation(
    conn: &mut AnyConnection,
    secrets: &SecretBox,
    id: &ProjectId,
    now: i64,
) -> AdminResult<ProjectSecret> {
    let secret = ProjectSecret::generate();
    let pkcs8 = Ed25519Signer::generate_pkcs8();
    sqlx::query(
        "INSERT INTO project_secrets (id, project_id, secret_sealed, secret_hash, ed25519_sealed, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(qyzar_shared::crypto::random_token("psg_", 16))
    .bind(id.as_str())
    .bind(seal(secrets, secret.expose().as_bytes(), &secret_aad(id)))
    .bind(hex(secret.hash().as_bytes()))
    .bind(seal(secrets, &pkcs8, &ed25519_aad(id)))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(secret)
}

/// The generations of `id` valid at `now`, current first, then the
/// rotated-out ones newest first.
pub async fn generations<'c, E>(
    conn: E,
    secrets: &SecretBox,
    id: &ProjectId,
    now: i64,
) -> AdminResult<Vec<Generation>>
where
    E: sqlx::Executor<'c, Database = Any>,
{
    let rows = sqlx::query(
        "SELECT secret_sealed, ed25519_sealed, valid_until FROM project_secrets \
         WHERE project_id = $1 AND (valid_until IS NULL OR valid_until > $2)",
    )
    .bind(id.as_str())
    .bind(now)
    .fetch_all(conn)
    .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            open_generation(
                secrets,
                id,
                &r.try_get::<String, _>("secret_sealed")?,
                &r.try_get::<String, _>("ed25519_sealed")?,
                r.try_get("valid_until")?,
            )
        })
        .collect::<AdminResult<Vec<_>>>()?;
    sort_generations(&mut out);
    Ok(out)
}

/// Current first (no end), then by grace end, latest first.
pub fn sort_generations(list: &mut [Generation]) {
    list.sort_by_key(|g| std::cmp::Reverse(g.valid_until.unwrap_or(i64::MAX)));
}

/// Whether `presented` is a secret of `id` valid at `now`: its SHA-256 is
/// compared in constant time with every valid stored hash, without opening
/// any sealed value.
pub async fn secret_matches<'c, E>(
    conn: E,
    id: &ProjectId,
    presented: &str,
    now: i64,
) -> AdminResult<bool>
where
    E: sqlx::Executor<'c, Database = Any>,
{
    let rows = sqlx::query(
        "SELECT secret_hash FROM project_secrets WHERE project_id = $1 AND (valid_until IS NULL OR valid_until > $2)",
    )
    .bind(id.as_str())
    .bind(now)
    .fetch_all(conn)
    .await?;
    let presented = hex(&sha256(presented.as_bytes()));
    let mut found = false;
    for row in &rows {
        let stored: String = row.try_get("secret_hash")?;
        found |= ct_eq(stored.as_bytes(), presented.as_bytes());
    }
    Ok(found)
}

/// Largest extra-metadata document (serialised): it travels in dashboard
/// and client answers, so it stays small.
pub const MAX_EXTRA_METADATA_BYTES: usize = 32 * 1024;

/// Applies a JSON Merge Patch to the extra-metadata document of `id` and
/// answers the new document. The row is locked for the read-modify-write, so
/// concurrent patches apply one after the other. A patch that is not an
/// object is `422 extraMetadata`; a result over
/// [`MAX_EXTRA_METADATA_BYTES`] is `413` and nothing is written.
pub async fn patch_extra_metadata(
    db: &crate::db::Db,
    id: &ProjectId,
    patch: &serde_json::Value,
) -> AdminResult<serde_json::Value> {
    if !patch.is_object() {
        return Err(ApiError::with_message(
            ErrorCode::InvalidField,
            "extraMetadata must be a JSON object (a merge patch)",
        )
        .field("extraMetadata")
        .into());
    }
    let mut tx = db.pool().begin().await?;
    let locked = sqlx::query("UPDATE projects SET extra_metadata = extra_metadata WHERE id = $1")
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if locked == 0 {
        return Err(ApiError::new(ErrorCode::ProjectNotFound).into());
    }
    let current: String = sqlx::query("SELECT extra_metadata FROM projects WHERE id = $1")
        .bind(id.as_str())
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    let mut doc: serde_json::Value =
        serde_json::from_str(&current).map_err(AdminError::internal)?;
    merge_patch(&mut doc, patch);
    let text = serde_json::to_string(&doc).map_err(AdminError::internal)?;
    if text.len() > MAX_EXTRA_METADATA_BYTES {
        return Err(ApiError::with_message(
            ErrorCode::PayloadTooLarge,
            "the extra-metadata document would be larger than 32 KiB",
        )
        .field("extraMetadata")
        .into());
    }
    if text != current {
        sqlx::query("UPDATE projects SET extra_metadata = $1 WHERE id = $2")
            .bind(&text)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(doc)
}

pub use qyzar_shared::crypto::sha256;

/// Lowercase hex, how token and secret hashes are stored.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The 32 bytes of a stored hex digest.
pub fn unhex32(s: &str) -> AdminResult<[u8; 32]> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return Err(AdminError::internal(
            "a stored digest is not 64 hex characters",
        ));
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).map_err(AdminError::internal)?;
        out[i] = u8::from_str_radix(text, 16).map_err(AdminError::internal)?;
    }
    Ok(out)
}

/// Applies a JSON Merge Patch (RFC 7386) to `target`: an object patch
/// merges member by member, `null` removes a member, anything else
/// replaces the target.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    let Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(t) = target {
        for (key, value) in members {
            if value.is_null() {
                t.remove(key);
            } else {
                merge_patch(t.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386_appendix_a() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (mut target, patch, expected) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, expected, "patch {patch}");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(project_name("  Shop  ").unwrap(), "Shop");
        assert!(project_name("   ").is_err());
        assert!(project_name(&"x".repeat(101)).is_err());
        assert!(project_name(&"é".repeat(100)).is_ok());
        assert!(project_name("a\nb").is_err());
    }

    #[test]
    fn hex_round_trips() {
        let d = sha256(b"abc");
        assert_eq!(unhex32(&hex(&d)).unwrap(), d);
        assert!(unhex32("zz").is_err());
    }

    #[test]
    fn generations_sort_current_first() {
        let g = |v| Generation {
            secret: ProjectSecret::generate(),
            ed25519_pkcs8: Vec::new(),
            valid_until: v,
        };
        let mut list = vec![g(Some(5)), g(None), g(Some(9))];
        sort_generations(&mut list);
        let order: Vec<_> = list.iter().map(|g| g.valid_until).collect();
        assert_eq!(order, [None, Some(9), Some(5)]);
    }
}
