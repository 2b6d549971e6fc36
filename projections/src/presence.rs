//! `presence`: each user's status, from `PresenceChanged`; and the queries
//! the presence routes serve.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lectern_domain::presence::PresenceEvent;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::classroom::{decode, uuid_of};
use crate::log::LogEvent;
use crate::projection::{Interest, Projection, ProjectionError, Tables};

const TABLE: &str = "presence";

/// Each user's presence status.
pub struct PresenceProjection;

#[async_trait]
impl Projection for PresenceProjection {
    fn name(&self) -> &'static str {
        "presence"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[TABLE]
    }

    fn interest(&self) -> Interest {
        Interest::types(&["Presence"])
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        tables: &Tables,
        event: &LogEvent,
    ) -> Result<(), ProjectionError> {
        let user = uuid_of(event)?;
        let PresenceEvent::PresenceChanged { to, cause, at, .. } = decode(event)?;
        let cause = serde_json::to_value(cause)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        sqlx::query(&format!(
            "INSERT INTO {} AS p (user_id, status, changed_at, cause) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE SET status = EXCLUDED.status, changed_at = EXCLUDED.changed_at,
                                                 cause = EXCLUDED.cause",
            tables.get(TABLE)
        ))
        .bind(user)
        .bind(to.as_str())
        .bind(at)
        .bind(cause)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// A user's status.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct PresenceRow {
    /// The user.
    pub user_id: Uuid,
    /// online, away, busy, reconnecting or offline.
    pub status: String,
    /// When it last changed (absent for a user never seen).
    pub since: Option<DateTime<Utc>>,
}

/// The statuses of `users`, in their order; a user never seen is offline.
pub async fn statuses(pool: &PgPool, users: &[Uuid]) -> Result<Vec<PresenceRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.user_id, coalesce(p.status, 'offline') AS status, p.changed_at AS since
           FROM unnest($1::uuid[]) WITH ORDINALITY AS u(user_id, n)
           LEFT JOIN presence p ON p.user_id = u.user_id
          ORDER BY u.n",
    )
    .bind(users)
    .fetch_all(pool)
    .await
}

/// A lesson's participant with their status.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ParticipantPresence {
    /// The user.
    pub user_id: Uuid,
    /// `tutor` or `student`.
    pub role: String,
    /// online, away, busy, reconnecting or offline.
    pub status: String,
    /// When it last changed.
    pub since: Option<DateTime<Utc>>,
}

/// Lesson `lesson`'s tutor and enrolled students with their statuses, the
/// tutor first; `None` for no such lesson.
pub async fn lesson(
    pool: &PgPool,
    lesson: Uuid,
) -> Result<Option<Vec<ParticipantPresence>>, sqlx::Error> {
    let exists: Option<Uuid> = sqlx::query_scalar("SELECT tutor_id FROM lessons WHERE id = $1")
        .bind(lesson)
        .fetch_optional(pool)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let rows = sqlx::query_as(
        "WITH people AS (
             SELECT tutor_id AS user_id, 'tutor' AS role, 0 AS n FROM lessons WHERE id = $1
             UNION ALL
             SELECT student_id, 'student', 1 FROM enrollments WHERE lesson_id = $1)
         SELECT people.user_id, people.role, coalesce(p.status, 'offline') AS status, p.changed_at AS since
           FROM people LEFT JOIN presence p ON p.user_id = people.user_id
          ORDER BY people.n, people.user_id",
    )
    .bind(lesson)
    .fetch_all(pool)
    .await?;
    Ok(Some(rows))
}

/// Whether `a` and `b` take part in a lesson together (tutor or student).
pub async fn share_a_lesson(
    pool: &PgPool,
    a: Uuid,
    others: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH mine AS (
             SELECT id AS lesson_id FROM lessons WHERE tutor_id = $1
             UNION SELECT lesson_id FROM enrollments WHERE student_id = $1),
         people AS (
             SELECT l.tutor_id AS user_id FROM lessons l JOIN mine m ON m.lesson_id = l.id
             UNION SELECT e.student_id FROM enrollments e JOIN mine m ON m.lesson_id = e.lesson_id)
         SELECT user_id FROM people WHERE user_id = ANY($2)",
    )
    .bind(a)
    .bind(others)
    .fetch_all(pool)
    .await
}
