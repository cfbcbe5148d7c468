//! sqlx smoke tests: migrations apply, a row round-trips, constraints hold,
//! on SQLite and on a real PostgreSQL.

use sqlx::Row;

use crate::helpers::{Backend, TestDb};

async fn smoke(backend: Backend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let pool = t.db.pool();
    sqlx::query("INSERT INTO users (id, email, password_hash, email_verified, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind("usr_AAAAAAAAAAAAAAAAAAAAAA")
        .bind("ann@example.com")
        .bind("$argon2id$placeholder-hash-for-smoke-test")
        .bind(false)
        .bind(1_700_000_000_000_i64)
        .execute(pool)
        .await
        .expect("insert");
    let row = sqlx::query("SELECT email, created_at FROM users WHERE id = $1")
        .bind("usr_AAAAAAAAAAAAAAAAAAAAAA")
        .fetch_one(pool)
        .await
        .expect("select");
    assert_eq!(row.get::<String, _>(0), "ann@example.com");
    assert_eq!(row.get::<i64, _>(1), 1_700_000_000_000);
    // The unique email index is the membership check registration relies on.
    let dup = sqlx::query("INSERT INTO users (id, email, created_at) VALUES ($1, $2, $3)")
        .bind("usr_BBBBBBBBBBBBBBBBBBBBBB")
        .bind("ann@example.com")
        .bind(1_i64)
        .execute(pool)
        .await;
    assert!(
        dup.is_err(),
        "a second account with the same email must be refused"
    );
    // Migrating again is a no-op, not an error.
    let again = t.db.migrate().await;
    assert!(again.is_ok(), "{again:?}");
    t.cleanup().await;
}

#[tokio::test]
async fn sqlx_smoke_on_sqlite() {
    smoke(Backend::Sqlite).await;
}

#[tokio::test]
async fn sqlx_smoke_on_postgres() {
    smoke(Backend::Postgres).await;
}
