//! Billing (`/api/v1/webhooks/stripe`): Stripe's webhooks, verified as
//! Stripe signs them, kept in an inbox keyed by Stripe's event id and
//! recorded as `StripeEventReceived` events.

pub mod invoices;
pub mod reconcile;
pub mod signature;
pub mod stripe;
pub mod webhooks;

use std::time::Duration;

use axum::http::StatusCode;
use lectern_commands::billing::BillingError;
use lectern_domain::billing::invoice::InvoiceError;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
use crate::problem::{Code, Problem};

/// The billing context's codes.
impl Code {
    /// The `Stripe-Signature` header does not verify the body.
    pub const BAD_SIGNATURE: Code = Code::new("bad_signature", StatusCode::BAD_REQUEST);
    /// A verified body that is not a Stripe event.
    pub const NOT_A_STRIPE_EVENT: Code = Code::new("not_a_stripe_event", StatusCode::BAD_REQUEST);
    /// No such invoice, or not one the caller may see.
    pub const INVOICE_NOT_FOUND: Code = Code::new("invoice_not_found", StatusCode::NOT_FOUND);
    /// The invoice is finalized: its money fields are frozen.
    pub const INVOICE_FINALIZED: Code = Code::new("invoice_finalized", StatusCode::CONFLICT);
    /// A paid invoice cannot be voided.
    pub const INVOICE_PAID: Code = Code::new("invoice_paid", StatusCode::CONFLICT);
    /// Only an open invoice can be marked uncollectible.
    pub const INVOICE_NOT_OPEN: Code = Code::new("invoice_not_open", StatusCode::CONFLICT);
    /// The invoice cannot be paid (void, paid, or nothing remains).
    pub const INVOICE_NOT_PAYABLE: Code = Code::new("invoice_not_payable", StatusCode::CONFLICT);
    /// The lesson's price is on an open or paid invoice.
    pub const INVOICED: Code = Code::new("invoiced", StatusCode::CONFLICT);
    /// No Stripe secret key is configured.
    pub const PAYMENTS_NOT_CONFIGURED: Code =
        Code::new("payments_not_configured", StatusCode::SERVICE_UNAVAILABLE);
    /// Stripe could not be reached, or refused the call.
    pub const PAYMENT_PROVIDER_ERROR: Code =
        Code::new("payment_provider_error", StatusCode::BAD_GATEWAY);
    /// No webhook signing secret is configured.
    pub const WEBHOOKS_NOT_CONFIGURED: Code =
        Code::new("webhooks_not_configured", StatusCode::SERVICE_UNAVAILABLE);

    /// Every billing code.
    pub const BILLING: &'static [Code] = &[
        Self::BAD_SIGNATURE,
        Self::NOT_A_STRIPE_EVENT,
        Self::WEBHOOKS_NOT_CONFIGURED,
        Self::INVOICE_NOT_FOUND,
        Self::INVOICE_FINALIZED,
        Self::INVOICE_PAID,
        Self::INVOICE_NOT_PAYABLE,
        Self::INVOICE_NOT_OPEN,
        Self::INVOICED,
        Self::PAYMENTS_NOT_CONFIGURED,
        Self::PAYMENT_PROVIDER_ERROR,
    ];
}

impl From<BillingError> for Problem {
    fn from(e: BillingError) -> Self {
        match e {
            BillingError::Invoice(e) => {
                let code = match &e {
                    InvoiceError::NotFound => Code::INVOICE_NOT_FOUND,
                    InvoiceError::Finalized => Code::INVOICE_FINALIZED,
                    InvoiceError::Paid => Code::INVOICE_PAID,
                    InvoiceError::NotPayable(_) => Code::INVOICE_NOT_PAYABLE,
                    InvoiceError::NotOpen(_) => Code::INVOICE_NOT_OPEN,
                    InvoiceError::AlreadyExists => Code::CONFLICT,
                    InvoiceError::BadLines
                    | InvoiceError::CurrencyMismatch { .. }
                    | InvoiceError::Negative => Code::VALIDATION_FAILED,
                };
                let detail = match &e {
                    InvoiceError::NotFound => "No such invoice.".to_owned(),
                    other => format!("{}.", capitalise(&other.to_string())),
                };
                Problem::new(code, detail)
            }
            BillingError::Conflict => Problem::new(
                Code::CONFLICT,
                "The invoice was changed concurrently; retry.",
            ),
            BillingError::Store(e) => e.into(),
        }
    }
}

/// 409 `invoiced` when `price` would change the price of lesson `lesson`
/// while an open or paid invoice carries it (its other fields may still
/// change). Only for a caller who may change the lesson: anyone else is
/// refused by the lesson itself, and learns nothing about its invoices.
pub async fn refuse_invoiced_price_change(
    state: &AppState,
    caller: &crate::auth::Caller,
    lesson: uuid::Uuid,
    price: &lectern_domain::classroom::values::Money,
) -> Result<(), Problem> {
    let Ok(current) = state.classroom.lesson_state(lesson).await else {
        return Ok(());
    };
    let may_change = caller.role == lectern_domain::identity::Role::Admin
        || current.tutor_id == Some(caller.user_id);
    if !may_change || current.details.as_ref().map(|d| &d.price) == Some(price) {
        return Ok(());
    }
    let invoiced: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id
                         WHERE l.lesson_id = $1 AND i.status IN ('open', 'paid'))",
    )
    .bind(lesson)
    .fetch_one(&state.pool)
    .await?;
    if invoiced {
        return Err(Problem::new(
            Code::INVOICED,
            "The lesson's price is on an open or paid invoice: it cannot change. Other fields can.",
        ));
    }
    Ok(())
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// The billing routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(webhooks::router())
        .merge(invoices::router())
}

/// Inbox rows claimed (and applied together) at most at a time.
const INBOX_BATCH: i64 = 256;

/// How often the inbox worker sweeps the inbox for due rows it was not told
/// of: those kept by other processes, and those waiting for a retry.
const SWEEP_EVERY: Duration = Duration::from_millis(200);

/// The inbox worker: applies the Stripe deliveries this process keeps as
/// soon as it keeps them (claimed by id), sweeps the inbox every 200 ms for
/// the others, and every 30 s records invoices that became overdue; on the
/// inbox's thread (see [`lectern_commands::billing::inbox_thread`]).
pub async fn work(state: AppState, cancel: CancellationToken) {
    let run = lectern_commands::billing::inbox_thread().spawn(work_here(state, cancel));
    if let Err(e) = run.await {
        tracing::error!(error = %e, "the Stripe inbox worker panicked");
    }
}

async fn work_here(state: AppState, cancel: CancellationToken) {
    let billing = state.billing.clone();
    let mut overdue_at = tokio::time::Instant::now();
    let mut sweep_at = tokio::time::Instant::now();
    loop {
        drain(|| billing.process_kept(INBOX_BATCH as usize)).await;
        if tokio::time::Instant::now() >= sweep_at {
            drain(|| billing.process_inbox(INBOX_BATCH)).await;
            sweep_at = tokio::time::Instant::now() + SWEEP_EVERY;
        }
        if tokio::time::Instant::now() >= overdue_at {
            if let Err(e) = billing.check_overdue().await {
                tracing::warn!(error = %e, "overdue invoices could not be checked");
            }
            overdue_at = tokio::time::Instant::now() + Duration::from_secs(30);
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = billing.inbox_ready.notified() => {}
            () = tokio::time::sleep_until(sweep_at) => {}
        }
    }
}

/// Run `batch` again while it takes a full batch (and until it fails).
async fn drain<F, Fut>(mut batch: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<usize, lectern_commands::billing::BillingError>>,
{
    loop {
        match batch().await {
            Ok(n) if n as i64 == INBOX_BATCH => {}
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "the Stripe inbox could not be read");
                return;
            }
        }
    }
}
