//! The Invoice aggregate: one stream per invoice. It moves `draft → open →
//! paid | void | uncollectible`, as Stripe's invoices do.
//!
//! - **Lines** refer to what is sold (a lesson enrolment) at the price it
//!   had when it was invoiced. Finalizing freezes every money field: a line
//!   command on a finalized invoice is refused (`invoice_finalized`), and a
//!   mistake is fixed by voiding and issuing a new invoice.
//! - **Payments and refunds** arrive from Stripe late, twice, or out of
//!   order. Each command carries Stripe's *cumulative* amount for one
//!   PaymentIntent (`amount_received`) or one charge (`amount_refunded`),
//!   and Stripe's `created` time; the newest wins, so every order of
//!   delivery converges on the same state. Amounts are never added as
//!   deltas.
//! - **Overdue** is a fact recorded once (`InvoiceBecameOverdue`) when an
//!   open invoice passes its due date with money remaining.
//!
//! Money is integer minor units of one lowercase ISO 4217 currency.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::classroom::values::Currency;

/// Where an invoice is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// Lines may still change.
    Draft,
    /// Finalized and awaiting payment.
    Open,
    /// Paid in full.
    Paid,
    /// Cancelled; nothing is owed.
    Void,
    /// Given up on.
    Uncollectible,
}

impl InvoiceStatus {
    /// The name, as the API and the read model spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Open => "open",
            Self::Paid => "paid",
            Self::Void => "void",
            Self::Uncollectible => "uncollectible",
        }
    }
}

/// One thing sold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The lesson whose enrolment is sold.
    pub lesson_id: Uuid,
    /// What the payer sees.
    pub description: String,
    /// Its price when invoiced, in minor units.
    pub amount_minor: i64,
}

/// A cumulative amount from Stripe and the `created` time it was true at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cumulative {
    /// Minor units, cumulative.
    pub amount: i64,
    /// Stripe's `created` (Unix seconds) of the event that said so.
    pub as_of: i64,
}

/// An invoice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Invoice {
    /// `None` until created.
    pub status: Option<InvoiceStatus>,
    /// Who pays.
    pub payer_id: Option<Uuid>,
    /// The one currency of every amount.
    pub currency: Option<Currency>,
    /// What is sold.
    pub lines: Vec<Line>,
    /// The total, frozen when finalized.
    pub amount_due: i64,
    /// When payment is (or will be) due.
    pub due_at: Option<DateTime<Utc>>,
    /// Received per PaymentIntent.
    pub payments: BTreeMap<String, Cumulative>,
    /// Refunded per charge.
    pub refunds: BTreeMap<String, Cumulative>,
    /// The PaymentIntents started for it.
    pub started: Vec<String>,
    /// The newest failure recorded per PaymentIntent (Stripe's `created`).
    pub failures: BTreeMap<String, i64>,
    /// `InvoiceBecameOverdue` was recorded.
    pub overdue: bool,
    /// The discrepancies reconciliation recorded, per `"{PaymentIntent}
    /// {field}"`: (ours, theirs).
    #[serde(default)]
    pub discrepancies: BTreeMap<String, (String, String)>,
}

impl Invoice {
    /// Received so far, over every PaymentIntent.
    pub fn amount_paid(&self) -> i64 {
        self.payments.values().map(|c| c.amount).sum()
    }

    /// Refunded so far, over every charge.
    pub fn amount_refunded(&self) -> i64 {
        self.refunds.values().map(|c| c.amount).sum()
    }

    /// Still owed: due less paid, never below zero.
    pub fn amount_remaining(&self) -> i64 {
        (self.amount_due - self.amount_paid()).max(0)
    }

    fn sum_of_lines(&self) -> i64 {
        self.lines.iter().map(|l| l.amount_minor).sum()
    }
}

/// What may be asked of an invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvoiceCommand {
    /// Create it, with its lines; `finalize` opens it at once, due at
    /// `due_at`.
    Create {
        /// Who pays.
        payer_id: Uuid,
        /// The currency of every line.
        currency: Currency,
        /// What is sold.
        lines: Vec<Line>,
        /// When payment is due.
        due_at: DateTime<Utc>,
        /// Open it at once.
        finalize: bool,
    },
    /// Add a line to a draft.
    AddLine(Line),
    /// Freeze a draft's money fields and open it for payment.
    Finalize,
    /// Cancel it: nothing is owed any more.
    Void {
        /// Why.
        reason: String,
    },
    /// Give up collecting an open invoice (a payment may still pay it).
    MarkUncollectible {
        /// Why.
        reason: String,
    },
    /// A payment was started through Stripe.
    StartPayment {
        /// The PaymentIntent created for it.
        payment_intent_id: String,
        /// What it asks for, in minor units.
        amount: i64,
    },
    /// Stripe says PaymentIntent `payment_ref` has received `amount_received`
    /// in all (`payment_intent.succeeded`, or an invoice payment).
    ApplyPayment {
        /// The PaymentIntent.
        payment_ref: String,
        /// Its cumulative amount received.
        amount_received: i64,
        /// Its currency.
        currency: Currency,
        /// Stripe's `created` of the event.
        created: i64,
        /// Found by reconciliation (its webhook never came), not delivered.
        reconciled: bool,
    },
    /// What the Stripe API says of a PaymentIntent started for this invoice,
    /// asked by the reconciliation job.
    Reconcile {
        /// This invoice's id, as Lectern set it in the metadata.
        invoice_id: Uuid,
        /// The PaymentIntent.
        payment_ref: String,
        /// The `invoice_id` its metadata names.
        metadata_invoice_id: Option<String>,
        /// Its cumulative amount received.
        amount_received: i64,
        /// Its currency.
        currency: String,
        /// When it was asked (Unix seconds).
        observed_at: i64,
    },
    /// Stripe says a payment attempt failed.
    RecordPaymentFailure {
        /// The PaymentIntent.
        payment_ref: String,
        /// Stripe's error code, if any (never card details).
        code: Option<String>,
        /// Stripe's `created` of the event.
        created: i64,
    },
    /// Stripe says charge `charge_ref` has had `amount_refunded` refunded in
    /// all (`charge.refunded`).
    ApplyRefund {
        /// The charge.
        charge_ref: String,
        /// The PaymentIntent it belongs to.
        payment_ref: Option<String>,
        /// Its cumulative amount refunded.
        amount_refunded: i64,
        /// Its currency.
        currency: Currency,
        /// Stripe's `created` of the event.
        created: i64,
    },
    /// Record that it is overdue, once, if it is at `now`.
    CheckOverdue {
        /// The time of the check.
        now: DateTime<Utc>,
    },
}

impl crate::CommandName for InvoiceCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Create { .. } => "CreateInvoice",
            Self::AddLine(_) => "AddInvoiceLine",
            Self::Finalize => "FinalizeInvoice",
            Self::Void { .. } => "VoidInvoice",
            Self::MarkUncollectible { .. } => "MarkInvoiceUncollectible",
            Self::StartPayment { .. } => "StartPayment",
            Self::ApplyPayment { .. } => "ApplyPayment",
            Self::Reconcile { .. } => "ReconcilePayment",
            Self::RecordPaymentFailure { .. } => "RecordPaymentFailure",
            Self::ApplyRefund { .. } => "ApplyRefund",
            Self::CheckOverdue { .. } => "CheckInvoiceOverdue",
        }
    }
}

/// Events of an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvoiceEvent {
    /// Created, as a draft.
    InvoiceCreated {
        /// Who pays.
        payer_id: Uuid,
        /// The currency.
        currency: Currency,
        /// When payment will be due.
        due_at: DateTime<Utc>,
    },
    /// A line was added to the draft.
    LineItemAdded(Line),
    /// Its money fields are frozen; it is open for payment.
    InvoiceFinalized {
        /// The total.
        amount_due: i64,
        /// When payment is due.
        due_at: DateTime<Utc>,
    },
    /// Cancelled.
    InvoiceVoided {
        /// Why.
        reason: String,
    },
    /// Given up on: still owed, no longer chased.
    InvoiceMarkedUncollectible {
        /// Why.
        reason: String,
    },
    /// A payment was started.
    PaymentStarted {
        /// The PaymentIntent.
        payment_intent_id: String,
        /// What it asks for.
        amount: i64,
    },
    /// A PaymentIntent's cumulative amount received, as of `created`.
    PaymentApplied {
        /// The PaymentIntent.
        payment_ref: String,
        /// Its cumulative amount received.
        amount_received: i64,
        /// Stripe's `created`.
        created: i64,
        /// Paid over every PaymentIntent, after this.
        amount_paid: i64,
    },
    /// A PaymentIntent's cumulative amount received that no webhook
    /// delivered: reconciliation found it through the Stripe API.
    PaymentReconciled {
        /// The PaymentIntent.
        payment_ref: String,
        /// Its cumulative amount received.
        amount_received: i64,
        /// When Stripe said so: its event's `created`, or the time it was
        /// asked.
        created: i64,
        /// Paid over every PaymentIntent, after this.
        amount_paid: i64,
    },
    /// The Stripe API disagrees with what the invoice recorded.
    ReconciliationDiscrepancyFound {
        /// The PaymentIntent.
        payment_ref: String,
        /// What disagrees: `amount_received`, `currency` or
        /// `metadata.invoice_id`.
        field: String,
        /// What the invoice says.
        ours: String,
        /// What Stripe says.
        theirs: String,
        /// When Stripe was asked (Unix seconds).
        observed_at: i64,
    },
    /// A payment attempt failed.
    PaymentFailed {
        /// The PaymentIntent.
        payment_ref: String,
        /// Stripe's error code.
        code: Option<String>,
        /// Stripe's `created`.
        created: i64,
    },
    /// A charge's cumulative amount refunded, as of `created`.
    RefundApplied {
        /// The charge.
        charge_ref: String,
        /// The PaymentIntent it belongs to.
        payment_ref: Option<String>,
        /// Its cumulative amount refunded.
        amount_refunded: i64,
        /// Stripe's `created`.
        created: i64,
        /// Refunded over every charge, after this.
        total_refunded: i64,
    },
    /// Paid in full.
    InvoicePaid {
        /// Stripe's `created` of the payment that completed it.
        created: i64,
    },
    /// Still open, with money remaining, past its due date.
    InvoiceBecameOverdue {
        /// The due date passed.
        due_at: DateTime<Utc>,
        /// What remained.
        amount_remaining: i64,
    },
}

crate::classroom::domain_event!(InvoiceEvent {
    InvoiceCreated,
    LineItemAdded,
    InvoiceFinalized,
    InvoiceVoided,
    InvoiceMarkedUncollectible,
    PaymentStarted,
    PaymentApplied,
    PaymentReconciled,
    ReconciliationDiscrepancyFound,
    PaymentFailed,
    RefundApplied,
    InvoicePaid,
    InvoiceBecameOverdue,
});

/// The rules an invoice command can break.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    /// No such invoice.
    #[error("no such invoice")]
    NotFound,
    /// The invoice exists already.
    #[error("the invoice exists already")]
    AlreadyExists,
    /// Its money fields are frozen: void it and issue a new one.
    #[error("the invoice is finalized: void it and issue a new one")]
    Finalized,
    /// An invoice needs at least one line, each of a non-negative amount.
    #[error("an invoice needs at least one line, and no line may be negative")]
    BadLines,
    /// Only an open invoice with money remaining can be paid.
    #[error("the invoice is {0} and cannot be paid")]
    NotPayable(&'static str),
    /// Only an open invoice can be marked uncollectible.
    #[error("the invoice is {0}: only an open invoice can be marked uncollectible")]
    NotOpen(&'static str),
    /// A paid invoice cannot be voided: refund it instead.
    #[error("the invoice is paid: refund it instead of voiding it")]
    Paid,
    /// The amount is in another currency than the invoice's.
    #[error("the amount is in {got}, the invoice in {expected}")]
    CurrencyMismatch {
        /// The invoice's currency.
        expected: String,
        /// The amount's.
        got: String,
    },
    /// An amount below zero.
    #[error("amounts are never negative")]
    Negative,
}

impl Invoice {
    /// Record `amount_received` in all for `payment_ref`, as of `created`,
    /// and mark an open invoice paid when that covers it.
    fn payment(
        &self,
        payment_ref: String,
        amount_received: i64,
        created: i64,
        reconciled: bool,
    ) -> Vec<InvoiceEvent> {
        let before = self.payments.get(&payment_ref).map_or(0, |c| c.amount);
        let amount_paid = self.amount_paid() - before + amount_received;
        let mut events = vec![if reconciled {
            InvoiceEvent::PaymentReconciled {
                payment_ref,
                amount_received,
                created,
                amount_paid,
            }
        } else {
            InvoiceEvent::PaymentApplied {
                payment_ref,
                amount_received,
                created,
                amount_paid,
            }
        }];
        // Money is recorded whatever the status; an open invoice becomes
        // paid by it, and so does an uncollectible one (as at Stripe).
        if matches!(
            self.status,
            Some(InvoiceStatus::Open | InvoiceStatus::Uncollectible)
        ) && amount_paid >= self.amount_due
        {
            events.push(InvoiceEvent::InvoicePaid { created });
        }
        events
    }

    fn status(&self) -> Result<InvoiceStatus, InvoiceError> {
        self.status.ok_or(InvoiceError::NotFound)
    }

    fn same_currency(&self, currency: &Currency) -> Result<(), InvoiceError> {
        match &self.currency {
            Some(c) if c == currency => Ok(()),
            Some(c) => Err(InvoiceError::CurrencyMismatch {
                expected: c.as_str().to_owned(),
                got: currency.as_str().to_owned(),
            }),
            None => Err(InvoiceError::NotFound),
        }
    }

    /// The events `command` causes, or why not.
    pub fn decide(&self, command: InvoiceCommand) -> Result<Vec<InvoiceEvent>, InvoiceError> {
        match command {
            InvoiceCommand::Create {
                payer_id,
                currency,
                lines,
                due_at,
                finalize,
            } => {
                if self.status.is_some() {
                    return Err(InvoiceError::AlreadyExists);
                }
                if lines.is_empty() || lines.iter().any(|l| l.amount_minor < 0) {
                    return Err(InvoiceError::BadLines);
                }
                let amount_due = lines.iter().map(|l| l.amount_minor).sum();
                let mut events = vec![InvoiceEvent::InvoiceCreated {
                    payer_id,
                    currency,
                    due_at,
                }];
                events.extend(lines.into_iter().map(InvoiceEvent::LineItemAdded));
                if finalize {
                    events.push(InvoiceEvent::InvoiceFinalized { amount_due, due_at });
                }
                Ok(events)
            }
            InvoiceCommand::AddLine(line) => {
                if self.status()? != InvoiceStatus::Draft {
                    return Err(InvoiceError::Finalized);
                }
                if line.amount_minor < 0 {
                    return Err(InvoiceError::BadLines);
                }
                Ok(vec![InvoiceEvent::LineItemAdded(line)])
            }
            InvoiceCommand::Finalize => {
                if self.status()? != InvoiceStatus::Draft {
                    return Err(InvoiceError::Finalized);
                }
                let due_at = self.due_at.ok_or(InvoiceError::NotFound)?;
                Ok(vec![InvoiceEvent::InvoiceFinalized {
                    amount_due: self.sum_of_lines(),
                    due_at,
                }])
            }
            InvoiceCommand::Void { reason } => match self.status()? {
                InvoiceStatus::Void => Ok(Vec::new()),
                InvoiceStatus::Paid => Err(InvoiceError::Paid),
                _ => Ok(vec![InvoiceEvent::InvoiceVoided { reason }]),
            },
            InvoiceCommand::MarkUncollectible { reason } => match self.status()? {
                InvoiceStatus::Uncollectible => Ok(Vec::new()),
                InvoiceStatus::Open => {
                    Ok(vec![InvoiceEvent::InvoiceMarkedUncollectible { reason }])
                }
                other => Err(InvoiceError::NotOpen(other.as_str())),
            },
            InvoiceCommand::StartPayment {
                payment_intent_id,
                amount,
            } => {
                let status = self.status()?;
                if status != InvoiceStatus::Open || self.amount_remaining() == 0 {
                    return Err(InvoiceError::NotPayable(status.as_str()));
                }
                if self.started.contains(&payment_intent_id) {
                    return Ok(Vec::new());
                }
                Ok(vec![InvoiceEvent::PaymentStarted {
                    payment_intent_id,
                    amount,
                }])
            }
            InvoiceCommand::ApplyPayment {
                payment_ref,
                amount_received,
                currency,
                created,
                reconciled,
            } => {
                self.status()?;
                self.same_currency(&currency)?;
                if amount_received < 0 {
                    return Err(InvoiceError::Negative);
                }
                // Newest wins: an older or equal report changes nothing.
                if let Some(known) = self.payments.get(&payment_ref) {
                    if known.as_of > created
                        || (known.as_of == created && known.amount >= amount_received)
                    {
                        return Ok(Vec::new());
                    }
                    if known.amount == amount_received {
                        return Ok(Vec::new());
                    }
                }
                Ok(self.payment(payment_ref, amount_received, created, reconciled))
            }
            InvoiceCommand::Reconcile {
                invoice_id,
                payment_ref,
                metadata_invoice_id,
                amount_received,
                currency,
                observed_at,
            } => {
                let ours_currency = self
                    .currency
                    .as_ref()
                    .ok_or(InvoiceError::NotFound)?
                    .as_str()
                    .to_owned();
                let ours = self.payments.get(&payment_ref).map_or(0, |c| c.amount);
                let found = |field: &str, ours: String, theirs: String| {
                    let key = format!("{payment_ref} {field}");
                    if self.discrepancies.get(&key) == Some(&(ours.clone(), theirs.clone())) {
                        return Vec::new();
                    }
                    vec![InvoiceEvent::ReconciliationDiscrepancyFound {
                        payment_ref: payment_ref.clone(),
                        field: field.to_owned(),
                        ours,
                        theirs,
                        observed_at,
                    }]
                };
                let named = metadata_invoice_id.unwrap_or_default();
                if named != invoice_id.to_string() {
                    return Ok(found("metadata.invoice_id", invoice_id.to_string(), named));
                }
                if currency != ours_currency {
                    return Ok(found("currency", ours_currency, currency));
                }
                if amount_received < ours {
                    return Ok(found(
                        "amount_received",
                        ours.to_string(),
                        amount_received.to_string(),
                    ));
                }
                if amount_received == ours {
                    return Ok(Vec::new());
                }
                // More received than any webhook said: one never came.
                Ok(self.payment(payment_ref, amount_received, observed_at, true))
            }
            InvoiceCommand::RecordPaymentFailure {
                payment_ref,
                code,
                created,
            } => {
                self.status()?;
                // Stripe may send two events for one failure.
                if self
                    .failures
                    .get(&payment_ref)
                    .is_some_and(|&t| t >= created)
                {
                    return Ok(Vec::new());
                }
                Ok(vec![InvoiceEvent::PaymentFailed {
                    payment_ref,
                    code,
                    created,
                }])
            }
            InvoiceCommand::ApplyRefund {
                charge_ref,
                payment_ref,
                amount_refunded,
                currency,
                created,
            } => {
                self.status()?;
                self.same_currency(&currency)?;
                if amount_refunded < 0 {
                    return Err(InvoiceError::Negative);
                }
                if let Some(known) = self.refunds.get(&charge_ref) {
                    if known.as_of > created
                        || (known.as_of == created && known.amount >= amount_refunded)
                        || known.amount == amount_refunded
                    {
                        return Ok(Vec::new());
                    }
                }
                let before = self.refunds.get(&charge_ref).map_or(0, |c| c.amount);
                Ok(vec![InvoiceEvent::RefundApplied {
                    charge_ref,
                    payment_ref,
                    amount_refunded,
                    created,
                    total_refunded: self.amount_refunded() - before + amount_refunded,
                }])
            }
            InvoiceCommand::CheckOverdue { now } => {
                let due = match (self.status()?, self.due_at) {
                    (InvoiceStatus::Open, Some(due)) => due,
                    _ => return Ok(Vec::new()),
                };
                if self.overdue || due >= now || self.amount_remaining() == 0 {
                    return Ok(Vec::new());
                }
                Ok(vec![InvoiceEvent::InvoiceBecameOverdue {
                    due_at: due,
                    amount_remaining: self.amount_remaining(),
                }])
            }
        }
    }
}

impl Aggregate for Invoice {
    const TYPE: &'static str = "Invoice";
    type Command = InvoiceCommand;
    type Event = InvoiceEvent;
    type Error = InvoiceError;
    type Services = ();

    async fn handle(
        &mut self,
        command: InvoiceCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), InvoiceError> {
        for e in self.decide(command)? {
            sink.write(e, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: InvoiceEvent) {
        match event {
            InvoiceEvent::InvoiceCreated {
                payer_id,
                currency,
                due_at,
            } => {
                self.status = Some(InvoiceStatus::Draft);
                self.payer_id = Some(payer_id);
                self.currency = Some(currency);
                self.due_at = Some(due_at);
            }
            InvoiceEvent::LineItemAdded(line) => {
                self.lines.push(line);
                self.amount_due = self.sum_of_lines();
            }
            InvoiceEvent::InvoiceFinalized { amount_due, due_at } => {
                self.status = Some(InvoiceStatus::Open);
                self.amount_due = amount_due;
                self.due_at = Some(due_at);
            }
            InvoiceEvent::InvoiceVoided { .. } => self.status = Some(InvoiceStatus::Void),
            InvoiceEvent::InvoiceMarkedUncollectible { .. } => {
                self.status = Some(InvoiceStatus::Uncollectible);
            }
            InvoiceEvent::PaymentStarted {
                payment_intent_id, ..
            } => self.started.push(payment_intent_id),
            InvoiceEvent::PaymentApplied {
                payment_ref,
                amount_received,
                created,
                ..
            }
            | InvoiceEvent::PaymentReconciled {
                payment_ref,
                amount_received,
                created,
                ..
            } => {
                self.payments.insert(
                    payment_ref,
                    Cumulative {
                        amount: amount_received,
                        as_of: created,
                    },
                );
            }
            InvoiceEvent::PaymentFailed {
                payment_ref,
                created,
                ..
            } => {
                self.failures.insert(payment_ref, created);
            }
            InvoiceEvent::RefundApplied {
                charge_ref,
                amount_refunded,
                created,
                ..
            } => {
                self.refunds.insert(
                    charge_ref,
                    Cumulative {
                        amount: amount_refunded,
                        as_of: created,
                    },
                );
            }
            InvoiceEvent::InvoicePaid { .. } => self.status = Some(InvoiceStatus::Paid),
            InvoiceEvent::InvoiceBecameOverdue { .. } => self.overdue = true,
            InvoiceEvent::ReconciliationDiscrepancyFound {
                payment_ref,
                field,
                ours,
                theirs,
                ..
            } => {
                self.discrepancies
                    .insert(format!("{payment_ref} {field}"), (ours, theirs));
            }
        }
    }
}

/// How an invoice shows beside its status: a partial payment, a partial
/// refund, a due date passed.
pub fn display_status(invoice: &Invoice, now: DateTime<Utc>) -> &'static str {
    let Some(status) = invoice.status else {
        return "draft";
    };
    let paid = invoice.amount_paid();
    let refunded = invoice.amount_refunded();
    match status {
        InvoiceStatus::Paid if refunded >= paid && paid > 0 => "refunded",
        InvoiceStatus::Paid if refunded > 0 => "partially_refunded",
        InvoiceStatus::Open if invoice.due_at.is_some_and(|d| d < now) => "overdue",
        InvoiceStatus::Open if paid > 0 => "partially_paid",
        other => other.as_str(),
    }
}

#[cfg(test)]
mod tests;
