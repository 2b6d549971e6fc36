//! `/api/v1/lessons*` and `/api/v1/bulk/lessons`: scheduling, the lesson
//! lifecycle, enrolment, and bulk changes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use lectern_commands::classroom::{BulkItem, BulkResult, ClassroomError};
use lectern_domain::classroom::lesson::{FieldIssue, LessonDetails, LessonPatch, Price};
use lectern_domain::classroom::{Actor, LessonCommand, LessonStatus};
use lectern_domain::identity::Role;
use lectern_domain::policy::Action;
use lectern_projections::classroom::{self as read, LessonFilter, LessonRow};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery};
use crate::pagination::{decode_cursor, encode_cursor, limit, Consistency, CursorPage};
use crate::problem::{FieldError, Problem};
use crate::responses::{invalid, CommandAccepted};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_lesson, list_lessons))
        .routes(routes!(get_lesson, update_lesson))
        .routes(routes!(start_lesson))
        .routes(routes!(end_lesson))
        .routes(routes!(cancel_lesson))
        .routes(routes!(enroll))
        .routes(routes!(unenroll))
        .routes(routes!(bulk_lessons))
}

/// A classroom refusal as a problem; a 403 is recorded as a denial.
pub(crate) async fn refusal(
    state: &AppState,
    caller: &Caller,
    action: Action,
    e: ClassroomError,
) -> Problem {
    let p = Problem::from(e);
    if p.status == StatusCode::FORBIDDEN.as_u16() {
        caller.deny(state, action, &p.code, &p.detail).await
    } else {
        p
    }
}

/// The actor a grant makes of `caller`.
pub(crate) fn actor(caller: &Caller, grant: crate::auth::Grant) -> Actor {
    Actor {
        user_id: caller.user_id,
        own_only: grant.own_only,
    }
}

fn problem_of(issues: Vec<FieldIssue>) -> Problem {
    Problem::validation(
        issues
            .into_iter()
            .map(|i| FieldError {
                pointer: i.pointer,
                detail: i.detail,
            })
            .collect(),
    )
}

/// A price in the currency's minor unit.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct PriceBody {
    /// In the minor unit (cents); not negative.
    pub amount_minor: i64,
    /// ISO 4217, such as `EUR`.
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

/// Out-of-range numbers become 0, which every range check refuses.
fn small(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

impl LessonChanges {
    fn patch(self, base: &str) -> Result<LessonPatch, Vec<FieldIssue>> {
        let patch = LessonPatch {
            title: self.title,
            description: self.description,
            starts_at: self.starts_at,
            duration_minutes: self.duration_minutes.map(small),
            capacity: self.capacity.map(small),
            price: self.price.map(|p| Price {
                amount_minor: p.amount_minor,
                currency: p.currency,
            }),
        };
        if patch == LessonPatch::default() {
            return Err(vec![FieldIssue {
                pointer: base.to_owned(),
                detail: "must change at least one field".into(),
            }]);
        }
        let issues = patch.check(Utc::now(), base);
        if issues.is_empty() {
            Ok(patch)
        } else {
            Err(issues)
        }
    }
}

impl NewLesson {
    fn details(self, base: &str) -> Result<LessonDetails, Vec<FieldIssue>> {
        let details = LessonDetails {
            title: self.title.trim().to_owned(),
            description: self.description,
            starts_at: self.starts_at,
            duration_minutes: small(self.duration_minutes),
            capacity: small(self.capacity),
            price: Price {
                amount_minor: self.price.amount_minor,
                currency: self.price.currency,
            },
        };
        let issues = details.check(Utc::now(), base);
        if issues.is_empty() {
            Ok(details)
        } else {
            Err(issues)
        }
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
    let details = body.details("#").map_err(problem_of)?;
    let (id, committed) = state
        .classroom
        .schedule(caller.user_id, details, &caller.metadata("ScheduleLesson"))
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
    /// From the previous page's `next_cursor`.
    cursor: Option<String>,
    /// 1 to 100, default 50.
    limit: Option<u32>,
    consistent_with: Option<String>,
}

/// Lessons in start-time order, cursor-paged.
#[utoipa::path(get, path = "/api/v1/lessons", tag = "lessons", security(("bearer" = [])), params(LessonQuery),
    responses((status = 200, body = CursorPage<LessonRow>), (status = 400, body = Problem), (status = 422, body = Problem)))]
async fn list_lessons(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<LessonQuery>,
) -> Result<Json<CursorPage<LessonRow>>, Problem> {
    caller.authorize(&state, Action::LessonRead).await?;
    let limit = limit(q.limit)?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| {
            decode_cursor(c, |s| {
                let (at, id) = s.split_once('|')?;
                Some((
                    DateTime::parse_from_rfc3339(at).ok()?.to_utc(),
                    id.parse().ok()?,
                ))
            })
        })
        .transpose()?;
    if let Some(s) = &q.status {
        if LessonStatus::parse(s).is_none() {
            return Err(invalid(
                "#/status",
                "must be scheduled, live, ended or cancelled",
            ));
        }
    }
    Consistency {
        consistent_with: q.consistent_with,
    }
    .wait(&state.pool, "lessons")
    .await?;
    let filter = LessonFilter {
        tutor_id: q.tutor_id,
        status: q.status,
        starts_from: q.starts_from,
        starts_before: q.starts_before,
        mine: q.mine.unwrap_or(false).then_some(caller.user_id),
    };
    let (results, has_more) = read::lessons_page(&state.pool, &filter, after, limit).await?;
    let next_cursor = has_more
        .then(|| results.last())
        .flatten()
        .map(|l| encode_cursor(&format!("{}|{}", l.starts_at.to_rfc3339(), l.id)));
    Ok(Json(CursorPage {
        results,
        next_cursor,
        has_more,
    }))
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
    consistency.wait(&state.pool, "lessons").await?;
    read::lesson(&state.pool, id)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "lesson_not_found", "No such lesson."))
}

/// Change a scheduled lesson (its tutor or an admin).
#[utoipa::path(patch, path = "/api/v1/lessons/{id}", tag = "lessons", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Lesson id")), request_body = LessonChanges,
    responses((status = 200, body = CommandAccepted), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_lesson(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<LessonChanges>,
) -> Result<Json<CommandAccepted>, Problem> {
    let grant = caller.authorize(&state, Action::LessonUpdate).await?;
    let patch = body.patch("#").map_err(problem_of)?;
    let command = LessonCommand::Update {
        by: actor(&caller, grant),
        patch,
    };
    run(&state, &caller, Action::LessonUpdate, id, command).await
}

async fn run(
    state: &AppState,
    caller: &Caller,
    action: Action,
    id: Uuid,
    command: LessonCommand,
) -> Result<Json<CommandAccepted>, Problem> {
    let meta = caller.metadata("");
    match state.classroom.lesson(id, command, &meta).await {
        Ok(committed) => Ok(Json(CommandAccepted::new(id, &committed))),
        Err(e) => Err(refusal(state, caller, action, e).await),
    }
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

/// Who to enrol.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollment {
    /// The student; the caller when absent.
    student_id: Option<Uuid>,
}

/// Enrol a student: students enrol themselves, a lesson's tutor adds
/// students. Capacity holds under any concurrency.
#[utoipa::path(post, path = "/api/v1/lessons/{id}/enrollments", tag = "lessons", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Lesson id")), request_body = NewEnrollment,
    responses((status = 201, body = CommandAccepted), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "Full or already enrolled", body = Problem)))]
async fn enroll(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<NewEnrollment>,
) -> Result<(StatusCode, Json<CommandAccepted>), Problem> {
    let grant = caller.authorize(&state, Action::LessonEnroll).await?;
    let student_id = body.student_id.unwrap_or(caller.user_id);
    let is_student = if student_id == caller.user_id {
        caller.role == Role::Student
    } else {
        let user = state
            .identity
            .users
            .store()
            .load(&student_id.to_string())
            .await?;
        user.aggregate.role == Some(Role::Student)
            && user.aggregate.status == lectern_domain::identity::user::Status::Active
    };
    if !is_student {
        return Err(invalid(
            "#/student_id",
            "must be an active student's account",
        ));
    }
    let command = LessonCommand::Enroll {
        by: actor(&caller, grant),
        student_id,
    };
    let Json(accepted) = run(&state, &caller, Action::LessonEnroll, id, command).await?;
    Ok((StatusCode::CREATED, Json(accepted)))
}

/// Remove an enrolment: the student themselves, the lesson's tutor or an admin.
#[utoipa::path(delete, path = "/api/v1/lessons/{id}/enrollments/{student_id}", tag = "lessons", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Lesson id"), ("student_id" = Uuid, Path, description = "Student id")),
    responses((status = 200, body = CommandAccepted), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn unenroll(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, student_id)): Path<(Uuid, Uuid)>,
) -> Result<Json<CommandAccepted>, Problem> {
    let grant = caller.authorize(&state, Action::LessonUnenroll).await?;
    let command = LessonCommand::Unenroll {
        by: actor(&caller, grant),
        student_id,
    };
    run(&state, &caller, Action::LessonUnenroll, id, command).await
}

/// Most items in one bulk request.
pub const MAX_BULK_ITEMS: usize = 100;

/// What a bulk request does to each item.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BulkAction {
    Create,
    Update,
    Cancel,
}

/// Up to 100 lessons to create, update or cancel.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    action: BulkAction,
    /// For create: lessons as `POST /api/v1/lessons` takes them. For update:
    /// `{id, ...changes}`. For cancel: `{id}`.
    #[schema(value_type = Vec<Object>)]
    items: Vec<Value>,
    /// All or nothing: with `true`, any failing item means nothing is written.
    #[serde(default)]
    atomic: bool,
}

/// One item's outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkItemResult {
    index: usize,
    /// `succeeded`, `failed`, or `not_written` (a good item of a failed
    /// atomic request).
    status: &'static str,
    id: Option<Uuid>,
    version: Option<u64>,
    position: Option<String>,
    #[schema(value_type = Option<Object>)]
    error: Option<Value>,
}

/// The outcome of a bulk request.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkResponse {
    total: usize,
    succeeded: usize,
    failed: usize,
    results: Vec<BulkItemResult>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelItem {
    id: Uuid,
    #[serde(default)]
    reason: Option<String>,
}

fn parse_item(action: BulkAction, index: usize, item: Value) -> Result<BulkItem, Problem> {
    let base = format!("#/items/{index}");
    let shape = |e: serde_json::Error| invalid(&base, e.to_string());
    match action {
        BulkAction::Create => {
            let new: NewLesson = serde_json::from_value(item).map_err(shape)?;
            Ok(BulkItem::Create(new.details(&base).map_err(problem_of)?))
        }
        BulkAction::Update => {
            // `{id, ...changes}`: the id apart, the rest as PATCH takes it.
            let mut item = item;
            let id = item
                .as_object_mut()
                .and_then(|o| o.remove("id"))
                .and_then(|v| serde_json::from_value::<Uuid>(v).ok())
                .ok_or_else(|| invalid(&format!("{base}/id"), "must be a lesson id"))?;
            let changes: LessonChanges = serde_json::from_value(item).map_err(shape)?;
            Ok(BulkItem::Update(
                id,
                changes.patch(&base).map_err(problem_of)?,
            ))
        }
        BulkAction::Cancel => {
            let c: CancelItem = serde_json::from_value(item).map_err(shape)?;
            Ok(BulkItem::Cancel(c.id, c.reason))
        }
    }
}

fn error_body(p: &Problem) -> Value {
    serde_json::json!({"status": p.status, "code": p.code, "detail": p.detail, "errors": p.errors})
}

/// Create, update or cancel up to 100 lessons. With `atomic`, all succeed or
/// nothing is written (one append); otherwise each item stands alone.
#[utoipa::path(post, path = "/api/v1/bulk/lessons", tag = "lessons", security(("bearer" = [])), request_body = BulkRequest,
    responses((status = 200, body = BulkResponse), (status = 403, body = Problem),
        (status = 422, description = "Too many items, or an atomic request with a failing item (nothing written); `results` says which", body = Problem)))]
async fn bulk_lessons(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<BulkRequest>,
) -> Result<Json<BulkResponse>, Problem> {
    let action = match body.action {
        BulkAction::Create => Action::LessonCreate,
        BulkAction::Update => Action::LessonUpdate,
        BulkAction::Cancel => Action::LessonCancel,
    };
    let grant = caller.authorize(&state, action).await?;
    if body.items.len() > MAX_BULK_ITEMS || body.items.is_empty() {
        return Err(invalid("#/items", "must hold 1 to 100 items"));
    }
    let total = body.items.len();
    let parsed: Vec<Result<BulkItem, Problem>> = body
        .items
        .into_iter()
        .enumerate()
        .map(|(i, item)| parse_item(body.action, i, item))
        .collect();
    let by = actor(&caller, grant);
    let meta = caller.metadata("");
    let mut results: Vec<BulkItemResult> = Vec::with_capacity(total);
    if body.atomic {
        let mut refusals: Vec<Option<Problem>> = Vec::with_capacity(total);
        let mut items = Vec::new();
        for p in parsed {
            match p {
                Ok(item) => {
                    items.push(item);
                    refusals.push(None);
                }
                Err(p) => refusals.push(Some(p)),
            }
        }
        if refusals.iter().all(Option::is_none) {
            match state
                .classroom
                .bulk_atomic(caller.user_id, by, items, &meta)
                .await
            {
                Ok(done) => {
                    for (index, r) in done.into_iter().enumerate() {
                        results.push(succeeded(index, r));
                    }
                    return Ok(Json(BulkResponse {
                        total,
                        succeeded: total,
                        failed: 0,
                        results,
                    }));
                }
                Err(errors) => {
                    refusals = Vec::with_capacity(total);
                    for e in errors {
                        refusals.push(match e {
                            Some(e) => Some(refusal(&state, &caller, action, e).await),
                            None => None,
                        });
                    }
                }
            }
        }
        let failed = refusals.iter().filter(|r| r.is_some()).count();
        let mut errors = Vec::new();
        for (index, r) in refusals.into_iter().enumerate() {
            if let Some(p) = &r {
                errors.push(FieldError {
                    pointer: format!("#/items/{index}"),
                    detail: p.detail.clone(),
                });
            }
            results.push(BulkItemResult {
                index,
                status: if r.is_some() { "failed" } else { "not_written" },
                id: None,
                version: None,
                position: None,
                error: r.as_ref().map(error_body),
            });
        }
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bulk_rejected",
            format!("{failed} of {total} items failed; with atomic set, nothing was written."),
        );
        p.errors = errors;
        p.extra = serde_json::to_value(BulkResponse {
            total,
            succeeded: 0,
            failed,
            results,
        })
        .ok()
        .and_then(|v| v.as_object().cloned());
        return Err(p);
    }
    let mut items = Vec::new();
    let mut slots = Vec::new();
    for (index, p) in parsed.into_iter().enumerate() {
        match p {
            Ok(item) => {
                slots.push(index);
                items.push(item);
            }
            Err(p) => results.push(failed(index, None, &p)),
        }
    }
    let done = state.classroom.bulk(caller.user_id, by, items, &meta).await;
    for (index, r) in slots.into_iter().zip(done) {
        match r.outcome {
            Ok(_) => results.push(succeeded(index, r)),
            Err(e) => {
                let p = refusal(&state, &caller, action, e).await;
                results.push(failed(index, r.id, &p));
            }
        }
    }
    results.sort_by_key(|r| r.index);
    let ok = results.iter().filter(|r| r.status == "succeeded").count();
    Ok(Json(BulkResponse {
        total,
        succeeded: ok,
        failed: total - ok,
        results,
    }))
}

fn succeeded(index: usize, r: BulkResult) -> BulkItemResult {
    let committed = r.outcome.ok();
    BulkItemResult {
        index,
        status: "succeeded",
        id: r.id,
        version: committed.as_ref().map(|c| c.version),
        position: committed
            .as_ref()
            .and_then(|c| c.position.map(|p| p.to_string())),
        error: None,
    }
}

fn failed(index: usize, id: Option<Uuid>, p: &Problem) -> BulkItemResult {
    BulkItemResult {
        index,
        status: "failed",
        id,
        version: None,
        position: None,
        error: Some(error_body(p)),
    }
}
