//! The rate-limit layer: every request gets a [`Readings`] for the checks
//! it meets, and every response of a limited endpoint gets the
//! `RateLimit-Policy` and `RateLimit` headers from it. A request without a
//! token is held here to the anonymous default, per client address, unless
//! it is one that authenticates another way or has limits of its own.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::limits::Readings;
use super::refusal::too_many;
use super::Origin;
use crate::app::AppState;

/// Paths that a request without a token may use beyond the anonymous
/// default: the auth endpoints (their own per-address limits), Stripe's
/// webhooks (signed; Stripe delivers from a few addresses), the realtime
/// socket (it authenticates in its first frame), the health probes, and the
/// Swagger UI's static files.
const EXEMPT: &[&str] = &[
    "/api/v1/auth/",
    "/api/v1/webhooks/",
    "/api/v1/realtime",
    "/health/",
    "/docs",
];

/// Whether a request without a token to `path` counts against the
/// anonymous default.
pub fn counts_as_anonymous(path: &str) -> bool {
    !EXEMPT.iter().any(|p| path.starts_with(p))
}

/// Whether a request to `path` is anonymous: it carries no token, or it is
/// outside the API, where no route reads one (the OpenAPI and AsyncAPI
/// documents), so that a made-up `Authorization` header gains nothing.
fn anonymous(path: &str, has_token: bool) -> bool {
    !has_token || !path.starts_with("/api/")
}

/// The layer (`axum::middleware::from_fn_with_state`).
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let readings = Readings::http();
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(readings.clone());
    let path = parts.uri.path();
    if anonymous(path, parts.headers.contains_key(header::AUTHORIZATION))
        && counts_as_anonymous(path)
    {
        let address = match Origin::from_request_parts(&mut parts, &state).await {
            Ok(origin) => origin.ip,
            Err(problem) => return problem.into_response(),
        };
        match state.auth.limits.check_anonymous(&address) {
            Ok(reading) => readings.set(reading.into_iter().collect()),
            Err(exceeded) => {
                // Not recorded as an event: this limit sheds floods of
                // anonymous requests, which must not each cost a write.
                metrics::counter!("lectern_anonymous_throttled_total").increment(1);
                let mut response = too_many(&exceeded).into_response();
                readings.refused(exceeded);
                readings.write(response.headers_mut());
                return response;
            }
        }
    }
    let mut response = next.run(Request::from_parts(parts, body)).await;
    readings.write(response.headers_mut());
    response
}
