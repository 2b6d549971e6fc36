//! The billing service: invoices, and Stripe's deliveries.
//!
//! A verified Stripe delivery is kept twice, in one
//! order that any crash and redelivery converge on: its payload in the
//! `stripe_inbox` (for the worker that applies it), and the fact of its
//! receipt as a `StripeEventReceived` event on its own stream. Both are
//! idempotent per Stripe event id, so Stripe's redeliveries (and the same
//! event sent many times at once) change nothing.

pub mod enrolment;
pub mod inbox;
pub mod reconcile;

use std::sync::Arc;

use lectern_domain::billing::invoice::{Invoice, InvoiceCommand, InvoiceError, InvoiceEvent};
use lectern_domain::billing::webhook::{Delivery, Receive, StripeEvent, StripeEventError};
use lectern_domain::{EventMetadata, Position};
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::bus::{CommandBus, Committed, DispatchConfig};
use crate::error::{CommandError, StoreError};
use crate::store::PgEventStore;

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
    stripe_events: CommandBus<StripeEvent>,
    invoices: CommandBus<Invoice>,
    /// Wakes this process's inbox worker when a delivery is kept.
    pub inbox_ready: Arc<Notify>,
}

impl BillingService {
    /// The service over `pool`.
    pub fn new(pool: &PgPool) -> Self {
        Self {
            pool: pool.clone(),
            stripe_events: CommandBus::new(
                PgEventStore::new(pool.clone()),
                (),
                DispatchConfig::default(),
            ),
            invoices: CommandBus::new(
                PgEventStore::new(pool.clone()),
                (),
                DispatchConfig::default(),
            ),
            inbox_ready: Arc::new(Notify::new()),
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

    /// Keep a verified delivery: its `payload` in the inbox, then its
    /// receipt in the log. A crash between the two is mended by Stripe's
    /// redelivery, which finds the inbox row and writes the missing event.
    pub async fn receive(
        &self,
        delivery: Delivery,
        payload: &serde_json::Value,
        meta: &EventMetadata,
    ) -> Result<Receipt, BillingError> {
        let created = chrono::DateTime::from_timestamp(delivery.created, 0);
        sqlx::query(
            "INSERT INTO stripe_inbox (event_id, event_type, api_version, object_id, created, livemode, payload, source)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&delivery.id)
        .bind(&delivery.event_type)
        .bind(&delivery.api_version)
        .bind(&delivery.object_id)
        .bind(created)
        .bind(delivery.livemode)
        .bind(payload)
        .bind(if delivery.reconciled {
            "reconciliation"
        } else {
            "webhook"
        })
        .execute(&self.pool)
        .await?;
        let id = delivery.id.clone();
        let receipt = match self
            .stripe_events
            .execute(&id, Receive(delivery), meta.clone())
            .await
        {
            Ok(committed) => Ok(Receipt {
                duplicate: committed.events.is_empty(),
                position: committed.position,
            }),
            // The only event this stream can hold is the receipt: a writer
            // that won the race wrote it.
            Err(CommandError::Conflict) => Ok(Receipt {
                duplicate: true,
                position: None,
            }),
            Err(CommandError::Store(e)) => Err(BillingError::Store(e)),
            Err(CommandError::Rejected(never)) => match never {},
        }?;
        // The receipt is in the log before anything is applied.
        self.inbox_ready.notify_one();
        Ok(receipt)
    }
}

impl From<StripeEventError> for BillingError {
    fn from(never: StripeEventError) -> Self {
        match never {}
    }
}
