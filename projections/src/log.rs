//! Reading the event log in commit order without ever skipping an event.
//!
//! A `global_position` is drawn when a row is inserted but only becomes
//! visible when its transaction commits, so positions become visible out of
//! order. A reader that resumes after "the last position I saw" skips any
//! lower position that commits later. Instead we only read rows written by
//! transactions older than every transaction still running
//! (`pg_snapshot_xmin`), in `(transaction_id, global_position)` order, and
//! checkpoint that pair: no transaction can later commit behind it.
//! See shared/reference/event-store-anchors.md (b) and Emmett PR #336.

use chrono::{DateTime, Utc};
use lectern_domain::Position;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::projection::Interest;

/// An event as a projection sees it.
#[derive(Debug, Clone)]
pub struct LogEvent {
    /// The event id.
    pub event_id: Uuid,
    /// The position in the log.
    pub position: Position,
    /// The aggregate type.
    pub aggregate_type: String,
    /// The aggregate instance.
    pub aggregate_id: String,
    /// The event's sequence number in its stream.
    pub sequence: i64,
    /// The event type.
    pub event_type: String,
    /// The payload's schema version.
    pub event_version: String,
    /// The event payload.
    pub payload: Value,
    /// The event metadata.
    pub metadata: Value,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

impl LogEvent {
    /// A metadata field as a string, or "" when absent.
    pub fn meta(&self, key: &str) -> &str {
        self.metadata.get(key).and_then(Value::as_str).unwrap_or("")
    }
}

/// What every read of the log shares: the events after the pair `($1, $2)`
/// of transactions older than every running one, in log order, at most
/// `{limit}` (see [`limited`]).
///
/// Each bound sits in a subquery of its own, and the limit is a constant in
/// the text, so that PostgreSQL can plan each read once. A custom plan (the
/// bounds as constants) at the log's tip compares with a value beyond the
/// column's statistics, which the planner resolves by probing the index for
/// its actual highest entries; on a busy log those are the newest, many of
/// them not yet committed, and every read paid for it. Measured with
/// `lectern-bench webhooks` at 2,000/s (`pg_stat_statements`, 10 s): the
/// log tail's 4,046 header reads spent 494 ms planning and 99 ms running,
/// the runners' reads 260 ms planning. Behind subqueries the bounds are
/// unknown to the planner, a custom plan costs what the generic one does,
/// and after its first five runs a statement keeps the generic plan: an
/// index scan of `events_tx_position` that stops after `{limit}` rows. With
/// `LIMIT $3` instead, the generic plan would assume a tenth of the table
/// and never be preferred. Measured the same way since: the tail's and the
/// runners' reads are planned once per connection; the sealer's text reads
/// (ten a second) are still planned at every read, 0.2 ms each, for a reason
/// not yet found.
macro_rules! after {
    () => {
        "
  FROM events
 WHERE (transaction_id, global_position) > ((SELECT $1::text::xid8), (SELECT $2::bigint))
   AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY transaction_id, global_position
 LIMIT {limit}"
    };
}

/// `sql` reading at most `limit` events: one statement for each limit a
/// reader uses (a handful in a process, each prepared once per connection).
fn limited(sql: &str, limit: i64) -> String {
    sql.replace("{limit}", &limit.to_string())
}

/// Every event; `$3`, whether their payload and metadata are wanted
/// (without, they come back as JSON null). A reader of some aggregate types
/// reads [`READ_WANTED`] instead. `$3` too sits in a subquery: as a
/// constant, a custom plan would fold the `CASE` away and cost a little
/// less than the generic plan, enough to be preferred at every read.
const READ: &str = concat!(
    "
SELECT event_id, transaction_id::text::bigint AS tx, global_position, aggregate_type, aggregate_id,
       sequence, event_type, event_version,
       CASE WHEN (SELECT $3::bool) THEN payload END AS payload,
       CASE WHEN (SELECT $3::bool) THEN metadata END AS metadata,
       recorded_at",
    after!()
);

/// The same events as [`READ`], of which only those of the aggregate types
/// `$3` come back, and the last whatever its type (without its payload
/// unless wanted), so that the reader can move past the others; `scanned`
/// counts them all.
const READ_WANTED: &str = concat!(
    "
SELECT event_id, tx, global_position, aggregate_type, aggregate_id, sequence, event_type,
       event_version, payload, metadata, recorded_at, wanted, scanned
  FROM (SELECT e.*, lead(e.global_position) OVER (ORDER BY e.transaction_id, e.global_position) IS NULL AS last,
               count(*) OVER () AS scanned
          FROM (SELECT event_id, transaction_id, transaction_id::text::bigint AS tx, global_position,
                       aggregate_type, aggregate_id, sequence, event_type, event_version,
                       aggregate_type = ANY($3) AS wanted,
                       CASE WHEN $4 AND aggregate_type = ANY($3) THEN payload END AS payload,
                       CASE WHEN $4 AND aggregate_type = ANY($3) THEN metadata END AS metadata,
                       recorded_at",
    after!(),
    ") e) x
 WHERE wanted OR last
 ORDER BY tx, global_position"
);

/// The positions and aggregate types of the events [`READ`] reads.
const READ_HEADERS: &str = concat!(
    "SELECT transaction_id::text::bigint AS tx, global_position, aggregate_type",
    after!()
);

/// The events [`READ`] reads, their payload and metadata as text.
const READ_TEXT: &str = concat!(
    "SELECT transaction_id::text::bigint AS tx, global_position, event_id, aggregate_type,
       aggregate_id, sequence, event_type, event_version, recorded_at,
       payload::text AS payload, metadata::text AS metadata",
    after!()
);

/// One read of the log.
#[derive(Debug, Default)]
pub struct Read {
    /// The events read that the reader's interest names, in log order.
    pub events: Vec<LogEvent>,
    /// The position of the last event read, wanted or not: the reader has
    /// seen everything up to it.
    pub last: Option<Position>,
    /// How many events were read, wanted or not (1 for a stretch the
    /// process's log tail vouched for, which [`crate::Follower::read`]
    /// moves past without reading it).
    pub scanned: usize,
}

/// The next `limit` events after `after` that can never again be preceded by
/// a later commit. Only those `interest` names come back (with their payload
/// and metadata, when it reads them): a projection of a few aggregate types
/// is not sent every other event of a busy log, yet moves past them.
pub async fn read_after(
    conn: &mut PgConnection,
    after: Position,
    limit: i64,
    interest: Interest,
) -> Result<Read, sqlx::Error> {
    let (sql, query);
    if let Some(types) = interest.aggregate_types {
        sql = limited(READ_WANTED, limit);
        query = sqlx::query(&sql)
            .bind(after.transaction_id.to_string())
            .bind(after.global_position)
            .bind(types)
            .bind(interest.body);
    } else {
        sql = limited(READ, limit);
        query = sqlx::query(&sql)
            .bind(after.transaction_id.to_string())
            .bind(after.global_position)
            .bind(interest.body);
    }
    let rows = query.fetch_all(conn).await?;
    let filtered = interest.aggregate_types.is_some();
    let mut read = Read {
        events: Vec::with_capacity(rows.len()),
        last: None,
        scanned: if filtered { 0 } else { rows.len() },
    };
    for row in rows {
        let position = position_of(&row)?;
        read.last = Some(position);
        if filtered {
            read.scanned = usize::try_from(row.try_get::<i64, _>("scanned")?).unwrap_or(0);
            if !row.try_get::<bool, _>("wanted")? {
                continue;
            }
        }
        read.events.push(LogEvent {
            event_id: row.try_get("event_id")?,
            position,
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload: row
                .try_get::<Option<Value>, _>("payload")?
                .unwrap_or_default(),
            metadata: row
                .try_get::<Option<Value>, _>("metadata")?
                .unwrap_or_default(),
            recorded_at: row.try_get("recorded_at")?,
        });
    }
    Ok(read)
}

/// The positions and aggregate types of the next `limit` events after
/// `after` that can never again be preceded by a later commit (the same
/// predicate and order as [`read_after`]): what a [`crate::follow::Tail`]
/// reads.
pub async fn read_headers_after(
    conn: &mut PgConnection,
    after: Position,
    limit: i64,
) -> Result<Vec<(Position, String)>, sqlx::Error> {
    rows_after(conn, READ_HEADERS, after, limit)
        .await?
        .iter()
        .map(|r| Ok((position_of(r)?, r.try_get("aggregate_type")?)))
        .collect()
}

/// The rows of `sql` (a read with no parameters but its bounds) after
/// `after`, at most `limit`.
async fn rows_after(
    conn: &mut PgConnection,
    sql: &str,
    after: Position,
    limit: i64,
) -> Result<Vec<PgRow>, sqlx::Error> {
    sqlx::query(&limited(sql, limit))
        .bind(after.transaction_id.to_string())
        .bind(after.global_position)
        .fetch_all(conn)
        .await
}

/// The position of a row read with the transaction id as `tx`.
fn position_of(row: &PgRow) -> Result<Position, sqlx::Error> {
    Ok(Position {
        transaction_id: row.try_get("tx")?,
        global_position: row.try_get("global_position")?,
    })
}

/// The highest global position written so far (0 for an empty log).
pub async fn head(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT coalesce(max(global_position), 0) FROM events")
        .fetch_one(conn)
        .await
}

/// An event with its payload and metadata as PostgreSQL's text of the jsonb:
/// the bytes the ledger's envelope commits to (see `lectern_ledger::envelope`).
#[derive(Debug, Clone)]
pub struct TextEvent {
    /// The position in the log.
    pub position: Position,
    /// The event id.
    pub event_id: Uuid,
    /// The aggregate type.
    pub aggregate_type: String,
    /// The aggregate instance.
    pub aggregate_id: String,
    /// The event's sequence number in its stream.
    pub sequence: i64,
    /// The event type.
    pub event_type: String,
    /// The payload's schema version.
    pub event_version: String,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// `payload::text`.
    pub payload: String,
    /// `metadata::text`.
    pub metadata: String,
}

/// A [`TextEvent`] from a row of a checked query that selects the event's
/// columns under their own names, the transaction id as `tx` and the payload
/// and metadata as text.
macro_rules! text_event {
    ($r:expr) => {
        $crate::log::TextEvent {
            position: lectern_domain::Position {
                transaction_id: $r.tx,
                global_position: $r.global_position,
            },
            event_id: $r.event_id,
            aggregate_type: $r.aggregate_type,
            aggregate_id: $r.aggregate_id,
            sequence: $r.sequence,
            event_type: $r.event_type,
            event_version: $r.event_version,
            recorded_at: $r.recorded_at,
            payload: $r.payload,
            metadata: $r.metadata,
        }
    };
}
pub(crate) use text_event;

/// The next `limit` events after `after` that can never again be preceded by
/// a later commit (the same predicate and order as [`read_after`]), with
/// their payload and metadata as text.
pub async fn read_text_after(
    conn: &mut PgConnection,
    after: Position,
    limit: i64,
) -> Result<Vec<TextEvent>, sqlx::Error> {
    rows_after(conn, READ_TEXT, after, limit)
        .await?
        .iter()
        .map(|r| {
            Ok(TextEvent {
                position: position_of(r)?,
                event_id: r.try_get("event_id")?,
                aggregate_type: r.try_get("aggregate_type")?,
                aggregate_id: r.try_get("aggregate_id")?,
                sequence: r.try_get("sequence")?,
                event_type: r.try_get("event_type")?,
                event_version: r.try_get("event_version")?,
                recorded_at: r.try_get("recorded_at")?,
                payload: r.try_get("payload")?,
                metadata: r.try_get("metadata")?,
            })
        })
        .collect()
}
