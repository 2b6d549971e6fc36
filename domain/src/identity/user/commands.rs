//! What may be asked of an account.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::identity::values::{Platform, Role};

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// The user logged out.
    Logout,
    /// Logout all.
    LogoutAll,
    /// User request.
    UserRequest,
    /// Session limit.
    SessionLimit,
    /// Refresh token reuse.
    RefreshTokenReuse,
    /// Fingerprint mismatch.
    FingerprintMismatch,
    /// Password changed.
    PasswordChanged,
    /// Password reset.
    PasswordReset,
    /// Device revoked.
    DeviceRevoked,
    /// User deactivated.
    UserDeactivated,
    /// It reached its lifetime.
    Expired,
}

/// Commands on a user.
#[derive(Debug, Clone)]
pub enum UserCommand {
    /// Create the account.
    Register {
        /// The user.
        user_id: Uuid,
        /// The email address, normalised.
        email: String,
        /// The name shown to other users.
        display_name: String,
        /// The role.
        role: Role,
        /// The Argon2id PHC string.
        password_hash: String,
    },
    /// Update profile.
    UpdateProfile {
        /// The name shown to other users.
        display_name: String,
    },
    /// Record a login attempt. `verified_against` is the hash the password was
    /// checked against, so a password change in between is noticed.
    AttemptLogin {
        /// Whether the password matched.
        password_ok: bool,
        /// The hash the password was checked against.
        verified_against: String,
        /// The session (refresh-token family).
        session_id: Uuid,
        /// The SHA-256 of the refresh token.
        refresh_hash: String,
        /// The SHA-256 of the device fingerprint.
        fingerprint_hash: String,
        /// The time the command was sent.
        now: DateTime<Utc>,
    },
    /// Rotate a session's refresh token.
    Refresh {
        /// The session (refresh-token family).
        session_id: Uuid,
        /// The SHA-256 of the presented refresh token.
        presented_hash: String,
        /// The SHA-256 of the device fingerprint.
        fingerprint_hash: String,
        /// The new Argon2id PHC string.
        new_hash: String,
        /// The time the command was sent.
        now: DateTime<Utc>,
    },
    /// Revoke session.
    RevokeSession {
        /// The session (refresh-token family).
        session_id: Uuid,
        /// Why.
        reason: RevokeReason,
    },
    /// Revoke all sessions.
    RevokeAllSessions {
        /// The session to keep, if any.
        except: Option<Uuid>,
        /// Why.
        reason: RevokeReason,
    },
    /// Change password.
    ChangePassword {
        /// The hash the password was checked against.
        verified_against: String,
        /// The new Argon2id PHC string.
        new_hash: String,
        /// The session to keep, if any.
        keep_session: Option<Uuid>,
    },
    /// Request password reset.
    RequestPasswordReset {
        /// The SHA-256 of the token.
        token_hash: String,
        /// When it expires.
        expires_at: DateTime<Utc>,
    },
    /// Confirm password reset.
    ConfirmPasswordReset {
        /// The SHA-256 of the token.
        token_hash: String,
        /// The new Argon2id PHC string.
        new_hash: String,
        /// The time the command was sent.
        now: DateTime<Utc>,
    },
    /// Force password reset.
    ForcePasswordReset,
    /// Change role.
    ChangeRole {
        /// The role.
        role: Role,
    },
    /// Deactivate the account, ending every session.
    Deactivate,
    /// Register device.
    RegisterDevice {
        /// The client-chosen device id.
        device_id: String,
        /// The name shown to the user.
        name: String,
        /// The device platform.
        platform: Platform,
    },
    /// Activate device.
    ActivateDevice {
        /// The client-chosen device id.
        device_id: String,
    },
    /// Revoke device.
    RevokeDevice {
        /// The client-chosen device id.
        device_id: String,
        /// Hash of the device id, matched against session fingerprints.
        fingerprint_hash: String,
    },
}

impl crate::CommandName for UserCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Register { .. } => "RegisterUser",
            Self::UpdateProfile { .. } => "UpdateProfile",
            Self::AttemptLogin { .. } => "AttemptLogin",
            Self::Refresh { .. } => "RefreshSession",
            Self::RevokeSession { .. } => "RevokeSession",
            Self::RevokeAllSessions { .. } => "RevokeAllSessions",
            Self::ChangePassword { .. } => "ChangePassword",
            Self::RequestPasswordReset { .. } => "RequestPasswordReset",
            Self::ConfirmPasswordReset { .. } => "ConfirmPasswordReset",
            Self::ForcePasswordReset => "ForcePasswordReset",
            Self::ChangeRole { .. } => "ChangeRole",
            Self::Deactivate => "DeactivateUser",
            Self::RegisterDevice { .. } => "RegisterDevice",
            Self::ActivateDevice { .. } => "ActivateDevice",
            Self::RevokeDevice { .. } => "RevokeDevice",
        }
    }
}
