//! The classroom's problem codes, and how its errors become problems.

use lectern_commands::classroom::ClassroomError;

use axum::http::StatusCode;

use crate::problem::{Code, Problem};

/// The classroom's codes.
impl Code {
    /// No such lesson.
    pub const LESSON_NOT_FOUND: Code = Code::new("lesson_not_found", StatusCode::NOT_FOUND);
    /// No such board.
    pub const BOARD_NOT_FOUND: Code = Code::new("board_not_found", StatusCode::NOT_FOUND);
    /// The student is not enrolled.
    pub const ENROLLMENT_NOT_FOUND: Code = Code::new("enrollment_not_found", StatusCode::NOT_FOUND);
    /// Only the lesson's tutor and enrolled students take part.
    pub const NOT_PARTICIPANT: Code = Code::new("not_participant", StatusCode::FORBIDDEN);
    /// The lesson is not live.
    pub const LESSON_NOT_LIVE: Code = Code::new("lesson_not_live", StatusCode::FORBIDDEN);
    /// No seat is left.
    pub const LESSON_FULL: Code = Code::new("lesson_full", StatusCode::CONFLICT);
    /// The student is enrolled already.
    pub const ALREADY_ENROLLED: Code = Code::new("already_enrolled", StatusCode::CONFLICT);
    /// The lesson was cancelled.
    pub const LESSON_CANCELLED: Code = Code::new("lesson_cancelled", StatusCode::CONFLICT);
    /// The lesson cannot make this transition.
    pub const INVALID_TRANSITION: Code =
        Code::new("invalid_transition", StatusCode::UNPROCESSABLE_ENTITY);
    /// A bulk request with `atomic: true` had a refused item.
    pub const BULK_REJECTED: Code = Code::new("bulk_rejected", StatusCode::UNPROCESSABLE_ENTITY);

    /// Every classroom code.
    pub const CLASSROOM: &'static [Code] = &[
        Self::LESSON_NOT_FOUND,
        Self::BOARD_NOT_FOUND,
        Self::ENROLLMENT_NOT_FOUND,
        Self::NOT_PARTICIPANT,
        Self::LESSON_NOT_LIVE,
        Self::LESSON_FULL,
        Self::ALREADY_ENROLLED,
        Self::LESSON_CANCELLED,
        Self::INVALID_TRANSITION,
        Self::BULK_REJECTED,
    ];
}

impl From<ClassroomError> for Problem {
    fn from(e: ClassroomError) -> Self {
        use lectern_domain::classroom::{BoardError as B, ChannelError as C, LessonError as L};
        let detail = e.to_string();
        let code = match e {
            ClassroomError::Lesson(L::NotFound) | ClassroomError::Channel(C::NotFound) => {
                Code::LESSON_NOT_FOUND
            }
            ClassroomError::Board(B::NotFound) => Code::BOARD_NOT_FOUND,
            ClassroomError::Lesson(L::NotEnrolled) => Code::ENROLLMENT_NOT_FOUND,
            ClassroomError::Lesson(L::NotOwner) | ClassroomError::Board(B::NotOwner) => {
                Code::NOT_OWNER
            }
            ClassroomError::Board(B::NotParticipant)
            | ClassroomError::Channel(C::NotParticipant) => Code::NOT_PARTICIPANT,
            ClassroomError::Board(B::NotLive) => Code::LESSON_NOT_LIVE,
            ClassroomError::Lesson(L::Full) => Code::LESSON_FULL,
            ClassroomError::Lesson(L::AlreadyEnrolled) => Code::ALREADY_ENROLLED,
            ClassroomError::Channel(C::Closed) => Code::LESSON_CANCELLED,
            ClassroomError::Lesson(L::InvalidTransition { .. }) => Code::INVALID_TRANSITION,
            ClassroomError::Lesson(L::CapacityBelowEnrolled(_)) => {
                return Problem::invalid("#/capacity", detail)
            }
            ClassroomError::Lesson(L::StartsInPast) => {
                return Problem::invalid("#/starts_at", detail)
            }
            ClassroomError::AckBeyondLast(..) => return Problem::invalid("#/up_to_seq", detail),
            ClassroomError::Lesson(L::AlreadyExists)
            | ClassroomError::Channel(C::Duplicate { .. } | C::RosterBehind)
            | ClassroomError::Conflict => Code::CONFLICT,
            ClassroomError::Store(s) => return s.into(),
        };
        Problem::new(code, detail)
    }
}
