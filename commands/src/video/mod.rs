//! The video service: a user's Playback stream decides which session plays
//! (one device at a time); the lease of the session playing is renewed by
//! heartbeats in `video_leases`, outside the log, and a sweep ends leases
//! that ran out with an event.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lectern_domain::video::{
    Playback, PlaybackCommand, PlaybackError, PlaybackEvent, TakeoverPolicy,
};
use lectern_domain::EventMetadata;
use sqlx::PgPool;
use uuid::Uuid;

use crate::bus::{CommandBus, Committed, DispatchConfig};
use crate::error::{CommandError, StoreError};
use crate::store::PgEventStore;

/// Why a video command failed.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// The Playback stream refused it.
    #[error(transparent)]
    Playback(PlaybackError),
    /// Conflicting writers won every retry.
    #[error("the playback was changed concurrently; retry")]
    Conflict,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<CommandError<PlaybackError>> for VideoError {
    fn from(e: CommandError<PlaybackError>) -> Self {
        match e {
            CommandError::Rejected(e) => Self::Playback(e),
            CommandError::Conflict => Self::Conflict,
            CommandError::Store(e) => Self::Store(e),
        }
    }
}

impl From<sqlx::Error> for VideoError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// The video settings.
#[derive(Debug, Clone, Copy)]
pub struct VideoConfig {
    /// A session lives this long past its last heartbeat.
    pub lease: Duration,
    /// What a second device's start does.
    pub policy: TakeoverPolicy,
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(
                u64::try_from(lectern_domain::video::LEASE_SECS).unwrap_or(45),
            ),
            policy: TakeoverPolicy::Refuse,
        }
    }
}

/// A session that started, and the one it took over.
#[derive(Debug, Clone)]
pub struct Started {
    /// The new session.
    pub session_id: Uuid,
    /// When its lease ends unless renewed.
    pub expires_at: DateTime<Utc>,
    /// The session taken over, and its device.
    pub took_over: Option<(Uuid, String)>,
    /// The command's outcome.
    pub committed: Committed<PlaybackEvent>,
}

/// A renewed lease.
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    /// When it ends unless renewed.
    pub expires_at: DateTime<Utc>,
    /// Milliseconds watched so far.
    pub watched_ms: i64,
}

/// The video context's commands.
#[derive(Clone)]
pub struct VideoService {
    pool: PgPool,
    playbacks: CommandBus<Playback>,
    /// The settings.
    pub config: VideoConfig,
}

/// Watch time a heartbeat adds at most: a client that was away longer than
/// two heartbeat intervals is not credited for the gap.
const MAX_CREDIT_MS: i64 = 30_000;

impl VideoService {
    /// The service over `pool`.
    pub fn new(pool: &PgPool, config: VideoConfig) -> Self {
        Self {
            pool: pool.clone(),
            playbacks: CommandBus::new(
                PgEventStore::new(pool.clone()),
                (),
                DispatchConfig::default(),
            ),
            config,
        }
    }

    fn lease_secs(&self) -> f64 {
        self.config.lease.as_secs_f64()
    }

    /// Start session `session_id` of `user` watching `lesson` on `device`.
    pub async fn start(
        &self,
        user: Uuid,
        session_id: Uuid,
        lesson: Uuid,
        device: &str,
        meta: &EventMetadata,
    ) -> Result<Started, VideoError> {
        let command = PlaybackCommand::Start {
            session_id,
            lesson_id: lesson,
            device_id: device.to_owned(),
            policy: self.config.policy,
            now: Utc::now(),
        };
        let committed = self
            .playbacks
            .execute(&user.to_string(), command, meta.clone())
            .await?;
        let mut took_over = None;
        for e in &committed.events {
            if let PlaybackEvent::VideoTakenOver {
                session_id,
                device_id,
                ..
            } = &e.payload
            {
                took_over = Some((*session_id, device_id.clone()));
                sqlx::query("DELETE FROM video_leases WHERE session_id = $1")
                    .bind(session_id)
                    .execute(&self.pool)
                    .await?;
            }
        }
        let expires_at: DateTime<Utc> = sqlx::query_scalar(
            "INSERT INTO video_leases (session_id, user_id, lesson_id, device_id, expires_at)
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
             ON CONFLICT (session_id) DO UPDATE SET beat_at = now(), expires_at = EXCLUDED.expires_at
             RETURNING expires_at",
        )
        .bind(session_id)
        .bind(user)
        .bind(lesson)
        .bind(device)
        .bind(self.lease_secs())
        .fetch_one(&self.pool)
        .await?;
        Ok(Started {
            session_id,
            expires_at,
            took_over,
            committed,
        })
    }

    /// A heartbeat of `user`'s session at `position_ms`: the lease lives on,
    /// and the time since the last heartbeat is credited (at most 30 s).
    pub async fn heartbeat(
        &self,
        user: Uuid,
        session_id: Uuid,
        position_ms: u64,
        meta: &EventMetadata,
    ) -> Result<Lease, VideoError> {
        self.playbacks
            .execute(
                &user.to_string(),
                PlaybackCommand::Beat { session_id },
                meta.clone(),
            )
            .await?;
        let row: Option<(DateTime<Utc>, i64)> = sqlx::query_as(
            "UPDATE video_leases
                SET watched_ms = watched_ms + LEAST($4, (extract(epoch FROM now() - beat_at) * 1000)::bigint),
                    position_ms = $3, beat_at = now(), expires_at = now() + make_interval(secs => $5)
              WHERE session_id = $1 AND user_id = $2
          RETURNING expires_at, watched_ms",
        )
        .bind(session_id)
        .bind(user)
        .bind(i64::try_from(position_ms).unwrap_or(i64::MAX))
        .bind(MAX_CREDIT_MS)
        .bind(self.lease_secs())
        .fetch_optional(&self.pool)
        .await?;
        let (expires_at, watched_ms) =
            row.ok_or(VideoError::Playback(PlaybackError::NotPlaying))?;
        Ok(Lease {
            expires_at,
            watched_ms,
        })
    }

    /// End `user`'s session at `position_ms`.
    pub async fn end(
        &self,
        user: Uuid,
        session_id: Uuid,
        position_ms: Option<u64>,
        meta: &EventMetadata,
    ) -> Result<Committed<PlaybackEvent>, VideoError> {
        let lease: Option<(i64, i64)> = sqlx::query_as(
            "SELECT watched_ms + LEAST($3, (extract(epoch FROM now() - beat_at) * 1000)::bigint), position_ms
               FROM video_leases WHERE session_id = $1 AND user_id = $2",
        )
        .bind(session_id)
        .bind(user)
        .bind(MAX_CREDIT_MS)
        .fetch_optional(&self.pool)
        .await?;
        let (watched, position) = lease.unwrap_or((0, 0));
        let command = PlaybackCommand::End {
            session_id,
            watched_ms: u64::try_from(watched).unwrap_or(0),
            position_ms: position_ms.unwrap_or(u64::try_from(position).unwrap_or(0)),
            now: Utc::now(),
        };
        let committed = self
            .playbacks
            .execute(&user.to_string(), command, meta.clone())
            .await?;
        sqlx::query("DELETE FROM video_leases WHERE session_id = $1")
            .bind(session_id)
            .execute(&self.pool)
            .await?;
        Ok(committed)
    }

    /// End every session whose lease ran out, with an event each; the
    /// sessions expired.
    pub async fn expire_due(&self) -> Result<Vec<Uuid>, VideoError> {
        // Claim the leases (another process's sweep skips them).
        let due: Vec<(Uuid, Uuid, i64, i64)> = sqlx::query_as(
            "DELETE FROM video_leases WHERE session_id IN (
                 SELECT session_id FROM video_leases WHERE expires_at < now()
                  ORDER BY expires_at LIMIT 500 FOR UPDATE SKIP LOCKED)
             RETURNING session_id, user_id, watched_ms, position_ms",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut expired = Vec::new();
        for (session_id, user, watched, position) in due {
            let command = PlaybackCommand::Expire {
                session_id,
                watched_ms: u64::try_from(watched).unwrap_or(0),
                position_ms: u64::try_from(position).unwrap_or(0),
                now: Utc::now(),
            };
            let meta = EventMetadata::system(&session_id.to_string());
            let committed = self
                .playbacks
                .execute(&user.to_string(), command, meta)
                .await?;
            if !committed.events.is_empty() {
                expired.push(session_id);
            }
        }
        Ok(expired)
    }

    /// The session `user` plays now, if any.
    pub async fn playing(
        &self,
        user: Uuid,
    ) -> Result<Option<lectern_domain::video::Session>, VideoError> {
        Ok(self
            .playbacks
            .store()
            .load(&user.to_string())
            .await?
            .aggregate
            .active)
    }
}
