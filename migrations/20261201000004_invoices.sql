-- Billing read models, kept by the `billing` projection from the Invoice
-- streams. Money is integer minor units of a lowercase ISO 4217 currency.
CREATE TABLE invoices (
    id              uuid PRIMARY KEY,
    payer_id        uuid NOT NULL,
    status          text NOT NULL,
    currency        text NOT NULL,
    amount_due      bigint NOT NULL DEFAULT 0,
    amount_paid     bigint NOT NULL DEFAULT 0,
    amount_refunded bigint NOT NULL DEFAULT 0,
    due_at          timestamptz NOT NULL,
    overdue         boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    version         bigint NOT NULL
);
CREATE INDEX invoices_payer ON invoices (payer_id, created_at DESC, id DESC);
CREATE INDEX invoices_created ON invoices (created_at DESC, id DESC);

CREATE TABLE invoice_lines (
    invoice_id   uuid NOT NULL,
    n            integer NOT NULL,
    lesson_id    uuid NOT NULL,
    description  text NOT NULL,
    amount_minor bigint NOT NULL,
    PRIMARY KEY (invoice_id, n)
);
CREATE INDEX invoice_lines_lesson ON invoice_lines (lesson_id);

-- What Stripe reported per PaymentIntent (payments, failures) and per charge
-- (refunds): the newest report of each.
CREATE TABLE payments (
    invoice_id     uuid NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('started', 'payment', 'failure', 'refund')),
    reference      text NOT NULL,
    amount         bigint,
    code           text,
    stripe_created bigint,
    recorded_at    timestamptz NOT NULL,
    PRIMARY KEY (invoice_id, kind, reference)
);

CREATE TABLE analytics.revenue_daily (
    day      date NOT NULL,
    currency text NOT NULL,
    invoiced bigint NOT NULL DEFAULT 0,
    paid     bigint NOT NULL DEFAULT 0,
    refunded bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, currency)
);
