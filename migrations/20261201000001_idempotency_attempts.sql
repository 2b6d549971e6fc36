-- Which process runs a keyed request, and the attempt's id.
--
-- `owner` is the running process's application name (`lectern/<pid>/<nonce>`,
-- see commands/src/pool.rs): when no connection of that name is left in
-- pg_stat_activity the process is gone, and a retry may take the key over
-- at once instead of waiting for it to be abandoned.
--
-- `attempt` names the request across such takeovers: event metadata carries
-- it (`idempotency_key`), so the retry finds whatever the first attempt
-- committed, and ids the command creates are derived from it, so the retry
-- names the same new aggregate.
ALTER TABLE idempotency_keys
    ADD COLUMN owner   text,
    ADD COLUMN attempt uuid NOT NULL DEFAULT gen_random_uuid();
