//! Reading the log and the ledger side by side, as an export bundle's lines
//! (`lectern audit export`, and `lectern audit verify --online`, which feeds
//! the same lines to the verifier without writing them).
//!
//! Lines come in the events' feed order, each event with what the sealer
//! recorded for it; a sealed leaf whose event is gone comes at the position
//! it was sealed at. Everything should be read in one snapshot: callers run
//! it in a transaction of their own ([`snapshot`]).

use lectern_domain::Position;
use lectern_ledger::bundle::{Line, Prefix, Sealed};
use lectern_ledger::tree;
use lectern_ledger::verify::{Report, Verifier};
use lectern_ledger::{SignedCheckpoint, TrustedKey};
use sqlx::{Connection, PgConnection};

use super::{envelope_of, hash_of, LedgerError};
use crate::log::{text_event, TextEvent};

/// Events read per query.
const PAGE: i64 = 10_000;

/// What an export read besides the lines.
#[derive(Debug, Default)]
pub struct Exported {
    /// The prefix's peaks, when the export starts after leaf 0.
    pub prefix: Option<Prefix>,
    /// Every signed checkpoint: (size, note), smallest first.
    pub checkpoints: Vec<(u64, String)>,
    /// The verifier keys that signed them.
    pub public_keys: Vec<String>,
    /// Lines written.
    pub lines: u64,
}

struct Row {
    seq: Option<i64>,
    sealed_tx: Option<i64>,
    sealed_position: Option<i64>,
    leaf_hash: Option<Vec<u8>>,
    payload_hash: Option<Vec<u8>>,
    metadata_hash: Option<Vec<u8>>,
    event: Option<TextEvent>,
}

impl Row {
    fn position(&self) -> (i64, i64) {
        match &self.event {
            Some(e) => (e.position.transaction_id, e.position.global_position),
            None => (
                self.sealed_tx.unwrap_or_default(),
                self.sealed_position.unwrap_or_default(),
            ),
        }
    }

    fn line(&self) -> Result<Line<'_>, LedgerError> {
        let sealed = match (
            self.sealed_tx,
            self.sealed_position,
            &self.leaf_hash,
            &self.payload_hash,
            &self.metadata_hash,
        ) {
            (Some(tx), Some(gp), Some(l), Some(p), Some(m)) => Some(Sealed {
                transaction_id: tx as u64,
                global_position: gp,
                leaf: hash_of(l)?,
                payload: hash_of(p)?,
                metadata: hash_of(m)?,
            }),
            _ => None,
        };
        Ok(Line {
            seq: self.seq.map(|s| s as u64),
            event: self.event.as_ref().map(envelope_of),
            sealed,
        })
    }
}

/// A read-only, repeatable-read transaction: one snapshot of the log and the
/// ledger for [`export`].
pub async fn snapshot(
    conn: &mut PgConnection,
) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, LedgerError> {
    Ok(conn
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?)
}

/// Read the bundle's lines from leaf `from` on and hand each to `sink`, on
/// `tx` (see [`snapshot`]).
pub async fn export<E>(
    tx: &mut PgConnection,
    from: u64,
    mut sink: impl FnMut(Line<'_>) -> Result<(), E>,
) -> Result<Exported, ExportError<E>> {
    let mut out = Exported::default();

    let mut after = Position::ZERO;
    if from > 0 {
        let start = sqlx::query!(
            r#"SELECT transaction_id::text::bigint AS "tx!", global_position FROM ledger_leaves WHERE seq = $1"#,
            from as i64 - 1
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(LedgerError::from)?
        .ok_or(ExportError::NoSuchLeaf(from))?;
        after = Position {
            transaction_id: start.tx,
            global_position: start.global_position,
        };
        let indexes = tree::peak_indexes(from);
        let map = super::read_hashes(&mut *tx, &indexes).await?;
        out.prefix = Some(Prefix {
            size: from,
            peaks: indexes.iter().map(|i| map.0[i]).collect(),
        });
    }

    // Sealed leaves whose event is gone: few (none unless someone deleted
    // events), merged into the stream at their sealed position.
    let orphans = sqlx::query!(
        r#"SELECT l.seq, l.transaction_id::text::bigint AS "tx!", l.global_position,
                  l.leaf_hash, l.payload_hash, l.metadata_hash
             FROM ledger_leaves l
            WHERE l.seq >= $1
              AND NOT EXISTS (SELECT 1 FROM events e WHERE e.global_position = l.global_position)
            ORDER BY l.transaction_id, l.global_position"#,
        from as i64
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(LedgerError::from)?;
    let mut orphans = orphans
        .into_iter()
        .map(|r| Row {
            seq: Some(r.seq),
            sealed_tx: Some(r.tx),
            sealed_position: Some(r.global_position),
            leaf_hash: Some(r.leaf_hash),
            payload_hash: Some(r.payload_hash),
            metadata_hash: Some(r.metadata_hash),
            event: None,
        })
        .peekable();

    loop {
        let page = sqlx::query!(
            r#"SELECT l.seq AS "seq?", l.transaction_id::text::bigint AS "sealed_tx?",
                      l.global_position AS "sealed_position?", l.leaf_hash AS "leaf_hash?",
                      l.payload_hash AS "payload_hash?", l.metadata_hash AS "metadata_hash?",
                      e.transaction_id::text::bigint AS "tx!", e.global_position, e.event_id,
                      e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version,
                      e.recorded_at, e.payload::text AS "payload!", e.metadata::text AS "metadata!"
                 FROM events e LEFT JOIN ledger_leaves l ON l.global_position = e.global_position
                WHERE (e.transaction_id, e.global_position) > ($1::text::xid8, $2)
                ORDER BY e.transaction_id, e.global_position
                LIMIT $3"#,
            after.transaction_id.to_string(),
            after.global_position,
            PAGE
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(LedgerError::from)?;
        let full = page.len() as i64 == PAGE;
        let rows: Vec<Row> = page
            .into_iter()
            .map(|r| Row {
                seq: r.seq,
                sealed_tx: r.sealed_tx,
                sealed_position: r.sealed_position,
                leaf_hash: r.leaf_hash,
                payload_hash: r.payload_hash,
                metadata_hash: r.metadata_hash,
                event: Some(text_event!(r)),
            })
            .collect();
        for row in &rows {
            while let Some(o) = orphans.next_if(|o| o.position() < row.position()) {
                sink(o.line()?).map_err(ExportError::Sink)?;
                out.lines += 1;
            }
            sink(row.line()?).map_err(ExportError::Sink)?;
            out.lines += 1;
        }
        if let Some(last) = rows.last() {
            let (t, g) = last.position();
            after = Position {
                transaction_id: t,
                global_position: g,
            };
        }
        if !full {
            break;
        }
    }
    for o in orphans {
        sink(o.line()?).map_err(ExportError::Sink)?;
        out.lines += 1;
    }

    out.checkpoints = sqlx::query!("SELECT size, note FROM ledger_checkpoints ORDER BY size")
        .fetch_all(&mut *tx)
        .await
        .map_err(LedgerError::from)?
        .into_iter()
        .map(|r| (r.size as u64, r.note))
        .collect();
    out.public_keys = super::public_keys(&mut *tx).await?;
    Ok(out)
}

/// Verify the log and the ledger as read on `tx` (see [`snapshot`]) with
/// `key`, and `trusted` if given: the bundle's lines fed straight to the
/// verifier (`lectern audit verify --online`).
pub async fn verify(
    tx: &mut PgConnection,
    key: &TrustedKey,
    trusted: Option<&SignedCheckpoint>,
) -> Result<Report, LedgerError> {
    let mut verifier = Verifier::default();
    let exported = export(tx, 0, |line| {
        verifier.push(line);
        Ok::<(), std::convert::Infallible>(())
    })
    .await
    .map_err(|e| match e {
        ExportError::Ledger(e) => e,
        ExportError::NoSuchLeaf(_) => unreachable!("an export from leaf 0 names no leaf"),
        ExportError::Sink(never) => match never {},
    })?;
    let checkpoints: Vec<(String, String)> = exported
        .checkpoints
        .into_iter()
        .map(|(size, note)| (format!("size {size}"), note))
        .collect();
    Ok(verifier.finish(&checkpoints, key, trusted))
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError<E> {
    /// Reading.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The ledger has fewer leaves than `--from`.
    #[error("the ledger has no leaf {}; --from must be at most its size", .0 - 1)]
    NoSuchLeaf(u64),
    /// The sink refused a line.
    #[error("{0}")]
    Sink(E),
}
