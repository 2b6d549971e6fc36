//! A channel's history, read from the log itself: what a resuming client
//! missed. It never depends on a process's memory, so a resume works across
//! deploys, crashes and processes.

use lectern_domain::Position;
use lectern_projections::LogEvent;
use sqlx::{PgPool, Row};

use super::channels::{self, ChannelKey, Publication};

/// The channel's last offset (0 when its stream is empty).
pub async fn top(pool: &PgPool, key: ChannelKey) -> Result<u64, sqlx::Error> {
    let top: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(sequence), 0) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2",
    )
    .bind(key.kind.aggregate_type())
    .bind(key.id.to_string())
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(top).unwrap_or(0))
}

/// The channel's events with offsets in `(after, upto]`, in order. Every
/// event of a stream below its last sequence has committed (a stream's next
/// event is written by whoever read the one before), so the range has no
/// gaps.
pub async fn read(
    pool: &PgPool,
    key: ChannelKey,
    after: u64,
    upto: u64,
) -> Result<Vec<Publication>, sqlx::Error> {
    if upto <= after {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT event_id, sequence, event_type, event_version, payload, recorded_at
           FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 AND sequence <= $4
          ORDER BY sequence",
    )
    .bind(key.kind.aggregate_type())
    .bind(key.id.to_string())
    .bind(i64::try_from(after).unwrap_or(i64::MAX))
    .bind(i64::try_from(upto).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let event = LogEvent {
            event_id: row.try_get("event_id")?,
            position: Position {
                transaction_id: 0,
                global_position: 0,
            },
            aggregate_type: key.kind.aggregate_type().to_owned(),
            aggregate_id: key.id.to_string(),
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload: row.try_get("payload")?,
            metadata: serde_json::Value::Null,
            recorded_at: row.try_get("recorded_at")?,
        };
        if let Some(p) = channels::publication(&event) {
            out.push(p);
        }
    }
    Ok(out)
}
