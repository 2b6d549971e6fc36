//! The classroom read models.
//!
//! - `lessons`: `lessons` and `enrollments`, from the Lesson streams;
//! - `boards`: `boards`, `board_elements` (each element's contents) and
//!   `board_ops` (the applied-operation log, with what each op changed, for
//!   undo, redo and reconnecting clients), from the Board streams;
//! - `chat`: `messages` and one `deliveries` row per recipient, from the
//!   Channel and Inbox streams.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lectern_domain::classroom::board::{edit_value, plan, Change, Step};
use lectern_domain::classroom::inbox::AckStatus;
use lectern_domain::classroom::{BoardEvent, ChannelEvent, InboxEvent, LessonEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::log::LogEvent;
use crate::projection::{Interest, Projection, ProjectionError, Tables};

fn decode<T: DeserializeOwned>(event: &LogEvent) -> Result<T, ProjectionError> {
    T::deserialize(&event.payload)
        .map_err(|e| ProjectionError::Invalid(format!("{} payload: {e}", event.event_type)))
}

fn uuid_of(event: &LogEvent) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(&event.aggregate_id)
        .map_err(|e| ProjectionError::Invalid(format!("aggregate id: {e}")))
}

/// Keeps `lessons` and `enrollments`.
pub struct LessonsProjection;

const LESSONS: &str = "lessons";
const ENROLLMENTS: &str = "enrollments";

#[async_trait]
impl Projection for LessonsProjection {
    fn name(&self) -> &'static str {
        "lessons"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[LESSONS, ENROLLMENTS]
    }

    fn interest(&self) -> Interest {
        Interest::types(&["Lesson"])
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        t: &Tables,
        event: &LogEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != "Lesson" {
            return Ok(());
        }
        let id = uuid_of(event)?;
        let (lessons, enrollments) = (t.get(LESSONS), t.get(ENROLLMENTS));
        let at = event.recorded_at;
        let status = |s: &str| {
            format!(
                "UPDATE {lessons} SET status = '{s}', version = $2, updated_at = $3 WHERE id = $1"
            )
        };
        let sql = match decode::<LessonEvent>(event)? {
            LessonEvent::LessonScheduled { tutor_id, details } => {
                sqlx::query(&format!(
                    "INSERT INTO {lessons} (id, tutor_id, title, description, starts_at, duration_minutes, capacity,
                                            price_amount_minor, price_currency, status, created_at, updated_at, version)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'scheduled', $10, $10, $11)"
                ))
                .bind(id)
                .bind(tutor_id)
                .bind(&details.title)
                .bind(&details.description)
                .bind(details.starts_at)
                .bind(i32::try_from(details.duration_minutes).unwrap_or(i32::MAX))
                .bind(i32::try_from(details.capacity).unwrap_or(i32::MAX))
                .bind(details.price.amount_minor)
                .bind(&details.price.currency)
                .bind(at)
                .bind(event.sequence)
                .execute(&mut *conn)
                .await?;
                return Ok(());
            }
            LessonEvent::LessonUpdated { changes } => {
                sqlx::query(&format!(
                    "UPDATE {lessons} SET title = coalesce($4, title), description = coalesce($5, description),
                            starts_at = coalesce($6, starts_at), duration_minutes = coalesce($7, duration_minutes),
                            capacity = coalesce($8, capacity), price_amount_minor = coalesce($9, price_amount_minor),
                            price_currency = coalesce($10, price_currency), version = $2, updated_at = $3
                      WHERE id = $1"
                ))
                .bind(id)
                .bind(event.sequence)
                .bind(at)
                .bind(changes.title)
                .bind(changes.description)
                .bind(changes.starts_at)
                .bind(changes.duration_minutes.map(|v| i32::try_from(v).unwrap_or(i32::MAX)))
                .bind(changes.capacity.map(|v| i32::try_from(v).unwrap_or(i32::MAX)))
                .bind(changes.price.as_ref().map(|p| p.amount_minor))
                .bind(changes.price.map(|p| p.currency))
                .execute(&mut *conn)
                .await?;
                return Ok(());
            }
            LessonEvent::LessonStarted {} => status("live"),
            LessonEvent::LessonEnded {} => status("ended"),
            LessonEvent::LessonCancelled { .. } => status("cancelled"),
            LessonEvent::StudentEnrolled { student_id, by } => {
                sqlx::query(&format!(
                    "INSERT INTO {enrollments} (lesson_id, student_id, enrolled_by, enrolled_at) VALUES ($1, $2, $3, $4)"
                ))
                .bind(id)
                .bind(student_id)
                .bind(by)
                .bind(at)
                .execute(&mut *conn)
                .await?;
                format!("UPDATE {lessons} SET enrolled_count = enrolled_count + 1, version = $2, updated_at = $3 WHERE id = $1")
            }
            LessonEvent::StudentUnenrolled { student_id, .. } => {
                sqlx::query(&format!(
                    "DELETE FROM {enrollments} WHERE lesson_id = $1 AND student_id = $2"
                ))
                .bind(id)
                .bind(student_id)
                .execute(&mut *conn)
                .await?;
                format!("UPDATE {lessons} SET enrolled_count = enrolled_count - 1, version = $2, updated_at = $3 WHERE id = $1")
            }
        };
        sqlx::query(&sql)
            .bind(id)
            .bind(event.sequence)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// Keeps `boards`, `board_elements` and `board_ops`.
pub struct BoardsProjection;

const BOARDS: &str = "boards";
const ELEMENTS: &str = "board_elements";
const OPS: &str = "board_ops";

#[async_trait]
impl Projection for BoardsProjection {
    fn name(&self) -> &'static str {
        "boards"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[BOARDS, ELEMENTS, OPS]
    }

    fn interest(&self) -> Interest {
        Interest::types(&["Board"])
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        t: &Tables,
        event: &LogEvent,
    ) -> Result<(), ProjectionError> {
        self.apply_all(conn, t, &[event]).await
    }

    /// The run is folded in memory, starting from the element contents and
    /// undo targets it reads (fetched in one query each), then written with
    /// one statement per table.
    async fn apply_all(
        &self,
        conn: &mut PgConnection,
        t: &Tables,
        events: &[&LogEvent],
    ) -> Result<(), ProjectionError> {
        let mut run = BoardRun::default();
        let mut decoded = Vec::with_capacity(events.len());
        for event in events {
            decoded.push((uuid_of(event)?, *event, decode::<BoardEvent>(event)?));
        }
        run.prefetch(conn, t, &decoded).await?;
        for (board, event, payload) in decoded {
            run.fold(conn, t, board, event, payload).await?;
        }
        run.write(conn, t).await
    }
}

type ElementKey = (Uuid, String);

/// A run of Board events folded in memory: see [`BoardsProjection`].
#[derive(Default)]
struct BoardRun {
    /// Element contents as the run goes along (`None`: absent).
    elements: HashMap<ElementKey, Option<Value>>,
    /// The server version that last wrote each element of `elements`.
    written_by: HashMap<ElementKey, i64>,
    /// Boards cleared in this run: their elements not in `elements` are gone.
    cleared: HashSet<Uuid>,
    /// What each op did, by (board, server version), for undo and redo.
    changes: HashMap<(Uuid, u64), Vec<Change>>,
    new_boards: Vec<(Uuid, DateTime<Utc>)>,
    /// Per board: its policy if changed, its (version, lamport) if an op
    /// applied, and the time of its last change.
    boards: HashMap<Uuid, BoardChange>,
    ops: Vec<OpRow>,
}

#[derive(Default)]
struct BoardChange {
    policy: Option<String>,
    clock: Option<(i64, i64)>,
    updated_at: Option<DateTime<Utc>>,
}

struct OpRow {
    board: Uuid,
    version: i64,
    client_id: String,
    op_id: String,
    user_id: Uuid,
    kind: &'static str,
    element_id: Option<String>,
    data: Value,
    client_lamport: i64,
    lamport: i64,
    target_version: Option<i64>,
    changes: Value,
    recorded_at: DateTime<Utc>,
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl BoardRun {
    /// Load the undo targets outside the run and the element contents the
    /// run's edits read, one query each.
    async fn prefetch(
        &mut self,
        conn: &mut PgConnection,
        t: &Tables,
        run: &[(Uuid, &LogEvent, BoardEvent)],
    ) -> Result<(), ProjectionError> {
        let mut in_run = HashSet::new();
        let (mut target_boards, mut target_versions) = (Vec::new(), Vec::new());
        for (board, _, event) in run {
            if let BoardEvent::OpApplied {
                server_version,
                target_version,
                ..
            } = event
            {
                if let Some(v) = target_version {
                    if !in_run.contains(&(*board, *v)) {
                        target_boards.push(*board);
                        target_versions.push(as_i64(*v));
                    }
                }
                in_run.insert((*board, *server_version));
            }
        }
        if !target_boards.is_empty() {
            let rows = sqlx::query(&format!(
                "SELECT o.board_id, o.server_version, o.changes
                   FROM {} o JOIN unnest($1::uuid[], $2::bigint[]) AS w(b, v)
                     ON o.board_id = w.b AND o.server_version = w.v",
                t.get(OPS)
            ))
            .bind(&target_boards)
            .bind(&target_versions)
            .fetch_all(&mut *conn)
            .await?;
            for row in rows {
                let version: i64 = row.try_get("server_version")?;
                let changes: Vec<Change> = serde_json::from_value(row.try_get("changes")?)
                    .map_err(|e| {
                        ProjectionError::Invalid(format!("changes of op {version}: {e}"))
                    })?;
                self.changes.insert(
                    (
                        row.try_get("board_id")?,
                        u64::try_from(version).unwrap_or(0),
                    ),
                    changes,
                );
            }
        }
        let (mut boards, mut ids) = (Vec::new(), Vec::new());
        for (board, _, event) in run {
            if let BoardEvent::OpApplied {
                kind,
                element_id,
                data,
                target_version,
                ..
            } = event
            {
                let target = target_version.and_then(|v| self.changes.get(&(*board, v)));
                for step in plan(
                    *kind,
                    element_id.as_deref(),
                    data,
                    target.map(Vec::as_slice),
                ) {
                    if let Some(id) = step_element(&step) {
                        boards.push(*board);
                        ids.push(id.to_owned());
                    }
                }
            }
        }
        if !ids.is_empty() {
            for (i, board) in boards.iter().enumerate() {
                self.elements
                    .entry((*board, ids[i].clone()))
                    .or_insert(None);
            }
            self.load_elements(conn, t, &boards, &ids).await?;
        }
        Ok(())
    }

    async fn load_elements(
        &mut self,
        conn: &mut PgConnection,
        t: &Tables,
        boards: &[Uuid],
        ids: &[String],
    ) -> Result<(), ProjectionError> {
        let rows = sqlx::query(&format!(
            "SELECT e.board_id, e.element_id, e.data
               FROM {} e JOIN (SELECT DISTINCT * FROM unnest($1::uuid[], $2::text[])) AS w(b, id)
                 ON e.board_id = w.b AND e.element_id = w.id",
            t.get(ELEMENTS)
        ))
        .bind(boards)
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            self.elements.insert(
                (row.try_get("board_id")?, row.try_get("element_id")?),
                Some(row.try_get("data")?),
            );
        }
        Ok(())
    }

    /// An element's contents at this point of the run.
    async fn current(
        &mut self,
        conn: &mut PgConnection,
        t: &Tables,
        key: &ElementKey,
    ) -> Result<Option<Value>, ProjectionError> {
        if !self.elements.contains_key(key) && !self.cleared.contains(&key.0) {
            // Not prefetched (an undo of an op earlier in this run can name
            // elements no edit named): load it alone.
            self.elements.insert(key.clone(), None);
            self.load_elements(conn, t, &[key.0], std::slice::from_ref(&key.1))
                .await?;
        }
        Ok(self.elements.get(key).cloned().flatten())
    }

    async fn fold(
        &mut self,
        conn: &mut PgConnection,
        t: &Tables,
        board: Uuid,
        event: &LogEvent,
        payload: BoardEvent,
    ) -> Result<(), ProjectionError> {
        let at = event.recorded_at;
        match payload {
            BoardEvent::RosterSynced { .. } => self.new_boards.push((board, at)),
            BoardEvent::PolicyChanged { policy } => {
                let row = self.boards.entry(board).or_default();
                row.policy = serde_json::to_value(policy)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned));
                row.updated_at = Some(at);
            }
            BoardEvent::OpRejected { .. } | BoardEvent::OpDuplicate { .. } => {}
            BoardEvent::OpApplied {
                client_id,
                op_id,
                user_id,
                kind,
                element_id,
                data,
                client_lamport,
                lamport,
                server_version,
                target_version,
            } => {
                let version = as_i64(server_version);
                let target = match target_version {
                    Some(v) => Some(self.changes.get(&(board, v)).cloned().ok_or_else(|| {
                        ProjectionError::Invalid(format!(
                            "undo/redo target {v} is not in the op log"
                        ))
                    })?),
                    None => None,
                };
                let mut changes = Vec::new();
                for step in plan(kind, element_id.as_deref(), &data, target.as_deref()) {
                    let (id, after) = match step {
                        Step::ClearAll => {
                            self.cleared.insert(board);
                            self.elements.retain(|(b, _), _| *b != board);
                            self.written_by.retain(|(b, _), _| *b != board);
                            continue;
                        }
                        Step::Edit(e) => {
                            let key = (board, e.element_id.to_owned());
                            let before = self.current(conn, t, &key).await?;
                            (e.element_id, edit_value(e.kind, before.as_ref(), e.data))
                        }
                        Step::Set(id, v) => (id, v.cloned()),
                    };
                    let key = (board, id.to_owned());
                    let before = self.current(conn, t, &key).await?;
                    self.elements.insert(key.clone(), after.clone());
                    self.written_by.insert(key, version);
                    changes.push(Change {
                        element_id: id.to_owned(),
                        before,
                        after,
                    });
                }
                let changes_json = serde_json::to_value(&changes)
                    .map_err(|e| ProjectionError::Invalid(e.to_string()))?;
                self.changes.insert((board, server_version), changes);
                let row = self.boards.entry(board).or_default();
                row.clock = Some((version, as_i64(lamport)));
                row.updated_at = Some(at);
                self.ops.push(OpRow {
                    board,
                    version,
                    client_id,
                    op_id,
                    user_id,
                    kind: kind.as_str(),
                    element_id,
                    data,
                    client_lamport: as_i64(client_lamport),
                    lamport: as_i64(lamport),
                    target_version: target_version.map(as_i64),
                    changes: changes_json,
                    recorded_at: at,
                });
            }
        }
        Ok(())
    }

    /// Write the folded run: boards, then elements, then the op log.
    async fn write(self, conn: &mut PgConnection, t: &Tables) -> Result<(), ProjectionError> {
        let (boards, elements, ops) = (t.get(BOARDS), t.get(ELEMENTS), t.get(OPS));
        if !self.new_boards.is_empty() {
            let (ids, at): (Vec<Uuid>, Vec<DateTime<Utc>>) = self.new_boards.into_iter().unzip();
            sqlx::query(&format!(
                "INSERT INTO {boards} (id, updated_at) SELECT * FROM unnest($1::uuid[], $2::timestamptz[])
                 ON CONFLICT (id) DO NOTHING"
            ))
            .bind(ids)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        if !self.cleared.is_empty() {
            sqlx::query(&format!("DELETE FROM {elements} WHERE board_id = ANY($1)"))
                .bind(self.cleared.iter().copied().collect::<Vec<_>>())
                .execute(&mut *conn)
                .await?;
        }
        // Only elements an op wrote: prefetched but untouched ones stay.
        let (mut set_b, mut set_id, mut set_data, mut set_v) = (vec![], vec![], vec![], vec![]);
        let (mut gone_b, mut gone_id) = (vec![], vec![]);
        for ((board, id), version) in self.written_by {
            match self.elements.get(&(board, id.clone())).cloned().flatten() {
                Some(data) => {
                    set_b.push(board);
                    set_id.push(id);
                    set_data.push(data);
                    set_v.push(version);
                }
                None => {
                    gone_b.push(board);
                    gone_id.push(id);
                }
            }
        }
        if !set_b.is_empty() || !gone_b.is_empty() {
            sqlx::query(&format!(
                "WITH gone AS (DELETE FROM {elements} e USING unnest($5::uuid[], $6::text[]) AS g(b, id)
                                WHERE e.board_id = g.b AND e.element_id = g.id)
                 INSERT INTO {elements} (board_id, element_id, data, updated_version)
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::bigint[])
                 ON CONFLICT (board_id, element_id)
                 DO UPDATE SET data = EXCLUDED.data, updated_version = EXCLUDED.updated_version"
            ))
            .bind(set_b)
            .bind(set_id)
            .bind(set_data)
            .bind(set_v)
            .bind(gone_b)
            .bind(gone_id)
            .execute(&mut *conn)
            .await?;
        }
        if !self.ops.is_empty() {
            let o = &self.ops;
            sqlx::query(&format!(
                "INSERT INTO {ops} (board_id, server_version, client_id, op_id, user_id, kind, element_id, data,
                                    client_lamport, lamport, target_version, changes, recorded_at)
                 SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::uuid[], $6::text[],
                                      $7::text[], $8::jsonb[], $9::bigint[], $10::bigint[], $11::bigint[],
                                      $12::jsonb[], $13::timestamptz[])"
            ))
            .bind(o.iter().map(|r| r.board).collect::<Vec<_>>())
            .bind(o.iter().map(|r| r.version).collect::<Vec<_>>())
            .bind(o.iter().map(|r| r.client_id.as_str()).collect::<Vec<_>>())
            .bind(o.iter().map(|r| r.op_id.as_str()).collect::<Vec<_>>())
            .bind(o.iter().map(|r| r.user_id).collect::<Vec<_>>())
            .bind(o.iter().map(|r| r.kind).collect::<Vec<_>>())
            .bind(o.iter().map(|r| r.element_id.as_deref()).collect::<Vec<_>>())
            .bind(o.iter().map(|r| &r.data).collect::<Vec<_>>())
            .bind(o.iter().map(|r| r.client_lamport).collect::<Vec<_>>())
            .bind(o.iter().map(|r| r.lamport).collect::<Vec<_>>())
            .bind(o.iter().map(|r| r.target_version).collect::<Vec<_>>())
            .bind(o.iter().map(|r| &r.changes).collect::<Vec<_>>())
            .bind(o.iter().map(|r| r.recorded_at).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        if !self.boards.is_empty() {
            let rows: Vec<_> = self.boards.into_iter().collect();
            sqlx::query(&format!(
                "UPDATE {boards} b
                    SET policy = coalesce(u.policy, b.policy), version = coalesce(u.version, b.version),
                        lamport = coalesce(u.lamport, b.lamport), updated_at = coalesce(u.at, b.updated_at)
                   FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::timestamptz[])
                        AS u(id, policy, version, lamport, at)
                  WHERE b.id = u.id"
            ))
            .bind(rows.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| r.policy.as_deref()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| r.clock.map(|c| c.0)).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| r.clock.map(|c| c.1)).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| r.updated_at).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

/// The element a step writes, if it names one.
fn step_element<'a>(step: &Step<'a>) -> Option<&'a str> {
    match step {
        Step::Edit(e) => Some(e.element_id),
        Step::Set(id, _) => Some(id),
        Step::ClearAll => None,
    }
}

/// Keeps `messages` and `deliveries`.
pub struct ChatProjection;

const MESSAGES: &str = "messages";
const DELIVERIES: &str = "deliveries";

#[async_trait]
impl Projection for ChatProjection {
    fn name(&self) -> &'static str {
        "chat"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[MESSAGES, DELIVERIES]
    }

    fn interest(&self) -> Interest {
        Interest::types(&["Channel", "Inbox"])
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        t: &Tables,
        event: &LogEvent,
    ) -> Result<(), ProjectionError> {
        let (messages, deliveries) = (t.get(MESSAGES), t.get(DELIVERIES));
        match event.aggregate_type.as_str() {
            "Channel" => {
                let ChannelEvent::MessageSent {
                    message_id,
                    seq,
                    sender_id,
                    client_message_id,
                    text,
                    sent_at,
                    recipients,
                } = decode(event)?
                else {
                    return Ok(());
                };
                let lesson = uuid_of(event)?;
                let seq = i64::try_from(seq).unwrap_or(i64::MAX);
                sqlx::query(&format!(
                    "WITH d AS (
                        INSERT INTO {deliveries} (recipient_id, lesson_id, seq, status, sent_at, updated_at)
                        SELECT r, $1, $2, 'sent', $7, $7 FROM unnest($8::uuid[]) AS r)
                     INSERT INTO {messages} (lesson_id, seq, message_id, sender_id, client_message_id, text, sent_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ))
                .bind(lesson)
                .bind(seq)
                .bind(message_id)
                .bind(sender_id)
                .bind(client_message_id)
                .bind(text)
                .bind(sent_at)
                .bind(recipients)
                .execute(&mut *conn)
                .await?;
            }
            "Inbox" => {
                let (sql, lesson, recipient, seq) = match decode(event)? {
                    InboxEvent::DeliveriesAcknowledged {
                        lesson_id,
                        recipient_id,
                        up_to_seq,
                        status,
                    } => {
                        let from = match status {
                            AckStatus::Delivered => "('sent')",
                            AckStatus::Read => "('sent', 'delivered')",
                        };
                        (
                            format!(
                                "UPDATE {deliveries} SET status = '{}', updated_at = $4
                                  WHERE recipient_id = $1 AND lesson_id = $2 AND seq <= $3 AND status IN {from}",
                                status.as_str()
                            ),
                            lesson_id,
                            recipient_id,
                            up_to_seq,
                        )
                    }
                    InboxEvent::DeliveryExpired {
                        lesson_id,
                        recipient_id,
                        seq,
                    } => (
                        format!(
                            "UPDATE {deliveries} SET status = 'expired', updated_at = $4
                              WHERE recipient_id = $1 AND lesson_id = $2 AND seq = $3 AND status = 'sent'"
                        ),
                        lesson_id,
                        recipient_id,
                        seq,
                    ),
                };
                sqlx::query(&sql)
                    .bind(recipient)
                    .bind(lesson)
                    .bind(i64::try_from(seq).unwrap_or(i64::MAX))
                    .bind(event.recorded_at)
                    .execute(&mut *conn)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

// ---- Queries -------------------------------------------------------------

/// A lesson as listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LessonRow {
    pub id: Uuid,
    pub tutor_id: Uuid,
    pub title: String,
    pub description: String,
    pub starts_at: DateTime<Utc>,
    pub duration_minutes: i32,
    pub capacity: i32,
    pub price: PriceRow,
    /// `scheduled`, `live`, `ended` or `cancelled`.
    pub status: String,
    pub enrolled_count: i32,
    pub seats_left: i32,
    /// `upcoming`, `live` or `past`, from the status and the clock.
    pub timing: String,
    /// The lesson's whiteboard (`/api/v1/boards/{board_id}`).
    pub board_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub version: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PriceRow {
    pub amount_minor: i64,
    pub currency: String,
}

const LESSON_COLUMNS: &str =
    "l.id, l.tutor_id, l.title, l.description, l.starts_at, l.duration_minutes, l.capacity,
    l.price_amount_minor, l.price_currency, l.status, l.enrolled_count, l.created_at, l.version";

fn lesson_row(row: &sqlx::postgres::PgRow, now: DateTime<Utc>) -> Result<LessonRow, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let starts_at: DateTime<Utc> = row.try_get("starts_at")?;
    let duration: i32 = row.try_get("duration_minutes")?;
    let capacity: i32 = row.try_get("capacity")?;
    let enrolled: i32 = row.try_get("enrolled_count")?;
    let timing = match status.as_str() {
        "live" => "live",
        "ended" | "cancelled" => "past",
        _ if now < starts_at + chrono::Duration::minutes(i64::from(duration)) => "upcoming",
        _ => "past",
    };
    let id: Uuid = row.try_get("id")?;
    Ok(LessonRow {
        id,
        tutor_id: row.try_get("tutor_id")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        starts_at,
        duration_minutes: duration,
        capacity,
        price: PriceRow {
            amount_minor: row.try_get("price_amount_minor")?,
            currency: row.try_get("price_currency")?,
        },
        status,
        enrolled_count: enrolled,
        seats_left: (capacity - enrolled).max(0),
        timing: timing.to_owned(),
        board_id: id,
        created_at: row.try_get("created_at")?,
        version: row.try_get("version")?,
    })
}

/// One lesson.
pub async fn lesson(pool: &PgPool, id: Uuid) -> Result<Option<LessonRow>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {LESSON_COLUMNS} FROM lessons l WHERE l.id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let now = Utc::now();
    row.map(|r| lesson_row(&r, now)).transpose()
}

/// The students enrolled in a lesson, in enrolment order.
pub async fn enrolled(pool: &PgPool, lesson: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT student_id FROM enrollments WHERE lesson_id = $1 ORDER BY enrolled_at, student_id",
    )
    .bind(lesson)
    .fetch_all(pool)
    .await
}

/// Filters of the lesson list.
#[derive(Debug, Clone, Default)]
pub struct LessonFilter {
    pub tutor_id: Option<Uuid>,
    pub status: Option<String>,
    pub starts_from: Option<DateTime<Utc>>,
    pub starts_before: Option<DateTime<Utc>>,
    /// Lessons this user teaches or is enrolled in.
    pub mine: Option<Uuid>,
}

/// Lessons in `(starts_at, id)` order after `after`, keyset-paged; one more
/// row than `limit` is fetched to tell whether there is more.
pub async fn lessons_page(
    pool: &PgPool,
    filter: &LessonFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: u32,
) -> Result<(Vec<LessonRow>, bool), sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {LESSON_COLUMNS} FROM lessons l
          WHERE ($1::uuid IS NULL OR l.tutor_id = $1)
            AND ($2::text IS NULL OR l.status = $2)
            AND ($3::timestamptz IS NULL OR l.starts_at >= $3)
            AND ($4::timestamptz IS NULL OR l.starts_at < $4)
            AND ($5::uuid IS NULL OR l.tutor_id = $5
                 OR EXISTS (SELECT 1 FROM enrollments e WHERE e.lesson_id = l.id AND e.student_id = $5))
            AND ($6::timestamptz IS NULL OR (l.starts_at, l.id) > ($6, $7))
          ORDER BY l.starts_at, l.id
          LIMIT $8"
    ))
    .bind(filter.tutor_id)
    .bind(&filter.status)
    .bind(filter.starts_from)
    .bind(filter.starts_before)
    .bind(filter.mine)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let now = Utc::now();
    let mut out = rows
        .iter()
        .map(|r| lesson_row(r, now))
        .collect::<Result<Vec<_>, _>>()?;
    let more = out.len() > limit as usize;
    out.truncate(limit as usize);
    Ok((out, more))
}

/// A board as its projection holds it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BoardRow {
    pub id: Uuid,
    /// `last_write_wins`, `first_write_wins` or `reject`.
    pub policy: String,
    /// The `server_version` of the last applied operation.
    pub version: i64,
    pub lamport: i64,
    /// SHA-256 (hex) over the elements in id order: each id, a NUL byte, the
    /// element as canonical JSON (members sorted), a newline.
    pub checksum: String,
    #[schema(value_type = Object)]
    pub elements: serde_json::Map<String, Value>,
}

/// A board with its elements, read in one snapshot.
pub async fn board(pool: &PgPool, id: Uuid) -> Result<Option<BoardRow>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let Some(head) = sqlx::query("SELECT policy, version, lamport FROM boards WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
    else {
        return Ok(None);
    };
    let rows = sqlx::query(
        "SELECT element_id, data FROM board_elements WHERE board_id = $1 ORDER BY element_id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut elements = serde_json::Map::new();
    for row in rows {
        elements.insert(row.try_get("element_id")?, row.try_get("data")?);
    }
    let checksum =
        lectern_domain::classroom::board::checksum(elements.iter().map(|(k, v)| (k.as_str(), v)));
    Ok(Some(BoardRow {
        id,
        policy: head.try_get("policy")?,
        version: head.try_get("version")?,
        lamport: head.try_get("lamport")?,
        checksum,
        elements,
    }))
}

/// An applied operation, as reconnecting clients fetch it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BoardOpRow {
    pub server_version: i64,
    pub lamport: i64,
    pub client_id: String,
    pub op_id: String,
    pub user_id: Uuid,
    pub kind: String,
    pub element_id: Option<String>,
    #[schema(value_type = Object)]
    pub data: Value,
    /// For undo and redo: the operation undone or redone.
    pub target_version: Option<i64>,
    pub recorded_at: DateTime<Utc>,
}

/// Operations after `since_version`, in order; one more than `limit` is
/// fetched to tell whether there is more.
pub async fn board_ops(
    pool: &PgPool,
    board: Uuid,
    since_version: i64,
    limit: u32,
) -> Result<(Vec<BoardOpRow>, bool), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT server_version, lamport, client_id, op_id, user_id, kind, element_id, data, target_version, recorded_at
           FROM board_ops WHERE board_id = $1 AND server_version > $2 ORDER BY server_version LIMIT $3",
    )
    .bind(board)
    .bind(since_version)
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            Ok(BoardOpRow {
                server_version: r.try_get("server_version")?,
                lamport: r.try_get("lamport")?,
                client_id: r.try_get("client_id")?,
                op_id: r.try_get("op_id")?,
                user_id: r.try_get("user_id")?,
                kind: r.try_get("kind")?,
                element_id: r.try_get("element_id")?,
                data: r.try_get("data")?,
                target_version: r.try_get("target_version")?,
                recorded_at: r.try_get("recorded_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let more = out.len() > limit as usize;
    out.truncate(limit as usize);
    Ok((out, more))
}

/// A chat message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageRow {
    pub lesson_id: Uuid,
    pub seq: i64,
    pub message_id: Uuid,
    pub sender_id: Uuid,
    pub client_message_id: String,
    pub text: String,
    pub sent_at: DateTime<Utc>,
}

fn message_row(r: &sqlx::postgres::PgRow) -> Result<MessageRow, sqlx::Error> {
    Ok(MessageRow {
        lesson_id: r.try_get("lesson_id")?,
        seq: r.try_get("seq")?,
        message_id: r.try_get("message_id")?,
        sender_id: r.try_get("sender_id")?,
        client_message_id: r.try_get("client_message_id")?,
        text: r.try_get("text")?,
        sent_at: r.try_get("sent_at")?,
    })
}

/// Messages of a lesson after `after_seq`, in sequence order.
pub async fn messages(
    pool: &PgPool,
    lesson: Uuid,
    after_seq: i64,
    limit: u32,
) -> Result<(Vec<MessageRow>, bool), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT lesson_id, seq, message_id, sender_id, client_message_id, text, sent_at
           FROM messages WHERE lesson_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(lesson)
    .bind(after_seq)
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let mut out = rows
        .iter()
        .map(message_row)
        .collect::<Result<Vec<_>, _>>()?;
    let more = out.len() > limit as usize;
    out.truncate(limit as usize);
    Ok((out, more))
}

/// A delivery still waiting for its recipient, with its message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PendingRow {
    #[serde(flatten)]
    pub message: MessageRow,
    /// Always `sent`: not yet acknowledged.
    pub status: String,
}

/// Where a pending-deliveries page continues: `(sent_at, lesson_id, seq)`.
pub type PendingKey = (DateTime<Utc>, Uuid, i64);

/// `recipient`'s unacknowledged deliveries in the order they were sent.
pub async fn pending(
    pool: &PgPool,
    recipient: Uuid,
    after: Option<PendingKey>,
    limit: u32,
) -> Result<(Vec<PendingRow>, bool), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT m.lesson_id, m.seq, m.message_id, m.sender_id, m.client_message_id, m.text, m.sent_at, d.status
           FROM deliveries d JOIN messages m ON m.lesson_id = d.lesson_id AND m.seq = d.seq
          WHERE d.recipient_id = $1 AND d.status = 'sent'
            AND ($2::timestamptz IS NULL OR (d.sent_at, d.lesson_id, d.seq) > ($2, $3, $4))
          ORDER BY d.sent_at, d.lesson_id, d.seq
          LIMIT $5",
    )
    .bind(recipient)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(after.map(|a| a.2))
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            Ok(PendingRow {
                message: message_row(r)?,
                status: r.try_get("status")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let more = out.len() > limit as usize;
    out.truncate(limit as usize);
    Ok((out, more))
}

/// A recipient's statuses of a lesson's deliveries: `(seq, status)`.
pub async fn delivery_statuses(
    pool: &PgPool,
    lesson: Uuid,
    recipient: Uuid,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    sqlx::query_as("SELECT seq, status FROM deliveries WHERE lesson_id = $1 AND recipient_id = $2 ORDER BY seq")
        .bind(lesson)
        .bind(recipient)
        .fetch_all(pool)
        .await
}

/// Deliveries sent before `cutoff` and still unacknowledged, grouped by
/// `(lesson, recipient)` with their sequence numbers ascending.
pub async fn expirable(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid, Vec<i64>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT lesson_id, recipient_id, array_agg(seq ORDER BY seq)
           FROM (SELECT lesson_id, recipient_id, seq FROM deliveries
                  WHERE status = 'sent' AND sent_at < $1 ORDER BY sent_at LIMIT $2) d
          GROUP BY lesson_id, recipient_id",
    )
    .bind(cutoff)
    .bind(limit)
    .fetch_all(pool)
    .await
}
