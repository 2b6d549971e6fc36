//! The Lesson aggregate, given/when/then: every command, accepted and
//! refused.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::*;
use crate::classroom::values::{Capacity, Invalid};
use crate::classroom::Actor;
use crate::testing::{given, when};

const TUTOR: Uuid = Uuid::from_u128(1);
const ANNA: Uuid = Uuid::from_u128(10);
const BEN: Uuid = Uuid::from_u128(11);
const STRANGER: Uuid = Uuid::from_u128(99);

fn now() -> DateTime<Utc> {
    "2029-06-01T10:00:00Z".parse().expect("a time")
}

fn draft(capacity: i64) -> LessonDraft {
    LessonDraft {
        title: "Algebra".into(),
        description: String::new(),
        starts_at: "2030-01-01T10:00:00Z".parse().expect("a time"),
        duration_minutes: 60,
        capacity,
        price_amount_minor: 1500,
        price_currency: "EUR".into(),
    }
}

fn details(capacity: i64) -> LessonDetails {
    LessonDetails::parse(&draft(capacity), now()).expect("valid details")
}

fn own(user: Uuid) -> Actor {
    Actor {
        user_id: user,
        own_only: true,
    }
}

fn scheduled(capacity: i64) -> LessonEvent {
    LessonEvent::LessonScheduled {
        tutor_id: TUTOR,
        details: details(capacity),
    }
}

fn enrolled(student: Uuid) -> LessonEvent {
    LessonEvent::StudentEnrolled {
        student_id: student,
        by: student,
    }
}

fn capacity(n: i64) -> LessonPatch {
    LessonPatch {
        capacity: Some(Capacity::parse(n).expect("a capacity")),
        ..LessonPatch::default()
    }
}

#[test]
fn schedule_records_the_details_once() {
    let mut lesson: Lesson = given([]);
    let events = when(
        &mut lesson,
        LessonCommand::Schedule {
            tutor_id: TUTOR,
            details: details(2),
            now: now(),
        },
    );
    assert_eq!(events, Ok(vec![scheduled(2)]));
    assert_eq!(
        when(
            &mut lesson,
            LessonCommand::Schedule {
                tutor_id: TUTOR,
                details: details(2),
                now: now(),
            }
        ),
        Err(LessonError::AlreadyExists)
    );
}

#[test]
fn a_lesson_that_would_start_in_the_past_is_refused() {
    let mut lesson: Lesson = given([]);
    let later = details(2).starts_at + Duration::minutes(1);
    assert_eq!(
        when(
            &mut lesson,
            LessonCommand::Schedule {
                tutor_id: TUTOR,
                details: details(2),
                now: later,
            }
        ),
        Err(LessonError::StartsInPast)
    );
    assert_eq!(lesson, Lesson::default(), "nothing recorded");
}

#[test]
fn update_changes_a_scheduled_lesson_of_its_tutor() {
    let mut lesson: Lesson = given([scheduled(2)]);
    let events = when(
        &mut lesson,
        LessonCommand::Update {
            by: own(TUTOR),
            patch: capacity(3),
            now: now(),
        },
    );
    assert_eq!(
        events,
        Ok(vec![LessonEvent::LessonUpdated {
            changes: capacity(3)
        }])
    );
    assert_eq!(lesson.details.expect("details").capacity.get(), 3);
}

#[test]
fn update_is_refused_to_others_below_the_enrolled_and_into_the_past() {
    let mut lesson: Lesson = given([scheduled(2), enrolled(ANNA)]);
    let update = |by, patch| LessonCommand::Update {
        by,
        patch,
        now: now(),
    };
    assert_eq!(
        when(&mut lesson, update(own(STRANGER), capacity(3))),
        Err(LessonError::NotOwner)
    );
    assert_eq!(
        when(
            &mut lesson,
            LessonCommand::Update {
                by: own(TUTOR),
                patch: LessonPatch {
                    starts_at: Some(now() - Duration::minutes(1)),
                    ..LessonPatch::default()
                },
                now: now(),
            }
        ),
        Err(LessonError::StartsInPast)
    );
    let mut full: Lesson = given([scheduled(2), enrolled(ANNA), enrolled(BEN)]);
    assert_eq!(
        when(&mut full, update(own(TUTOR), capacity(1))),
        Err(LessonError::CapacityBelowEnrolled(2))
    );
    let mut live: Lesson = given([scheduled(2), LessonEvent::LessonStarted {}]);
    assert_eq!(
        when(&mut live, update(own(TUTOR), capacity(3))),
        Err(LessonError::InvalidTransition {
            status: "live",
            action: "updated"
        })
    );
}

#[test]
fn start_then_end() {
    let mut lesson: Lesson = given([scheduled(2)]);
    assert_eq!(
        when(&mut lesson, LessonCommand::Start { by: own(TUTOR) }),
        Ok(vec![LessonEvent::LessonStarted {}])
    );
    assert_eq!(lesson.status, Some(LessonStatus::Live));
    assert_eq!(
        when(&mut lesson, LessonCommand::End { by: own(TUTOR) }),
        Ok(vec![LessonEvent::LessonEnded {}])
    );
    assert_eq!(lesson.status, Some(LessonStatus::Ended));
}

#[test]
fn start_and_end_follow_the_lifecycle_and_the_owner() {
    let mut scheduled_only: Lesson = given([scheduled(2)]);
    assert_eq!(
        when(&mut scheduled_only, LessonCommand::End { by: own(TUTOR) }),
        Err(LessonError::InvalidTransition {
            status: "scheduled",
            action: "ended"
        })
    );
    assert_eq!(
        when(
            &mut scheduled_only,
            LessonCommand::Start { by: own(STRANGER) }
        ),
        Err(LessonError::NotOwner)
    );
    // An admin acts on any lesson.
    assert!(when(
        &mut scheduled_only,
        LessonCommand::Start {
            by: Actor::unrestricted(STRANGER)
        }
    )
    .is_ok());
    let mut cancelled: Lesson =
        given([scheduled(2), LessonEvent::LessonCancelled { reason: None }]);
    assert_eq!(
        when(&mut cancelled, LessonCommand::Start { by: own(TUTOR) }),
        Err(LessonError::InvalidTransition {
            status: "cancelled",
            action: "started"
        })
    );
    let mut missing: Lesson = given([]);
    assert_eq!(
        when(&mut missing, LessonCommand::Start { by: own(TUTOR) }),
        Err(LessonError::NotFound)
    );
}

#[test]
fn cancel_a_scheduled_lesson_with_a_reason() {
    let mut lesson: Lesson = given([scheduled(2)]);
    let cancel = |by| LessonCommand::Cancel {
        by,
        reason: Some("ill".into()),
    };
    assert_eq!(
        when(&mut lesson, cancel(own(STRANGER))),
        Err(LessonError::NotOwner)
    );
    assert_eq!(
        when(&mut lesson, cancel(own(TUTOR))),
        Ok(vec![LessonEvent::LessonCancelled {
            reason: Some("ill".into())
        }])
    );
    assert_eq!(
        when(&mut lesson, cancel(own(TUTOR))),
        Err(LessonError::InvalidTransition {
            status: "cancelled",
            action: "cancelled"
        })
    );
}

#[test]
fn enrol_up_to_capacity_once_each() {
    let mut lesson: Lesson = given([scheduled(1)]);
    let enrol = |by, student_id| LessonCommand::Enroll { by, student_id };
    assert_eq!(
        when(&mut lesson, enrol(own(STRANGER), ANNA)),
        Err(LessonError::NotOwner),
        "a student cannot enrol someone else"
    );
    assert_eq!(
        when(&mut lesson, enrol(own(ANNA), ANNA)),
        Ok(vec![enrolled(ANNA)])
    );
    assert_eq!(
        when(&mut lesson, enrol(own(ANNA), ANNA)),
        Err(LessonError::AlreadyEnrolled)
    );
    assert_eq!(
        when(&mut lesson, enrol(own(BEN), BEN)),
        Err(LessonError::Full)
    );
    // The tutor enrols anyone (capacity still holds).
    let mut roomy: Lesson = given([scheduled(5)]);
    assert_eq!(
        when(&mut roomy, enrol(own(TUTOR), BEN)),
        Ok(vec![LessonEvent::StudentEnrolled {
            student_id: BEN,
            by: TUTOR
        }])
    );
    let mut ended: Lesson = given([
        scheduled(5),
        LessonEvent::LessonStarted {},
        LessonEvent::LessonEnded {},
    ]);
    assert_eq!(
        when(&mut ended, enrol(own(ANNA), ANNA)),
        Err(LessonError::InvalidTransition {
            status: "ended",
            action: "enrolled in"
        })
    );
}

#[test]
fn unenrol_the_enrolled_only() {
    let mut lesson: Lesson = given([scheduled(2), enrolled(ANNA)]);
    let unenrol = |by, student_id| LessonCommand::Unenroll { by, student_id };
    assert_eq!(
        when(&mut lesson, unenrol(own(BEN), ANNA)),
        Err(LessonError::NotOwner)
    );
    assert_eq!(
        when(&mut lesson, unenrol(own(BEN), BEN)),
        Err(LessonError::NotEnrolled)
    );
    assert_eq!(
        when(&mut lesson, unenrol(own(TUTOR), ANNA)),
        Ok(vec![LessonEvent::StudentUnenrolled {
            student_id: ANNA,
            by: TUTOR
        }])
    );
    assert!(lesson.students.is_empty());
}

#[test]
fn a_draft_names_every_invalid_field_in_order() {
    let bad = LessonDraft {
        title: " ".into(),
        description: "a\0b".into(),
        starts_at: now() - Duration::minutes(1),
        duration_minutes: 5,
        capacity: 501,
        price_amount_minor: -1,
        price_currency: "XYZ".into(),
    };
    let fields: Vec<LessonField> = LessonDetails::parse(&bad, now())
        .expect_err("invalid")
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(
        fields,
        [
            LessonField::Title,
            LessonField::Description,
            LessonField::StartsAt,
            LessonField::DurationMinutes,
            LessonField::Capacity,
            LessonField::PriceAmount,
            LessonField::PriceCurrency
        ]
    );
    let ok = details(10);
    assert_eq!(ok.price.currency.as_str(), "eur", "stored in lowercase");
    let patch = PatchDraft {
        capacity: Some(0),
        ..PatchDraft::default()
    };
    assert_eq!(
        LessonPatch::parse(&patch, now()),
        Err(vec![(LessonField::Capacity, Invalid("must be 1 to 500"))])
    );
    assert!(LessonPatch::parse(&PatchDraft::default(), now())
        .expect("empty")
        .is_empty());
}
