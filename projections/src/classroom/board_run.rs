//! A run of Board events folded in memory, then written with one statement
//! per table: the batch write of the boards projection.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use lectern_domain::classroom::board::{edit_value, plan, Change, Step};
use lectern_domain::classroom::BoardEvent;
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::log::LogEvent;
use crate::projection::{ProjectionError, Tables};

use super::boards::{BOARDS, ELEMENTS, OPS};

type ElementKey = (Uuid, String);

/// A run of Board events folded in memory: see [`BoardsProjection`].
#[derive(Default)]
pub(super) struct BoardRun {
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
    pub(super) async fn prefetch(
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

    pub(super) async fn fold(
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
            BoardEvent::OpRejected { .. } | BoardEvent::OpDuplicated { .. } => {}
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
    pub(super) async fn write(
        self,
        conn: &mut PgConnection,
        t: &Tables,
    ) -> Result<(), ProjectionError> {
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
