//! The Board aggregate: a lesson's whiteboard, synchronised by the server.
//!
//! The server orders operations: each applied one gets the next
//! `server_version` and a Lamport time of `max(client, server) + 1`. The
//! aggregate holds only what deciding needs: the roster, the clocks, one
//! stamp per live element (who wrote it last, at which Lamport time), and a
//! short memory per client for duplicates and undo. Element contents live in
//! the `board_elements` read model; [`plan`] and [`edit_value`] say how an
//! operation changes them, for the projection and for any client replaying
//! the operation log alike.
//!
//! Conflicts on one element are settled by the board's [`ConflictPolicy`].
//! Operations from the element's last writer never conflict; another
//! client's write conflicts when it cannot have seen the last write (its
//! Lamport time is not above the element's).

use std::collections::{BTreeMap, HashMap, VecDeque};

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{domain_event, Actor, LessonStatus, Roster};

/// Operations one request may carry.
pub const MAX_OPS_PER_REQUEST: usize = 100;
/// The largest `data` of one operation, in bytes of JSON.
pub const MAX_OP_DATA_BYTES: usize = 64 * 1024;
/// Operations per client remembered for duplicate detection: a retry of one
/// of a client's last this-many operations gets the original answer.
pub const DEDUP_WINDOW: usize = 128;
/// How many of its operations a client can undo.
pub const UNDO_DEPTH: usize = 100;
/// Longest client and operation id.
pub const MAX_ID_LEN: usize = 128;

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Create an element with `data`.
    Add,
    /// Merge `data` into an element (a `null` member removes that member).
    Update,
    /// Remove an element.
    Delete,
    /// Merge a position (`data` such as `{"x":1,"y":2}`).
    Move,
    /// Merge a transform (`data` such as `{"rotation":90,"scale":2}`).
    Transform,
    /// Several edits applied together or not at all: `data.ops` is a list of
    /// `{kind, element_id, data}` with kind add, update, delete, move or
    /// transform.
    Batch,
    /// Undo the client's most recent operation that is not undone.
    Undo,
    /// Redo the client's most recently undone operation.
    Redo,
    /// Remove every element (the lesson's tutor or an admin only).
    Clear,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Move => "move",
            Self::Transform => "transform",
            Self::Batch => "batch",
            Self::Undo => "undo",
            Self::Redo => "redo",
            Self::Clear => "clear",
        }
    }

    fn is_edit(self) -> bool {
        matches!(
            self,
            Self::Add | Self::Update | Self::Delete | Self::Move | Self::Transform
        )
    }
}

/// How concurrent writes to one element are settled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    /// The greater `(lamport, client_id)` wins; the other is `superseded`.
    #[default]
    LastWriteWins,
    /// The write the server received first stands; a later concurrent one
    /// is `superseded`.
    FirstWriteWins,
    /// A concurrent write is refused with `conflict`: the client should
    /// rebase on the current state and send it again.
    Reject,
}

/// One operation as a client sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpRequest {
    pub client_id: String,
    pub op_id: String,
    pub lamport: u64,
    pub kind: OpKind,
    #[serde(default)]
    pub element_id: Option<String>,
    #[serde(default)]
    pub data: Value,
}

/// The server's answer to one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum OpOutcome {
    Applied { server_version: u64, lamport: u64 },
    Rejected { reason: String },
}

/// One element edit: an operation of an edit kind, or one item of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Edit<'a> {
    pub kind: OpKind,
    pub element_id: &'a str,
    pub data: &'a Value,
}

/// The element edits of an operation of an edit kind or a batch; `Err`
/// says why the operation is malformed.
pub fn edits<'a>(
    kind: OpKind,
    element_id: Option<&'a str>,
    data: &'a Value,
) -> Result<Vec<Edit<'a>>, String> {
    fn id_ok(id: &str) -> bool {
        !id.is_empty() && id.len() <= MAX_ID_LEN
    }
    match kind {
        k if k.is_edit() => match element_id {
            Some(id) if id_ok(id) => Ok(vec![Edit {
                kind: k,
                element_id: id,
                data,
            }]),
            _ => Err("element_id_required".into()),
        },
        OpKind::Batch => {
            let items = data
                .get("ops")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty() && a.len() <= MAX_OPS_PER_REQUEST)
                .ok_or_else(|| "batch_needs_1_to_100_ops".to_owned())?;
            items
                .iter()
                .map(|item| {
                    let kind: OpKind = item
                        .get("kind")
                        .cloned()
                        .and_then(|k| serde_json::from_value(k).ok())
                        .filter(|k: &OpKind| k.is_edit())
                        .ok_or_else(|| "batch_item_kind_invalid".to_owned())?;
                    let id = item
                        .get("element_id")
                        .and_then(Value::as_str)
                        .filter(|id| id_ok(id))
                        .ok_or_else(|| "element_id_required".to_owned())?;
                    Ok(Edit {
                        kind,
                        element_id: id,
                        data: item.get("data").unwrap_or(&Value::Null),
                    })
                })
                .collect()
        }
        _ => Ok(Vec::new()),
    }
}

/// An element's value after `edit` of kind `kind` with `data`, given its
/// value before.
pub fn edit_value(kind: OpKind, before: Option<&Value>, data: &Value) -> Option<Value> {
    match kind {
        OpKind::Add => Some(data.clone()),
        OpKind::Delete => None,
        _ => {
            let mut value = before.cloned().unwrap_or(Value::Object(Default::default()));
            match (value.as_object_mut(), data.as_object()) {
                (Some(target), Some(patch)) => {
                    for (k, v) in patch {
                        if v.is_null() {
                            target.remove(k);
                        } else {
                            target.insert(k.clone(), v.clone());
                        }
                    }
                }
                _ => value = data.clone(),
            }
            Some(value)
        }
    }
}

/// How one element changed: what an undo restores and a redo repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub element_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// One step of applying an operation to element contents.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<'a> {
    Edit(Edit<'a>),
    /// Set the element to this value (undo and redo).
    Set(&'a str, Option<&'a Value>),
    /// Remove every element.
    ClearAll,
}

/// The steps that apply an applied operation to element contents. Undo and
/// redo need the changes their target operation made.
pub fn plan<'a>(
    kind: OpKind,
    element_id: Option<&'a str>,
    data: &'a Value,
    target: Option<&'a [Change]>,
) -> Vec<Step<'a>> {
    match kind {
        OpKind::Undo => target
            .unwrap_or_default()
            .iter()
            .rev()
            .map(|c| Step::Set(&c.element_id, c.before.as_ref()))
            .collect(),
        OpKind::Redo => target
            .unwrap_or_default()
            .iter()
            .map(|c| Step::Set(&c.element_id, c.after.as_ref()))
            .collect(),
        OpKind::Clear => vec![Step::ClearAll],
        _ => edits(kind, element_id, data)
            .unwrap_or_default()
            .into_iter()
            .map(Step::Edit)
            .collect(),
    }
}

/// The SHA-256 of a board's elements, hex: over each element in id order,
/// its id, a NUL, its value as canonical JSON (object members sorted) and a
/// newline.
pub fn checksum<'a>(elements: impl IntoIterator<Item = (&'a str, &'a Value)>) -> String {
    let mut sorted: Vec<_> = elements.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut hash = Sha256::new();
    let mut buf = String::new();
    for (id, value) in sorted {
        buf.clear();
        canonical(value, &mut buf);
        hash.update(id.as_bytes());
        hash.update([0]);
        hash.update(buf.as_bytes());
        hash.update(b"\n");
    }
    hex::encode(hash.finalize())
}

fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<_> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Element contents replayed from the operation log, as a client would.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BoardModel {
    pub elements: BTreeMap<String, Value>,
    history: HashMap<u64, Vec<Change>>,
}

impl BoardModel {
    /// Apply the operation applied at `server_version`.
    pub fn apply(
        &mut self,
        server_version: u64,
        kind: OpKind,
        element_id: Option<&str>,
        data: &Value,
        target_version: Option<u64>,
    ) {
        let target = target_version.and_then(|v| self.history.get(&v).cloned());
        let mut changes = Vec::new();
        for step in plan(kind, element_id, data, target.as_deref()) {
            let (id, after) = match step {
                Step::ClearAll => {
                    self.elements.clear();
                    continue;
                }
                Step::Edit(e) => (
                    e.element_id,
                    edit_value(e.kind, self.elements.get(e.element_id), e.data),
                ),
                Step::Set(id, value) => (id, value.cloned()),
            };
            let before = match &after {
                Some(v) => self.elements.insert(id.to_owned(), v.clone()),
                None => self.elements.remove(id),
            };
            changes.push(Change {
                element_id: id.to_owned(),
                before,
                after,
            });
        }
        self.history.insert(server_version, changes);
    }

    pub fn checksum(&self) -> String {
        checksum(self.elements.iter().map(|(k, v)| (k.as_str(), v)))
    }
}

/// Who wrote an element last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub lamport: u64,
    pub client_id: String,
}

/// An operation that can be undone: the elements it touched, whether each
/// existed before it and after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undoable {
    pub version: u64,
    pub elements: Vec<(String, bool, bool)>,
}

/// What the board remembers of one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientLog {
    pub user_id: Uuid,
    pub recent: VecDeque<(String, OpOutcome)>,
    pub undo: Vec<Undoable>,
    pub redo: Vec<Undoable>,
}

/// A lesson's whiteboard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Board {
    pub roster: Roster,
    pub policy: ConflictPolicy,
    pub server_version: u64,
    pub lamport: u64,
    pub elements: HashMap<String, Stamp>,
    pub clients: HashMap<String, ClientLog>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BoardCommand {
    /// Copy the lesson's roster (ignored unless newer than the copy held).
    SyncRoster {
        roster: Roster,
    },
    SetPolicy {
        by: Actor,
        policy: ConflictPolicy,
    },
    Apply {
        by: Actor,
        ops: Vec<OpRequest>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BoardEvent {
    RosterSynced {
        roster: Roster,
    },
    PolicyChanged {
        policy: ConflictPolicy,
    },
    OpApplied {
        client_id: String,
        op_id: String,
        user_id: Uuid,
        kind: OpKind,
        #[serde(default)]
        element_id: Option<String>,
        #[serde(default)]
        data: Value,
        client_lamport: u64,
        lamport: u64,
        server_version: u64,
        /// For undo and redo: the operation undone or redone.
        #[serde(default)]
        target_version: Option<u64>,
    },
    OpRejected {
        client_id: String,
        op_id: String,
        user_id: Uuid,
        kind: OpKind,
        reason: String,
    },
    /// A retried operation; nothing changed and the original answer was
    /// given again.
    OpDuplicate {
        client_id: String,
        op_id: String,
        user_id: Uuid,
        original: OpOutcome,
    },
}

domain_event!(BoardEvent {
    RosterSynced,
    PolicyChanged,
    OpApplied,
    OpRejected,
    OpDuplicate,
});

impl BoardEvent {
    /// The answer this event gives to the operation it records.
    pub fn outcome(&self) -> Option<(&str, &str, OpOutcome)> {
        match self {
            Self::OpApplied {
                client_id,
                op_id,
                server_version,
                lamport,
                ..
            } => Some((
                client_id,
                op_id,
                OpOutcome::Applied {
                    server_version: *server_version,
                    lamport: *lamport,
                },
            )),
            Self::OpRejected {
                client_id,
                op_id,
                reason,
                ..
            } => Some((
                client_id,
                op_id,
                OpOutcome::Rejected {
                    reason: reason.clone(),
                },
            )),
            Self::OpDuplicate {
                client_id,
                op_id,
                original,
                ..
            } => Some((client_id, op_id, original.clone())),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoardError {
    #[error("no such board")]
    NotFound,
    #[error("only the lesson's tutor and enrolled students may draw")]
    NotParticipant,
    #[error("the lesson is not live")]
    NotLive,
    #[error("only the lesson's tutor or an admin may do this")]
    NotOwner,
}

impl Board {
    fn exists(&self) -> Result<(), BoardError> {
        if self.roster.lesson_version == 0 {
            Err(BoardError::NotFound)
        } else {
            Ok(())
        }
    }

    /// Whether `by` may draw now.
    pub fn may_draw(&self, by: Actor) -> Result<(), BoardError> {
        self.exists()?;
        if by.own_only && !self.roster.takes_part(by.user_id) {
            return Err(BoardError::NotParticipant);
        }
        if self.roster.status != Some(LessonStatus::Live) {
            return Err(BoardError::NotLive);
        }
        Ok(())
    }

    /// Decide one operation on the current state.
    fn decide_op(&self, by: Actor, op: OpRequest) -> BoardEvent {
        let reject = |reason: &str| BoardEvent::OpRejected {
            client_id: op.client_id.clone(),
            op_id: op.op_id.clone(),
            user_id: by.user_id,
            kind: op.kind,
            reason: reason.to_owned(),
        };
        let client = self.clients.get(&op.client_id);
        if let Some(c) = client {
            if c.user_id != by.user_id {
                return reject("client_id_in_use");
            }
            if let Some((_, original)) = c.recent.iter().find(|(id, _)| *id == op.op_id) {
                return BoardEvent::OpDuplicate {
                    client_id: op.client_id.clone(),
                    op_id: op.op_id.clone(),
                    user_id: by.user_id,
                    original: original.clone(),
                };
            }
        }
        let mut target_version = None;
        match op.kind {
            OpKind::Undo | OpKind::Redo => {
                let stack = client.map(|c| {
                    if op.kind == OpKind::Undo {
                        &c.undo
                    } else {
                        &c.redo
                    }
                });
                match stack.and_then(|s| s.last()) {
                    Some(top) => target_version = Some(top.version),
                    None if op.kind == OpKind::Undo => return reject("nothing_to_undo"),
                    None => return reject("nothing_to_redo"),
                }
            }
            OpKind::Clear => {
                if by.own_only && self.roster.tutor_id != Some(by.user_id) {
                    return reject("clear_not_allowed");
                }
            }
            _ => {
                let edits = match edits(op.kind, op.element_id.as_deref(), &op.data) {
                    Ok(e) => e,
                    Err(reason) => return reject(&reason),
                };
                if let Err(reason) = self.check_edits(&op, &edits) {
                    return reject(reason);
                }
            }
        }
        BoardEvent::OpApplied {
            client_id: op.client_id,
            op_id: op.op_id,
            user_id: by.user_id,
            kind: op.kind,
            element_id: op.element_id,
            data: op.data,
            client_lamport: op.lamport,
            lamport: op.lamport.max(self.lamport) + 1,
            server_version: self.server_version + 1,
            target_version,
        }
    }

    /// Check edits in order against the element stamps and the policy.
    fn check_edits(&self, op: &OpRequest, edits: &[Edit<'_>]) -> Result<(), &'static str> {
        // Existence as the batch goes along.
        let mut exists: HashMap<&str, bool> = HashMap::new();
        for e in edits {
            let present = *exists
                .entry(e.element_id)
                .or_insert_with(|| self.elements.contains_key(e.element_id));
            if e.kind == OpKind::Add {
                if present {
                    return Err("element_exists");
                }
            } else {
                if !present {
                    return Err("unknown_element");
                }
                if let Some(stamp) = self.elements.get(e.element_id) {
                    self.settle(op, stamp)?;
                }
            }
            exists.insert(e.element_id, e.kind != OpKind::Delete);
        }
        Ok(())
    }

    /// Whether `op` may overwrite the write `stamp` records.
    fn settle(&self, op: &OpRequest, stamp: &Stamp) -> Result<(), &'static str> {
        if stamp.client_id == op.client_id || op.lamport > stamp.lamport {
            return Ok(());
        }
        match self.policy {
            ConflictPolicy::LastWriteWins => {
                if (op.lamport, op.client_id.as_str()) > (stamp.lamport, stamp.client_id.as_str()) {
                    Ok(())
                } else {
                    Err("superseded")
                }
            }
            ConflictPolicy::FirstWriteWins => Err("superseded"),
            ConflictPolicy::Reject => Err("conflict"),
        }
    }

    fn set_exists(&mut self, id: &str, exists: bool, lamport: u64, client_id: &str) {
        if exists {
            self.elements.insert(
                id.to_owned(),
                Stamp {
                    lamport,
                    client_id: client_id.to_owned(),
                },
            );
        } else {
            self.elements.remove(id);
        }
    }

    fn remember(
        &mut self,
        client_id: &str,
        user_id: Uuid,
        op_id: &str,
        outcome: OpOutcome,
    ) -> &mut ClientLog {
        let log = self
            .clients
            .entry(client_id.to_owned())
            .or_insert_with(|| ClientLog {
                user_id,
                recent: VecDeque::new(),
                undo: Vec::new(),
                redo: Vec::new(),
            });
        if log.recent.len() == DEDUP_WINDOW {
            log.recent.pop_front();
        }
        log.recent.push_back((op_id.to_owned(), outcome));
        log
    }
}

impl Aggregate for Board {
    const TYPE: &'static str = "Board";
    type Command = BoardCommand;
    type Event = BoardEvent;
    type Error = BoardError;
    type Services = ();

    async fn handle(
        &mut self,
        command: BoardCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), BoardError> {
        match command {
            BoardCommand::SyncRoster { roster } => {
                if roster.lesson_version > self.roster.lesson_version {
                    sink.write(BoardEvent::RosterSynced { roster }, self).await;
                }
            }
            BoardCommand::SetPolicy { by, policy } => {
                self.exists()?;
                if by.own_only && self.roster.tutor_id != Some(by.user_id) {
                    return Err(BoardError::NotOwner);
                }
                if policy != self.policy {
                    sink.write(BoardEvent::PolicyChanged { policy }, self).await;
                }
            }
            BoardCommand::Apply { by, ops } => {
                self.may_draw(by)?;
                // The sink applies each event at once, so every operation is
                // decided on the state its predecessors left.
                for op in ops {
                    let event = self.decide_op(by, op);
                    sink.write(event, self).await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: BoardEvent) {
        match event {
            BoardEvent::RosterSynced { roster } => self.roster = roster,
            BoardEvent::PolicyChanged { policy } => self.policy = policy,
            BoardEvent::OpRejected {
                client_id,
                op_id,
                user_id,
                reason,
                ..
            } => {
                self.remember(&client_id, user_id, &op_id, OpOutcome::Rejected { reason });
            }
            BoardEvent::OpDuplicate { .. } => {}
            BoardEvent::OpApplied {
                client_id,
                op_id,
                user_id,
                kind,
                element_id,
                data,
                lamport,
                server_version,
                ..
            } => {
                self.server_version = server_version;
                self.lamport = lamport;
                let outcome = OpOutcome::Applied {
                    server_version,
                    lamport,
                };
                match kind {
                    OpKind::Clear => {
                        self.elements.clear();
                        for c in self.clients.values_mut() {
                            c.undo.clear();
                            c.redo.clear();
                        }
                        self.remember(&client_id, user_id, &op_id, outcome);
                    }
                    OpKind::Undo | OpKind::Redo => {
                        let log = self.remember(&client_id, user_id, &op_id, outcome);
                        let (from, to) = if kind == OpKind::Undo {
                            (&mut log.undo, &mut log.redo)
                        } else {
                            (&mut log.redo, &mut log.undo)
                        };
                        let Some(entry) = from.pop() else { return };
                        to.push(entry.clone());
                        let undo = kind == OpKind::Undo;
                        let mut steps: Vec<(String, bool)> = entry
                            .elements
                            .iter()
                            .map(|(id, before, after)| {
                                (id.clone(), if undo { *before } else { *after })
                            })
                            .collect();
                        if undo {
                            steps.reverse();
                        }
                        for (id, exists) in steps {
                            self.set_exists(&id, exists, lamport, &client_id);
                        }
                    }
                    _ => {
                        let mut touched = Vec::new();
                        for e in edits(kind, element_id.as_deref(), &data).unwrap_or_default() {
                            let before = self.elements.contains_key(e.element_id);
                            let after = e.kind != OpKind::Delete;
                            self.set_exists(e.element_id, after, lamport, &client_id);
                            touched.push((e.element_id.to_owned(), before, after));
                        }
                        let log = self.remember(&client_id, user_id, &op_id, outcome);
                        log.redo.clear();
                        log.undo.push(Undoable {
                            version: server_version,
                            elements: touched,
                        });
                        if log.undo.len() > UNDO_DEPTH {
                            log.undo.remove(0);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const TUTOR: Uuid = Uuid::from_u128(1);
    const STUDENT: Uuid = Uuid::from_u128(2);

    fn live() -> Board {
        let mut b = Board::default();
        b.apply(BoardEvent::RosterSynced {
            roster: Roster {
                lesson_version: 2,
                tutor_id: Some(TUTOR),
                students: vec![STUDENT],
                status: Some(LessonStatus::Live),
            },
        });
        b
    }

    fn op(client: &str, id: &str, lamport: u64, kind: OpKind, el: &str, data: Value) -> OpRequest {
        OpRequest {
            client_id: client.into(),
            op_id: id.into(),
            lamport,
            kind,
            element_id: (!el.is_empty()).then(|| el.to_owned()),
            data,
        }
    }

    fn who(user: Uuid) -> Actor {
        Actor {
            user_id: user,
            own_only: true,
        }
    }

    /// When `ops` are applied by `user`, then these outcomes; the board is
    /// left with their events applied.
    fn when(board: &mut Board, user: Uuid, ops: Vec<OpRequest>) -> Vec<OpOutcome> {
        let mut out = Vec::new();
        for o in ops {
            let e = board.decide_op(who(user), o);
            out.push(e.outcome().expect("an op event").2);
            board.apply(e);
        }
        out
    }

    fn applied(v: u64, l: u64) -> OpOutcome {
        OpOutcome::Applied {
            server_version: v,
            lamport: l,
        }
    }

    fn rejected(r: &str) -> OpOutcome {
        OpOutcome::Rejected { reason: r.into() }
    }

    #[test]
    fn versions_and_lamport_clocks() {
        let mut b = live();
        let out = when(
            &mut b,
            TUTOR,
            vec![
                op("t", "1", 5, OpKind::Add, "a", json!({"x": 1})),
                op("t", "2", 1, OpKind::Move, "a", json!({"x": 2})),
            ],
        );
        assert_eq!(out, [applied(1, 6), applied(2, 7)]);
    }

    #[test]
    fn duplicates_get_the_original_answer() {
        let mut b = live();
        let o = op("t", "1", 1, OpKind::Add, "a", json!({}));
        when(&mut b, TUTOR, vec![o.clone()]);
        let again = b.decide_op(who(TUTOR), o);
        assert!(matches!(again, BoardEvent::OpDuplicate { .. }));
        assert_eq!(again.outcome().expect("a test value").2, applied(1, 2));
        b.apply(again);
        assert_eq!(b.server_version, 1);
        // Another user cannot use the same client id.
        let stolen = when(
            &mut b,
            STUDENT,
            vec![op("t", "9", 1, OpKind::Add, "z", json!({}))],
        );
        assert_eq!(stolen, [rejected("client_id_in_use")]);
    }

    #[test]
    fn conflicts_follow_the_policy() {
        for (policy, expected) in [
            (ConflictPolicy::LastWriteWins, applied(2, 3)),
            (ConflictPolicy::FirstWriteWins, rejected("superseded")),
            (ConflictPolicy::Reject, rejected("conflict")),
        ] {
            let mut b = live();
            b.apply(BoardEvent::PolicyChanged { policy });
            when(
                &mut b,
                TUTOR,
                vec![op("a", "1", 1, OpKind::Add, "e", json!({}))],
            );
            // Client "b" has not seen the add (lamport 2 is not above 2) but
            // wins the (lamport, client id) tie under last-write-wins.
            let out = when(
                &mut b,
                STUDENT,
                vec![op("b", "1", 2, OpKind::Update, "e", json!({"c": 1}))],
            );
            assert_eq!(out, [expected], "{policy:?}");
        }
        // A write that has seen the last one never conflicts.
        let mut b = live();
        b.apply(BoardEvent::PolicyChanged {
            policy: ConflictPolicy::Reject,
        });
        when(
            &mut b,
            TUTOR,
            vec![op("a", "1", 1, OpKind::Add, "e", json!({}))],
        );
        let out = when(
            &mut b,
            STUDENT,
            vec![op("b", "1", 3, OpKind::Update, "e", json!({}))],
        );
        assert_eq!(out, [applied(2, 4)]);
    }

    #[test]
    fn undo_and_redo_apply_to_own_ops() {
        let mut b = live();
        let mut model = BoardModel::default();
        let ops = vec![
            op("t", "1", 1, OpKind::Add, "a", json!({"x": 1})),
            op("t", "2", 2, OpKind::Move, "a", json!({"x": 5})),
        ];
        when(&mut b, TUTOR, ops.clone());
        // The student has nothing to undo; the tutor's ops are not theirs.
        assert_eq!(
            when(
                &mut b,
                STUDENT,
                vec![op("s", "1", 9, OpKind::Undo, "", Value::Null)]
            ),
            [rejected("nothing_to_undo")]
        );
        let undo = b.decide_op(who(TUTOR), op("t", "3", 3, OpKind::Undo, "", Value::Null));
        let BoardEvent::OpApplied { target_version, .. } = &undo else {
            panic!("undo applied: {undo:?}")
        };
        assert_eq!(*target_version, Some(2));
        b.apply(undo);
        let redo = b.decide_op(who(TUTOR), op("t", "4", 4, OpKind::Redo, "", Value::Null));
        assert!(matches!(
            redo,
            BoardEvent::OpApplied {
                target_version: Some(2),
                ..
            }
        ));
        // The model replays the same log.
        for (v, o) in ops.iter().enumerate() {
            model.apply(v as u64 + 1, o.kind, o.element_id.as_deref(), &o.data, None);
        }
        model.apply(3, OpKind::Undo, None, &Value::Null, Some(2));
        assert_eq!(model.elements["a"], json!({"x": 1}));
        model.apply(4, OpKind::Redo, None, &Value::Null, Some(2));
        assert_eq!(model.elements["a"], json!({"x": 5}));
        // Undoing the add removes the element in both.
        model.apply(5, OpKind::Undo, None, &Value::Null, Some(2));
        model.apply(6, OpKind::Undo, None, &Value::Null, Some(1));
        assert!(model.elements.is_empty());
    }

    #[test]
    fn batches_are_all_or_nothing() {
        let mut b = live();
        let bad = op(
            "t",
            "1",
            1,
            OpKind::Batch,
            "",
            json!({"ops": [{"kind": "add", "element_id": "a", "data": {}}, {"kind": "update", "element_id": "zz", "data": {}}]}),
        );
        assert_eq!(
            when(&mut b, TUTOR, vec![bad]),
            [rejected("unknown_element")]
        );
        assert!(b.elements.is_empty());
        let good = op(
            "t",
            "2",
            1,
            OpKind::Batch,
            "",
            json!({"ops": [{"kind": "add", "element_id": "a", "data": {}}, {"kind": "update", "element_id": "a", "data": {"k": 1}}]}),
        );
        assert_eq!(when(&mut b, TUTOR, vec![good]), [applied(1, 2)]);
        assert!(b.elements.contains_key("a"));
    }

    #[test]
    fn only_participants_draw_while_live() {
        let b = live();
        let stranger = Uuid::from_u128(7);
        assert_eq!(b.may_draw(who(stranger)), Err(BoardError::NotParticipant));
        assert_eq!(b.may_draw(who(STUDENT)), Ok(()));
        assert_eq!(b.may_draw(Actor::unrestricted(stranger)), Ok(()));
        let mut ended = live();
        let mut roster = ended.roster.clone();
        roster.lesson_version = 3;
        roster.status = Some(LessonStatus::Ended);
        ended.apply(BoardEvent::RosterSynced { roster });
        assert_eq!(ended.may_draw(who(STUDENT)), Err(BoardError::NotLive));
        assert_eq!(
            when(
                &mut live(),
                STUDENT,
                vec![op("s", "1", 1, OpKind::Clear, "", Value::Null)]
            ),
            [rejected("clear_not_allowed")]
        );
    }

    #[test]
    fn checksums_ignore_member_order() {
        let a = json!({"b": 1, "a": [1, {"y": 2, "x": 1}]});
        let b: Value =
            serde_json::from_str(r#"{"a":[1,{"x":1,"y":2}],"b":1}"#).expect("a test value");
        assert_eq!(checksum([("e", &a)]), checksum([("e", &b)]));
        assert_ne!(checksum([("e", &a)]), checksum([("f", &a)]));
    }
}
