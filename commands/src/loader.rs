//! Loads shared across aggregates.
//!
//! An aggregate's worker loads its state from the store when it starts (and
//! after a conflict); from then on it keeps it. When many aggregates of one
//! type start at once (the billing inbox applying a batch of webhooks to
//! invoices that no worker holds, a process that has just started), each load
//! would be a query of its own, and PostgreSQL pays per statement (a round
//! trip, a plan, a snapshot) as much as per row. So loads go through one
//! loader per aggregate type, the way appends go through the committer: at
//! most [`SLOTS`] queries are in flight; a load that finds a free slot goes
//! out at once, alone, and the loads that arrive while every slot is busy go
//! together in the next query ([`PgEventStore::load_many`]). So under light
//! load nothing waits, and under heavy load one query loads many aggregates.
//!
//! A shared query that fails answers each of its loads alone, as the bus does
//! with a shared append, unless the database could not be reached: then every
//! load of it answers that error at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use cqrs_es::Aggregate;
use tokio::sync::oneshot;

use crate::error::StoreError;
use crate::store::{Loaded, PgEventStore};

/// Queries in flight at once.
const SLOTS: usize = 2;

/// The most aggregates one shared query loads.
const MAX_SHARED: usize = 128;

type Reply<A> = oneshot::Sender<Result<Loaded<A>, StoreError>>;

/// The loader of one aggregate type: see the module documentation.
pub(crate) struct Loader<A: Aggregate> {
    store: PgEventStore<A>,
    queue: Mutex<Queue<A>>,
}

struct Queue<A: Aggregate> {
    waiting: Vec<(String, Reply<A>)>,
    /// Tasks running queries, at most [`SLOTS`].
    running: usize,
}

impl<A> Loader<A>
where
    A: Aggregate + 'static,
{
    pub(crate) fn new(store: PgEventStore<A>) -> Arc<Self> {
        Arc::new(Self {
            store,
            queue: Mutex::new(Queue {
                waiting: Vec::new(),
                running: 0,
            }),
        })
    }

    /// The current state of `aggregate_id`, possibly loaded in one query with
    /// other aggregates'.
    pub(crate) async fn load(
        self: &Arc<Self>,
        aggregate_id: &str,
    ) -> Result<Loaded<A>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let lead = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.waiting.push((aggregate_id.to_owned(), reply));
            let free = queue.running < SLOTS;
            if free {
                queue.running += 1;
            }
            free
        };
        if lead {
            // A task of its own, so that a worker that goes away does not take
            // the others' loads with it.
            let this = Arc::clone(self);
            tokio::spawn(async move { this.drain().await });
        }
        answer.await.unwrap_or(Err(StoreError::WorkerGone))
    }

    /// Run queries until no load is waiting, then give the slot back.
    async fn drain(&self) {
        let mut slot = Slot(Some(&self.queue));
        loop {
            let batch: Vec<(String, Reply<A>)> = {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if queue.waiting.is_empty() {
                    // Under the lock that a new load takes to see the slot.
                    queue.running -= 1;
                    slot.0 = None;
                    return;
                }
                let n = queue.waiting.len().min(MAX_SHARED);
                queue.waiting.drain(..n).collect()
            };
            self.answer(batch).await;
        }
    }

    async fn answer(&self, batch: Vec<(String, Reply<A>)>) {
        // One entry per aggregate, with every load waiting for it.
        let mut replies: HashMap<String, Vec<Reply<A>>> = HashMap::new();
        let mut ids: Vec<String> = Vec::new();
        for (id, reply) in batch {
            let waiting = replies.entry(id.clone()).or_default();
            if waiting.is_empty() {
                ids.push(id);
            }
            waiting.push(reply);
        }
        let result = match ids.as_slice() {
            [id] => self.store.load(id).await.map(|state| vec![state]),
            _ => {
                let keys: Vec<&str> = ids.iter().map(String::as_str).collect();
                self.store.load_many(&keys).await
            }
        };
        match result {
            Ok(states) => {
                for (id, state) in ids.iter().zip(states) {
                    let mut state = Some(state);
                    for reply in replies.remove(id).unwrap_or_default() {
                        // A second load of the same aggregate (never two
                        // workers' at once in one bus) loads again.
                        let answer = match state.take() {
                            Some(state) => Ok(state),
                            None => self.store.load(id).await,
                        };
                        let _ = reply.send(answer);
                    }
                }
            }
            Err(e) if e.is_unavailable() || ids.len() == 1 => {
                for reply in replies.into_values().flatten() {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            Err(_) => {
                for id in &ids {
                    for reply in replies.remove(id).unwrap_or_default() {
                        let _ = reply.send(self.store.load(id).await);
                    }
                }
            }
        }
    }
}

/// Gives the slot back if the draining task panics. Were it the last, the
/// loads still waiting are answered (as [`StoreError::WorkerGone`]) rather
/// than left for a task that no longer runs.
struct Slot<'a, A: Aggregate>(Option<&'a Mutex<Queue<A>>>);

impl<A: Aggregate> Drop for Slot<'_, A> {
    fn drop(&mut self) {
        if let Some(queue) = self.0 {
            let mut queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.running -= 1;
            if queue.running == 0 {
                queue.waiting.clear();
            }
        }
    }
}
