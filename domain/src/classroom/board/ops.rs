//! The operation vocabulary: what a client may ask of a board, and what it
//! is answered.

use serde::{Deserialize, Serialize};

use crate::classroom::values::OpData;

/// Operations one request may carry.
pub const MAX_OPS_PER_REQUEST: usize = 100;
/// Operations per client remembered for duplicate detection: a retry of one
/// of a client's last this-many operations gets the original answer.
pub const DEDUP_WINDOW: usize = 128;
/// How many of its operations a client can undo.
pub const UNDO_DEPTH: usize = 100;
/// The largest Lamport time a client may send: the largest integer a
/// JavaScript number holds exactly (2^53 - 1). Larger ones are refused, so
/// the clock can never wrap around.
pub const MAX_LAMPORT: u64 = (1 << 53) - 1;
/// How far a client's Lamport time may run ahead of the board's: a client
/// that worked offline is ahead by the ops it made, not by more. A time
/// further ahead is refused, so no client can push an element's time out of
/// the others' reach.
pub const MAX_LAMPORT_LEAD: u64 = 1 << 20;
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
    /// The kind as clients send it.
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

    pub(super) fn is_edit(self) -> bool {
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
    /// The sending client's id.
    pub client_id: String,
    /// The client's id for the operation.
    pub op_id: String,
    /// The Lamport time the server gave it.
    pub lamport: u64,
    /// What the operation does.
    pub kind: OpKind,
    /// The element it edits.
    #[serde(default)]
    pub element_id: Option<String>,
    /// The operation's data.
    #[serde(default)]
    pub data: OpData,
}

/// The server's answer to one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum OpOutcome {
    /// Applied.
    Applied {
        /// The board version the operation got.
        server_version: u64,
        /// The Lamport time the server gave it.
        lamport: u64,
    },
    /// Rejected.
    Rejected {
        /// Why.
        reason: RejectReason,
    },
}

/// Why an operation was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Another user's client uses this `client_id`.
    ClientIdInUse,
    /// The client has no op of its own left to undo.
    NothingToUndo,
    /// The client has no undone op left to redo.
    NothingToRedo,
    /// Only the lesson's tutor (or an admin) clears the board.
    ClearNotAllowed,
    /// An edit needs a 1 to 128 byte `element_id`.
    ElementIdRequired,
    /// A batch carries 1 to 100 ops in `data.ops`.
    #[serde(rename = "batch_needs_1_to_100_ops")]
    BatchNeedsOneToHundredOps,
    /// A batch item's `kind` is not an edit.
    BatchItemKindInvalid,
    /// `add` of an element that exists.
    ElementExists,
    /// An edit of an element that does not exist.
    UnknownElement,
    /// A concurrent write won under the board's policy.
    Superseded,
    /// A concurrent write, under the `reject` policy: rebase and resend.
    Conflict,
    /// A Lamport time past [`MAX_LAMPORT`], or more than
    /// [`MAX_LAMPORT_LEAD`] ahead of the board's.
    LamportOutOfRange,
}

impl RejectReason {
    /// The reason as clients see it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientIdInUse => "client_id_in_use",
            Self::NothingToUndo => "nothing_to_undo",
            Self::NothingToRedo => "nothing_to_redo",
            Self::ClearNotAllowed => "clear_not_allowed",
            Self::ElementIdRequired => "element_id_required",
            Self::BatchNeedsOneToHundredOps => "batch_needs_1_to_100_ops",
            Self::BatchItemKindInvalid => "batch_item_kind_invalid",
            Self::ElementExists => "element_exists",
            Self::UnknownElement => "unknown_element",
            Self::Superseded => "superseded",
            Self::Conflict => "conflict",
            Self::LamportOutOfRange => "lamport_out_of_range",
        }
    }
}
