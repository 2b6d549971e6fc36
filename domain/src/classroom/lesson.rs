//! The Lesson aggregate: a tutor's scheduled lesson, its lifecycle and its
//! enrolments. Capacity is checked here, so concurrent enrolments (which the
//! store serialises per aggregate) can never overfill a lesson.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{domain_event, Actor, Roster};

pub const MAX_TITLE: usize = 200;
pub const MAX_DESCRIPTION: usize = 10_000;
pub const DURATION_MINUTES: std::ops::RangeInclusive<u32> = 15..=480;
pub const CAPACITY: std::ops::RangeInclusive<u32> = 1..=500;

/// ISO 4217 codes of currencies in use.
const CURRENCIES: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL \
BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL \
GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD \
KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD \
OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP \
SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWL";

/// A price in the currency's minor unit (cents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub amount_minor: i64,
    pub currency: String,
}

/// What a tutor says about a lesson.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LessonDetails {
    pub title: String,
    pub description: String,
    pub starts_at: DateTime<Utc>,
    pub duration_minutes: u32,
    pub capacity: u32,
    pub price: Price,
}

/// A change to some of a lesson's details.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LessonPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_minutes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
}

/// One invalid field: a JSON pointer into the request and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldIssue {
    pub pointer: String,
    pub detail: String,
}

fn issue(issues: &mut Vec<FieldIssue>, pointer: &str, detail: &str) {
    issues.push(FieldIssue {
        pointer: pointer.to_owned(),
        detail: detail.to_owned(),
    });
}

impl LessonPatch {
    /// Check every present field; `now` decides whether `starts_at` is in
    /// the future. Pointers are prefixed with `base` (such as `#/items/3`).
    pub fn check(&self, now: DateTime<Utc>, base: &str) -> Vec<FieldIssue> {
        let mut issues = Vec::new();
        let p = |f: &str| format!("{base}/{f}");
        if let Some(t) = &self.title {
            let n = t.trim().chars().count();
            if n == 0 || n > MAX_TITLE || t.chars().any(char::is_control) {
                issue(
                    &mut issues,
                    &p("title"),
                    "must be 1 to 200 characters, without control characters",
                );
            }
        }
        if let Some(d) = &self.description {
            if d.chars().count() > MAX_DESCRIPTION {
                issue(
                    &mut issues,
                    &p("description"),
                    "must be at most 10000 characters",
                );
            }
        }
        if let Some(s) = self.starts_at {
            if s <= now {
                issue(&mut issues, &p("starts_at"), "must be in the future");
            }
        }
        if let Some(d) = self.duration_minutes {
            if !DURATION_MINUTES.contains(&d) {
                issue(&mut issues, &p("duration_minutes"), "must be 15 to 480");
            }
        }
        if let Some(c) = self.capacity {
            if !CAPACITY.contains(&c) {
                issue(&mut issues, &p("capacity"), "must be 1 to 500");
            }
        }
        if let Some(price) = &self.price {
            if price.amount_minor < 0 {
                issue(
                    &mut issues,
                    &p("price/amount_minor"),
                    "must not be negative",
                );
            }
            if !is_currency(&price.currency) {
                issue(
                    &mut issues,
                    &p("price/currency"),
                    "must be an ISO 4217 currency code, such as EUR",
                );
            }
        }
        issues
    }
}

/// Whether `code` is an ISO 4217 currency code in use.
pub fn is_currency(code: &str) -> bool {
    code.len() == 3 && CURRENCIES.split(' ').any(|c| c == code)
}

impl LessonDetails {
    /// Check new details; all fields are required.
    pub fn check(&self, now: DateTime<Utc>, base: &str) -> Vec<FieldIssue> {
        self.as_patch().check(now, base)
    }

    fn as_patch(&self) -> LessonPatch {
        LessonPatch {
            title: Some(self.title.clone()),
            description: Some(self.description.clone()),
            starts_at: Some(self.starts_at),
            duration_minutes: Some(self.duration_minutes),
            capacity: Some(self.capacity),
            price: Some(self.price.clone()),
        }
    }

    /// The details with `patch` applied.
    pub fn patched(&self, patch: &LessonPatch) -> Self {
        let mut d = self.clone();
        if let Some(t) = &patch.title {
            d.title = t.trim().to_owned();
        }
        if let Some(v) = &patch.description {
            d.description.clone_from(v);
        }
        if let Some(v) = patch.starts_at {
            d.starts_at = v;
        }
        if let Some(v) = patch.duration_minutes {
            d.duration_minutes = v;
        }
        if let Some(v) = patch.capacity {
            d.capacity = v;
        }
        if let Some(v) = &patch.price {
            d.price = v.clone();
        }
        d
    }

    /// When the lesson is planned to end.
    pub fn ends_at(&self) -> DateTime<Utc> {
        self.starts_at + Duration::minutes(i64::from(self.duration_minutes))
    }
}

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
    Schedule {
        tutor_id: Uuid,
        details: LessonDetails,
    },
    Update {
        by: Actor,
        patch: LessonPatch,
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
            LessonCommand::Schedule { tutor_id, details } => {
                if self.status.is_some() {
                    return Err(LessonError::AlreadyExists);
                }
                LessonEvent::LessonScheduled { tutor_id, details }
            }
            LessonCommand::Update { by, patch } => {
                self.transition(by, &[Scheduled], "updated")?;
                if let Some(c) = patch.capacity {
                    if (c as usize) < self.students.len() {
                        return Err(LessonError::CapacityBelowEnrolled(self.students.len()));
                    }
                }
                let mut changes = patch;
                if let Some(t) = &mut changes.title {
                    *t = t.trim().to_owned();
                }
                LessonEvent::LessonUpdated { changes }
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
                let capacity = self.details.as_ref().map_or(0, |d| d.capacity as usize);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn details(capacity: u32) -> LessonDetails {
        LessonDetails {
            title: "Algebra".into(),
            description: String::new(),
            starts_at: "2030-01-01T10:00:00Z".parse().expect("a time"),
            duration_minutes: 60,
            capacity,
            price: Price {
                amount_minor: 1500,
                currency: "EUR".into(),
            },
        }
    }

    /// Given `events`, when `command`, then the result.
    fn given(events: Vec<LessonEvent>) -> Lesson {
        let mut l = Lesson::default();
        for e in events {
            l.apply(e);
        }
        l
    }

    fn tutor() -> Uuid {
        Uuid::from_u128(1)
    }

    fn scheduled(capacity: u32) -> Vec<LessonEvent> {
        vec![LessonEvent::LessonScheduled {
            tutor_id: tutor(),
            details: details(capacity),
        }]
    }

    fn own(user: Uuid) -> Actor {
        Actor {
            user_id: user,
            own_only: true,
        }
    }

    #[test]
    fn schedule_then_start_then_end() {
        let l = given(vec![]);
        assert_eq!(
            l.decide(LessonCommand::Schedule {
                tutor_id: tutor(),
                details: details(2)
            }),
            Ok(scheduled(2))
        );
        let l = given(scheduled(2));
        assert_eq!(
            l.decide(LessonCommand::Start { by: own(tutor()) }),
            Ok(vec![LessonEvent::LessonStarted {}])
        );
        let mut events = scheduled(2);
        events.push(LessonEvent::LessonStarted {});
        let l = given(events);
        assert_eq!(
            l.decide(LessonCommand::End { by: own(tutor()) }),
            Ok(vec![LessonEvent::LessonEnded {}])
        );
    }

    #[test]
    fn invalid_transitions_are_refused() {
        let mut events = scheduled(2);
        events.push(LessonEvent::LessonCancelled { reason: None });
        let cancelled = given(events);
        assert_eq!(
            cancelled.decide(LessonCommand::Start { by: own(tutor()) }),
            Err(LessonError::InvalidTransition {
                status: "cancelled",
                action: "started"
            })
        );
        let l = given(scheduled(2));
        assert_eq!(
            l.decide(LessonCommand::End { by: own(tutor()) }),
            Err(LessonError::InvalidTransition {
                status: "scheduled",
                action: "ended"
            })
        );
    }

    #[test]
    fn only_the_owner_changes_a_lesson() {
        let l = given(scheduled(2));
        let other = Uuid::from_u128(9);
        assert_eq!(
            l.decide(LessonCommand::Start { by: own(other) }),
            Err(LessonError::NotOwner)
        );
        assert!(l
            .decide(LessonCommand::Start {
                by: Actor::unrestricted(other)
            })
            .is_ok());
    }

    #[test]
    fn capacity_is_enforced() {
        let a = Uuid::from_u128(10);
        let b = Uuid::from_u128(11);
        let mut events = scheduled(1);
        events.push(LessonEvent::StudentEnrolled {
            student_id: a,
            by: a,
        });
        let l = given(events);
        assert_eq!(
            l.decide(LessonCommand::Enroll {
                by: own(b),
                student_id: b
            }),
            Err(LessonError::Full)
        );
        assert_eq!(
            l.decide(LessonCommand::Enroll {
                by: own(a),
                student_id: a
            }),
            Err(LessonError::AlreadyEnrolled)
        );
        // A student cannot enrol someone else.
        assert_eq!(
            l.decide(LessonCommand::Unenroll {
                by: own(b),
                student_id: a
            }),
            Err(LessonError::NotOwner)
        );
        assert_eq!(
            l.decide(LessonCommand::Update {
                by: own(tutor()),
                patch: LessonPatch {
                    capacity: Some(0),
                    ..LessonPatch::default()
                }
            }),
            Err(LessonError::CapacityBelowEnrolled(1))
        );
    }

    #[test]
    fn details_are_validated() {
        let mut d = details(0);
        d.title = " ".into();
        d.duration_minutes = 5;
        d.price.amount_minor = -1;
        d.price.currency = "XYZ".into();
        d.starts_at = Utc::now() - Duration::minutes(1);
        let pointers: Vec<_> = d
            .check(Utc::now(), "#")
            .into_iter()
            .map(|i| i.pointer)
            .collect();
        assert_eq!(
            pointers,
            [
                "#/title",
                "#/starts_at",
                "#/duration_minutes",
                "#/capacity",
                "#/price/amount_minor",
                "#/price/currency"
            ]
        );
        assert!(details(10).check(Utc::now(), "#").is_empty());
    }
}
