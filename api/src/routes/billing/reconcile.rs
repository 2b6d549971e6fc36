//! The reconciliation job: it asks the Stripe API (at
//! `LECTERN_STRIPE_API_BASE`, like every Stripe call) what became of the
//! payments Lectern is waiting for, and records what it finds.
//!
//! 1. **Events whose delivery failed.** `GET /v1/events?delivery_success=false`
//!    over the last three days (as long as Stripe retries a delivery): each
//!    is kept in the inbox as a delivery would be (once per Stripe event id,
//!    marked `reconciliation`), and the inbox worker applies it; a payment
//!    found this way is recorded as `PaymentReconciled`.
//! 2. **Every open invoice with a payment in flight.** `GET
//!    /v1/payment_intents/{id}` for each PaymentIntent started for an open
//!    invoice: more received than any webhook said is `PaymentReconciled`;
//!    less, another currency, or metadata naming another invoice is
//!    `ReconciliationDiscrepancyFound` (once per disagreement).
//!
//! One process runs each run (`billing_jobs`), every
//! `LECTERN_STRIPE_RECONCILE_SECS`.

use std::time::Duration;

use lectern_commands::billing::reconcile::{Finding, InFlight, Observed};
use lectern_domain::EventMetadata;
use tokio_util::sync::CancellationToken;

use super::stripe::{StripeClient, StripeError};
use super::webhooks::{delivery, storable};
use crate::app::AppState;

/// How far back failed deliveries are looked for: Stripe retries a
/// delivery for up to three days.
pub const LOOKBACK_SECS: i64 = 3 * 24 * 3600;
/// Pages of 100 events read at most per run.
const MAX_PAGES: usize = 10;
/// Payments in flight asked about at most per run.
const MAX_IN_FLIGHT: i64 = 1000;

/// What one run found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Events whose delivery failed, as Stripe listed them.
    pub undelivered: usize,
    /// Of those, the ones Lectern had not received (now in the inbox).
    pub kept: usize,
    /// PaymentIntents asked about.
    pub asked: usize,
    /// Payments whose webhook never came.
    pub reconciled: usize,
    /// Disagreements recorded.
    pub discrepancies: usize,
    /// PaymentIntents Stripe could not answer for (logged; asked again next run).
    pub unanswered: usize,
}

/// One run, now.
pub async fn run(state: &AppState, stripe: &StripeClient) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let since = chrono::Utc::now().timestamp() - LOOKBACK_SECS;
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = stripe.undelivered_events(since, after.as_deref()).await?;
        for event in &page.data {
            report.undelivered += 1;
            // One that cannot be kept (a NUL character) would fail the run.
            let Some(delivery) = delivery(event, true).filter(|_| storable(event)) else {
                continue;
            };
            let meta = EventMetadata {
                causation_id: "reconciliation".to_owned(),
                ..EventMetadata::system("")
            };
            let receipt = state
                .billing
                .receive(delivery, event.to_string(), &meta)
                .await?;
            report.kept += usize::from(!receipt.duplicate);
        }
        after = page
            .data
            .last()
            .and_then(|e| e["id"].as_str())
            .map(str::to_owned);
        if !page.has_more || after.is_none() {
            break;
        }
    }
    for payment in state.billing.payments_in_flight(MAX_IN_FLIGHT).await? {
        report.asked += 1;
        match ask(state, stripe, &payment).await {
            Ok(Finding::Agrees) => {}
            Ok(Finding::Reconciled) => report.reconciled += 1,
            Ok(Finding::Discrepancy) => report.discrepancies += 1,
            Err(e) => {
                report.unanswered += 1;
                tracing::warn!(payment_intent = %payment.payment_intent_id, error = %e,
                    "reconciliation could not check a payment");
            }
        }
    }
    for (finding, n) in [
        ("kept", report.kept),
        ("reconciled", report.reconciled),
        ("discrepancy", report.discrepancies),
        ("unanswered", report.unanswered),
    ] {
        metrics::counter!("lectern_stripe_reconciliation_total", "finding" => finding)
            .increment(n as u64);
    }
    Ok(report)
}

async fn ask(
    state: &AppState,
    stripe: &StripeClient,
    payment: &InFlight,
) -> anyhow::Result<Finding> {
    let intent = stripe
        .payment_intent(&payment.payment_intent_id)
        .await
        .map_err(|e: StripeError| anyhow::anyhow!(e))?;
    let observed = Observed {
        metadata_invoice_id: intent.metadata.get("invoice_id").cloned(),
        amount_received: intent.amount_received,
        currency: intent.currency,
        observed_at: chrono::Utc::now().timestamp(),
    };
    Ok(state.billing.reconcile(payment, observed).await?)
}

/// The scheduled job: every `LECTERN_STRIPE_RECONCILE_SECS`, in one
/// process. Idle without a Stripe secret key.
pub async fn work(state: AppState, cancel: CancellationToken) {
    let every = state.http.billing.stripe_reconcile_secs;
    let Some(stripe) = state.stripe.clone().filter(|_| every > 0) else {
        return cancel.cancelled().await;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(every.clamp(1, 60)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match state.billing.claim_job("reconcile", every).await {
            Ok(true) => match run(&state, &stripe).await {
                Ok(report) => tracing::info!(?report, "reconciled with Stripe"),
                Err(e) => tracing::warn!(error = %e, "reconciliation with Stripe failed"),
            },
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "the reconciliation run could not be claimed"),
        }
    }
}
