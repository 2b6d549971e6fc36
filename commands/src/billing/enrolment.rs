//! The enrolment process manager: enrolling in a priced lesson opens an
//! invoice for the student, due at the lesson's start; unenrolling voids it
//! unless it is paid. Free lessons make none.
//!
//! The invoice's id is derived from the enrolment event (lesson, student
//! and the event's sequence), so a redelivered event finds its invoice and
//! changes nothing, and enrolling again after leaving opens a new one.

use async_trait::async_trait;
use lectern_domain::billing::invoice::{InvoiceCommand, InvoiceError, Line};
use lectern_domain::EventMetadata;
use lectern_projections::{Interest, LogEvent, ProcessManager, ReactionError};
use uuid::Uuid;

use super::{BillingError, BillingService};
use crate::classroom::ClassroomService;

/// The namespace of invoice ids derived from enrolments.
const NAMESPACE: Uuid = Uuid::from_u128(0x6c65_6374_6572_6e2d_696e_766f_6963_6531);

/// The invoice that the enrolment of `student` in `lesson` at lesson
/// version `sequence` opened.
pub fn invoice_id(lesson: Uuid, student: Uuid, sequence: i64) -> Uuid {
    Uuid::new_v5(
        &NAMESPACE,
        format!("{lesson}/{student}/{sequence}").as_bytes(),
    )
}

/// Opens and voids invoices as students enrol and leave.
pub struct InvoiceOnEnrolment {
    billing: BillingService,
    classroom: ClassroomService,
    due_before_start: chrono::Duration,
}

impl InvoiceOnEnrolment {
    /// The process manager over the two services; invoices are due at the
    /// lesson's start.
    pub fn new(billing: BillingService, classroom: ClassroomService) -> Self {
        Self {
            billing,
            classroom,
            due_before_start: chrono::Duration::zero(),
        }
    }

    /// Invoices due `secs` seconds before the lesson starts (after it, if
    /// negative).
    pub fn due_before_start(mut self, secs: i64) -> Self {
        self.due_before_start = chrono::Duration::seconds(secs);
        self
    }

    async fn enrolled(
        &self,
        lesson: Uuid,
        student: Uuid,
        sequence: i64,
        meta: &EventMetadata,
    ) -> Result<(), ReactionError> {
        let state = self
            .classroom
            .lesson_state(lesson)
            .await
            .map_err(|e| ReactionError(e.to_string()))?;
        let Some(details) = state.details else {
            return Ok(());
        };
        if details.price.amount_minor == 0 {
            return Ok(());
        }
        let command = InvoiceCommand::Create {
            payer_id: student,
            currency: details.price.currency.clone(),
            lines: vec![Line {
                lesson_id: lesson,
                description: details.title.as_str().to_owned(),
                amount_minor: details.price.amount_minor,
            }],
            due_at: details.starts_at - self.due_before_start,
            finalize: true,
        };
        match self
            .billing
            .execute(invoice_id(lesson, student, sequence), command, meta)
            .await
        {
            Ok(_) | Err(BillingError::Invoice(InvoiceError::AlreadyExists)) => Ok(()),
            Err(e) => Err(ReactionError(e.to_string())),
        }
    }

    async fn left(
        &self,
        lesson: Uuid,
        student: Uuid,
        sequence: i64,
        meta: &EventMetadata,
    ) -> Result<(), ReactionError> {
        // The enrolment this ends: the student's last before it.
        let enrolled: Option<i64> = sqlx::query_scalar(
            "SELECT sequence FROM events
              WHERE aggregate_type = 'Lesson' AND aggregate_id = $1 AND event_type = 'StudentEnrolled'
                AND payload->'StudentEnrolled'->>'student_id' = $2 AND sequence < $3
              ORDER BY sequence DESC LIMIT 1",
        )
        .bind(lesson.to_string())
        .bind(student.to_string())
        .bind(sequence)
        .fetch_optional(self.billing.pool())
        .await
        .map_err(|e| ReactionError(e.to_string()))?;
        let Some(enrolled) = enrolled else {
            return Ok(());
        };
        let void = InvoiceCommand::Void {
            reason: "unenrolled".to_owned(),
        };
        match self
            .billing
            .execute(invoice_id(lesson, student, enrolled), void, meta)
            .await
        {
            // A free lesson has no invoice; a paid one is refunded, not voided.
            Ok(_)
            | Err(BillingError::Invoice(InvoiceError::NotFound))
            | Err(BillingError::Invoice(InvoiceError::Paid)) => Ok(()),
            Err(e) => Err(ReactionError(e.to_string())),
        }
    }
}

#[async_trait]
impl ProcessManager for InvoiceOnEnrolment {
    fn name(&self) -> &'static str {
        "billing_enrolment"
    }

    fn interest(&self) -> Interest {
        Interest::types(&["Lesson"])
    }

    async fn react(&self, event: &LogEvent) -> Result<(), ReactionError> {
        let (key, enrolling) = match event.event_type.as_str() {
            "StudentEnrolled" => ("StudentEnrolled", true),
            "StudentUnenrolled" => ("StudentUnenrolled", false),
            _ => return Ok(()),
        };
        let lesson: Uuid = event.aggregate_id.parse().map_err(|_| {
            ReactionError(format!("lesson id {:?} is not a UUID", event.aggregate_id))
        })?;
        let student: Uuid = event.payload[key]["student_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ReactionError(format!("{key} without a student_id")))?;
        let meta = EventMetadata {
            causation_id: event.event_id.to_string(),
            ..EventMetadata::system(event.meta("correlation_id"))
        };
        if enrolling {
            self.enrolled(lesson, student, event.sequence, &meta).await
        } else {
            self.left(lesson, student, event.sequence, &meta).await
        }
    }
}
