//! The advisory lock that makes one runner per projection active in the
//! whole cluster. It is session-level: it goes when the connection goes, so
//! a dead process frees it and a standby takes over.

use sqlx::PgConnection;

/// First key of every projection's advisory lock; the second is the hash of
/// its name.
const LOCK_NAMESPACE: i32 = 0x4c_45_43; // "LEC"

fn lock_key(name: &str) -> String {
    format!("lectern.projection:{name}")
}

/// Try to take the projection's advisory lock on `conn` (session-level: it
/// goes when the connection goes, so a dead process frees it).
pub async fn try_lock(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
        .bind(LOCK_NAMESPACE)
        .bind(lock_key(name))
        .fetch_one(conn)
        .await
}

pub(super) async fn unlock(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_advisory_unlock($1, hashtext($2))")
        .bind(LOCK_NAMESPACE)
        .bind(lock_key(name))
        .fetch_one(conn)
        .await
}
