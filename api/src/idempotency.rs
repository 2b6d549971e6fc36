//! `Idempotency-Key` on POST requests (see ARCHITECTURE "The request path").
//!
//! A client that lost an answer retries with the same key and body and gets
//! the same answer, without the command running twice. The same key with
//! another body is a 422. While the first request with a key runs, a second
//! one gets 409 and `Retry-After`. Keys are per caller (the token's subject)
//! and kept 24 hours.
//!
//! Only authenticated requests take part, and not `/api/v1/auth/*`: those
//! answers carry tokens, which are never stored, and a refresh token must not
//! be replayable.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::problem::{Code, Problem};
use crate::AppState;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// Set on an answer replayed from an earlier request with the same key.
pub const REPLAYED: &str = "idempotent-replayed";

/// How long a request may stay unfinished before its key is taken over (the
/// request timeout is far shorter, so only a dead process leaves one).
const ABANDONED_AFTER: &str = "5 minutes";
/// How long a key is kept.
const KEPT_FOR: &str = "24 hours";

/// The middleware.
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST || request.uri().path().starts_with("/api/v1/auth/") {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get(HEADER).cloned() else {
        return next.run(request).await;
    };
    let Some(key) = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
    else {
        return Problem::new(
            Code::INVALID_IDEMPOTENCY_KEY,
            "Idempotency-Key must be 1 to 255 printable ASCII characters.",
        )
        .into_response();
    };
    // A request without a valid token is refused by its handler anyway.
    let Some(scope) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| state.auth.keyring.verify(t).ok())
        .map(|(claims, _)| claims.sub.to_string())
    else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, state.http.max_body_bytes).await else {
        return Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE).into_response();
    };
    let mut hash = Sha256::new();
    for part in [
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    ] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.update(&bytes);
    let fingerprint = hash.finalize().to_vec();

    match claim(&state, &scope, &key, &fingerprint).await {
        Err(e) => Problem::unavailable(e).into_response(),
        Ok(true) => {
            let response = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            remember(&state, &scope, &key, response).await
        }
        Ok(false) => replay(&state, &scope, &key, &fingerprint).await,
    }
}

/// Delete keys older than they are kept; returns how many.
pub async fn prune(pool: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "DELETE FROM idempotency_keys WHERE created_at < now() - $1::text::interval",
        KEPT_FOR,
    )
    .execute(pool)
    .await?
    .rows_affected())
}

/// Claim the key for this request; `false` when another request holds it.
async fn claim(
    state: &AppState,
    scope: &str,
    key: &str,
    fingerprint: &[u8],
) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query_scalar!(
        "INSERT INTO idempotency_keys (scope, key, fingerprint) VALUES ($1, $2, $3)
         ON CONFLICT (scope, key) DO UPDATE
            SET fingerprint = EXCLUDED.fingerprint, status = NULL, content_type = NULL, body = NULL,
                created_at = now()
          WHERE idempotency_keys.created_at < now() - $4::text::interval
             OR (idempotency_keys.status IS NULL
                 AND idempotency_keys.created_at < now() - $5::text::interval)
         RETURNING 1",
        scope,
        key,
        fingerprint,
        KEPT_FOR,
        ABANDONED_AFTER,
    )
    .fetch_optional(&state.pool)
    .await?;
    Ok(claimed.is_some())
}

/// Store the answer for replays; a server error frees the key for a retry.
async fn remember(state: &AppState, scope: &str, key: &str, response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        forget(state, scope, key).await;
        return Problem::internal("the answer could not be read").into_response();
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if parts.status.is_server_error() {
        forget(state, scope, key).await;
    } else {
        let stored = sqlx::query!(
            "UPDATE idempotency_keys SET status = $3, content_type = $4, body = $5
              WHERE scope = $1 AND key = $2",
            scope,
            key,
            i16::try_from(parts.status.as_u16()).unwrap_or(i16::MAX),
            content_type,
            bytes.as_ref(),
        )
        .execute(&state.pool)
        .await;
        if let Err(e) = stored {
            tracing::warn!(error = %e, "idempotent answer not stored; a retry will be refused until the key is abandoned");
        }
    }
    parts
        .headers
        .insert(REPLAYED, HeaderValue::from_static("false"));
    Response::from_parts(parts, Body::from(bytes))
}

async fn forget(state: &AppState, scope: &str, key: &str) {
    let _ = sqlx::query!(
        "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2",
        scope,
        key,
    )
    .execute(&state.pool)
    .await;
}

/// The stored answer, or why there is none to give.
async fn replay(state: &AppState, scope: &str, key: &str, fingerprint: &[u8]) -> Response {
    let row = sqlx::query!(
        "SELECT fingerprint, status, content_type, body FROM idempotency_keys
          WHERE scope = $1 AND key = $2",
        scope,
        key,
    )
    .fetch_optional(&state.pool)
    .await
    .map(|r| r.map(|r| (r.fingerprint, r.status, r.content_type, r.body)));
    match row {
        Err(e) => Problem::unavailable(e).into_response(),
        // Freed by a server error in between: the client may try again.
        Ok(None) => in_flight(),
        Ok(Some((stored, _, _, _))) if stored != fingerprint => Problem::new(
            Code::IDEMPOTENCY_KEY_REUSED,
            "This Idempotency-Key was already used with a different request.",
        )
        .into_response(),
        Ok(Some((_, Some(status), content_type, body))) => {
            let mut response = Response::new(Body::from(body.unwrap_or_default()));
            *response.status_mut() = u16::try_from(status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::OK);
            if let Some(v) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                response.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            response
                .headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
            response
        }
        Ok(Some((_, None, _, _))) => in_flight(),
    }
}

fn in_flight() -> Response {
    let mut response = Problem::new(
        Code::IDEMPOTENCY_KEY_IN_USE,
        "A request with this Idempotency-Key is still running; retry shortly.",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
