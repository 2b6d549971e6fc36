-- The PostgreSQL limit for the write-side benchmark: one single-row insert
-- per transaction (pgbench runs each script line in autocommit).
INSERT INTO bench_limit (client, payload) VALUES (:client_id, '{"Deposited":{"amount":1}}');
