//! The Lesson aggregate: its commands, events, errors and rules.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::details::{check_starts_at, LessonDetails, LessonPatch};
use crate::classroom::{domain_event, Actor, Roster};

/// Where a lesson is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LessonStatus {
    Scheduled,
    Live,
    Ended,
    Cancelled,
}

impl LessonStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Live => "live",
            Self::Ended => "ended",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Scheduled, Self::Live, Self::Ended, Self::Cancelled]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A lesson.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lesson {
    pub tutor_id: Option<Uuid>,
    pub status: Option<LessonStatus>,
    pub details: Option<LessonDetails>,
    pub students: BTreeSet<Uuid>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LessonCommand {
    /// `now` is when the command was sent: the lesson must start after it.
    Schedule {
        tutor_id: Uuid,
        details: LessonDetails,
        now: DateTime<Utc>,
    },
    /// `now` is when the command was sent: a new start must be after it.
    Update {
        by: Actor,
        patch: LessonPatch,
        now: DateTime<Utc>,
    },
    Start {
        by: Actor,
    },
    End {
        by: Actor,
    },
    Cancel {
        by: Actor,
        reason: Option<String>,
    },
    Enroll {
        by: Actor,
        student_id: Uuid,
    },
    Unenroll {
        by: Actor,
        student_id: Uuid,
    },
}

impl crate::CommandName for LessonCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Schedule { .. } => "ScheduleLesson",
            Self::Update { .. } => "UpdateLesson",
            Self::Start { .. } => "StartLesson",
            Self::End { .. } => "EndLesson",
            Self::Cancel { .. } => "CancelLesson",
            Self::Enroll { .. } => "EnrollStudent",
            Self::Unenroll { .. } => "UnenrollStudent",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LessonEvent {
    LessonScheduled {
        tutor_id: Uuid,
        details: LessonDetails,
    },
    LessonUpdated {
        changes: LessonPatch,
    },
    LessonStarted {},
    LessonEnded {},
    LessonCancelled {
        #[serde(default)]
        reason: Option<String>,
    },
    StudentEnrolled {
        student_id: Uuid,
        by: Uuid,
    },
    StudentUnenrolled {
        student_id: Uuid,
        by: Uuid,
    },
}

domain_event!(LessonEvent {
    LessonScheduled,
    LessonUpdated,
    LessonStarted,
    LessonEnded,
    LessonCancelled,
    StudentEnrolled,
    StudentUnenrolled,
});

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LessonError {
    #[error("no such lesson")]
    NotFound,
    #[error("the lesson already exists")]
    AlreadyExists,
    #[error("only the lesson's tutor or an admin may do this")]
    NotOwner,
    #[error("a {status} lesson cannot be {action}")]
    InvalidTransition {
        status: &'static str,
        action: &'static str,
    },
    #[error("the lesson is full")]
    Full,
    #[error("the student is already enrolled")]
    AlreadyEnrolled,
    #[error("the student is not enrolled")]
    NotEnrolled,
    #[error("the capacity cannot go below the {0} students enrolled")]
    CapacityBelowEnrolled(usize),
    #[error("a lesson must start in the future")]
    StartsInPast,
}

impl Lesson {
    /// The roster boards and channels copy, at `version`.
    pub fn roster(&self, version: u64) -> Roster {
        Roster {
            lesson_version: version,
            tutor_id: self.tutor_id,
            students: self.students.iter().copied().collect(),
            status: self.status,
        }
    }

    fn status(&self) -> Result<LessonStatus, LessonError> {
        self.status.ok_or(LessonError::NotFound)
    }

    fn owned_by(&self, by: Actor) -> Result<(), LessonError> {
        self.status()?;
        if by.own_only && self.tutor_id != Some(by.user_id) {
            return Err(LessonError::NotOwner);
        }
        Ok(())
    }

    fn transition(
        &self,
        by: Actor,
        from: &[LessonStatus],
        action: &'static str,
    ) -> Result<(), LessonError> {
        self.owned_by(by)?;
        let status = self.status()?;
        if from.contains(&status) {
            Ok(())
        } else {
            Err(LessonError::InvalidTransition {
                status: status.as_str(),
                action,
            })
        }
    }

    /// Decide a command: the events it causes, or why it is refused.
    pub fn decide(&self, command: LessonCommand) -> Result<Vec<LessonEvent>, LessonError> {
        use LessonStatus::{Live, Scheduled};
        let event = match command {
            LessonCommand::Schedule {
                tutor_id,
                details,
                now,
            } => {
                if self.status.is_some() {
                    return Err(LessonError::AlreadyExists);
                }
                check_starts_at(details.starts_at, now).map_err(|_| LessonError::StartsInPast)?;
                LessonEvent::LessonScheduled { tutor_id, details }
            }
            LessonCommand::Update { by, patch, now } => {
                self.transition(by, &[Scheduled], "updated")?;
                if let Some(c) = patch.capacity {
                    if c.seats() < self.students.len() {
                        return Err(LessonError::CapacityBelowEnrolled(self.students.len()));
                    }
                }
                if let Some(s) = patch.starts_at {
                    check_starts_at(s, now).map_err(|_| LessonError::StartsInPast)?;
                }
                LessonEvent::LessonUpdated { changes: patch }
            }
            LessonCommand::Start { by } => {
                self.transition(by, &[Scheduled], "started")?;
                LessonEvent::LessonStarted {}
            }
            LessonCommand::End { by } => {
                self.transition(by, &[Live], "ended")?;
                LessonEvent::LessonEnded {}
            }
            LessonCommand::Cancel { by, reason } => {
                self.transition(by, &[Scheduled], "cancelled")?;
                LessonEvent::LessonCancelled { reason }
            }
            LessonCommand::Enroll { by, student_id } => {
                self.may_manage_enrolment(by, student_id)?;
                let status = self.status()?;
                if !matches!(status, Scheduled | Live) {
                    return Err(LessonError::InvalidTransition {
                        status: status.as_str(),
                        action: "enrolled in",
                    });
                }
                if self.students.contains(&student_id) {
                    return Err(LessonError::AlreadyEnrolled);
                }
                let capacity = self.details.as_ref().map_or(0, |d| d.capacity.seats());
                if self.students.len() >= capacity {
                    return Err(LessonError::Full);
                }
                LessonEvent::StudentEnrolled {
                    student_id,
                    by: by.user_id,
                }
            }
            LessonCommand::Unenroll { by, student_id } => {
                self.may_manage_enrolment(by, student_id)?;
                if !self.students.contains(&student_id) {
                    return Err(LessonError::NotEnrolled);
                }
                LessonEvent::StudentUnenrolled {
                    student_id,
                    by: by.user_id,
                }
            }
        };
        Ok(vec![event])
    }

    /// A student manages their own enrolment; the lesson's tutor manages
    /// anyone's.
    fn may_manage_enrolment(&self, by: Actor, student_id: Uuid) -> Result<(), LessonError> {
        self.status()?;
        let own = by.user_id == student_id || self.tutor_id == Some(by.user_id);
        if by.own_only && !own {
            return Err(LessonError::NotOwner);
        }
        Ok(())
    }
}

impl Aggregate for Lesson {
    const TYPE: &'static str = "Lesson";
    type Command = LessonCommand;
    type Event = LessonEvent;
    type Error = LessonError;
    type Services = ();

    async fn handle(
        &mut self,
        command: LessonCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), LessonError> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: LessonEvent) {
        match event {
            LessonEvent::LessonScheduled { tutor_id, details } => {
                self.tutor_id = Some(tutor_id);
                self.details = Some(details);
                self.status = Some(LessonStatus::Scheduled);
            }
            LessonEvent::LessonUpdated { changes } => {
                if let Some(d) = &self.details {
                    self.details = Some(d.patched(&changes));
                }
            }
            LessonEvent::LessonStarted {} => self.status = Some(LessonStatus::Live),
            LessonEvent::LessonEnded {} => self.status = Some(LessonStatus::Ended),
            LessonEvent::LessonCancelled { .. } => self.status = Some(LessonStatus::Cancelled),
            LessonEvent::StudentEnrolled { student_id, .. } => {
                self.students.insert(student_id);
            }
            LessonEvent::StudentUnenrolled { student_id, .. } => {
                self.students.remove(&student_id);
            }
        }
    }
}
