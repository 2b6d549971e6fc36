//! `Idempotency-Key` on POST requests (see ARCHITECTURE "The request path").
//!
//! A client that lost an answer retries with the same key and body and gets
//! the same answer, without the command running twice. The same key with
//! another body is a 422. While the first request with a key runs, a second
//! one gets 409 and `Retry-After`. Keys are per caller (the token's subject)
//! and kept 24 hours.
//!
//! When the attempt that holds a key can no longer answer (its process died,
//! its client went away, or the database lost the answer), a retry takes the
//! key over as the same attempt: the command bus answers it with the events
//! the first attempt committed, if it committed any, so the command never
//! runs twice and the retry gets the first attempt's answer (see
//! ARCHITECTURE "The request path").
//!
//! Only authenticated requests take part, and not `/api/v1/auth/*`: those
//! answers carry tokens, which are never stored, and a refresh token must not
//! be replayable.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock, PoisonError};

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

/// How long a request may stay unfinished before its key is taken over
/// whatever its process's state (the request timeout is far shorter).
const ABANDONED_AFTER: &str = "5 minutes";
/// How old an unfinished attempt of another process must be before its key
/// is taken over because that process has no connection left: long enough
/// for a live process to reconnect after a database restart.
const TAKEOVER_GRACE: &str = "5 seconds";
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

    // One request per key at a time in this process; the claim below
    // decides between processes.
    let Some(_running) = Running::start(&scope, &key) else {
        return in_flight();
    };
    match claim(&state, &scope, &key, &fingerprint).await {
        Err(e) => Problem::unavailable(e).into_response(),
        Ok(Some(attempt)) => {
            let mut request = Request::from_parts(parts, Body::from(bytes));
            request.extensions_mut().insert(attempt);
            let response = next.run(request).await;
            remember(&state, &scope, &key, response).await
        }
        Ok(None) => replay(&state, &scope, &key, &fingerprint).await,
    }
}

/// A claimed key's attempt, for the handler: event metadata carries its id
/// ([`lectern_domain::EventMetadata::idempotency_key`]).
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// Stays the same when a retry takes over an attempt whose outcome is
    /// unknown, so ids derived from it name the same new aggregates.
    pub id: uuid::Uuid,
    /// This request takes over such an attempt: the command bus answers
    /// with what the attempt committed, if it did, instead of running it
    /// again.
    pub redelivered: bool,
}

/// Keys this process is running a request for.
fn running() -> std::sync::MutexGuard<'static, HashSet<(String, String)>> {
    static RUNNING: OnceLock<Mutex<HashSet<(String, String)>>> = OnceLock::new();
    RUNNING
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Marks a key as handled by a request of this process until dropped
/// (also when the client goes away and the request's future is dropped).
struct Running((String, String));

impl Running {
    /// `None` when another request of this process handles the key.
    fn start(scope: &str, key: &str) -> Option<Self> {
        let entry = (scope.to_owned(), key.to_owned());
        // The set's lock is released before a `Running` exists: its drop
        // takes the lock again.
        let inserted = running().insert(entry.clone());
        inserted.then(|| Self(entry))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        running().remove(&self.0);
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

/// Claim the key for this request: the attempt to run, or `None` when
/// another request holds the key or has answered it.
async fn claim(
    state: &AppState,
    scope: &str,
    key: &str,
    fingerprint: &[u8],
) -> Result<Option<Attempt>, sqlx::Error> {
    let owner = lectern_commands::pool::instance();
    // A new key, or one kept past its time: a new attempt.
    let fresh = sqlx::query_scalar!(
        "INSERT INTO idempotency_keys (scope, key, fingerprint, owner) VALUES ($1, $2, $3, $4)
         ON CONFLICT (scope, key) DO UPDATE
            SET fingerprint = EXCLUDED.fingerprint, status = NULL, content_type = NULL, body = NULL,
                created_at = now(), owner = EXCLUDED.owner, attempt = gen_random_uuid()
          WHERE idempotency_keys.created_at < now() - $5::text::interval
         RETURNING attempt",
        scope,
        key,
        fingerprint,
        owner,
        KEPT_FOR,
    )
    .fetch_optional(&state.pool)
    .await?;
    if let Some(id) = fresh {
        return Ok(Some(Attempt {
            id,
            redelivered: false,
        }));
    }
    // The same request, still unanswered, whose attempt is over: it was
    // released (it answered a server error), or it was this process's
    // (which handles no other request for the key, see `Running`: its client
    // went away, or its answer could not be kept), or the process that ran it
    // has no connection left (it died), or it was abandoned. Run it again,
    // as the same attempt.
    let orphaned = sqlx::query_scalar!(
        "UPDATE idempotency_keys k SET owner = $4, created_at = now()
          WHERE scope = $1 AND key = $2 AND fingerprint = $3 AND status IS NULL
            AND (created_at < now() - $5::text::interval
                 OR owner IS NULL
                 OR owner = $4
                 OR (owner IS DISTINCT FROM $4 AND created_at < now() - $6::text::interval
                     AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.application_name = k.owner)))
         RETURNING attempt",
        scope,
        key,
        fingerprint,
        owner,
        ABANDONED_AFTER,
        TAKEOVER_GRACE,
    )
    .fetch_optional(&state.pool)
    .await?;
    Ok(orphaned.map(|id| Attempt {
        id,
        redelivered: true,
    }))
}

/// Store the answer for replays; a server error is not kept: it releases the
/// attempt for a retry (see [`release`]).
async fn remember(state: &AppState, scope: &str, key: &str, response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        release(state, scope, key).await;
        return Problem::internal("the answer could not be read").into_response();
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if parts.status.is_server_error() {
        release(state, scope, key).await;
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

/// Let any process's retry take the attempt over at once. The attempt stays
/// (a 503 may follow a commit whose acknowledgement was lost): the retry,
/// redelivered, gets what it committed, or runs it if it committed nothing.
/// If this fails too, the row still names this process, whose next request
/// for the key takes it over at once.
async fn release(state: &AppState, scope: &str, key: &str) {
    let _ = sqlx::query!(
        "UPDATE idempotency_keys SET owner = NULL WHERE scope = $1 AND key = $2 AND status IS NULL",
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
