//! Every problem code Lectern answers with, and its HTTP status: the one
//! error classification. A context adds its codes in its own section of the
//! table below, and maps its errors to them in its own file beside this one
//! (`identity.rs`, `classroom.rs`).

use axum::http::StatusCode;

/// Defines [`Code`] from one table: variant, wire name, status, meaning.
macro_rules! codes {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal => $status:ident, )*) => {
        /// A stable, machine-readable problem code (`Problem.code`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl Code {
            /// The HTTP status this code answers with.
            pub fn status(self) -> StatusCode {
                match self { $( Self::$variant => StatusCode::$status, )* }
            }

            /// The code as it appears in a problem document.
            pub fn as_str(self) -> &'static str {
                match self { $( Self::$variant => $name, )* }
            }

            /// Every code, in table order.
            pub const ALL: &'static [Code] = &[ $( Self::$variant, )* ];
        }
    };
}

codes! {
    // HTTP: problems the protocol itself raises.
    /// The request could not be processed.
    BadRequest = "bad_request" => BAD_REQUEST,
    /// The body is not well-formed JSON.
    MalformedJson = "malformed_json" => BAD_REQUEST,
    /// A query parameter is malformed.
    InvalidQuery = "invalid_query" => BAD_REQUEST,
    /// A cursor this API did not hand out.
    InvalidCursor = "invalid_cursor" => BAD_REQUEST,
    /// No resource at this path.
    NotFound = "not_found" => NOT_FOUND,
    /// The path does not take this method.
    MethodNotAllowed = "method_not_allowed" => METHOD_NOT_ALLOWED,
    /// The request took too long and was abandoned.
    RequestTimeout = "request_timeout" => REQUEST_TIMEOUT,
    /// The body is larger than allowed.
    PayloadTooLarge = "payload_too_large" => PAYLOAD_TOO_LARGE,
    /// The body is not JSON.
    UnsupportedMediaType = "unsupported_media_type" => UNSUPPORTED_MEDIA_TYPE,
    /// Fields are invalid; see `errors`.
    ValidationFailed = "validation_failed" => UNPROCESSABLE_ENTITY,
    /// Over a rate limit; see `Retry-After`.
    RateLimited = "rate_limited" => TOO_MANY_REQUESTS,
    /// Something failed inside; nothing more is said.
    Internal = "internal" => INTERNAL_SERVER_ERROR,
    /// A dependency is down; retry shortly.
    Unavailable = "unavailable" => SERVICE_UNAVAILABLE,
    /// Not ready to serve.
    NotReady = "not_ready" => SERVICE_UNAVAILABLE,
    /// The read model has not caught up with `consistent_with` in time.
    NotYetConsistent = "not_yet_consistent" => SERVICE_UNAVAILABLE,
    /// The resource changed concurrently; retry.
    Conflict = "conflict" => CONFLICT,

    // Requests: idempotency keys.
    /// An `Idempotency-Key` that is not 1–255 printable characters.
    InvalidIdempotencyKey = "invalid_idempotency_key" => BAD_REQUEST,
    /// The key was used with another request.
    IdempotencyKeyReused = "idempotency_key_reused" => UNPROCESSABLE_ENTITY,
    /// The key's first request is still running.
    IdempotencyKeyInUse = "idempotency_key_in_use" => CONFLICT,

    // Access: tokens and the policy table.
    /// No bearer token.
    MissingToken = "missing_token" => UNAUTHORIZED,
    /// A forged or malformed token, or one signed with an unknown key.
    InvalidToken = "invalid_token" => UNAUTHORIZED,
    /// The token has expired.
    TokenExpired = "token_expired" => UNAUTHORIZED,
    /// The token's session has ended.
    TokenRevoked = "token_revoked" => UNAUTHORIZED,
    /// The policy table denies the caller's role this action.
    Forbidden = "forbidden" => FORBIDDEN,
    /// A forced reset is pending: only the password change is allowed.
    PasswordChangeRequired = "password_change_required" => FORBIDDEN,
    /// Only an admin may create accounts with this role.
    RoleNotAllowed = "role_not_allowed" => FORBIDDEN,
    /// The resource belongs to someone else.
    NotOwner = "not_owner" => FORBIDDEN,

    // Identity.
    /// An account with this email exists.
    EmailTaken = "email_taken" => CONFLICT,
    /// Wrong email or password.
    InvalidCredentials = "invalid_credentials" => UNAUTHORIZED,
    /// Too many failed logins; see `Retry-After`.
    AccountLocked = "account_locked" => TOO_MANY_REQUESTS,
    /// The refresh token is not valid.
    InvalidRefreshToken = "invalid_refresh_token" => UNAUTHORIZED,
    /// The session has ended.
    SessionRevoked = "session_revoked" => UNAUTHORIZED,
    /// No such account.
    UserNotFound = "user_not_found" => NOT_FOUND,
    /// The account is deactivated.
    AccountDeactivated = "account_deactivated" => FORBIDDEN,
    /// No such session.
    SessionNotFound = "session_not_found" => NOT_FOUND,
    /// The device is registered already.
    DeviceExists = "device_exists" => CONFLICT,
    /// No such device.
    DeviceNotFound = "device_not_found" => NOT_FOUND,
    /// The device limit is reached.
    TooManyDevices = "too_many_devices" => UNPROCESSABLE_ENTITY,
    /// The user has this role already.
    RoleUnchanged = "role_unchanged" => UNPROCESSABLE_ENTITY,
    /// A rule refused the command.
    Rejected = "rejected" => UNPROCESSABLE_ENTITY,

    // Classroom.
    /// No such lesson.
    LessonNotFound = "lesson_not_found" => NOT_FOUND,
    /// No such board.
    BoardNotFound = "board_not_found" => NOT_FOUND,
    /// The student is not enrolled.
    EnrollmentNotFound = "enrollment_not_found" => NOT_FOUND,
    /// Only the lesson's tutor and enrolled students take part.
    NotParticipant = "not_participant" => FORBIDDEN,
    /// The lesson is not live.
    LessonNotLive = "lesson_not_live" => FORBIDDEN,
    /// No seat is left.
    LessonFull = "lesson_full" => CONFLICT,
    /// The student is enrolled already.
    AlreadyEnrolled = "already_enrolled" => CONFLICT,
    /// The lesson was cancelled.
    LessonCancelled = "lesson_cancelled" => CONFLICT,
    /// The lesson cannot make this transition.
    InvalidTransition = "invalid_transition" => UNPROCESSABLE_ENTITY,
    /// A bulk request with `atomic: true` had a refused item.
    BulkRejected = "bulk_rejected" => UNPROCESSABLE_ENTITY,

    // Operations.
    /// No projection has this name.
    ProjectionNotFound = "projection_not_found" => NOT_FOUND,
}

impl Code {
    /// A plain HTTP problem: its type is `about:blank` (RFC 9457 §4.2).
    pub fn is_plain(self) -> bool {
        matches!(
            self,
            Self::NotFound
                | Self::MethodNotAllowed
                | Self::PayloadTooLarge
                | Self::UnsupportedMediaType
                | Self::RequestTimeout
        )
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl utoipa::PartialSchema for Code {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(Code::ALL.iter().map(|c| c.as_str())))
            .description(Some("A stable, machine-readable problem code."))
            .into()
    }
}

impl utoipa::ToSchema for Code {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_name() {
        let mut names: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before);
        assert_eq!(serde_json::json!(Code::LessonFull), "lesson_full");
        assert_eq!(Code::LessonFull.status(), StatusCode::CONFLICT);
    }
}
