//! The identity's problem codes, and how its errors become problems.

use axum::http::{header, HeaderValue};
use lectern_commands::identity::IdentityError;
use lectern_domain::identity::UserError;

use axum::http::StatusCode;

use crate::auth::unauthorized;
use crate::problem::{Code, Problem};

/// The identity's codes.
impl Code {
    /// An account with this email exists.
    pub const EMAIL_TAKEN: Code = Code::new("email_taken", StatusCode::CONFLICT);
    /// Wrong email or password.
    pub const INVALID_CREDENTIALS: Code =
        Code::new("invalid_credentials", StatusCode::UNAUTHORIZED);
    /// Too many failed logins; see `Retry-After`.
    pub const ACCOUNT_LOCKED: Code = Code::new("account_locked", StatusCode::TOO_MANY_REQUESTS);
    /// The refresh token is not valid.
    pub const INVALID_REFRESH_TOKEN: Code =
        Code::new("invalid_refresh_token", StatusCode::UNAUTHORIZED);
    /// The session has ended.
    pub const SESSION_REVOKED: Code = Code::new("session_revoked", StatusCode::UNAUTHORIZED);
    /// No such account.
    pub const USER_NOT_FOUND: Code = Code::new("user_not_found", StatusCode::NOT_FOUND);
    /// The account is deactivated.
    pub const ACCOUNT_DEACTIVATED: Code = Code::new("account_deactivated", StatusCode::FORBIDDEN);
    /// No such session.
    pub const SESSION_NOT_FOUND: Code = Code::new("session_not_found", StatusCode::NOT_FOUND);
    /// The device is registered already.
    pub const DEVICE_EXISTS: Code = Code::new("device_exists", StatusCode::CONFLICT);
    /// No such device.
    pub const DEVICE_NOT_FOUND: Code = Code::new("device_not_found", StatusCode::NOT_FOUND);
    /// The device limit is reached.
    pub const TOO_MANY_DEVICES: Code =
        Code::new("too_many_devices", StatusCode::UNPROCESSABLE_ENTITY);
    /// The user has this role already.
    pub const ROLE_UNCHANGED: Code = Code::new("role_unchanged", StatusCode::UNPROCESSABLE_ENTITY);
    /// A rule refused the command.
    pub const REJECTED: Code = Code::new("rejected", StatusCode::UNPROCESSABLE_ENTITY);

    /// The last active admin may not deactivate or demote itself.
    pub const LAST_ADMIN: Code = Code::new("last_admin", StatusCode::CONFLICT);

    /// Every identity code.
    pub const IDENTITY: &'static [Code] = &[
        Self::LAST_ADMIN,
        Self::EMAIL_TAKEN,
        Self::INVALID_CREDENTIALS,
        Self::ACCOUNT_LOCKED,
        Self::INVALID_REFRESH_TOKEN,
        Self::SESSION_REVOKED,
        Self::USER_NOT_FOUND,
        Self::ACCOUNT_DEACTIVATED,
        Self::SESSION_NOT_FOUND,
        Self::DEVICE_EXISTS,
        Self::DEVICE_NOT_FOUND,
        Self::TOO_MANY_DEVICES,
        Self::ROLE_UNCHANGED,
        Self::REJECTED,
    ];
}

/// 429 with `Retry-After` until `until`.
fn locked(until: chrono::DateTime<chrono::Utc>) -> Problem {
    let secs = (until - chrono::Utc::now()).num_seconds().max(1);
    let mut p = Problem::new(
        Code::ACCOUNT_LOCKED,
        format!("Too many failed logins; the account is locked for {secs} s."),
    );
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        p.headers.push((header::RETRY_AFTER, v));
    }
    p
}

impl From<IdentityError> for Problem {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::EmailTaken => Problem::new(
                Code::EMAIL_TAKEN,
                "An account with this email address already exists.",
            ),
            IdentityError::InvalidCredentials => {
                unauthorized(Code::INVALID_CREDENTIALS, "Invalid email or password.")
            }
            IdentityError::Locked(until) | IdentityError::Rule(UserError::Locked(until)) => {
                locked(until)
            }
            IdentityError::InvalidRefreshToken => unauthorized(
                Code::INVALID_REFRESH_TOKEN,
                "The refresh token is not valid.",
            ),
            IdentityError::SessionRevoked(reason) => {
                let reason = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                unauthorized(
                    Code::SESSION_REVOKED,
                    &format!("The session has been ended ({reason}); log in again."),
                )
            }
            IdentityError::InvalidResetToken => Problem::invalid(
                "#/token",
                "is not a valid, unused and unexpired reset token",
            ),
            IdentityError::WrongPassword => {
                Problem::invalid("#/current_password", "is not correct")
            }
            IdentityError::Rule(rule) => {
                let code = match rule {
                    UserError::AlreadyRegistered | UserError::StaleCredentials => Code::CONFLICT,
                    UserError::NotRegistered => Code::USER_NOT_FOUND,
                    UserError::Deactivated => Code::ACCOUNT_DEACTIVATED,
                    UserError::SessionNotFound => Code::SESSION_NOT_FOUND,
                    UserError::DeviceExists => Code::DEVICE_EXISTS,
                    UserError::DeviceNotFound => Code::DEVICE_NOT_FOUND,
                    UserError::TooManyDevices => Code::TOO_MANY_DEVICES,
                    UserError::SameRole => Code::ROLE_UNCHANGED,
                    UserError::InvalidRefreshToken
                    | UserError::InvalidResetToken
                    | UserError::Locked(_) => Code::REJECTED,
                };
                Problem::new(code, rule.to_string())
            }
            IdentityError::Conflict => Problem::new(
                Code::CONFLICT,
                "The account was changed concurrently; retry.",
            ),
            IdentityError::Store(s) => s.into(),
        }
    }
}
