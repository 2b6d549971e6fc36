//! Given/when/then for every Invoice command branch.

use chrono::{Duration, TimeZone};

use super::*;
use crate::testing::{given, when};

const PAYER: Uuid = Uuid::from_u128(7);
const LESSON: Uuid = Uuid::from_u128(1);

fn eur() -> Currency {
    Currency::parse("EUR").expect("eur")
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0)
        .single()
        .expect("a time")
}

fn line(amount: i64) -> Line {
    Line {
        lesson_id: LESSON,
        description: "Algebra".into(),
        amount_minor: amount,
    }
}

fn create(finalize: bool) -> InvoiceCommand {
    InvoiceCommand::Create {
        payer_id: PAYER,
        currency: eur(),
        lines: vec![line(1500)],
        due_at: t0(),
        finalize,
    }
}

/// An open invoice of 15.00 EUR, due at `t0`.
fn open() -> Invoice {
    let mut invoice = Invoice::default();
    when(&mut invoice, create(true)).expect("created");
    invoice
}

fn pay(pi: &str, amount: i64, created: i64) -> InvoiceCommand {
    InvoiceCommand::ApplyPayment {
        payment_ref: pi.into(),
        amount_received: amount,
        currency: eur(),
        created,
        reconciled: false,
    }
}

fn refund(ch: &str, amount: i64, created: i64) -> InvoiceCommand {
    InvoiceCommand::ApplyRefund {
        charge_ref: ch.into(),
        payment_ref: Some("pi_1".into()),
        amount_refunded: amount,
        currency: eur(),
        created,
    }
}

#[test]
fn creating_and_finalizing_freezes_the_total_and_opens_it() {
    let mut invoice = Invoice::default();
    let events = when(&mut invoice, create(true)).expect("created");
    assert_eq!(
        events,
        vec![
            InvoiceEvent::InvoiceCreated {
                payer_id: PAYER,
                currency: eur(),
                due_at: t0()
            },
            InvoiceEvent::LineItemAdded(line(1500)),
            InvoiceEvent::InvoiceFinalized {
                amount_due: 1500,
                due_at: t0()
            },
        ]
    );
    assert_eq!(invoice.status, Some(InvoiceStatus::Open));
    assert_eq!(invoice.amount_remaining(), 1500);
    assert_eq!(
        when(&mut invoice, create(true)),
        Err(InvoiceError::AlreadyExists)
    );
}

#[test]
fn a_draft_takes_lines_until_finalized_and_then_refuses_them() {
    let mut invoice = Invoice::default();
    when(&mut invoice, create(false)).expect("a draft");
    assert_eq!(invoice.status, Some(InvoiceStatus::Draft));
    when(&mut invoice, InvoiceCommand::AddLine(line(500))).expect("a line");
    assert_eq!(
        when(&mut invoice, InvoiceCommand::Finalize).expect("finalized"),
        vec![InvoiceEvent::InvoiceFinalized {
            amount_due: 2000,
            due_at: t0()
        }]
    );
    assert_eq!(
        when(&mut invoice, InvoiceCommand::AddLine(line(100))),
        Err(InvoiceError::Finalized)
    );
    assert_eq!(
        when(&mut invoice, InvoiceCommand::Finalize),
        Err(InvoiceError::Finalized)
    );
    assert_eq!(invoice.amount_due, 2000);
}

#[test]
fn an_invoice_needs_lines_and_no_negative_amount() {
    let mut invoice = Invoice::default();
    let empty = InvoiceCommand::Create {
        payer_id: PAYER,
        currency: eur(),
        lines: Vec::new(),
        due_at: t0(),
        finalize: true,
    };
    assert_eq!(when(&mut invoice, empty), Err(InvoiceError::BadLines));
    let negative = InvoiceCommand::Create {
        payer_id: PAYER,
        currency: eur(),
        lines: vec![line(-1)],
        due_at: t0(),
        finalize: true,
    };
    assert_eq!(when(&mut invoice, negative), Err(InvoiceError::BadLines));
    assert_eq!(invoice, Invoice::default());
    assert_eq!(
        when(&mut invoice, InvoiceCommand::Finalize),
        Err(InvoiceError::NotFound)
    );
}

#[test]
fn a_partial_payment_then_the_rest_pays_it() {
    let mut invoice = open();
    let events = when(&mut invoice, pay("pi_1", 500, 100)).expect("applied");
    assert_eq!(
        events,
        vec![InvoiceEvent::PaymentApplied {
            payment_ref: "pi_1".into(),
            amount_received: 500,
            created: 100,
            amount_paid: 500
        }]
    );
    assert_eq!(
        display_status(&invoice, t0() - Duration::days(1)),
        "partially_paid"
    );
    assert_eq!(invoice.amount_remaining(), 1000);
    let events = when(&mut invoice, pay("pi_2", 1000, 200)).expect("applied");
    assert_eq!(
        events.last(),
        Some(&InvoiceEvent::InvoicePaid { created: 200 })
    );
    assert_eq!(invoice.status, Some(InvoiceStatus::Paid));
    assert_eq!(invoice.amount_paid(), 1500);
    assert_eq!(invoice.amount_remaining(), 0);
}

#[test]
fn late_duplicated_and_out_of_order_payments_converge() {
    // The same cumulative report twice, then an older one, then a newer.
    let mut invoice = open();
    when(&mut invoice, pay("pi_1", 700, 200)).expect("applied");
    assert_eq!(when(&mut invoice, pay("pi_1", 700, 200)), Ok(Vec::new()));
    assert_eq!(when(&mut invoice, pay("pi_1", 300, 100)), Ok(Vec::new()));
    assert_eq!(invoice.amount_paid(), 700);
    when(&mut invoice, pay("pi_1", 1500, 300)).expect("applied");
    assert_eq!(invoice.status, Some(InvoiceStatus::Paid));
    // Every order of the three reports ends in the same state.
    let reports = [
        pay("pi_1", 300, 100),
        pay("pi_1", 700, 200),
        pay("pi_1", 1500, 300),
    ];
    let orders = [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]];
    for order in orders {
        let mut other = open();
        for i in order {
            when(&mut other, reports[i].clone()).expect("applied or ignored");
        }
        assert_eq!(other.status, Some(InvoiceStatus::Paid), "{order:?}");
        assert_eq!(other.amount_paid(), 1500, "{order:?}");
        assert_eq!(other.payments, invoice.payments, "{order:?}");
    }
}

#[test]
fn a_refund_before_its_payment_and_after_it_converge() {
    // charge.refunded arrives before payment_intent.succeeded.
    let mut early = open();
    when(&mut early, refund("ch_1", 500, 300)).expect("refund recorded");
    assert_eq!(early.status, Some(InvoiceStatus::Open));
    when(&mut early, pay("pi_1", 1500, 200)).expect("paid");
    // And in Stripe's order.
    let mut late = open();
    when(&mut late, pay("pi_1", 1500, 200)).expect("paid");
    when(&mut late, refund("ch_1", 500, 300)).expect("refund recorded");
    for invoice in [&early, &late] {
        assert_eq!(invoice.status, Some(InvoiceStatus::Paid));
        assert_eq!(invoice.amount_paid(), 1500);
        assert_eq!(invoice.amount_refunded(), 500);
        assert_eq!(display_status(invoice, t0()), "partially_refunded");
    }
    // The rest refunded, reported twice.
    when(&mut late, refund("ch_1", 1500, 400)).expect("refunded");
    assert_eq!(when(&mut late, refund("ch_1", 1500, 400)), Ok(Vec::new()));
    assert_eq!(when(&mut late, refund("ch_1", 500, 300)), Ok(Vec::new()));
    assert_eq!(late.amount_refunded(), 1500);
    assert_eq!(display_status(&late, t0()), "refunded");
}

#[test]
fn amounts_in_another_currency_or_below_zero_are_refused() {
    let mut invoice = open();
    let usd = InvoiceCommand::ApplyPayment {
        payment_ref: "pi_1".into(),
        amount_received: 1500,
        currency: Currency::parse("usd").expect("usd"),
        created: 1,
        reconciled: false,
    };
    assert_eq!(
        when(&mut invoice, usd),
        Err(InvoiceError::CurrencyMismatch {
            expected: "eur".into(),
            got: "usd".into()
        })
    );
    assert_eq!(
        when(&mut invoice, pay("pi_1", -1, 1)),
        Err(InvoiceError::Negative)
    );
    assert_eq!(
        when(&mut invoice, refund("ch_1", -1, 1)),
        Err(InvoiceError::Negative)
    );
    assert_eq!(invoice, open());
}

#[test]
fn a_voided_invoice_refuses_payment_and_a_paid_one_refuses_voiding() {
    let mut invoice = open();
    let start = InvoiceCommand::StartPayment {
        payment_intent_id: "pi_1".into(),
        amount: 1500,
    };
    when(&mut invoice, start.clone()).expect("started");
    assert_eq!(when(&mut invoice, start.clone()), Ok(Vec::new()));
    when(
        &mut invoice,
        InvoiceCommand::Void {
            reason: "unenrolled".into(),
        },
    )
    .expect("voided");
    assert_eq!(invoice.status, Some(InvoiceStatus::Void));
    let again = InvoiceCommand::StartPayment {
        payment_intent_id: "pi_2".into(),
        amount: 1500,
    };
    assert_eq!(
        when(&mut invoice, again),
        Err(InvoiceError::NotPayable("void"))
    );
    // Voiding twice is no change.
    assert_eq!(
        when(
            &mut invoice,
            InvoiceCommand::Void {
                reason: "again".into()
            }
        ),
        Ok(Vec::new())
    );
    // Money that arrives anyway is recorded; the invoice stays void.
    when(&mut invoice, pay("pi_1", 1500, 10)).expect("recorded");
    assert_eq!(invoice.status, Some(InvoiceStatus::Void));
    assert_eq!(invoice.amount_paid(), 1500);

    let mut paid = open();
    when(&mut paid, pay("pi_1", 1500, 10)).expect("paid");
    assert_eq!(
        when(&mut paid, InvoiceCommand::Void { reason: "x".into() }),
        Err(InvoiceError::Paid)
    );
    assert_eq!(
        when(
            &mut paid,
            InvoiceCommand::StartPayment {
                payment_intent_id: "pi_9".into(),
                amount: 1
            }
        ),
        Err(InvoiceError::NotPayable("paid"))
    );
}

#[test]
fn overdue_is_recorded_once_and_only_when_due_and_unpaid() {
    let mut invoice = open();
    let before = InvoiceCommand::CheckOverdue {
        now: t0() - Duration::seconds(1),
    };
    assert_eq!(when(&mut invoice, before), Ok(Vec::new()));
    let after = InvoiceCommand::CheckOverdue {
        now: t0() + Duration::seconds(1),
    };
    assert_eq!(
        when(&mut invoice, after.clone()),
        Ok(vec![InvoiceEvent::InvoiceBecameOverdue {
            due_at: t0(),
            amount_remaining: 1500
        }])
    );
    assert_eq!(
        display_status(&invoice, t0() + Duration::seconds(1)),
        "overdue"
    );
    assert_eq!(when(&mut invoice, after.clone()), Ok(Vec::new()));
    // Paid in time: never overdue.
    let mut paid = open();
    when(&mut paid, pay("pi_1", 1500, 10)).expect("paid");
    assert_eq!(when(&mut paid, after.clone()), Ok(Vec::new()));
    // A draft has no due date to pass.
    let mut draft = Invoice::default();
    when(&mut draft, create(false)).expect("a draft");
    assert_eq!(when(&mut draft, after), Ok(Vec::new()));
}

#[test]
fn a_failure_is_recorded_once_per_report() {
    let failed = InvoiceCommand::RecordPaymentFailure {
        payment_ref: "pi_1".into(),
        code: Some("card_declined".into()),
        created: 50,
    };
    let mut invoice = open();
    assert_eq!(
        when(&mut invoice, failed.clone()),
        Ok(vec![InvoiceEvent::PaymentFailed {
            payment_ref: "pi_1".into(),
            code: Some("card_declined".into()),
            created: 50
        }])
    );
    assert_eq!(when(&mut invoice, failed), Ok(Vec::new()));
    assert_eq!(invoice.status, Some(InvoiceStatus::Open));
    let replayed: Invoice = given([
        InvoiceEvent::InvoiceCreated {
            payer_id: PAYER,
            currency: eur(),
            due_at: t0(),
        },
        InvoiceEvent::LineItemAdded(line(1500)),
        InvoiceEvent::InvoiceFinalized {
            amount_due: 1500,
            due_at: t0(),
        },
        InvoiceEvent::PaymentFailed {
            payment_ref: "pi_1".into(),
            code: None,
            created: 50,
        },
    ]);
    assert_eq!(replayed, invoice);
}

/// What the Stripe API says of `pi` for the invoice `INVOICE`.
fn asked(pi: &str, amount: i64, currency: &str, named: &str, at: i64) -> InvoiceCommand {
    InvoiceCommand::Reconcile {
        invoice_id: INVOICE,
        payment_ref: pi.into(),
        metadata_invoice_id: Some(named.into()),
        amount_received: amount,
        currency: currency.into(),
        observed_at: at,
    }
}

const INVOICE: Uuid = Uuid::from_u128(42);

#[test]
fn reconciliation_records_a_payment_whose_webhook_never_came_once() {
    let mut invoice = open();
    let me = INVOICE.to_string();
    // Stripe has nothing yet: nothing to record.
    assert_eq!(
        when(&mut invoice, asked("pi_1", 0, "eur", &me, 50)),
        Ok(vec![])
    );
    let events = when(&mut invoice, asked("pi_1", 1500, "eur", &me, 100)).expect("reconciled");
    assert_eq!(
        events,
        vec![
            InvoiceEvent::PaymentReconciled {
                payment_ref: "pi_1".into(),
                amount_received: 1500,
                created: 100,
                amount_paid: 1500
            },
            InvoiceEvent::InvoicePaid { created: 100 }
        ]
    );
    assert_eq!(invoice.status, Some(InvoiceStatus::Paid));
    // Asked again, or the late webhook of the same payment: no change.
    assert_eq!(
        when(&mut invoice, asked("pi_1", 1500, "eur", &me, 200)),
        Ok(vec![])
    );
    assert_eq!(when(&mut invoice, pay("pi_1", 1500, 90)), Ok(vec![]));
    assert_eq!(invoice.amount_paid(), 1500);
}

#[test]
fn a_delivered_webhook_marked_as_reconciled_records_payment_reconciled() {
    let mut invoice = open();
    let command = InvoiceCommand::ApplyPayment {
        payment_ref: "pi_1".into(),
        amount_received: 500,
        currency: eur(),
        created: 100,
        reconciled: true,
    };
    assert_eq!(
        when(&mut invoice, command),
        Ok(vec![InvoiceEvent::PaymentReconciled {
            payment_ref: "pi_1".into(),
            amount_received: 500,
            created: 100,
            amount_paid: 500
        }])
    );
    assert_eq!(invoice.amount_paid(), 500);
}

#[test]
fn a_disagreement_is_recorded_once_and_changes_no_money() {
    let me = INVOICE.to_string();
    let mut invoice = open();
    when(&mut invoice, pay("pi_1", 1000, 100)).expect("paid in part");
    let found = |field: &str, ours: &str, theirs: &str, at: i64| {
        vec![InvoiceEvent::ReconciliationDiscrepancyFound {
            payment_ref: "pi_1".into(),
            field: field.into(),
            ours: ours.into(),
            theirs: theirs.into(),
            observed_at: at,
        }]
    };
    // Stripe says less was received than a webhook said.
    assert_eq!(
        when(&mut invoice, asked("pi_1", 400, "eur", &me, 200)),
        Ok(found("amount_received", "1000", "400", 200))
    );
    assert_eq!(
        when(&mut invoice, asked("pi_1", 400, "eur", &me, 300)),
        Ok(vec![]),
        "the same disagreement is recorded once"
    );
    assert_eq!(
        when(&mut invoice, asked("pi_1", 300, "eur", &me, 400)),
        Ok(found("amount_received", "1000", "300", 400)),
        "a new one is recorded"
    );
    assert_eq!(
        when(&mut invoice, asked("pi_1", 2000, "usd", &me, 500)),
        Ok(found("currency", "eur", "usd", 500))
    );
    assert_eq!(
        when(
            &mut invoice,
            asked("pi_1", 2000, "eur", "someone else's", 600)
        ),
        Ok(found("metadata.invoice_id", &me, "someone else's", 600))
    );
    assert_eq!(invoice.amount_paid(), 1000);
    assert_eq!(invoice.status, Some(InvoiceStatus::Open));
    assert_eq!(
        when(&mut Invoice::default(), asked("pi_1", 1, "eur", &me, 1)),
        Err(InvoiceError::NotFound)
    );
}

#[test]
fn only_an_open_invoice_is_marked_uncollectible_and_a_payment_still_pays_it() {
    let mut invoice = open();
    let mark = || InvoiceCommand::MarkUncollectible {
        reason: "gave up".into(),
    };
    assert_eq!(
        when(&mut invoice, mark()),
        Ok(vec![InvoiceEvent::InvoiceMarkedUncollectible {
            reason: "gave up".into()
        }])
    );
    assert_eq!(invoice.status, Some(InvoiceStatus::Uncollectible));
    assert_eq!(when(&mut invoice, mark()), Ok(vec![]));
    // Not chased: no overdue record, no payment start.
    assert_eq!(
        when(
            &mut invoice,
            InvoiceCommand::CheckOverdue {
                now: t0() + Duration::days(3)
            }
        ),
        Ok(vec![])
    );
    assert_eq!(
        when(
            &mut invoice,
            InvoiceCommand::StartPayment {
                payment_intent_id: "pi_1".into(),
                amount: 1500
            }
        ),
        Err(InvoiceError::NotPayable("uncollectible"))
    );
    let events = when(&mut invoice, pay("pi_1", 1500, 100)).expect("paid");
    assert_eq!(
        events.last(),
        Some(&InvoiceEvent::InvoicePaid { created: 100 })
    );
    assert_eq!(
        when(&mut invoice, mark()),
        Err(InvoiceError::NotOpen("paid"))
    );
    let mut draft = Invoice::default();
    when(&mut draft, create(false)).expect("a draft");
    assert_eq!(
        when(&mut draft, mark()),
        Err(InvoiceError::NotOpen("draft"))
    );
}
