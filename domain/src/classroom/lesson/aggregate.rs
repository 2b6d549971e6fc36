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
    /// Planned; not started.
    Scheduled,
    /// Started: the board is open.
    Live,
    /// Over.
    Ended,
    /// Called off before it started.
    Cancelled,
}

impl LessonStatus {
    /// The status as stored and listed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Live => "live",
            Self::Ended => "ended",
            Self::Cancelled => "cancelled",
        }
    }

    /// The status named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Scheduled, Self::Live, Self::Ended, Self::Cancelled]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A lesson.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lesson {
    /// The lesson's tutor.
    pub tutor_id: Option<Uuid>,
    /// The status.
    pub status: Option<LessonStatus>,
    /// What the tutor said about it.
    pub details: Option<LessonDetails>,
    /// The enrolled students.
    pub students: BTreeSet<Uuid>,
}

/// What may be asked of a lesson.
#[derive(Debug, Clone, PartialEq)]
pub enum LessonCommand {
    /// `now` is when the command was sent: the lesson must start after it.
    Schedule {
        /// The lesson's tutor.
        tutor_id: Uuid,
        /// What the tutor said about it.
        details: LessonDetails,
        /// The time the command was sent.
        now: DateTime<Utc>,
    },
    /// `now` is when the command was sent: a new start must be after it.
    Update {
        /// Who did it.
        by: Actor,
        /// The changes.
        patch: LessonPatch,
        /// The time the command was sent.
        now: DateTime<Utc>,
    },
    /// Start a scheduled lesson.
    Start {
        /// Who did it.
        by: Actor,
    },
    /// End a live lesson.
    End {
        /// Who did it.
        by: Actor,
    },
    /// Cancel a scheduled lesson.
    Cancel {
        /// Who did it.
        by: Actor,
        /// Why.
        reason: Option<String>,
    },
    /// Enrol a student.
    Enroll {
        /// Who did it.
        by: Actor,
        /// The student.
        student_id: Uuid,
    },
    /// Remove a student.
    Unenroll {
        /// Who did it.
        by: Actor,
        /// The student.
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

/// What happened to a lesson.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LessonEvent {
    /// Lesson scheduled.
    LessonScheduled {
        /// The lesson's tutor.
        tutor_id: Uuid,
        /// What the tutor said about it.
        details: LessonDetails,
    },
    /// Lesson updated.
    LessonUpdated {
        /// The changed fields.
        changes: LessonPatch,
    },
    /// Lesson started.
    LessonStarted {},
    /// Lesson ended.
    LessonEnded {},
    /// Lesson cancelled.
    LessonCancelled {
        /// Why.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Student enrolled.
    StudentEnrolled {
        /// The student.
        student_id: Uuid,
        /// Who did it.
        by: Uuid,
    },
    /// Student unenrolled.
    StudentUnenrolled {
        /// The student.
        student_id: Uuid,
        /// Who did it.
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

/// The rules a lesson command can break.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LessonError {
    /// No such lesson.
    #[error("no such lesson")]
    NotFound,
    /// The lesson already exists.
    #[error("the lesson already exists")]
    AlreadyExists,
    /// Only the lesson's tutor or an admin may do this.
    #[error("only the lesson's tutor or an admin may do this")]
    NotOwner,
    /// A … lesson cannot be ….
    #[error("a {status} lesson cannot be {action}")]
    InvalidTransition {
        /// The status.
        status: &'static str,
        /// The policy action.
        action: &'static str,
    },
    /// The lesson is full.
    #[error("the lesson is full")]
    Full,
    /// The student is already enrolled.
    #[error("the student is already enrolled")]
    AlreadyEnrolled,
    /// The student is not enrolled.
    #[error("the student is not enrolled")]
    NotEnrolled,
    /// The capacity cannot go below the … students enrolled.
    #[error("the capacity cannot go below the {0} students enrolled")]
    CapacityBelowEnrolled(usize),
    /// A lesson must start in the future.
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
