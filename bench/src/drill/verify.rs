//! After a drill: is every acknowledged command in the log exactly once,
//! and do the read models say what the log says?

use std::collections::HashMap;
use std::time::Duration;

use anyhow::ensure;
use serde::Serialize;
use sqlx::PgPool;

use super::load::Tally;

/// Wait until every projection has applied the whole log.
pub async fn settle(pool: &PgPool, bound: Duration) -> anyhow::Result<()> {
    let head: Option<(i64, i64)> = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position FROM events ORDER BY global_position DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    let Some((tx, pos)) = head else {
        return Ok(());
    };
    let at = lectern_domain::Position {
        transaction_id: tx,
        global_position: pos,
    };
    for p in lectern_projections::all() {
        let caught_up = lectern_projections::status::wait_for(pool, p.name(), at, bound).await?;
        ensure!(
            caught_up,
            "projection {} did not catch up within {bound:?}",
            p.name()
        );
    }
    Ok(())
}

/// What the log and the read models hold against what was acknowledged.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Acknowledged commands: board ops, chat messages, new lessons.
    pub acknowledged: usize,
    /// Acknowledged commands with no event in the log.
    pub lost: usize,
    /// Commands (acknowledged or not) whose event is in the log more than
    /// once.
    pub duplicated: usize,
    /// Rows a read model has that the log does not, or lacks that it has.
    pub read_model_mismatches: i64,
}

impl Verdict {
    /// Nothing lost, nothing twice, read models true to the log.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.read_model_mismatches == 0
    }
}

/// Events per command identity, from the log.
async fn counts(pool: &PgPool, sql: &str) -> anyhow::Result<HashMap<String, i64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(sql).fetch_all(pool).await?;
    Ok(rows.into_iter().collect())
}

/// Check the log and the read models against `tally`, once the projections
/// have caught up.
pub async fn verify(pool: &PgPool, tally: &Tally) -> anyhow::Result<Verdict> {
    settle(pool, Duration::from_secs(120)).await?;
    let ops = counts(
        pool,
        "SELECT payload->'OpApplied'->>'client_id' || '/' || (payload->'OpApplied'->>'op_id'), count(*)
           FROM events WHERE aggregate_type = 'Board' AND event_type = 'OpApplied' GROUP BY 1",
    )
    .await?;
    let messages = counts(
        pool,
        "SELECT payload->'MessageSent'->>'client_message_id', count(*)
           FROM events WHERE aggregate_type = 'Channel' AND event_type = 'MessageSent' GROUP BY 1",
    )
    .await?;
    let lessons = counts(
        pool,
        "SELECT payload->'LessonScheduled'->'details'->>'title', count(*)
           FROM events WHERE aggregate_type = 'Lesson' AND event_type = 'LessonScheduled' GROUP BY 1",
    )
    .await?;
    let lesson_ids: Vec<(String, String)> = sqlx::query_as(
        "SELECT payload->'LessonScheduled'->'details'->>'title', aggregate_id
           FROM events WHERE aggregate_type = 'Lesson' AND event_type = 'LessonScheduled'",
    )
    .fetch_all(pool)
    .await?;
    let lesson_ids: HashMap<String, String> = lesson_ids.into_iter().collect();

    let stored = |map: &HashMap<String, i64>, key: &str| map.get(key).copied().unwrap_or(0);
    let lost = tally
        .ops
        .iter()
        .filter(|(c, o)| stored(&ops, &format!("{c}/{o}")) == 0)
        .count()
        + tally
            .messages
            .iter()
            .filter(|m| stored(&messages, m) == 0)
            .count()
        + tally
            .lessons
            .iter()
            // Stored, and under the id the client was given.
            .filter(|(title, id)| lesson_ids.get(title) != Some(&id.to_string()))
            .count();
    let duplicated = [&ops, &messages, &lessons]
        .iter()
        .map(|m| m.values().filter(|n| **n > 1).count())
        .sum();

    // Each read model row against the event it comes from, both ways.
    let mismatches: i64 = sqlx::query_scalar(
        "WITH
           op_events AS (SELECT aggregate_id::uuid AS board, (payload->'OpApplied'->>'server_version')::bigint AS v,
                                payload->'OpApplied'->>'op_id' AS op
                           FROM events WHERE aggregate_type = 'Board' AND event_type = 'OpApplied'),
           op_rows AS (SELECT board_id, server_version, op_id FROM board_ops),
           msg_events AS (SELECT aggregate_id::uuid AS lesson, (payload->'MessageSent'->>'seq')::bigint AS seq,
                                 payload->'MessageSent'->>'client_message_id' AS cid
                            FROM events WHERE aggregate_type = 'Channel' AND event_type = 'MessageSent'),
           msg_rows AS (SELECT lesson_id, seq, client_message_id FROM messages),
           lesson_events AS (SELECT aggregate_id::uuid AS id FROM events
                              WHERE aggregate_type = 'Lesson' AND event_type = 'LessonScheduled'),
           lesson_rows AS (SELECT id FROM lessons)
         SELECT (SELECT count(*) FROM (SELECT * FROM op_events EXCEPT SELECT * FROM op_rows) a)
              + (SELECT count(*) FROM (SELECT * FROM op_rows EXCEPT SELECT * FROM op_events) b)
              + (SELECT count(*) FROM (SELECT * FROM msg_events EXCEPT SELECT * FROM msg_rows) c)
              + (SELECT count(*) FROM (SELECT * FROM msg_rows EXCEPT SELECT * FROM msg_events) d)
              + (SELECT count(*) FROM (SELECT * FROM lesson_events EXCEPT SELECT * FROM lesson_rows) e)
              + (SELECT count(*) FROM (SELECT * FROM lesson_rows EXCEPT SELECT * FROM lesson_events) f)",
    )
    .fetch_one(pool)
    .await?;
    Ok(Verdict {
        acknowledged: tally.acknowledged(),
        lost,
        duplicated,
        read_model_mismatches: mismatches,
    })
}
