//! Immediate revocation of access tokens.
//!
//! Access tokens are verified without a database round trip, so revocations
//! are kept in memory: sessions that ended, and per-user marks (a role change
//! or deactivation outdates older tokens; a forced reset restricts them).
//! The process that revokes updates the set at once; every process also tails
//! the event log (the same gap-free reader as the projections) every
//! [`POLL`], so a revocation made elsewhere takes effect within a second.
//!
//! Only the last [`RETAIN`] matters: any older token has expired, and tokens
//! issued since carry the user's current role, version and restriction.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use chrono::Utc;
use lectern_domain::identity::UserEvent;
use sqlx::{PgPool, Row};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::tokens::{AccessClaims, ACCESS_TTL_SECS};

/// How often the log is polled for revocations made by other processes.
pub const POLL: Duration = Duration::from_millis(200);
/// How long a revocation is remembered: an access token's lifetime plus
/// clock leeway.
pub const RETAIN: Duration = Duration::from_secs(ACCESS_TTL_SECS as u64 + 120);

#[derive(Debug, Clone, Copy)]
struct UserMark {
    /// Tokens issued at an older user version are refused.
    min_version: u64,
    /// A forced reset is pending: tokens allow only the password change.
    restricted: bool,
    /// The version of the last password change.
    password_changed: u64,
    at: chrono::DateTime<Utc>,
}

/// What a verified token still may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Valid,
    /// Valid only for changing the password.
    Restricted,
    Revoked,
}

/// Revoked sessions and user marks, shared by every request.
#[derive(Default)]
pub struct Revocations {
    sessions: RwLock<HashMap<Uuid, chrono::DateTime<Utc>>>,
    users: RwLock<HashMap<Uuid, UserMark>>,
}

impl Revocations {
    /// Take note of one event of user `user_id` at stream version `version`.
    pub fn observe(&self, user_id: Uuid, version: u64, event: &UserEvent) {
        let now = Utc::now();
        let mark = |f: &dyn Fn(&mut UserMark)| {
            let mut users = self
                .users
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let m = users.entry(user_id).or_insert(UserMark {
                min_version: 0,
                restricted: false,
                password_changed: 0,
                at: now,
            });
            f(m);
            m.at = now;
        };
        match event {
            UserEvent::SessionRevoked { session_id, .. } => {
                self.sessions
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(*session_id, now);
            }
            UserEvent::RoleChanged { .. } => mark(&|m| m.min_version = m.min_version.max(version)),
            UserEvent::UserDeactivated {} => mark(&|m| m.min_version = u64::MAX),
            UserEvent::PasswordResetForced {} => mark(&|m| m.restricted = true),
            UserEvent::PasswordChanged { .. } => mark(&|m| {
                m.restricted = false;
                m.password_changed = version;
            }),
            _ => {}
        }
    }

    /// Whether a verified token may still be used, and how.
    pub fn standing(&self, claims: &AccessClaims) -> Standing {
        if self
            .sessions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(&claims.sid)
        {
            return Standing::Revoked;
        }
        let mark = self
            .users
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&claims.sub)
            .copied();
        match mark {
            Some(m) if claims.uv < m.min_version => Standing::Revoked,
            Some(m) if m.restricted => Standing::Restricted,
            Some(m) if claims.mcp && claims.uv < m.password_changed => Standing::Valid,
            _ if claims.mcp => Standing::Restricted,
            _ => Standing::Valid,
        }
    }

    fn prune(&self) {
        let cutoff = Utc::now() - chrono::Duration::from_std(RETAIN).unwrap_or_default();
        self.sessions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, at| *at > cutoff);
        self.users
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, m| m.at > cutoff);
    }
}

const TAIL: &str = "
SELECT transaction_id::text::bigint AS tx, global_position, aggregate_id, sequence,
       CASE WHEN aggregate_type = 'User'
             AND event_type IN ('SessionRevoked', 'RoleChanged', 'UserDeactivated',
                                'PasswordResetForced', 'PasswordChanged')
            THEN payload END AS payload
  FROM events
 WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
   AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
   AND recorded_at >= $3
 ORDER BY transaction_id, global_position
 LIMIT 1000";

/// Tail the log into `revocations` until `cancel` fires, starting with the
/// events of the last [`RETAIN`].
pub async fn watch(
    pool: PgPool,
    revocations: std::sync::Arc<Revocations>,
    cancel: CancellationToken,
) {
    let since = Utc::now() - chrono::Duration::from_std(RETAIN).unwrap_or_default();
    let (mut tx, mut pos) = (0_i64, 0_i64);
    let mut last_prune = std::time::Instant::now();
    loop {
        let batch = sqlx::query(TAIL)
            .bind(tx.to_string())
            .bind(pos)
            .bind(since)
            .fetch_all(&pool)
            .await;
        let full = match batch {
            Ok(rows) => {
                for row in &rows {
                    tx = row.get("tx");
                    pos = row.get("global_position");
                    let Some(payload) = row.get::<Option<serde_json::Value>, _>("payload") else {
                        continue;
                    };
                    let user = Uuid::parse_str(row.get::<&str, _>("aggregate_id"));
                    let event = serde_json::from_value::<UserEvent>(payload);
                    if let (Ok(user), Ok(event)) = (user, event) {
                        let version = u64::try_from(row.get::<i64, _>("sequence")).unwrap_or(0);
                        revocations.observe(user, version, &event);
                    }
                }
                rows.len() == 1000
            }
            Err(e) => {
                if pool.is_closed() {
                    return;
                }
                tracing::warn!(error = %e, "revocation watcher cannot read the log; retrying");
                false
            }
        };
        if last_prune.elapsed() > Duration::from_secs(60) {
            revocations.prune();
            last_prune = std::time::Instant::now();
        }
        if !full {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}
