//! The verifiable ledger's tables (migration `20261203000001_ledger.sql`):
//! leaves, stored hashes, signed checkpoints, and the reads the audit API
//! and the export make of them. The [`sealer`] writes them; nothing else
//! does. See docs/audit.md.

pub mod export;
pub mod sealer;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use lectern_domain::Position;
use lectern_ledger::tree::{self, Frontier, MapReader};
use lectern_ledger::Hash;
pub use sealer::{envelope_of, unsealed, Sealer, SealerConfig, Unsealed, UNSEALED_COUNTED};
use sqlx::{PgConnection, PgExecutor};

use crate::log::{text_event, TextEvent};

/// Stored hashes per `ledger_hashes` row at most (32 KiB).
pub const HASHES_PER_ROW: usize = 1024;

/// What can go wrong reading the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A stored hash the tree needs is missing or malformed: the ledger
    /// tables are damaged.
    #[error("the ledger's stored hashes are incomplete: {0}")]
    Damaged(String),
}

fn hash_of(bytes: &[u8]) -> Result<Hash, LedgerError> {
    bytes
        .try_into()
        .map(Hash)
        .map_err(|_| LedgerError::Damaged(format!("a hash of {} bytes", bytes.len())))
}

/// The number of sealed leaves and the position of the last one.
pub async fn head(conn: &mut PgConnection) -> Result<(u64, Position), LedgerError> {
    let row = sqlx::query!(
        r#"SELECT seq, transaction_id::text::bigint AS "tx!", global_position
             FROM ledger_leaves ORDER BY seq DESC LIMIT 1"#
    )
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        Some(r) => (
            r.seq as u64 + 1,
            Position {
                transaction_id: r.tx,
                global_position: r.global_position,
            },
        ),
        None => (0, Position::ZERO),
    })
}

/// The number of sealed leaves.
pub async fn size<'e>(db: impl PgExecutor<'e>) -> Result<u64, LedgerError> {
    let n = sqlx::query_scalar!(r#"SELECT coalesce(max(seq) + 1, 0) AS "n!" FROM ledger_leaves"#)
        .fetch_one(db)
        .await?;
    Ok(n as u64)
}

/// The stored hashes at `indexes`.
pub async fn read_hashes<'e>(
    db: impl PgExecutor<'e>,
    indexes: &[u64],
) -> Result<MapReader, LedgerError> {
    let wanted: Vec<i64> = indexes.iter().map(|&i| i as i64).collect();
    let rows = sqlx::query!(
        r#"SELECT i AS "index!", substring(c.hashes FROM ((i - c.start_index) * 32 + 1)::int FOR 32) AS "hash!"
             FROM unnest($1::bigint[]) AS i
             CROSS JOIN LATERAL (SELECT start_index, hashes FROM ledger_hashes
                                  WHERE start_index <= i ORDER BY start_index DESC LIMIT 1) c
            WHERE i < c.start_index + length(c.hashes) / 32"#,
        &wanted,
    )
    .fetch_all(db)
    .await?;
    let mut map = HashMap::with_capacity(rows.len());
    for r in rows {
        map.insert(r.index as u64, hash_of(&r.hash)?);
    }
    if let Some(missing) = indexes.iter().find(|i| !map.contains_key(i)) {
        return Err(LedgerError::Damaged(format!(
            "stored hash {missing} is missing"
        )));
    }
    Ok(MapReader(map))
}

/// The sealer's state for a tree of `size` leaves, from its stored peaks.
pub async fn frontier(conn: &mut PgConnection, size: u64) -> Result<Frontier, LedgerError> {
    let indexes = tree::peak_indexes(size);
    let map = read_hashes(&mut *conn, &indexes).await?;
    let peaks: Vec<Hash> = indexes.iter().map(|i| map.0[i]).collect();
    Frontier::from_peaks(size, &peaks).map_err(|e| LedgerError::Damaged(e.to_string()))
}

/// The root hash of the first `size` sealed leaves.
pub async fn root_at(conn: &mut PgConnection, size: u64) -> Result<Hash, LedgerError> {
    Ok(frontier(conn, size).await?.root())
}

/// An inclusion proof of leaf `seq` in the tree of `size` leaves (both
/// checked against the sealed size by the caller), with the leaf and the root.
pub async fn inclusion_proof(
    conn: &mut PgConnection,
    seq: u64,
    size: u64,
) -> Result<(Hash, Hash, Vec<Hash>), LedgerError> {
    let damaged = |e: tree::TreeError| LedgerError::Damaged(e.to_string());
    let mut indexes = tree::needed(|r| tree::prove_record(size, seq, r)).map_err(damaged)?;
    let leaf_index = tree::first_stored_index(seq);
    indexes.push(leaf_index);
    let map = read_hashes(&mut *conn, &indexes).await?;
    let proof = tree::prove_record(size, seq, &map).map_err(damaged)?;
    let root = root_at(conn, size).await?;
    Ok((map.0[&leaf_index], root, proof))
}

/// A consistency proof from the tree of `from` leaves to the tree of `to`
/// leaves (`0 < from <= to <= sealed size`), with both roots.
pub async fn consistency_proof(
    conn: &mut PgConnection,
    from: u64,
    to: u64,
) -> Result<(Hash, Hash, Vec<Hash>), LedgerError> {
    let damaged = |e: tree::TreeError| LedgerError::Damaged(e.to_string());
    let indexes = tree::needed(|r| tree::prove_tree(to, from, r)).map_err(damaged)?;
    let map = read_hashes(&mut *conn, &indexes).await?;
    let proof = tree::prove_tree(to, from, &map).map_err(damaged)?;
    let from_root = root_at(conn, from).await?;
    let to_root = root_at(conn, to).await?;
    Ok((from_root, to_root, proof))
}

/// A `ledger_checkpoints` row as read.
struct StoredCheckpoint {
    size: i64,
    root: Vec<u8>,
    note: String,
    signed_at: DateTime<Utc>,
}

impl TryFrom<StoredCheckpoint> for CheckpointRow {
    type Error = LedgerError;

    fn try_from(r: StoredCheckpoint) -> Result<Self, LedgerError> {
        Ok(Self {
            size: r.size as u64,
            root: hash_of(&r.root)?,
            note: r.note,
            signed_at: r.signed_at,
        })
    }
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone)]
pub struct CheckpointRow {
    /// The tree size.
    pub size: u64,
    /// The root hash.
    pub root: Hash,
    /// The signed note.
    pub note: String,
    /// When it was signed.
    pub signed_at: DateTime<Utc>,
}

/// The latest signed checkpoint.
pub async fn latest_checkpoint<'e>(
    db: impl PgExecutor<'e>,
) -> Result<Option<CheckpointRow>, LedgerError> {
    sqlx::query_as!(
        StoredCheckpoint,
        "SELECT size, root, note, signed_at FROM ledger_checkpoints ORDER BY size DESC LIMIT 1"
    )
    .fetch_optional(db)
    .await?
    .map(CheckpointRow::try_from)
    .transpose()
}

/// The latest checkpoint signed at or before `at`.
pub async fn checkpoint_at<'e>(
    db: impl PgExecutor<'e>,
    at: DateTime<Utc>,
) -> Result<Option<CheckpointRow>, LedgerError> {
    sqlx::query_as!(
        StoredCheckpoint,
        "SELECT size, root, note, signed_at FROM ledger_checkpoints
          WHERE signed_at <= $1 ORDER BY signed_at DESC, size DESC LIMIT 1",
        at
    )
    .fetch_optional(db)
    .await?
    .map(CheckpointRow::try_from)
    .transpose()
}

/// Up to `limit` checkpoints with a size above `after`, smallest first.
pub async fn checkpoints_after<'e>(
    db: impl PgExecutor<'e>,
    after: u64,
    limit: i64,
) -> Result<Vec<CheckpointRow>, LedgerError> {
    sqlx::query_as!(
        StoredCheckpoint,
        "SELECT size, root, note, signed_at FROM ledger_checkpoints
          WHERE size > $1 ORDER BY size LIMIT $2",
        after as i64,
        limit
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(CheckpointRow::try_from)
    .collect()
}

/// The verifier keys that have signed checkpoints, oldest first.
pub async fn public_keys<'e>(db: impl PgExecutor<'e>) -> Result<Vec<String>, LedgerError> {
    Ok(
        sqlx::query_scalar!(
            "SELECT public_key FROM ledger_keys ORDER BY first_used_at, public_key"
        )
        .fetch_all(db)
        .await?,
    )
}

/// The last version of a stream among the first `size` leaves (its events
/// in that prefix of the feed are exactly versions 1 to it: a stream's
/// versions commit in order).
pub async fn stream_version_within<'e>(
    db: impl PgExecutor<'e>,
    aggregate_type: &str,
    aggregate_id: &str,
    size: u64,
) -> Result<Option<u64>, LedgerError> {
    let v = sqlx::query_scalar!(
        r#"SELECT e.sequence FROM events e JOIN ledger_leaves l ON l.global_position = e.global_position
            WHERE e.aggregate_type = $1 AND e.aggregate_id = $2 AND l.seq < $3
            ORDER BY e.sequence DESC LIMIT 1"#,
        aggregate_type,
        aggregate_id,
        size as i64
    )
    .fetch_optional(db)
    .await?;
    Ok(v.map(|v| v as u64))
}

/// An event with its leaf, as the audit API serves it.
#[derive(Debug, Clone)]
pub struct SealedEvent {
    /// The leaf index; `None` for an event not sealed yet.
    pub seq: Option<u64>,
    /// The leaf hash; `None` for an event not sealed yet.
    pub leaf_hash: Option<Hash>,
    /// The event, its payload and metadata as stored.
    pub event: TextEvent,
}

/// Up to `limit` sealed events after leaf `after` (all from 0 when `None`),
/// in feed order.
pub async fn feed<'e>(
    db: impl PgExecutor<'e>,
    after: Option<u64>,
    limit: i64,
) -> Result<Vec<SealedEvent>, LedgerError> {
    let after = after.map_or(-1, |a| a as i64);
    let rows = sqlx::query!(
        r#"SELECT l.seq, l.leaf_hash, e.transaction_id::text::bigint AS "tx!", e.global_position,
                  e.event_id, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type,
                  e.event_version, e.recorded_at, e.payload::text AS "payload!", e.metadata::text AS "metadata!"
             FROM ledger_leaves l JOIN events e ON e.global_position = l.global_position
            WHERE l.seq > $1 ORDER BY l.seq LIMIT $2"#,
        after,
        limit
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(SealedEvent {
                seq: Some(r.seq as u64),
                leaf_hash: Some(hash_of(&r.leaf_hash)?),
                event: text_event!(r),
            })
        })
        .collect()
}

/// A stream's events with versions in `from..=to`, at most `limit`, with
/// their leaf where sealed.
pub async fn stream_events<'e>(
    db: impl PgExecutor<'e>,
    aggregate_type: &str,
    aggregate_id: &str,
    from: i64,
    to: i64,
    limit: i64,
) -> Result<Vec<SealedEvent>, LedgerError> {
    let rows = sqlx::query!(
        r#"SELECT l.seq AS "seq?", l.leaf_hash AS "leaf_hash?", e.transaction_id::text::bigint AS "tx!",
                  e.global_position, e.event_id, e.aggregate_type, e.aggregate_id, e.sequence,
                  e.event_type, e.event_version, e.recorded_at,
                  e.payload::text AS "payload!", e.metadata::text AS "metadata!"
             FROM events e LEFT JOIN ledger_leaves l ON l.global_position = e.global_position
            WHERE e.aggregate_type = $1 AND e.aggregate_id = $2 AND e.sequence BETWEEN $3 AND $4
            ORDER BY e.sequence LIMIT $5"#,
        aggregate_type,
        aggregate_id,
        from,
        to,
        limit
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(SealedEvent {
                seq: r.seq.map(|s| s as u64),
                leaf_hash: r.leaf_hash.as_deref().map(hash_of).transpose()?,
                event: text_event!(r),
            })
        })
        .collect()
}
