//! Running projections: one active runner per projection in the whole
//! cluster, batches committed with their checkpoint, wake-up on NOTIFY with
//! polling as the fallback, failures that stop a projection without skipping
//! an event, and rebuilds into shadow tables.

use std::sync::Arc;
use std::time::Duration;

use lectern_domain::Position;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgExecutor, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::follow::{FollowConfig, Follower, Wakeup, EVENTS_CHANNEL};
use crate::log::{self, LogEvent};
use crate::projection::{Projection, ProjectionError, Tables, SHADOW_SUFFIX};

/// First key of every projection's advisory lock; the second is the hash of
/// its name.
const LOCK_NAMESPACE: i32 = 0x4c_45_43; // "LEC"

/// Tuning of the runners.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Events per batch transaction.
    pub batch_size: i64,
    /// How long an idle runner waits for a NOTIFY before polling anyway.
    pub poll_interval: Duration,
    /// The wait after a round that found events. Writers skip the NOTIFY
    /// while another transaction's is pending (see migration
    /// `20261122000004`), so right after activity the runner looks again soon
    /// rather than waiting for a notification that may not come.
    pub active_poll_interval: Duration,
    /// How often a standby runner tries to take over.
    pub standby_interval: Duration,
    /// The first wait after a failure; it doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl RunnerConfig {
    /// How the runner's follower reads and waits.
    fn follow(&self) -> FollowConfig {
        FollowConfig {
            batch_size: self.batch_size,
            idle_poll: self.poll_interval,
            active_poll: self.active_poll_interval,
        }
    }
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            active_poll_interval: Duration::from_millis(20),
            standby_interval: Duration::from_millis(500),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What a runner is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerState {
    /// Waiting for the advisory lock another process holds.
    Standby,
    /// Holding the lock and applying events; the pair is its checkpoint.
    Active(Position),
    /// Holding the lock, stopped at an event it cannot apply.
    Failed { position: i64, error: String },
    /// Cancelled; the lock is released.
    Stopped,
}

/// A running projection.
pub struct RunnerHandle {
    pub name: &'static str,
    pub state: watch::Receiver<RunnerState>,
    pub task: JoinHandle<()>,
}

/// Starts runners for a set of projections.
pub struct Runners {
    pub connect: PgConnectOptions,
    pub config: RunnerConfig,
    pub wakeup: Wakeup,
    pub cancel: CancellationToken,
}

impl Runners {
    /// Start a runner for `projection`. It stands by until it holds the
    /// projection's advisory lock.
    pub fn spawn(&self, projection: Arc<dyn Projection>) -> RunnerHandle {
        let (state_tx, state) = watch::channel(RunnerState::Standby);
        let name = projection.name();
        let runner = Runner {
            projection,
            connect: self.connect.clone(),
            config: self.config.clone(),
            wakeup: self.wakeup.clone(),
            cancel: self.cancel.clone(),
            state: state_tx,
        };
        let task = tokio::spawn(runner.run());
        RunnerHandle { name, state, task }
    }
}

struct Runner {
    projection: Arc<dyn Projection>,
    connect: PgConnectOptions,
    config: RunnerConfig,
    wakeup: Wakeup,
    cancel: CancellationToken,
    state: watch::Sender<RunnerState>,
}

/// Why an active runner left its loop.
enum Exit {
    Cancelled,
    ConnectionLost(sqlx::Error),
}

fn lock_key(name: &str) -> String {
    format!("lectern.projection:{name}")
}

/// Try to take the projection's advisory lock on `conn` (session-level: it
/// goes when the connection goes, so a dead process frees it).
pub async fn try_lock(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
        .bind(LOCK_NAMESPACE)
        .bind(lock_key(name))
        .fetch_one(conn)
        .await
}

async fn unlock(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_advisory_unlock($1, hashtext($2))")
        .bind(LOCK_NAMESPACE)
        .bind(lock_key(name))
        .fetch_one(conn)
        .await
}

impl Runner {
    async fn run(mut self) {
        let name = self.projection.name();
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            let mut conn = match self.take_lock().await {
                Some(conn) => conn,
                None => break,
            };
            tracing::info!(projection = name, "runner active");
            match self.active(&mut conn).await {
                Exit::Cancelled => {
                    let _ = unlock(&mut conn, name).await;
                    let _ = sqlx::query("UPDATE projection_checkpoints SET status = 'idle', updated_at = now() WHERE name = $1 AND status = 'running'")
                        .bind(name)
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                    break;
                }
                Exit::ConnectionLost(e) => {
                    tracing::warn!(projection = name, error = %e, "runner lost its connection; standing by");
                    self.state.send_replace(RunnerState::Standby);
                    tokio::time::sleep(self.config.standby_interval).await;
                }
            }
        }
        self.state.send_replace(RunnerState::Stopped);
        tracing::info!(projection = name, "runner stopped");
    }

    /// Stand by until this runner holds the lock; `None` when cancelled.
    async fn take_lock(&mut self) -> Option<PgConnection> {
        let name = self.projection.name();
        loop {
            let attempt = async {
                let mut conn = PgConnection::connect_with(&self.connect).await?;
                if try_lock(&mut conn, name).await? {
                    Ok(Some(conn))
                } else {
                    let _ = conn.close().await;
                    Ok::<_, sqlx::Error>(None)
                }
            };
            match attempt.await {
                Ok(Some(conn)) => return Some(conn),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(projection = name, error = %e, "standby could not reach the database")
                }
            }
            tokio::select! {
                () = self.cancel.cancelled() => return None,
                () = tokio::time::sleep(self.config.standby_interval) => {}
            }
        }
    }

    async fn active(&mut self, conn: &mut PgConnection) -> Exit {
        let name = self.projection.name();
        let checkpoint = match load_checkpoint(conn, name).await {
            Ok(c) => c,
            Err(e) => return Exit::ConnectionLost(e),
        };
        let mut log = Follower::new(
            checkpoint,
            self.projection.interest(),
            &self.wakeup,
            self.config.follow(),
        );
        let live = Tables::live(self.projection.tables());
        let mut backoff = self.config.min_backoff;
        loop {
            if self.cancel.is_cancelled() {
                return Exit::Cancelled;
            }
            match rebuild_requested(&mut *conn, name).await {
                Ok(true) => match self.rebuild(conn).await {
                    Ok(Some(position)) => {
                        log.seek(position);
                        backoff = self.config.min_backoff;
                        continue;
                    }
                    Ok(None) => return Exit::Cancelled,
                    Err(RunError::Connection(e)) => return Exit::ConnectionLost(e),
                    // A rebuild that fails starts again from zero next time.
                    Err(RunError::Apply { event, error, .. }) => {
                        if let Some(exit) = self.fail(conn, &event, &error, &mut backoff).await {
                            return exit;
                        }
                        continue;
                    }
                },
                Ok(false) => {}
                Err(e) => return Exit::ConnectionLost(e),
            }
            // Drain: batch after batch until the readable log is exhausted.
            let mut failed = false;
            loop {
                match apply_batch(conn, &*self.projection, &live, &mut log, true).await {
                    Ok(1..) => {
                        backoff = self.config.min_backoff;
                        let checkpoint = log.position();
                        self.state.send_replace(RunnerState::Active(checkpoint));
                        metrics::gauge!("lectern_projection_position", "projection" => name)
                            .set(checkpoint.global_position as f64);
                        if self.cancel.is_cancelled() {
                            return Exit::Cancelled;
                        }
                    }
                    Ok(0) => {
                        self.state.send_replace(RunnerState::Active(log.position()));
                        break;
                    }
                    Err(RunError::Connection(e)) => return Exit::ConnectionLost(e),
                    Err(RunError::Apply { event, error, .. }) => {
                        // The follower has moved past what the batch did
                        // commit, so those events are not applied twice.
                        failed = true;
                        if let Some(exit) = self.fail(conn, &event, &error, &mut backoff).await {
                            return exit;
                        }
                        break;
                    }
                }
            }
            // A failed runner goes straight back to its batch (fail() waited).
            if !failed {
                match mark_running(conn, name).await {
                    Ok(()) => {}
                    Err(e) => return Exit::ConnectionLost(e),
                }
                if let Ok(head) = log::head(conn).await {
                    metrics::gauge!("lectern_projection_lag_events", "projection" => name)
                        .set((head - log.position().global_position).max(0) as f64);
                }
                if !log.wait(&self.cancel).await {
                    return Exit::Cancelled;
                }
            }
        }
    }

    /// Record a failed event, then wait out the backoff. `Some` when the
    /// runner must leave its loop.
    async fn fail(
        &mut self,
        conn: &mut PgConnection,
        event: &LogEvent,
        error: &ProjectionError,
        backoff: &mut Duration,
    ) -> Option<Exit> {
        let name = self.projection.name();
        let message = error.to_string();
        tracing::error!(projection = name, position = event.position.global_position,
            event_type = %event.event_type, error = %message, "projection stopped at an event it cannot apply");
        metrics::counter!("lectern_projection_failures_total", "projection" => name).increment(1);
        self.state.send_replace(RunnerState::Failed {
            position: event.position.global_position,
            error: message.clone(),
        });
        if let Err(e) = record_failure(conn, name, event.position.global_position, &message).await {
            return Some(Exit::ConnectionLost(e));
        }
        tokio::select! {
            () = self.cancel.cancelled() => return Some(Exit::Cancelled),
            () = tokio::time::sleep(*backoff) => {}
        }
        *backoff = (*backoff * 2).min(self.config.max_backoff);
        None
    }

    /// Rebuild from position zero into shadow tables, then swap them in.
    /// `Ok(None)` when cancelled part-way (the live tables are untouched).
    async fn rebuild(&mut self, conn: &mut PgConnection) -> Result<Option<Position>, RunError> {
        let name = self.projection.name();
        tracing::info!(projection = name, "rebuild started");
        sqlx::query("UPDATE projection_checkpoints SET status = 'rebuilding', updated_at = now() WHERE name = $1")
            .bind(name)
            .execute(&mut *conn)
            .await?;
        let tables = self.projection.tables();
        for t in tables {
            for sql in [
                format!("DROP TABLE IF EXISTS {t}{SHADOW_SUFFIX}"),
                format!("CREATE TABLE {t}{SHADOW_SUFFIX} (LIKE {t} INCLUDING ALL)"),
            ] {
                sqlx::query(&sql).execute(&mut *conn).await?;
            }
        }
        let shadow = Tables::shadow(tables);
        let mut log = Follower::new(
            Position::ZERO,
            self.projection.interest(),
            &self.wakeup,
            self.config.follow(),
        );
        let mut applied: i64 = 0;
        loop {
            if self.cancel.is_cancelled() {
                return Ok(None);
            }
            match apply_batch(conn, &*self.projection, &shadow, &mut log, false).await? {
                0 => break,
                n => applied += n as i64,
            }
        }
        let position = log.position();
        let mut tx = conn.begin().await?;
        for t in tables {
            let (schema, table) = t.rsplit_once('.').map_or(("", *t), |(s, t)| (s, t));
            let qualify = |n: &str| {
                if schema.is_empty() {
                    n.to_owned()
                } else {
                    format!("{schema}.{n}")
                }
            };
            for sql in [
                format!("ALTER TABLE {t} RENAME TO {table}__old"),
                format!(
                    "ALTER TABLE {} RENAME TO {table}",
                    qualify(&format!("{table}{SHADOW_SUFFIX}"))
                ),
                format!("DROP TABLE {}", qualify(&format!("{table}__old"))),
            ] {
                sqlx::query(&sql).execute(&mut *tx).await?;
            }
        }
        sqlx::query!(
            "UPDATE projection_checkpoints
                SET last_tx = $2::text::xid8, last_position = $3, events_applied = $4, status = 'running',
                    rebuild_requested_at = NULL, rebuilt_at = now(), last_error = NULL, failing_position = NULL,
                    updated_at = now()
              WHERE name = $1",
            name,
            position.transaction_id.to_string(),
            position.global_position,
            applied,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(
            projection = name,
            events = applied,
            "rebuild finished and swapped in"
        );
        Ok(Some(position))
    }
}

/// Why a batch failed.
enum RunError {
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

/// Apply the next batch the follower reads, in one transaction with the
/// checkpoint, and move the follower past it. Returns how many events the
/// batch held (0 when nothing is readable yet). With `checkpoint` false (a
/// rebuild's shadow tables) the live checkpoint is left alone.
async fn apply_batch(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    tables: &Tables,
    log: &mut Follower,
    checkpoint: bool,
) -> Result<usize, RunError> {
    let interest = log.interest();
    let mut tx = conn.begin().await?;
    let events = log.read(&mut tx).await?;
    if events.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    let wanted: Vec<&LogEvent> = events.iter().filter(|e| interest.wants(e)).collect();
    match projection.apply_all(&mut tx, tables, &wanted).await {
        Ok(()) => {
            commit(tx, projection, &events, checkpoint).await?;
            log.advance(events[events.len() - 1].position);
            return Ok(events.len());
        }
        Err(error) => {
            let _ = tx.rollback().await;
            check_connection(&error)?;
        }
    }
    // Find the bad event by applying the batch again one event at a time.
    tx = conn.begin().await?;
    for (index, event) in events.iter().enumerate() {
        if !interest.wants(event) {
            continue;
        }
        if let Err(error) = projection.apply(&mut tx, tables, event).await {
            let _ = tx.rollback().await;
            check_connection(&error)?;
            // Commit the events before the bad one, so the projection stops
            // exactly at it rather than at the start of its batch.
            if index > 0 {
                let before = &events[..index];
                let mut tx = conn.begin().await?;
                let good: Vec<&LogEvent> = before.iter().filter(|e| interest.wants(e)).collect();
                if let Err(error) = projection.apply_all(&mut tx, tables, &good).await {
                    let _ = tx.rollback().await;
                    check_connection(&error)?;
                    return Err(RunError::Apply {
                        event: Box::new(good.first().map_or(event, |e| *e).clone()),
                        error,
                    });
                }
                commit(tx, projection, before, checkpoint).await?;
                log.advance(before[index - 1].position);
            }
            return Err(RunError::Apply {
                event: Box::new(event.clone()),
                error,
            });
        }
    }
    commit(tx, projection, &events, checkpoint).await?;
    log.advance(events[events.len() - 1].position);
    Ok(events.len())
}

/// Move the checkpoint (unless a rebuild is filling shadow tables) past
/// `events` and commit their writes with it.
async fn commit(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    projection: &dyn Projection,
    events: &[LogEvent],
    checkpoint: bool,
) -> Result<(), RunError> {
    let last = events[events.len() - 1].position;
    if checkpoint {
        sqlx::query!(
            "UPDATE projection_checkpoints
                SET last_tx = $2::text::xid8, last_position = $3, events_applied = events_applied + $4,
                    status = 'running', last_error = NULL, failing_position = NULL, updated_at = now()
              WHERE name = $1",
            projection.name(),
            last.transaction_id.to_string(),
            last.global_position,
            events.len() as i64,
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    metrics::counter!("lectern_projection_events_total", "projection" => projection.name())
        .increment(events.len() as u64);
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

async fn load_checkpoint(conn: &mut PgConnection, name: &str) -> Result<Position, sqlx::Error> {
    sqlx::query!(
        "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
        name,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query_as!(
        Position,
        r#"SELECT last_tx::text::bigint AS "transaction_id!", last_position AS global_position
             FROM projection_checkpoints WHERE name = $1"#,
        name,
    )
    .fetch_one(conn)
    .await
}

/// Whether a rebuild of `name` was asked for and has not finished.
pub async fn rebuild_requested<'c>(
    conn: impl PgExecutor<'c>,
    name: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT rebuild_requested_at IS NOT NULL AS "requested!" FROM projection_checkpoints WHERE name = $1"#,
        name,
    )
    .fetch_optional(conn)
    .await
    .map(|r| r.unwrap_or(false))
}

async fn mark_running(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE projection_checkpoints SET status = 'running', updated_at = now()
          WHERE name = $1 AND status <> 'running'",
        name,
    )
    .execute(conn)
    .await
    .map(|_| ())
}

async fn record_failure(
    conn: &mut PgConnection,
    name: &str,
    position: i64,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE projection_checkpoints
            SET status = 'failed', last_error = $2, last_error_at = now(), failing_position = $3, updated_at = now()
          WHERE name = $1",
        name,
        error,
        position,
    )
    .execute(conn)
    .await
    .map(|_| ())
}

/// Ask for `name` to be rebuilt from position zero, creating its checkpoint
/// if no runner has yet. The active runner, in whichever process holds the
/// projection's lock, picks it up. The caller checks that `name` is a
/// projection.
pub async fn request_rebuild(pool: &PgPool, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO projection_checkpoints (name, rebuild_requested_at) VALUES ($1, now())
         ON CONFLICT (name) DO UPDATE SET rebuild_requested_at = now(), updated_at = now()",
        name,
    )
    .execute(pool)
    .await?;
    sqlx::query!("SELECT pg_notify($1, '')", EVENTS_CHANNEL)
        .execute(pool)
        .await?;
    Ok(())
}
