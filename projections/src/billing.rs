//! `invoices`, `invoice_lines`, `payments`, `billing_discrepancies` and
//! `analytics.revenue_daily`, from the Invoice streams, and the queries that
//! read them.

use async_trait::async_trait;
use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use lectern_domain::billing::invoice::{InvoiceEvent, InvoiceStatus};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::classroom::{decode, uuid_of};
use crate::log::LogEvent;
use crate::projection::{Interest, Projection, ProjectionError, Tables};

const INVOICES: &str = "invoices";
const LINES: &str = "invoice_lines";
const PAYMENTS: &str = "payments";
const REVENUE: &str = "analytics.revenue_daily";
const DISCREPANCIES: &str = "billing_discrepancies";

/// Invoices, their lines and payments, and daily revenue.
pub struct BillingProjection;

#[async_trait]
impl Projection for BillingProjection {
    fn name(&self) -> &'static str {
        "billing"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[INVOICES, LINES, PAYMENTS, REVENUE, DISCREPANCIES]
    }

    fn interest(&self) -> Interest {
        Interest::types(&["Invoice"])
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        t: &Tables,
        event: &LogEvent,
    ) -> Result<(), ProjectionError> {
        // Payments, refunds and status changes: the one way they are written,
        // a run of one here.
        if let Some(change) = Change::of(event)? {
            return write_run(conn, t, &mut vec![change]).await;
        }
        let id = uuid_of(event)?;
        let at = event.recorded_at;
        let version = event.sequence;
        let touch = |sql: &str| {
            format!(
                "UPDATE {} SET {sql}, updated_at = $2, version = $3 WHERE id = $1",
                t.get(INVOICES)
            )
        };
        match decode::<InvoiceEvent>(event)? {
            InvoiceEvent::InvoiceCreated {
                payer_id,
                currency,
                due_at,
            } => {
                sqlx::query(&format!(
                    "INSERT INTO {} (id, payer_id, status, currency, due_at, created_at, updated_at, version)
                     VALUES ($1, $2, 'draft', $3, $4, $5, $5, $6) ON CONFLICT (id) DO NOTHING",
                    t.get(INVOICES)
                ))
                .bind(id)
                .bind(payer_id)
                .bind(currency.as_str())
                .bind(due_at)
                .bind(at)
                .bind(version)
                .execute(&mut *conn)
                .await?;
            }
            InvoiceEvent::LineItemAdded(line) => {
                sqlx::query(&format!(
                    "INSERT INTO {} (invoice_id, n, lesson_id, description, amount_minor)
                     SELECT $1, count(*), $2, $3, $4 FROM {} WHERE invoice_id = $1",
                    t.get(LINES),
                    t.get(LINES)
                ))
                .bind(id)
                .bind(line.lesson_id)
                .bind(&line.description)
                .bind(line.amount_minor)
                .execute(&mut *conn)
                .await?;
                sqlx::query(&touch("amount_due = amount_due + $4"))
                    .bind(id)
                    .bind(at)
                    .bind(version)
                    .bind(line.amount_minor)
                    .execute(&mut *conn)
                    .await?;
            }
            InvoiceEvent::InvoiceFinalized { amount_due, due_at } => {
                sqlx::query(&touch("status = 'open', amount_due = $4, due_at = $5"))
                    .bind(id)
                    .bind(at)
                    .bind(version)
                    .bind(amount_due)
                    .bind(due_at)
                    .execute(&mut *conn)
                    .await?;
                revenue(conn, t, id, at, "invoiced", amount_due).await?;
            }
            InvoiceEvent::InvoiceBecameOverdue { .. } => {
                sqlx::query(&touch("overdue = true"))
                    .bind(id)
                    .bind(at)
                    .bind(version)
                    .execute(&mut *conn)
                    .await?;
            }
            InvoiceEvent::PaymentStarted {
                payment_intent_id,
                amount,
            } => {
                payment(
                    conn,
                    t,
                    id,
                    "started",
                    &payment_intent_id,
                    Some(amount),
                    None,
                    None,
                    at,
                    false,
                )
                .await?;
            }
            InvoiceEvent::PaymentFailed {
                payment_ref,
                code,
                created,
            } => {
                payment(
                    conn,
                    t,
                    id,
                    "failure",
                    &payment_ref,
                    None,
                    code.as_deref(),
                    Some(created),
                    at,
                    false,
                )
                .await?;
            }
            InvoiceEvent::ReconciliationDiscrepancyFound {
                payment_ref,
                field,
                ours,
                theirs,
                observed_at,
            } => {
                sqlx::query(&format!(
                    "INSERT INTO {} (invoice_id, payment_ref, field, ours, theirs, observed_at, recorded_at)
                     VALUES ($1, $2, $3, $4, $5, to_timestamp($6), $7)
                     ON CONFLICT (invoice_id, payment_ref, field) DO UPDATE
                        SET ours = EXCLUDED.ours, theirs = EXCLUDED.theirs,
                            observed_at = EXCLUDED.observed_at, recorded_at = EXCLUDED.recorded_at",
                    t.get(DISCREPANCIES)
                ))
                .bind(id)
                .bind(payment_ref)
                .bind(field)
                .bind(ours)
                .bind(theirs)
                .bind(observed_at as f64)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            // Written by `write_run` (see above).
            InvoiceEvent::PaymentApplied { .. }
            | InvoiceEvent::PaymentReconciled { .. }
            | InvoiceEvent::RefundApplied { .. }
            | InvoiceEvent::InvoicePaid { .. }
            | InvoiceEvent::InvoiceVoided { .. }
            | InvoiceEvent::InvoiceMarkedUncollectible { .. } => {}
        }
        Ok(())
    }

    /// Runs of the events a webhook load brings (payments, refunds and
    /// status changes) are written set-wise: one upsert of their payment
    /// rows, one update of their invoices (each to its last value, reading
    /// the totals before it) and one upsert of the revenue they move, the
    /// same rows as applying them one by one. Every other event is applied
    /// alone, in its place.
    async fn apply_all(
        &self,
        conn: &mut PgConnection,
        t: &Tables,
        events: &[&LogEvent],
    ) -> Result<(), ProjectionError> {
        let mut run = Vec::new();
        for event in events {
            match Change::of(event)? {
                Some(change) => run.push(change),
                None => {
                    write_run(conn, t, &mut run).await?;
                    self.apply(conn, t, event).await?;
                }
            }
        }
        write_run(conn, t, &mut run).await
    }
}

/// An event [`BillingProjection::apply_all`] writes set-wise.
struct Change {
    invoice: Uuid,
    at: DateTime<Utc>,
    version: i64,
    what: Changed,
}

enum Changed {
    /// A payment row and the total Stripe's cumulative amount sets.
    Money {
        kind: &'static str,
        reference: String,
        amount: i64,
        created: i64,
        reconciled: bool,
        total: Total,
        value: i64,
    },
    Status(InvoiceStatus),
}

impl Change {
    fn of(event: &LogEvent) -> Result<Option<Self>, ProjectionError> {
        if !matches!(
            event.event_type.as_str(),
            "PaymentApplied"
                | "PaymentReconciled"
                | "RefundApplied"
                | "InvoicePaid"
                | "InvoiceVoided"
                | "InvoiceMarkedUncollectible"
        ) {
            return Ok(None);
        }
        let what = match decode::<InvoiceEvent>(event)? {
            InvoiceEvent::PaymentApplied {
                payment_ref,
                amount_received,
                created,
                amount_paid,
            }
            | InvoiceEvent::PaymentReconciled {
                payment_ref,
                amount_received,
                created,
                amount_paid,
            } => Changed::Money {
                kind: "payment",
                reference: payment_ref,
                amount: amount_received,
                created,
                reconciled: event.event_type == "PaymentReconciled",
                total: Total::Paid,
                value: amount_paid,
            },
            InvoiceEvent::RefundApplied {
                charge_ref,
                amount_refunded,
                created,
                total_refunded,
                ..
            } => Changed::Money {
                kind: "refund",
                reference: charge_ref,
                amount: amount_refunded,
                created,
                reconciled: false,
                total: Total::Refunded,
                value: total_refunded,
            },
            InvoiceEvent::InvoicePaid { .. } => Changed::Status(InvoiceStatus::Paid),
            InvoiceEvent::InvoiceVoided { .. } => Changed::Status(InvoiceStatus::Void),
            InvoiceEvent::InvoiceMarkedUncollectible { .. } => {
                Changed::Status(InvoiceStatus::Uncollectible)
            }
            _ => return Ok(None),
        };
        Ok(Some(Self {
            invoice: uuid_of(event)?,
            at: event.recorded_at,
            version: event.sequence,
            what,
        }))
    }
}

/// An invoice's row after a run: each field as the run's last event that
/// sets it left it.
#[derive(Default)]
struct Patch {
    paid: Option<i64>,
    refunded: Option<i64>,
    status: Option<&'static str>,
    at: Option<DateTime<Utc>>,
    version: i64,
    /// Whether the run sets a total: the row must then exist (a payment for
    /// an invoice the read model lacks is an error, never dropped).
    totals: bool,
}

/// A `payments` row: invoice, kind, reference, amount, Stripe's `created`,
/// recorded at, reconciled.
type PaymentRow<'a> = (Uuid, &'a str, &'a str, i64, i64, DateTime<Utc>, bool);

/// Write `run` (and empty it): what applying its events one by one writes.
async fn write_run(
    conn: &mut PgConnection,
    t: &Tables,
    run: &mut Vec<Change>,
) -> Result<(), ProjectionError> {
    if run.is_empty() {
        return Ok(());
    }
    // Payment rows: the last report per (invoice, kind, reference) wins.
    let mut rows: HashMap<(Uuid, &str, &str), PaymentRow<'_>> = HashMap::new();
    // Invoices, in the order the run first touches them.
    let mut patches: Vec<(Uuid, Patch)> = Vec::new();
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    for change in run.iter() {
        let i = *index.entry(change.invoice).or_insert_with(|| {
            patches.push((change.invoice, Patch::default()));
            patches.len() - 1
        });
        let patch = &mut patches[i].1;
        (patch.at, patch.version) = (Some(change.at), change.version);
        match &change.what {
            Changed::Money {
                kind,
                reference,
                amount,
                created,
                reconciled,
                total,
                value,
            } => {
                let row = (
                    change.invoice,
                    *kind,
                    reference.as_str(),
                    *amount,
                    *created,
                    change.at,
                    *reconciled,
                );
                rows.insert((change.invoice, kind, reference), row);
                patch.totals = true;
                match total {
                    Total::Paid => patch.paid = Some(*value),
                    Total::Refunded => patch.refunded = Some(*value),
                }
            }
            Changed::Status(status) => patch.status = Some(status.as_str()),
        }
    }
    if !rows.is_empty() {
        let m: Vec<PaymentRow<'_>> = rows.into_values().collect();
        sqlx::query(&format!(
            "INSERT INTO {} (invoice_id, kind, reference, amount, code, stripe_created, recorded_at, reconciled)
             SELECT id, kind, reference, amount, NULL, created, at, reconciled
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::timestamptz[],
                           $7::boolean[]) AS u(id, kind, reference, amount, created, at, reconciled)
             ON CONFLICT (invoice_id, kind, reference) DO UPDATE
                SET amount = EXCLUDED.amount, code = EXCLUDED.code,
                    stripe_created = EXCLUDED.stripe_created, recorded_at = EXCLUDED.recorded_at,
                    reconciled = EXCLUDED.reconciled",
            t.get(PAYMENTS)
        ))
        .bind(m.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(m.iter().map(|r| r.1).collect::<Vec<_>>())
        .bind(m.iter().map(|r| r.2).collect::<Vec<_>>())
        .bind(m.iter().map(|r| r.3).collect::<Vec<_>>())
        .bind(m.iter().map(|r| r.4).collect::<Vec<_>>())
        .bind(m.iter().map(|r| r.5).collect::<Vec<_>>())
        .bind(m.iter().map(|r| r.6).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    // The invoices, each updated once; `b` reads the row as it was before.
    let before: Vec<(Uuid, i64, i64, String)> = sqlx::query_as(&format!(
        "UPDATE {invoices} i
            SET amount_paid = coalesce(u.paid, i.amount_paid),
                amount_refunded = coalesce(u.refunded, i.amount_refunded),
                status = coalesce(u.status, i.status), updated_at = u.at, version = u.version
           FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::text[], $5::timestamptz[], $6::int8[])
                  AS u(id, paid, refunded, status, at, version),
                {invoices} b
          WHERE i.id = u.id AND b.id = u.id
      RETURNING i.id, b.amount_paid, b.amount_refunded, b.currency",
        invoices = t.get(INVOICES)
    ))
    .bind(patches.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(patches.iter().map(|(_, p)| p.paid).collect::<Vec<_>>())
    .bind(patches.iter().map(|(_, p)| p.refunded).collect::<Vec<_>>())
    .bind(patches.iter().map(|(_, p)| p.status).collect::<Vec<_>>())
    .bind(patches.iter().map(|(_, p)| p.at).collect::<Vec<_>>())
    .bind(patches.iter().map(|(_, p)| p.version).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let mut before: HashMap<Uuid, (i64, i64, String)> = before
        .into_iter()
        .map(|(id, paid, refunded, currency)| (id, (paid, refunded, currency)))
        .collect();
    if let Some((id, _)) = patches
        .iter()
        .find(|(id, p)| p.totals && !before.contains_key(id))
    {
        return Err(ProjectionError::Invalid(format!(
            "invoice {id} is not in the read model"
        )));
    }
    // Revenue: each total's steps, event by event, summed per day and currency.
    let mut moved: HashMap<(NaiveDate, String, &'static str), i64> = HashMap::new();
    for change in run.iter() {
        let Changed::Money { total, value, .. } = &change.what else {
            continue;
        };
        let Some((paid, refunded, currency)) = before.get_mut(&change.invoice) else {
            continue;
        };
        let (last, column) = match total {
            Total::Paid => (paid, "paid"),
            Total::Refunded => (refunded, "refunded"),
        };
        let day = change.at.date_naive();
        *moved.entry((day, currency.clone(), column)).or_default() += *value - *last;
        *last = *value;
    }
    moved.retain(|_, amount| *amount != 0);
    if !moved.is_empty() {
        let moved: Vec<_> = moved.into_iter().collect();
        let amount = |column: &str| -> Vec<i64> {
            moved
                .iter()
                .map(|((_, _, c), a)| if *c == column { *a } else { 0 })
                .collect()
        };
        sqlx::query(&format!(
            "INSERT INTO {revenue} AS r (day, currency, paid, refunded)
             SELECT day, currency, sum(paid), sum(refunded)
               FROM unnest($1::date[], $2::text[], $3::int8[], $4::int8[]) AS u(day, currency, paid, refunded)
              GROUP BY day, currency
             ON CONFLICT (day, currency) DO UPDATE
                SET paid = r.paid + EXCLUDED.paid, refunded = r.refunded + EXCLUDED.refunded",
            revenue = t.get(REVENUE),
        ))
        .bind(moved.iter().map(|((d, _, _), _)| *d).collect::<Vec<_>>())
        .bind(moved.iter().map(|((_, c, _), _)| c.as_str()).collect::<Vec<_>>())
        .bind(amount("paid"))
        .bind(amount("refunded"))
        .execute(&mut *conn)
        .await?;
    }
    run.clear();
    Ok(())
}

/// A running total of an invoice that Stripe's cumulative amounts set.
#[derive(Clone, Copy)]
enum Total {
    Paid,
    Refunded,
}

/// The newest report of one kind for one reference.
#[allow(clippy::too_many_arguments)]
async fn payment(
    conn: &mut PgConnection,
    t: &Tables,
    invoice: Uuid,
    kind: &str,
    reference: &str,
    amount: Option<i64>,
    code: Option<&str>,
    created: Option<i64>,
    at: DateTime<Utc>,
    reconciled: bool,
) -> Result<(), ProjectionError> {
    sqlx::query(&format!(
        "INSERT INTO {} (invoice_id, kind, reference, amount, code, stripe_created, recorded_at, reconciled)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (invoice_id, kind, reference) DO UPDATE
            SET amount = EXCLUDED.amount, code = EXCLUDED.code,
                stripe_created = EXCLUDED.stripe_created, recorded_at = EXCLUDED.recorded_at,
                reconciled = EXCLUDED.reconciled",
        t.get(PAYMENTS)
    ))
    .bind(invoice)
    .bind(kind)
    .bind(reference)
    .bind(amount)
    .bind(code)
    .bind(created)
    .bind(at)
    .bind(reconciled)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Add `amount` to `column` of the invoice's currency on the event's day.
async fn revenue(
    conn: &mut PgConnection,
    t: &Tables,
    invoice: Uuid,
    at: DateTime<Utc>,
    column: &'static str,
    amount: i64,
) -> Result<(), ProjectionError> {
    if amount == 0 {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO {revenue} (day, currency, {column})
         SELECT ($2 AT TIME ZONE 'UTC')::date, currency, $3 FROM {invoices} WHERE id = $1
         ON CONFLICT (day, currency) DO UPDATE SET {column} = {revenue}.{column} + EXCLUDED.{column}",
        revenue = t.get(REVENUE),
        invoices = t.get(INVOICES),
    ))
    .bind(invoice)
    .bind(at)
    .bind(amount)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One invoice as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct InvoiceRow {
    /// The invoice.
    pub id: Uuid,
    /// Who pays.
    pub payer_id: Uuid,
    /// draft, open, paid, void or uncollectible.
    pub status: String,
    /// Lowercase ISO 4217.
    pub currency: String,
    /// The total, in minor units.
    pub amount_due: i64,
    /// Received so far.
    pub amount_paid: i64,
    /// Refunded so far.
    pub amount_refunded: i64,
    /// Still owed: due less paid, never below zero.
    pub amount_remaining: i64,
    /// `partially_paid`, `partially_refunded`, `refunded` or `overdue`
    /// beside the status; otherwise the status itself.
    pub display_status: String,
    /// When payment is due.
    pub due_at: DateTime<Utc>,
    /// Whether `InvoiceBecameOverdue` was recorded.
    pub overdue: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its stream's version this row reflects.
    pub version: i64,
}

/// One line of an invoice.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct LineRow {
    /// The lesson whose enrolment is sold.
    pub lesson_id: Uuid,
    /// What the payer sees.
    pub description: String,
    /// Its price when invoiced, in minor units.
    pub amount_minor: i64,
}

const SELECT: &str = "SELECT i.id, i.payer_id, i.status, i.currency, i.amount_due, i.amount_paid,
        i.amount_refunded, greatest(i.amount_due - i.amount_paid, 0) AS amount_remaining,
        CASE
          WHEN i.status = 'paid' AND i.amount_paid > 0 AND i.amount_refunded >= i.amount_paid THEN 'refunded'
          WHEN i.status = 'paid' AND i.amount_refunded > 0 THEN 'partially_refunded'
          WHEN i.status = 'open' AND i.due_at < now() THEN 'overdue'
          WHEN i.status = 'open' AND i.amount_paid > 0 THEN 'partially_paid'
          ELSE i.status
        END AS display_status,
        i.due_at, i.overdue, i.created_at, i.version
   FROM invoices i";

/// Whose invoices a reader sees.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// Every invoice (admins, auditors).
    All,
    /// Those `payer` pays.
    Payer(Uuid),
    /// Those for lessons `tutor` teaches.
    Tutor(Uuid),
}

const SCOPE: &str = "($1::int = 0
        OR ($1 = 1 AND i.payer_id = $2)
        OR ($1 = 2 AND EXISTS (SELECT 1 FROM invoice_lines l JOIN lessons s ON s.id = l.lesson_id
                               WHERE l.invoice_id = i.id AND s.tutor_id = $2)))";

fn scope_args(scope: Scope) -> (i32, Uuid) {
    match scope {
        Scope::All => (0, Uuid::nil()),
        Scope::Payer(u) => (1, u),
        Scope::Tutor(u) => (2, u),
    }
}

/// A page of invoices in `scope`, newest first, after the cursor `after`
/// (`created_at`, `id`) of the last row of the previous page.
pub async fn page(
    pool: &PgPool,
    scope: Scope,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<InvoiceRow>, sqlx::Error> {
    let (kind, who) = scope_args(scope);
    sqlx::query_as(&format!(
        "{SELECT} WHERE {SCOPE}
           AND ($3::timestamptz IS NULL OR (i.created_at, i.id) < ($3, $4))
         ORDER BY i.created_at DESC, i.id DESC LIMIT $5"
    ))
    .bind(kind)
    .bind(who)
    .bind(after.map(|a| a.0))
    .bind(after.map_or(Uuid::nil(), |a| a.1))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Invoice `id` if `scope` sees it, with its lines.
pub async fn one(
    pool: &PgPool,
    scope: Scope,
    id: Uuid,
) -> Result<Option<(InvoiceRow, Vec<LineRow>)>, sqlx::Error> {
    let (kind, who) = scope_args(scope);
    let row: Option<InvoiceRow> = sqlx::query_as(&format!("{SELECT} WHERE {SCOPE} AND i.id = $3"))
        .bind(kind)
        .bind(who)
        .bind(id)
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let lines = sqlx::query_as(
        "SELECT lesson_id, description, amount_minor FROM invoice_lines WHERE invoice_id = $1 ORDER BY n",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some((row, lines)))
}
