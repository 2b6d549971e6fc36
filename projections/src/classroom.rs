//! The classroom read models.
//!
//! - `lessons`: `lessons` and `enrollments`, from the Lesson streams;
//! - `boards`: `boards`, `board_elements` (each element's contents) and
//!   `board_ops` (the applied-operation log, with what each op changed, for
//!   undo, redo and reconnecting clients), from the Board streams;
//! - `chat`: `messages` and one `deliveries` row per recipient, from the
//!   Channel and Inbox streams.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lectern_domain::classroom::board::{edit_value, plan, Change, Step};
use lectern_domain::classroom::inbox::AckStatus;
use lectern_domain::classroom::{BoardEvent, ChannelEvent, InboxEvent, LessonEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::log::LogEvent;
use crate::projection::{Projection, ProjectionError, Tables};

fn decode<T: DeserializeOwned>(event: &LogEvent) -> Result<T, ProjectionError> {
    serde_json::from_value(event.payload.clone())
        .map_err(|e| ProjectionError::Invalid(format!("{} payload: {e}", event.event_type)))
}

fn uuid_of(event: &LogEvent) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(&event.aggregate_id)
        .map_err(|e| ProjectionError::Invalid(format!("aggregate id: {e}")))
}

/// Keeps `lessons` and `enrollments`.
pub struct LessonsProjection;

const LESSONS: &str = "lessons";
const ENROLLMENTS: &str = "enrollments";

#[async_trait]
impl Projection for LessonsProjection {
    fn name(&self) -> &'static str {
        "lessons"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[LESSONS, ENROLLMENTS]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        t: &Tables,
        event: &LogEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != "Lesson" {
            return Ok(());
        }
        let id = uuid_of(event)?;
        let (lessons, enrollments) = (t.get(LESSONS), t.get(ENROLLMENTS));
        let at = event.recorded_at;
        let status = |s: &str| {
            format!(
                "UPDATE {lessons} SET status = '{s}', version = $2, updated_at = $3 WHERE id = $1"
            )
        };
        let sql = match decode::<LessonEvent>(event)? {
            LessonEvent::LessonScheduled { tutor_id, details } => {
                sqlx::query(&format!(
                    "INSERT INTO {lessons} (id, tutor_id, title, description, starts_at, duration_minutes, capacity,
                                            price_amount_minor, price_currency, status, created_at, updated_at, version)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'scheduled', $10, $10, $11)"
                ))
                .bind(id)
                .bind(tutor_id)
                .bind(&details.title)
                .bind(&details.description)
                .bind(details.starts_at)
                .bind(i32::try_from(details.duration_minutes).unwrap_or(i32::MAX))
                .bind(i32::try_from(details.capacity).unwrap_or(i32::MAX))
                .bind(details.price.amount_minor)
                .bind(&details.price.currency)
                .bind(at)
                .bind(event.sequence)
                .execute(&mut *conn)
                .await?;
                return Ok(());
            }
            LessonEvent::LessonUpdated { changes } => {
                sqlx::query(&format!(
                    "UPDATE {lessons} SET title = coalesce($4, title), description = coalesce($5, description),
                            starts_at = coalesce($6, starts_at), duration_minutes = coalesce($7, duration_minutes),
                            capacity = coalesce($8, capacity), price_amount_minor = coalesce($9, price_amount_minor),
                            price_currency = coalesce($10, price_currency), version = $2, updated_at = $3
                      WHERE id = $1"
                ))
                .bind(id)
                .bind(event.sequence)
                .bind(at)
                .bind(changes.title)
                .bind(changes.description)
                .bind(changes.starts_at)
                .bind(changes.duration_minutes.map(|v| i32::try_from(v).unwrap_or(i32::MAX)))
                .bind(changes.capacity.map(|v| i32::try_from(v).unwrap_or(i32::MAX)))
                .bind(changes.price.as_ref().map(|p| p.amount_minor))
                .bind(changes.price.map(|p| p.currency))
                .execute(&mut *conn)
                .await?;
                return Ok(());
            }
            LessonEvent::LessonStarted {} => status("live"),
            LessonEvent::LessonEnded {} => status("ended"),
            LessonEvent::LessonCancelled { .. } => status("cancelled"),
            LessonEvent::StudentEnrolled { student_id, by } => {
                sqlx::query(&format!(
                    "INSERT INTO {enrollments} (lesson_id, student_id, enrolled_by, enrolled_at) VALUES ($1, $2, $3, $4)"
                ))
                .bind(id)
                .bind(student_id)
                .bind(by)
                .bind(at)
                .execute(&mut *conn)
                .await?;
                format!("UPDATE {lessons} SET enrolled_count = enrolled_count + 1, version = $2, updated_at = $3 WHERE id = $1")
            }
            LessonEvent::StudentUnenrolled { student_id, .. } => {
                sqlx::query(&format!(
                    "DELETE FROM {enrollments} WHERE lesson_id = $1 AND student_id = $2"
                ))
                .bind(id)
                .bind(student_id)
                .execute(&mut *conn)
                .await?;
                format!("UPDATE {lessons} SET enrolled_count = enrolled_count - 1, version = $2, updated_at = $3 WHERE id = $1")
            }
        };
        sqlx::query(&sql)
            .bind(id)
            .bind(event.sequence)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// Keeps `boards`, `board_elements` and `board_ops`.
pub struct BoardsProjection;

const BOARDS: &str = "boards";
const ELEMENTS: &str = "board_elements";
const OPS: &str = "board_ops";

#[async_trait]
impl Projection for BoardsProjection {
    fn name(&self) -> &'static str {
        "boards"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[BOARDS, ELEMENTS, OPS]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        t: &Tables,
        event: &LogEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != "Board" {
            return Ok(());
        }
        let board = uuid_of(event)?;
        let (boards, elements, ops) = (t.get(BOARDS), t.get(ELEMENTS), t.get(OPS));
        match decode::<BoardEvent>(event)? {
            BoardEvent::RosterSynced { .. } => {
                sqlx::query(&format!(
                    "INSERT INTO {boards} (id, updated_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING"
                ))
                .bind(board)
                .bind(event.recorded_at)
                .execute(&mut *conn)
                .await?;
            }
            BoardEvent::PolicyChanged { policy } => {
                let policy = serde_json::to_value(policy)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                sqlx::query(&format!(
                    "UPDATE {boards} SET policy = $2, updated_at = $3 WHERE id = $1"
                ))
                .bind(board)
                .bind(policy)
                .bind(event.recorded_at)
                .execute(&mut *conn)
                .await?;
            }
            BoardEvent::OpRejected { .. } | BoardEvent::OpDuplicate { .. } => {}
            BoardEvent::OpApplied {
                client_id,
                op_id,
                user_id,
                kind,
                element_id,
                data,
                client_lamport,
                lamport,
                server_version,
                target_version,
            } => {
                let version = i64::try_from(server_version).unwrap_or(i64::MAX);
                let target: Option<Vec<Change>> = match target_version {
                    Some(v) => {
                        let row: Option<Value> = sqlx::query_scalar(&format!(
                            "SELECT changes FROM {ops} WHERE board_id = $1 AND server_version = $2"
                        ))
                        .bind(board)
                        .bind(i64::try_from(v).unwrap_or(i64::MAX))
                        .fetch_optional(&mut *conn)
                        .await?;
                        let changes = row.ok_or_else(|| {
                            ProjectionError::Invalid(format!(
                                "undo/redo target {v} is not in the op log"
                            ))
                        })?;
                        Some(serde_json::from_value(changes).map_err(|e| {
                            ProjectionError::Invalid(format!("changes of op {v}: {e}"))
                        })?)
                    }
                    None => None,
                };
                let steps = plan(kind, element_id.as_deref(), &data, target.as_deref());
                let mut changes = Vec::new();
                if steps.iter().any(|s| matches!(s, Step::ClearAll)) {
                    sqlx::query(&format!("DELETE FROM {elements} WHERE board_id = $1"))
                        .bind(board)
                        .execute(&mut *conn)
                        .await?;
                } else {
                    let ids: Vec<&str> = steps
                        .iter()
                        .filter_map(|s| match s {
                            Step::Edit(e) => Some(e.element_id),
                            Step::Set(id, _) => Some(*id),
                            Step::ClearAll => None,
                        })
                        .collect();
                    let rows = sqlx::query(&format!(
                        "SELECT element_id, data FROM {elements} WHERE board_id = $1 AND element_id = ANY($2)"
                    ))
                    .bind(board)
                    .bind(&ids)
                    .fetch_all(&mut *conn)
                    .await?;
                    let mut current: HashMap<String, Option<Value>> = HashMap::new();
                    for row in rows {
                        current.insert(row.try_get("element_id")?, Some(row.try_get("data")?));
                    }
                    for step in &steps {
                        let (id, after) = match step {
                            Step::Edit(e) => {
                                let before = current.get(e.element_id).cloned().flatten();
                                (e.element_id, edit_value(e.kind, before.as_ref(), e.data))
                            }
                            Step::Set(id, v) => (*id, v.cloned()),
                            Step::ClearAll => continue,
                        };
                        let before = current.insert(id.to_owned(), after.clone()).flatten();
                        changes.push(Change {
                            element_id: id.to_owned(),
                            before,
                            after,
                        });
                    }
                    let (mut set_ids, mut set_values, mut gone) =
                        (Vec::new(), Vec::new(), Vec::new());
                    for (id, value) in current {
                        match value {
                            Some(v) => {
                                set_ids.push(id);
                                set_values.push(v);
                            }
                            None => gone.push(id),
                        }
                    }
                    sqlx::query(&format!(
                        "WITH gone AS (DELETE FROM {elements} WHERE board_id = $1 AND element_id = ANY($4))
                         INSERT INTO {elements} (board_id, element_id, data, updated_version)
                         SELECT $1, u.e, u.d, $5 FROM unnest($2::text[], $3::jsonb[]) AS u(e, d)
                         ON CONFLICT (board_id, element_id)
                         DO UPDATE SET data = EXCLUDED.data, updated_version = EXCLUDED.updated_version"
                    ))
                    .bind(board)
                    .bind(&set_ids)
                    .bind(&set_values)
                    .bind(&gone)
                    .bind(version)
                    .execute(&mut *conn)
                    .await?;
                }
                let changes = serde_json::to_value(&changes)
                    .map_err(|e| ProjectionError::Invalid(e.to_string()))?;
                sqlx::query(&format!(
                    "WITH op AS (
                        INSERT INTO {ops} (board_id, server_version, client_id, op_id, user_id, kind, element_id, data,
                                           client_lamport, lamport, target_version, changes, recorded_at)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13))
                     UPDATE {boards} SET version = $2, lamport = $10, updated_at = $13 WHERE id = $1"
                ))
                .bind(board)
                .bind(version)
                .bind(client_id)
                .bind(op_id)
                .bind(user_id)
                .bind(kind.as_str())
                .bind(element_id)
                .bind(data)
                .bind(i64::try_from(client_lamport).unwrap_or(i64::MAX))
                .bind(i64::try_from(lamport).unwrap_or(i64::MAX))
                .bind(target_version.map(|v| i64::try_from(v).unwrap_or(i64::MAX)))
                .bind(changes)
                .bind(event.recorded_at)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }
}

/// Keeps `messages` and `deliveries`.
pub struct ChatProjection;

const MESSAGES: &str = "messages";
const DELIVERIES: &str = "deliveries";

#[async_trait]
impl Projection for ChatProjection {
    fn name(&self) -> &'static str {
        "chat"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[MESSAGES, DELIVERIES]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        t: &Tables,
        event: &LogEvent,
    ) -> Result<(), ProjectionError> {
        let (messages, deliveries) = (t.get(MESSAGES), t.get(DELIVERIES));
        match event.aggregate_type.as_str() {
            "Channel" => {
                let ChannelEvent::MessageSent {
                    message_id,
                    seq,
                    sender_id,
                    client_message_id,
                    text,
                    sent_at,
                    recipients,
                } = decode(event)?
                else {
                    return Ok(());
                };
                let lesson = uuid_of(event)?;
                let seq = i64::try_from(seq).unwrap_or(i64::MAX);
                sqlx::query(&format!(
                    "WITH d AS (
                        INSERT INTO {deliveries} (recipient_id, lesson_id, seq, status, sent_at, updated_at)
                        SELECT r, $1, $2, 'sent', $7, $7 FROM unnest($8::uuid[]) AS r)
                     INSERT INTO {messages} (lesson_id, seq, message_id, sender_id, client_message_id, text, sent_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ))
                .bind(lesson)
                .bind(seq)
                .bind(message_id)
                .bind(sender_id)
                .bind(client_message_id)
                .bind(text)
                .bind(sent_at)
                .bind(recipients)
                .execute(&mut *conn)
                .await?;
            }
            "Inbox" => {
                let (sql, lesson, recipient, seq) = match decode(event)? {
                    InboxEvent::DeliveriesAcknowledged {
                        lesson_id,
                        recipient_id,
                        up_to_seq,
                        status,
                    } => {
                        let from = match status {
                            AckStatus::Delivered => "('sent')",
                            AckStatus::Read => "('sent', 'delivered')",
                        };
                        (
                            format!(
                                "UPDATE {deliveries} SET status = '{}', updated_at = $4
                                  WHERE recipient_id = $1 AND lesson_id = $2 AND seq <= $3 AND status IN {from}",
                                status.as_str()
                            ),
                            lesson_id,
                            recipient_id,
                            up_to_seq,
                        )
                    }
                    InboxEvent::DeliveryExpired {
                        lesson_id,
                        recipient_id,
                        seq,
                    } => (
                        format!(
                            "UPDATE {deliveries} SET status = 'expired', updated_at = $4
                              WHERE recipient_id = $1 AND lesson_id = $2 AND seq = $3 AND status = 'sent'"
                        ),
                        lesson_id,
                        recipient_id,
                        seq,
                    ),
                };
                sqlx::query(&sql)
                    .bind(recipient)
                    .bind(lesson)
                    .bind(i64::try_from(seq).unwrap_or(i64::MAX))
                    .bind(event.recorded_at)
                    .execute(&mut *conn)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

// ---- Queries -------------------------------------------------------------

/// A lesson as listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LessonRow {
    pub id: Uuid,
    pub tutor_id: Uuid,
    pub title: String,
    pub description: String,
    pub starts_at: DateTime<Utc>,
    pub duration_minutes: i32,
    pub capacity: i32,
    pub price: PriceRow,
    /// `scheduled`, `live`, `ended` or `cancelled`.
    pub status: String,
    pub enrolled_count: i32,
    pub seats_left: i32,
    /// `upcoming`, `live` or `past`, from the status and the clock.
    pub timing: String,
    /// The lesson's whiteboard (`/api/v1/boards/{board_id}`).
    pub board_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub version: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PriceRow {
    pub amount_minor: i64,
    pub currency: String,
}

const LESSON_COLUMNS: &str =
    "l.id, l.tutor_id, l.title, l.description, l.starts_at, l.duration_minutes, l.capacity,
    l.price_amount_minor, l.price_currency, l.status, l.enrolled_count, l.created_at, l.version";

fn lesson_row(row: &sqlx::postgres::PgRow, now: DateTime<Utc>) -> Result<LessonRow, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let starts_at: DateTime<Utc> = row.try_get("starts_at")?;
    let duration: i32 = row.try_get("duration_minutes")?;
    let capacity: i32 = row.try_get("capacity")?;
    let enrolled: i32 = row.try_get("enrolled_count")?;
    let timing = match status.as_str() {
        "live" => "live",
        "ended" | "cancelled" => "past",
        _ if now < starts_at + chrono::Duration::minutes(i64::from(duration)) => "upcoming",
        _ => "past",
    };
    let id: Uuid = row.try_get("id")?;
    Ok(LessonRow {
        id,
        tutor_id: row.try_get("tutor_id")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        starts_at,
        duration_minutes: duration,
        capacity,
        price: PriceRow {
            amount_minor: row.try_get("price_amount_minor")?,
            currency: row.try_get("price_currency")?,
        },
        status,
        enrolled_count: enrolled,
        seats_left: (capacity - enrolled).max(0),
        timing: timing.to_owned(),
        board_id: id,
        created_at: row.try_get("created_at")?,
        version: row.try_get("version")?,
    })
}

/// One lesson.
pub async fn lesson(pool: &PgPool, id: Uuid) -> Result<Option<LessonRow>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {LESSON_COLUMNS} FROM lessons l WHERE l.id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let now = Utc::now();
    row.map(|r| lesson_row(&r, now)).transpose()
}

/// The students enrolled in a lesson, in enrolment order.
pub async fn enrolled(pool: &PgPool, lesson: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT student_id FROM enrollments WHERE lesson_id = $1 ORDER BY enrolled_at, student_id",
    )
    .bind(lesson)
    .fetch_all(pool)
    .await
}

/// Filters of the lesson list.
#[derive(Debug, Clone, Default)]
pub struct LessonFilter {
    pub tutor_id: Option<Uuid>,
    pub status: Option<String>,
    pub starts_from: Option<DateTime<Utc>>,
    pub starts_before: Option<DateTime<Utc>>,
    /// Lessons this user teaches or is enrolled in.
    pub mine: Option<Uuid>,
}

/// Lessons in `(starts_at, id)` order after `after`, keyset-paged; one more
/// row than `limit` is fetched to tell whether there is more.
pub async fn lessons_page(
    pool: &PgPool,
    filter: &LessonFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: u32,
) -> Result<(Vec<LessonRow>, bool), sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {LESSON_COLUMNS} FROM lessons l
          WHERE ($1::uuid IS NULL OR l.tutor_id = $1)
            AND ($2::text IS NULL OR l.status = $2)
            AND ($3::timestamptz IS NULL OR l.starts_at >= $3)
            AND ($4::timestamptz IS NULL OR l.starts_at < $4)
            AND ($5::uuid IS NULL OR l.tutor_id = $5
                 OR EXISTS (SELECT 1 FROM enrollments e WHERE e.lesson_id = l.id AND e.student_id = $5))
            AND ($6::timestamptz IS NULL OR (l.starts_at, l.id) > ($6, $7))
          ORDER BY l.starts_at, l.id
          LIMIT $8"
    ))
    .bind(filter.tutor_id)
    .bind(&filter.status)
    .bind(filter.starts_from)
    .bind(filter.starts_before)
    .bind(filter.mine)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let now = Utc::now();
    let mut out = rows
        .iter()
        .map(|r| lesson_row(r, now))
        .collect::<Result<Vec<_>, _>>()?;
    let more = out.len() > limit as usize;
    out.truncate(limit as usize);
    Ok((out, more))
}

/// A board as its projection holds it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BoardRow {
    pub id: Uuid,
    /// `last_write_wins`, `first_write_wins` or `reject`.
    pub policy: String,
    /// The `server_version` of the last applied operation.
    pub version: i64,
    pub lamport: i64,
    /// SHA-256 (hex) over the elements in id order: each id, a NUL byte, the
    /// element as canonical JSON (members sorted), a newline.
    pub checksum: String,
    #[schema(value_type = Object)]
    pub elements: serde_json::Map<String, Value>,
}

/// A board with its elements, read in one snapshot.
pub async fn board(pool: &PgPool, id: Uuid) -> Result<Option<BoardRow>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let Some(head) = sqlx::query("SELECT policy, version, lamport FROM boards WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
    else {
        return Ok(None);
    };
    let rows = sqlx::query(
        "SELECT element_id, data FROM board_elements WHERE board_id = $1 ORDER BY element_id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut elements = serde_json::Map::new();
    for row in rows {
        elements.insert(row.try_get("element_id")?, row.try_get("data")?);
    }
    let checksum =
        lectern_domain::classroom::board::checksum(elements.iter().map(|(k, v)| (k.as_str(), v)));
    Ok(Some(BoardRow {
        id,
        policy: head.try_get("policy")?,
        version: head.try_get("version")?,
        lamport: head.try_get("lamport")?,
        checksum,
        elements,
    }))
}

/// An applied operation, as reconnecting clients fetch it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BoardOpRow {
    pub server_version: i64,
    pub lamport: i64,
    pub client_id: String,
    pub op_id: String,
    pub user_id: Uuid,
    pub kind: String,
    pub element_id: Option<String>,
    #[schema(value_type = Object)]
    pub data: Value,
    /// For undo and redo: the operation undone or redone.
    pub target_version: Option<i64>,
    pub recorded_at: DateTime<Utc>,
}

/// Operations after `since_version`, in order; one more than `limit` is
/// fetched to tell whether there is more.
pub async fn board_ops(
    pool: &PgPool,
    board: Uuid,
    since_version: i64,
    limit: u32,
) -> Result<(Vec<BoardOpRow>, bool), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT server_version, lamport, client_id, op_id, user_id, kind, element_id, data, target_version, recorded_at
           FROM board_ops WHERE board_id = $1 AND server_version > $2 ORDER BY server_version LIMIT $3",
    )
    .bind(board)
    .bind(since_version)
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            Ok(BoardOpRow {
                server_version: r.try_get("server_version")?,
                lamport: r.try_get("lamport")?,
                client_id: r.try_get("client_id")?,
                op_id: r.try_get("op_id")?,
                user_id: r.try_get("user_id")?,
                kind: r.try_get("kind")?,
                element_id: r.try_get("element_id")?,
                data: r.try_get("data")?,
                target_version: r.try_get("target_version")?,
                recorded_at: r.try_get("recorded_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let more = out.len() > limit as usize;
    out.truncate(limit as usize);
    Ok((out, more))
}

/// A chat message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageRow {
    pub lesson_id: Uuid,
    pub seq: i64,
    pub message_id: Uuid,
    pub sender_id: Uuid,
    pub client_message_id: String,
    pub text: String,
    pub sent_at: DateTime<Utc>,
}

fn message_row(r: &sqlx::postgres::PgRow) -> Result<MessageRow, sqlx::Error> {
    Ok(MessageRow {
        lesson_id: r.try_get("lesson_id")?,
        seq: r.try_get("seq")?,
        message_id: r.try_get("message_id")?,
        sender_id: r.try_get("sender_id")?,
        client_message_id: r.try_get("client_message_id")?,
        text: r.try_get("text")?,
        sent_at: r.try_get("sent_at")?,
    })
}

/// Messages of a lesson after `after_seq`, in sequence order.
pub async fn messages(
    pool: &PgPool,
    lesson: Uuid,
    after_seq: i64,
    limit: u32,
) -> Result<(Vec<MessageRow>, bool), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT lesson_id, seq, message_id, sender_id, client_message_id, text, sent_at
           FROM messages WHERE lesson_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(lesson)
    .bind(after_seq)
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let mut out = rows
        .iter()
        .map(message_row)
        .collect::<Result<Vec<_>, _>>()?;
    let more = out.len() > limit as usize;
    out.truncate(limit as usize);
    Ok((out, more))
}

/// A delivery still waiting for its recipient, with its message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PendingRow {
    #[serde(flatten)]
    pub message: MessageRow,
    /// Always `sent`: not yet acknowledged.
    pub status: String,
}

/// Where a pending-deliveries page continues: `(sent_at, lesson_id, seq)`.
pub type PendingKey = (DateTime<Utc>, Uuid, i64);

/// `recipient`'s unacknowledged deliveries in the order they were sent.
pub async fn pending(
    pool: &PgPool,
    recipient: Uuid,
    after: Option<PendingKey>,
    limit: u32,
) -> Result<(Vec<PendingRow>, bool), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT m.lesson_id, m.seq, m.message_id, m.sender_id, m.client_message_id, m.text, m.sent_at, d.status
           FROM deliveries d JOIN messages m ON m.lesson_id = d.lesson_id AND m.seq = d.seq
          WHERE d.recipient_id = $1 AND d.status = 'sent'
            AND ($2::timestamptz IS NULL OR (d.sent_at, d.lesson_id, d.seq) > ($2, $3, $4))
          ORDER BY d.sent_at, d.lesson_id, d.seq
          LIMIT $5",
    )
    .bind(recipient)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(after.map(|a| a.2))
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            Ok(PendingRow {
                message: message_row(r)?,
                status: r.try_get("status")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let more = out.len() > limit as usize;
    out.truncate(limit as usize);
    Ok((out, more))
}

/// A recipient's statuses of a lesson's deliveries: `(seq, status)`.
pub async fn delivery_statuses(
    pool: &PgPool,
    lesson: Uuid,
    recipient: Uuid,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    sqlx::query_as("SELECT seq, status FROM deliveries WHERE lesson_id = $1 AND recipient_id = $2 ORDER BY seq")
        .bind(lesson)
        .bind(recipient)
        .fetch_all(pool)
        .await
}

/// Deliveries sent before `cutoff` and still unacknowledged, grouped by
/// `(lesson, recipient)` with their sequence numbers ascending.
pub async fn expirable(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid, Vec<i64>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT lesson_id, recipient_id, array_agg(seq ORDER BY seq)
           FROM (SELECT lesson_id, recipient_id, seq FROM deliveries
                  WHERE status = 'sent' AND sent_at < $1 ORDER BY sent_at LIMIT $2) d
          GROUP BY lesson_id, recipient_id",
    )
    .bind(cutoff)
    .bind(limit)
    .fetch_all(pool)
    .await
}
