-- The PostgreSQL limit for one event: a single-row insert per transaction into
-- Lectern's own `events` table (its five indexes and its NOTIFY trigger), the
-- same columns and RETURNING as an append, with nothing of Lectern around it.
-- A fresh aggregate per transaction, as in `lectern bench store --mode distinct`.
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
VALUES ('PgBench', gen_random_uuid()::text, 1, 'Deposited', '1.0', '{"Deposited":{"amount":1}}',
        '{"actor_id":"bench","actor_role":"system","session_id":"","request_id":"pgbench","correlation_id":"pgbench","causation_id":"","ip":"","user_agent":"pgbench","command":"Deposit"}')
RETURNING sequence, event_id, global_position, transaction_id, recorded_at;
