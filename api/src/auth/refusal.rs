//! Refusals: 401 with its challenge, 429 with `Retry-After`, and
//! the `AccessDenied` event every refusal records.

use axum::http::{header, HeaderValue, StatusCode};
use lectern_domain::access::RecordDenial;
use lectern_domain::policy::Action;
use lectern_domain::EventMetadata;

use super::limits::Exceeded;
use super::Origin;
use crate::app::AppState;
use crate::problem::{Code, Problem};

/// 401 with a `WWW-Authenticate` challenge (RFC 6750).
pub fn unauthorized(code: Code, detail: &str) -> Problem {
    debug_assert_eq!(code.status(), StatusCode::UNAUTHORIZED);
    let mut p = Problem::new(code, detail);
    let challenge = if code == Code::MISSING_TOKEN {
        "Bearer realm=\"lectern\"".to_owned()
    } else {
        format!("Bearer realm=\"lectern\", error=\"invalid_token\", error_description=\"{detail}\"")
    };
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        p.headers.push((header::WWW_AUTHENTICATE, v));
    }
    p
}

/// 429 with `Retry-After`; the `RateLimit` headers come from the request's
/// readings (see `throttle`).
pub(super) fn too_many(e: &Exceeded) -> Problem {
    let r = &e.reading;
    let mut p = Problem::new(
        Code::RATE_LIMITED,
        format!(
            "At most {} requests per {} s are allowed under the {} limit; retry in {} s.",
            r.quota, r.window_secs, r.policy, e.retry_after_secs
        ),
    );
    if let Ok(v) = HeaderValue::from_str(&e.retry_after_secs.to_string()) {
        p.headers.push((header::RETRY_AFTER, v));
    }
    p
}

/// Record an `AccessDenied` event. A failure to record is logged and does not
/// change the answer: the caller is refused either way.
pub(super) async fn record(
    state: &AppState,
    actor: &str,
    action: Action,
    reason: &str,
    origin: &Origin,
    meta: &EventMetadata,
) {
    let denial = RecordDenial {
        action: action.name().to_owned(),
        reason: reason.to_owned(),
        method: origin.method.clone(),
        path: origin.path.clone(),
    };
    if let Err(e) = state.identity.record_denial(actor, denial, meta).await {
        tracing::error!(error = %e, "could not record an access denial");
    }
}
