//! Reconciliation against the Stripe API: what to ask about, and recording
//! the answers. The job itself (which calls Stripe) is the API's
//! (`api/src/routes/billing/reconcile.rs`); the invoice decides what an
//! answer means (`InvoiceCommand::Reconcile`).

use lectern_domain::billing::invoice::InvoiceCommand;
use lectern_domain::EventMetadata;
use uuid::Uuid;

use super::{BillingError, BillingService};

/// A PaymentIntent started for an open invoice: a payment in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// The invoice.
    pub invoice_id: Uuid,
    /// The PaymentIntent.
    pub payment_intent_id: String,
}

/// What Stripe says of one PaymentIntent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The `invoice_id` its metadata names.
    pub metadata_invoice_id: Option<String>,
    /// Received so far, in minor units.
    pub amount_received: i64,
    /// Lowercase ISO 4217.
    pub currency: String,
    /// When it was asked (Unix seconds).
    pub observed_at: i64,
}

/// What recording one answer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    /// Stripe agrees.
    Agrees,
    /// A payment whose webhook never came (`PaymentReconciled`).
    Reconciled,
    /// A disagreement (`ReconciliationDiscrepancyFound`, once each).
    Discrepancy,
}

impl BillingService {
    /// Claim the run of job `name` due every `every_secs`: true for the one
    /// process whose claim moved it on.
    pub async fn claim_job(&self, name: &str, every_secs: u64) -> Result<bool, BillingError> {
        let claimed = sqlx::query(
            "UPDATE billing_jobs SET last_run_at = now()
              WHERE name = $1 AND last_run_at <= now() - make_interval(secs => $2)",
        )
        .bind(name)
        .bind(every_secs as f64)
        .execute(&self.pool)
        .await?;
        Ok(claimed.rows_affected() == 1)
    }

    /// Every PaymentIntent started for an invoice that is still open (from
    /// the read model, oldest first).
    pub async fn payments_in_flight(&self, limit: i64) -> Result<Vec<InFlight>, BillingError> {
        let rows: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT p.invoice_id, p.reference FROM payments p
               JOIN invoices i ON i.id = p.invoice_id
              WHERE p.kind = 'started' AND i.status = 'open'
              ORDER BY p.recorded_at LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(invoice_id, payment_intent_id)| InFlight {
                invoice_id,
                payment_intent_id,
            })
            .collect())
    }

    /// Record what Stripe says of a payment in flight.
    pub async fn reconcile(
        &self,
        payment: &InFlight,
        observed: Observed,
    ) -> Result<Finding, BillingError> {
        let meta = EventMetadata {
            causation_id: format!("reconciliation:{}", payment.payment_intent_id),
            ..EventMetadata::system("")
        };
        let command = InvoiceCommand::Reconcile {
            invoice_id: payment.invoice_id,
            payment_ref: payment.payment_intent_id.clone(),
            metadata_invoice_id: observed.metadata_invoice_id,
            amount_received: observed.amount_received,
            currency: observed.currency,
            observed_at: observed.observed_at,
        };
        let committed = self.execute(payment.invoice_id, command, &meta).await?;
        Ok(match committed.events.first().map(|e| &e.payload) {
            None => Finding::Agrees,
            Some(lectern_domain::billing::invoice::InvoiceEvent::PaymentReconciled { .. }) => {
                Finding::Reconciled
            }
            Some(_) => Finding::Discrepancy,
        })
    }
}
