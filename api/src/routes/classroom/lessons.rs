//! `/api/v1/lessons` and `/api/v1/lessons/{id}`: scheduling, listing and
//! the lesson lifecycle.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use lectern_domain::classroom::lesson::{LessonDetails, LessonDraft, LessonPatch, PatchDraft};
use lectern_domain::classroom::{LessonCommand, LessonStatus};
use lectern_domain::policy::Action;
use lectern_projections::classroom::{self as read, LessonFilter, LessonRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{actor, problem_of, run};
use crate::accepted::CommandAccepted;
use crate::app::AppState;
use crate::auth::Caller;
use crate::extract::{check_time_param, ApiJson, ApiQuery};
use crate::pagination::{Consistency, CursorPage, CursorParams};
use crate::problem::{Code, Problem};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_lesson, list_lessons))
        .routes(routes!(get_lesson, update_lesson))
        .routes(routes!(start_lesson))
        .routes(routes!(end_lesson))
        .routes(routes!(cancel_lesson))
}

/// A price in the currency's minor unit.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct PriceBody {
    /// In the minor unit (cents); not negative.
    pub amount_minor: i64,
    /// ISO 4217 in any case, such as `eur` or `EUR`; answered in lowercase.
    pub currency: String,
}

/// A lesson to schedule.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLesson {
    /// 1 to 200 characters.
    title: String,
    #[serde(default)]
    description: String,
    /// In the future.
    starts_at: DateTime<Utc>,
    /// 15 to 480.
    duration_minutes: i64,
    /// 1 to 500.
    capacity: i64,
    price: PriceBody,
}

/// A change to a lesson; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LessonChanges {
    title: Option<String>,
    description: Option<String>,
    starts_at: Option<DateTime<Utc>>,
    duration_minutes: Option<i64>,
    capacity: Option<i64>,
    price: Option<PriceBody>,
}

impl LessonChanges {
    /// The patch in these changes; a 422 names each invalid field under
    /// `base`, and an empty change.
    pub(super) fn patch(self, base: &str) -> Result<LessonPatch, Problem> {
        let draft = PatchDraft {
            title: self.title,
            description: self.description,
            starts_at: self.starts_at,
            duration_minutes: self.duration_minutes,
            capacity: self.capacity,
            price: self.price.map(|p| (p.amount_minor, p.currency)),
        };
        if draft == PatchDraft::default() {
            return Err(Problem::invalid(base, "must change at least one field"));
        }
        LessonPatch::parse(&draft, Utc::now()).map_err(|issues| problem_of(base, issues))
    }
}

impl NewLesson {
    /// The details in this request; a 422 names each invalid field under
    /// `base`.
    pub(super) fn details(self, base: &str) -> Result<LessonDetails, Problem> {
        let draft = LessonDraft {
            title: self.title,
            description: self.description,
            starts_at: self.starts_at,
            duration_minutes: self.duration_minutes,
            capacity: self.capacity,
            price_amount_minor: self.price.amount_minor,
            price_currency: self.price.currency,
        };
        LessonDetails::parse(&draft, Utc::now()).map_err(|issues| problem_of(base, issues))
    }
}

/// Schedule a lesson taught by the caller.
#[utoipa::path(post, path = "/api/v1/lessons", tag = "lessons", security(("bearer" = [])), request_body = NewLesson,
    responses((status = 201, body = CommandAccepted), (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn create_lesson(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewLesson>,
) -> Result<(StatusCode, Json<CommandAccepted>), Problem> {
    caller.authorize(&state, Action::LessonCreate).await?;
    let details = body.details("#")?;
    let (id, committed) = state
        .classroom
        .schedule(caller.user_id, details, &caller.metadata())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CommandAccepted::new(id, &committed)),
    ))
}

/// Lesson list filters and paging.
#[derive(Debug, Deserialize, IntoParams)]
pub struct LessonQuery {
    /// Only this tutor's lessons.
    tutor_id: Option<Uuid>,
    /// `scheduled`, `live`, `ended` or `cancelled`.
    status: Option<String>,
    /// Lessons starting at or after this time.
    starts_from: Option<DateTime<Utc>>,
    /// Lessons starting before this time.
    starts_before: Option<DateTime<Utc>>,
    /// Only lessons the caller teaches or is enrolled in.
    mine: Option<bool>,
}

/// Lessons in start-time order, cursor-paged.
#[utoipa::path(get, path = "/api/v1/lessons", tag = "lessons", security(("bearer" = [])), params(LessonQuery, CursorParams, Consistency),
    responses((status = 200, body = CursorPage<LessonRow>), (status = 400, body = Problem), (status = 422, body = Problem)))]
async fn list_lessons(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<LessonQuery>,
    ApiQuery(cursor): ApiQuery<CursorParams>,
    ApiQuery(consistency): ApiQuery<Consistency>,
) -> Result<Json<CursorPage<LessonRow>>, Problem> {
    caller.authorize(&state, Action::LessonRead).await?;
    let keyset = cursor.keyset::<(DateTime<Utc>, Uuid)>()?;
    check_time_param("starts_from", q.starts_from)?;
    check_time_param("starts_before", q.starts_before)?;
    if let Some(s) = &q.status {
        if LessonStatus::parse(s).is_none() {
            return Err(Problem::invalid(
                "#/status",
                "must be scheduled, live, ended or cancelled",
            ));
        }
    }
    consistency.wait(&state, "lessons").await?;
    let filter = LessonFilter {
        tutor_id: q.tutor_id,
        status: q.status,
        starts_from: q.starts_from,
        starts_before: q.starts_before,
        mine: q.mine.unwrap_or(false).then_some(caller.user_id),
    };
    let rows = read::lessons_page(&state.read_pool, &filter, keyset.after, keyset.fetch()).await?;
    Ok(Json(keyset.page(rows, |l| (l.starts_at, l.id))))
}

/// One lesson, with its enrolled count, seats left and timing.
#[utoipa::path(get, path = "/api/v1/lessons/{id}", tag = "lessons", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Lesson id"), Consistency),
    responses((status = 200, body = LessonRow), (status = 404, body = Problem)))]
async fn get_lesson(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiQuery(consistency): ApiQuery<Consistency>,
) -> Result<Json<LessonRow>, Problem> {
    caller.authorize(&state, Action::LessonRead).await?;
    consistency.wait(&state, "lessons").await?;
    read::lesson(&state.read_pool, id)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::new(Code::LESSON_NOT_FOUND, "No such lesson."))
}

/// Change a scheduled lesson (its tutor or an admin).
#[utoipa::path(patch, path = "/api/v1/lessons/{id}", tag = "lessons", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Lesson id")), request_body = LessonChanges,
    responses((status = 200, body = CommandAccepted), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, description = "The price is on an open or paid invoice", body = Problem), (status = 422, body = Problem)))]
async fn update_lesson(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<LessonChanges>,
) -> Result<Json<CommandAccepted>, Problem> {
    let grant = caller.authorize(&state, Action::LessonUpdate).await?;
    let patch = body.patch("#")?;
    if let Some(price) = &patch.price {
        crate::routes::billing::refuse_invoiced_price_change(&state, &caller, id, price).await?;
    }
    let command = LessonCommand::Update {
        by: actor(&caller, grant),
        patch,
        now: Utc::now(),
    };
    run(&state, &caller, Action::LessonUpdate, id, command).await
}

/// Start a scheduled lesson: its board opens for drawing.
#[utoipa::path(post, path = "/api/v1/lessons/{id}/start", tag = "lessons", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Lesson id")),
    responses((status = 200, body = CommandAccepted), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn start_lesson(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<CommandAccepted>, Problem> {
    let grant = caller.authorize(&state, Action::LessonStart).await?;
    let by = actor(&caller, grant);
    run(
        &state,
        &caller,
        Action::LessonStart,
        id,
        LessonCommand::Start { by },
    )
    .await
}

/// End a live lesson.
#[utoipa::path(post, path = "/api/v1/lessons/{id}/end", tag = "lessons", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Lesson id")),
    responses((status = 200, body = CommandAccepted), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn end_lesson(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<CommandAccepted>, Problem> {
    let grant = caller.authorize(&state, Action::LessonEnd).await?;
    let by = actor(&caller, grant);
    run(
        &state,
        &caller,
        Action::LessonEnd,
        id,
        LessonCommand::End { by },
    )
    .await
}

/// Cancel a scheduled lesson.
#[utoipa::path(post, path = "/api/v1/lessons/{id}/cancel", tag = "lessons", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Lesson id")),
    responses((status = 200, body = CommandAccepted), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn cancel_lesson(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<CommandAccepted>, Problem> {
    let grant = caller.authorize(&state, Action::LessonCancel).await?;
    let by = actor(&caller, grant);
    let command = LessonCommand::Cancel { by, reason: None };
    run(&state, &caller, Action::LessonCancel, id, command).await
}
