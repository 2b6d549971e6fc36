//! `/api/v1/audit/events`: the audit log projection, for admins and auditors.

use axum::extract::{OriginalUri, State};
use axum::Json;
use chrono::{DateTime, Utc};
use lectern_domain::policy::Action;
use lectern_domain::Position;
use lectern_projections::audit::{self, AuditEntry, AuditFilter};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::Caller;
use crate::extract::{check_time_param, ApiQuery};
use crate::pagination::{Consistency, CursorPage, CursorParams};
use crate::problem::Problem;

/// The audit log's routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// Filters of the audit log.
#[derive(Deserialize, IntoParams)]
pub struct AuditQuery {
    /// The actor's user id (or `system`).
    actor: Option<String>,
    aggregate_type: Option<String>,
    aggregate_id: Option<String>,
    /// The event type, such as `SessionRevoked` or `AccessDenied`.
    event_type: Option<String>,
    /// Events recorded at or after this time (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Events recorded before this time (RFC 3339).
    to: Option<DateTime<Utc>>,
}

/// Audit entries, newest first, in cursor mode. Emails and phones in the
/// summaries are masked and secrets redacted. Every read is recorded as an
/// `AuditHistoryRead` event.
#[utoipa::path(get, path = "/api/v1/audit/events", tag = "audit", security(("bearer" = [])),
    params(CursorParams, AuditQuery, Consistency),
    responses((status = 200, body = inline(CursorPage<AuditEntry>)), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn events(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(cursor): ApiQuery<CursorParams>,
    ApiQuery(q): ApiQuery<AuditQuery>,
    ApiQuery(consistency): ApiQuery<Consistency>,
) -> Result<Json<CursorPage<AuditEntry>>, Problem> {
    caller.authorize(&state, Action::AuditRead).await?;
    let keyset = cursor.keyset::<Position>()?;
    check_time_param("from", q.from)?;
    check_time_param("to", q.to)?;
    consistency.wait(&state, "audit_log").await?;
    super::record_read(&state, &caller, &uri).await?;
    let filter = AuditFilter {
        actor_id: q.actor,
        aggregate_type: q.aggregate_type,
        aggregate_id: q.aggregate_id,
        event_type: q.event_type,
        from: q.from,
        to: q.to,
    };
    let rows = audit::audit_page(
        &state.read_pool,
        &filter,
        keyset.after,
        i64::from(keyset.fetch()),
    )
    .await?;
    Ok(Json(keyset.page(rows, |r| {
        r.position
            .parse::<Position>()
            .expect("the audit query writes positions as <transaction>.<position>")
    })))
}
