//! Where each projection stands, and waiting for one to catch up.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lectern_domain::Position;
use serde::Serialize;
use sqlx::PgPool;

/// A projection's checkpoint, state and lag.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProjectionStatus {
    /// The name shown to the user.
    pub name: String,
    /// idle, running, failed or rebuilding.
    pub status: String,
    /// The checkpoint, as a position token.
    #[schema(value_type = String)]
    pub position: Position,
    /// Events applied so far.
    pub events_applied: i64,
    /// Events in the log after the checkpoint (counted up to 100,001).
    pub lag_events: i64,
    /// The last error, if failing.
    pub last_error: Option<String>,
    /// When it last failed.
    pub last_error_at: Option<DateTime<Utc>>,
    /// The event it is stuck at.
    pub failing_position: Option<i64>,
    /// When a rebuild was asked for.
    pub rebuild_requested_at: Option<DateTime<Utc>>,
    /// When it was last rebuilt.
    pub rebuilt_at: Option<DateTime<Utc>>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// The status of every projection that has a checkpoint, by name.
pub async fn all(pool: &PgPool) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT c.name, c.status, c.last_tx::text::bigint AS "tx!", c.last_position, c.events_applied,
                c.last_error, c.last_error_at, c.failing_position, c.rebuild_requested_at, c.rebuilt_at,
                c.updated_at,
                (SELECT count(*) FROM (SELECT 1 FROM events e
                   WHERE (e.transaction_id, e.global_position) > (c.last_tx, c.last_position)
                   LIMIT 100001) behind) AS "lag!"
           FROM projection_checkpoints c
          ORDER BY c.name"#,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ProjectionStatus {
            name: r.name,
            status: r.status,
            position: Position {
                transaction_id: r.tx,
                global_position: r.last_position,
            },
            events_applied: r.events_applied,
            lag_events: r.lag,
            last_error: r.last_error,
            last_error_at: r.last_error_at,
            failing_position: r.failing_position,
            rebuild_requested_at: r.rebuild_requested_at,
            rebuilt_at: r.rebuilt_at,
            updated_at: r.updated_at,
        })
        .collect())
}

/// Wait until projection `name` has applied everything up to `position`, for
/// at most `bound`. Returns whether it got there.
pub async fn wait_for(
    pool: &PgPool,
    name: &str,
    position: Position,
    bound: Duration,
) -> Result<bool, sqlx::Error> {
    let deadline = Instant::now() + bound;
    let mut pause = Duration::from_millis(2);
    loop {
        let reached = sqlx::query_scalar!(
            r#"SELECT (last_tx, last_position) >= ($2::text::xid8, $3) AS "reached!"
                 FROM projection_checkpoints WHERE name = $1"#,
            name,
            position.transaction_id.to_string(),
            position.global_position,
        )
        .fetch_optional(pool)
        .await?;
        if reached == Some(true) {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
