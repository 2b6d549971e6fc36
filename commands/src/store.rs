//! Reading and appending aggregate streams in the `events` table.
//!
//! Two round trips per command at most: [`PgEventStore::load`] reads the
//! snapshot and the events after it in one query, and [`PgEventStore::append`]
//! writes all of a batch's events, and the snapshot when one is due, in one
//! statement (or, with background snapshots, the snapshot goes in a statement
//! of its own that no command waits for). The primary key `(aggregate_type, aggregate_id, sequence)`
//! refuses a stale writer.
//!
//! Past 500 lines on purpose: loading, appending, multi-stream appends and
//! snapshots share one SQL shape and one row-to-envelope path, and split
//! apart they would each need the other's private helpers.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent};
use lectern_domain::{EventMetadata, Position};
use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgExecutor, PgPool, Row};
use uuid::Uuid;

use crate::error::StoreError;

/// An aggregate's state as loaded from the store.
#[derive(Debug, Clone, Default)]
pub struct Loaded<A> {
    /// The state after every stored event.
    pub aggregate: A,
    /// The sequence number of the last stored event (0 for a new aggregate).
    pub version: u64,
    /// The sequence number the stored snapshot covers (0 for none).
    pub snapshot_version: u64,
}

/// An event as it was stored.
#[derive(Debug, Clone)]
pub struct RecordedEvent<E> {
    /// The event id.
    pub event_id: Uuid,
    /// The aggregate instance.
    pub aggregate_id: String,
    /// The event's sequence number in its stream.
    pub sequence: u64,
    /// The position in the log.
    pub position: Position,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The event payload.
    pub payload: E,
    /// The event metadata.
    pub metadata: EventMetadata,
}

/// One event to append, with the metadata of the command that caused it.
pub struct NewEvent<'a, E> {
    /// The event payload.
    pub payload: &'a E,
    /// The event metadata.
    pub metadata: &'a EventMetadata,
}

/// The event store for aggregates of type `A`.
pub struct PgEventStore<A> {
    pool: PgPool,
    snapshot_every: Option<u64>,
    background_snapshots: bool,
    upcasters: Arc<Vec<Box<dyn EventUpcaster>>>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for PgEventStore<A> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            snapshot_every: self.snapshot_every,
            background_snapshots: self.background_snapshots,
            upcasters: Arc::clone(&self.upcasters),
            _aggregate: PhantomData,
        }
    }
}

const LOAD: &str = "
SELECT 0 AS kind, last_sequence AS sequence, '' AS event_type, '' AS event_version, payload
  FROM snapshots
 WHERE aggregate_type = $1 AND aggregate_id = $2 AND $3
UNION ALL
SELECT 1, sequence, event_type, event_version, payload
  FROM events
 WHERE aggregate_type = $1 AND aggregate_id = $2
   AND sequence > CASE WHEN $3 THEN coalesce(
         (SELECT last_sequence FROM snapshots WHERE aggregate_type = $1 AND aggregate_id = $2), 0)
       ELSE 0 END
 ORDER BY kind, sequence";

/// `LOAD` for several aggregates of one type, each one's rows together.
const LOAD_MANY: &str = "
SELECT 0 AS kind, aggregate_id, last_sequence AS sequence, '' AS event_type, '' AS event_version, payload
  FROM snapshots
 WHERE aggregate_type = $1 AND aggregate_id = ANY($2) AND $3
UNION ALL
SELECT 1, e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload
  FROM events e
 WHERE e.aggregate_type = $1 AND e.aggregate_id = ANY($2)
   AND e.sequence > CASE WHEN $3 THEN coalesce(
         (SELECT s.last_sequence FROM snapshots s
           WHERE s.aggregate_type = $1 AND s.aggregate_id = e.aggregate_id), 0)
       ELSE 0 END
 ORDER BY aggregate_id, kind, sequence";

/// The newest kept snapshot at or below a version.
const KEPT_SNAPSHOT_AT: &str = "
SELECT version FROM snapshot_history
 WHERE aggregate_type = $1 AND aggregate_id = $2 AND version <= $3
 ORDER BY version DESC LIMIT 1";

/// A kept snapshot, in `LOAD`'s shape.
const KEPT_SNAPSHOT: &str = "
SELECT 0 AS kind, version AS sequence, '' AS event_type, '' AS event_version, payload
  FROM snapshot_history WHERE aggregate_type = $1 AND aggregate_id = $2 AND version = $3";

/// Events `$3 < sequence <= $4`, in `LOAD`'s shape.
const EVENTS_BETWEEN: &str = "
SELECT 1 AS kind, sequence, event_type, event_version, payload
  FROM events
 WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 AND sequence <= $4
 ORDER BY sequence";

const LOAD_EVENTS: &str = "
SELECT event_id, aggregate_id, sequence, transaction_id::text::bigint AS tx, global_position,
       recorded_at, event_type, event_version, payload, metadata
  FROM events
 WHERE aggregate_type = $1 AND aggregate_id = $2
 ORDER BY sequence";

const LOAD_EVENTS_OF_ATTEMPT: &str = "
SELECT event_id, aggregate_id, sequence, transaction_id::text::bigint AS tx, global_position,
       recorded_at, event_type, event_version, payload, metadata
  FROM events
 WHERE aggregate_type = $1 AND aggregate_id = $2
   AND metadata->>'idempotency_key' = $3 AND metadata->>'command' = $4
 ORDER BY sequence";

/// One statement: the events (all or none, by the primary key) and, when one
/// is due, the snapshot. The snapshot only moves forward.
const APPEND: &str = "
WITH appended AS (
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
    SELECT $1, $2, u.seq, u.et, u.ev, u.p, u.m
      FROM unnest($3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[]) AS u(seq, et, ev, p, m)
    RETURNING sequence, event_id, global_position, transaction_id::text::bigint AS tx, recorded_at
), snapshot AS (
    INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
    SELECT $1, $2, $8, $8, $9 WHERE $9::jsonb IS NOT NULL
    ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
       SET last_sequence = EXCLUDED.last_sequence, current_snapshot = EXCLUDED.current_snapshot,
           payload = EXCLUDED.payload, taken_at = now()
     WHERE snapshots.last_sequence < EXCLUDED.last_sequence
)
SELECT sequence, event_id, global_position, tx, recorded_at FROM appended ORDER BY sequence";

/// The events alone, when no snapshot goes with them: the statement the
/// committer sends nearly every time, so it carries nothing it does not need
/// (no snapshot branch for the planner to consider, no sort).
const APPEND_EVENTS: &str = "
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT $1, $2, u.seq, u.et, u.ev, u.p, u.m
  FROM unnest($3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[]) AS u(seq, et, ev, p, m)
RETURNING sequence, event_id, global_position, transaction_id::text::bigint AS tx, recorded_at";

/// A snapshot on its own; it too only moves forward.
const SAVE_SNAPSHOT: &str = "
INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
VALUES ($1, $2, $3, $3, $4::text::jsonb)
ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
   SET last_sequence = EXCLUDED.last_sequence, current_snapshot = EXCLUDED.current_snapshot,
       payload = EXCLUDED.payload, taken_at = now()
 WHERE snapshots.last_sequence < EXCLUDED.last_sequence";

/// Several streams' events in one statement: all of them or none. Written
/// by [`append_streams_sql`]; the streams' rows are `u`, and a `WHERE` on
/// them goes between the two parts.
const APPEND_STREAMS: [&str; 2] = [
    "
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT $1, u.id, u.seq, u.et, u.ev, u.p, u.m
  FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[]) AS u(id, seq, et, ev, p, m)",
    "
RETURNING aggregate_id, sequence, event_id, global_position, transaction_id::text::bigint AS tx, recorded_at",
];

/// The statement that appends [`StreamColumns`] (bound as `$1` to `$7`):
/// `with` before it (a `WITH` clause whose parameters start at `$8`, or
/// nothing), and `only` as the condition a stream's rows `u` must meet to be
/// appended (or nothing, for all of them).
pub(crate) fn append_streams_sql(with: &str, only: &str) -> String {
    let condition = if only.is_empty() {
        String::new()
    } else {
        format!("\n WHERE {only}")
    };
    format!(
        "{with}{}{condition}{}",
        APPEND_STREAMS[0], APPEND_STREAMS[1]
    )
}

impl<A> PgEventStore<A>
where
    A: Aggregate,
{
    /// A store without snapshots.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            snapshot_every: None,
            background_snapshots: false,
            upcasters: Arc::new(Vec::new()),
            _aggregate: PhantomData,
        }
    }

    /// Take a snapshot whenever a commit crosses a multiple of `every` events.
    pub fn with_snapshots(mut self, every: u64) -> Self {
        self.snapshot_every = (every > 0).then_some(every);
        self
    }

    /// Have [`crate::CommandBus`] write snapshots apart from the append,
    /// off the command path, instead of in the append's statement: for
    /// aggregates whose snapshot is large enough to hold up the commands
    /// committed with it.
    pub fn with_background_snapshots(mut self) -> Self {
        self.background_snapshots = true;
        self
    }

    /// Whether snapshots are written apart from the append.
    pub fn background_snapshots(&self) -> bool {
        self.background_snapshots
    }

    /// Upcasters applied, in order, to stored events before deserialisation.
    pub fn with_upcasters(mut self, upcasters: Vec<Box<dyn EventUpcaster>>) -> Self {
        self.upcasters = Arc::new(upcasters);
        self
    }

    /// The pool this store writes through.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The snapshot interval, if snapshots are on.
    pub fn snapshot_every(&self) -> Option<u64> {
        self.snapshot_every
    }

    fn decode_event(
        &self,
        aggregate_id: &str,
        sequence: u64,
        event_type: String,
        event_version: String,
        payload: Value,
    ) -> Result<A::Event, StoreError> {
        let mut serialized = SerializedEvent {
            aggregate_id: aggregate_id.to_owned(),
            sequence: usize::try_from(sequence).unwrap_or(usize::MAX),
            aggregate_type: A::TYPE.to_owned(),
            event_type,
            event_version,
            payload,
            metadata: Value::Null,
        };
        for upcaster in self.upcasters.iter() {
            if upcaster.can_upcast(&serialized.event_type, &serialized.event_version) {
                serialized = upcaster.upcast(serialized);
            }
        }
        Ok(serde_json::from_value(serialized.payload)?)
    }

    /// The aggregate's current state: the snapshot and the events after it, in
    /// one query. A snapshot that no longer deserialises (the aggregate's shape
    /// changed) is ignored and the stream replayed from the start.
    pub async fn load(&self, aggregate_id: &str) -> Result<Loaded<A>, StoreError> {
        let use_snapshot = self.snapshot_every.is_some();
        match self.load_with(aggregate_id, use_snapshot).await {
            Err(StoreError::Serialization(e)) if use_snapshot => {
                tracing::warn!(aggregate_type = A::TYPE, aggregate_id, error = %e,
                    "snapshot unreadable; replaying from the first event");
                self.load_with(aggregate_id, false).await
            }
            other => other,
        }
    }

    /// The current state of each of `aggregate_ids`, in that order, as
    /// [`PgEventStore::load`] would give it, in one query. An aggregate whose
    /// snapshot no longer deserialises, or that is asked for twice, is loaded
    /// again alone.
    pub async fn load_many(&self, aggregate_ids: &[&str]) -> Result<Vec<Loaded<A>>, StoreError> {
        let use_snapshot = self.snapshot_every.is_some();
        let rows = sqlx::query(LOAD_MANY)
            .bind(A::TYPE)
            .bind(aggregate_ids)
            .bind(use_snapshot)
            .fetch_all(&self.pool)
            .await?;
        let mut by_id: HashMap<String, Vec<sqlx::postgres::PgRow>> = HashMap::new();
        for row in rows {
            by_id
                .entry(row.try_get("aggregate_id")?)
                .or_default()
                .push(row);
        }
        let mut loaded = Vec::with_capacity(aggregate_ids.len());
        let mut folded = std::collections::HashSet::new();
        for id in aggregate_ids {
            if !folded.insert(*id) {
                // Asked twice: its rows went to the first.
                loaded.push(self.load(id).await?);
                continue;
            }
            let rows = by_id.remove(*id).unwrap_or_default();
            loaded.push(match self.fold(id, rows) {
                Err(StoreError::Serialization(_)) if use_snapshot => self.load(id).await?,
                other => other?,
            });
        }
        Ok(loaded)
    }

    /// The aggregate's current version (its last sequence number; 0 for a
    /// stream with no events): one primary-key lookup.
    pub async fn version(&self, aggregate_id: &str) -> Result<u64, StoreError> {
        let version = sqlx::query_scalar!(
            r#"SELECT coalesce(max(sequence), 0) AS "version!" FROM events
                WHERE aggregate_type = $1 AND aggregate_id = $2"#,
            A::TYPE,
            aggregate_id,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(version).unwrap_or(0))
    }

    /// The aggregate's state after event `version`, folded by its own `apply`
    /// from the newest snapshot kept at or below that version (all
    /// snapshots are kept in `snapshot_history`), or from its first event
    /// with `use_snapshots` false or when the snapshot no longer
    /// deserialises. `version` in the answer is the last event folded, lower
    /// than asked when the stream is shorter.
    pub async fn load_at(
        &self,
        aggregate_id: &str,
        version: u64,
        use_snapshots: bool,
    ) -> Result<Loaded<A>, StoreError> {
        match self
            .load_at_with(aggregate_id, version, use_snapshots)
            .await
        {
            Err(StoreError::Serialization(e)) if use_snapshots => {
                tracing::warn!(aggregate_type = A::TYPE, aggregate_id, error = %e,
                    "a kept snapshot is unreadable; replaying from the first event");
                self.load_at_with(aggregate_id, version, false).await
            }
            other => other,
        }
    }

    async fn load_at_with(
        &self,
        aggregate_id: &str,
        version: u64,
        use_snapshots: bool,
    ) -> Result<Loaded<A>, StoreError> {
        let version = i64::try_from(version).unwrap_or(i64::MAX);
        let snapshot: Option<i64> = if use_snapshots {
            sqlx::query_scalar(KEPT_SNAPSHOT_AT)
                .bind(A::TYPE)
                .bind(aggregate_id)
                .bind(version)
                .fetch_optional(&self.pool)
                .await?
        } else {
            None
        };
        // The snapshot and the events after it on two connections at once:
        // PostgreSQL renders both as text, and a large snapshot costs as
        // much as the events do.
        let from = snapshot.unwrap_or(0);
        let (mut rows, events) = tokio::try_join!(
            async {
                match snapshot {
                    Some(v) => {
                        sqlx::query(KEPT_SNAPSHOT)
                            .bind(A::TYPE)
                            .bind(aggregate_id)
                            .bind(v)
                            .fetch_all(&self.pool)
                            .await
                    }
                    None => Ok(Vec::new()),
                }
            },
            sqlx::query(EVENTS_BETWEEN)
                .bind(A::TYPE)
                .bind(aggregate_id)
                .bind(from)
                .bind(version)
                .fetch_all(&self.pool),
        )?;
        rows.extend(events);
        self.fold(aggregate_id, rows)
    }

    /// The aggregate's state replayed from its first event, ignoring snapshots.
    pub async fn load_from_events(&self, aggregate_id: &str) -> Result<Loaded<A>, StoreError> {
        self.load_with(aggregate_id, false).await
    }

    async fn load_with(
        &self,
        aggregate_id: &str,
        use_snapshot: bool,
    ) -> Result<Loaded<A>, StoreError> {
        let rows = sqlx::query(LOAD)
            .bind(A::TYPE)
            .bind(aggregate_id)
            .bind(use_snapshot)
            .fetch_all(&self.pool)
            .await?;
        self.fold(aggregate_id, rows)
    }

    /// Fold rows of `LOAD`'s shape: a snapshot (kind 0) then events (kind 1).
    fn fold(
        &self,
        aggregate_id: &str,
        rows: Vec<sqlx::postgres::PgRow>,
    ) -> Result<Loaded<A>, StoreError> {
        let mut loaded = Loaded {
            aggregate: A::default(),
            version: 0,
            snapshot_version: 0,
        };
        for row in rows {
            let kind: i32 = row.try_get("kind")?;
            let sequence = u64::try_from(row.try_get::<i64, _>("sequence")?).unwrap_or(0);
            // Straight from the stored text into the state or the event: no
            // intermediate `Value` (a shape that no longer fits is still a
            // serialization error, which `load` falls back on).
            if kind == 0 {
                let raw = row.try_get::<Json<Box<RawValue>>, _>("payload")?.0;
                loaded.aggregate = serde_json::from_str(raw.get())?;
                loaded.snapshot_version = sequence;
            } else if self.upcasters.is_empty() {
                let raw = row.try_get::<Json<Box<RawValue>>, _>("payload")?.0;
                loaded.aggregate.apply(serde_json::from_str(raw.get())?);
            } else {
                let event = self.decode_event(
                    aggregate_id,
                    sequence,
                    row.try_get("event_type")?,
                    row.try_get("event_version")?,
                    row.try_get("payload")?,
                )?;
                loaded.aggregate.apply(event);
            }
            loaded.version = sequence;
        }
        Ok(loaded)
    }

    /// Every stored event of the aggregate, with its metadata and position.
    pub async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<RecordedEvent<A::Event>>, StoreError> {
        let rows = sqlx::query(LOAD_EVENTS)
            .bind(A::TYPE)
            .bind(aggregate_id)
            .fetch_all(&self.pool)
            .await?;
        self.recorded(aggregate_id, rows)
    }

    /// The events the command `command` of idempotency attempt `attempt`
    /// recorded on the aggregate (see [`EventMetadata::idempotency_key`]);
    /// none if it recorded none.
    pub async fn load_events_of_attempt(
        &self,
        aggregate_id: &str,
        attempt: &str,
        command: &str,
    ) -> Result<Vec<RecordedEvent<A::Event>>, StoreError> {
        let rows = sqlx::query(LOAD_EVENTS_OF_ATTEMPT)
            .bind(A::TYPE)
            .bind(aggregate_id)
            .bind(attempt)
            .bind(command)
            .fetch_all(&self.pool)
            .await?;
        self.recorded(aggregate_id, rows)
    }

    fn recorded(
        &self,
        aggregate_id: &str,
        rows: Vec<sqlx::postgres::PgRow>,
    ) -> Result<Vec<RecordedEvent<A::Event>>, StoreError> {
        rows.into_iter()
            .map(|row| {
                let sequence = u64::try_from(row.try_get::<i64, _>("sequence")?).unwrap_or(0);
                let metadata: HashMap<String, String> =
                    serde_json::from_value(row.try_get::<Value, _>("metadata")?)
                        .unwrap_or_default();
                Ok(RecordedEvent {
                    event_id: row.try_get("event_id")?,
                    aggregate_id: row.try_get("aggregate_id")?,
                    sequence,
                    position: Position {
                        transaction_id: row.try_get("tx")?,
                        global_position: row.try_get("global_position")?,
                    },
                    recorded_at: row.try_get("recorded_at")?,
                    payload: self.decode_event(
                        aggregate_id,
                        sequence,
                        row.try_get("event_type")?,
                        row.try_get("event_version")?,
                        row.try_get("payload")?,
                    )?,
                    metadata: EventMetadata::from_map(&metadata),
                })
            })
            .collect()
    }

    /// Whether a commit from `from` to `to` crosses a snapshot boundary.
    pub fn snapshot_due(&self, from: u64, to: u64) -> bool {
        self.snapshot_every.is_some_and(|k| to / k > from / k)
    }

    /// Store `state`, the aggregate as of sequence `version` (already
    /// committed) serialised as JSON, as its snapshot, unless a newer one is
    /// stored. A snapshot is only a shortcut for loading, so this may run
    /// after, and apart from, the append that made it due.
    pub async fn save_snapshot(
        &self,
        aggregate_id: &str,
        version: u64,
        state: String,
    ) -> Result<(), StoreError> {
        sqlx::query(SAVE_SNAPSHOT)
            .bind(A::TYPE)
            .bind(aggregate_id)
            .bind(to_i64(version))
            .bind(state)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Append `events` after sequence `expected_version`, in one statement.
    ///
    /// `state_after`, if given, is the aggregate with every one of these
    /// events already applied: when a snapshot is due, the same statement
    /// stores it. It is never re-applied, which is the cqrs-es 0.5.0 snapshot
    /// defect this avoids. Pass `None` to leave snapshots to
    /// [`Self::save_snapshot`]. Returns [`StoreError::Conflict`] when another
    /// writer got there first; then nothing was written.
    pub async fn append(
        &self,
        aggregate_id: &str,
        expected_version: u64,
        events: &[NewEvent<'_, A::Event>],
        state_after: Option<&A>,
    ) -> Result<Vec<RecordedEvent<A::Event>>, StoreError> {
        self.append_on(
            &self.pool,
            aggregate_id,
            expected_version,
            events,
            state_after,
        )
        .await
    }

    /// [`Self::append`] on a connection the caller holds (the committer keeps
    /// its connections between statements; see `committer.rs`).
    pub(crate) async fn append_on<'c>(
        &self,
        db: impl PgExecutor<'c>,
        aggregate_id: &str,
        expected_version: u64,
        events: &[NewEvent<'_, A::Event>],
        state_after: Option<&A>,
    ) -> Result<Vec<RecordedEvent<A::Event>>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let n = events.len();
        let new_version = expected_version + n as u64;
        let mut sequences = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        let mut metadata = Vec::with_capacity(n);
        for (i, e) in events.iter().enumerate() {
            sequences.push(to_i64(expected_version + 1 + i as u64));
            types.push(e.payload.event_type());
            versions.push(e.payload.event_version());
            // Serialised straight into the statement, with no JSON tree
            // built on the way.
            payloads.push(Json(e.payload));
            metadata.push(Json(e.metadata.to_map()));
        }
        let snapshot = state_after
            .filter(|_| self.snapshot_due(expected_version, new_version))
            .map(Json);
        let query = sqlx::query(if snapshot.is_some() {
            APPEND
        } else {
            APPEND_EVENTS
        })
        .bind(A::TYPE)
        .bind(aggregate_id)
        .bind(&sequences)
        .bind(&types)
        .bind(&versions)
        .bind(&payloads)
        .bind(&metadata);
        let mut rows = match snapshot {
            Some(snapshot) => query.bind(to_i64(new_version)).bind(snapshot),
            None => query,
        }
        .fetch_all(db)
        .await?;
        // RETURNING has no defined order; the rows are matched to the events
        // by sequence number.
        rows.sort_by_cached_key(|row| row.try_get::<i64, _>("sequence").unwrap_or(0));
        metrics::counter!("lectern_events_appended_total", "aggregate" => A::TYPE)
            .increment(n as u64);
        rows.into_iter()
            .zip(events)
            .map(|(row, e)| {
                Ok(RecordedEvent {
                    event_id: row.try_get("event_id")?,
                    aggregate_id: aggregate_id.to_owned(),
                    sequence: u64::try_from(row.try_get::<i64, _>("sequence")?).unwrap_or(0),
                    position: Position {
                        transaction_id: row.try_get("tx")?,
                        global_position: row.try_get("global_position")?,
                    },
                    recorded_at: row.try_get("recorded_at")?,
                    payload: e.payload.clone(),
                    metadata: e.metadata.clone(),
                })
            })
            .collect()
    }
}

/// The events for one stream in [`PgEventStore::append_streams`].
pub struct StreamAppend<'a, E> {
    /// The aggregate instance.
    pub aggregate_id: &'a str,
    /// The version the stream must be at.
    pub expected_version: u64,
    /// The events to append, in order.
    pub events: Vec<NewEvent<'a, E>>,
}

impl<A: Aggregate> PgEventStore<A> {
    /// Append to several streams in one statement, so that either every
    /// stream gets its events or none does ([`StoreError::Conflict`] if any
    /// stream moved on). No snapshots are taken here; loading stays correct
    /// without them. Returns each stream's recorded events, in input order.
    pub async fn append_streams(
        &self,
        streams: &[StreamAppend<'_, A::Event>],
    ) -> Result<Vec<Vec<RecordedEvent<A::Event>>>, StoreError> {
        self.append_streams_on(&self.pool, streams).await
    }

    /// [`Self::append_streams`] on a connection the caller holds.
    pub(crate) async fn append_streams_on<'c>(
        &self,
        db: impl PgExecutor<'c>,
        streams: &[StreamAppend<'_, A::Event>],
    ) -> Result<Vec<Vec<RecordedEvent<A::Event>>>, StoreError> {
        static SQL: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| append_streams_sql("", ""));
        let columns = StreamColumns::new(A::TYPE, streams);
        if columns.is_empty() {
            return Ok(streams.iter().map(|_| Vec::new()).collect());
        }
        let rows = columns.bind(sqlx::query(&SQL)).fetch_all(db).await?;
        Self::recorded_streams(streams, rows, true)
    }

    /// Each stream's recorded events, in input order, from the rows a
    /// statement of [`append_streams_sql`] returned. With `every`, a stream
    /// that has no rows is an error; without it, a stream the statement's
    /// condition skipped has no events, and one with only some of its
    /// events is still an error.
    pub(crate) fn recorded_streams(
        streams: &[StreamAppend<'_, A::Event>],
        rows: Vec<sqlx::postgres::PgRow>,
        every: bool,
    ) -> Result<Vec<Vec<RecordedEvent<A::Event>>>, StoreError> {
        metrics::counter!("lectern_events_appended_total", "aggregate" => A::TYPE)
            .increment(rows.len() as u64);
        let mut stored = HashMap::new();
        for row in rows {
            let id: String = row.try_get("aggregate_id")?;
            let sequence = u64::try_from(row.try_get::<i64, _>("sequence")?).unwrap_or(0);
            let at = (
                row.try_get::<Uuid, _>("event_id")?,
                Position {
                    transaction_id: row.try_get("tx")?,
                    global_position: row.try_get("global_position")?,
                },
                row.try_get::<DateTime<Utc>, _>("recorded_at")?,
            );
            stored.insert((id, sequence), at);
        }
        streams
            .iter()
            .map(|s| {
                let skipped = !every
                    && !stored.contains_key(&(s.aggregate_id.to_owned(), s.expected_version + 1));
                if skipped {
                    return Ok(Vec::new());
                }
                s.events
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        let sequence = s.expected_version + 1 + i as u64;
                        let (event_id, position, recorded_at) = stored
                            .get(&(s.aggregate_id.to_owned(), sequence))
                            .copied()
                            .ok_or_else(|| StoreError::from(sqlx::Error::RowNotFound))?;
                        Ok(RecordedEvent {
                            event_id,
                            aggregate_id: s.aggregate_id.to_owned(),
                            sequence,
                            position,
                            recorded_at,
                            payload: e.payload.clone(),
                            metadata: e.metadata.clone(),
                        })
                    })
                    .collect()
            })
            .collect()
    }
}

/// The rows of a multi-stream append, as the parameters `$1` to `$7` of
/// [`append_streams_sql`]'s statement.
pub(crate) struct StreamColumns<'a, E> {
    aggregate_type: &'static str,
    ids: Vec<&'a str>,
    sequences: Vec<i64>,
    types: Vec<String>,
    versions: Vec<String>,
    payloads: Vec<Json<&'a E>>,
    metadata: Vec<Json<HashMap<String, String>>>,
}

impl<'a, E: DomainEvent> StreamColumns<'a, E> {
    /// The rows of `streams`, in aggregate-id order: two writers whose
    /// statements touch the same aggregates then take their index locks in
    /// the same order and wait for each other instead of deadlocking.
    pub(crate) fn new(aggregate_type: &'static str, streams: &'a [StreamAppend<'a, E>]) -> Self {
        let mut columns = Self {
            aggregate_type,
            ids: Vec::new(),
            sequences: Vec::new(),
            types: Vec::new(),
            versions: Vec::new(),
            payloads: Vec::new(),
            metadata: Vec::new(),
        };
        let mut order: Vec<&StreamAppend<'_, E>> = streams.iter().collect();
        order.sort_by_key(|s| s.aggregate_id);
        for s in order {
            for (i, e) in s.events.iter().enumerate() {
                columns.ids.push(s.aggregate_id);
                columns
                    .sequences
                    .push(to_i64(s.expected_version + 1 + i as u64));
                columns.types.push(e.payload.event_type());
                columns.versions.push(e.payload.event_version());
                columns.payloads.push(Json(e.payload));
                columns.metadata.push(Json(e.metadata.to_map()));
            }
        }
        columns
    }

    /// No rows at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// `query` with these columns bound as `$1` to `$7`.
    pub(crate) fn bind<'q>(
        self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>
    where
        'a: 'q,
    {
        query
            .bind(self.aggregate_type)
            .bind(self.ids)
            .bind(self.sequences)
            .bind(self.types)
            .bind(self.versions)
            .bind(self.payloads)
            .bind(self.metadata)
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).expect("sequence numbers stay far below i64::MAX")
}
