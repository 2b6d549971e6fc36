//! One batch: the events a follower reads, the projection's writes and the
//! checkpoint, in one transaction, so every event takes effect exactly once.

use lectern_domain::Position;
use sqlx::{Connection, PgConnection};

use crate::follow::Follower;
use crate::log::LogEvent;
use crate::projection::{Projection, ProjectionError, Tables};

/// Why a batch failed.
pub(super) enum RunError {
    /// The database connection failed: the lock may be gone.
    Connection(sqlx::Error),
    /// The projection refused `event`. The events before it in the batch
    /// were committed, and the follower moved past them.
    Apply {
        event: Box<LogEvent>,
        error: ProjectionError,
    },
}

impl From<sqlx::Error> for RunError {
    fn from(e: sqlx::Error) -> Self {
        Self::Connection(e)
    }
}

/// How much of the log one batch took.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Batch {
    /// Events read, wanted or not (0 when nothing is readable yet).
    pub scanned: usize,
    /// Events applied: those the projection reads.
    pub applied: usize,
}

/// Apply the next batch the follower reads, in one transaction with the
/// checkpoint, and move the follower past it (past the events it does not
/// read, too). With `checkpoint` false (a rebuild's shadow tables) the live
/// checkpoint is left alone.
///
/// The read itself needs no transaction: the events it returns can never
/// change, and only this runner (holding the projection's lock) moves the
/// checkpoint. So a read that finds nothing costs one round trip, and a
/// batch with no event the projection reads opens no transaction either:
/// the follower moves past it in memory and the caller saves the
/// checkpoint later ([`Batch::applied`] is 0).
pub(super) async fn apply_batch(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    tables: &Tables,
    log: &mut Follower,
    checkpoint: bool,
) -> Result<Batch, RunError> {
    let interest = log.interest();
    let read = log.read(&mut *conn).await?;
    let Some(last) = read.last else {
        return Ok(Batch::default());
    };
    let wanted: Vec<&LogEvent> = read.events.iter().filter(|e| interest.wants(e)).collect();
    let done = Batch {
        scanned: read.scanned,
        applied: wanted.len(),
    };
    if wanted.is_empty() {
        log.advance(last);
        return Ok(done);
    }
    let mut tx = conn.begin().await?;
    match projection.apply_all(&mut tx, tables, &wanted).await {
        Ok(()) => {
            commit(tx, projection, last, done.applied, checkpoint).await?;
            log.advance(last);
            return Ok(done);
        }
        Err(error) => {
            let _ = tx.rollback().await;
            check_connection(&error)?;
        }
    }
    // Find the bad event by applying the batch again one event at a time.
    tx = conn.begin().await?;
    for (index, event) in wanted.iter().enumerate() {
        if let Err(error) = projection.apply(&mut tx, tables, event).await {
            let _ = tx.rollback().await;
            check_connection(&error)?;
            // Commit the events before the bad one, so the projection stops
            // exactly at it rather than at the start of its batch.
            if index > 0 {
                let good = &wanted[..index];
                let mut tx = conn.begin().await?;
                if let Err(error) = projection.apply_all(&mut tx, tables, good).await {
                    let _ = tx.rollback().await;
                    check_connection(&error)?;
                    return Err(RunError::Apply {
                        event: Box::new(good[0].clone()),
                        error,
                    });
                }
                let position = good[index - 1].position;
                commit(tx, projection, position, index, checkpoint).await?;
                log.advance(position);
            }
            return Err(RunError::Apply {
                event: Box::new((*event).clone()),
                error,
            });
        }
    }
    commit(tx, projection, last, done.applied, checkpoint).await?;
    log.advance(last);
    Ok(done)
}

/// Move the checkpoint (unless a rebuild is filling shadow tables) to
/// `last`, counting `applied` more events, and commit the batch's writes
/// with it.
async fn commit(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    projection: &dyn Projection,
    last: Position,
    applied: usize,
    checkpoint: bool,
) -> Result<(), RunError> {
    if checkpoint {
        sqlx::query!(
            "UPDATE projection_checkpoints
                SET last_tx = $2::text::xid8, last_position = $3, events_applied = events_applied + $4,
                    status = 'running', last_error = NULL, failing_position = NULL, updated_at = now()
              WHERE name = $1",
            projection.name(),
            last.transaction_id.to_string(),
            last.global_position,
            applied as i64,
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    metrics::counter!("lectern_projection_events_total", "projection" => projection.name())
        .increment(applied as u64);
    Ok(())
}

/// A lost connection ends the runner's turn rather than failing the event.
fn check_connection(error: &ProjectionError) -> Result<(), RunError> {
    match error {
        ProjectionError::Database(e) if is_connection_error(e) => {
            Err(RunError::Connection(sqlx::Error::Protocol(e.to_string())))
        }
        _ => Ok(()),
    }
}

fn is_connection_error(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    )
}
