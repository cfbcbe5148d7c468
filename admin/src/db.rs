//! The control-plane database: PostgreSQL in production, SQLite embedded.
//!
//! One code path over `sqlx::Any`: queries use `$1`-style placeholders, which
//! both PostgreSQL and SQLite accept, and only portable column types. DDL
//! differs, so each backend has its own migration folder, embedded in the
//! binary at build time (no files to ship beside it).

use std::borrow::Cow;
use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::AnyPool;

/// Which SQL dialect a database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL (production).
    Postgres,
    /// SQLite (the embedded default of `qyzar dev`).
    Sqlite,
}

/// A pool on the control-plane database.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

/// Errors opening or migrating the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names no supported database.
    #[error("unsupported database url scheme (use postgres:// or sqlite:)")]
    UnsupportedUrl,
    /// The driver failed.
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

macro_rules! migrations {
    ($dir:literal: $($version:literal => $name:literal),* $(,)?) => {
        &[$(($version, $name, include_str!(concat!("../migrations/", $dir, "/", $version, "_", $name, ".sql")))),*]
    };
}

const PG_MIGRATIONS: &[(&str, &str, &str)] = migrations!("postgres": "0001" => "accounts", "0002" => "auth", "0003" => "projects", "0004" => "billing", "0005" => "usage", "0006" => "analytics", "0007" => "engines");
const SQLITE_MIGRATIONS: &[(&str, &str, &str)] = migrations!("sqlite": "0001" => "accounts", "0002" => "auth", "0003" => "projects", "0004" => "billing", "0005" => "usage", "0006" => "analytics", "0007" => "engines");

fn migrator(backend: Backend) -> Migrator {
    let list = match backend {
        Backend::Postgres => PG_MIGRATIONS,
        Backend::Sqlite => SQLITE_MIGRATIONS,
    };
    let migrations = list
        .iter()
        .map(|(v, name, sql)| {
            let version: i64 = v.parse().unwrap_or_default();
            Migration::new(
                version,
                Cow::Borrowed(*name),
                MigrationType::Simple,
                Cow::Borrowed(*sql),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

impl Db {
    /// Connects to `url` (`postgres://…` or `sqlite:path?mode=rwc`) and applies
    /// every pending migration.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(DbError::UnsupportedUrl);
        };
        let opts = AnyConnectOptions::from_str(url)?;
        // SQLite allows one writer: a single connection avoids SQLITE_BUSY
        // under concurrent writes without giving up much on a dev machine.
        let max = if backend == Backend::Sqlite {
            1
        } else {
            max_connections
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .connect_with(opts)
            .await?;
        let db = Self { pool, backend };
        db.migrate().await?;
        Ok(db)
    }

    /// Applies every pending migration; applied ones are skipped, so this is
    /// safe at every start.
    pub async fn migrate(&self) -> Result<(), DbError> {
        migrator(self.backend).run(&self.pool).await?;
        Ok(())
    }

    /// The pool, for queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which dialect this database speaks.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A trivial round trip, for health checks.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}
