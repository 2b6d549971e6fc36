//! Command dispatch: one queue per aggregate, group commit, an in-memory
//! cache, and bounded retries when another process wins a race.
//!
//! Commands to one aggregate never race inside a process: each aggregate id
//! has a worker task that takes every command waiting in its queue, runs them
//! one after the other on the state, and appends all their events in one
//! statement. Across processes the events table's primary key refuses a stale
//! writer; the worker then reloads, re-runs the batch, and after
//! [`DispatchConfig::max_retries`] gives up with [`CommandError::Conflict`].
//! A worker loads its state through the aggregate type's loader
//! (`loader.rs`), so that workers starting at once share a query, and
//! appends through its committer (`committer.rs`), so that they share a
//! statement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use lectern_domain::{CommandName, EventMetadata, Position};
use tokio::sync::{mpsc, oneshot};

use crate::committer::Committer;
use crate::error::{CommandError, StoreError};
use crate::loader::Loader;
use crate::store::{Loaded, NewEvent, PgEventStore, RecordedEvent};

/// Tuning of an [`CommandBus`].
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// The most commands one append may carry.
    pub max_batch: usize,
    /// How often a batch is re-run after losing a race to another process.
    pub max_retries: u32,
    /// How long a worker keeps an idle aggregate in memory.
    pub idle_timeout: Duration,
    /// Keep the aggregate's state in memory between batches. With the cache a
    /// command costs one round trip (the append); a stale cache is caught by
    /// the primary key.
    pub cache: bool,
    /// How many appends of this aggregate type may be in flight at once;
    /// appends to other aggregates that arrive while all are busy share the
    /// next statement (see `committer.rs`).
    pub concurrent_appends: usize,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            max_batch: 256,
            max_retries: 8,
            idle_timeout: Duration::from_secs(30),
            cache: true,
            concurrent_appends: 2,
        }
    }
}

/// What a committed command produced.
#[derive(Debug, Clone)]
pub struct Committed<E> {
    /// The aggregate instance.
    pub aggregate_id: String,
    /// The aggregate's version (last sequence number) after this command.
    pub version: u64,
    /// Where the command's last event sits in the log; `None` when the command
    /// produced no event.
    pub position: Option<Position>,
    /// The events it recorded, with their positions.
    pub events: Vec<RecordedEvent<E>>,
}

type Reply<A> = oneshot::Sender<
    Result<Committed<<A as Aggregate>::Event>, CommandError<<A as Aggregate>::Error>>,
>;

/// What a queue carries: a boxed [`Job`]. A queue allocates room for 32
/// items at a time, and an aggregate held in memory keeps its queue until it
/// has been idle for [`DispatchConfig::idle_timeout`]: boxed, that room is
/// 32 pointers (256 bytes) rather than 32 jobs (11 KB for an invoice's), on
/// each of the thousands of aggregates a busy process holds.
type Queued<A> = Box<Job<A>>;

struct Job<A: Aggregate> {
    command: A::Command,
    metadata: EventMetadata,
    reply: Reply<A>,
}

struct Inner<A: Aggregate> {
    store: PgEventStore<A>,
    services: A::Services,
    config: DispatchConfig,
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<Queued<A>>>>,
    /// Started on first use, inside the runtime.
    committer: OnceLock<Committer<A>>,
    loader: Arc<Loader<A>>,
}

/// Runs commands against aggregates of type `A`.
pub struct CommandBus<A: Aggregate> {
    inner: Arc<Inner<A>>,
}

impl<A: Aggregate> Clone for CommandBus<A> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<A> CommandBus<A>
where
    A: Aggregate + Clone + 'static,
    A::Command: CommandName + Clone + Send + Sync + 'static,
    A::Error: Send + 'static,
    A::Services: 'static,
{
    /// A dispatcher over `store`, handing `services` to every command.
    pub fn new(store: PgEventStore<A>, services: A::Services, config: DispatchConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                loader: Loader::new(store.clone()),
                store,
                services,
                config,
                queues: Mutex::new(HashMap::new()),
                committer: OnceLock::new(),
            }),
        }
    }

    /// The underlying event store.
    pub fn store(&self) -> &PgEventStore<A> {
        &self.inner.store
    }

    /// Run `command` on aggregate `aggregate_id`; every event it produces
    /// carries `metadata`, with the command's name.
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: EventMetadata,
    ) -> Result<Committed<A::Event>, CommandError<A::Error>> {
        let started = Instant::now();
        let (reply, answer) = oneshot::channel();
        let mut job = Box::new(Job {
            metadata: metadata.for_command(command.name()),
            command,
            reply,
        });
        loop {
            let sender = self.sender_for(aggregate_id);
            match sender.send(job) {
                Ok(()) => break,
                // The worker retired between our lookup and our send.
                Err(mpsc::error::SendError(returned)) => {
                    job = returned;
                    self.retire_queue(aggregate_id, &sender);
                }
            }
        }
        let result = answer
            .await
            .unwrap_or(Err(CommandError::Store(StoreError::WorkerGone)));
        let outcome = match &result {
            Ok(_) => "committed",
            Err(CommandError::Rejected(_)) => "rejected",
            Err(CommandError::Conflict) => "conflict",
            Err(CommandError::Store(_)) => "error",
        };
        metrics::counter!("lectern_commands_total", "aggregate" => A::TYPE, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("lectern_command_duration_seconds", "aggregate" => A::TYPE)
            .record(started.elapsed().as_secs_f64());
        result
    }

    fn sender_for(&self, aggregate_id: &str) -> mpsc::UnboundedSender<Queued<A>> {
        let mut queues = self
            .inner
            .queues
            .lock()
            .expect("queue map lock is never poisoned");
        if let Some(sender) = queues.get(aggregate_id) {
            if !sender.is_closed() {
                return sender.clone();
            }
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        queues.insert(aggregate_id.to_owned(), sender.clone());
        let worker = Worker {
            inner: Arc::clone(&self.inner),
            aggregate_id: aggregate_id.to_owned(),
            state: None,
            snapshot_write: None,
            unreachable: None,
        };
        tokio::spawn(worker.run(receiver));
        sender
    }

    fn retire_queue(&self, aggregate_id: &str, dead: &mpsc::UnboundedSender<Queued<A>>) {
        let mut queues = self
            .inner
            .queues
            .lock()
            .expect("queue map lock is never poisoned");
        if queues
            .get(aggregate_id)
            .is_some_and(|s| s.same_channel(dead))
        {
            queues.remove(aggregate_id);
        }
    }
}

struct Worker<A: Aggregate> {
    inner: Arc<Inner<A>>,
    aggregate_id: String,
    /// The cached state, and whether it was loaded for the current attempt.
    state: Option<Loaded<A>>,
    /// The snapshot being written, if any.
    snapshot_write: Option<tokio::task::JoinHandle<()>>,
    /// The last batch failed because the database could not be reached.
    unreachable: Option<StoreError>,
}

/// One command's result inside a batch, before the append decides its fate.
enum Outcome<E> {
    /// Its events are `events[range]` of the batch.
    Accepted(std::ops::Range<usize>),
    Rejected(E),
}

impl<A> Worker<A>
where
    A: Aggregate + Clone + 'static,
    A::Command: Clone + Send + Sync + 'static,
    A::Error: Send + 'static,
{
    async fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Queued<A>>) {
        loop {
            let first =
                match tokio::time::timeout(self.inner.config.idle_timeout, receiver.recv()).await {
                    Ok(Some(job)) => *job,
                    Ok(None) => return,
                    Err(_idle) => {
                        if self.retire(&mut receiver) {
                            // A command that slipped in before the close is
                            // still ours to run.
                            let mut leftovers = Vec::new();
                            while let Ok(job) = receiver.try_recv() {
                                leftovers.push(*job);
                            }
                            if !leftovers.is_empty() {
                                self.process(leftovers).await;
                            }
                            return;
                        }
                        continue;
                    }
                };
            let mut batch = vec![first];
            while batch.len() < self.inner.config.max_batch {
                match receiver.try_recv() {
                    Ok(job) => batch.push(*job),
                    Err(_) => break,
                }
            }
            metrics::histogram!("lectern_group_commit_commands", "aggregate" => A::TYPE)
                .record(batch.len() as f64);
            self.process(batch).await;
            if let Some(e) = self.unreachable.take() {
                // The commands that queued while that batch waited for the
                // database would each wait as long again, one batch after
                // another: answer them now. The next command tries again.
                let mut queued = Vec::new();
                while let Ok(job) = receiver.try_recv() {
                    queued.push(*job);
                }
                if !queued.is_empty() {
                    fail_all(queued, &e);
                }
            }
            if !self.inner.config.cache {
                self.state = None;
            }
        }
    }

    /// Leave the queue map if nothing is waiting. Senders that cloned the
    /// channel before this see a send error and start a new worker.
    fn retire(&self, receiver: &mut mpsc::UnboundedReceiver<Queued<A>>) -> bool {
        let mut queues = self
            .inner
            .queues
            .lock()
            .expect("queue map lock is never poisoned");
        if !receiver.is_empty() {
            return false;
        }
        queues.remove(&self.aggregate_id);
        receiver.close();
        true
    }

    async fn process(&mut self, batch: Vec<Job<A>>) {
        let batch = self.answer_redelivered(batch).await;
        if batch.is_empty() {
            return;
        }
        let mut attempts = 0;
        let mut careful = false;
        let background = self.inner.store.background_snapshots();
        loop {
            let fresh = self.state.is_none();
            let base = match self.state.take() {
                Some(state) => state,
                None => match self.inner.loader.load(&self.aggregate_id).await {
                    Ok(state) => state,
                    Err(e) => return self.fail(batch, e),
                },
            };
            let (version, snapshot_version) = (base.version, base.snapshot_version);
            let Some((state_after, events, outcomes)) =
                self.run_batch(base.aggregate, &batch, careful).await
            else {
                // A handler emitted events and then failed, so the state it
                // left is half-changed: reload, and run the batch again with a
                // copy taken before each command.
                careful = true;
                continue;
            };

            // A rejection decided on cached state may be stale (another process
            // may have moved the aggregate on): confirm it on fresh state.
            let any_rejected = outcomes.iter().any(|o| matches!(o, Outcome::Rejected(_)));
            if any_rejected && !fresh {
                continue;
            }

            let inline_snapshot = !background
                && self
                    .inner
                    .store
                    .snapshot_due(version, version + events.len() as u64);
            let inner = &self.inner;
            let committer = inner.committer.get_or_init(|| {
                Committer::start(inner.store.clone(), inner.config.concurrent_appends)
            });
            let appended = if events.is_empty() {
                Ok(Vec::new())
            } else if inline_snapshot {
                let new_events: Vec<_> = events
                    .iter()
                    .map(|(payload, job)| NewEvent {
                        payload,
                        metadata: &batch[*job].metadata,
                    })
                    .collect();
                committer
                    .append_with_snapshot(&self.aggregate_id, version, &new_events, &state_after)
                    .await
            } else {
                let owned = events
                    .into_iter()
                    .map(|(payload, job)| (payload, batch[job].metadata.clone()))
                    .collect();
                committer.append(&self.aggregate_id, version, owned).await
            };
            match appended {
                Ok(recorded) => {
                    let new_version = version + recorded.len() as u64;
                    let snapshot_version = if self.inner.store.snapshot_due(version, new_version) {
                        if background {
                            self.snapshot(&state_after, new_version).await;
                        }
                        new_version
                    } else {
                        snapshot_version
                    };
                    self.state = Some(Loaded {
                        aggregate: state_after,
                        version: new_version,
                        snapshot_version,
                    });
                    return answer_all(batch, outcomes, recorded, &self.aggregate_id, version);
                }
                Err(StoreError::Conflict) if attempts < self.inner.config.max_retries => {
                    attempts += 1;
                    metrics::counter!("lectern_store_conflicts_total", "aggregate" => A::TYPE)
                        .increment(1);
                    tracing::debug!(aggregate_type = A::TYPE, aggregate_id = %self.aggregate_id, attempts,
                        "lost an append race; reloading");
                    // Back off a little, with jitter, so two processes hammering
                    // one aggregate stop colliding in lock step.
                    let jitter = u64::from(std::process::id() % 7) + u64::from(attempts) * 3;
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                // The statement failed for another reason than the database
                // being unreachable (a value it refuses, say). Nothing was
                // written: run each command on its own, so that only the one
                // at fault fails. (Unreachable, each would only fail again,
                // one acquire timeout after another.)
                Err(e) if batch.len() > 1 && !e.is_unavailable() => {
                    tracing::warn!(aggregate_type = A::TYPE, aggregate_id = %self.aggregate_id,
                        commands = batch.len(), "a shared append failed; running its commands one by one");
                    for job in batch {
                        Box::pin(self.process(vec![job])).await;
                    }
                    return;
                }
                Err(e) => return self.fail(batch, e),
            }
        }
    }

    /// Store a snapshot of `state` at `version` off the command path: the
    /// commands of this batch are answered without waiting for it (a large
    /// aggregate's snapshot costs more than its append). One write per
    /// aggregate is in flight at a time; a failed one only costs a longer
    /// replay at the next load.
    async fn snapshot(&mut self, state: &A, version: u64) {
        let json = match serde_json::to_string(state) {
            Ok(json) => json,
            Err(e) => {
                tracing::warn!(aggregate_type = A::TYPE, error = %e, "snapshot not serialisable");
                return;
            }
        };
        if let Some(previous) = self.snapshot_write.take() {
            let _ = previous.await;
        }
        let store = self.inner.store.clone();
        let id = self.aggregate_id.clone();
        self.snapshot_write = Some(tokio::spawn(async move {
            if let Err(e) = store.save_snapshot(&id, version, json).await {
                tracing::warn!(aggregate_type = A::TYPE, aggregate_id = %id, error = %e,
                    "snapshot not stored; loads replay from the previous one");
            }
        }));
    }

    /// Run every command of the batch in order on `state`.
    ///
    /// cqrs-es applies events as a handler emits them, so a handler that
    /// fails after emitting leaves a half-changed state. A handler that fails
    /// before emitting anything leaves the state as it was (handlers change
    /// the state only through the sink), so no copy is needed on the common
    /// path. `None` means a handler failed after emitting while `careful` was
    /// off; with `careful` on, a copy taken before each command is restored.
    async fn run_batch(
        &self,
        mut state: A,
        batch: &[Job<A>],
        careful: bool,
    ) -> Option<(A, Vec<(A::Event, usize)>, Vec<Outcome<A::Error>>)> {
        let mut events = Vec::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        for (index, job) in batch.iter().enumerate() {
            let before = careful.then(|| state.clone());
            let sink = EventSink::default();
            let result = state
                .handle(job.command.clone(), &self.inner.services, &sink)
                .await;
            let emitted = sink.collect().await;
            match result {
                Ok(()) => {
                    let start = events.len();
                    events.extend(emitted.into_iter().map(|e| (e, index)));
                    outcomes.push(Outcome::Accepted(start..events.len()));
                }
                Err(e) => {
                    if !emitted.is_empty() {
                        state = before?;
                    }
                    outcomes.push(Outcome::Rejected(e));
                }
            }
        }
        Some((state, events, outcomes))
    }
}

fn answer_all<A: Aggregate>(
    batch: Vec<Job<A>>,
    outcomes: Vec<Outcome<A::Error>>,
    recorded: Vec<RecordedEvent<A::Event>>,
    aggregate_id: &str,
    base_version: u64,
) {
    let mut version = base_version;
    for (job, outcome) in batch.into_iter().zip(outcomes) {
        let result = match outcome {
            Outcome::Rejected(e) => Err(CommandError::Rejected(e)),
            Outcome::Accepted(range) => {
                let events = recorded[range].to_vec();
                version += events.len() as u64;
                Ok(Committed {
                    aggregate_id: aggregate_id.to_owned(),
                    version,
                    position: events.last().map(|e| e.position),
                    events,
                })
            }
        };
        // The caller may have gone away; its command is committed regardless.
        let _ = job.reply.send(result);
    }
}

impl<A: Aggregate> Worker<A> {
    /// Answer each job that retries a request of unknown outcome
    /// ([`EventMetadata::redelivered`]) with the events its first attempt's
    /// command recorded here, if there are any, instead of running it again;
    /// the rest of the batch runs as usual. Jobs run in order, so a first
    /// attempt still queued here has committed by now.
    async fn answer_redelivered(&mut self, batch: Vec<Job<A>>) -> Vec<Job<A>> {
        if !batch.iter().any(|j| j.metadata.redelivered) {
            return batch;
        }
        let mut rest = Vec::with_capacity(batch.len());
        for job in batch {
            if !job.metadata.redelivered || job.metadata.idempotency_key.is_empty() {
                rest.push(job);
                continue;
            }
            let earlier = self
                .inner
                .store
                .load_events_of_attempt(
                    &self.aggregate_id,
                    &job.metadata.idempotency_key,
                    &job.metadata.command,
                )
                .await;
            match earlier {
                Ok(events) if events.is_empty() => rest.push(job),
                Ok(events) => {
                    let last = events.last().map(|e| (e.sequence, e.position));
                    let _ = job.reply.send(Ok(Committed {
                        aggregate_id: self.aggregate_id.clone(),
                        version: last.map_or(0, |(v, _)| v),
                        position: last.map(|(_, p)| p),
                        events,
                    }));
                }
                Err(e) => self.fail(vec![job], e),
            }
        }
        rest
    }

    /// Fail `batch` with `error`, noting whether the database was
    /// unreachable.
    fn fail(&mut self, batch: Vec<Job<A>>, error: StoreError) {
        fail_all(batch, &error);
        if error.is_unavailable() {
            self.unreachable = Some(error);
        }
    }
}

fn fail_all<A: Aggregate>(batch: Vec<Job<A>>, error: &StoreError) {
    tracing::error!(aggregate_type = A::TYPE, error = %error, "command batch failed");
    for job in batch {
        let _ = job.reply.send(Err(CommandError::from(error.clone())));
    }
}
