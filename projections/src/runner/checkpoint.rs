//! A runner's row in `projection_checkpoints`: its position pair, status,
//! last error and rebuild request.

use lectern_domain::Position;
use sqlx::{PgConnection, PgExecutor, PgPool};

use crate::follow::{EVENTS_CHANNEL, REBUILD_PAYLOAD};

pub(super) async fn load_checkpoint(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Position, sqlx::Error> {
    sqlx::query!(
        "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
        name,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query_as!(
        Position,
        r#"SELECT last_tx::text::bigint AS "transaction_id!", last_position AS global_position
             FROM projection_checkpoints WHERE name = $1"#,
        name,
    )
    .fetch_one(conn)
    .await
}

/// Whether a rebuild of `name` was asked for and has not finished.
pub async fn rebuild_requested<'c>(
    conn: impl PgExecutor<'c>,
    name: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT rebuild_requested_at IS NOT NULL AS "requested!" FROM projection_checkpoints WHERE name = $1"#,
        name,
    )
    .fetch_optional(conn)
    .await
    .map(|r| r.unwrap_or(false))
}

/// Move `name`'s checkpoint to `position` with no events applied: the
/// runner has read past events its projection does not read.
pub(super) async fn save_position(
    conn: &mut PgConnection,
    name: &str,
    position: Position,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE projection_checkpoints
            SET last_tx = $2::text::xid8, last_position = $3, status = 'running',
                last_error = NULL, failing_position = NULL, updated_at = now()
          WHERE name = $1",
        name,
        position.transaction_id.to_string(),
        position.global_position,
    )
    .execute(conn)
    .await
    .map(|_| ())
}

pub(super) async fn mark_running(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE projection_checkpoints SET status = 'running', updated_at = now()
          WHERE name = $1 AND status <> 'running'",
        name,
    )
    .execute(conn)
    .await
    .map(|_| ())
}

pub(super) async fn record_failure(
    conn: &mut PgConnection,
    name: &str,
    position: i64,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE projection_checkpoints
            SET status = 'failed', last_error = $2, last_error_at = now(), failing_position = $3, updated_at = now()
          WHERE name = $1",
        name,
        error,
        position,
    )
    .execute(conn)
    .await
    .map(|_| ())
}

/// Ask for `name` to be rebuilt from position zero, creating its checkpoint
/// if no runner has yet. The active runner, in whichever process holds the
/// projection's lock, picks it up. The caller checks that `name` is a
/// projection.
pub async fn request_rebuild(pool: &PgPool, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO projection_checkpoints (name, rebuild_requested_at) VALUES ($1, now())
         ON CONFLICT (name) DO UPDATE SET rebuild_requested_at = now(), updated_at = now()",
        name,
    )
    .execute(pool)
    .await?;
    sqlx::query!("SELECT pg_notify($1, $2)", EVENTS_CHANNEL, REBUILD_PAYLOAD)
        .execute(pool)
        .await?;
    Ok(())
}
