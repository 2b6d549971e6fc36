//! Extractors whose rejections are problem documents.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::problem::{Code, FieldError, Problem};

/// A JSON body. Malformed JSON is 400, a body of the wrong shape 422 with a
/// pointer to the field, a wrong content type 415 and an oversized body 413.
/// A string or member name holding NUL, which PostgreSQL can store neither
/// in `text` nor in `jsonb`, is 422 with a pointer to it: refused here, at the
/// edge, so it never reaches a statement (where it would fail the append it
/// shares with other requests).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(Problem::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE)
            } else {
                Problem::new(Code::BAD_REQUEST, e.body_text()).with_status(e.status())
            }
        })?;
        body(&bytes).map(Self)
    }
}

/// A JSON body parsed as `T`, with the problems `ApiJson` answers: 400 for
/// text that is not JSON, 422 naming the field that does not fit or holds a
/// NUL. Commands sent over the realtime socket are parsed this way too.
pub fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    // JSON carries NUL only escaped; look closer only when the escape
    // appears at all (it may be an escaped backslash before "u0000").
    if bytes.windows(6).any(|w| w == b"\\u0000") {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
            if let Some(pointer) = nul_pointer(&value, "#") {
                return Err(Problem::invalid(
                    &pointer,
                    "must not contain NUL characters (\\u0000)",
                ));
            }
        }
    }
    match axum::Json::<T>::from_bytes(bytes) {
        Ok(axum::Json(v)) => Ok(v),
        Err(rejection) => Err(json_problem(rejection)),
    }
}

/// Whether the request says its body is JSON (`application/json` or
/// `application/*+json`), as axum's `Json` requires.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The JSON pointer of the first string or member name in `value` that
/// holds a NUL character (a member name's pointer is its object's).
fn nul_pointer(value: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value as V;
    let escape = |key: &str| key.replace('~', "~0").replace('/', "~1");
    match value {
        V::String(s) => s.contains('\0').then(|| at.to_owned()),
        V::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_pointer(v, &format!("{at}/{i}"))),
        V::Object(members) => members.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(at.to_owned())
            } else {
                nul_pointer(v, &format!("{at}/{}", escape(k)))
            }
        }),
        V::Null | V::Bool(_) | V::Number(_) => None,
    }
}

/// A parse failure of `axum::Json::from_bytes` as a problem.
fn json_problem(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            // serde_path_to_error's message is "<path>: <reason>".
            let text = e.body_text();
            let message = text
                .strip_prefix("Failed to deserialize the JSON body into the target type: ")
                .unwrap_or(&text);
            let (path, reason) = message.split_once(": ").unwrap_or(("", message));
            let pointer = if path.is_empty() || path == "." {
                "#".to_owned()
            } else {
                format!("#/{}", path.replace(['.', '['], "/").replace(']', ""))
            };
            Problem::validation(vec![FieldError {
                pointer,
                detail: reason.to_owned(),
            }])
        }
        JsonRejection::JsonSyntaxError(_) => {
            Problem::new(Code::MALFORMED_JSON, "The request body is not valid JSON.")
        }
        // The content type and the body's size were checked before parsing.
        other => Problem::new(Code::BAD_REQUEST, other.body_text()).with_status(other.status()),
    }
}

/// Query parameters; a malformed query string is 400 naming the problem.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // A NUL (`%00`) in a parameter can be stored nowhere and matched
        // against nothing: refuse it before any query sees it.
        if let Some(query) = parts.uri.query() {
            for pair in query.split('&') {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                if value.to_ascii_lowercase().contains("%00") || name.contains("%00") {
                    return Err(Problem::new(
                        Code::INVALID_QUERY,
                        format!("The query parameter {name:?} holds a NUL character (%00)."),
                    ));
                }
            }
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(Problem::new(Code::INVALID_QUERY, e.body_text()))
            }
            Err(other) => {
                Err(Problem::new(Code::INVALID_QUERY, other.body_text())
                    .with_status(other.status()))
            }
        }
    }
}

/// A time query parameter must fall in years 1 to 9999: PostgreSQL cannot
/// compare against much of the rest, and no lesson or event lies there.
/// 400 naming the parameter otherwise.
pub fn check_time_param(
    name: &str,
    value: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), Problem> {
    use chrono::Datelike;
    match value {
        Some(t) if !(1..=9999).contains(&t.year()) => Err(Problem::new(
            Code::INVALID_QUERY,
            format!("The query parameter {name:?} must fall in the years 1 to 9999."),
        )),
        _ => Ok(()),
    }
}
