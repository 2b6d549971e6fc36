//! `lessons` and `enrollments`: the projection and its queries.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lectern_domain::classroom::LessonEvent;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{decode, uuid_of};

/// A bounded count (a duration, a capacity) as the table's `integer`.
fn small(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}
use crate::log::LogEvent;
use crate::projection::{Interest, Projection, ProjectionError, Tables};

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

    fn interest(&self) -> Interest {
        Interest::types(&["Lesson"])
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
                .bind(details.title.as_str())
                .bind(details.description.as_str())
                .bind(details.starts_at)
                .bind(small(details.duration_minutes.get()))
                .bind(small(details.capacity.get()))
                .bind(details.price.amount_minor)
                .bind(details.price.currency.as_str())
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
                .bind(changes.title.as_ref().map(|t| t.as_str()))
                .bind(changes.description.as_ref().map(|d| d.as_str()))
                .bind(changes.starts_at)
                .bind(changes.duration_minutes.map(|v| small(v.get())))
                .bind(changes.capacity.map(|v| small(v.get())))
                .bind(changes.price.as_ref().map(|p| p.amount_minor))
                .bind(changes.price.as_ref().map(|p| p.currency.as_str()))
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

/// A lesson as listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LessonRow {
    /// The id.
    pub id: Uuid,
    /// The lesson's tutor.
    pub tutor_id: Uuid,
    /// The title.
    pub title: String,
    /// The description.
    pub description: String,
    /// When the lesson starts.
    pub starts_at: DateTime<Utc>,
    /// How long it lasts, in minutes.
    pub duration_minutes: i32,
    /// How many students it takes.
    pub capacity: i32,
    /// The price.
    pub price: PriceRow,
    /// `scheduled`, `live`, `ended` or `cancelled`.
    pub status: String,
    /// How many students are enrolled.
    pub enrolled_count: i32,
    /// Seats still free.
    pub seats_left: i32,
    /// `upcoming`, `live` or `past`, from the status and the clock.
    pub timing: String,
    /// The lesson's whiteboard (`/api/v1/boards/{board_id}`).
    pub board_id: Uuid,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// The stream version.
    pub version: i64,
}

/// A lesson's price.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PriceRow {
    /// In minor units (cents).
    pub amount_minor: i64,
    /// ISO 4217, lowercase.
    pub currency: String,
}

/// A `lessons` row as stored.
struct LessonRecord {
    id: Uuid,
    tutor_id: Uuid,
    title: String,
    description: String,
    starts_at: DateTime<Utc>,
    duration_minutes: i32,
    capacity: i32,
    price_amount_minor: i64,
    price_currency: String,
    status: String,
    enrolled_count: i32,
    created_at: DateTime<Utc>,
    version: i64,
}

impl LessonRecord {
    /// The row as listed at `now`: seats left and timing derived.
    fn listed(self, now: DateTime<Utc>) -> LessonRow {
        let ends_at = self.starts_at + chrono::Duration::minutes(i64::from(self.duration_minutes));
        let timing = match self.status.as_str() {
            "live" => "live",
            "ended" | "cancelled" => "past",
            _ if now < ends_at => "upcoming",
            _ => "past",
        };
        LessonRow {
            id: self.id,
            tutor_id: self.tutor_id,
            title: self.title,
            description: self.description,
            starts_at: self.starts_at,
            duration_minutes: self.duration_minutes,
            capacity: self.capacity,
            price: PriceRow {
                amount_minor: self.price_amount_minor,
                currency: self.price_currency,
            },
            status: self.status,
            enrolled_count: self.enrolled_count,
            seats_left: (self.capacity - self.enrolled_count).max(0),
            timing: timing.to_owned(),
            board_id: self.id,
            created_at: self.created_at,
            version: self.version,
        }
    }
}

/// One lesson.
pub async fn lesson(pool: &PgPool, id: Uuid) -> Result<Option<LessonRow>, sqlx::Error> {
    let record = sqlx::query_as!(
        LessonRecord,
        "SELECT id, tutor_id, title, description, starts_at, duration_minutes, capacity,
                price_amount_minor, price_currency, status, enrolled_count, created_at, version
           FROM lessons WHERE id = $1",
        id,
    )
    .fetch_optional(pool)
    .await?;
    Ok(record.map(|r| r.listed(Utc::now())))
}

/// The students enrolled in a lesson, in enrolment order.
pub async fn enrolled(pool: &PgPool, lesson: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT student_id FROM enrollments WHERE lesson_id = $1 ORDER BY enrolled_at, student_id",
        lesson,
    )
    .fetch_all(pool)
    .await
}

/// Filters of the lesson list.
#[derive(Debug, Clone, Default)]
pub struct LessonFilter {
    /// The lesson's tutor.
    pub tutor_id: Option<Uuid>,
    /// The status.
    pub status: Option<String>,
    /// Lessons starting at or after this time.
    pub starts_from: Option<DateTime<Utc>>,
    /// Lessons starting before this time.
    pub starts_before: Option<DateTime<Utc>>,
    /// Lessons this user teaches or is enrolled in.
    pub mine: Option<Uuid>,
}

/// At most `limit` lessons in `(starts_at, id)` order after `after`.
pub async fn lessons_page(
    pool: &PgPool,
    filter: &LessonFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: u32,
) -> Result<Vec<LessonRow>, sqlx::Error> {
    let records = sqlx::query_as!(
        LessonRecord,
        r#"SELECT l.id, l.tutor_id, l.title, l.description, l.starts_at, l.duration_minutes, l.capacity,
                  l.price_amount_minor, l.price_currency, l.status, l.enrolled_count, l.created_at, l.version
             FROM lessons l
            WHERE ($1::uuid IS NULL OR l.tutor_id = $1)
              AND ($2::text IS NULL OR l.status = $2)
              AND ($3::timestamptz IS NULL OR l.starts_at >= $3)
              AND ($4::timestamptz IS NULL OR l.starts_at < $4)
              AND ($5::uuid IS NULL OR l.tutor_id = $5
                   OR EXISTS (SELECT 1 FROM enrollments e WHERE e.lesson_id = l.id AND e.student_id = $5))
              AND ($6::timestamptz IS NULL OR (l.starts_at, l.id) > ($6, $7::uuid))
            ORDER BY l.starts_at, l.id
            LIMIT $8"#,
        filter.tutor_id,
        filter.status.as_deref(),
        filter.starts_from,
        filter.starts_before,
        filter.mine,
        after.map(|a| a.0),
        after.map(|a| a.1),
        i64::from(limit),
    )
    .fetch_all(pool)
    .await?;
    let now = Utc::now();
    Ok(records.into_iter().map(|r| r.listed(now)).collect())
}
