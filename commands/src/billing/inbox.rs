//! Applying Stripe's deliveries: the worker claims pending `stripe_inbox`
//! rows (`FOR UPDATE SKIP LOCKED`, so any number of processes share the
//! work) and maps each type to an invoice command. The commands carry
//! Stripe's cumulative amounts and `created` time, so late, duplicated and
//! out-of-order deliveries converge. A row that fails for a reason that may
//! pass (the invoice it names is not known yet, the store is down) is
//! retried with backoff, its error visible in `last_error`; one the
//! invoice refuses is `failed` at once. Types Lectern does not use are
//! `ignored`.

use std::time::Duration;

use lectern_domain::billing::invoice::InvoiceCommand;
use lectern_domain::classroom::values::Currency;
use lectern_domain::EventMetadata;
use serde_json::Value;
use uuid::Uuid;

use super::{BillingError, BillingService};

/// What became of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its command ran.
    Processed,
    /// A type, or an object, Lectern does not act on.
    Ignored(String),
    /// It may pass later: try again.
    Retry(String),
    /// It will not pass: the invoice refused it.
    Failed(String),
}

/// Which rows a claim takes.
enum Claim<'a> {
    /// Up to this many due rows, the oldest first.
    Due(i64),
    /// These, if they are due and no other process holds them.
    Kept(&'a [String]),
}

/// Attempts before a retried row is given up as `failed`.
pub const MAX_ATTEMPTS: i32 = 12;

/// The wait before attempt `n + 1`: 1 s, doubling, at most an hour.
pub fn backoff(attempts: i32) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 12)).min(Duration::from_secs(3600))
}

fn text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

fn currency(object: &Value) -> Result<Currency, Outcome> {
    object["currency"]
        .as_str()
        .and_then(|c| Currency::parse(c).ok())
        .ok_or_else(|| Outcome::Failed("the object has no valid currency".to_owned()))
}

fn amount(object: &Value, field: &str) -> Result<i64, Outcome> {
    object[field]
        .as_i64()
        .filter(|a| *a >= 0)
        .ok_or_else(|| Outcome::Failed(format!("the object has no valid {field}")))
}

impl BillingService {
    /// The invoice a Stripe object names in its metadata (Lectern sets
    /// `invoice_id` on every PaymentIntent it creates), or, for a charge,
    /// the one its PaymentIntent named when it was delivered.
    async fn linked_invoice(&self, object: &Value) -> Result<Option<Uuid>, BillingError> {
        if let Some(id) = object["metadata"]["invoice_id"].as_str() {
            return Ok(id.parse().ok());
        }
        let Some(intent) = text(&object["payment_intent"]) else {
            return Ok(None);
        };
        let named: Option<String> = sqlx::query_scalar(
            "SELECT payload->'data'->'object'->'metadata'->>'invoice_id' FROM stripe_inbox
              WHERE object_id = $1 AND event_type LIKE 'payment_intent.%'
              ORDER BY created DESC LIMIT 1",
        )
        .bind(&intent)
        .fetch_optional(&self.pool)
        .await?
        .flatten();
        Ok(named.and_then(|id| id.parse().ok()))
    }

    /// The command a delivery of `event_type` with `payload` maps to, on
    /// which invoice; or what to do with the row instead.
    async fn command_for(
        &self,
        event_type: &str,
        payload: &Value,
        reconciled: bool,
    ) -> Result<(Uuid, InvoiceCommand), Outcome> {
        let object = &payload["data"]["object"];
        let created = payload["created"].as_i64().unwrap_or_default();
        let reference = text(&object["id"]).unwrap_or_default();
        let invoice = || async {
            match self.linked_invoice(object).await {
                Ok(Some(id)) => Ok(id),
                Ok(None) if event_type == "charge.refunded" => Err(Outcome::Retry(
                    "the charge's PaymentIntent has not been delivered yet".to_owned(),
                )),
                Ok(None) => Err(Outcome::Ignored(
                    "no Lectern invoice_id in the object's metadata".to_owned(),
                )),
                Err(e) => Err(Outcome::Retry(e.to_string())),
            }
        };
        let command = match event_type {
            "payment_intent.succeeded" => InvoiceCommand::ApplyPayment {
                payment_ref: reference,
                amount_received: amount(object, "amount_received")?,
                currency: currency(object)?,
                created,
                reconciled,
            },
            "invoice.payment_succeeded" => InvoiceCommand::ApplyPayment {
                payment_ref: reference,
                amount_received: amount(object, "amount_paid")?,
                currency: currency(object)?,
                created,
                reconciled,
            },
            "payment_intent.payment_failed" => InvoiceCommand::RecordPaymentFailure {
                payment_ref: reference,
                code: text(&object["last_payment_error"]["code"]),
                created,
            },
            "invoice.payment_failed" => InvoiceCommand::RecordPaymentFailure {
                payment_ref: reference,
                code: text(&object["last_finalization_error"]["code"]),
                created,
            },
            "charge.refunded" => InvoiceCommand::ApplyRefund {
                charge_ref: reference,
                payment_ref: text(&object["payment_intent"]),
                amount_refunded: amount(object, "amount_refunded")?,
                currency: currency(object)?,
                created,
            },
            other => return Err(Outcome::Ignored(format!("{other} is not applied"))),
        };
        Ok((invoice().await?, command))
    }

    /// Apply one delivery (`reconciled`: fetched by reconciliation, not
    /// delivered).
    pub async fn apply(
        &self,
        stripe_event_id: &str,
        event_type: &str,
        payload: &Value,
        reconciled: bool,
    ) -> Outcome {
        let (invoice, command) = match self.command_for(event_type, payload, reconciled).await {
            Ok(c) => c,
            Err(outcome) => return outcome,
        };
        let meta = EventMetadata {
            causation_id: stripe_event_id.to_owned(),
            ..EventMetadata::system("")
        };
        match self.execute(invoice, command, &meta).await {
            Ok(_) => Outcome::Processed,
            Err(BillingError::Invoice(
                lectern_domain::billing::invoice::InvoiceError::NotFound,
            )) => Outcome::Retry(format!("invoice {invoice} does not exist (yet)")),
            Err(BillingError::Invoice(refused)) => Outcome::Failed(refused.to_string()),
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    /// Claim up to `limit` due rows, the oldest first, and apply them, all
    /// at once (the invoices' appends share statements; the order of rows
    /// does not matter, as newest wins); how many were claimed. This is the
    /// sweep: it finds every due row, those other processes kept and those
    /// waiting for a retry among them.
    pub async fn process_inbox(&self, limit: i64) -> Result<usize, BillingError> {
        self.claim_and_apply(Claim::Due(limit)).await
    }

    /// Claim the rows of up to `limit` of the deliveries this process kept
    /// since it last looked, by their ids, and apply them as
    /// [`Self::process_inbox`] does; how many ids were taken (rows another
    /// process claimed meanwhile are skipped). The sweep's scan walks the
    /// pending rows' index from its oldest entry, over the entries of every
    /// row applied since the table was last vacuumed (about 2 ms a claim at
    /// 2,000 webhooks/s in `lectern-bench webhooks`); a claim by ids looks
    /// up each row by its key.
    pub async fn process_kept(&self, limit: usize) -> Result<usize, BillingError> {
        let ids: Vec<String> = {
            let Ok(mut kept) = self.kept.lock() else {
                return Ok(0);
            };
            let n = kept.len().min(limit);
            kept.drain(..n).collect()
        };
        if ids.is_empty() {
            return Ok(0);
        }
        self.claim_and_apply(Claim::Kept(&ids)).await?;
        Ok(ids.len())
    }

    async fn claim_and_apply(&self, claim: Claim<'_>) -> Result<usize, BillingError> {
        let mut tx = self.pool.begin().await?;
        // The invoice commands commit durably on their own; should a crash
        // lose this transaction's marks, the rows are applied again, which
        // changes nothing (newest wins). So this commit need not wait for
        // the disk.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        let rows: Vec<(String, String, Value, i32, String)> = match claim {
            Claim::Due(limit) => sqlx::query_as(
                "SELECT event_id, event_type, payload, attempts, source FROM stripe_inbox
                  WHERE status = 'pending' AND next_attempt_at <= now()
                  ORDER BY created, received_at LIMIT $1
                    FOR UPDATE SKIP LOCKED",
            )
            .bind(limit),
            // Planned for its ids each time, as the mark below is (see there).
            Claim::Kept(ids) => sqlx::query_as(
                "SELECT event_id, event_type, payload, attempts, source FROM stripe_inbox
                  WHERE event_id = ANY($1) AND status = 'pending' AND next_attempt_at <= now()
                    FOR UPDATE SKIP LOCKED",
            )
            .persistent(false)
            .bind(ids),
        }
        .fetch_all(&mut *tx)
        .await?;
        let outcomes =
            futures::future::join_all(rows.iter().map(|(id, event_type, payload, _, source)| {
                self.apply(id, event_type, payload, source == "reconciliation")
            }))
            .await;
        let (mut ids, mut statuses, mut errors, mut waits) = (
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
        );
        for ((id, event_type, _, attempts, _), outcome) in rows.iter().zip(outcomes) {
            let (status, error, wait) = match &outcome {
                Outcome::Processed => ("processed", None, Duration::ZERO),
                Outcome::Ignored(why) => ("ignored", Some(why.clone()), Duration::ZERO),
                Outcome::Failed(why) => ("failed", Some(why.clone()), Duration::ZERO),
                Outcome::Retry(why) if attempts + 1 >= MAX_ATTEMPTS => {
                    ("failed", Some(why.clone()), Duration::ZERO)
                }
                Outcome::Retry(why) => ("pending", Some(why.clone()), backoff(*attempts)),
            };
            if let Outcome::Retry(why) | Outcome::Failed(why) = &outcome {
                tracing::warn!(stripe_event = %id, event_type = %event_type, error = %why, "a Stripe delivery did not apply");
            }
            metrics::counter!("lectern_stripe_inbox_total", "outcome" => status).increment(1);
            ids.push(id.as_str());
            statuses.push(status);
            errors.push(error);
            waits.push(wait.as_secs_f64());
        }
        sqlx::query(
            "UPDATE stripe_inbox AS i
                SET status = u.status, last_error = u.error, attempts = i.attempts + 1,
                    next_attempt_at = now() + make_interval(secs => u.wait),
                    processed_at = CASE WHEN u.status = 'pending' THEN NULL ELSE now() END
               FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[]) AS u(id, status, error, wait)
              WHERE i.event_id = ANY($1) AND i.event_id = u.id",
        )
        // Planned for its ids each time (an unnamed statement): a generic
        // plan cached while the inbox was nearly empty (a new deployment,
        // before autovacuum has analyzed it) scans the whole table and
        // compares each row with every id, which took 150 to 450 ms a batch
        // at 66,000 rows in `lectern-bench webhooks`.
        .persistent(false)
        .bind(&ids)
        .bind(&statuses)
        .bind(&errors)
        .bind(&waits)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.len())
    }

    /// Record `InvoiceBecameOverdue` for open invoices past their due date
    /// (from the read model; the invoice itself decides, once).
    pub async fn check_overdue(&self) -> Result<usize, BillingError> {
        let due: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM invoices
              WHERE status = 'open' AND NOT overdue AND due_at < now() AND amount_paid < amount_due
              LIMIT 500",
        )
        .fetch_all(&self.pool)
        .await?;
        let now = chrono::Utc::now();
        let meta = EventMetadata::system("");
        let mut recorded = 0;
        for id in due {
            let committed = self
                .execute(id, InvoiceCommand::CheckOverdue { now }, &meta)
                .await?;
            recorded += usize::from(!committed.events.is_empty());
        }
        Ok(recorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_an_hour() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(12), Duration::from_secs(3600));
        assert_eq!(backoff(40), Duration::from_secs(3600));
    }
}
