//! `/api/v1/boards*`: server-authoritative whiteboards. A board's id is its
//! lesson's id.

use axum::extract::{Path, State};
use axum::Json;
use lectern_domain::classroom::board::{OpRequest, MAX_ID_LEN, MAX_LAMPORT, MAX_OPS_PER_REQUEST};
use lectern_domain::classroom::values::OpData;
use lectern_domain::classroom::{ConflictPolicy, OpOutcome};
use lectern_domain::policy::Action;
use lectern_projections::classroom::{self as read, BoardOpRow, BoardRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{actor, may_read, refusal};
use crate::accepted::CommandAccepted;
use crate::app::AppState;
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery};
use crate::pagination::{Consistency, CursorPage, CursorParams};
use crate::problem::{Code, FieldError, Problem};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(apply_op, list_ops))
        .routes(routes!(apply_batch))
        .routes(routes!(get_board))
        .routes(routes!(set_policy))
}

/// One operation. `kind` is add, update, delete, move, transform, batch,
/// undo, redo or clear; `data` is at most 64 KiB of JSON.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpBody {
    /// The sending client's id, 1 to 128 bytes (bound to the user who first
    /// uses it).
    #[schema(min_length = 1, max_length = 128)]
    client_id: String,
    /// Unique per client, 1 to 128 bytes; a retry with the same id gets the
    /// original answer.
    #[schema(min_length = 1, max_length = 128)]
    op_id: String,
    /// The client's Lamport clock: at most 2^53 - 1, and at most 2^20 ahead
    /// of the board's (else the op is rejected, `lamport_out_of_range`).
    #[schema(minimum = 0, maximum = 9_007_199_254_740_991_u64)]
    lamport: u64,
    /// add, update, delete, move, transform, batch, undo, redo or clear.
    #[schema(value_type = String, example = "add",
             pattern = "^(add|update|delete|move|transform|batch|undo|redo|clear)$")]
    kind: lectern_domain::classroom::OpKind,
    /// The element edited: required by add, update, delete, move and
    /// transform; 1 to 128 bytes.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    element_id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

/// Up to 100 operations, applied in order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpBatch {
    /// 1 to 100 operations.
    #[schema(min_items = 1, max_items = 100)]
    ops: Vec<OpBody>,
}

/// The answer to one operation.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpResult {
    client_id: String,
    op_id: String,
    /// `applied`, `duplicate` (the original answer, again) or `rejected`.
    status: &'static str,
    server_version: Option<u64>,
    lamport: Option<u64>,
    /// Why it was rejected: `unknown_element`, `element_exists`,
    /// `superseded`, `conflict`, `nothing_to_undo`, ...
    reason: Option<&'static str>,
}

/// The answers, one per operation in order, and the command's position.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpsApplied {
    results: Vec<OpResult>,
    /// The board stream's version after the request.
    version: u64,
    /// Pass as `consistent_with` to read the board including these ops.
    position: Option<String>,
}

/// The operations of a request, each checked; a 422 names every invalid
/// field under `base` (`#/ops` for a batch, the body for one op).
fn parse(ops: Vec<OpBody>, base: &str) -> Result<Vec<OpRequest>, Problem> {
    let mut errors = Vec::new();
    let mut requests = Vec::with_capacity(ops.len());
    for (i, op) in ops.into_iter().enumerate() {
        let at = |f: &str| {
            if base.is_empty() {
                format!("#/{f}")
            } else {
                format!("{base}/{i}/{f}")
            }
        };
        for (name, v) in [("client_id", &op.client_id), ("op_id", &op.op_id)] {
            if v.is_empty() || v.len() > MAX_ID_LEN {
                errors.push(FieldError {
                    pointer: at(name),
                    detail: "must be 1 to 128 bytes".into(),
                });
            }
        }
        if op.lamport > MAX_LAMPORT {
            errors.push(FieldError {
                pointer: at("lamport"),
                detail: format!("must be at most {MAX_LAMPORT} (2^53 - 1)"),
            });
        }
        match OpData::parse(op.data) {
            Ok(data) => requests.push(OpRequest {
                client_id: op.client_id,
                op_id: op.op_id,
                lamport: op.lamport,
                kind: op.kind,
                element_id: op.element_id,
                data,
            }),
            Err(why) => errors.push(FieldError {
                pointer: at("data"),
                detail: why.0.into(),
            }),
        }
    }
    if errors.is_empty() {
        Ok(requests)
    } else {
        Err(Problem::validation(errors))
    }
}

async fn draw(
    state: &AppState,
    caller: &Caller,
    board: Uuid,
    requests: Vec<OpRequest>,
) -> Result<Json<OpsApplied>, Problem> {
    let grant = caller.authorize(state, Action::BoardDraw).await?;
    let ids: Vec<(String, String)> = requests
        .iter()
        .map(|r| (r.client_id.clone(), r.op_id.clone()))
        .collect();
    let (outcomes, committed) = match state
        .classroom
        .draw(board, actor(caller, grant), requests, &caller.metadata())
        .await
    {
        Ok(r) => r,
        Err(e) => return Err(refusal(state, caller, Action::BoardDraw, e).await),
    };
    let duplicates: Vec<bool> = committed
        .events
        .iter()
        .filter(|e| e.payload.outcome().is_some())
        .map(|e| {
            matches!(
                e.payload,
                lectern_domain::classroom::BoardEvent::OpDuplicated { .. }
            )
        })
        .collect();
    let results = ids
        .into_iter()
        .zip(outcomes)
        .zip(duplicates)
        .map(|(((client_id, op_id), outcome), duplicate)| match outcome {
            OpOutcome::Applied {
                server_version,
                lamport,
            } => OpResult {
                client_id,
                op_id,
                status: if duplicate { "duplicate" } else { "applied" },
                server_version: Some(server_version),
                lamport: Some(lamport),
                reason: None,
            },
            OpOutcome::Rejected { reason } => OpResult {
                client_id,
                op_id,
                status: if duplicate { "duplicate" } else { "rejected" },
                server_version: None,
                lamport: None,
                reason: Some(reason.as_str()),
            },
        })
        .collect();
    Ok(Json(OpsApplied {
        results,
        version: committed.version,
        position: committed.position.map(|p| p.to_string()),
    }))
}

/// Apply one operation to a live lesson's board (its tutor and enrolled
/// students).
#[utoipa::path(post, path = "/api/v1/boards/{id}/ops", tag = "boards", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Board (lesson) id")), request_body = OpBody,
    responses((status = 200, body = OpsApplied), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn apply_op(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiJson(op): ApiJson<OpBody>,
) -> Result<Json<OpsApplied>, Problem> {
    let requests = parse(vec![op], "")?;
    draw(&state, &caller, id, requests).await
}

/// Apply up to 100 operations in order, in one append.
#[utoipa::path(post, path = "/api/v1/boards/{id}/ops/batch", tag = "boards", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Board (lesson) id")), request_body = OpBatch,
    responses((status = 200, body = OpsApplied), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn apply_batch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiJson(batch): ApiJson<OpBatch>,
) -> Result<Json<OpsApplied>, Problem> {
    draw_batch(&state, &caller, id, batch).await
}

/// Apply `batch` to board `id` as `caller`: the HTTP route and the realtime
/// socket's `board.ops` both do.
pub(crate) async fn draw_batch(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    batch: OpBatch,
) -> Result<Json<OpsApplied>, Problem> {
    if batch.ops.is_empty() || batch.ops.len() > MAX_OPS_PER_REQUEST {
        return Err(Problem::invalid("#/ops", "must hold 1 to 100 operations"));
    }
    let requests = parse(batch.ops, "#/ops")?;
    draw(state, caller, id, requests).await
}

/// Which operations to fetch.
#[derive(Debug, Deserialize, IntoParams)]
pub struct OpsQuery {
    /// Operations after this `server_version` (default 0: all); a `cursor`
    /// takes precedence.
    since_version: Option<u64>,
}

/// The operations a reconnecting client missed, in `server_version` order.
#[utoipa::path(get, path = "/api/v1/boards/{id}/ops", tag = "boards", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Board (lesson) id"), OpsQuery, CursorParams, Consistency),
    responses((status = 200, body = CursorPage<BoardOpRow>), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn list_ops(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiQuery(q): ApiQuery<OpsQuery>,
    ApiQuery(cursor): ApiQuery<CursorParams>,
    ApiQuery(consistency): ApiQuery<Consistency>,
) -> Result<Json<CursorPage<BoardOpRow>>, Problem> {
    may_read(&state, &caller, id, Action::BoardRead).await?;
    let keyset = cursor.keyset::<i64>()?;
    let since = keyset
        .after
        .unwrap_or_else(|| i64::try_from(q.since_version.unwrap_or(0)).unwrap_or(i64::MAX));
    consistency.wait(&state, "boards").await?;
    let rows = read::board_ops(&state.read_pool, id, since, keyset.fetch()).await?;
    Ok(Json(keyset.page(rows, |o| o.server_version)))
}

/// The board's elements, version and checksum.
#[utoipa::path(get, path = "/api/v1/boards/{id}", tag = "boards", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Board (lesson) id"), Consistency),
    responses((status = 200, body = BoardRow), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn get_board(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiQuery(consistency): ApiQuery<Consistency>,
) -> Result<Json<BoardRow>, Problem> {
    may_read(&state, &caller, id, Action::BoardRead).await?;
    consistency.wait(&state, "boards").await?;
    read::board(&state.read_pool, id)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::new(Code::BOARD_NOT_FOUND, "No such board."))
}

/// A board's conflict policy.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    #[schema(value_type = String, example = "last_write_wins")]
    policy: ConflictPolicy,
}

/// Set how concurrent writes to one element are settled:
/// `last_write_wins` (the default), `first_write_wins` or `reject`.
#[utoipa::path(put, path = "/api/v1/boards/{id}/policy", tag = "boards", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Board (lesson) id")), request_body = PolicyBody,
    responses((status = 200, body = CommandAccepted), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn set_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<PolicyBody>,
) -> Result<Json<CommandAccepted>, Problem> {
    let grant = caller.authorize(&state, Action::BoardConfigure).await?;
    match state
        .classroom
        .set_policy(id, actor(&caller, grant), body.policy, &caller.metadata())
        .await
    {
        Ok(c) => Ok(Json(CommandAccepted::new(id, &c))),
        Err(e) => Err(refusal(&state, &caller, Action::BoardConfigure, e).await),
    }
}
