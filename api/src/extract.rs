//! Extractors whose rejections are problem documents.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::problem::{Code, FieldError, Problem};

/// A JSON body. Malformed JSON is 400, a body of the wrong shape 422 with a
/// pointer to the field, a wrong content type 415 and an oversized body 413.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

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
        JsonRejection::MissingJsonContentType(_) => {
            Problem::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        }
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE)
        }
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
