-- Stripe webhooks: every verified delivery, keyed by Stripe's event id. The
-- payload (which holds customer data) is kept here, outside the log; the log
-- holds the fact of its receipt (`StripeEventReceived`). A worker claims the
-- pending rows with FOR UPDATE SKIP LOCKED and applies them.
CREATE TABLE stripe_inbox (
    event_id        text PRIMARY KEY,
    event_type      text NOT NULL,
    api_version     text,
    object_id       text,
    created         timestamptz NOT NULL,
    livemode        boolean NOT NULL,
    payload         jsonb NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processed', 'ignored', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    processed_at    timestamptz
);

CREATE INDEX stripe_inbox_due ON stripe_inbox (next_attempt_at) WHERE status = 'pending';
-- A refund's charge is linked to its invoice through its PaymentIntent's delivery.
CREATE INDEX stripe_inbox_object ON stripe_inbox (object_id);
