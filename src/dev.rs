//! `qyzar dev`: a dev account and project, seeded through the admin's own
//! API on first start and kept across restarts.
//!
//! The account is created verified (there is nobody to click a mail link),
//! then everything else goes through the public routes a user would call:
//! sign-in, `POST /projects`, `PATCH /projects/settings` (the dev origin
//! allowed, `testMode` on), `POST /origin-tokens`. The admin pushes the
//! project's configuration to the engine like any other change.
//! Credentials are written to `.qyzar/dev.json` (mode 0600) and printed.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The origin the dev origin token is bound to (a typical local front end).
pub const DEV_ORIGIN: &str = "http://localhost:3000";
/// The dev account's address.
pub const DEV_EMAIL: &str = "dev@qyzar.local";

/// What `.qyzar/dev.json` holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DevProject {
    /// Where the engine listens.
    pub engine_url: String,
    /// Where the admin listens.
    pub admin_url: String,
    /// The dev project.
    pub project_id: String,
    /// Its secret (a dev secret: this file is mode 0600).
    pub project_secret: String,
    /// An origin token bound to [`DevProject::origin`].
    pub origin_token: String,
    /// The origin that token is bound to.
    pub origin: String,
    /// The dev account.
    pub email: String,
    /// Its password.
    pub password: String,
    /// Where mail goes in dev (one file per message).
    pub outbox_dir: String,
}

/// Returns the dev project, seeding the account and project through the
/// running admin at `admin_url` the first time (or when the admin database
/// no longer knows the account, e.g. after it was deleted).
pub async fn ensure(
    dir: &Path,
    state: &qyzar_admin::AppState,
    engine_url: &str,
    admin_url: &str,
) -> Result<DevProject, crate::Error> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join("dev.json");
    let outbox = state.config.outbox_dir.display().to_string();
    if let Ok(bytes) = std::fs::read(&file) {
        let mut dev: DevProject = serde_json::from_slice(&bytes)?;
        if account_exists(state, &dev.email).await? {
            dev.engine_url = engine_url.to_owned();
            dev.admin_url = admin_url.to_owned();
            dev.outbox_dir = outbox;
            write_private(&file, &serde_json::to_vec_pretty(&dev)?)?;
            return Ok(dev);
        }
    }
    let password = qyzar_shared::crypto::random_token("dev-", 18);
    create_verified_account(state, DEV_EMAIL, &password).await?;
    let api = Api {
        base: admin_url.to_owned(),
        token: None,
        client: Client::builder(TokioExecutor::new()).build_http(),
    };
    let signin = api
        .call(
            "POST",
            "/auth/signin",
            json!({"email": DEV_EMAIL, "password": password}),
        )
        .await?;
    let api = Api {
        token: Some(text(&signin, "token")?),
        ..api
    };
    let created = api
        .call("POST", "/projects", json!({"name": "Dev project"}))
        .await?;
    let project_id = text(&created, "projectId")?;
    api.call(
        "PATCH",
        "/projects/settings",
        json!({"projectId": project_id, "settings": {"allowedOrigins": [DEV_ORIGIN], "testMode": true}}),
    )
    .await?;
    let token = api
        .call(
            "POST",
            "/origin-tokens",
            json!({"projectId": project_id, "origin": DEV_ORIGIN, "ttlSeconds": 365 * 24 * 3600}),
        )
        .await?;
    let dev = DevProject {
        engine_url: engine_url.to_owned(),
        admin_url: admin_url.to_owned(),
        project_secret: text(&created, "secret")?,
        origin_token: text(&token, "token")?,
        project_id,
        origin: DEV_ORIGIN.to_owned(),
        email: DEV_EMAIL.to_owned(),
        password,
        outbox_dir: outbox,
    };
    write_private(&file, &serde_json::to_vec_pretty(&dev)?)?;
    Ok(dev)
}

async fn account_exists(state: &qyzar_admin::AppState, email: &str) -> Result<bool, crate::Error> {
    let row = sqlx::query("SELECT id FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(state.db.pool())
        .await?;
    Ok(row.is_some())
}

/// The one step that does not go through the API: a verified account, since
/// in dev there is nobody to click the verification link.
async fn create_verified_account(
    state: &qyzar_admin::AppState,
    email: &str,
    password: &str,
) -> Result<(), crate::Error> {
    let hash = qyzar_admin::auth::passwords::hash(password.to_owned())
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query("DELETE FROM users WHERE email = $1")
        .bind(email)
        .execute(state.db.pool())
        .await?;
    sqlx::query("INSERT INTO users (id, email, password_hash, email_verified, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(qyzar_shared::ids::UserId::generate().to_string())
        .bind(email)
        .bind(hash)
        .bind(true)
        .bind(qyzar_shared::time::now_ms())
        .execute(state.db.pool())
        .await?;
    Ok(())
}

struct Api {
    base: String,
    token: Option<String>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Value) -> Result<Value, crate::Error> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let res = self
            .client
            .request(req.body(Full::new(Bytes::from(body.to_string())))?)
            .await?;
        let status = res.status();
        let bytes = res.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("dev seeding: {method} {path} answered {status}: {value}").into());
        }
        Ok(value)
    }
}

fn text(v: &Value, key: &str) -> Result<String, crate::Error> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("dev seeding: no `{key}` in {v}").into())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write as _;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, path)
}
