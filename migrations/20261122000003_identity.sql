-- Identity read models, the audit log, and the outbound-message table.
-- The read models are written only by projections (lectern-projections);
-- the write side's truth is the User and EmailClaim streams in `events`.

CREATE TABLE users (
    id                   uuid PRIMARY KEY,
    email                text NOT NULL,
    display_name         text NOT NULL,
    role                 text NOT NULL,
    status               text NOT NULL,
    must_change_password boolean NOT NULL DEFAULT false,
    locked_until         timestamptz,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    last_login_at        timestamptz,
    version              bigint NOT NULL
);
CREATE INDEX users_created ON users (created_at, id);
CREATE INDEX users_role_status ON users (role, status, created_at, id);

CREATE TABLE sessions (
    id               uuid PRIMARY KEY,
    user_id          uuid NOT NULL,
    started_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    last_refresh_at  timestamptz,
    generation       integer NOT NULL DEFAULT 0,
    ip               text NOT NULL DEFAULT '',
    user_agent       text NOT NULL DEFAULT '',
    revoked_at       timestamptz,
    revoke_reason    text
);
CREATE INDEX sessions_user ON sessions (user_id, started_at);

CREATE TABLE devices (
    user_id        uuid NOT NULL,
    device_id      text NOT NULL,
    name           text NOT NULL,
    platform       text NOT NULL,
    active         boolean NOT NULL DEFAULT false,
    registered_at  timestamptz NOT NULL,
    revoked_at     timestamptz,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE audit_log (
    transaction_id  bigint NOT NULL,
    global_position bigint NOT NULL,
    event_id        uuid NOT NULL,
    recorded_at     timestamptz NOT NULL,
    actor_id        text NOT NULL,
    actor_role      text NOT NULL,
    action          text NOT NULL,
    aggregate_type  text NOT NULL,
    aggregate_id    text NOT NULL,
    sequence        bigint NOT NULL,
    request_id      text NOT NULL,
    ip              text NOT NULL,
    user_agent      text NOT NULL,
    summary         jsonb NOT NULL,
    PRIMARY KEY (transaction_id, global_position)
);
CREATE INDEX audit_log_actor ON audit_log (actor_id, transaction_id, global_position);
CREATE INDEX audit_log_aggregate ON audit_log (aggregate_type, aggregate_id, transaction_id, global_position);
CREATE INDEX audit_log_action ON audit_log (action, transaction_id, global_position);
CREATE INDEX audit_log_time ON audit_log USING brin (recorded_at);

-- Mail waiting to be sent. The body may hold a one-time secret (a reset
-- link), so it is cleared once the message is delivered.
CREATE TABLE outbound_messages (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind        text NOT NULL,
    recipient   text NOT NULL,
    subject     text NOT NULL,
    body        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    sent_at     timestamptz,
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text
);
CREATE INDEX outbound_messages_pending ON outbound_messages (created_at) WHERE sent_at IS NULL;
