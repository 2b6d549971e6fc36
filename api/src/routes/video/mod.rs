//! Video sessions (`/api/v1/video/sessions*`, `/api/v1/me/watch-time`): one
//! device plays at a time per user, a session is a lease renewed by
//! heartbeats, and the expiry sweep ends leases that ran out.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use lectern_commands::video::VideoError;
use lectern_domain::policy::Action;
use lectern_domain::video::PlaybackError;
use lectern_projections::video::{self as read, WatchTimeRow};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Caller;
use crate::extract::ApiJson;
use crate::problem::{Code, Problem};

/// The video context's codes.
impl Code {
    /// Another device of the user is playing (the default policy).
    pub const PLAYBACK_ACTIVE_ELSEWHERE: Code =
        Code::new("playback_active_elsewhere", StatusCode::CONFLICT);
    /// The session ended, expired or was taken over.
    pub const VIDEO_SESSION_NOT_PLAYING: Code =
        Code::new("video_session_not_playing", StatusCode::CONFLICT);
    /// The device is not the caller's active device.
    pub const DEVICE_NOT_ACTIVE: Code = Code::new("device_not_active", StatusCode::FORBIDDEN);

    /// Every video code.
    pub const VIDEO: &'static [Code] = &[
        Self::PLAYBACK_ACTIVE_ELSEWHERE,
        Self::VIDEO_SESSION_NOT_PLAYING,
        Self::DEVICE_NOT_ACTIVE,
    ];
}

impl From<VideoError> for Problem {
    fn from(e: VideoError) -> Self {
        match e {
            VideoError::Playback(PlaybackError::ActiveElsewhere {
                session_id,
                device_id,
            }) => {
                let mut extra = serde_json::Map::new();
                extra.insert("session_id".into(), session_id.to_string().into());
                extra.insert("device_id".into(), device_id.into());
                Problem::new(
                    Code::PLAYBACK_ACTIVE_ELSEWHERE,
                    "Another of your devices is playing; end it first.",
                )
                .with_extra(extra)
            }
            VideoError::Playback(PlaybackError::NotPlaying) => Problem::new(
                Code::VIDEO_SESSION_NOT_PLAYING,
                "This video session is not playing: it ended, expired or was taken over.",
            ),
            VideoError::Conflict => Problem::new(Code::CONFLICT, "Retry."),
            VideoError::Store(s) => s.into(),
        }
    }
}

/// The video routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(heartbeat))
        .routes(routes!(end))
        .routes(routes!(watch_time))
}

/// What to play, on which device.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartVideo {
    lesson_id: Uuid,
    /// The caller's active device (see `/api/v1/devices`).
    #[schema(min_length = 1, max_length = 128)]
    device_id: String,
}

/// A started session.
#[derive(Debug, Serialize, ToSchema)]
pub struct VideoSession {
    session_id: Uuid,
    /// Shows the media server the session is the caller's: signed, expiring.
    session_token: String,
    /// Where to play from: signed (HMAC), expiring at `url_expires_at`.
    playback_url: String,
    url_expires_at: DateTime<Utc>,
    /// The lease: send a heartbeat (about every 15 s) before then.
    expires_at: DateTime<Utc>,
    /// The session this one took over (under the takeover policy); its
    /// device was sent `video.stop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    took_over: Option<Uuid>,
}

/// Start watching a lesson on one's active device: the caller must be its
/// tutor or enrolled. With another device playing, 409
/// `playback_active_elsewhere`; under `LECTERN_VIDEO_POLICY=takeover` the
/// other session ends instead and its device is sent `video.stop`.
#[utoipa::path(post, path = "/api/v1/video/sessions", tag = "video", security(("bearer" = [])), request_body = StartVideo,
    responses((status = 201, body = VideoSession), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn start(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<StartVideo>,
) -> Result<(StatusCode, Json<VideoSession>), Problem> {
    let grant = caller.authorize(&state, Action::VideoWatch).await?;
    if body.device_id.is_empty() || body.device_id.len() > 128 {
        return Err(Problem::invalid("#/device_id", "must be 1 to 128 bytes"));
    }
    let lesson = state.classroom.lesson_state(body.lesson_id).await?;
    let takes_part =
        lesson.tutor_id == Some(caller.user_id) || lesson.students.contains(&caller.user_id);
    if grant.own_only && !takes_part {
        return Err(caller
            .deny(
                &state,
                Action::VideoWatch,
                Code::NOT_PARTICIPANT,
                "Only the lesson's tutor and enrolled students may watch it.",
            )
            .await);
    }
    let user = state
        .identity
        .user(caller.user_id)
        .await?
        .ok_or_else(|| Problem::new(Code::INVALID_TOKEN, "No such account."))?;
    if !user
        .devices
        .iter()
        .any(|d| d.device_id == body.device_id && d.active)
    {
        return Err(caller
            .deny(
                &state,
                Action::VideoWatch,
                Code::DEVICE_NOT_ACTIVE,
                "Play on your active device: activate this one first.",
            )
            .await);
    }
    let meta = caller.metadata();
    let session_id = meta.new_id(0);
    let started = state
        .video
        .start(
            caller.user_id,
            session_id,
            body.lesson_id,
            &body.device_id,
            &meta,
        )
        .await?;
    let ttl = state.http.realtime.video_url_ttl_secs;
    let url_expires_at = Utc::now() + chrono::Duration::seconds(i64::try_from(ttl).unwrap_or(3600));
    let exp = url_expires_at.timestamp();
    let keyring = &state.auth.keyring;
    let token_data = format!("{session_id}.{}.{}.{exp}", caller.user_id, body.lesson_id);
    let session_token = format!("{token_data}.{}", keyring.mac(SESSION_TOKEN, &token_data));
    let path = format!("/lessons/{}/sessions/{session_id}", body.lesson_id);
    let signature = keyring.mac(PLAYBACK_URL, &format!("{path}?exp={exp}"));
    let playback_url = format!(
        "{}{path}?exp={exp}&sig={signature}",
        state.http.realtime.video_base_url.trim_end_matches('/')
    );
    Ok((
        StatusCode::CREATED,
        Json(VideoSession {
            session_id: started.session_id,
            session_token,
            playback_url,
            url_expires_at,
            expires_at: started.expires_at,
            took_over: started.took_over.map(|(s, _)| s),
        }),
    ))
}

/// The key purpose of session tokens.
pub const SESSION_TOKEN: &str = "lectern video session token v1";
/// The key purpose of playback URLs.
pub const PLAYBACK_URL: &str = "lectern video playback url v1";

/// Whether `url` is a playback URL this server signed and it has not
/// expired: what a media server in front of the video checks.
pub fn verify_playback_url(keyring: &crate::auth::tokens::Keyring, base: &str, url: &str) -> bool {
    let Some(rest) = url.strip_prefix(base.trim_end_matches('/')) else {
        return false;
    };
    let Some((signed, signature)) = rest.rsplit_once("&sig=") else {
        return false;
    };
    let exp = signed
        .rsplit_once("?exp=")
        .and_then(|(_, e)| e.parse::<i64>().ok());
    exp.is_some_and(|e| e > Utc::now().timestamp())
        && keyring.verify_mac(PLAYBACK_URL, signed, signature)
}

/// Where playback is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VideoBeat {
    /// The playback position, in milliseconds.
    #[schema(minimum = 0)]
    position_ms: u64,
}

/// A renewed lease.
#[derive(Debug, Serialize, ToSchema)]
pub struct VideoLease {
    session_id: Uuid,
    /// Send the next heartbeat before then.
    expires_at: DateTime<Utc>,
    /// Milliseconds watched in this session so far.
    watched_ms: i64,
}

/// Renew a session's lease (about every 15 s; it lives 45 s past the last).
/// Also over the realtime socket: `cmd` `video.heartbeat`.
#[utoipa::path(post, path = "/api/v1/video/sessions/{id}/heartbeat", tag = "video", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Video session id")), request_body = VideoBeat,
    responses((status = 200, body = VideoLease), (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<VideoBeat>,
) -> Result<Json<VideoLease>, Problem> {
    beat(&state, &caller, id, body.position_ms).await.map(Json)
}

/// Renew session `id`'s lease as `caller`: the HTTP route and the socket's
/// `video.heartbeat` both do.
pub(crate) async fn beat(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    position_ms: u64,
) -> Result<VideoLease, Problem> {
    caller.authorize(state, Action::VideoWatch).await?;
    let lease = state
        .video
        .heartbeat(caller.user_id, id, position_ms, &caller.metadata())
        .await?;
    Ok(VideoLease {
        session_id: id,
        expires_at: lease.expires_at,
        watched_ms: lease.watched_ms,
    })
}

/// Where playback stopped.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndVideo {
    /// The last position, in milliseconds (else the last heartbeat's).
    #[serde(default)]
    position_ms: Option<u64>,
}

/// An ended session.
#[derive(Debug, Serialize, ToSchema)]
pub struct VideoEnded {
    session_id: Uuid,
    /// Milliseconds watched in it.
    watched_ms: u64,
    position: Option<String>,
}

/// End a session.
#[utoipa::path(post, path = "/api/v1/video/sessions/{id}/end", tag = "video", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Video session id")), request_body = EndVideo,
    responses((status = 200, body = VideoEnded), (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn end(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<EndVideo>,
) -> Result<Json<VideoEnded>, Problem> {
    caller.authorize(&state, Action::VideoWatch).await?;
    let committed = state
        .video
        .end(caller.user_id, id, body.position_ms, &caller.metadata())
        .await?;
    let watched_ms = committed
        .events
        .iter()
        .find_map(|e| match e.payload {
            lectern_domain::video::PlaybackEvent::VideoEnded { watched_ms, .. } => Some(watched_ms),
            _ => None,
        })
        .unwrap_or(0);
    Ok(Json(VideoEnded {
        session_id: id,
        watched_ms,
        position: committed.position.map(|p| p.to_string()),
    }))
}

/// One's watch time per lesson.
#[derive(Debug, Serialize, ToSchema)]
pub struct WatchTime {
    results: Vec<WatchTimeRow>,
}

/// One's watch time per lesson, over every ended session.
#[utoipa::path(get, path = "/api/v1/me/watch-time", tag = "video", security(("bearer" = [])),
    params(crate::pagination::Consistency),
    responses((status = 200, body = WatchTime), (status = 403, body = Problem)))]
async fn watch_time(
    State(state): State<AppState>,
    caller: Caller,
    crate::extract::ApiQuery(consistency): crate::extract::ApiQuery<crate::pagination::Consistency>,
) -> Result<Json<WatchTime>, Problem> {
    caller.authorize(&state, Action::MeRead).await?;
    consistency.wait(&state, "video").await?;
    Ok(Json(WatchTime {
        results: read::watch_time(&state.read_pool, caller.user_id).await?,
    }))
}

/// End the sessions whose lease ran out, every second.
pub async fn expire(state: AppState, cancel: CancellationToken) {
    loop {
        if let Err(e) = state.video.expire_due().await {
            tracing::warn!(error = %e, "video lease expiry failed");
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
