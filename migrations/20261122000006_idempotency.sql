-- Answers to POST requests sent with an `Idempotency-Key` (DESIGN "API
-- conventions"), so that a client retrying after a lost answer gets the same
-- answer instead of running the command twice. One row per (caller, key),
-- claimed before the command runs; a row older than 24 hours, or one whose
-- request never finished (the process died), may be claimed again.
--
-- This is request bookkeeping, not domain state: the command's own events
-- are the record of what happened, so it is a plain table, not the log.
CREATE TABLE idempotency_keys (
    scope        text        NOT NULL,
    key          text        NOT NULL,
    -- SHA-256 of the method, path, query, content type and body.
    fingerprint  bytea       NOT NULL,
    -- NULL while the request runs.
    status       smallint,
    content_type text,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
