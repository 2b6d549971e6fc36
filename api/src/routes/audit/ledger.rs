//! The verifiable ledger over HTTP: the sealed global feed, a stream's
//! history, signed checkpoints, inclusion and consistency proofs (RFC 9162
//! §2.1.3–2.1.4). An auditor checks the proofs with any RFC 6962 verifier
//! against a checkpoint they verified with the ledger's public key; nothing
//! here asks to be trusted. See docs/audit.md.

use axum::extract::{OriginalUri, Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use lectern_domain::policy::Action;
use lectern_ledger::Hash;
use lectern_projections::ledger::{self as store, CheckpointRow, LedgerError, SealedEvent};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::record_read;
use crate::app::AppState;
use crate::auth::Caller;
use crate::extract::ApiQuery;
use crate::problem::{Code, Problem};

/// The ledger routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(feed))
        .routes(routes!(stream_events))
        .routes(routes!(stream_state))
        .routes(routes!(checkpoint))
        .routes(routes!(checkpoints))
        .routes(routes!(inclusion))
        .routes(routes!(consistency))
}

impl From<LedgerError> for Problem {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Db(e) => e.into(),
            LedgerError::Damaged(_) => Problem::internal(e),
        }
    }
}

fn hex(h: &Hash) -> String {
    hex::encode(h.0)
}

/// An event as the ledger holds it.
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerEvent {
    /// Its leaf index in the ledger (feed order); absent while not sealed.
    seq: Option<u64>,
    /// Its leaf hash, SHA-256(0x00 ‖ envelope), hex; absent while not sealed.
    leaf_hash: Option<String>,
    /// `<transaction id>.<global position>`.
    position: String,
    /// The writing transaction's id (xid8).
    transaction_id: String,
    /// The global position.
    global_position: i64,
    event_id: uuid::Uuid,
    aggregate_type: String,
    aggregate_id: String,
    /// The stream version (sequence) this event made.
    version: i64,
    event_type: String,
    event_version: String,
    recorded_at: DateTime<Utc>,
    /// The payload, exactly as PostgreSQL renders the stored jsonb (the text
    /// the leaf commits to), unless `masked`.
    #[schema(value_type = Object)]
    payload: Box<RawValue>,
    /// The metadata (who, from where, why), as stored unless `masked`.
    #[schema(value_type = Object)]
    metadata: Box<RawValue>,
    /// Secrets (password hashes, tokens, keys) are redacted and emails and
    /// phone numbers masked, as in the audit log: the payload or metadata
    /// served is then not the text the leaf commits to. The exact text is in
    /// an export bundle (`lectern audit export`), which is what verifies.
    masked: bool,
}

/// The stored text if masking changes nothing; otherwise the masked JSON.
fn masked(text: String) -> Result<(Box<RawValue>, bool), Problem> {
    let value: serde_json::Value = serde_json::from_str(&text).map_err(Problem::internal)?;
    if !lectern_domain::mask::needs_masking(&value) {
        return Ok((
            RawValue::from_string(text).map_err(Problem::internal)?,
            false,
        ));
    }
    let text =
        serde_json::to_string(&lectern_domain::mask::json(&value)).map_err(Problem::internal)?;
    Ok((
        RawValue::from_string(text).map_err(Problem::internal)?,
        true,
    ))
}

impl TryFrom<SealedEvent> for LedgerEvent {
    type Error = Problem;

    fn try_from(sealed: SealedEvent) -> Result<Self, Problem> {
        let e = sealed.event;
        let (payload, payload_masked) = masked(e.payload)?;
        let (metadata, metadata_masked) = masked(e.metadata)?;
        Ok(Self {
            seq: sealed.seq,
            leaf_hash: sealed.leaf_hash.as_ref().map(hex),
            position: e.position.to_string(),
            transaction_id: e.position.transaction_id.to_string(),
            global_position: e.position.global_position,
            event_id: e.event_id,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            version: e.sequence,
            event_type: e.event_type,
            event_version: e.event_version,
            recorded_at: e.recorded_at,
            payload,
            metadata,
            masked: payload_masked || metadata_masked,
        })
    }
}

/// A stream's path parameters: PostgreSQL text cannot hold a NUL, so one
/// names no stream; 400 rather than a database error.
fn check_stream(aggregate_type: &str, aggregate_id: &str) -> Result<(), Problem> {
    for (name, value) in [
        ("aggregate_type", aggregate_type),
        ("aggregate_id", aggregate_id),
    ] {
        if value.contains('\0') {
            return Err(Problem::new(
                Code::BAD_REQUEST,
                format!("The path parameter {name} holds a NUL character."),
            ));
        }
    }
    Ok(())
}

fn events(rows: Vec<SealedEvent>) -> Result<Vec<LedgerEvent>, Problem> {
    rows.into_iter().map(LedgerEvent::try_from).collect()
}

/// Paging of the feed.
#[derive(Debug, Deserialize, IntoParams)]
pub struct FeedQuery {
    /// Events after this sequence number (exclusive); from the first when absent.
    after: Option<u64>,
    /// At most this many (1 to 1000, default 100).
    limit: Option<u32>,
}

fn limit_of(limit: Option<u32>) -> Result<i64, Problem> {
    match limit {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(i64::from(n)),
        Some(_) => Err(Problem::invalid("/limit", "must be between 1 and 1000")),
    }
}

/// A page of the feed.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedPage {
    /// Sealed events in feed order.
    events: Vec<LedgerEvent>,
    /// `after` for the next page; absent at the end of what is sealed.
    next_after: Option<u64>,
    /// Events sealed so far (the tree's size).
    sealed: u64,
}

/// The sealed global feed, in feed order: `(transaction_id, global_position)`,
/// which is the leaf order of the ledger. Each event carries its sequence
/// number and leaf hash.
#[utoipa::path(get, path = "/api/v1/audit/feed", tag = "audit", security(("bearer" = [])),
    params(FeedQuery),
    responses((status = 200, body = FeedPage), (status = 422, body = Problem)))]
async fn feed(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(q): ApiQuery<FeedQuery>,
) -> Result<Json<FeedPage>, Problem> {
    caller.authorize(&state, Action::AuditRead).await?;
    let limit = limit_of(q.limit)?;
    let after = q.after.map(|a| a.min(i64::MAX as u64 - 1));
    record_read(&state, &caller, &uri).await?;
    let mut conn = state.read_pool.acquire().await?;
    let sealed = store::size(&mut *conn).await?;
    let rows = store::feed(&mut *conn, after, limit).await?;
    let next_after = match rows.last() {
        Some(last) if (rows.len() as i64) == limit => last.seq,
        _ => None,
    };
    Ok(Json(FeedPage {
        events: events(rows)?,
        next_after,
        sealed,
    }))
}

/// A range of stream versions.
#[derive(Debug, Deserialize, IntoParams)]
pub struct StreamQuery {
    /// The first version (default 1).
    from_version: Option<i64>,
    /// The last version (default: the stream's last).
    to_version: Option<i64>,
    /// At most this many (1 to 1000, default 100).
    limit: Option<u32>,
}

/// A page of a stream's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamPage {
    /// Events in version order.
    events: Vec<LedgerEvent>,
    /// `from_version` for the next page; absent at the end of the range.
    next_from_version: Option<i64>,
}

/// One stream's history, in version order, each event with its leaf where
/// sealed.
#[utoipa::path(get, path = "/api/v1/audit/streams/{aggregate_type}/{aggregate_id}/events",
    tag = "audit", security(("bearer" = [])),
    params(("aggregate_type" = String, Path, description = "The aggregate type, such as `Lesson`"),
           ("aggregate_id" = String, Path, description = "The stream's id"), StreamQuery),
    responses((status = 200, body = StreamPage), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn stream_events(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path((aggregate_type, aggregate_id)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Json<StreamPage>, Problem> {
    caller.authorize(&state, Action::AuditRead).await?;
    check_stream(&aggregate_type, &aggregate_id)?;
    let limit = limit_of(q.limit)?;
    let from = q.from_version.unwrap_or(1);
    let to = q.to_version.unwrap_or(i64::MAX);
    if from < 1 {
        return Err(Problem::invalid("/from_version", "must be at least 1"));
    }
    if to < from {
        return Err(Problem::invalid(
            "/to_version",
            "must be at least from_version",
        ));
    }
    record_read(&state, &caller, &uri).await?;
    let rows = store::stream_events(
        &state.read_pool,
        &aggregate_type,
        &aggregate_id,
        from,
        to,
        limit,
    )
    .await?;
    if rows.is_empty() && !stream_exists(&state, &aggregate_type, &aggregate_id).await? {
        return Err(Problem::new(
            Code::STREAM_NOT_FOUND,
            format!("No events in stream {aggregate_type}/{aggregate_id}."),
        ));
    }
    let next_from_version = match rows.last() {
        Some(last) if (rows.len() as i64) == limit && last.event.sequence < to => {
            Some(last.event.sequence + 1)
        }
        _ => None,
    };
    Ok(Json(StreamPage {
        events: events(rows)?,
        next_from_version,
    }))
}

async fn stream_exists(state: &AppState, aggregate_type: &str, id: &str) -> Result<bool, Problem> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM events WHERE aggregate_type = $1 AND aggregate_id = $2) AS "e!""#,
        aggregate_type,
        id
    )
    .fetch_one(&state.read_pool)
    .await?)
}

/// Which state: after a version, or as of a time.
#[derive(Debug, Deserialize, IntoParams)]
pub struct StateQuery {
    /// The state after this event of the stream (its version, from 1).
    version: Option<u64>,
    /// The state as of the last checkpoint signed at or before this time
    /// (RFC 3339): the stream's events among that checkpoint's leaves.
    at: Option<DateTime<Utc>>,
}

/// An aggregate's state at a point of its history.
#[derive(Debug, Serialize, ToSchema)]
pub struct StateView {
    aggregate_type: String,
    aggregate_id: String,
    /// The last event folded into the state.
    version: u64,
    /// The state, as the aggregate serialises it, folded by its own
    /// `apply`; secrets redacted and personal data masked as in the audit
    /// log (then `masked`).
    #[schema(value_type = Object)]
    state: serde_json::Value,
    /// Whether masking changed the state served.
    masked: bool,
    /// The kept snapshot the fold started from; absent when it started from
    /// the first event.
    from_snapshot: Option<u64>,
    /// Events folded after the snapshot.
    events_folded: u64,
    /// With `at`: the signed checkpoint the answer is as of. The same
    /// question gets the same answer forever, and the checkpoint proves
    /// which events it covers.
    checkpoint: Option<CheckpointView>,
}

/// Time travel: the aggregate's state after event `version`, or as of the
/// last checkpoint signed at or before `at`. Replayed with today's code.
#[utoipa::path(get, path = "/api/v1/audit/streams/{aggregate_type}/{aggregate_id}/state",
    tag = "audit", security(("bearer" = [])),
    params(("aggregate_type" = String, Path, description = "The aggregate type, such as `Lesson`"),
           ("aggregate_id" = String, Path, description = "The stream's id"), StateQuery),
    responses((status = 200, body = StateView), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn stream_state(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path((aggregate_type, aggregate_id)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<StateQuery>,
) -> Result<Json<StateView>, Problem> {
    caller.authorize(&state, Action::AuditRead).await?;
    check_stream(&aggregate_type, &aggregate_id)?;
    crate::extract::check_time_param("at", q.at)?;
    match (q.version, q.at) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(Problem::invalid(
                "/version",
                "give exactly one of version and at",
            ))
        }
        (Some(0), None) => return Err(Problem::invalid("/version", "versions start at 1")),
        _ => {}
    }
    if !lectern_commands::history::AGGREGATE_TYPES.contains(&aggregate_type.as_str()) {
        return Err(Problem::new(
            Code::UNKNOWN_AGGREGATE_TYPE,
            format!(
                "No aggregate type {aggregate_type:?}; known: {}.",
                lectern_commands::history::AGGREGATE_TYPES.join(", ")
            ),
        ));
    }
    record_read(&state, &caller, &uri).await?;
    let (target, checkpoint) = match (q.version, q.at) {
        (Some(v), _) => (v, None),
        (None, Some(at)) => {
            let Some(cp) = store::checkpoint_at(&state.read_pool, at).await? else {
                return Err(Problem::new(
                    Code::NO_CHECKPOINT,
                    format!("No checkpoint was signed at or before {at}."),
                ));
            };
            let version = store::stream_version_within(
                &state.read_pool,
                &aggregate_type,
                &aggregate_id,
                cp.size,
            )
            .await?;
            let Some(version) = version else {
                return Err(Problem::new(
                    Code::STREAM_NOT_FOUND,
                    format!(
                        "Stream {aggregate_type}/{aggregate_id} had no events in the checkpoint of size {} signed at {}.",
                        cp.size, cp.signed_at
                    ),
                ));
            };
            (version, Some(cp))
        }
        (None, None) => unreachable!("checked above"),
    };
    let found = lectern_commands::history::state_at(
        &state.read_pool,
        &aggregate_type,
        &aggregate_id,
        target,
        true,
    )
    .await?
    .ok_or_else(|| Problem::internal("an aggregate type in the list without a fold"))?;
    if found.version == 0 {
        return Err(Problem::new(
            Code::STREAM_NOT_FOUND,
            format!("No events in stream {aggregate_type}/{aggregate_id}."),
        ));
    }
    if found.version < target {
        return Err(Problem::new(
            Code::VERSION_NOT_FOUND,
            format!(
                "Stream {aggregate_type}/{aggregate_id} ends at version {}.",
                found.version
            ),
        ));
    }
    let masked = lectern_domain::mask::needs_masking(&found.state);
    Ok(Json(StateView {
        aggregate_type,
        aggregate_id,
        version: found.version,
        masked,
        state: if masked {
            lectern_domain::mask::json(&found.state)
        } else {
            found.state
        },
        from_snapshot: (found.snapshot_version > 0).then_some(found.snapshot_version),
        events_folded: found.version - found.snapshot_version,
        checkpoint: checkpoint.map(Into::into),
    }))
}

/// The latest signed checkpoint, as a C2SP signed note (`text/plain`):
/// the origin, the tree size and the base64 root, then an Ed25519
/// signature line. Keep one: with it, `lectern audit verify --trusted` proves
/// later that the log only grew.
#[utoipa::path(get, path = "/api/v1/audit/checkpoint", tag = "audit", security(("bearer" = [])),
    responses((status = 200, content_type = "text/plain", body = String,
               description = "The signed note"),
              (status = 404, body = Problem)))]
async fn checkpoint(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, Problem> {
    caller.authorize(&state, Action::AuditRead).await?;
    record_read(&state, &caller, &uri).await?;
    let Some(cp) = store::latest_checkpoint(&state.read_pool).await? else {
        return Err(Problem::new(
            Code::NO_CHECKPOINT,
            "No checkpoint has been signed yet.",
        ));
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        cp.note,
    )
        .into_response())
}

/// Paging of checkpoints.
#[derive(Debug, Deserialize, IntoParams)]
pub struct CheckpointsQuery {
    /// Checkpoints of a larger tree than this (exclusive); from the first when absent.
    after: Option<u64>,
    /// At most this many (1 to 1000, default 100).
    limit: Option<u32>,
}

/// A signed checkpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointView {
    /// The tree size: the events it covers.
    size: u64,
    /// The root hash, hex.
    root: String,
    /// The signed note, as `/api/v1/audit/checkpoint` serves it.
    note: String,
    signed_at: DateTime<Utc>,
}

impl From<CheckpointRow> for CheckpointView {
    fn from(c: CheckpointRow) -> Self {
        Self {
            size: c.size,
            root: hex(&c.root),
            note: c.note,
            signed_at: c.signed_at,
        }
    }
}

/// A page of checkpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointPage {
    /// Smallest first.
    checkpoints: Vec<CheckpointView>,
    /// `after` for the next page; absent at the end.
    next_after: Option<u64>,
}

/// Every signed checkpoint, smallest first.
#[utoipa::path(get, path = "/api/v1/audit/checkpoints", tag = "audit", security(("bearer" = [])),
    params(CheckpointsQuery),
    responses((status = 200, body = CheckpointPage), (status = 422, body = Problem)))]
async fn checkpoints(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(q): ApiQuery<CheckpointsQuery>,
) -> Result<Json<CheckpointPage>, Problem> {
    caller.authorize(&state, Action::AuditRead).await?;
    let limit = limit_of(q.limit)?;
    record_read(&state, &caller, &uri).await?;
    let after = q.after.unwrap_or(0).min(i64::MAX as u64);
    let rows = store::checkpoints_after(&state.read_pool, after, limit).await?;
    let next_after = match rows.last() {
        Some(last) if (rows.len() as i64) == limit => Some(last.size),
        _ => None,
    };
    Ok(Json(CheckpointPage {
        checkpoints: rows.into_iter().map(Into::into).collect(),
        next_after,
    }))
}

/// Which leaf, in which tree.
#[derive(Debug, Deserialize, IntoParams)]
pub struct InclusionQuery {
    /// The leaf's sequence number.
    seq: u64,
    /// The tree size (default: the latest checkpoint's).
    size: Option<u64>,
}

/// An inclusion proof (RFC 9162 §2.1.3).
#[derive(Debug, Serialize, ToSchema)]
pub struct InclusionProof {
    seq: u64,
    size: u64,
    /// The leaf hash, hex.
    leaf_hash: String,
    /// The root of the tree of `size` leaves, hex.
    root: String,
    /// The audit path, hex, from the leaf up.
    proof: Vec<String>,
    /// The signed checkpoint of this size, if one was signed.
    checkpoint: Option<String>,
}

/// The size a proof is asked of: `size`, else the latest checkpoint's; 422
/// beyond the sealed tree.
async fn tree_size(
    state: &AppState,
    conn: &mut sqlx::PgConnection,
    asked: Option<u64>,
    field: &str,
) -> Result<(u64, Option<String>), Problem> {
    let sealed = store::size(&mut *conn).await?;
    let size = match asked {
        Some(s) => s,
        None => match store::latest_checkpoint(&state.read_pool).await? {
            Some(cp) => cp.size,
            None => {
                return Err(Problem::new(
                    Code::NO_CHECKPOINT,
                    "No checkpoint has been signed yet; name the tree size.",
                ))
            }
        },
    };
    if size == 0 || size > sealed {
        return Err(Problem::new(
            Code::BEYOND_LEDGER,
            format!("{field} must be between 1 and the sealed size, {sealed}."),
        ));
    }
    let note = sqlx::query_scalar!(
        "SELECT note FROM ledger_checkpoints WHERE size = $1",
        size as i64
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok((size, note))
}

/// Proof that the leaf `seq` is in the tree of `size` leaves.
#[utoipa::path(get, path = "/api/v1/audit/proofs/inclusion", tag = "audit", security(("bearer" = [])),
    params(InclusionQuery),
    responses((status = 200, body = InclusionProof), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn inclusion(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> Result<Json<InclusionProof>, Problem> {
    caller.authorize(&state, Action::AuditRead).await?;
    record_read(&state, &caller, &uri).await?;
    let mut conn = state.read_pool.acquire().await?;
    let (size, checkpoint) = tree_size(&state, &mut conn, q.size, "size").await?;
    if q.seq >= size {
        return Err(Problem::new(
            Code::BEYOND_LEDGER,
            format!("seq must be below the tree size, {size}."),
        ));
    }
    let (leaf, root, proof) = store::inclusion_proof(&mut conn, q.seq, size).await?;
    Ok(Json(InclusionProof {
        seq: q.seq,
        size,
        leaf_hash: hex(&leaf),
        root: hex(&root),
        proof: proof.iter().map(hex).collect(),
        checkpoint,
    }))
}

/// Which two trees.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ConsistencyQuery {
    /// The older tree's size (at least 1).
    from: u64,
    /// The newer tree's size (default: the latest checkpoint's).
    to: Option<u64>,
}

/// A consistency proof (RFC 9162 §2.1.4).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsistencyProof {
    from: u64,
    to: u64,
    /// The older tree's root, hex.
    from_root: String,
    /// The newer tree's root, hex.
    to_root: String,
    /// The proof, hex.
    proof: Vec<String>,
    /// The signed checkpoint of size `to`, if one was signed.
    checkpoint: Option<String>,
}

/// Proof that the tree of `from` leaves is a prefix of the tree of `to`
/// leaves: nothing in between was changed, inserted, reordered or removed.
#[utoipa::path(get, path = "/api/v1/audit/proofs/consistency", tag = "audit", security(("bearer" = [])),
    params(ConsistencyQuery),
    responses((status = 200, body = ConsistencyProof), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn consistency(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, Problem> {
    caller.authorize(&state, Action::AuditRead).await?;
    record_read(&state, &caller, &uri).await?;
    let mut conn = state.read_pool.acquire().await?;
    let (to, checkpoint) = tree_size(&state, &mut conn, q.to, "to").await?;
    if q.from == 0 || q.from > to {
        return Err(Problem::new(
            Code::BEYOND_LEDGER,
            format!("from must be between 1 and to ({to})."),
        ));
    }
    let (from_root, to_root, proof) = store::consistency_proof(&mut conn, q.from, to).await?;
    Ok(Json(ConsistencyProof {
        from: q.from,
        to,
        from_root: hex(&from_root),
        to_root: hex(&to_root),
        proof: proof.iter().map(hex).collect(),
        checkpoint,
    }))
}
