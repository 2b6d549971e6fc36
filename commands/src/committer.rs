//! Group commit across aggregates.
//!
//! Each aggregate's worker already commits the commands waiting in its own
//! queue together. Appends to *different* aggregates of one type would still
//! be one transaction each, and PostgreSQL pays per transaction (a round trip,
//! snapshot, commit record, WAL flush wait) as much as per row. So appends go
//! through one committer per aggregate type: at most
//! [`crate::DispatchConfig::concurrent_appends`] statements are in flight.
//! An append that finds a free slot goes out at once, alone, from its own
//! worker; the appends that arrive while every slot is busy queue, and go
//! together in the next statement that gets a slot, all or nothing
//! ([`PgEventStore::append_streams`]). So under light load nothing waits,
//! and under heavy load several aggregates share a transaction.
//!
//! A shared statement fails as a whole when any one stream moved on (another
//! process appended to it), or when one append holds a value the database
//! refuses. Each append of it is then retried alone, so only the stale one
//! answers [`StoreError::Conflict`] to its worker (which reloads and retries
//! as usual), and only the faulty one fails.
//!
//! The committer keeps the connections it appends on, at most one per slot,
//! instead of handing each back to the pool after its statement: sqlx tests a
//! connection on every release with a round trip of its own, which would
//! double the round trips of every command. A connection kept but unused for
//! [`KEEP_IDLE`] goes back to the pool; one whose statement failed other than
//! by a conflict is never kept.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cqrs_es::Aggregate;
use lectern_domain::EventMetadata;
use sqlx::pool::PoolConnection;
use sqlx::Postgres;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::StoreError;
use crate::store::{NewEvent, PgEventStore, RecordedEvent, StreamAppend};

/// The most appends one shared statement carries.
const MAX_SHARED: usize = 64;

/// How long the committer keeps a connection it is not using.
const KEEP_IDLE: Duration = Duration::from_millis(250);

type Answer<E> = Result<Vec<RecordedEvent<E>>, StoreError>;

/// One aggregate's append, waiting for the committer.
struct Pending<A: Aggregate> {
    aggregate_id: String,
    expected_version: u64,
    events: Vec<(A::Event, EventMetadata)>,
    reply: oneshot::Sender<Answer<A::Event>>,
}

impl<A: Aggregate> Pending<A> {
    fn new_events(&self) -> Vec<NewEvent<'_, A::Event>> {
        new_events(&self.events)
    }
}

fn new_events<E>(events: &[(E, EventMetadata)]) -> Vec<NewEvent<'_, E>> {
    events
        .iter()
        .map(|(payload, metadata)| NewEvent { payload, metadata })
        .collect()
}

/// The committer of one aggregate type: see the module documentation.
pub(crate) struct Committer<A: Aggregate> {
    queue: mpsc::UnboundedSender<Pending<A>>,
    appender: Appender<A>,
    /// One permit per statement in flight, shared by direct and shared appends.
    slots: Arc<Semaphore>,
}

/// Connections kept between statements, with when each was last used.
type Kept = Arc<Mutex<Vec<(PoolConnection<Postgres>, Instant)>>>;

/// Runs append statements on the committer's kept connections.
struct Appender<A> {
    store: PgEventStore<A>,
    kept: Kept,
    /// The most connections kept: one per slot.
    keep: usize,
}

impl<A> Clone for Appender<A> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            kept: Arc::clone(&self.kept),
            keep: self.keep,
        }
    }
}

impl<A: Aggregate> Appender<A> {
    async fn connection(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match kept {
            Some((conn, _)) => Ok(conn),
            None => Ok(self.store.pool().acquire().await?),
        }
    }

    /// Keep `conn` after a statement that answered `result`, if the
    /// connection is sure to be sound: the statement completed, or the
    /// database refused it. After any other failure it goes back through the
    /// pool, whose test on release closes it if it is broken.
    fn release<T>(&self, conn: PoolConnection<Postgres>, result: &Result<T, StoreError>) {
        let pool = self.store.pool();
        // Never hold a connection that the pool has no other to replace:
        // keeping is a saving, never a reason for someone else to wait.
        let spare = pool.num_idle() > 0 || pool.size() < pool.options().get_max_connections();
        if matches!(result, Ok(_) | Err(StoreError::Conflict)) && spare && !pool.is_closed() {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            if kept.len() < self.keep {
                kept.push((conn, Instant::now()));
            }
        }
    }

    /// Hand back to the pool the connections unused for [`KEEP_IDLE`], and
    /// all of them once the pool is closing (its `close` waits for them).
    fn release_idle(&self) {
        let now = Instant::now();
        let closing = self.store.pool().is_closed();
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(_, used)| !closing && now.duration_since(*used) < KEEP_IDLE);
    }

    async fn append(
        &self,
        aggregate_id: &str,
        expected_version: u64,
        events: &[NewEvent<'_, A::Event>],
        state_after: Option<&A>,
    ) -> Answer<A::Event> {
        let mut conn = self.connection().await?;
        let result = self
            .store
            .append_on(
                &mut *conn,
                aggregate_id,
                expected_version,
                events,
                state_after,
            )
            .await;
        self.release(conn, &result);
        result
    }

    async fn append_streams(
        &self,
        streams: &[StreamAppend<'_, A::Event>],
    ) -> Result<Vec<Vec<RecordedEvent<A::Event>>>, StoreError> {
        let mut conn = self.connection().await?;
        let result = self.store.append_streams_on(&mut *conn, streams).await;
        self.release(conn, &result);
        result
    }
}

impl<A> Committer<A>
where
    A: Aggregate + 'static,
{
    /// Start the committer's task on the current runtime.
    pub(crate) fn start(store: PgEventStore<A>, concurrent: usize) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let slots = Arc::new(Semaphore::new(concurrent.max(1)));
        let appender = Appender {
            store,
            kept: Kept::default(),
            keep: concurrent.max(1),
        };
        tokio::spawn(run(appender.clone(), receiver, Arc::clone(&slots)));
        Self {
            queue,
            appender,
            slots,
        }
    }

    /// Append `events` to `aggregate_id` after `expected_version`, possibly in
    /// one statement with other aggregates' appends.
    pub(crate) async fn append(
        &self,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<(A::Event, EventMetadata)>,
    ) -> Answer<A::Event> {
        // A free slot: go straight to the database, with no hop through the
        // committer's task.
        if let Ok(_slot) = Arc::clone(&self.slots).try_acquire_owned() {
            return self
                .appender
                .append(aggregate_id, expected_version, &new_events(&events), None)
                .await;
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                aggregate_id: aggregate_id.to_owned(),
                expected_version,
                events,
                reply,
            })
            .map_err(|_| StoreError::WorkerGone)?;
        answer.await.unwrap_or(Err(StoreError::WorkerGone))
    }
}

impl<A> Committer<A>
where
    A: Aggregate + 'static,
{
    /// Append `events` and, in the same statement, `state_after` (the
    /// aggregate with them applied) as its snapshot. This waits for a slot
    /// rather than sharing a statement: a snapshot is one aggregate's.
    pub(crate) async fn append_with_snapshot(
        &self,
        aggregate_id: &str,
        expected_version: u64,
        events: &[NewEvent<'_, A::Event>],
        state_after: &A,
    ) -> Answer<A::Event> {
        let _slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::WorkerGone)?;
        self.appender
            .append(aggregate_id, expected_version, events, Some(state_after))
            .await
    }
}

async fn run<A: Aggregate + 'static>(
    appender: Appender<A>,
    mut receiver: mpsc::UnboundedReceiver<Pending<A>>,
    slots: Arc<Semaphore>,
) {
    let mut tidy = tokio::time::interval(KEEP_IDLE);
    tidy.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            pending = receiver.recv() => match pending {
                Some(p) => p,
                None => return,
            },
            _ = tidy.tick() => {
                appender.release_idle();
                continue;
            }
        };
        // Wait for a free slot; whatever arrives meanwhile joins this append.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_SHARED {
            match receiver.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        metrics::histogram!("lectern_shared_append_streams", "aggregate" => A::TYPE)
            .record(batch.len() as f64);
        let appender = appender.clone();
        tokio::spawn(async move {
            commit(&appender, batch).await;
            drop(slot);
        });
    }
}

async fn commit<A: Aggregate>(appender: &Appender<A>, batch: Vec<Pending<A>>) {
    if batch.len() == 1 {
        return alone(appender, batch).await;
    }
    let result = {
        let streams: Vec<_> = batch
            .iter()
            .map(|p| StreamAppend {
                aggregate_id: &p.aggregate_id,
                expected_version: p.expected_version,
                events: p.new_events(),
            })
            .collect();
        appender.append_streams(&streams).await
    };
    match result {
        Ok(recorded) => {
            for (p, r) in batch.into_iter().zip(recorded) {
                let _ = p.reply.send(Ok(r));
            }
        }
        // The database cannot be reached: so it is for every append, and
        // retrying each alone would only make each caller wait once more
        // per append ahead of it.
        Err(e) if e.is_unavailable() => {
            for p in batch {
                let _ = p.reply.send(Err(e.clone()));
            }
        }
        // Some stream moved on, or one append holds what the database
        // refuses; nothing was written: retry each alone, so only the stale
        // or faulty one fails.
        Err(_) => alone(appender, batch).await,
    }
}

/// Each append in a statement of its own, one after another, inside the
/// slot the failed statement held, so that a conflict never puts more
/// statements in flight than the slots allow.
async fn alone<A: Aggregate>(appender: &Appender<A>, batch: Vec<Pending<A>>) {
    for p in batch {
        let answer = appender
            .append(&p.aggregate_id, p.expected_version, &p.new_events(), None)
            .await;
        let _ = p.reply.send(answer);
    }
}
