//! `/api/v1/bulk/lessons`: up to 100 lessons created, changed or cancelled
//! in one request, each on its own or all together.

use axum::extract::State;
use axum::Json;
use lectern_commands::classroom::{BulkItem, BulkResult};
use lectern_domain::policy::Action;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::lessons::{LessonChanges, NewLesson};
use super::{actor, refusal};
use crate::app::AppState;
use crate::auth::Caller;
use crate::extract::ApiJson;
use crate::problem::{Code, FieldError, Problem};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(bulk_lessons))
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
    let shape = |e: serde_json::Error| Problem::invalid(&base, e.to_string());
    match action {
        BulkAction::Create => {
            let new: NewLesson = serde_json::from_value(item).map_err(shape)?;
            Ok(BulkItem::Create(new.details(&base)?))
        }
        BulkAction::Update => {
            // `{id, ...changes}`: the id apart, the rest as PATCH takes it.
            let mut item = item;
            let id = item
                .as_object_mut()
                .and_then(|o| o.remove("id"))
                .and_then(|v| serde_json::from_value::<Uuid>(v).ok())
                .ok_or_else(|| Problem::invalid(&format!("{base}/id"), "must be a lesson id"))?;
            let changes: LessonChanges = serde_json::from_value(item).map_err(shape)?;
            Ok(BulkItem::Update(id, changes.patch(&base)?))
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
        return Err(Problem::invalid("#/items", "must hold 1 to 100 items"));
    }
    let total = body.items.len();
    let parsed: Vec<Result<BulkItem, Problem>> = body
        .items
        .into_iter()
        .enumerate()
        .map(|(i, item)| parse_item(body.action, i, item))
        .collect();
    let by = actor(&caller, grant);
    let meta = caller.metadata();
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
            Code::BULK_REJECTED,
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
