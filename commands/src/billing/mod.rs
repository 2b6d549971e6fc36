//! The billing service: invoices, and Stripe's deliveries.
//!
//! A verified Stripe delivery is kept twice, in one statement: its
//! payload in the `stripe_inbox` (for the worker that applies it), and the
//! fact of its receipt as a `StripeEventReceived` event on its own stream.
//! The inbox row is inserted once per Stripe event id and the event only
//! beside a new row, so Stripe's redeliveries (and the same event sent many
//! times at once) change nothing. Deliveries that arrive together share one
//! transaction (a group commit).

pub mod enrolment;
pub mod inbox;
pub mod reconcile;

use std::sync::Arc;

use lectern_domain::billing::invoice::{Invoice, InvoiceCommand, InvoiceError, InvoiceEvent};
use lectern_domain::billing::webhook::{Delivery, StripeEvent, StripeEventError, StripeEventEvent};
use lectern_domain::{EventMetadata, Position};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::bus::{CommandBus, Committed, DispatchConfig};
use crate::error::{CommandError, StoreError};
use crate::store::{NewEvent, PgEventStore, StreamAppend, StreamColumns};

/// Why a billing command failed.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// The invoice refused the command.
    #[error(transparent)]
    Invoice(InvoiceError),
    /// Conflicting writers won every retry.
    #[error("the invoice was changed concurrently; retry")]
    Conflict,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for BillingError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// What receiving a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// It was received before: nothing changed.
    pub duplicate: bool,
    /// Where its `StripeEventReceived` sits in the log, when this delivery
    /// wrote it.
    pub position: Option<Position>,
}

impl From<CommandError<InvoiceError>> for BillingError {
    fn from(e: CommandError<InvoiceError>) -> Self {
        match e {
            CommandError::Rejected(e) => Self::Invoice(e),
            CommandError::Conflict => Self::Conflict,
            CommandError::Store(e) => Self::Store(e),
        }
    }
}

/// The billing context's commands.
#[derive(Clone)]
pub struct BillingService {
    pool: PgPool,
    /// The receipts' own connections (see [`BillingService::receive`]).
    receipts_pool: PgPool,
    invoices: CommandBus<Invoice>,
    /// Wakes this process's inbox worker when a delivery is kept.
    pub inbox_ready: Arc<Notify>,
    /// The Stripe event ids this process kept that its inbox worker has not
    /// yet looked at (see [`BillingService::process_kept`]).
    kept: Arc<std::sync::Mutex<Vec<String>>>,
    /// Deliveries waiting to be kept (see [`BillingService::receive`]).
    receipts: Arc<std::sync::Mutex<Receipts>>,
}

impl BillingService {
    /// The service over `pool`.
    pub fn new(pool: &PgPool) -> Self {
        // Receipts commit at most [`FLUSHES`] batches at a time, a connection
        // each, and one more stands in while another reconnects. Opened on first use,
        // by the receipts' thread (see [`receipts_thread`]), whose reactor
        // then drives them.
        let receipts_pool = PgPoolOptions::new()
            .max_connections(FLUSHES as u32 + 1)
            .min_connections(0)
            .acquire_timeout(crate::pool::ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_lazy_with((*pool.connect_options()).clone());
        Self {
            pool: pool.clone(),
            receipts_pool,
            invoices: CommandBus::new(
                PgEventStore::new(pool.clone()),
                (),
                DispatchConfig::default(),
            ),
            inbox_ready: Arc::new(Notify::new()),
            kept: Arc::default(),
            receipts: Arc::default(),
        }
    }

    /// The primary database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Run `command` on invoice `id`.
    pub async fn execute(
        &self,
        id: Uuid,
        command: InvoiceCommand,
        meta: &EventMetadata,
    ) -> Result<Committed<InvoiceEvent>, BillingError> {
        Ok(self
            .invoices
            .execute(&id.to_string(), command, meta.clone())
            .await?)
    }

    /// Invoice `id` as its stream holds it now (`Invoice(NotFound)` if it
    /// was never created).
    pub async fn invoice(&self, id: Uuid) -> Result<Invoice, BillingError> {
        let loaded = self.invoices.store().load(&id.to_string()).await?;
        if loaded.aggregate.status.is_none() {
            return Err(BillingError::Invoice(InvoiceError::NotFound));
        }
        Ok(loaded.aggregate)
    }

    /// Keep a verified delivery: its `payload` in the inbox and its receipt
    /// in the log, in one statement. Deliveries that arrive together share
    /// it (a group commit: [`FLUSHES`] statements in flight at most, and
    /// while they commit the next deliveries queue up for the first to
    /// finish), and a delivery that fails fails
    /// alone: its batch is then kept one delivery at a time. They commit on
    /// connections of their own, from a thread of their own, so that an
    /// answer to Stripe never waits behind the pool's or the API runtime's
    /// other work (the inbox worker loading hundreds of invoices at once,
    /// projections' queries, reads).
    /// `payload` is the event's JSON text, as Stripe sent it.
    pub async fn receive(
        &self,
        delivery: Delivery,
        payload: String,
        meta: &EventMetadata,
    ) -> Result<Receipt, BillingError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let lead = {
            let mut queue = self
                .receipts
                .lock()
                .map_err(|_| BillingError::Store(StoreError::WorkerGone))?;
            queue.waiting.push(Waiting {
                delivery,
                payload,
                meta: meta.clone().for_command("ReceiveStripeEvent"),
                reply,
            });
            let lead = queue.flushing < FLUSHES;
            queue.flushing += usize::from(lead);
            lead
        };
        if lead {
            // A task of its own, so that a client that goes away does not
            // take the others' answers with it; on the receipts' thread, so
            // that it never waits for a busy API worker thread between its
            // statements.
            let this = self.clone();
            receipts_thread().spawn(async move { this.flush_receipts().await });
        }
        answer
            .await
            .map_err(|_| BillingError::Store(StoreError::WorkerGone))?
    }

    /// Keep queued deliveries, a batch at a time, until none is left.
    async fn flush_receipts(&self) {
        let _unwinding = Unwinding(&self.receipts);
        loop {
            let batch: Vec<Waiting> = {
                let Ok(mut queue) = self.receipts.lock() else {
                    return;
                };
                if queue.waiting.is_empty() {
                    queue.flushing -= 1;
                    return;
                }
                let n = queue.waiting.len().min(MAX_RECEIPTS);
                queue.waiting.drain(..n).collect()
            };
            let items: Vec<(&Delivery, &str, &EventMetadata)> = batch
                .iter()
                .map(|w| (&w.delivery, w.payload.as_str(), &w.meta))
                .collect();
            let answers = match self.keep(&items).await {
                Ok(answers) => answers,
                // One bad delivery must not fail its neighbours: each alone.
                Err(_) => {
                    let mut answers = Vec::with_capacity(items.len());
                    for item in &items {
                        answers.push(self.keep(&[*item]).await.and_then(|mut a| a.remove(0)));
                    }
                    answers
                }
            };
            drop(items);
            let fresh = answers
                .iter()
                .zip(&batch)
                .filter(|(a, _)| matches!(a, Ok(r) if !r.duplicate))
                .map(|(_, w)| w.delivery.id.clone());
            if let Ok(mut kept) = self.kept.lock() {
                // A hint, not a queue: beyond this the sweep finds them.
                let room = MAX_KEPT.saturating_sub(kept.len());
                kept.extend(fresh.take(room));
            }
            for (w, answer) in batch.into_iter().zip(answers) {
                let _ = w.reply.send(answer);
            }
            // The receipts are in the log before anything is applied.
            self.inbox_ready.notify_one();
        }
    }

    /// Keep `items` in one statement, so in one round trip and one
    /// transaction: the inbox rows (once per Stripe event id, the first in
    /// the batch winning), and a `StripeEventReceived` on the stream of each
    /// one the inbox did not have.
    async fn keep(
        &self,
        items: &[(&Delivery, &str, &EventMetadata)],
    ) -> Result<Vec<Result<Receipt, BillingError>>, BillingError> {
        /// The inbox rows, then the events of the rows inserted (`kept`).
        static KEEP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            crate::store::append_streams_sql(
                "WITH kept AS (
   INSERT INTO stripe_inbox (event_id, event_type, api_version, object_id, created, livemode, payload, source)
   SELECT id, et, av, oid, cr, lm, p::jsonb, src
     FROM unnest($8::text[], $9::text[], $10::text[], $11::text[], $12::timestamptz[],
                 $13::boolean[], $14::text[], $15::text[]) AS u(id, et, av, oid, cr, lm, p, src)
   ON CONFLICT (event_id) DO NOTHING
   RETURNING event_id)",
                "u.id IN (SELECT event_id FROM kept)",
            )
        });
        let mut seen = std::collections::HashSet::new();
        let first: Vec<bool> = items
            .iter()
            .map(|(d, _, _)| seen.insert(d.id.as_str()))
            .collect();
        // In event id order: two batches in flight that share ids (in two
        // processes, as Stripe redelivers while the first delivery commits)
        // then wait for each other's rows in the same order, never in a
        // deadlock. The events go in the same order (the store sorts them).
        let mut rows: Vec<_> = items
            .iter()
            .zip(&first)
            .filter(|(_, f)| **f)
            .map(|(i, _)| *i)
            .collect();
        rows.sort_unstable_by_key(|(d, _, _)| d.id.as_str());
        let received: Vec<StripeEventEvent> = rows
            .iter()
            .map(|(d, _, _)| StripeEventEvent::StripeEventReceived((*d).clone()))
            .collect();
        let streams: Vec<StreamAppend<'_, StripeEventEvent>> = rows
            .iter()
            .zip(&received)
            .map(|((d, _, meta), event)| StreamAppend {
                aggregate_id: d.id.as_str(),
                expected_version: 0,
                events: vec![NewEvent {
                    payload: event,
                    metadata: meta,
                }],
            })
            .collect();
        let stored = StreamColumns::new(<StripeEvent as cqrs_es::Aggregate>::TYPE, &streams)
            .bind(sqlx::query(&KEEP))
            .bind(
                rows.iter()
                    .map(|(d, _, _)| d.id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|(d, _, _)| d.event_type.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|(d, _, _)| d.api_version.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|(d, _, _)| d.object_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|(d, _, _)| chrono::DateTime::from_timestamp(d.created, 0))
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|(d, _, _)| d.livemode).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, p, _)| *p).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|(d, _, _)| {
                        if d.reconciled {
                            "reconciliation"
                        } else {
                            "webhook"
                        }
                    })
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&self.receipts_pool)
            .await?;
        let recorded = PgEventStore::<StripeEvent>::recorded_streams(&streams, stored, false)?;
        // Where each new event id's receipt sits, for the first delivery of
        // that id in the batch; the others, and those whose id the inbox
        // had, have none (duplicates).
        let mut positions: std::collections::HashMap<&str, Position> = streams
            .iter()
            .zip(recorded)
            .filter_map(|(s, events)| Some((s.aggregate_id, events.last()?.position)))
            .collect();
        Ok(items
            .iter()
            .map(|(d, _, _)| {
                let position = positions.remove(d.id.as_str());
                Ok(Receipt {
                    duplicate: position.is_none(),
                    position,
                })
            })
            .collect())
    }
}

/// Batches of receipts in flight at once: a delivery that arrives while one
/// batch commits goes at once in the other, instead of waiting for the
/// first to finish; more would only share the same WAL flushes.
const FLUSHES: usize = 2;

/// Deliveries kept in one transaction at most.
const MAX_RECEIPTS: usize = 256;

/// Kept event ids remembered for the inbox worker at most (about 40 bytes
/// each); should the worker fall this far behind, or not run in this
/// process, its sweep finds the rest.
const MAX_KEPT: usize = 100_000;

/// A delivery waiting for its transaction.
struct Waiting {
    delivery: Delivery,
    payload: String,
    meta: EventMetadata,
    reply: tokio::sync::oneshot::Sender<Result<Receipt, BillingError>>,
}

/// Should a flush panic, the next delivery starts a new one (the panicking
/// batch's deliveries are answered with an error as their replies drop).
struct Unwinding<'a>(&'a std::sync::Mutex<Receipts>);

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(mut queue) = self.0.lock() {
                queue.flushing -= 1;
            }
        }
    }
}

/// The deliveries waiting, and whether a task is keeping them.
#[derive(Default)]
struct Receipts {
    waiting: Vec<Waiting>,
    /// Tasks keeping them, at most [`FLUSHES`].
    flushing: usize,
}

/// The thread that keeps receipts, one per process: a current-thread
/// runtime of its own, started on first use and kept for the process's
/// life. A flush's statement is an await; on the API's runtime its answer
/// would wait its turn behind every request and worker queued on the same
/// worker thread (measured with `lectern-bench webhooks` at 2,200/s, one run
/// each, when a flush was four statements: `BEGIN` alone p50 1.8 ms there,
/// 0.2 ms here), whereas the OS wakes an I/O-bound thread promptly.
fn receipts_thread() -> &'static tokio::runtime::Handle {
    static HANDLE: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| thread_of_its_own("lectern-receipts"))
}

/// The thread the API's inbox worker calls [`BillingService::process_inbox`]
/// from, one per process, started on first use: applying a batch folds and decides up
/// to hundreds of invoices between two awaits, which on the API's runtime
/// holds up the requests queued on the same worker thread (webhooks among
/// them); on a thread of its own the OS shares the cores out fairly instead.
/// The invoices' command queues it starts run there too.
pub fn inbox_thread() -> &'static tokio::runtime::Handle {
    static HANDLE: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| thread_of_its_own("lectern-inbox"))
}

/// A current-thread runtime on a thread named `name`, for the life of the
/// process.
fn thread_of_its_own(name: &str) -> tokio::runtime::Handle {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime starts");
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .expect("a thread starts");
    handle
}

impl From<StripeEventError> for BillingError {
    fn from(never: StripeEventError) -> Self {
        match never {}
    }
}
