//! Problem codes: a typed, stable name and the HTTP status it answers
//! with. The codes every part of the API shares are here; each context
//! declares its own beside its routes (`routes/<context>/problems.rs`),
//! with how its errors become problems, and `routes/mod.rs` lists them all
//! for the OpenAPI document.

use axum::http::StatusCode;

/// A stable, machine-readable problem code (`Problem.code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code {
    name: &'static str,
    status: StatusCode,
}

impl Code {
    /// A code named `name` (snake_case, never reused) answering `status`.
    pub const fn new(name: &'static str, status: StatusCode) -> Self {
        Self { name, status }
    }

    /// The HTTP status this code answers with.
    pub fn status(self) -> StatusCode {
        self.status
    }

    /// The code as it appears in a problem document.
    pub fn as_str(self) -> &'static str {
        self.name
    }

    /// A plain HTTP problem: its type is `about:blank` (RFC 9457 §4.2).
    pub fn is_plain(self) -> bool {
        [
            Self::NOT_FOUND,
            Self::METHOD_NOT_ALLOWED,
            Self::PAYLOAD_TOO_LARGE,
            Self::UNSUPPORTED_MEDIA_TYPE,
            Self::REQUEST_TIMEOUT,
        ]
        .contains(&self)
    }
}

/// The codes every part of the API shares: HTTP, requests, access.
impl Code {
    /// The request could not be processed.
    pub const BAD_REQUEST: Code = Code::new("bad_request", StatusCode::BAD_REQUEST);
    /// The body is not well-formed JSON.
    pub const MALFORMED_JSON: Code = Code::new("malformed_json", StatusCode::BAD_REQUEST);
    /// A query parameter is malformed.
    pub const INVALID_QUERY: Code = Code::new("invalid_query", StatusCode::BAD_REQUEST);
    /// A cursor this API did not hand out.
    pub const INVALID_CURSOR: Code = Code::new("invalid_cursor", StatusCode::BAD_REQUEST);
    /// No resource at this path.
    pub const NOT_FOUND: Code = Code::new("not_found", StatusCode::NOT_FOUND);
    /// The path does not take this method.
    pub const METHOD_NOT_ALLOWED: Code =
        Code::new("method_not_allowed", StatusCode::METHOD_NOT_ALLOWED);
    /// The request took too long and was abandoned.
    pub const REQUEST_TIMEOUT: Code = Code::new("request_timeout", StatusCode::REQUEST_TIMEOUT);
    /// The body is larger than allowed.
    pub const PAYLOAD_TOO_LARGE: Code =
        Code::new("payload_too_large", StatusCode::PAYLOAD_TOO_LARGE);
    /// The body is not JSON.
    pub const UNSUPPORTED_MEDIA_TYPE: Code =
        Code::new("unsupported_media_type", StatusCode::UNSUPPORTED_MEDIA_TYPE);
    /// Fields are invalid; see `errors`.
    pub const VALIDATION_FAILED: Code =
        Code::new("validation_failed", StatusCode::UNPROCESSABLE_ENTITY);
    /// Over a rate limit; see `Retry-After`.
    pub const RATE_LIMITED: Code = Code::new("rate_limited", StatusCode::TOO_MANY_REQUESTS);
    /// Something failed inside; nothing more is said.
    pub const INTERNAL: Code = Code::new("internal", StatusCode::INTERNAL_SERVER_ERROR);
    /// A dependency is down; retry shortly.
    pub const UNAVAILABLE: Code = Code::new("unavailable", StatusCode::SERVICE_UNAVAILABLE);
    /// Not ready to serve.
    pub const NOT_READY: Code = Code::new("not_ready", StatusCode::SERVICE_UNAVAILABLE);
    /// The read model has not caught up with `consistent_with` in time.
    pub const NOT_YET_CONSISTENT: Code =
        Code::new("not_yet_consistent", StatusCode::SERVICE_UNAVAILABLE);
    /// The resource changed concurrently; retry.
    pub const CONFLICT: Code = Code::new("conflict", StatusCode::CONFLICT);
    /// An `Idempotency-Key` that is not 1–255 printable characters.
    pub const INVALID_IDEMPOTENCY_KEY: Code =
        Code::new("invalid_idempotency_key", StatusCode::BAD_REQUEST);
    /// The key was used with another request.
    pub const IDEMPOTENCY_KEY_REUSED: Code =
        Code::new("idempotency_key_reused", StatusCode::UNPROCESSABLE_ENTITY);
    /// The key's first request is still running.
    pub const IDEMPOTENCY_KEY_IN_USE: Code =
        Code::new("idempotency_key_in_use", StatusCode::CONFLICT);
    /// No bearer token.
    pub const MISSING_TOKEN: Code = Code::new("missing_token", StatusCode::UNAUTHORIZED);
    /// A forged or malformed token, or one signed with an unknown key.
    pub const INVALID_TOKEN: Code = Code::new("invalid_token", StatusCode::UNAUTHORIZED);
    /// The token has expired.
    pub const TOKEN_EXPIRED: Code = Code::new("token_expired", StatusCode::UNAUTHORIZED);
    /// The token's session has ended.
    pub const TOKEN_REVOKED: Code = Code::new("token_revoked", StatusCode::UNAUTHORIZED);
    /// The policy table denies the caller's role this action.
    pub const FORBIDDEN: Code = Code::new("forbidden", StatusCode::FORBIDDEN);
    /// A forced reset is pending: only the password change is allowed.
    pub const PASSWORD_CHANGE_REQUIRED: Code =
        Code::new("password_change_required", StatusCode::FORBIDDEN);
    /// Only an admin may create accounts with this role.
    pub const ROLE_NOT_ALLOWED: Code = Code::new("role_not_allowed", StatusCode::FORBIDDEN);
    /// The resource belongs to someone else.
    pub const NOT_OWNER: Code = Code::new("not_owner", StatusCode::FORBIDDEN);
    /// No projection has this name.
    pub const PROJECTION_NOT_FOUND: Code = Code::new("projection_not_found", StatusCode::NOT_FOUND);

    /// Every shared code.
    pub const GENERAL: &'static [Code] = &[
        Self::BAD_REQUEST,
        Self::MALFORMED_JSON,
        Self::INVALID_QUERY,
        Self::INVALID_CURSOR,
        Self::NOT_FOUND,
        Self::METHOD_NOT_ALLOWED,
        Self::REQUEST_TIMEOUT,
        Self::PAYLOAD_TOO_LARGE,
        Self::UNSUPPORTED_MEDIA_TYPE,
        Self::VALIDATION_FAILED,
        Self::RATE_LIMITED,
        Self::INTERNAL,
        Self::UNAVAILABLE,
        Self::NOT_READY,
        Self::NOT_YET_CONSISTENT,
        Self::CONFLICT,
        Self::INVALID_IDEMPOTENCY_KEY,
        Self::IDEMPOTENCY_KEY_REUSED,
        Self::IDEMPOTENCY_KEY_IN_USE,
        Self::MISSING_TOKEN,
        Self::INVALID_TOKEN,
        Self::TOKEN_EXPIRED,
        Self::TOKEN_REVOKED,
        Self::FORBIDDEN,
        Self::PASSWORD_CHANGE_REQUIRED,
        Self::ROLE_NOT_ALLOWED,
        Self::NOT_OWNER,
        Self::PROJECTION_NOT_FOUND,
    ];
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name)
    }
}

impl utoipa::PartialSchema for Code {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(crate::routes::problem_codes().map(Code::as_str)))
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
        let mut names: Vec<&str> = crate::routes::problem_codes().map(Code::as_str).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a name is used twice");
        assert_eq!(serde_json::json!(Code::LESSON_FULL), "lesson_full");
        assert_eq!(Code::LESSON_FULL.status(), StatusCode::CONFLICT);
    }
}
