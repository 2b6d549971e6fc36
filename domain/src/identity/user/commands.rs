//! What may be asked of an account.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::identity::values::{Platform, Role};

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    Logout,
    LogoutAll,
    UserRequest,
    SessionLimit,
    RefreshTokenReuse,
    FingerprintMismatch,
    PasswordChanged,
    PasswordReset,
    DeviceRevoked,
    UserDeactivated,
    Expired,
}

/// Commands on a user.
#[derive(Debug, Clone)]
pub enum UserCommand {
    Register {
        user_id: Uuid,
        email: String,
        display_name: String,
        role: Role,
        password_hash: String,
    },
    UpdateProfile {
        display_name: String,
    },
    /// Record a login attempt. `verified_against` is the hash the password was
    /// checked against, so a password change in between is noticed.
    AttemptLogin {
        password_ok: bool,
        verified_against: String,
        session_id: Uuid,
        refresh_hash: String,
        fingerprint_hash: String,
        now: DateTime<Utc>,
    },
    Refresh {
        session_id: Uuid,
        presented_hash: String,
        fingerprint_hash: String,
        new_hash: String,
        now: DateTime<Utc>,
    },
    RevokeSession {
        session_id: Uuid,
        reason: RevokeReason,
    },
    RevokeAllSessions {
        except: Option<Uuid>,
        reason: RevokeReason,
    },
    ChangePassword {
        verified_against: String,
        new_hash: String,
        keep_session: Option<Uuid>,
    },
    RequestPasswordReset {
        token_hash: String,
        expires_at: DateTime<Utc>,
    },
    ConfirmPasswordReset {
        token_hash: String,
        new_hash: String,
        now: DateTime<Utc>,
    },
    ForcePasswordReset,
    ChangeRole {
        role: Role,
    },
    Deactivate,
    RegisterDevice {
        device_id: String,
        name: String,
        platform: Platform,
    },
    ActivateDevice {
        device_id: String,
    },
    RevokeDevice {
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
