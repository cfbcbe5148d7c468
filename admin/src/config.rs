//! Admin configuration: defaults, overridden by `QYZAR_*` variables.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything the admin needs to start.
#[derive(Clone)]
pub struct AdminConfig {
    /// Listener for the API and dashboard (`QYZAR_ADMIN_ADDR`, default
    /// `127.0.0.1:8081`).
    pub addr: SocketAddr,
    /// `postgres://…` or `sqlite:…` (`QYZAR_DATABASE_URL`, default an SQLite
    /// file under `.qyzar/`).
    pub database_url: String,
    /// Pool size for PostgreSQL (`QYZAR_DATABASE_MAX_CONNECTIONS`).
    pub max_connections: u32,
    /// Where the 32-byte master key for secrets at rest lives
    /// (`QYZAR_MASTER_KEY_FILE`, default `.qyzar/master.key`, created 0600
    /// when missing). `QYZAR_MASTER_KEY` (base64) takes precedence.
    pub master_key_file: PathBuf,
    /// The public base URL of this admin, used in links sent by mail
    /// (`QYZAR_PUBLIC_URL`, default `http://<addr>`).
    pub public_url: String,
    /// SMTP server for outgoing mail (`QYZAR_SMTP_URL`, e.g.
    /// `smtp://127.0.0.1:2525`); when unset, mail is written to the outbox.
    pub smtp_url: Option<String>,
    /// Folder each outgoing mail is written to when no SMTP server is set
    /// (`QYZAR_OUTBOX_DIR`, default `.qyzar/outbox`).
    pub outbox_dir: PathBuf,
    /// The sender address (`QYZAR_MAIL_FROM`).
    pub mail_from: String,
    /// Engines' internal base URLs config is pushed to
    /// (`QYZAR_ENGINE_INTERNAL_URLS`, comma-separated).
    pub engine_urls: Vec<String>,
    /// Shared key authenticating pushes and pulls (`QYZAR_ENGINE_PUSH_KEY`).
    pub push_key: Option<String>,
    /// An engine's public base URL (`QYZAR_ENGINE_PUBLIC_URL`), which the
    /// dashboard's dry-run `POST /projects/rate-limit/check` is forwarded to,
    /// so the answer is the engine's own decision logic, not a copy of it.
    pub engine_public_url: Option<String>,
    /// Stripe secret API key (`STRIPE_SECRET_KEY`). Unset means billing is
    /// off: `/billing/status` says `configured: false` and the other billing
    /// routes answer `409 billing_not_configured`. Never logged.
    pub stripe_secret_key: Option<String>,
    /// Signing secret of the Stripe webhook endpoint (`STRIPE_WEBHOOK_SECRET`,
    /// `whsec_…`); without it `POST /stripe/webhook` accepts nothing.
    pub stripe_webhook_secret: Option<String>,
    /// Stripe price id of the `pro` plan (`STRIPE_PRICE_PRO`).
    pub stripe_price_pro: Option<String>,
    /// Stripe price id of the `enterprise` plan (`STRIPE_PRICE_ENTERPRISE`).
    pub stripe_price_enterprise: Option<String>,
    /// Base URL of the Stripe API (`STRIPE_API_BASE`, default
    /// `https://api.stripe.com`), so tests point it at `stripe-mock`.
    pub stripe_api_base: Option<String>,
    /// Days verified Stripe events are kept in `billing_event_logs`
    /// (`QYZAR_BILLING_LOG_RETENTION_DAYS`, default 400, at least 30).
    /// The log is also the webhook's idempotency guard, and Stripe resends
    /// an event for up to three days, so it never goes below a month.
    pub billing_log_retention_days: u32,
}

/// Debug output with every secret redacted: the database URL may carry a
/// password, SMTP URLs credentials, and the keys are keys.
impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn set(v: &Option<String>) -> &'static str {
            if v.is_some() {
                "<set>"
            } else {
                "<unset>"
            }
        }
        f.debug_struct("AdminConfig")
            .field("addr", &self.addr)
            .field(
                "database_url",
                &self
                    .database_url
                    .split_once("://")
                    .map_or("<sqlite>", |(scheme, _)| scheme),
            )
            .field("max_connections", &self.max_connections)
            .field("master_key_file", &self.master_key_file)
            .field("public_url", &self.public_url)
            .field("smtp_url", &set(&self.smtp_url))
            .field("outbox_dir", &self.outbox_dir)
            .field("mail_from", &self.mail_from)
            .field("engine_urls", &self.engine_urls)
            .field("push_key", &set(&self.push_key))
            .field("engine_public_url", &self.engine_public_url)
            .field("stripe_secret_key", &set(&self.stripe_secret_key))
            .field("stripe_webhook_secret", &set(&self.stripe_webhook_secret))
            .field("stripe_price_pro", &self.stripe_price_pro)
            .field("stripe_price_enterprise", &self.stripe_price_enterprise)
            .field("stripe_api_base", &self.stripe_api_base)
            .finish()
    }
}

#[cfg(test)]
mod debug_tests {
    #[test]
    fn debug_output_holds_no_secret() {
        let mut c = super::AdminConfig::local(
            std::path::Path::new("/tmp"),
            "postgres://u:pw-secret@db/x".into(),
        );
        c.push_key = Some("pk-secret".into());
        c.stripe_secret_key = Some("sk_test_secret".into());
        c.smtp_url = Some("smtp://user:smtp-secret@host".into());
        let text = format!("{c:?}");
        for s in ["pw-secret", "pk-secret", "sk_test_secret", "smtp-secret"] {
            assert!(!text.contains(s), "{s} leaked: {text}");
        }
    }
}

/// Default of [`AdminConfig::billing_log_retention_days`].
pub const DEFAULT_BILLING_LOG_RETENTION_DAYS: u32 = 400;
/// Least [`AdminConfig::billing_log_retention_days`] accepted.
pub const MIN_BILLING_LOG_RETENTION_DAYS: u32 = 30;

/// A configuration value that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{var} is not valid: {reason}")]
pub struct ConfigError {
    /// The variable at fault.
    pub var: &'static str,
    /// Why.
    pub reason: String,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl AdminConfig {
    /// Defaults overridden by the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let addr: SocketAddr = var("QYZAR_ADMIN_ADDR")
            .unwrap_or_else(|| "127.0.0.1:8081".into())
            .parse()
            .map_err(|e: std::net::AddrParseError| ConfigError {
                var: "QYZAR_ADMIN_ADDR",
                reason: e.to_string(),
            })?;
        let max_connections = match var("QYZAR_DATABASE_MAX_CONNECTIONS") {
            Some(v) => v
                .parse()
                .map_err(|e: std::num::ParseIntError| ConfigError {
                    var: "QYZAR_DATABASE_MAX_CONNECTIONS",
                    reason: e.to_string(),
                })?,
            None => 16,
        };
        let billing_log_retention_days = match var("QYZAR_BILLING_LOG_RETENTION_DAYS") {
            Some(v) => match v.trim().parse::<u32>() {
                Ok(d) if (MIN_BILLING_LOG_RETENTION_DAYS..=36_500).contains(&d) => d,
                _ => {
                    return Err(ConfigError {
                        var: "QYZAR_BILLING_LOG_RETENTION_DAYS",
                        reason: format!("{v:?} is not a number of days from 30 to 36500"),
                    })
                }
            },
            None => DEFAULT_BILLING_LOG_RETENTION_DAYS,
        };
        Ok(Self {
            billing_log_retention_days,
            addr,
            database_url: var("QYZAR_DATABASE_URL")
                .unwrap_or_else(|| "sqlite:.qyzar/admin.sqlite?mode=rwc".into()),
            max_connections,
            master_key_file: var("QYZAR_MASTER_KEY_FILE")
                .unwrap_or_else(|| ".qyzar/master.key".into())
                .into(),
            public_url: var("QYZAR_PUBLIC_URL").unwrap_or_else(|| format!("http://{addr}")),
            smtp_url: var("QYZAR_SMTP_URL"),
            outbox_dir: var("QYZAR_OUTBOX_DIR")
                .unwrap_or_else(|| ".qyzar/outbox".into())
                .into(),
            mail_from: var("QYZAR_MAIL_FROM")
                .unwrap_or_else(|| "Qyzar <no-reply@qyzar.local>".into()),
            engine_urls: var("QYZAR_ENGINE_INTERNAL_URLS")
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().trim_end_matches('/').to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            push_key: var("QYZAR_ENGINE_PUSH_KEY"),
            engine_public_url: var("QYZAR_ENGINE_PUBLIC_URL")
                .map(|u| u.trim().trim_end_matches('/').to_owned()),
            stripe_secret_key: var("STRIPE_SECRET_KEY"),
            stripe_webhook_secret: var("STRIPE_WEBHOOK_SECRET"),
            stripe_price_pro: var("STRIPE_PRICE_PRO").map(|v| v.trim().to_owned()),
            stripe_price_enterprise: var("STRIPE_PRICE_ENTERPRISE").map(|v| v.trim().to_owned()),
            stripe_api_base: var("STRIPE_API_BASE")
                .map(|u| u.trim().trim_end_matches('/').to_owned()),
        })
    }

    /// A configuration for tests and embedding: everything local, under `dir`.
    pub fn local(dir: &std::path::Path, database_url: String) -> Self {
        Self {
            addr: "127.0.0.1:0".parse().expect("literal address"),
            database_url,
            max_connections: 4,
            master_key_file: dir.join("master.key"),
            public_url: "http://127.0.0.1".into(),
            smtp_url: None,
            outbox_dir: dir.join("outbox"),
            mail_from: "Qyzar <no-reply@qyzar.local>".into(),
            engine_urls: Vec::new(),
            push_key: None,
            engine_public_url: None,
            stripe_secret_key: None,
            stripe_webhook_secret: None,
            stripe_price_pro: None,
            stripe_price_enterprise: None,
            stripe_api_base: None,
            billing_log_retention_days: DEFAULT_BILLING_LOG_RETENTION_DAYS,
        }
    }
}

/// Reads the master key, creating a fresh one (mode 0600) when the file does
/// not exist. `QYZAR_MASTER_KEY` (base64 of 32 bytes) overrides the file.
pub fn master_key(
    config: &AdminConfig,
) -> Result<[u8; 32], Box<dyn std::error::Error + Send + Sync>> {
    use base64::Engine as _;
    if let Some(b64) = var("QYZAR_MASTER_KEY") {
        let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim())?;
        return raw
            .try_into()
            .map_err(|_| "QYZAR_MASTER_KEY must be 32 bytes (base64)".into());
    }
    let path = &config.master_key_file;
    match std::fs::read(path) {
        Ok(raw) => raw
            .try_into()
            .map_err(|_| format!("{} must hold exactly 32 bytes", path.display()).into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let key = qyzar_shared::crypto::SecretBox::generate_key();
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                opts.mode(0o600);
            }
            use std::io::Write as _;
            let mut f = opts.open(path)?;
            f.write_all(&key)?;
            f.sync_all()?;
            tracing::info!(path = %path.display(), "created a new master key");
            Ok(key)
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens the database (creating the SQLite folder when needed), builds the
/// state, binds the listener and serves until `shutdown` resolves.
pub async fn start(
    config: AdminConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let state = crate::AppState::open(config).await?;
    tracing::info!(addr = %listener.local_addr()?, backend = ?state.db.backend(), "admin listening");
    crate::run(listener, state, shutdown).await?;
    Ok(())
}
