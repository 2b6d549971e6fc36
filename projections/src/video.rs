//! `video_sessions`, `watch_time` and `analytics.watch_time_daily`, from
//! the Playback streams.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lectern_domain::video::PlaybackEvent;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::classroom::{decode, uuid_of};
use crate::log::LogEvent;
use crate::projection::{Interest, Projection, ProjectionError, Tables};

const SESSIONS: &str = "video_sessions";
const WATCH: &str = "watch_time";
const DAILY: &str = "analytics.watch_time_daily";

/// Video sessions and the watch time they add up to.
pub struct VideoProjection;

#[async_trait]
impl Projection for VideoProjection {
    fn name(&self) -> &'static str {
        "video"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[SESSIONS, WATCH, DAILY]
    }

    fn interest(&self) -> Interest {
        Interest::types(&["Playback"])
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        t: &Tables,
        event: &LogEvent,
    ) -> Result<(), ProjectionError> {
        let user = uuid_of(event)?;
        match decode::<PlaybackEvent>(event)? {
            PlaybackEvent::VideoStarted {
                session_id,
                lesson_id,
                device_id,
                at,
            } => {
                sqlx::query(&format!(
                    "INSERT INTO {} (session_id, user_id, lesson_id, device_id, started_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (session_id) DO NOTHING",
                    t.get(SESSIONS)
                ))
                .bind(session_id)
                .bind(user)
                .bind(lesson_id)
                .bind(device_id)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            PlaybackEvent::VideoTakenOver {
                session_id,
                lesson_id,
                at,
                ..
            } => end(conn, t, user, session_id, lesson_id, at, "taken_over", None).await?,
            PlaybackEvent::VideoEnded {
                session_id,
                lesson_id,
                watched_ms,
                position_ms,
                at,
            } => {
                end(
                    conn,
                    t,
                    user,
                    session_id,
                    lesson_id,
                    at,
                    "ended",
                    Some((watched_ms, position_ms)),
                )
                .await?
            }
            PlaybackEvent::VideoExpired {
                session_id,
                lesson_id,
                watched_ms,
                position_ms,
                at,
            } => {
                end(
                    conn,
                    t,
                    user,
                    session_id,
                    lesson_id,
                    at,
                    "expired",
                    Some((watched_ms, position_ms)),
                )
                .await?
            }
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
async fn end(
    conn: &mut PgConnection,
    t: &Tables,
    user: Uuid,
    session: Uuid,
    lesson: Uuid,
    at: DateTime<Utc>,
    reason: &str,
    watched: Option<(u64, u64)>,
) -> Result<(), ProjectionError> {
    let (watched_ms, position_ms) = watched.unwrap_or((0, 0));
    let (watched_ms, position_ms) = (
        i64::try_from(watched_ms).unwrap_or(i64::MAX),
        i64::try_from(position_ms).unwrap_or(i64::MAX),
    );
    sqlx::query(&format!(
        "UPDATE {} SET ended_at = $2, end_reason = $3, watched_ms = $4, position_ms = $5 WHERE session_id = $1",
        t.get(SESSIONS)
    ))
    .bind(session)
    .bind(at)
    .bind(reason)
    .bind(watched_ms)
    .bind(position_ms)
    .execute(&mut *conn)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO {} AS w (user_id, lesson_id, watched_ms, sessions, updated_at) VALUES ($1, $2, $3, 1, $4)
         ON CONFLICT (user_id, lesson_id) DO UPDATE
            SET watched_ms = w.watched_ms + EXCLUDED.watched_ms, sessions = w.sessions + 1, updated_at = EXCLUDED.updated_at",
        t.get(WATCH)
    ))
    .bind(user)
    .bind(lesson)
    .bind(watched_ms)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO {} AS d (day, lesson_id, watched_ms, sessions) VALUES ($1, $2, $3, 1)
         ON CONFLICT (day, lesson_id) DO UPDATE SET watched_ms = d.watched_ms + EXCLUDED.watched_ms, sessions = d.sessions + 1",
        t.get(DAILY)
    ))
    .bind(at.date_naive())
    .bind(lesson)
    .bind(watched_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A user's watch time in one lesson.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct WatchTimeRow {
    /// The lesson.
    pub lesson_id: Uuid,
    /// Milliseconds watched over every ended session.
    pub watched_ms: i64,
    /// Sessions ended.
    pub sessions: i64,
}

/// `user`'s watch time per lesson.
pub async fn watch_time(pool: &PgPool, user: Uuid) -> Result<Vec<WatchTimeRow>, sqlx::Error> {
    sqlx::query_as("SELECT lesson_id, watched_ms, sessions FROM watch_time WHERE user_id = $1 ORDER BY lesson_id")
        .bind(user)
        .fetch_all(pool)
        .await
}
