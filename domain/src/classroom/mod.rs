//! The classroom: lessons with their enrolments, server-authoritative
//! whiteboards, and chat channels with per-recipient delivery marks.
//!
//! The Lesson stream is the authority on who takes part and whether the
//! lesson is live. Boards and channels keep a copy of that [`Roster`] so
//! that they can check a drawing or a message without reading another
//! stream; the copy is replaced whole and only by a newer lesson version.

pub mod board;
pub mod channel;
pub mod inbox;
pub mod lesson;
pub mod values;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use board::{Board, BoardCommand, BoardError, BoardEvent, ConflictPolicy, OpKind, OpOutcome};
pub use channel::{Channel, ChannelCommand, ChannelError, ChannelEvent};
pub use inbox::{Inbox, InboxCommand, InboxError, InboxEvent};
pub use lesson::{Lesson, LessonCommand, LessonError, LessonEvent, LessonStatus};

/// Who issues a classroom command, as the policy table saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The user.
    pub user_id: Uuid,
    /// The policy allowed the action only on the caller's own resources
    /// (a tutor's own lesson, a student's own enrolment). An admin acts on
    /// anything.
    pub own_only: bool,
}

impl Actor {
    /// An actor the policy allows everything (an admin, or Lectern itself).
    pub fn unrestricted(user_id: Uuid) -> Self {
        Self {
            user_id,
            own_only: false,
        }
    }
}

/// Who takes part in a lesson and whether it is live: the part of a lesson
/// that boards and channels check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// The lesson stream's version this copy was taken at.
    pub lesson_version: u64,
    /// The lesson's tutor.
    pub tutor_id: Option<Uuid>,
    /// The enrolled students.
    pub students: Vec<Uuid>,
    /// The status.
    pub status: Option<LessonStatus>,
}

impl Roster {
    /// The tutor or an enrolled student.
    pub fn takes_part(&self, user: Uuid) -> bool {
        self.tutor_id == Some(user) || self.students.contains(&user)
    }

    /// Everyone who takes part: the tutor, then the students.
    pub fn participants(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.tutor_id
            .into_iter()
            .chain(self.students.iter().copied())
    }

    /// Whether the lesson is live.
    pub fn is_live(&self) -> bool {
        self.status == Some(LessonStatus::Live)
    }
}

/// `DomainEvent` for an enum of struct variants: the event type is the
/// variant's name, and every event is at version 1.
macro_rules! domain_event {
    ($event:ident { $($variant:ident),* $(,)? }) => {
        impl cqrs_es::DomainEvent for $event {
            fn event_type(&self) -> String {
                match self { $(Self::$variant { .. } => stringify!($variant),)* }.to_owned()
            }
            fn event_version(&self) -> String {
                "1".to_owned()
            }
        }
    };
}
pub(crate) use domain_event;
