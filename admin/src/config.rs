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
    /// Key admin presents to engines on pushes, admin → engine
    /// (`QYZAR_ENGINE_PUSH_KEY`, at least 32 bytes).
    pub push_key: Option<String>,
    /// Key engines present to admin on pulls and traffic reports, engine →
    /// admin (`QYZAR_ADMIN_ENGINE_REPORT_KEY`, at least 32 bytes, not the
    /// push key). Unset: the push key is accepted instead, as before keys
    /// were split, with a warning at start.
    pub report_key: Option<String>,
    /// How `https://` engine URLs (internal and public) are checked:
    /// `QYZAR_ENGINE_TLS_CA_FILE` (PEM) or `QYZAR_ENGINE_TLS_PINS`
    /// (SHA-256 of the engine certificate's DER, hex, comma-separated);
    /// neither: the public CA roots.
    pub engine_tls: qyzar_shared::control::channel::Trust,
    /// Largest encoded config snapshot changes may grow it to
    /// (`QYZAR_CONFIG_BUDGET_BYTES`, default 56 MiB, at most the engines'
    /// 64 MiB limit); see `push.rs`.
    pub config_budget_bytes: usize,
    /// An engine's public base URL (`QYZAR_ENGINE_PUBLIC_URL`), which the
    /// dashboard's dry-run `POST /projects/rate-limit/check` is forwarded to,
    /// so the answer is the engine's own decision logic, not a copy of it.
    pub engine_public_url: Option<String>,
    /// The engines' CQL cluster, read for the dashboard's devices and
    /// entropy snapshots (`QYZAR_ADMIN_CQL_NODES`, comma-separated, and
    /// `QYZAR_ADMIN_CQL_KEYSPACE`, default `qyzar`: the engines' keyspace).
    pub data_cql: Option<qyzar_store::ScyllaConfig>,
    /// How often device clusters are recomputed
    /// (`QYZAR_ADMIN_CLUSTER_REFRESH_SECONDS`, default 60, at least 1).
    pub cluster_refresh: std::time::Duration,
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
    /// Connection cap and request deadlines (`QYZAR_ADMIN_MAX_CONNECTIONS`,
    /// `QYZAR_ADMIN_IDLE_TIMEOUT_SECONDS`, `QYZAR_ADMIN_BODY_TIMEOUT_SECONDS`,
    /// `QYZAR_ADMIN_REQUEST_TIMEOUT_SECONDS`; see [`crate::server`]).
    pub limits: crate::server::ServeLimits,
    /// Reverse proxies whose `X-Forwarded-For` names the client, for the
    /// per-client sign-in limits (`QYZAR_ADMIN_TRUSTED_PROXIES`, CIDRs,
    /// comma-separated; default none: the socket address is the client).
    pub trusted_proxies: Vec<crate::throttle::client_ip::Cidr>,
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
            .field("report_key", &set(&self.report_key))
            .field("engine_tls", &self.engine_tls_kind())
            .field("config_budget_bytes", &self.config_budget_bytes)
            .field("engine_public_url", &self.engine_public_url)
            .field("data_cql", &self.data_cql.as_ref().map(|c| &c.nodes))
            .field("stripe_secret_key", &set(&self.stripe_secret_key))
            .field("stripe_webhook_secret", &set(&self.stripe_webhook_secret))
            .field("stripe_price_pro", &self.stripe_price_pro)
            .field("stripe_price_enterprise", &self.stripe_price_enterprise)
            .field("stripe_api_base", &self.stripe_api_base)
            .field("limits", &self.limits)
            .field("trusted_proxies", &self.trusted_proxies)
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
        c.report_key = Some("rk-secret".into());
        c.stripe_secret_key = Some("sk_test_secret".into());
        c.smtp_url = Some("smtp://user:smtp-secret@host".into());
        let text = format!("{c:?}");
        for s in [
            "pw-secret",
            "pk-secret",
            "rk-secret",
            "sk_test_secret",
            "smtp-secret",
        ] {
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
        let limits = serve_limits()?;
        let config_budget_bytes = match var("QYZAR_CONFIG_BUDGET_BYTES") {
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if (1..=qyzar_shared::snapshot::MAX_ENCODED_BYTES).contains(&n) => n,
                _ => {
                    return Err(ConfigError {
                        var: "QYZAR_CONFIG_BUDGET_BYTES",
                        reason: format!("{v:?} is not a number of bytes from 1 to 67108864"),
                    })
                }
            },
            None => qyzar_shared::snapshot::DEFAULT_BUDGET_BYTES,
        };
        let trusted_proxies = crate::throttle::client_ip::parse_list(
            &var("QYZAR_ADMIN_TRUSTED_PROXIES").unwrap_or_default(),
        )
        .map_err(|reason| ConfigError {
            var: "QYZAR_ADMIN_TRUSTED_PROXIES",
            reason,
        })?;
        let config = Self {
            trusted_proxies,
            billing_log_retention_days,
            limits,
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
            report_key: var("QYZAR_ADMIN_ENGINE_REPORT_KEY"),
            engine_tls: qyzar_shared::control::channel::Trust::from_settings(
                var("QYZAR_ENGINE_TLS_CA_FILE").as_deref().map(str::trim),
                var("QYZAR_ENGINE_TLS_PINS").as_deref(),
            )
            .map_err(|reason| ConfigError {
                var: "QYZAR_ENGINE_TLS_CA_FILE / QYZAR_ENGINE_TLS_PINS",
                reason,
            })?,
            config_budget_bytes,
            engine_public_url: var("QYZAR_ENGINE_PUBLIC_URL")
                .map(|u| u.trim().trim_end_matches('/').to_owned()),
            cluster_refresh: match var("QYZAR_ADMIN_CLUSTER_REFRESH_SECONDS") {
                None => crate::clusters::REFRESH_EVERY,
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n >= 1 => std::time::Duration::from_secs(n),
                    _ => {
                        return Err(ConfigError {
                            var: "QYZAR_ADMIN_CLUSTER_REFRESH_SECONDS",
                            reason: format!("{v:?} is not a whole number of seconds, at least 1"),
                        })
                    }
                },
            },
            data_cql: var("QYZAR_ADMIN_CQL_NODES")
                .filter(|n| !n.trim().is_empty())
                .map(|nodes| {
                    qyzar_store::ScyllaConfig::new(
                        nodes.split(',').map(|n| n.trim().to_owned()).collect(),
                        var("QYZAR_ADMIN_CQL_KEYSPACE").unwrap_or_else(|| "qyzar".into()),
                    )
                }),
            stripe_secret_key: var("STRIPE_SECRET_KEY"),
            stripe_webhook_secret: var("STRIPE_WEBHOOK_SECRET"),
            stripe_price_pro: var("STRIPE_PRICE_PRO").map(|v| v.trim().to_owned()),
            stripe_price_enterprise: var("STRIPE_PRICE_ENTERPRISE").map(|v| v.trim().to_owned()),
            stripe_api_base: var("STRIPE_API_BASE")
                .map(|u| u.trim().trim_end_matches('/').to_owned()),
        };
        config.validate()?;
        Ok(config)
    }

    /// Start-up checks that do not depend on where the values came from:
    /// channel keys of at least 32 bytes, one per direction.
    pub fn validate(&self) -> Result<(), ConfigError> {
        qyzar_shared::control::channel::check_key_pair(
            self.push_key.as_deref(),
            self.report_key.as_deref(),
        )
        .map_err(|reason| ConfigError {
            var: "QYZAR_ENGINE_PUSH_KEY / QYZAR_ADMIN_ENGINE_REPORT_KEY",
            reason,
        })
    }

    /// The key engines must present (pull, traffic): the report key, or the
    /// push key while no report key is configured.
    pub fn engine_report_key(&self) -> Option<&str> {
        self.report_key.as_deref().or(self.push_key.as_deref())
    }

    fn engine_tls_kind(&self) -> &'static str {
        match self.engine_tls {
            qyzar_shared::control::channel::Trust::PublicRoots => "public roots",
            qyzar_shared::control::channel::Trust::Ca(_) => "CA file",
            qyzar_shared::control::channel::Trust::Pins(_) => "pinned",
        }
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
            report_key: None,
            engine_tls: qyzar_shared::control::channel::Trust::PublicRoots,
            config_budget_bytes: qyzar_shared::snapshot::DEFAULT_BUDGET_BYTES,
            engine_public_url: None,
            data_cql: None,
            cluster_refresh: crate::clusters::REFRESH_EVERY,
            stripe_secret_key: None,
            stripe_webhook_secret: None,
            stripe_price_pro: None,
            stripe_price_enterprise: None,
            stripe_api_base: None,
            billing_log_retention_days: DEFAULT_BILLING_LOG_RETENTION_DAYS,
            limits: crate::server::ServeLimits::default(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// The serving limits from the environment, defaults where unset.
fn serve_limits() -> Result<crate::server::ServeLimits, ConfigError> {
    let mut limits = crate::server::ServeLimits::default();
    let number = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
        match var(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
                _ => Err(ConfigError {
                    var: name,
                    reason: format!("{v:?} is not a number from 1 to 1000000"),
                }),
            },
        }
    };
    let secs = std::time::Duration::from_secs;
    limits.max_connections = number("QYZAR_ADMIN_MAX_CONNECTIONS", 1024)? as usize;
    limits.header_read_timeout = secs(number("QYZAR_ADMIN_IDLE_TIMEOUT_SECONDS", 10)?);
    limits.body_read_timeout = secs(number("QYZAR_ADMIN_BODY_TIMEOUT_SECONDS", 10)?);
    limits.request_timeout = secs(number("QYZAR_ADMIN_REQUEST_TIMEOUT_SECONDS", 30)?);
    if limits.request_timeout <= limits.body_read_timeout {
        return Err(ConfigError {
            var: "QYZAR_ADMIN_REQUEST_TIMEOUT_SECONDS",
            reason: "must be longer than QYZAR_ADMIN_BODY_TIMEOUT_SECONDS, so a slow upload \
                     is answered 408 rather than 503"
                .into(),
        });
    }
    Ok(limits)
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
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let state = crate::AppState::open(config).await?;
    tracing::info!(addr = %listener.local_addr()?, backend = ?state.db.backend(), "admin listening");
    crate::run(listener, state, shutdown).await?;
    Ok(())
}
