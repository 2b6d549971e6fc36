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
    UserRegistered {
        user_id: Uuid,
        email: String,
        display_name: String,
        role: Role,
        password_hash: String,
    },
    ProfileUpdated {
        display_name: String,
    },
    LoginSucceeded {
        session_id: Uuid,
    },
    LoginFailed {
        reason: String,
        at: DateTime<Utc>,
    },
    AccountLocked {
        until: DateTime<Utc>,
        lock_count: u32,
        failures: u32,
    },
    SessionStarted {
        session_id: Uuid,
        refresh_token_hash: String,
        fingerprint_hash: String,
        started_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        role: Role,
        must_change_password: bool,
    },
    SessionRefreshed {
        session_id: Uuid,
        generation: u32,
        refresh_token_hash: String,
        role: Role,
        must_change_password: bool,
    },
    RefreshTokenReused {
        session_id: Uuid,
    },
    SessionRevoked {
        session_id: Uuid,
        reason: RevokeReason,
    },
    PasswordChanged {
        password_hash: String,
        via_reset: bool,
    },
    PasswordResetRequested {
        token_hash: String,
        expires_at: DateTime<Utc>,
    },
    PasswordResetForced {},
    RoleChanged {
        from: Role,
        to: Role,
    },
    UserDeactivated {},
    DeviceRegistered {
        device_id: String,
        name: String,
        platform: Platform,
    },
    ActiveDeviceTransferred {
        from: Option<String>,
        to: String,
    },
    DeviceRevoked {
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
    #[error("the account already exists")]
    AlreadyRegistered,
    #[error("no such account")]
    NotRegistered,
    #[error("the account is locked until {0}")]
    Locked(DateTime<Utc>),
    #[error("the account is deactivated")]
    Deactivated,
    #[error("the password changed while the request was checked")]
    StaleCredentials,
    #[error("the refresh token is not valid")]
    InvalidRefreshToken,
    #[error("no such session")]
    SessionNotFound,
    #[error("the reset token is not valid")]
    InvalidResetToken,
    #[error("this device is already registered")]
    DeviceExists,
    #[error("no such device")]
    DeviceNotFound,
    #[error("at most {MAX_DEVICES} devices may be registered")]
    TooManyDevices,
    #[error("the user already has this role")]
    SameRole,
}
