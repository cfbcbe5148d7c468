//! Building a snapshot from the database: every project with its valid
//! secret generations (current first, rotated-out ones until their grace
//! end), derived keys, settings, live origin tokens, opt-outs, and the
//! quota block of accounts whose monthly verifications are used up.
//!
//! Each project's lists are held to its owner's plan caps
//! ([`projects::snapshot_caps`]) here as well as where they grow: rows over
//! a cap (after a downgrade, or two requests racing past a count) are left
//! out, the oldest opt-outs and the longest-lived tokens kept, and logged.
//! So one project can never make the snapshot larger than its share, and a
//! build never fails because of one tenant's data.

use bytes::Bytes;
use qyzar_shared::crypto::{client_token_key, Ed25519Signer, SecretBox};
use qyzar_shared::ids::ProjectId;
use qyzar_shared::settings::{PlanTier, ProjectSettings, TokenAlgorithm};
use qyzar_shared::snapshot::{
    encode_snapshot, provision, Ed25519KeyEntry, Hs256KeyEntry, OriginTokenEntry, ProjectConfig,
    SecretHashEntry, Snapshot,
};
use sqlx::Row;

use super::Built;
use crate::db::{Backend, Db};
use crate::error::{AdminError, AdminResult};
use crate::projects::{self, Generation};

/// How long origin tokens are kept after expiry, so `status` and `verify`
/// can still say `expired` rather than `not_found` for a while.
const EXPIRED_TOKEN_KEEP_MS: i64 = 30 * 24 * 3600 * 1000;

/// Deletes what no snapshot carries any more: secret generations past their
/// grace, expired reveal grants, origin tokens long expired.
pub(super) async fn cleanup(db: &Db, now: i64) -> AdminResult<()> {
    let pool = db.pool();
    sqlx::query("DELETE FROM project_secrets WHERE valid_until IS NOT NULL AND valid_until <= $1")
        .bind(now)
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM secret_reveal_grants WHERE expires_at <= $1")
        .bind(now)
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM origin_tokens WHERE expires_at <= $1")
        .bind(now - EXPIRED_TOKEN_KEEP_MS)
        .execute(pool)
        .await?;
    Ok(())
}

/// Allocates the next version: one atomic increment of the persisted counter.
pub(super) async fn next_version(db: &Db, now: i64) -> AdminResult<u64> {
    let row = sqlx::query("UPDATE config_versions SET version = version + 1, updated_at = $1 WHERE id = 1 RETURNING version")
        .bind(now)
        .fetch_one(db.pool())
        .await?;
    let v: i64 = row.try_get(0)?;
    u64::try_from(v).map_err(AdminError::internal)
}

/// Everything a snapshot is built from, read in one consistent view.
pub(super) struct Rows {
    /// (id, owner id, settings JSON, owner plan).
    projects: Vec<(String, String, String, String)>,
    /// Accounts over their monthly verification quota.
    blocked: std::collections::HashSet<String>,
    /// (account id, plan key): sizes each project's engine-side limits.
    plans: Vec<(String, String)>,
    secrets: Vec<(String, String, String, Option<i64>)>,
    tokens: Vec<(String, String, String, i64)>,
    opt_outs: Vec<(String, String, String)>,
}

/// Reads all rows in one transaction; on PostgreSQL at `REPEATABLE READ`
/// so the four queries see one state (SQLite transactions already do).
pub(super) async fn read_rows(db: &Db, now: i64) -> AdminResult<Rows> {
    let mut tx = db.pool().begin().await?;
    if db.backend() == Backend::Postgres {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
    }
    // Tuples read by column position; each query names its columns in order.
    let projects = sqlx::query_as(
        "SELECT p.id, p.owner_id, p.settings_json, COALESCE(u.plan, 'free') FROM projects p \
         LEFT JOIN users u ON u.id = p.owner_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    let blocked = crate::usage::blocked_accounts(&mut tx, now).await?;
    let plans = sqlx::query_as("SELECT id, plan FROM users")
        .fetch_all(&mut *tx)
        .await?;
    let secrets = sqlx::query_as(
        "SELECT project_id, secret_sealed, ed25519_sealed, valid_until FROM project_secrets \
         WHERE valid_until IS NULL OR valid_until > $1",
    )
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    let tokens = sqlx::query_as(
        "SELECT project_id, token_hash, origin, expires_at FROM origin_tokens \
         WHERE invalidated_at IS NULL AND expires_at > $1 ORDER BY expires_at DESC, token_hash",
    )
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    let opt_outs = sqlx::query_as(
        "SELECT project_id, kind, subject FROM opt_outs ORDER BY created_at, kind, subject",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Rows {
        projects,
        blocked,
        plans,
        secrets,
        tokens,
        opt_outs,
    })
}

/// Turns the rows into a snapshot and encodes it.
pub(super) fn build(version: u64, now: i64, rows: Rows, secrets: &SecretBox) -> AdminResult<Built> {
    use std::collections::HashMap;
    let mut generations: HashMap<String, Vec<Generation>> = HashMap::new();
    for (project_id, secret_sealed, ed25519_sealed, valid_until) in &rows.secrets {
        let id = ProjectId::parse(project_id).map_err(AdminError::internal)?;
        let g =
            projects::open_generation(secrets, &id, secret_sealed, ed25519_sealed, *valid_until)?;
        generations.entry(project_id.clone()).or_default().push(g);
    }
    let mut tokens: HashMap<&str, Vec<OriginTokenEntry>> = HashMap::new();
    for (project_id, hash, origin, expires_at) in &rows.tokens {
        tokens
            .entry(project_id)
            .or_default()
            .push(OriginTokenEntry {
                token_hash: projects::unhex32(hash)?,
                origin: origin.clone(),
                expires_at_ms: *expires_at,
            });
    }
    let mut opt_outs: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
    for (project_id, kind, subject) in &rows.opt_outs {
        opt_outs
            .entry(project_id)
            .or_default()
            .push((kind, subject));
    }
    let plans: HashMap<&str, PlanTier> = rows
        .plans
        .iter()
        .map(|(id, plan)| (id.as_str(), PlanTier::from_key(plan)))
        .collect();
    let mut configs = Vec::with_capacity(rows.projects.len());
    for (project_id, owner_id, settings_json, plan) in &rows.projects {
        let caps = projects::snapshot_caps(plan);
        let id = ProjectId::parse(project_id).map_err(AdminError::internal)?;
        let settings: ProjectSettings = serde_json::from_str(settings_json).map_err(|e| {
            AdminError::internal(format!("stored settings of {project_id} do not parse: {e}"))
        })?;
        let Some(mut gens) = generations.remove(project_id) else {
            // Created and deleted rows are written in one transaction with
            // their secret, so this is a half-deleted project: leave it out.
            tracing::warn!(project = %project_id, "project has no valid secret; left out of the snapshot");
            continue;
        };
        projects::sort_generations(&mut gens);
        let Some(current) = gens.first().filter(|g| g.valid_until.is_none()) else {
            tracing::warn!(project = %project_id, "project has no current secret; left out of the snapshot");
            continue;
        };
        let eddsa = settings.token_algorithm == TokenAlgorithm::EdDsa;
        let mut cfg = provision::project_config(
            &id,
            &current.secret,
            settings,
            eddsa.then_some(&current.ed25519_pkcs8[..]),
        )
        .map_err(AdminError::internal)?;
        for old in &gens[1..] {
            add_grace_generation(&mut cfg, &id, old, eddsa)?;
        }
        cfg.origin_tokens = tokens.remove(project_id.as_str()).unwrap_or_default();
        let mut outs = opt_outs.remove(project_id.as_str()).unwrap_or_default();
        if cfg.origin_tokens.len() > caps.origin_tokens || outs.len() > caps.opt_outs {
            tracing::error!(
                project = %project_id,
                plan = %plan,
                origin_tokens = cfg.origin_tokens.len(),
                opt_outs = outs.len(),
                "project over its snapshot caps; the rows past them are left out"
            );
            cfg.origin_tokens.truncate(caps.origin_tokens);
            outs.truncate(caps.opt_outs);
        }
        for (kind, subject) in outs {
            match kind {
                "device" => cfg.opted_out_devices.push(subject.to_owned()),
                "identifier" => cfg
                    .opted_out_identifier_hashes
                    .push(projects::unhex32(subject)?),
                other => tracing::warn!(kind = other, "unknown opt-out kind ignored"),
            }
        }
        cfg.plan = plans.get(owner_id.as_str()).copied().unwrap_or_default();
        if rows.blocked.contains(owner_id) {
            cfg.verifications_blocked_until_ms = Some(crate::usage::blocked_until(now));
        }
        configs.push(cfg);
    }
    let snapshot = Snapshot::new(version, now, configs).map_err(AdminError::internal)?;
    let encoded = Bytes::from(encode_snapshot(&snapshot).map_err(AdminError::internal)?);
    Ok(Built {
        version,
        snapshot,
        encoded,
    })
}

/// Adds a rotated-out generation, valid until its grace end: its secret
/// hash, its HS256 key (tokens minted before the rotation still verify) and,
/// on EdDSA, its public key (verify-only, still published in the JWKS).
fn add_grace_generation(
    cfg: &mut ProjectConfig,
    id: &ProjectId,
    old: &Generation,
    eddsa: bool,
) -> AdminResult<()> {
    cfg.secret_hashes.push(SecretHashEntry {
        hash: *old.secret.hash().as_bytes(),
        valid_until_ms: old.valid_until,
    });
    let hs = client_token_key(&old.secret, id);
    if cfg.hs256_keys.iter().all(|k| k.kid != hs.kid()) {
        cfg.hs256_keys.push(Hs256KeyEntry {
            kid: hs.kid().to_owned(),
            key: *hs.raw(),
            valid_until_ms: old.valid_until,
        });
    }
    if eddsa {
        let signer = Ed25519Signer::from_pkcs8(&old.ed25519_pkcs8).map_err(AdminError::internal)?;
        cfg.ed25519.push(Ed25519KeyEntry {
            kid: signer.kid().to_owned(),
            public_key: *signer.verifier().public_key(),
            pkcs8: None,
            valid_until_ms: old.valid_until,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use qyzar_shared::crypto::ProjectSecret;

    /// The longest valid origin, made unique by `i`: a 253-byte host and a
    /// port (267 bytes).
    fn longest_origin(i: usize) -> String {
        let tag = format!("{i:06}");
        let last = format!("{tag}{}", "c".repeat(61 - tag.len()));
        let origin = format!(
            "https://{}.{}.{}.{last}:65535",
            "a".repeat(63),
            "b".repeat(63),
            "d".repeat(63)
        );
        qyzar_shared::settings::validate_origin(&origin).expect("a valid origin");
        origin
    }

    /// The largest settings document: 100 longest origins, 16 metadata
    /// buckets with the longest names, the longest cookie names, EdDSA.
    fn largest_settings() -> String {
        use qyzar_shared::settings as s;
        let mut settings = ProjectSettings {
            allowed_origins: (0..s::MAX_ALLOWED_ORIGINS).map(longest_origin).collect(),
            ..ProjectSettings::default()
        };
        // EdDSA: the signing key's PKCS#8 travels too, the larger case.
        settings.token_algorithm = TokenAlgorithm::EdDsa;
        settings.cookie_names.session_id = "i".repeat(s::MAX_COOKIE_NAME_BYTES);
        settings.cookie_names.session_token = "t".repeat(s::MAX_COOKIE_NAME_BYTES);
        let rule = settings.rate_limit.ip;
        settings.rate_limit.metadata = (0..s::MAX_METADATA_BUCKETS)
            .map(|i| {
                (
                    format!("{i:02}{}", "m".repeat(s::MAX_BUCKET_NAME_BYTES - 2)),
                    rule,
                )
            })
            .collect();
        let json = settings.to_json();
        assert!(json.len() <= s::MAX_SETTINGS_BYTES, "{} bytes", json.len());
        let checked = ProjectSettings::parse_and_validate(&json).expect("valid settings");
        String::from_utf8(checked.to_json()).unwrap()
    }

    /// `n` projects of `plan`, each with `opt_outs` longest device ids and
    /// `tokens` origin tokens with the longest origins, one key generation
    /// current and one in grace, the largest settings.
    fn rows(secrets: &SecretBox, n: usize, plan: &str, opt_outs: usize, tokens: usize) -> Rows {
        let settings = largest_settings();
        let now = qyzar_shared::time::now_ms();
        let mut r = Rows {
            projects: Vec::new(),
            blocked: Default::default(),
            secrets: Vec::new(),
            tokens: Vec::new(),
            opt_outs: Vec::new(),
            plans: Vec::new(),
        };
        for p in 0..n {
            r.plans.push((format!("usr_{p}"), plan.into()));
            let id = ProjectId::generate();
            let pid = id.to_string();
            r.projects.push((
                pid.clone(),
                format!("usr_{p}"),
                settings.clone(),
                plan.into(),
            ));
            for valid_until in [None, Some(now + 3_600_000)] {
                let secret = ProjectSecret::generate();
                let sealed = secrets.seal(secret.expose().as_bytes(), pid.as_bytes());
                let pkcs8 = Ed25519Signer::generate_pkcs8();
                let key = secrets.seal(&pkcs8, format!("{pid}:ed25519").as_bytes());
                r.secrets.push((
                    pid.clone(),
                    STANDARD.encode(sealed),
                    STANDARD.encode(key),
                    valid_until,
                ));
            }
            for t in 0..tokens {
                let hash = projects::hex(&projects::sha256(format!("{pid}/{t}").as_bytes()));
                r.tokens
                    .push((pid.clone(), hash, longest_origin(t), now + 3_600_000));
            }
            for o in 0..opt_outs {
                let device = format!("dev_{o:08}{}", "A".repeat(56));
                r.opt_outs.push((pid.clone(), "device".into(), device));
            }
        }
        r
    }

    #[test]
    fn a_thousand_free_projects_at_their_caps_fit_the_engines_limit() {
        let secrets = SecretBox::new(&SecretBox::generate_key());
        let caps = projects::snapshot_caps("free");
        let n = 1_000;
        let rows = rows(&secrets, n, "free", caps.opt_outs, caps.origin_tokens);
        let built = build(1, qyzar_shared::time::now_ms(), rows, &secrets).unwrap();
        let p = &built.snapshot.projects()[0];
        assert_eq!(p.opted_out_devices.len(), caps.opt_outs);
        assert_eq!(p.origin_tokens.len(), caps.origin_tokens);
        assert_eq!(p.secret_hashes.len(), 2);
        assert_eq!(p.settings.allowed_origins.len(), 100);
        let size = built.encoded.len();
        assert!(
            size < qyzar_shared::snapshot::MAX_ENCODED_BYTES,
            "{n} projects at the free caps encode to {size} bytes"
        );
        assert!(size / n < 64 * 1024, "{} bytes a project", size / n);
    }

    #[test]
    fn rows_over_a_cap_are_left_out_of_the_snapshot() {
        let secrets = SecretBox::new(&SecretBox::generate_key());
        let caps = projects::snapshot_caps("free");
        let rows = rows(
            &secrets,
            2,
            "free",
            caps.opt_outs + 40,
            caps.origin_tokens + 5,
        );
        let built = build(1, qyzar_shared::time::now_ms(), rows, &secrets).unwrap();
        for p in built.snapshot.projects() {
            assert_eq!(p.opted_out_devices.len(), caps.opt_outs);
            assert_eq!(p.origin_tokens.len(), caps.origin_tokens);
        }
        let pro = projects::snapshot_caps("pro");
        let rows = rows_pro(&secrets, caps.opt_outs + 40);
        let built = build(2, qyzar_shared::time::now_ms(), rows, &secrets).unwrap();
        assert_eq!(
            built.snapshot.projects()[0].opted_out_devices.len(),
            (caps.opt_outs + 40).min(pro.opt_outs),
            "a larger plan keeps more"
        );
    }

    fn rows_pro(secrets: &SecretBox, opt_outs: usize) -> Rows {
        rows(secrets, 1, "pro", opt_outs, 1)
    }
}
