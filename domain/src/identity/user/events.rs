//! What happened to an account, and the rules a command can break.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{RevokeReason, MAX_DEVICES};
use crate::identity::values::{Platform, Role};

/// Events of a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    /// User registered.
    UserRegistered {
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
    /// Profile updated.
    ProfileUpdated {
        /// The name shown to other users.
        display_name: String,
    },
    /// Login succeeded.
    LoginSucceeded {
        /// The session (refresh-token family).
        session_id: Uuid,
    },
    /// Login failed.
    LoginFailed {
        /// Why.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Account locked.
    AccountLocked {
        /// Until when.
        until: DateTime<Utc>,
        /// How many times it was locked.
        lock_count: u32,
        /// Recent failed logins.
        failures: u32,
    },
    /// Session started.
    SessionStarted {
        /// The session (refresh-token family).
        session_id: Uuid,
        /// The SHA-256 of the current refresh token.
        refresh_token_hash: String,
        /// The SHA-256 of the device fingerprint.
        fingerprint_hash: String,
        /// When it started.
        started_at: DateTime<Utc>,
        /// When it expires.
        expires_at: DateTime<Utc>,
        /// The role.
        role: Role,
        /// Tokens allow only the password change until it is changed.
        must_change_password: bool,
    },
    /// Session refreshed.
    SessionRefreshed {
        /// The session (refresh-token family).
        session_id: Uuid,
        /// How many times the session was refreshed.
        generation: u32,
        /// The SHA-256 of the current refresh token.
        refresh_token_hash: String,
        /// The role.
        role: Role,
        /// Tokens allow only the password change until it is changed.
        must_change_password: bool,
    },
    /// Refresh token reused.
    RefreshTokenReused {
        /// The session (refresh-token family).
        session_id: Uuid,
    },
    /// Session revoked.
    SessionRevoked {
        /// The session (refresh-token family).
        session_id: Uuid,
        /// Why.
        reason: RevokeReason,
    },
    /// Password changed.
    PasswordChanged {
        /// The Argon2id PHC string.
        password_hash: String,
        /// Changed through a reset token rather than the old password.
        via_reset: bool,
    },
    /// Password reset requested.
    PasswordResetRequested {
        /// The SHA-256 of the token.
        token_hash: String,
        /// When it expires.
        expires_at: DateTime<Utc>,
    },
    /// Password reset forced.
    PasswordResetForced {},
    /// Role changed.
    RoleChanged {
        /// The role before.
        from: Role,
        /// The role now.
        to: Role,
    },
    /// User deactivated.
    UserDeactivated {},
    /// Device registered.
    DeviceRegistered {
        /// The client-chosen device id.
        device_id: String,
        /// The name shown to the user.
        name: String,
        /// The device platform.
        platform: Platform,
    },
    /// Active device transferred.
    ActiveDeviceTransferred {
        /// The device that was active, if any.
        from: Option<String>,
        /// The device active now.
        to: String,
    },
    /// Device revoked.
    DeviceRevoked {
        /// The client-chosen device id.
        device_id: String,
    },
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            Self::UserRegistered { .. } => "UserRegistered",
            Self::ProfileUpdated { .. } => "ProfileUpdated",
            Self::LoginSucceeded { .. } => "LoginSucceeded",
            Self::LoginFailed { .. } => "LoginFailed",
            Self::AccountLocked { .. } => "AccountLocked",
            Self::SessionStarted { .. } => "SessionStarted",
            Self::SessionRefreshed { .. } => "SessionRefreshed",
            Self::RefreshTokenReused { .. } => "RefreshTokenReused",
            Self::SessionRevoked { .. } => "SessionRevoked",
            Self::PasswordChanged { .. } => "PasswordChanged",
            Self::PasswordResetRequested { .. } => "PasswordResetRequested",
            Self::PasswordResetForced { .. } => "PasswordResetForced",
            Self::RoleChanged { .. } => "RoleChanged",
            Self::UserDeactivated { .. } => "UserDeactivated",
            Self::DeviceRegistered { .. } => "DeviceRegistered",
            Self::ActiveDeviceTransferred { .. } => "ActiveDeviceTransferred",
            Self::DeviceRevoked { .. } => "DeviceRevoked",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

/// The rules a command on a user can break.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// The account already exists.
    #[error("the account already exists")]
    AlreadyRegistered,
    /// No such account.
    #[error("no such account")]
    NotRegistered,
    /// The account is locked until ….
    #[error("the account is locked until {0}")]
    Locked(DateTime<Utc>),
    /// The account is deactivated.
    #[error("the account is deactivated")]
    Deactivated,
    /// The password changed while the request was checked.
    #[error("the password changed while the request was checked")]
    StaleCredentials,
    /// The refresh token is not valid.
    #[error("the refresh token is not valid")]
    InvalidRefreshToken,
    /// No such session.
    #[error("no such session")]
    SessionNotFound,
    /// The reset token is not valid.
    #[error("the reset token is not valid")]
    InvalidResetToken,
    /// This device is already registered.
    #[error("this device is already registered")]
    DeviceExists,
    /// No such device.
    #[error("no such device")]
    DeviceNotFound,
    /// At most … devices may be registered.
    #[error("at most {MAX_DEVICES} devices may be registered")]
    TooManyDevices,
    /// The user already has this role.
    #[error("the user already has this role")]
    SameRole,
}
