//! Running projections: one active runner per projection in the whole
//! cluster, batches committed with their checkpoint, wake-up on NOTIFY with
//! polling as the fallback, failures that stop a projection without skipping
//! an event, and rebuilds into shadow tables.
//!
//! - this file: the run loop (stand by, take the lock, drain, wait, fail);
//! - `batch.rs`: applying one batch with its checkpoint, exactly once;
//! - `rebuild.rs`: rebuilding into shadow tables and swapping them in;
//! - `checkpoint.rs`: the `projection_checkpoints` rows;
//! - `lock.rs`: the advisory lock that makes one runner active.

mod batch;
mod checkpoint;
mod lock;
mod rebuild;

pub use checkpoint::{rebuild_requested, request_rebuild};
pub use lock::try_lock;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lectern_domain::Position;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::follow::{FollowConfig, Follower, Wakeup};
use crate::log::{self, LogEvent};
use crate::projection::{Projection, ProjectionError, Tables};
use batch::{apply_batch, Batch, RunError};
use checkpoint::{load_checkpoint, mark_running, record_failure, save_position};
use lock::unlock;

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
    /// After a round that applied events, the least pause before the next
    /// one (see [`FollowConfig::settle`]): under load a runner then applies
    /// larger batches, at the cost of at most this much more lag.
    pub settle: Duration,
    /// How often an active runner looks for a requested rebuild (a request
    /// also wakes it, so an idle runner starts within this and its poll).
    pub rebuild_check_interval: Duration,
    /// How long a runner that reads past events its projection does not read
    /// may keep its new position in memory only (a batch that applies events
    /// saves it with them). The checkpoint, and so a `consistent_with` wait
    /// for a position among those events, trails by at most this; a crash
    /// in between only makes the runner read those events again.
    pub checkpoint_interval: Duration,
    /// How often a standby runner tries to take over.
    pub standby_interval: Duration,
    /// The first wait after a failure; it doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// The longest wait after a failure.
    pub max_backoff: Duration,
}

impl RunnerConfig {
    /// How the runner's follower reads and waits.
    fn follow(&self) -> FollowConfig {
        FollowConfig {
            batch_size: self.batch_size,
            idle_poll: self.poll_interval,
            active_poll: self.active_poll_interval,
            settle: self.settle,
        }
    }
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            active_poll_interval: Duration::from_millis(20),
            settle: Duration::from_millis(10),
            rebuild_check_interval: Duration::from_millis(250),
            checkpoint_interval: Duration::from_millis(100),
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
    Failed {
        /// The event it cannot apply.
        position: i64,
        /// Why.
        error: String,
    },
    /// Cancelled; the lock is released.
    Stopped,
}

/// A running projection.
pub struct RunnerHandle {
    /// The name shown to the user.
    pub name: &'static str,
    /// What it is doing.
    pub state: watch::Receiver<RunnerState>,
    /// Its task.
    pub task: JoinHandle<()>,
}

/// How often a runner reads the log's head for its lag gauge.
const LAG_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Starts runners for a set of projections.
pub struct Runners {
    /// Where each runner opens its own connection (it holds the lock).
    pub connect: PgConnectOptions,
    /// Their tuning.
    pub config: RunnerConfig,
    /// Wakes them when events are appended.
    pub wakeup: Wakeup,
    /// Stops the runners.
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
                    // A batch is derived data committed with its checkpoint:
                    // should a crash lose the last batches, both go, and the
                    // runner applies those events again. So its commits need
                    // not wait for the WAL to reach the disk, and do not
                    // queue behind (or hold up) commands' commits that must.
                    sqlx::query("SET synchronous_commit = off")
                        .execute(&mut conn)
                        .await?;
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
        // Whether the checkpoint row says `running` (every committed batch
        // sets it too), the position it holds (`None`: not known here) and
        // when that was written, and when the rebuild flag and the head were
        // last read.
        let mut marked = false;
        let mut saved = Some(checkpoint);
        let mut saved_at = Instant::now();
        let mut rebuild_checked: Option<Instant> = None;
        let mut lag_reported: Option<Instant> = None;
        loop {
            if self.cancel.is_cancelled() {
                return Exit::Cancelled;
            }
            if rebuild_checked.is_none_or(|at| at.elapsed() >= self.config.rebuild_check_interval) {
                rebuild_checked = Some(Instant::now());
                match rebuild_requested(&mut *conn, name).await {
                    Ok(true) => {
                        marked = false;
                        match self.rebuild(conn).await {
                            Ok(Some(position)) => {
                                log.seek(position);
                                (saved, saved_at) = (Some(position), Instant::now());
                                backoff = self.config.min_backoff;
                                continue;
                            }
                            Ok(None) => return Exit::Cancelled,
                            Err(RunError::Connection(e)) => return Exit::ConnectionLost(e),
                            // A rebuild that fails starts again from zero next time.
                            Err(RunError::Apply { event, error, .. }) => {
                                if let Some(exit) =
                                    self.fail(conn, &event, &error, &mut backoff).await
                                {
                                    return exit;
                                }
                                continue;
                            }
                        }
                    }
                    Ok(false) => {}
                    Err(e) => return Exit::ConnectionLost(e),
                }
            }
            // Drain: batch after batch until the readable log is exhausted (a
            // batch shorter than the batch size read all there was).
            let mut failed = false;
            loop {
                match apply_batch(conn, &*self.projection, &live, &mut log, true).await {
                    Ok(Batch {
                        scanned: n @ 1..,
                        applied,
                    }) => {
                        backoff = self.config.min_backoff;
                        let checkpoint = log.position();
                        // A batch that applied events saved the checkpoint
                        // with them; one that only read past others saves it
                        // now and then (and once the log is drained, below).
                        if applied > 0 {
                            (saved, saved_at, marked) = (Some(checkpoint), Instant::now(), true);
                        } else if saved_at.elapsed() >= self.config.checkpoint_interval {
                            if let Err(e) = save_position(conn, name, checkpoint).await {
                                return Exit::ConnectionLost(e);
                            }
                            (saved, saved_at, marked) = (Some(checkpoint), Instant::now(), true);
                        }
                        self.state.send_replace(RunnerState::Active(checkpoint));
                        metrics::gauge!("lectern_projection_position", "projection" => name)
                            .set(checkpoint.global_position as f64);
                        if self.cancel.is_cancelled() {
                            return Exit::Cancelled;
                        }
                        if (n as i64) < self.config.batch_size {
                            break;
                        }
                    }
                    Ok(_) => {
                        // Nothing more is readable: save where the runner
                        // has read to, so that the checkpoint shows it
                        // caught up (and `consistent_with` waits end), at
                        // most once an interval (the wait below ends in time).
                        let checkpoint = log.position();
                        if saved != Some(checkpoint)
                            && saved_at.elapsed() >= self.config.checkpoint_interval
                        {
                            if let Err(e) = save_position(conn, name, checkpoint).await {
                                return Exit::ConnectionLost(e);
                            }
                            (saved, saved_at, marked) = (Some(checkpoint), Instant::now(), true);
                        }
                        self.state.send_replace(RunnerState::Active(checkpoint));
                        break;
                    }
                    Err(RunError::Connection(e)) => return Exit::ConnectionLost(e),
                    Err(RunError::Apply { event, error, .. }) => {
                        // The follower has moved past what the batch did
                        // commit, so those events are not applied twice.
                        // Whether that moved the saved checkpoint is not
                        // known here: the next save writes it whatever it is.
                        (failed, marked, saved) = (true, false, None);
                        if let Some(exit) = self.fail(conn, &event, &error, &mut backoff).await {
                            return exit;
                        }
                        break;
                    }
                }
            }
            // A failed runner goes straight back to its batch (fail() waited).
            if !failed {
                if !marked {
                    match mark_running(conn, name).await {
                        Ok(()) => marked = true,
                        Err(e) => return Exit::ConnectionLost(e),
                    }
                }
                if lag_reported.is_none_or(|at| at.elapsed() >= LAG_REPORT_INTERVAL) {
                    lag_reported = Some(Instant::now());
                    if let Ok(head) = log::head(conn).await {
                        metrics::gauge!("lectern_projection_lag_events", "projection" => name)
                            .set((head - log.position().global_position).max(0) as f64);
                    }
                }
                // A position not yet saved is saved once its interval has
                // passed, whether or not the log wakes the runner first.
                let woken = if saved == Some(log.position()) {
                    log.wait(&self.cancel).await
                } else {
                    let due = self
                        .config
                        .checkpoint_interval
                        .saturating_sub(saved_at.elapsed());
                    tokio::time::timeout(due, log.wait(&self.cancel))
                        .await
                        .unwrap_or(true)
                };
                if !woken {
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
}
