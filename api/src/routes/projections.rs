//! `/api/v1/admin/projections*`: projection status (admins and auditors)
//! and rebuilds (admins).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use lectern_domain::policy::Action;
use lectern_projections::ProjectionStatus;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::Caller;
use crate::problem::{Code, Problem};

/// The projection admin routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(projections))
        .routes(routes!(rebuild))
}

/// Every projection's position, lag, state and last error.
#[utoipa::path(get, path = "/api/v1/admin/projections", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = [ProjectionStatus]), (status = 403, body = Problem)))]
async fn projections(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ProjectionStatus>>, Problem> {
    caller
        .authorize(&state, Action::AdminProjectionsRead)
        .await?;
    Ok(Json(lectern_projections::status::all(&state.pool).await?))
}

/// The answer to a rebuild request.
#[derive(Serialize, ToSchema)]
pub struct RebuildRequested {
    name: String,
    status: &'static str,
}

/// Rebuild a projection from position zero into new tables, then swap them
/// in; the API keeps serving the old tables meanwhile.
#[utoipa::path(post, path = "/api/v1/admin/projections/{name}/rebuild", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 202, body = RebuildRequested), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn rebuild(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<RebuildRequested>), Problem> {
    caller
        .authorize(&state, Action::AdminProjectionsRebuild)
        .await?;
    let known = lectern_projections::all().iter().any(|p| p.name() == name);
    if !known {
        return Err(Problem::new(
            Code::PROJECTION_NOT_FOUND,
            "No projection has this name.",
        ));
    }
    lectern_projections::runner::request_rebuild(&state.pool, &name).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RebuildRequested {
            name,
            status: "rebuild_requested",
        }),
    ))
}
