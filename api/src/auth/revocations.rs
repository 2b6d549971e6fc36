//! Immediate revocation of access tokens.
//!
//! Access tokens are verified without a database round trip, so revocations
//! are kept in memory: sessions that ended, and per-user marks (a role change
//! or deactivation outdates older tokens; a forced reset restricts them).
//! The process that revokes updates the set at once; every process also
//! follows the event log (with the same gap-free follower as the projections,
//! woken by NOTIFY), so a revocation made elsewhere takes effect at once
//! there too, and within a poll interval if a NOTIFY is missed.
//!
//! Only the last [`RETAIN`] matters: any older token has expired, and tokens
//! issued since carry the user's current role, version and restriction.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use chrono::Utc;
use lectern_domain::identity::{Role, UserEvent};
use lectern_projections::{follow, FollowConfig, Follower, Interest, LogEvent, Wakeup};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::tokens::{AccessClaims, ACCESS_TTL_SECS};

/// How often the log is polled when no NOTIFY arrives.
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
    /// The token may be used.
    Valid,
    /// Valid only for changing the password.
    Restricted,
    /// The session ended or the user changed since the token was issued.
    Revoked,
}

/// Revoked sessions and user marks, shared by every request; and each
/// user's current role as this process last learned it.
#[derive(Default)]
pub struct Revocations {
    sessions: RwLock<HashMap<Uuid, chrono::DateTime<Utc>>>,
    users: RwLock<HashMap<Uuid, UserMark>>,
    /// A request's role comes from here, not from its token: a token says
    /// which user it is for, the server says what that user may be.
    roles: RwLock<HashMap<Uuid, Role>>,
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
            UserEvent::RoleChanged { to, .. } => {
                self.remember_role(user_id, *to);
                mark(&|m| m.min_version = m.min_version.max(version));
            }
            UserEvent::UserDeactivated {} => mark(&|m| m.min_version = u64::MAX),
            UserEvent::PasswordResetForced {} => mark(&|m| m.restricted = true),
            UserEvent::PasswordChanged { .. } => mark(&|m| {
                m.restricted = false;
                m.password_changed = version;
            }),
            _ => {}
        }
    }

    /// The role this process knows `user_id` to have now, if it has learned
    /// it (from the stream on a first request, or from a role change).
    pub fn role(&self, user_id: Uuid) -> Option<Role> {
        self.roles
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&user_id)
            .copied()
    }

    /// Remember that `user_id` has `role`.
    pub fn remember_role(&self, user_id: Uuid, role: Role) {
        self.roles
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(user_id, role);
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

    /// Take note of `event` from the log, if it can change what a token may
    /// do. The revocation watcher calls it, and so does the realtime
    /// tailer before it closes a revoked session's sockets, so that once a
    /// socket is closed for a revocation a new one with the same token is
    /// refused too, whichever of the two read the event first.
    pub fn observe_logged(&self, event: &LogEvent) {
        if !revokes(&event.aggregate_type, &event.event_type) {
            return;
        }
        let user = Uuid::parse_str(&event.aggregate_id);
        let parsed = serde_json::from_value::<UserEvent>(event.payload.clone());
        if let (Ok(user), Ok(parsed)) = (user, parsed) {
            let version = u64::try_from(event.sequence).unwrap_or(0);
            self.observe(user, version, &parsed);
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

/// Whether an event of this type can change what a token may do.
fn revokes(aggregate_type: &str, event_type: &str) -> bool {
    aggregate_type == "User"
        && matches!(
            event_type,
            "SessionRevoked"
                | "RoleChanged"
                | "UserDeactivated"
                | "PasswordResetForced"
                | "PasswordChanged"
        )
}

/// Follow the log into `revocations` until `cancel` fires, starting with the
/// events of the last [`RETAIN`].
pub async fn watch(
    pool: PgPool,
    revocations: std::sync::Arc<Revocations>,
    wakeup: Wakeup,
    cancel: CancellationToken,
) {
    let since = Utc::now() - chrono::Duration::from_std(RETAIN).unwrap_or_default();
    let config = FollowConfig {
        batch_size: 1000,
        idle_poll: POLL,
        ..FollowConfig::default()
    };
    let mut log: Option<Follower> = None;
    let mut last_prune = std::time::Instant::now();
    loop {
        let read = async {
            let mut conn = pool.acquire().await?;
            let log = match &mut log {
                Some(log) => log,
                None => {
                    let start = follow::position_since(&mut conn, since).await?;
                    log.insert(Follower::new(
                        start,
                        Interest::types(&["User"]),
                        &wakeup,
                        config,
                    ))
                }
            };
            let read = log.read(&mut conn).await?;
            for event in &read.events {
                revocations.observe_logged(event);
            }
            if let Some(last) = read.last {
                log.advance(last);
            }
            Ok::<_, sqlx::Error>(read.scanned)
        };
        let full = match read.await {
            Ok(n) => n as i64 == config.batch_size,
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
            let waited = match &mut log {
                Some(log) => log.wait(&cancel).await,
                None => tokio::select! {
                    () = cancel.cancelled() => false,
                    () = tokio::time::sleep(POLL) => true,
                },
            };
            if !waited {
                return;
            }
        }
    }
}
