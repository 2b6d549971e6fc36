-- The realtime gateway's liveness state, kept outside the log: only status
-- transitions are events (PresenceChanged), never heartbeats.
--
-- realtime_nodes: every `lectern serve` process beats its row every 5 s; a
-- node silent for 10 s is suspect (its users show `reconnecting`), for 15 s
-- dead (its users go `offline`).
CREATE TABLE realtime_nodes (
    node       text PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    beat_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per connection a user's presence rests on: a socket (on a node)
-- or an HTTP heartbeat client (one per session). `client_status` is what the
-- client chose (online, away, busy); `lost_at` is set when a socket was lost
-- without a close, for the reconnect grace.
CREATE TABLE presence_connections (
    id            text PRIMARY KEY,
    user_id       uuid NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('socket', 'http')),
    node          text,
    device        text,
    client_status text NOT NULL DEFAULT 'online' CHECK (client_status IN ('online', 'away', 'busy')),
    connected_at  timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now(),
    lost_at       timestamptz
);
CREATE INDEX presence_connections_user ON presence_connections (user_id);
CREATE INDEX presence_connections_node ON presence_connections (node);

-- The status a user last chose, restored on a reconnect within the window.
CREATE TABLE presence_choices (
    user_id   uuid PRIMARY KEY,
    status    text NOT NULL CHECK (status IN ('online', 'away', 'busy')),
    chosen_at timestamptz NOT NULL DEFAULT now()
);

-- Video leases: a session lives 45 s past its last heartbeat. Heartbeats
-- renew the lease here; the session's start, takeover, end and expiry are
-- events of the user's Playback stream.
CREATE TABLE video_leases (
    session_id  uuid PRIMARY KEY,
    user_id     uuid NOT NULL,
    lesson_id   uuid NOT NULL,
    device_id   text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    beat_at     timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    position_ms bigint NOT NULL DEFAULT 0,
    watched_ms  bigint NOT NULL DEFAULT 0
);
CREATE INDEX video_leases_expiry ON video_leases (expires_at);

-- Read models (projections from the log).
CREATE TABLE presence (
    user_id    uuid PRIMARY KEY,
    status     text NOT NULL,
    changed_at timestamptz NOT NULL,
    cause      text NOT NULL
);

CREATE TABLE video_sessions (
    session_id  uuid PRIMARY KEY,
    user_id     uuid NOT NULL,
    lesson_id   uuid NOT NULL,
    device_id   text NOT NULL,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    end_reason  text,
    watched_ms  bigint NOT NULL DEFAULT 0,
    position_ms bigint NOT NULL DEFAULT 0
);
CREATE INDEX video_sessions_user ON video_sessions (user_id, started_at DESC);

CREATE TABLE watch_time (
    user_id    uuid NOT NULL,
    lesson_id  uuid NOT NULL,
    watched_ms bigint NOT NULL DEFAULT 0,
    sessions   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, lesson_id)
);

CREATE TABLE analytics.watch_time_daily (
    day        date NOT NULL,
    lesson_id  uuid NOT NULL,
    watched_ms bigint NOT NULL DEFAULT 0,
    sessions   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, lesson_id)
);
