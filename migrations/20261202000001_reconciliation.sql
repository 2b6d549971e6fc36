-- Reconciliation against the Stripe API (issue 14 §3).
--
-- A Stripe event fetched by the reconciliation job (its delivery failed) is
-- kept in the inbox like a delivered one, marked as such.
ALTER TABLE stripe_inbox
    ADD COLUMN source text NOT NULL DEFAULT 'webhook'
        CHECK (source IN ('webhook', 'reconciliation'));

-- A payment that reconciliation found, because its webhook never came.
ALTER TABLE payments ADD COLUMN reconciled boolean NOT NULL DEFAULT false;

-- Where the Stripe API disagrees with an invoice: the newest disagreement
-- per PaymentIntent and field (the `billing` projection).
CREATE TABLE billing_discrepancies (
    invoice_id  uuid NOT NULL,
    payment_ref text NOT NULL,
    field       text NOT NULL,
    ours        text NOT NULL,
    theirs      text NOT NULL,
    observed_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (invoice_id, payment_ref, field)
);

-- When each billing job last ran: a process claims a run by moving it on,
-- so that one process runs each.
CREATE TABLE billing_jobs (
    name        text PRIMARY KEY,
    last_run_at timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO billing_jobs (name) VALUES ('reconcile');

-- The inbox worker claims pending rows oldest first: it walks them in that
-- order, instead of sorting every pending row for each claim.
DROP INDEX stripe_inbox_due;
CREATE INDEX stripe_inbox_pending ON stripe_inbox (created, received_at) WHERE status = 'pending';
