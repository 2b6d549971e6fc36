//! `/api/v1/admin/users*`: account administration, for admins.

use axum::extract::{OriginalUri, Path, State};
use axum::Json;
use lectern_domain::identity::{Role, UserCommand};
use lectern_domain::policy::Action;
use lectern_projections::identity::{self, UserRow};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::accepted::CommandAccepted;
use crate::app::AppState;
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery};
use crate::pagination::{Consistency, Page, PageParams, CONSISTENCY_BOUND};
use crate::problem::{Code, Problem};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(change_role))
        .routes(routes!(deactivate))
        .routes(routes!(force_reset))
}

/// Filters of the user list.
#[derive(Deserialize, IntoParams)]
pub struct UserFilter {
    /// admin, auditor, tutor, student or guest.
    role: Option<String>,
    /// active or deactivated.
    status: Option<String>,
}

/// Accounts, oldest first, in page mode.
#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin", security(("bearer" = [])),
    params(PageParams, UserFilter, Consistency),
    responses((status = 200, body = inline(Page<UserRow>)), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 422, body = Problem)))]
async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(filter): ApiQuery<UserFilter>,
    ApiQuery(consistency): ApiQuery<Consistency>,
) -> Result<Json<Page<UserRow>>, Problem> {
    caller.authorize(&state, Action::AdminUsersRead).await?;
    let request = page.parse()?;
    if filter
        .role
        .as_deref()
        .is_some_and(|r| Role::parse(r).is_none())
    {
        return Err(Problem::invalid(
            "#/role",
            "must be one of admin, auditor, tutor, student, guest",
        ));
    }
    if filter
        .status
        .as_deref()
        .is_some_and(|s| s != "active" && s != "deactivated")
    {
        return Err(Problem::invalid(
            "#/status",
            "must be active or deactivated",
        ));
    }
    consistency.wait(&state, "identity").await?;
    let (rows, total) = identity::users_page(
        &state.read_pool,
        filter.role.as_deref(),
        filter.status.as_deref(),
        request.offset(),
        i64::from(request.page_size),
    )
    .await?;
    Ok(Json(Page::new(rows, request, total, &uri)))
}

/// A new role.
#[derive(Deserialize, ToSchema)]
pub struct NewRole {
    role: String,
}

/// 409 `last_admin` when an admin would deactivate or demote itself while no
/// other admin is active: only the CLI could recover from that.
///
/// The count comes from the `users` read model once it has caught up with
/// the log; two last admins acting on themselves at the same instant could
/// both pass (there is no aggregate over all admins to serialise them).
async fn keep_an_admin(state: &AppState, caller: &Caller, target: Uuid) -> Result<(), Problem> {
    if target != caller.user_id || caller.role != Role::Admin {
        return Ok(());
    }
    match identity::other_active_admins(&state.pool, target, CONSISTENCY_BOUND).await? {
        Some(0) => Err(Problem::new(
            Code::LAST_ADMIN,
            "You are the last active admin: make another admin first.",
        )),
        Some(_) => Ok(()),
        None => Err(Problem::unavailable(
            "the identity read model did not catch up in time",
        )),
    }
}

/// Change an account's role. Its existing access tokens stop working at once;
/// a refresh issues tokens with the new role.
#[utoipa::path(patch, path = "/api/v1/admin/users/{id}/role", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = NewRole,
    responses((status = 200, body = CommandAccepted), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, description = "The last active admin would demote itself", body = Problem),
              (status = 422, body = Problem)))]
async fn change_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<NewRole>,
) -> Result<Json<CommandAccepted>, Problem> {
    caller.authorize(&state, Action::AdminUsersRole).await?;
    let role = Role::parse(&body.role).ok_or_else(|| {
        Problem::invalid(
            "#/role",
            "must be one of admin, auditor, tutor, student, guest",
        )
    })?;
    if role != Role::Admin {
        keep_an_admin(&state, &caller, id).await?;
    }
    let committed = state
        .identity
        .execute(id, UserCommand::ChangeRole { role }, &caller.metadata())
        .await?;
    Ok(Json(CommandAccepted::new(id, &committed)))
}

/// Deactivate an account; all its sessions end at once.
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/deactivate", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = CommandAccepted), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, description = "The last active admin would deactivate itself", body = Problem)))]
async fn deactivate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<CommandAccepted>, Problem> {
    caller
        .authorize(&state, Action::AdminUsersDeactivate)
        .await?;
    keep_an_admin(&state, &caller, id).await?;
    let committed = state
        .identity
        .execute(id, UserCommand::Deactivate, &caller.metadata())
        .await?;
    Ok(Json(CommandAccepted::new(id, &committed)))
}

/// Force a password change: until the user changes it, their tokens allow
/// only `POST /api/v1/auth/change-password`.
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/reset-password", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = CommandAccepted), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn force_reset(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<CommandAccepted>, Problem> {
    caller
        .authorize(&state, Action::AdminUsersResetPassword)
        .await?;
    let committed = state
        .identity
        .execute(id, UserCommand::ForcePasswordReset, &caller.metadata())
        .await?;
    Ok(Json(CommandAccepted::new(id, &committed)))
}
