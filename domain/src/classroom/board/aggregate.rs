//! The Board aggregate: clocks, element stamps, and each client's recent
//! answers and undo stack; its commands, events and errors.
//!
//! Past 500 lines on purpose: deciding an operation (duplicates, undo and
//! redo, the conflict policy) and applying its event are one state machine
//! over private fields, and most of the length is the events' field docs.

use std::collections::{HashMap, VecDeque};

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::content::{edits, Edit};
use super::ops::*;
use crate::classroom::{domain_event, Actor, LessonStatus, Roster};

/// Who wrote an element last, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// The Lamport time the server gave it.
    pub lamport: u64,
    /// The sending client's id.
    pub client_id: String,
}

/// An operation that can be undone: the elements it touched, whether each
/// existed before it and after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undoable {
    /// The stream version.
    pub version: u64,
    /// The elements by id.
    pub elements: Vec<(String, bool, bool)>,
}

/// What the board remembers of one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientLog {
    /// The user.
    pub user_id: Uuid,
    /// Recent answers, for duplicates.
    pub recent: VecDeque<(String, OpOutcome)>,
    /// Ops the client can undo.
    pub undo: Vec<Undoable>,
    /// Ops the client can redo.
    pub redo: Vec<Undoable>,
}

/// A lesson's whiteboard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Board {
    /// The lesson's roster at its version.
    pub roster: Roster,
    /// The conflict policy.
    pub policy: ConflictPolicy,
    /// The board version the operation got.
    pub server_version: u64,
    /// The Lamport time the server gave it.
    pub lamport: u64,
    /// The elements by id.
    pub elements: HashMap<String, Stamp>,
    /// What the board remembers of each client.
    pub clients: HashMap<String, ClientLog>,
}

/// What may be asked of a board.
#[derive(Debug, Clone, PartialEq)]
pub enum BoardCommand {
    /// Copy the lesson's roster (ignored unless newer than the copy held).
    SyncRoster {
        /// The lesson's roster at its version.
        roster: Roster,
    },
    /// Set policy.
    SetPolicy {
        /// Who did it.
        by: Actor,
        /// The conflict policy.
        policy: ConflictPolicy,
    },
    /// Apply operations in order, one answer each.
    Apply {
        /// Who did it.
        by: Actor,
        /// The operations, applied in order.
        ops: Vec<OpRequest>,
    },
}

impl crate::CommandName for BoardCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::SyncRoster { .. } => "SyncRoster",
            Self::SetPolicy { .. } => "SetBoardPolicy",
            Self::Apply { .. } => "ApplyBoardOps",
        }
    }
}

/// What happened on a board.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BoardEvent {
    /// Roster synced.
    RosterSynced {
        /// The lesson's roster at its version.
        roster: Roster,
    },
    /// Policy changed.
    PolicyChanged {
        /// The conflict policy.
        policy: ConflictPolicy,
    },
    /// Op applied.
    OpApplied {
        /// The sending client's id.
        client_id: String,
        /// The client's id for the operation.
        op_id: String,
        /// The user.
        user_id: Uuid,
        /// What the operation does.
        kind: OpKind,
        /// The element it edits.
        #[serde(default)]
        element_id: Option<String>,
        /// The operation's data.
        #[serde(default)]
        data: Value,
        /// The client's Lamport time.
        client_lamport: u64,
        /// The Lamport time the server gave it.
        lamport: u64,
        /// The board version the operation got.
        server_version: u64,
        /// For undo and redo: the operation undone or redone.
        #[serde(default)]
        target_version: Option<u64>,
    },
    /// Op rejected.
    OpRejected {
        /// The sending client's id.
        client_id: String,
        /// The client's id for the operation.
        op_id: String,
        /// The user.
        user_id: Uuid,
        /// What the operation does.
        kind: OpKind,
        /// Why.
        reason: RejectReason,
    },
    /// A retried operation; nothing changed and the original answer was
    /// given again. Recorded as `OpDuplicate` before the name was put in the
    /// past tense; those stored events still read as this one.
    #[serde(alias = "OpDuplicate")]
    OpDuplicated {
        /// The sending client's id.
        client_id: String,
        /// The client's id for the operation.
        op_id: String,
        /// The user.
        user_id: Uuid,
        /// The answer first given.
        original: OpOutcome,
    },
}

domain_event!(BoardEvent {
    RosterSynced,
    PolicyChanged,
    OpApplied,
    OpRejected,
    OpDuplicated,
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
            } => Some((client_id, op_id, OpOutcome::Rejected { reason: *reason })),
            Self::OpDuplicated {
                client_id,
                op_id,
                original,
                ..
            } => Some((client_id, op_id, original.clone())),
            _ => None,
        }
    }
}

/// Why a board command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoardError {
    /// No such board.
    #[error("no such board")]
    NotFound,
    /// Only the lesson's tutor and enrolled students may draw.
    #[error("only the lesson's tutor and enrolled students may draw")]
    NotParticipant,
    /// The lesson is not live.
    #[error("the lesson is not live")]
    NotLive,
    /// Only the lesson's tutor or an admin may do this.
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
        let reject = |reason: RejectReason| BoardEvent::OpRejected {
            client_id: op.client_id.clone(),
            op_id: op.op_id.clone(),
            user_id: by.user_id,
            kind: op.kind,
            reason,
        };
        let client = self.clients.get(&op.client_id);
        if let Some(c) = client {
            if c.user_id != by.user_id {
                return reject(RejectReason::ClientIdInUse);
            }
            if let Some((_, original)) = c.recent.iter().find(|(id, _)| *id == op.op_id) {
                return BoardEvent::OpDuplicated {
                    client_id: op.client_id.clone(),
                    op_id: op.op_id.clone(),
                    user_id: by.user_id,
                    original: original.clone(),
                };
            }
        }
        // Bounded, so `max(client, server) + 1` can neither wrap nor stall.
        let Some(lamport) = op.lamport.max(self.lamport).checked_add(1).filter(|_| {
            op.lamport <= MAX_LAMPORT && op.lamport <= self.lamport.saturating_add(MAX_LAMPORT_LEAD)
        }) else {
            return reject(RejectReason::LamportOutOfRange);
        };
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
                    None if op.kind == OpKind::Undo => return reject(RejectReason::NothingToUndo),
                    None => return reject(RejectReason::NothingToRedo),
                }
            }
            OpKind::Clear => {
                if by.own_only && self.roster.tutor_id != Some(by.user_id) {
                    return reject(RejectReason::ClearNotAllowed);
                }
            }
            _ => {
                let edits = match edits(op.kind, op.element_id.as_deref(), op.data.as_value()) {
                    Ok(e) => e,
                    Err(reason) => return reject(reason),
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
            data: op.data.into_value(),
            client_lamport: op.lamport,
            lamport,
            server_version: self.server_version + 1,
            target_version,
        }
    }

    /// Check edits in order against the element stamps and the policy.
    fn check_edits(&self, op: &OpRequest, edits: &[Edit<'_>]) -> Result<(), RejectReason> {
        // Existence as the batch goes along.
        let mut exists: HashMap<&str, bool> = HashMap::new();
        for e in edits {
            let present = *exists
                .entry(e.element_id)
                .or_insert_with(|| self.elements.contains_key(e.element_id));
            if e.kind == OpKind::Add {
                if present {
                    return Err(RejectReason::ElementExists);
                }
            } else {
                if !present {
                    return Err(RejectReason::UnknownElement);
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
    fn settle(&self, op: &OpRequest, stamp: &Stamp) -> Result<(), RejectReason> {
        if stamp.client_id == op.client_id || op.lamport > stamp.lamport {
            return Ok(());
        }
        match self.policy {
            ConflictPolicy::LastWriteWins => {
                if (op.lamport, op.client_id.as_str()) > (stamp.lamport, stamp.client_id.as_str()) {
                    Ok(())
                } else {
                    Err(RejectReason::Superseded)
                }
            }
            ConflictPolicy::FirstWriteWins => Err(RejectReason::Superseded),
            ConflictPolicy::Reject => Err(RejectReason::Conflict),
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
            BoardEvent::OpDuplicated { .. } => {}
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
