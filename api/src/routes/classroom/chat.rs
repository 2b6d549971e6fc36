//! Lesson chat with delivery marks: `/api/v1/lessons/{id}/messages`,
//! `/api/v1/deliveries/ack` and `/api/v1/me/deliveries/pending`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use lectern_domain::classroom::inbox::AckStatus;
use lectern_domain::classroom::values::MessageText;
use lectern_domain::policy::Action;
use lectern_projections::classroom::{self as read, MessageRow, PendingRow};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{actor, may_read, refusal};
use crate::app::AppState;
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery};
use crate::pagination::{Consistency, CursorPage, CursorParams};
use crate::problem::Problem;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send_message, list_messages))
        .routes(routes!(acknowledge))
        .routes(routes!(pending))
}

/// A message to send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// The client's id for this message (1 to 128 bytes): sending it again
    /// gives the same message.
    #[schema(min_length = 1, max_length = 128)]
    client_message_id: String,
    /// 1 to 4000 characters, not only white space.
    #[schema(min_length = 1, max_length = 4000)]
    text: String,
}

/// A sent message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageSent {
    id: Uuid,
    /// The message's sequence number in the lesson's channel.
    seq: u64,
    /// The message had been sent before with this `client_message_id`.
    duplicate: bool,
    version: u64,
    position: Option<String>,
}

/// Send a message to a lesson's participants: each gets a delivery, `sent`.
#[utoipa::path(post, path = "/api/v1/lessons/{id}/messages", tag = "chat", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Lesson id")), request_body = NewMessage,
    responses((status = 201, body = MessageSent), (status = 200, description = "A duplicate: the original message", body = MessageSent),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn send_message(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<NewMessage>,
) -> Result<(StatusCode, Json<MessageSent>), Problem> {
    let (status, sent) = send(&state, &caller, id, body).await?;
    Ok((status, Json(sent)))
}

/// Send `body` to lesson `id` as `caller`: the HTTP route and the realtime
/// socket's `chat.send` both do.
pub(crate) async fn send(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    body: NewMessage,
) -> Result<(StatusCode, MessageSent), Problem> {
    let grant = caller.authorize(state, Action::ChatSend).await?;
    if body.client_message_id.is_empty() || body.client_message_id.len() > 128 {
        return Err(Problem::invalid(
            "#/client_message_id",
            "must be 1 to 128 bytes",
        ));
    }
    let text = MessageText::parse(&body.text).map_err(|why| Problem::invalid("#/text", why.0))?;
    let sent = match state
        .classroom
        .send(
            id,
            actor(caller, grant),
            body.client_message_id,
            text,
            &caller.metadata(),
        )
        .await
    {
        Ok(s) => s,
        Err(e) => return Err(refusal(state, caller, Action::ChatSend, e).await),
    };
    let status = if sent.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        MessageSent {
            id: sent.message_id,
            seq: sent.seq,
            duplicate: sent.duplicate,
            version: sent.version,
            position: sent.position.map(|p| p.to_string()),
        },
    ))
}

/// A lesson's messages in sequence order (participants, admins, auditors).
#[utoipa::path(get, path = "/api/v1/lessons/{id}/messages", tag = "chat", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Lesson id"), CursorParams, Consistency),
    responses((status = 200, body = CursorPage<MessageRow>), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn list_messages(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiQuery(cursor): ApiQuery<CursorParams>,
    ApiQuery(consistency): ApiQuery<Consistency>,
) -> Result<Json<CursorPage<MessageRow>>, Problem> {
    may_read(&state, &caller, id, Action::ChatRead).await?;
    let keyset = cursor.keyset::<i64>()?;
    consistency.wait(&state, "chat").await?;
    let rows = read::messages(
        &state.read_pool,
        id,
        keyset.after.unwrap_or(0),
        keyset.fetch(),
    )
    .await?;
    Ok(Json(keyset.page(rows, |m| m.seq)))
}

/// An acknowledgement: every delivery to the caller in the lesson up to and
/// including `up_to_seq` moves forward to `status`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// The lesson whose deliveries are acknowledged.
    lesson_id: Uuid,
    /// Up to and including this message; at most the channel's last.
    #[schema(minimum = 0)]
    up_to_seq: u64,
    /// `delivered` or `read`.
    #[schema(value_type = String, example = "read", pattern = "^(delivered|read)$")]
    status: AckStatus,
}

/// The caller's marks after an acknowledgement.
#[derive(Debug, Serialize, ToSchema)]
pub struct Acked {
    /// False when the acknowledgement was not ahead of the marks: nothing
    /// was changed or recorded.
    changed: bool,
    version: u64,
    position: Option<String>,
}

/// Acknowledge deliveries, forward only (sent → delivered → read).
#[utoipa::path(post, path = "/api/v1/deliveries/ack", tag = "chat", security(("bearer" = [])), request_body = Ack,
    responses((status = 200, body = Acked), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn acknowledge(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Ack>,
) -> Result<Json<Acked>, Problem> {
    let grant = caller.authorize(&state, Action::ChatAck).await?;
    if body.up_to_seq == 0 {
        return Err(Problem::invalid("#/up_to_seq", "must be at least 1"));
    }
    match state
        .classroom
        .acknowledge(
            body.lesson_id,
            actor(&caller, grant),
            body.up_to_seq,
            body.status,
            &caller.metadata(),
        )
        .await
    {
        Ok(c) => Ok(Json(Acked {
            changed: !c.events.is_empty(),
            version: c.version,
            position: c.position.map(|p| p.to_string()),
        })),
        Err(e) => Err(refusal(&state, &caller, Action::ChatAck, e).await),
    }
}

/// What a reconnecting client missed: the caller's unacknowledged
/// deliveries, in the order they were sent.
#[utoipa::path(get, path = "/api/v1/me/deliveries/pending", tag = "chat", security(("bearer" = [])), params(CursorParams, Consistency),
    responses((status = 200, body = CursorPage<PendingRow>), (status = 400, body = Problem)))]
async fn pending(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(cursor): ApiQuery<CursorParams>,
    ApiQuery(consistency): ApiQuery<Consistency>,
) -> Result<Json<CursorPage<PendingRow>>, Problem> {
    caller.authorize(&state, Action::ChatRead).await?;
    let keyset = cursor.keyset::<(DateTime<Utc>, Uuid, i64)>()?;
    consistency.wait(&state, "chat").await?;
    let rows = read::pending(
        &state.read_pool,
        caller.user_id,
        keyset.after,
        keyset.fetch(),
    )
    .await?;
    Ok(Json(keyset.page(rows, |p| {
        (p.message.sent_at, p.message.lesson_id, p.message.seq)
    })))
}
