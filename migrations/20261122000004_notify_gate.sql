-- One pending NOTIFY at a time.
--
-- A transaction that has called NOTIFY takes a database-wide lock at commit
-- and holds it until its commit record is flushed, so notifying transactions
-- commit one at a time and lose group commit: measured with
-- `lectern bench store --mode distinct --clients 8`, 3,566 commands/s with a
-- NOTIFY per append against 6,981 without one.
--
-- Readers only need to be woken, not told about each transaction. So an append
-- notifies only if no other transaction is about to (a transaction-scoped
-- advisory lock, never waited for); the others commit without the lock.
-- Runners that found events look again after a short pause
-- (`RunnerConfig::active_poll_interval`), so an append whose NOTIFY was
-- skipped is still read within milliseconds, and polling remains the fallback.
CREATE OR REPLACE FUNCTION events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF pg_try_advisory_xact_lock(hashtext('lectern.notify')::bigint) THEN
        PERFORM pg_notify('lectern_events', '');
    END IF;
    RETURN NULL;
END;
$$;
