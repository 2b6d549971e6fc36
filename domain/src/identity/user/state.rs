//! The state of an account: its status, sessions and devices, and the
//! limits the rules enforce.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{RevokeReason, UserError, UserEvent};
use crate::identity::values::{Platform, Role};

/// Failed logins within [`FAILURE_WINDOW`] that lock an account.
pub const MAX_FAILURES: usize = 5;
/// The window in which failures are counted.
pub const FAILURE_WINDOW: Duration = Duration::minutes(15);
/// The first lock's length; each further lock doubles it, up to [`MAX_LOCK`].
pub const FIRST_LOCK: Duration = Duration::minutes(1);
/// The longest lock.
pub const MAX_LOCK: Duration = Duration::hours(24);
/// Active sessions a user may hold; a new login past this ends the oldest.
pub const MAX_SESSIONS: usize = 5;
/// A session's absolute lifetime; rotation does not extend it.
pub const SESSION_LIFETIME: Duration = Duration::days(30);
/// Devices a user may register.
pub const MAX_DEVICES: usize = 20;

/// Account status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// May log in.
    #[default]
    Active,
    /// May not log in; every session ended.
    Deactivated,
}

/// A live refresh-token family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The id.
    pub id: Uuid,
    /// The SHA-256 of the refresh token.
    pub refresh_hash: String,
    /// How many times it was refreshed.
    pub generation: u32,
    /// Hashes of tokens already rotated away; presenting one is theft.
    pub used_hashes: Vec<String>,
    /// The SHA-256 of the device fingerprint.
    pub fingerprint_hash: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// The client-chosen device id.
    pub device_id: String,
    /// The name shown to the user.
    pub name: String,
    /// The device platform.
    pub platform: Platform,
    /// Whether it is the active device.
    pub active: bool,
}

/// What the write side needs to know about an account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The id.
    pub id: Option<Uuid>,
    /// The email address, normalised.
    pub email: String,
    /// The name shown to other users.
    pub display_name: String,
    /// The role.
    pub role: Option<Role>,
    /// The status.
    pub status: Status,
    /// The Argon2id PHC string.
    pub password_hash: String,
    /// Tokens allow only the password change until it is changed.
    pub must_change_password: bool,
    /// Recent failed logins.
    pub failures: Vec<DateTime<Utc>>,
    /// Locked until then.
    pub locked_until: Option<DateTime<Utc>>,
    /// How many times it was locked.
    pub lock_count: u32,
    /// The live sessions.
    pub sessions: Vec<Session>,
    /// The registered devices.
    pub devices: Vec<Device>,
    /// The pending reset token's hash and expiry.
    pub reset: Option<(String, DateTime<Utc>)>,
}

impl User {
    pub(super) fn registered(&self) -> Result<Role, UserError> {
        self.role.ok_or(UserError::NotRegistered)
    }

    pub(super) fn active(&self) -> Result<Role, UserError> {
        let role = self.registered()?;
        if self.status == Status::Deactivated {
            return Err(UserError::Deactivated);
        }
        Ok(role)
    }

    /// The session with this id, if it is live.
    pub fn session(&self, id: Uuid) -> Option<&Session> {
        self.sessions.iter().find(|s| s.id == id)
    }

    pub(super) fn lock_length(lock_count: u32) -> Duration {
        let factor = 1i32.checked_shl(lock_count.min(20)).unwrap_or(i32::MAX);
        (FIRST_LOCK * factor).min(MAX_LOCK)
    }

    pub(super) fn revoke_where(
        &self,
        keep: impl Fn(&Session) -> bool,
        reason: RevokeReason,
    ) -> Vec<UserEvent> {
        self.sessions
            .iter()
            .filter(|s| !keep(s))
            .map(|s| UserEvent::SessionRevoked {
                session_id: s.id,
                reason,
            })
            .collect()
    }
}
