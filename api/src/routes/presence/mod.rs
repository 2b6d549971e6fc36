//! Presence (`/api/v1/presence/*`, `/api/v1/heartbeat`): who is online in a
//! lesson, one's own status, HTTP heartbeats, and bulk reads; and the sweep
//! that beats this process's `realtime_nodes` row and settles statuses whose
//! connections lapsed. `docs/realtime.md` ("Presence") has the rules.

use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use lectern_commands::presence::ConnectionRow;
use lectern_domain::policy::Action;
use lectern_domain::presence::Status;
use lectern_projections::presence::{self as read, ParticipantPresence, PresenceRow};
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
use crate::routes::classroom::may_read;

/// The presence routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(lesson_presence))
        .routes(routes!(my_presence, set_my_presence))
        .routes(routes!(heartbeat))
        .routes(routes!(bulk))
}

/// Who takes part in a lesson, with their statuses.
#[derive(Debug, Serialize, ToSchema)]
pub struct LessonPresence {
    lesson_id: Uuid,
    /// The tutor first, then the enrolled students.
    participants: Vec<ParticipantPresence>,
}

/// Who is in a lesson (its tutor and enrolled students) and their statuses:
/// participants, admins and auditors.
#[utoipa::path(get, path = "/api/v1/presence/lessons/{lesson_id}", tag = "presence", security(("bearer" = [])),
    params(("lesson_id" = Uuid, Path, description = "Lesson id")),
    responses((status = 200, body = LessonPresence), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn lesson_presence(
    State(state): State<AppState>,
    caller: Caller,
    Path(lesson_id): Path<Uuid>,
) -> Result<Json<LessonPresence>, Problem> {
    may_read(&state, &caller, lesson_id, Action::PresenceRead).await?;
    let participants = read::lesson(&state.read_pool, lesson_id)
        .await?
        .ok_or_else(|| Problem::new(Code::LESSON_NOT_FOUND, "No such lesson."))?;
    Ok(Json(LessonPresence {
        lesson_id,
        participants,
    }))
}

/// One's own presence.
#[derive(Debug, Serialize, ToSchema)]
pub struct MyPresence {
    /// online, away, busy, reconnecting or offline.
    status: String,
    /// The connections it rests on.
    #[schema(value_type = Vec<Object>)]
    connections: Vec<ConnectionRow>,
    /// Send `POST /api/v1/heartbeat` at least this often (seconds) when not
    /// on the realtime socket.
    heartbeat_interval: u64,
    /// Without a heartbeat for this long (seconds), an HTTP client shows
    /// `reconnecting`.
    ttl: u64,
}

async fn mine(state: &AppState, caller: &Caller, status: Status) -> Result<MyPresence, Problem> {
    let config = state.presence.config;
    Ok(MyPresence {
        status: status.as_str().to_owned(),
        connections: state.presence.connections(caller.user_id).await?,
        heartbeat_interval: config.heartbeat_interval.as_secs(),
        ttl: config.ttl.as_secs(),
    })
}

/// One's own status, as one's connections give it now, with the connections.
#[utoipa::path(get, path = "/api/v1/presence/me", tag = "presence", security(("bearer" = [])),
    responses((status = 200, body = MyPresence), (status = 403, body = Problem)))]
async fn my_presence(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<MyPresence>, Problem> {
    caller.authorize(&state, Action::PresenceUpdate).await?;
    let status = state.presence.computed(caller.user_id).await?;
    Ok(Json(mine(&state, &caller, status).await?))
}

/// A status to show.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChooseStatus {
    /// `online`, `away` or `busy` (the server decides `reconnecting` and `offline`).
    #[schema(example = "away", pattern = "^(online|away|busy)$")]
    status: String,
}

/// Choose one's status (online, away, busy) on every connection; also a
/// heartbeat of this session. Remembered for the reconnect window.
#[utoipa::path(post, path = "/api/v1/presence/me", tag = "presence", security(("bearer" = [])), request_body = ChooseStatus,
    responses((status = 200, body = MyPresence), (status = 403, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn set_my_presence(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ChooseStatus>,
) -> Result<Json<MyPresence>, Problem> {
    caller.authorize(&state, Action::PresenceUpdate).await?;
    let status = Status::parse(&body.status)
        .filter(|s| s.client_settable())
        .ok_or_else(|| Problem::invalid("#/status", "must be online, away or busy"))?;
    state
        .presence
        .heartbeat(caller.user_id, caller.session_id, None)
        .await?;
    let now = state.presence.choose(caller.user_id, status).await?;
    Ok(Json(mine(&state, &caller, now).await?))
}

/// A heartbeat's optional details.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The device sending it (1 to 128 bytes).
    #[serde(default)]
    #[schema(max_length = 128)]
    device_id: Option<String>,
}

/// The answer to a heartbeat.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeartbeatAck {
    /// The caller's status now.
    status: String,
    /// Send the next within this many seconds.
    heartbeat_interval: u64,
    /// The connection shows `reconnecting` after this many seconds without one.
    ttl: u64,
    /// When this heartbeat's connection lapses.
    expires_at: DateTime<Utc>,
}

/// An HTTP-only client's heartbeat: keeps the caller's presence for this
/// session alive for the TTL. Only a change of status is recorded as an
/// event, never the heartbeat.
#[utoipa::path(post, path = "/api/v1/heartbeat", tag = "presence", security(("bearer" = [])), request_body = Heartbeat,
    responses((status = 200, body = HeartbeatAck), (status = 403, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Heartbeat>,
) -> Result<Json<HeartbeatAck>, Problem> {
    caller.authorize(&state, Action::PresenceUpdate).await?;
    if body
        .device_id
        .as_ref()
        .is_some_and(|d| d.is_empty() || d.len() > 128)
    {
        return Err(Problem::invalid("#/device_id", "must be 1 to 128 bytes"));
    }
    let status = state
        .presence
        .heartbeat(caller.user_id, caller.session_id, body.device_id.as_deref())
        .await?;
    let config = state.presence.config;
    Ok(Json(HeartbeatAck {
        status: status.as_str().to_owned(),
        heartbeat_interval: config.heartbeat_interval.as_secs(),
        ttl: config.ttl.as_secs(),
        expires_at: Utc::now() + chrono::Duration::from_std(config.ttl).unwrap_or_default(),
    }))
}

/// Users whose statuses to read.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkPresence {
    /// 1 to 100 user ids.
    #[schema(min_items = 1, max_items = 100)]
    user_ids: Vec<Uuid>,
}

/// One user's status in a bulk read.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkItem {
    user_id: Uuid,
    /// The status; absent when the caller may not see it (`visible: false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<DateTime<Utc>>,
    /// Whether the caller may see this user's status: admins and auditors
    /// see everyone's; tutors and students, the people they share a lesson
    /// with, and their own.
    visible: bool,
}

/// The answers, in the order asked.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkPresenceResults {
    results: Vec<BulkItem>,
}

/// The statuses of up to 100 users at once.
#[utoipa::path(post, path = "/api/v1/presence/bulk", tag = "presence", security(("bearer" = [])), request_body = BulkPresence,
    responses((status = 200, body = BulkPresenceResults), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn bulk(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<BulkPresence>,
) -> Result<Json<BulkPresenceResults>, Problem> {
    let grant = caller.authorize(&state, Action::PresenceRead).await?;
    if body.user_ids.is_empty() || body.user_ids.len() > 100 {
        return Err(Problem::invalid(
            "#/user_ids",
            "must hold 1 to 100 user ids",
        ));
    }
    let rows: Vec<PresenceRow> = read::statuses(&state.read_pool, &body.user_ids).await?;
    let visible: Option<Vec<Uuid>> = if grant.own_only {
        Some(read::share_a_lesson(&state.read_pool, caller.user_id, &body.user_ids).await?)
    } else {
        None
    };
    let results = rows
        .into_iter()
        .map(|r| {
            let sees = r.user_id == caller.user_id
                || visible.as_ref().is_none_or(|v| v.contains(&r.user_id));
            BulkItem {
                user_id: r.user_id,
                status: sees.then_some(r.status),
                since: if sees { r.since } else { None },
                visible: sees,
            }
        })
        .collect();
    Ok(Json(BulkPresenceResults { results }))
}

/// Beat this process's node row every few seconds, and settle the statuses
/// whose connections lapsed, every second (one process at a time sweeps).
pub async fn sweep(state: AppState, cancel: CancellationToken) {
    let node = state.realtime.node.clone();
    let beat_every = state.presence.config.node_beat;
    let mut last_beat: Option<Instant> = None;
    loop {
        if last_beat.is_none_or(|at| at.elapsed() >= beat_every) {
            match state.presence.beat(&node).await {
                Ok(()) => last_beat = Some(Instant::now()),
                Err(e) => tracing::warn!(error = %e, "cannot beat the realtime node row"),
            }
        }
        if let Err(e) = state.presence.sweep().await {
            tracing::warn!(error = %e, "presence sweep failed");
        }
        tokio::select! {
            () = cancel.cancelled() => {
                // Our sockets are lost: their clients reconnect elsewhere.
                if let Err(e) = state.presence.leave(&node).await {
                    tracing::warn!(error = %e, "cannot hand this node's presence over");
                }
                return;
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
