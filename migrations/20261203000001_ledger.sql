-- The verifiable ledger (issue 15, docs/audit.md): an RFC 6962 Merkle tree
-- over every event in feed order, `(transaction_id, global_position)`, built
-- by one sealer per cluster after the events commit. Writers take no new
-- lock and nothing is hashed in the writing transaction. Every table here is
-- append-only, like the log.

-- One row per leaf: `seq` is the leaf index, dense from 0, in feed order.
-- The leaf is SHA-256(0x00 ‖ envelope) (ledger/src/envelope.rs). The
-- payload's and metadata's digests are kept only to say which part of a
-- tampered event changed; the leaf and the tree are the proof.
CREATE TABLE ledger_leaves (
    seq             bigint      PRIMARY KEY CHECK (seq >= 0),
    transaction_id  xid8        NOT NULL,
    global_position bigint      NOT NULL UNIQUE,
    leaf_hash       bytea       NOT NULL CHECK (length(leaf_hash) = 32),
    payload_hash    bytea       NOT NULL CHECK (length(payload_hash) = 32),
    metadata_hash   bytea       NOT NULL CHECK (length(metadata_hash) = 32),
    sealed_at       timestamptz NOT NULL DEFAULT now()
);

-- The tree's stored hashes, as Go's sumdb/tlog numbers them: leaf n adds its
-- leaf hash and the roots of the subtrees it completes at consecutive
-- indexes from stored_hash_index(0, n). A row holds a run of consecutive
-- hashes (32 bytes each) from `start_index`; a sealed batch writes one or a
-- few rows. Stored without compression (hashes do not compress), so that a
-- proof reads 32-byte slices without decompressing a row.
CREATE TABLE ledger_hashes (
    start_index bigint PRIMARY KEY CHECK (start_index >= 0),
    hashes      bytea  NOT NULL CHECK (length(hashes) > 0 AND length(hashes) % 32 = 0)
);
ALTER TABLE ledger_hashes ALTER COLUMN hashes SET STORAGE EXTERNAL;

-- Signed checkpoints: C2SP signed notes over "origin\nsize\nbase64(root)\n".
-- Each is also written outside the database (LECTERN_LEDGER_PUBLISH_DIR).
CREATE TABLE ledger_checkpoints (
    size      bigint      PRIMARY KEY CHECK (size > 0),
    root      bytea       NOT NULL CHECK (length(root) = 32),
    note      text        NOT NULL,
    signed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_checkpoints_signed_at ON ledger_checkpoints (signed_at);

-- The verifier keys that have signed checkpoints (`<name>+<id>+<base64>`),
-- so that an export can carry the key; auditors verify with their own copy.
CREATE TABLE ledger_keys (
    public_key    text        PRIMARY KEY,
    first_used_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION ledger_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the % table is append-only (% refused)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER ledger_leaves_append_only BEFORE UPDATE OR DELETE ON ledger_leaves
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_leaves_no_truncate BEFORE TRUNCATE ON ledger_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_hashes_append_only BEFORE UPDATE OR DELETE ON ledger_hashes
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_hashes_no_truncate BEFORE TRUNCATE ON ledger_hashes
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_checkpoints_append_only BEFORE UPDATE OR DELETE ON ledger_checkpoints
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_checkpoints_no_truncate BEFORE TRUNCATE ON ledger_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_keys_append_only BEFORE UPDATE OR DELETE ON ledger_keys
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();

-- Time travel (GET /api/v1/audit/streams/{type}/{id}/state): every snapshot
-- the store takes is also kept here, append-only, so that the state at a
-- version folds from the nearest snapshot at or below it rather than from
-- the first event. `snapshots` keeps only the newest per aggregate.
CREATE TABLE snapshot_history (
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    version        bigint      NOT NULL CHECK (version >= 1),
    payload        jsonb       NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, version)
);

INSERT INTO snapshot_history (aggregate_type, aggregate_id, version, payload, taken_at)
SELECT aggregate_type, aggregate_id, last_sequence, payload, taken_at
  FROM snapshots WHERE last_sequence >= 1;

CREATE FUNCTION snapshots_keep_history() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO snapshot_history (aggregate_type, aggregate_id, version, payload)
    VALUES (NEW.aggregate_type, NEW.aggregate_id, NEW.last_sequence, NEW.payload)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;

CREATE TRIGGER snapshots_keep_history
    AFTER INSERT OR UPDATE ON snapshots
    FOR EACH ROW WHEN (NEW.last_sequence >= 1) EXECUTE FUNCTION snapshots_keep_history();

CREATE TRIGGER snapshot_history_append_only BEFORE UPDATE OR DELETE ON snapshot_history
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
