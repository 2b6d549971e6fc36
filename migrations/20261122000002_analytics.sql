-- Analysts query the analytics schema with plain SQL. Its tables are read
-- models written only by projection workers.
CREATE SCHEMA IF NOT EXISTS analytics;

-- Events per day, aggregate type and event type.
CREATE TABLE analytics.daily_event_counts (
    day            date   NOT NULL,
    aggregate_type text   NOT NULL,
    event_type     text   NOT NULL,
    events         bigint NOT NULL,
    PRIMARY KEY (day, aggregate_type, event_type)
);
