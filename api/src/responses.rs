//! Shapes shared by command endpoints, and how write-side errors become
//! problem documents (in one place).

use axum::http::{header, HeaderValue, StatusCode};
use lectern_commands::classroom::ClassroomError;
use lectern_commands::identity::IdentityError;
use lectern_commands::{Committed, StoreError};
use lectern_domain::identity::UserError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::{FieldError, Problem};

/// The answer to a command.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandAccepted {
    /// The id of the thing the command acted on.
    pub id: String,
    /// The aggregate's version after the command.
    pub version: u64,
    /// Where the command's last event sits in the log; pass it as
    /// `consistent_with` to a query to read your own write.
    pub position: Option<String>,
}

impl CommandAccepted {
    /// The answer for `committed`, naming `id`.
    pub fn new<E>(id: impl ToString, committed: &Committed<E>) -> Self {
        Self {
            id: id.to_string(),
            version: committed.version,
            position: committed.position.map(|p| p.to_string()),
        }
    }
}

/// A 422 naming one field.
pub fn invalid(pointer: &str, detail: impl Into<String>) -> Problem {
    Problem::validation(vec![FieldError {
        pointer: pointer.to_owned(),
        detail: detail.into(),
    }])
}

/// 429 with `Retry-After` until `until`.
fn locked(until: chrono::DateTime<chrono::Utc>) -> Problem {
    let secs = (until - chrono::Utc::now()).num_seconds().max(1);
    let mut p = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "account_locked",
        format!("Too many failed logins; the account is locked for {secs} s."),
    );
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        p.headers.push((header::RETRY_AFTER, v));
    }
    p
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Problem::new(
                StatusCode::CONFLICT,
                "conflict",
                "The resource was changed concurrently; retry.",
            ),
            StoreError::Database(_) | StoreError::WorkerGone => Problem::unavailable(e),
            StoreError::Serialization(_) => Problem::internal(e),
        }
    }
}

impl From<IdentityError> for Problem {
    fn from(e: IdentityError) -> Self {
        use crate::auth::unauthorized;
        match e {
            IdentityError::EmailTaken => Problem::new(
                StatusCode::CONFLICT,
                "email_taken",
                "An account with this email address already exists.",
            ),
            IdentityError::InvalidCredentials => {
                unauthorized("invalid_credentials", "Invalid email or password.")
            }
            IdentityError::Locked(until) | IdentityError::Rule(UserError::Locked(until)) => {
                locked(until)
            }
            IdentityError::InvalidRefreshToken => {
                unauthorized("invalid_refresh_token", "The refresh token is not valid.")
            }
            IdentityError::SessionRevoked(reason) => {
                let reason = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                unauthorized(
                    "session_revoked",
                    &format!("The session has been ended ({reason}); log in again."),
                )
            }
            IdentityError::InvalidResetToken => invalid(
                "#/token",
                "is not a valid, unused and unexpired reset token",
            ),
            IdentityError::WrongPassword => invalid("#/current_password", "is not correct"),
            IdentityError::Rule(rule) => {
                let (status, code) = match rule {
                    UserError::AlreadyRegistered | UserError::StaleCredentials => {
                        (StatusCode::CONFLICT, "conflict")
                    }
                    UserError::NotRegistered => (StatusCode::NOT_FOUND, "user_not_found"),
                    UserError::Deactivated => (StatusCode::FORBIDDEN, "account_deactivated"),
                    UserError::SessionNotFound => (StatusCode::NOT_FOUND, "session_not_found"),
                    UserError::DeviceExists => (StatusCode::CONFLICT, "device_exists"),
                    UserError::DeviceNotFound => (StatusCode::NOT_FOUND, "device_not_found"),
                    UserError::TooManyDevices => {
                        (StatusCode::UNPROCESSABLE_ENTITY, "too_many_devices")
                    }
                    UserError::SameRole => (StatusCode::UNPROCESSABLE_ENTITY, "role_unchanged"),
                    UserError::InvalidRefreshToken
                    | UserError::InvalidResetToken
                    | UserError::Locked(_) => (StatusCode::UNPROCESSABLE_ENTITY, "rejected"),
                };
                Problem::new(status, code, rule.to_string())
            }
            IdentityError::Conflict => Problem::new(
                StatusCode::CONFLICT,
                "conflict",
                "The account was changed concurrently; retry.",
            ),
            IdentityError::Store(s) => s.into(),
        }
    }
}

impl From<ClassroomError> for Problem {
    fn from(e: ClassroomError) -> Self {
        use lectern_domain::classroom::{BoardError as B, ChannelError as C, LessonError as L};
        let detail = e.to_string();
        let (status, code) = match e {
            ClassroomError::Lesson(L::NotFound) => (StatusCode::NOT_FOUND, "lesson_not_found"),
            ClassroomError::Board(B::NotFound) => (StatusCode::NOT_FOUND, "board_not_found"),
            ClassroomError::Channel(C::NotFound) => (StatusCode::NOT_FOUND, "lesson_not_found"),
            ClassroomError::Lesson(L::NotEnrolled) => {
                (StatusCode::NOT_FOUND, "enrollment_not_found")
            }
            ClassroomError::Lesson(L::NotOwner) | ClassroomError::Board(B::NotOwner) => {
                (StatusCode::FORBIDDEN, "not_owner")
            }
            ClassroomError::Board(B::NotParticipant)
            | ClassroomError::Channel(C::NotParticipant) => {
                (StatusCode::FORBIDDEN, "not_participant")
            }
            ClassroomError::Board(B::NotLive) => (StatusCode::FORBIDDEN, "lesson_not_live"),
            ClassroomError::Lesson(L::AlreadyExists) => (StatusCode::CONFLICT, "conflict"),
            ClassroomError::Lesson(L::Full) => (StatusCode::CONFLICT, "lesson_full"),
            ClassroomError::Lesson(L::AlreadyEnrolled) => {
                (StatusCode::CONFLICT, "already_enrolled")
            }
            ClassroomError::Channel(C::Closed) => (StatusCode::CONFLICT, "lesson_cancelled"),
            ClassroomError::Lesson(L::InvalidTransition { .. }) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_transition")
            }
            ClassroomError::Lesson(L::CapacityBelowEnrolled(_)) => {
                return invalid("#/capacity", detail)
            }
            ClassroomError::Channel(C::InvalidText) => return invalid("#/text", detail),
            ClassroomError::AckBeyondLast(..) => return invalid("#/up_to_seq", detail),
            ClassroomError::Channel(C::Duplicate { .. } | C::RosterBehind)
            | ClassroomError::Conflict => (StatusCode::CONFLICT, "conflict"),
            ClassroomError::Store(s) => return s.into(),
        };
        Problem::new(status, code, detail)
    }
}
