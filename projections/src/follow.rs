//! Following the log: the one way anything in Lectern tails the event log.
//!
//! A [`Follower`] holds a `(transaction_id, global_position)` pair, reads the
//! events after it with [`crate::log::read_after`] (never skipping one that
//! commits late), and waits for more on a [`Wakeup`]: a NOTIFY from the
//! events table's trigger, or its poll interval as the fallback, since the
//! trigger skips a NOTIFY while another transaction's is pending.
//!
//! The projection runners and process managers follow the log this way (with
//! their checkpoint as the starting pair), and so do the revocation watcher
//! (from a point in time, without a checkpoint) and the ledger sealer (from
//! its last leaf).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lectern_domain::Position;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::log;
use crate::projection::Interest;

/// The NOTIFY channel the events table's insert trigger signals.
pub const EVENTS_CHANNEL: &str = "lectern_events";

/// Wakes followers when events are appended. One LISTEN connection serves
/// every follower of the process.
#[derive(Clone)]
pub struct Wakeup {
    rx: watch::Receiver<u64>,
    /// Keeps the channel open for a polling-only wake-up.
    _idle: Option<Arc<watch::Sender<u64>>>,
}

impl Wakeup {
    /// Listen on the events channel; the listener stops with `cancel`.
    pub async fn listen(pool: &PgPool, cancel: CancellationToken) -> Result<Self, sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        let (tx, rx) = watch::channel(0u64);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    n = listener.try_recv() => match n {
                        Ok(Some(_)) => { tx.send_modify(|c| *c += 1); }
                        // The connection dropped; PgListener reconnects on the
                        // next call. Wake everyone: something may have been missed.
                        Ok(None) => { tx.send_modify(|c| *c += 1); }
                        Err(e) => {
                            tracing::warn!(error = %e, "event listener failed; followers fall back to polling");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        });
        Ok(Self { rx, _idle: None })
    }

    /// A wake-up that never fires: followers only poll.
    pub fn polling_only() -> Self {
        let (tx, rx) = watch::channel(0u64);
        Self {
            rx,
            _idle: Some(Arc::new(tx)),
        }
    }
}

/// How a follower reads and waits.
#[derive(Debug, Clone, Copy)]
pub struct FollowConfig {
    /// Events per read.
    pub batch_size: i64,
    /// How long an idle follower waits for a NOTIFY before polling anyway.
    pub idle_poll: Duration,
    /// The wait after a read that found events. Writers skip the NOTIFY while
    /// another transaction's is pending (see migration `20261122000004`), so
    /// right after activity a follower looks again soon rather than waiting
    /// for a notification that may not come.
    pub active_poll: Duration,
    /// After a read that found events, the least pause before the next read,
    /// whatever wakes the follower meanwhile: on a busy log a NOTIFY comes
    /// with nearly every commit, and a follower that reads at each one reads
    /// a few events at a time, each read a round trip and a transaction. Zero
    /// (the default) reads again at the first wake-up.
    pub settle: Duration,
}

impl Default for FollowConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            idle_poll: Duration::from_millis(500),
            active_poll: Duration::from_millis(20),
            settle: Duration::ZERO,
        }
    }
}

/// A reader of the log that remembers where it is and waits for more.
pub struct Follower {
    after: Position,
    interest: Interest,
    config: FollowConfig,
    wakeup: watch::Receiver<u64>,
    /// Whether the last read found events.
    found: bool,
}

impl Follower {
    /// Follow the log after `after`, fetching whole only what `interest` names.
    pub fn new(after: Position, interest: Interest, wakeup: &Wakeup, config: FollowConfig) -> Self {
        Self {
            after,
            interest,
            config,
            wakeup: wakeup.rx.clone(),
            found: false,
        }
    }

    /// The pair after which the next read starts.
    pub fn position(&self) -> Position {
        self.after
    }

    /// Start again after `after` (a rebuild, a reloaded checkpoint).
    pub fn seek(&mut self, after: Position) {
        self.after = after;
    }

    /// What this follower reads.
    pub fn interest(&self) -> Interest {
        self.interest
    }

    /// The next events after the position that its interest names, through
    /// `conn` (which may be in a transaction), and how far the read went.
    /// The position does not move: call [`Self::advance`] once the events
    /// have been taken into account, so that a failure reads them again.
    pub async fn read(&mut self, conn: &mut PgConnection) -> Result<log::Read, sqlx::Error> {
        // A wake-up that arrives from now on is for events this read may miss.
        self.wakeup.borrow_and_update();
        let read = log::read_after(conn, self.after, self.config.batch_size, self.interest).await?;
        self.found = read.scanned > 0;
        Ok(read)
    }

    /// [`Self::read`], with each payload and metadata as PostgreSQL's text
    /// of the jsonb (the ledger sealer's read).
    pub async fn read_text(
        &mut self,
        conn: &mut PgConnection,
    ) -> Result<Vec<log::TextEvent>, sqlx::Error> {
        self.wakeup.borrow_and_update();
        let events = log::read_text_after(conn, self.after, self.config.batch_size).await?;
        self.found = !events.is_empty();
        Ok(events)
    }

    /// Move past `to`, the position of the last event taken into account.
    pub fn advance(&mut self, to: Position) {
        self.after = self.after.max(to);
    }

    /// Wait for more events: a NOTIFY, or the poll interval (short right
    /// after a read that found events, and then at least `settle`). `false`
    /// when `cancel` fired.
    pub async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        if self.found && !self.config.settle.is_zero() {
            return tokio::select! {
                () = cancel.cancelled() => false,
                () = tokio::time::sleep(self.config.settle) => true,
            };
        }
        let wait = if self.found {
            self.config.active_poll
        } else {
            self.config.idle_poll
        };
        // Once the listener has stopped (at shutdown) there is nothing to
        // wait for but the poll interval.
        let listening = self.wakeup.has_changed().is_ok();
        tokio::select! {
            () = cancel.cancelled() => false,
            _ = self.wakeup.changed(), if listening => true,
            () = tokio::time::sleep(wait) => true,
        }
    }
}

/// A starting pair from which a follower sees every event recorded since
/// `since`: every transaction that wrote one, and every one still running.
/// It may also see a few older events of later transactions.
pub async fn position_since(
    conn: &mut PgConnection,
    since: DateTime<Utc>,
) -> Result<Position, sqlx::Error> {
    let tx = sqlx::query_scalar!(
        r#"SELECT LEAST((SELECT transaction_id FROM events WHERE recorded_at >= $1
                         ORDER BY transaction_id LIMIT 1),
                        pg_snapshot_xmin(pg_current_snapshot()))::text::bigint AS "tx!""#,
        since,
    )
    .fetch_one(conn)
    .await?;
    // (tx, 0) precedes every event of transaction `tx`.
    Ok(Position {
        transaction_id: tx,
        global_position: 0,
    })
}
