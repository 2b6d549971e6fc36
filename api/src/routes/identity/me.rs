//! `/api/v1/me*`: the caller's profile, sessions and permissions.

use axum::extract::{Path, State};
use axum::Json;
use lectern_domain::identity::user::RevokeReason;
use lectern_domain::identity::{DisplayName, UserCommand};
use lectern_domain::policy::Action;
use lectern_projections::identity::{self, SessionRow, UserRow};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::accepted::CommandAccepted;
use crate::app::AppState;
use crate::auth::{permissions, Caller, Permission};
use crate::extract::{ApiJson, ApiQuery};
use crate::pagination::Consistency;
use crate::problem::{Code, Problem};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me, update_me))
        .routes(routes!(sessions))
        .routes(routes!(end_session))
        .routes(routes!(my_permissions))
}

/// The caller's profile from the `users` read model.
#[utoipa::path(get, path = "/api/v1/me", tag = "me", security(("bearer" = [])), params(Consistency),
    responses((status = 200, body = UserRow), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn me(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(consistency): ApiQuery<Consistency>,
) -> Result<Json<UserRow>, Problem> {
    caller.authorize(&state, Action::MeRead).await?;
    consistency.wait(&state, "identity").await?;
    identity::user(&state.read_pool, caller.user_id)
        .await?
        .map(Json)
        .ok_or_else(|| {
            Problem::new(
                Code::NOT_FOUND,
                "The profile is not in the read model yet; retry with consistent_with.",
            )
        })
}

/// Profile changes.
#[derive(Deserialize, ToSchema)]
pub struct UpdateMe {
    display_name: String,
}

/// Update the caller's profile.
#[utoipa::path(patch, path = "/api/v1/me", tag = "me", security(("bearer" = [])), request_body = UpdateMe,
    responses((status = 200, body = CommandAccepted), (status = 401, body = Problem), (status = 422, body = Problem)))]
async fn update_me(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<UpdateMe>,
) -> Result<Json<CommandAccepted>, Problem> {
    caller.authorize(&state, Action::MeUpdate).await?;
    let name = DisplayName::parse(&body.display_name)
        .map_err(|e| Problem::invalid("#/display_name", e.to_string()))?;
    let command = UserCommand::UpdateProfile {
        display_name: name.as_str().to_owned(),
    };
    let committed = state
        .identity
        .execute(caller.user_id, command, &caller.metadata())
        .await?;
    Ok(Json(CommandAccepted::new(caller.user_id, &committed)))
}

/// A session, marked if it is the caller's current one.
#[derive(Serialize, ToSchema)]
pub struct MySession {
    #[serde(flatten)]
    session: SessionRow,
    current: bool,
}

/// The caller's live sessions, newest first.
#[utoipa::path(get, path = "/api/v1/me/sessions", tag = "me", security(("bearer" = [])), params(Consistency),
    responses((status = 200, body = [MySession]), (status = 401, body = Problem)))]
async fn sessions(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(consistency): ApiQuery<Consistency>,
) -> Result<Json<Vec<MySession>>, Problem> {
    caller.authorize(&state, Action::SessionRead).await?;
    consistency.wait(&state, "identity").await?;
    let rows = identity::sessions_of(&state.read_pool, caller.user_id, false).await?;
    Ok(Json(
        rows.into_iter()
            .map(|s| MySession {
                current: s.id == caller.session_id,
                session: s,
            })
            .collect(),
    ))
}

/// End one of the caller's sessions; its tokens stop working at once.
#[utoipa::path(delete, path = "/api/v1/me/sessions/{id}", tag = "me", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Session id")),
    responses((status = 200, body = CommandAccepted), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn end_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<CommandAccepted>, Problem> {
    caller.authorize(&state, Action::SessionRevoke).await?;
    // The command runs on the caller's own account, so only their own
    // sessions can be found: ownership holds by construction.
    let command = UserCommand::RevokeSession {
        session_id: id,
        reason: RevokeReason::UserRequest,
    };
    let committed = state
        .identity
        .execute(caller.user_id, command, &caller.metadata())
        .await?;
    Ok(Json(CommandAccepted::new(id, &committed)))
}

/// What the caller's role may do, from the policy table.
#[utoipa::path(get, path = "/api/v1/me/permissions", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = [Permission]), (status = 401, body = Problem)))]
async fn my_permissions(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Permission>>, Problem> {
    caller.authorize(&state, Action::MeRead).await?;
    Ok(Json(permissions(caller.role)))
}
