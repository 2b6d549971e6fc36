-- Classroom read models: lessons and enrolments, whiteboards (state and
-- operation log), chat messages and per-recipient deliveries. Written only
-- by the lessons, boards and chat projections.

CREATE TABLE lessons (
    id                 uuid PRIMARY KEY,
    tutor_id           uuid NOT NULL,
    title              text NOT NULL,
    description        text NOT NULL,
    starts_at          timestamptz NOT NULL,
    duration_minutes   integer NOT NULL,
    capacity           integer NOT NULL,
    price_amount_minor bigint NOT NULL,
    price_currency     text NOT NULL,
    status             text NOT NULL,
    enrolled_count     integer NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    version            bigint NOT NULL
);
-- Keyset paging is by (starts_at, id), under each filter.
CREATE INDEX lessons_starts ON lessons (starts_at, id);
CREATE INDEX lessons_tutor ON lessons (tutor_id, starts_at, id);
CREATE INDEX lessons_status ON lessons (status, starts_at, id);

CREATE TABLE enrollments (
    lesson_id   uuid NOT NULL,
    student_id  uuid NOT NULL,
    enrolled_by uuid NOT NULL,
    enrolled_at timestamptz NOT NULL,
    PRIMARY KEY (lesson_id, student_id)
);
CREATE INDEX enrollments_student ON enrollments (student_id, lesson_id);

CREATE TABLE boards (
    id         uuid PRIMARY KEY,
    policy     text NOT NULL DEFAULT 'last_write_wins',
    version    bigint NOT NULL DEFAULT 0,
    lamport    bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL
);

CREATE TABLE board_elements (
    board_id        uuid NOT NULL,
    element_id      text NOT NULL,
    data            jsonb NOT NULL,
    updated_version bigint NOT NULL,
    PRIMARY KEY (board_id, element_id)
);

CREATE TABLE board_ops (
    board_id       uuid NOT NULL,
    server_version bigint NOT NULL,
    client_id      text NOT NULL,
    op_id          text NOT NULL,
    user_id        uuid NOT NULL,
    kind           text NOT NULL,
    element_id     text,
    data           jsonb NOT NULL,
    client_lamport bigint NOT NULL,
    lamport        bigint NOT NULL,
    target_version bigint,
    -- What the op did to each element, for undo and redo:
    -- [{element_id, before, after}].
    changes        jsonb NOT NULL,
    recorded_at    timestamptz NOT NULL,
    PRIMARY KEY (board_id, server_version)
);

CREATE TABLE messages (
    lesson_id         uuid NOT NULL,
    seq               bigint NOT NULL,
    message_id        uuid NOT NULL,
    sender_id         uuid NOT NULL,
    client_message_id text NOT NULL,
    text              text NOT NULL,
    sent_at           timestamptz NOT NULL,
    PRIMARY KEY (lesson_id, seq)
);

CREATE TABLE deliveries (
    recipient_id uuid NOT NULL,
    lesson_id    uuid NOT NULL,
    seq          bigint NOT NULL,
    status       text NOT NULL,
    sent_at      timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (recipient_id, lesson_id, seq)
);
CREATE INDEX deliveries_pending ON deliveries (recipient_id, sent_at, lesson_id, seq) WHERE status = 'sent';
CREATE INDEX deliveries_expiry ON deliveries (sent_at) WHERE status = 'sent';
