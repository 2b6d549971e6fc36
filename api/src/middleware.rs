//! Cross-cutting request handling: request ids, one log line and metrics per
//! request, and problem documents for every error.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::problem::{Problem, PROBLEM_JSON};

/// The header that carries the request id in and out.
pub const REQUEST_ID: &str = "x-request-id";

/// The id of the current request, in request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A client's request id is kept if it is short and printable; otherwise a new
/// one is made, so nothing odd reaches logs or event metadata.
fn accept_request_id(value: Option<&HeaderValue>) -> String {
    value
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .filter(|v| {
            v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// Outermost layer: give the request an id, run it inside a span, render
/// every error as a problem with that id, log once, and count it.
pub async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = accept_request_id(request.headers().get(REQUEST_ID));
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %method, route = %route);

    async move {
        let response = next.run(request).await;
        let mut response = render_problem(response, &request_id);
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID, v);
        }
        let status = response.status();
        let elapsed = started.elapsed();
        let labels = [
            ("method", method.to_string()),
            ("route", route.clone()),
            ("status", status.as_u16().to_string()),
        ];
        metrics::counter!("lectern_http_requests_total", &labels).increment(1);
        metrics::histogram!("lectern_http_request_duration_seconds", &labels)
            .record(elapsed.as_secs_f64());
        let ms = elapsed.as_secs_f64() * 1000.0;
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), duration_ms = ms, "request failed");
        } else {
            tracing::info!(
                status = status.as_u16(),
                duration_ms = ms,
                "request handled"
            );
        }
        response
    }
    .instrument(span)
    .await
}

/// Make every error response a problem document carrying the request id, and
/// log a problem's internal cause here, once.
fn render_problem(response: Response, request_id: &str) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    let (mut parts, body) = response.into_parts();
    let mut problem = match parts.extensions.remove::<Problem>() {
        Some(p) => p,
        // An error from outside our handlers (no route, wrong method, a
        // timeout or body-limit layer): replace its plain-text body.
        None if !is_problem => Problem::for_status(status),
        None => return Response::from_parts(parts, body),
    };
    if let Some(cause) = problem.cause.take() {
        tracing::error!(cause = %cause, code = %problem.code, "internal error");
    }
    problem.request_id = Some(request_id.to_owned());
    let mut rendered = problem.into_response();
    rendered.extensions_mut().remove::<Problem>();
    // Keep headers such as Allow, Retry-After and WWW-Authenticate.
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rendered.headers_mut().insert(name.clone(), value.clone());
        }
    }
    *rendered.status_mut() = status;
    rendered
}

/// 404 for a path no route matches.
pub async fn not_found() -> Response {
    Problem::for_status(StatusCode::NOT_FOUND).into_response()
}

/// 405 for a route that exists with other methods.
pub async fn method_not_allowed() -> Response {
    Problem::for_status(StatusCode::METHOD_NOT_ALLOWED).into_response()
}

/// 413 at once for a request whose `Content-Length` is past `max` bytes,
/// before anything waits for a body that large (the body limit alone only
/// trips once that many bytes have arrived, or the timeout ends the wait).
pub async fn refuse_oversized(
    axum::extract::State(max): axum::extract::State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > max as u64 => {
            Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE).into_response()
        }
        _ => next.run(request).await,
    }
}
