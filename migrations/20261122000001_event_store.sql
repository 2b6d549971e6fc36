-- The event store: one append-only table for every aggregate.
--
-- It keeps every column of postgres-es 0.5's `events` table, so that crate's
-- PostgresEventRepository can read and write it (its INSERT names its columns,
-- so the extra columns below are filled by their defaults). payload and
-- metadata are jsonb rather than json so that analysts can index and query
-- them; sqlx's serde_json::Value binds as jsonb, which postgres-es also uses.
CREATE TABLE events (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence >= 1),
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    event_id        uuid        NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    global_position bigint      GENERATED ALWAYS AS IDENTITY,
    -- The writing transaction's id. Readers only take rows whose transaction is
    -- older than every transaction still running (see projections/src/log.rs),
    -- which is what makes reading the log gap-free under concurrent writers.
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_global_position ON events (global_position);
CREATE INDEX events_tx_position ON events (transaction_id, global_position);
CREATE INDEX events_recorded_at ON events (recorded_at);

-- The log is append-only: updates and deletes are refused for every role that
-- does not own the table, and for the owner too through this trigger.
CREATE FUNCTION events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the events table is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- Wake readers at once. One notification per statement, not per row: a group
-- commit of fifty events sends one. The payload is empty on purpose: the
-- ordering guarantee comes from the read query, never from the notification.
CREATE FUNCTION events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('lectern_events', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_notify_insert
    AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();

-- Snapshots, one row per aggregate. Column names match postgres-es 0.5 so its
-- snapshot mode can run on the same schema (the stock-store comparison tests
-- and benchmark use that).
CREATE TABLE snapshots (
    aggregate_type   text        NOT NULL,
    aggregate_id     text        NOT NULL,
    last_sequence    bigint      NOT NULL CHECK (last_sequence >= 0),
    current_snapshot bigint      NOT NULL CHECK (current_snapshot >= 0),
    payload          jsonb       NOT NULL,
    taken_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Projection checkpoints. The checkpoint is the pair (last_tx, last_position):
-- resuming by position alone loses events under concurrent writers.
CREATE TABLE projection_checkpoints (
    name                 text        PRIMARY KEY,
    last_tx              xid8        NOT NULL DEFAULT '0',
    last_position        bigint      NOT NULL DEFAULT 0,
    events_applied       bigint      NOT NULL DEFAULT 0,
    status               text        NOT NULL DEFAULT 'idle'
                         CHECK (status IN ('idle', 'running', 'failed', 'rebuilding')),
    last_error           text,
    last_error_at        timestamptz,
    failing_position     bigint,
    rebuild_requested_at timestamptz,
    rebuilt_at           timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
