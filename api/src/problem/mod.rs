//! RFC 9457 problem details: the one shape of every error response.
//!
//! Handlers return [`Problem`]. It renders itself as `application/problem+json`
//! here; the `problems` middleware adds the `request_id`, logs internal causes
//! once, inside the request's span, and turns any other error response (an
//! unknown route, a wrong method, a timeout) into a problem too.
//!
//! - `code.rs`: [`Code`], a code's name and status, and the shared codes;
//! - `store.rs`: how storage failures become problems.
//!
//! Each context declares its own codes, and how its errors become
//! problems, in `routes/<context>/problems.rs`.

mod code;
mod store;

pub use code::Code;

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    /// A JSON Pointer into the request body, such as `#/title`.
    pub pointer: String,
    /// What is wrong, for a person.
    pub detail: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// `about:blank` for plain HTTP errors, `urn:lectern:problem:<code>` otherwise.
    #[serde(rename = "type")]
    pub kind: String,
    /// The title.
    pub title: String,
    /// The status.
    pub status: u16,
    /// What is wrong, for a person.
    pub detail: String,
    /// A stable, machine-readable code.
    pub code: Code,
    /// One entry per invalid field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The request's id, to quote when reporting a problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Further members for this kind of problem.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
    /// The internal cause, logged and never sent.
    #[serde(skip)]
    pub cause: Option<String>,
    /// Response headers that belong to this problem (`Retry-After`,
    /// `WWW-Authenticate`, the rate-limit fields).
    #[serde(skip)]
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Problem {
    /// A problem with a stable `code` (which sets the status) and an
    /// occurrence `detail`.
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        let status = code.status();
        Self {
            kind: if code.is_plain() {
                "about:blank".to_owned()
            } else {
                format!("urn:lectern:problem:{code}")
            },
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code,
            errors: Vec::new(),
            request_id: None,
            extra: None,
            cause: None,
            headers: Vec::new(),
        }
    }

    /// The same problem with another status, for a code that several
    /// statuses share (a client error the framework classified).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status.as_u16();
        self.title = status.canonical_reason().unwrap_or("Error").to_owned();
        self
    }

    /// The generic problem for an HTTP status with no more specific cause.
    pub fn for_status(status: StatusCode) -> Self {
        let (code, detail) = match status {
            StatusCode::NOT_FOUND => (Code::NOT_FOUND, "No resource exists at this path."),
            StatusCode::METHOD_NOT_ALLOWED => (
                Code::METHOD_NOT_ALLOWED,
                "This path does not support this method.",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => (
                Code::PAYLOAD_TOO_LARGE,
                "The request body is larger than allowed.",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                Code::UNSUPPORTED_MEDIA_TYPE,
                "Send the body as application/json.",
            ),
            StatusCode::REQUEST_TIMEOUT => (
                Code::REQUEST_TIMEOUT,
                "The request took too long and was abandoned.",
            ),
            StatusCode::TOO_MANY_REQUESTS => {
                (Code::RATE_LIMITED, "Too many requests; wait and retry.")
            }
            s if s.is_server_error() => (
                Code::INTERNAL,
                "An internal error occurred. Quote the request_id when reporting it.",
            ),
            _ => (Code::BAD_REQUEST, "The request could not be processed."),
        };
        Self::new(code, detail).with_status(status)
    }

    /// A 422 naming one field.
    pub fn invalid(pointer: &str, detail: impl Into<String>) -> Self {
        Self::validation(vec![FieldError {
            pointer: pointer.to_owned(),
            detail: detail.into(),
        }])
    }

    /// 422 with one message per invalid field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let mut p = Self::new(
            Code::VALIDATION_FAILED,
            "The request has invalid fields; see errors.",
        );
        p.errors = errors;
        p
    }

    /// 500 that logs `cause` and tells the client nothing about it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let mut p = Self::for_status(StatusCode::INTERNAL_SERVER_ERROR);
        p.cause = Some(cause.to_string());
        p
    }

    /// 503 for a dependency that is down, with `Retry-After: 1`.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        let mut p = Self::new(
            Code::UNAVAILABLE,
            "A dependency is unavailable; retry shortly.",
        );
        p.cause = Some(cause.to_string());
        p.headers
            .push((header::RETRY_AFTER, HeaderValue::from_static("1")));
        p
    }

    /// Attach extension members.
    pub fn with_extra(mut self, extra: serde_json::Map<String, serde_json::Value>) -> Self {
        self.extra = Some(extra);
        self
    }

    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        for (name, value) in &self.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        // The middleware reads this to add the request id and log the cause.
        response.extensions_mut().insert(self);
        response
    }
}
