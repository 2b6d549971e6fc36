//! Identity's errors as problems.

use axum::http::{header, HeaderValue};
use lectern_commands::identity::IdentityError;
use lectern_domain::identity::UserError;

use super::{Code, Problem};
use crate::auth::unauthorized;

/// 429 with `Retry-After` until `until`.
fn locked(until: chrono::DateTime<chrono::Utc>) -> Problem {
    let secs = (until - chrono::Utc::now()).num_seconds().max(1);
    let mut p = Problem::new(
        Code::AccountLocked,
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
                Code::EmailTaken,
                "An account with this email address already exists.",
            ),
            IdentityError::InvalidCredentials => {
                unauthorized(Code::InvalidCredentials, "Invalid email or password.")
            }
            IdentityError::Locked(until) | IdentityError::Rule(UserError::Locked(until)) => {
                locked(until)
            }
            IdentityError::InvalidRefreshToken => {
                unauthorized(Code::InvalidRefreshToken, "The refresh token is not valid.")
            }
            IdentityError::SessionRevoked(reason) => {
                let reason = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                unauthorized(
                    Code::SessionRevoked,
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
                    UserError::AlreadyRegistered | UserError::StaleCredentials => Code::Conflict,
                    UserError::NotRegistered => Code::UserNotFound,
                    UserError::Deactivated => Code::AccountDeactivated,
                    UserError::SessionNotFound => Code::SessionNotFound,
                    UserError::DeviceExists => Code::DeviceExists,
                    UserError::DeviceNotFound => Code::DeviceNotFound,
                    UserError::TooManyDevices => Code::TooManyDevices,
                    UserError::SameRole => Code::RoleUnchanged,
                    UserError::InvalidRefreshToken
                    | UserError::InvalidResetToken
                    | UserError::Locked(_) => Code::Rejected,
                };
                Problem::new(code, rule.to_string())
            }
            IdentityError::Conflict => Problem::new(
                Code::Conflict,
                "The account was changed concurrently; retry.",
            ),
            IdentityError::Store(s) => s.into(),
        }
    }
}
