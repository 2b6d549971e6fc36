//! The roster process manager: a lesson's board and channel follow its
//! roster.
//!
//! Boards and channels decide who may draw and chat from their own copy of
//! the lesson's roster (tutor, students, status, and the lesson version it
//! was taken at). After every Lesson event that can change it, this process
//! manager copies the lesson's current roster to both. A copy only takes
//! effect when it is of a newer lesson version than the one held, so a
//! redelivered event changes nothing, and the copy's events name the lesson
//! event as their causation.

use async_trait::async_trait;
use lectern_domain::EventMetadata;
use lectern_projections::{Interest, LogEvent, ProcessManager, ReactionError};
use uuid::Uuid;

use super::{ClassroomError, ClassroomService};

/// Copies each lesson's roster to its board and channel.
pub struct RosterSync {
    classroom: ClassroomService,
}

impl RosterSync {
    /// The process manager over `classroom`'s stores.
    pub fn new(classroom: ClassroomService) -> Self {
        Self { classroom }
    }
}

/// Lesson events after which the roster may differ.
fn changes_roster(event_type: &str) -> bool {
    event_type != "LessonUpdated"
}

#[async_trait]
impl ProcessManager for RosterSync {
    fn name(&self) -> &'static str {
        "classroom_roster"
    }

    fn interest(&self) -> Interest {
        Interest::types(&["Lesson"])
    }

    async fn react(&self, event: &LogEvent) -> Result<(), ReactionError> {
        if !changes_roster(&event.event_type) {
            return Ok(());
        }
        let lesson: Uuid = event.aggregate_id.parse().map_err(|_| {
            ReactionError(format!("lesson id {:?} is not a UUID", event.aggregate_id))
        })?;
        let meta = EventMetadata {
            causation_id: event.event_id.to_string(),
            ..EventMetadata::system(event.meta("correlation_id"))
        };
        match self.classroom.sync(lesson, &meta).await {
            Ok(()) => Ok(()),
            Err(ClassroomError::Store(e)) => Err(ReactionError(e.to_string())),
            Err(ClassroomError::Conflict) => Err(ReactionError(
                "the board or channel was changed concurrently".to_owned(),
            )),
            // A refusal will not change on a retry: the roster copy has
            // nothing to do for this event.
            Err(refused) => {
                tracing::warn!(lesson = %lesson, error = %refused, "roster copy refused");
                Ok(())
            }
        }
    }
}
