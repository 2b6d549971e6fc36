//! The classroom's errors as problems.

use lectern_commands::classroom::ClassroomError;

use super::{Code, Problem};

impl From<ClassroomError> for Problem {
    fn from(e: ClassroomError) -> Self {
        use lectern_domain::classroom::{BoardError as B, ChannelError as C, LessonError as L};
        let detail = e.to_string();
        let code = match e {
            ClassroomError::Lesson(L::NotFound) | ClassroomError::Channel(C::NotFound) => {
                Code::LessonNotFound
            }
            ClassroomError::Board(B::NotFound) => Code::BoardNotFound,
            ClassroomError::Lesson(L::NotEnrolled) => Code::EnrollmentNotFound,
            ClassroomError::Lesson(L::NotOwner) | ClassroomError::Board(B::NotOwner) => {
                Code::NotOwner
            }
            ClassroomError::Board(B::NotParticipant)
            | ClassroomError::Channel(C::NotParticipant) => Code::NotParticipant,
            ClassroomError::Board(B::NotLive) => Code::LessonNotLive,
            ClassroomError::Lesson(L::Full) => Code::LessonFull,
            ClassroomError::Lesson(L::AlreadyEnrolled) => Code::AlreadyEnrolled,
            ClassroomError::Channel(C::Closed) => Code::LessonCancelled,
            ClassroomError::Lesson(L::InvalidTransition { .. }) => Code::InvalidTransition,
            ClassroomError::Lesson(L::CapacityBelowEnrolled(_)) => {
                return Problem::invalid("#/capacity", detail)
            }
            ClassroomError::Lesson(L::StartsInPast) => {
                return Problem::invalid("#/starts_at", detail)
            }
            ClassroomError::AckBeyondLast(..) => return Problem::invalid("#/up_to_seq", detail),
            ClassroomError::Lesson(L::AlreadyExists)
            | ClassroomError::Channel(C::Duplicate { .. } | C::RosterBehind)
            | ClassroomError::Conflict => Code::Conflict,
            ClassroomError::Store(s) => return s.into(),
        };
        Problem::new(code, detail)
    }
}
