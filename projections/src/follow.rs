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
//!
//! A process's followers share one [`Tail`]: a task that reads only the
//! header of each new event (its position and aggregate type) and wakes the
//! followers once it has. A follower of a few aggregate types then moves past
//! a stretch of the log with none of its events without reading it: on a
//! log busy with one context's events, the others' projections cost a look
//! at memory rather than a query each.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lectern_domain::Position;
use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::log;
use crate::projection::Interest;

/// The NOTIFY channel the events table's insert trigger signals.
pub const EVENTS_CHANNEL: &str = "lectern_events";

/// The NOTIFY payload of a rebuild request (see
/// [`crate::runner::request_rebuild`]): it wakes the runners even though the
/// log did not move.
pub const REBUILD_PAYLOAD: &str = "rebuild";

/// How long a [`Tail`]'s last read is trusted: a follower whose tail has not
/// read for longer (its connection is down, the process is stopping) reads
/// the log itself.
const TAIL_FRESH: Duration = Duration::from_secs(1);

/// Headers the tail reads at a time.
const TAIL_BATCH: i64 = 5_000;

/// The first pause after a wake-up or a read that moved the tail, before it
/// reads again (writers skip the NOTIFY while another transaction's is
/// pending, and a notified transaction may not be readable yet); it doubles
/// while nothing new is read, up to the idle poll.
const TAIL_ACTIVE_POLL: Duration = Duration::from_millis(5);

/// How long an idle tail waits for a NOTIFY before reading anyway.
const TAIL_IDLE_POLL: Duration = Duration::from_millis(500);

/// What a process's log tail has read: every event after `from` up to
/// `head` (in log order, never skipping one), and the last event of each
/// aggregate type among them.
#[derive(Debug, Clone, Default)]
pub struct Tail {
    /// `(from, head)`; `None` for a polling-only wake-up, which vouches for
    /// nothing.
    covered: Option<(Position, Position)>,
    /// The last event of each aggregate type after `from`.
    last: HashMap<String, Position>,
    /// When the tail last read the log.
    read_at: Option<Instant>,
}

/// What a [`Tail`] says of a follower's next read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vouch {
    /// It cannot tell: read the log.
    Read,
    /// Nothing after the follower's position is readable yet.
    Nothing,
    /// Every event after the follower's position up to this one is of a
    /// type it does not read: move past them.
    Skip(Position),
}

impl Tail {
    fn starting_at(from: Position) -> Self {
        Self {
            covered: Some((from, from)),
            last: HashMap::new(),
            read_at: Some(Instant::now()),
        }
    }

    /// What a follower at `after`, reading the events `interest` names, can
    /// know without reading the log.
    pub fn vouch(&self, after: Position, interest: Interest) -> Vouch {
        let (Some((from, head)), Some(types), Some(read_at)) =
            (self.covered, interest.aggregate_types, self.read_at)
        else {
            return Vouch::Read;
        };
        if after < from || after > head || read_at.elapsed() > TAIL_FRESH {
            return Vouch::Read;
        }
        if types
            .iter()
            .any(|t| self.last.get(*t).is_some_and(|last| *last > after))
        {
            return Vouch::Read;
        }
        if head > after {
            Vouch::Skip(head)
        } else {
            Vouch::Nothing
        }
    }

    /// Take in a read's headers; whether the head moved.
    fn extend(&mut self, headers: Vec<(Position, String)>) -> bool {
        self.read_at = Some(Instant::now());
        let Some((_, head)) = &mut self.covered else {
            return false;
        };
        let moved = !headers.is_empty();
        for (position, aggregate_type) in headers {
            *head = position;
            self.last.insert(aggregate_type, position);
        }
        moved
    }
}

/// Wakes followers when events are appended. One LISTEN connection serves
/// every follower of the process, and one more reads the new events'
/// headers for them (see [`Tail`]) before they are woken.
#[derive(Clone)]
pub struct Wakeup {
    rx: watch::Receiver<Tail>,
    /// Keeps the channel open for a polling-only wake-up.
    _idle: Option<Arc<watch::Sender<Tail>>>,
}

impl Wakeup {
    /// Listen on the events channel and follow the log's headers from its
    /// readable end; both stop with `cancel`.
    pub async fn listen(pool: &PgPool, cancel: CancellationToken) -> Result<Self, sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        let connect = (*pool.connect_options()).clone();
        let mut conn = PgConnection::connect_with(&connect).await?;
        // (xmin, 0) precedes every event not yet readable, and follows
        // every event that is.
        let xmin: i64 =
            sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                .fetch_one(&mut conn)
                .await?;
        let (tx, rx) = watch::channel(Tail::starting_at(Position {
            transaction_id: xmin,
            global_position: 0,
        }));
        tokio::spawn(follow_headers(listener, conn, connect, tx, cancel));
        Ok(Self { rx, _idle: None })
    }

    /// What the process's log tail has read so far.
    pub fn tail(&self) -> Tail {
        self.rx.borrow().clone()
    }

    /// A wake-up that never fires: followers only poll.
    pub fn polling_only() -> Self {
        let (tx, rx) = watch::channel(Tail::default());
        Self {
            rx,
            _idle: Some(Arc::new(tx)),
        }
    }
}

/// The tail's task: on each NOTIFY (and between them, see
/// [`TAIL_ACTIVE_POLL`]) read the new events' headers, then wake the
/// followers if the head moved (or a rebuild was asked for, or the listener
/// reconnected and something may have been missed).
async fn follow_headers(
    mut listener: PgListener,
    conn: PgConnection,
    connect: PgConnectOptions,
    tx: watch::Sender<Tail>,
    cancel: CancellationToken,
) {
    let mut conn = Some(conn);
    let mut pause = TAIL_ACTIVE_POLL;
    loop {
        let woken = tokio::select! {
            () = cancel.cancelled() => return,
            n = listener.try_recv() => match n {
                Ok(Some(n)) => { pause = TAIL_ACTIVE_POLL; n.payload() == REBUILD_PAYLOAD }
                // The connection dropped; PgListener reconnects on the next
                // call. Wake everyone: something may have been missed.
                Ok(None) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "event listener failed; followers fall back to polling");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    true
                }
            },
            () = tokio::time::sleep(pause) => {
                pause = (pause * 2).min(TAIL_IDLE_POLL);
                false
            }
        };
        let mut moved = false;
        loop {
            let read = match &mut conn {
                Some(c) => read_headers(c, &tx).await,
                None => match PgConnection::connect_with(&connect).await {
                    Ok(c) => read_headers(conn.insert(c), &tx).await,
                    Err(e) => Err(e),
                },
            };
            match read {
                Ok((n, m)) => {
                    moved |= m;
                    if n < TAIL_BATCH as usize {
                        break;
                    }
                }
                Err(e) => {
                    // Until it reads again its followers read for themselves
                    // (its last read goes stale).
                    tracing::warn!(error = %e, "the log tail cannot read the log; retrying");
                    conn = None;
                    break;
                }
            }
        }
        if moved {
            pause = TAIL_ACTIVE_POLL;
        }
        if moved || woken {
            tx.send_modify(|_| {});
        }
    }
}

/// Read the next headers after the tail's head into it: how many, and
/// whether the head moved.
async fn read_headers(
    conn: &mut PgConnection,
    tx: &watch::Sender<Tail>,
) -> Result<(usize, bool), sqlx::Error> {
    let Some((_, head)) = tx.borrow().covered else {
        return Ok((0, false));
    };
    let headers = log::read_headers_after(conn, head, TAIL_BATCH).await?;
    let n = headers.len();
    let mut moved = false;
    tx.send_if_modified(|tail| {
        moved = tail.extend(headers);
        false
    });
    Ok((n, moved))
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
    wakeup: watch::Receiver<Tail>,
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
    ///
    /// When the process's [`Tail`] vouches that nothing after the position
    /// is readable yet, or that none of the next events is of a type the
    /// follower reads, nothing is read: the read is empty, or moves past
    /// those events (counted as one in [`log::Read::scanned`]).
    pub async fn read(&mut self, conn: &mut PgConnection) -> Result<log::Read, sqlx::Error> {
        // A wake-up that arrives from now on is for events this read may miss.
        let vouch = self
            .wakeup
            .borrow_and_update()
            .vouch(self.after, self.interest);
        match vouch {
            Vouch::Nothing => {
                self.found = false;
                return Ok(log::Read::default());
            }
            Vouch::Skip(head) => {
                self.found = true;
                return Ok(log::Read {
                    events: Vec::new(),
                    last: Some(head),
                    scanned: 1,
                });
            }
            Vouch::Read => {}
        }
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
