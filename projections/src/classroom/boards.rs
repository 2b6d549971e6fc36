//! `boards`, `board_elements` and `board_ops`: the projection and its
//! queries.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lectern_domain::classroom::BoardEvent;
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{decode, uuid_of};
use crate::log::LogEvent;
use crate::projection::{Interest, Projection, ProjectionError, Tables};

use super::board_run::BoardRun;

/// Keeps `boards`, `board_elements` and `board_ops`.
pub struct BoardsProjection;

pub(super) const BOARDS: &str = "boards";
pub(super) const ELEMENTS: &str = "board_elements";
pub(super) const OPS: &str = "board_ops";

#[async_trait]
impl Projection for BoardsProjection {
    fn name(&self) -> &'static str {
        "boards"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[BOARDS, ELEMENTS, OPS]
    }

    fn interest(&self) -> Interest {
        Interest::types(&["Board"])
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        t: &Tables,
        event: &LogEvent,
    ) -> Result<(), ProjectionError> {
        self.apply_all(conn, t, &[event]).await
    }

    /// The run is folded in memory, starting from the element contents and
    /// undo targets it reads (fetched in one query each), then written with
    /// one statement per table.
    async fn apply_all(
        &self,
        conn: &mut PgConnection,
        t: &Tables,
        events: &[&LogEvent],
    ) -> Result<(), ProjectionError> {
        let mut run = BoardRun::default();
        let mut decoded = Vec::with_capacity(events.len());
        for event in events {
            decoded.push((uuid_of(event)?, *event, decode::<BoardEvent>(event)?));
        }
        run.prefetch(conn, t, &decoded).await?;
        for (board, event, payload) in decoded {
            run.fold(conn, t, board, event, payload).await?;
        }
        run.write(conn, t).await
    }
}

/// A board as its projection holds it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BoardRow {
    /// The id.
    pub id: Uuid,
    /// `last_write_wins`, `first_write_wins` or `reject`.
    pub policy: String,
    /// The `server_version` of the last applied operation.
    pub version: i64,
    /// The Lamport time the server gave it.
    pub lamport: i64,
    /// SHA-256 (hex) over the elements in id order: each id, a NUL byte, the
    /// element as canonical JSON (members sorted), a newline.
    pub checksum: String,
    /// The elements by id.
    #[schema(value_type = Object)]
    pub elements: serde_json::Map<String, Value>,
}

/// A board with its elements, read in one snapshot.
pub async fn board(pool: &PgPool, id: Uuid) -> Result<Option<BoardRow>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let Some(head) = sqlx::query!(
        "SELECT policy, version, lamport FROM boards WHERE id = $1",
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(None);
    };
    let rows = sqlx::query!(
        "SELECT element_id, data FROM board_elements WHERE board_id = $1 ORDER BY element_id",
        id,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let elements: serde_json::Map<String, Value> =
        rows.into_iter().map(|r| (r.element_id, r.data)).collect();
    let checksum =
        lectern_domain::classroom::board::checksum(elements.iter().map(|(k, v)| (k.as_str(), v)));
    Ok(Some(BoardRow {
        id,
        policy: head.policy,
        version: head.version,
        lamport: head.lamport,
        checksum,
        elements,
    }))
}

/// An applied operation, as reconnecting clients fetch it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BoardOpRow {
    /// The board version the operation got.
    pub server_version: i64,
    /// The Lamport time the server gave it.
    pub lamport: i64,
    /// The sending client's id.
    pub client_id: String,
    /// The client's id for the operation.
    pub op_id: String,
    /// The user.
    pub user_id: Uuid,
    /// What the operation does.
    pub kind: String,
    /// The element it edits.
    pub element_id: Option<String>,
    /// The operation's data.
    #[schema(value_type = Object)]
    pub data: Value,
    /// For undo and redo: the operation undone or redone.
    pub target_version: Option<i64>,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// At most `limit` operations after `since_version`, in order.
pub async fn board_ops(
    pool: &PgPool,
    board: Uuid,
    since_version: i64,
    limit: u32,
) -> Result<Vec<BoardOpRow>, sqlx::Error> {
    sqlx::query_as!(
        BoardOpRow,
        "SELECT server_version, lamport, client_id, op_id, user_id, kind, element_id, data, target_version, recorded_at
           FROM board_ops WHERE board_id = $1 AND server_version > $2 ORDER BY server_version LIMIT $3",
        board,
        since_version,
        i64::from(limit),
    )
    .fetch_all(pool)
    .await
}
