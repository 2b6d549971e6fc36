//! `/health/live` and `/health/ready`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::problem::{Code, Problem};

/// The health routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
}

/// The liveness answer.
#[derive(Serialize, ToSchema)]
pub struct Live {
    status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "The process is serving", body = Live)))]
async fn live() -> Json<Live> {
    Json(Live { status: "ok" })
}

/// One readiness check.
#[derive(Serialize, ToSchema)]
pub struct Check {
    ok: bool,
    detail: String,
}

/// The readiness answer.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    status: &'static str,
    database: Check,
    migrations: Check,
    projections: Check,
}

/// How long readiness waits for the database.
const READY_DB_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Ready to serve: the database answers, every migration is applied, and no
/// projection has failed or fallen more than the configured lag behind.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, description = "Ready", body = Ready),
              (status = 503, description = "Not ready; the body says which check failed", body = Problem,
               content_type = "application/problem+json")))]
async fn ready(State(state): State<AppState>) -> Response {
    // A database that does not answer within half a second is down, as far
    // as a load balancer needs to know: say so at once, and skip the checks
    // that would only wait for it again.
    let probe = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool);
    let database = match tokio::time::timeout(READY_DB_TIMEOUT, probe).await {
        Ok(Ok(_)) => Check {
            ok: true,
            detail: "reachable".into(),
        },
        Ok(Err(e)) => Check {
            ok: false,
            detail: format!("unreachable: {e}"),
        },
        Err(_) => Check {
            ok: false,
            detail: format!("no answer within {} ms", READY_DB_TIMEOUT.as_millis()),
        },
    };
    if !database.ok {
        let skipped = || Check {
            ok: false,
            detail: "not checked: the database is unreachable".into(),
        };
        return not_ready(Ready {
            status: "not_ready",
            database,
            migrations: skipped(),
            projections: skipped(),
        });
    }
    let expected = lectern_commands::MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0);
    let migrations = match sqlx::query_scalar::<_, Option<i64>>(
        "SELECT max(version) FROM _sqlx_migrations WHERE success",
    )
    .fetch_one(&state.pool)
    .await
    {
        Ok(Some(v)) if v >= expected => Check {
            ok: true,
            detail: format!("at {v}"),
        },
        Ok(v) => Check {
            ok: false,
            detail: format!("at {}, expected {expected}", v.unwrap_or(0)),
        },
        Err(e) => Check {
            ok: false,
            detail: format!("unknown: {e}"),
        },
    };
    let projections = match lectern_projections::status::all(&state.pool).await {
        Ok(all) => {
            let max_lag = state.http.ready_max_lag;
            let bad: Vec<String> = all
                .iter()
                .filter(|p| p.status == "failed" || p.lag_events > max_lag)
                .map(|p| format!("{} ({}, {} behind)", p.name, p.status, p.lag_events))
                .collect();
            if bad.is_empty() {
                Check {
                    ok: true,
                    detail: format!("{} within {max_lag} events", all.len()),
                }
            } else {
                Check {
                    ok: false,
                    detail: format!("behind or failed: {}", bad.join(", ")),
                }
            }
        }
        Err(e) => Check {
            ok: false,
            detail: format!("unknown: {e}"),
        },
    };
    let ok = database.ok && migrations.ok && projections.ok;
    let body = Ready {
        status: if ok { "ready" } else { "not_ready" },
        database,
        migrations,
        projections,
    };
    if ok {
        (StatusCode::OK, Json(body)).into_response()
    } else {
        not_ready(body)
    }
}

/// 503 with the checks.
fn not_ready(body: Ready) -> Response {
    let mut extra = serde_json::to_value(&body)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    // The problem's own `status` is the HTTP status.
    extra.remove("status");
    Problem::new(Code::NOT_READY, "A readiness check failed; see the checks.")
        .with_extra(extra)
        .into_response()
}
