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
//! process appended to it). Each append of it is then retried alone, so only
//! the stale one answers [`StoreError::Conflict`] to its worker, which reloads
//! and retries as usual.

use std::sync::Arc;

use cqrs_es::Aggregate;
use lectern_domain::EventMetadata;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::StoreError;
use crate::store::{NewEvent, PgEventStore, RecordedEvent, StreamAppend};

/// The most appends one shared statement carries.
const MAX_SHARED: usize = 64;

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
    store: PgEventStore<A>,
    /// One permit per statement in flight, shared by direct and shared appends.
    slots: Arc<Semaphore>,
}

impl<A> Committer<A>
where
    A: Aggregate + 'static,
{
    /// Start the committer's task on the current runtime.
    pub(crate) fn start(store: PgEventStore<A>, concurrent: usize) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let slots = Arc::new(Semaphore::new(concurrent.max(1)));
        tokio::spawn(run(store.clone(), receiver, Arc::clone(&slots)));
        Self {
            queue,
            store,
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
                .store
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

async fn run<A: Aggregate + 'static>(
    store: PgEventStore<A>,
    mut receiver: mpsc::UnboundedReceiver<Pending<A>>,
    slots: Arc<Semaphore>,
) {
    while let Some(first) = receiver.recv().await {
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
        let store = store.clone();
        tokio::spawn(async move {
            commit(&store, batch).await;
            drop(slot);
        });
    }
}

async fn commit<A: Aggregate>(store: &PgEventStore<A>, batch: Vec<Pending<A>>) {
    if batch.len() == 1 {
        return alone(store, batch).await;
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
        store.append_streams(&streams).await
    };
    match result {
        Ok(recorded) => {
            for (p, r) in batch.into_iter().zip(recorded) {
                let _ = p.reply.send(Ok(r));
            }
        }
        // Some stream moved on, and nothing was written: find out which.
        Err(StoreError::Conflict) => alone(store, batch).await,
        Err(e) => {
            for p in batch {
                let _ = p.reply.send(Err(e.clone()));
            }
        }
    }
}

/// Each append in a statement of its own, all at once.
async fn alone<A: Aggregate>(store: &PgEventStore<A>, batch: Vec<Pending<A>>) {
    futures::future::join_all(batch.into_iter().map(|p| async move {
        let answer = store
            .append(&p.aggregate_id, p.expected_version, &p.new_events(), None)
            .await;
        let _ = p.reply.send(answer);
    }))
    .await;
}
