//! The rules: from a command and the account's state to the events it
//! records, or the rule it breaks.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::*;

impl User {
    pub(super) fn decide(&self, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        use UserCommand as C;
        use UserEvent as E;
        match command {
            C::Register {
                user_id,
                email,
                display_name,
                role,
                password_hash,
            } => {
                if self.role.is_some() {
                    return Err(UserError::AlreadyRegistered);
                }
                Ok(vec![E::UserRegistered {
                    user_id,
                    email,
                    display_name,
                    role,
                    password_hash,
                }])
            }
            C::UpdateProfile { display_name } => {
                self.active()?;
                Ok(if display_name == self.display_name {
                    vec![]
                } else {
                    vec![E::ProfileUpdated { display_name }]
                })
            }
            C::AttemptLogin {
                password_ok,
                verified_against,
                session_id,
                refresh_hash,
                fingerprint_hash,
                now,
            } => self.attempt_login(
                password_ok,
                &verified_against,
                session_id,
                refresh_hash,
                fingerprint_hash,
                now,
            ),
            C::Refresh {
                session_id,
                presented_hash,
                fingerprint_hash,
                new_hash,
                now,
            } => {
                let role = self.active().map_err(|_| UserError::InvalidRefreshToken)?;
                let session = self
                    .session(session_id)
                    .ok_or(UserError::InvalidRefreshToken)?;
                if session.expires_at <= now {
                    return Ok(vec![E::SessionRevoked {
                        session_id,
                        reason: RevokeReason::Expired,
                    }]);
                }
                if session.used_hashes.contains(&presented_hash) {
                    return Ok(vec![
                        E::RefreshTokenReused { session_id },
                        E::SessionRevoked {
                            session_id,
                            reason: RevokeReason::RefreshTokenReuse,
                        },
                    ]);
                }
                if session.refresh_hash != presented_hash {
                    return Err(UserError::InvalidRefreshToken);
                }
                if session.fingerprint_hash != fingerprint_hash {
                    return Ok(vec![E::SessionRevoked {
                        session_id,
                        reason: RevokeReason::FingerprintMismatch,
                    }]);
                }
                Ok(vec![E::SessionRefreshed {
                    session_id,
                    generation: session.generation + 1,
                    refresh_token_hash: new_hash,
                    role,
                    must_change_password: self.must_change_password,
                }])
            }
            C::RevokeSession { session_id, reason } => {
                self.registered()?;
                if self.session(session_id).is_none() {
                    return Err(UserError::SessionNotFound);
                }
                Ok(vec![E::SessionRevoked { session_id, reason }])
            }
            C::RevokeAllSessions { except, reason } => {
                self.registered()?;
                Ok(self.revoke_where(|s| Some(s.id) == except, reason))
            }
            C::ChangePassword {
                verified_against,
                new_hash,
                keep_session,
            } => {
                self.active()?;
                if verified_against != self.password_hash {
                    return Err(UserError::StaleCredentials);
                }
                let mut events = vec![E::PasswordChanged {
                    password_hash: new_hash,
                    via_reset: false,
                }];
                events.extend(self.revoke_where(
                    |s| Some(s.id) == keep_session,
                    RevokeReason::PasswordChanged,
                ));
                Ok(events)
            }
            C::RequestPasswordReset {
                token_hash,
                expires_at,
            } => {
                self.active()?;
                Ok(vec![E::PasswordResetRequested {
                    token_hash,
                    expires_at,
                }])
            }
            C::ConfirmPasswordReset {
                token_hash,
                new_hash,
                now,
            } => {
                self.active().map_err(|_| UserError::InvalidResetToken)?;
                match &self.reset {
                    Some((hash, expires)) if *hash == token_hash && *expires > now => {}
                    _ => return Err(UserError::InvalidResetToken),
                }
                let mut events = vec![E::PasswordChanged {
                    password_hash: new_hash,
                    via_reset: true,
                }];
                events.extend(self.revoke_where(|_| false, RevokeReason::PasswordReset));
                Ok(events)
            }
            C::ForcePasswordReset => {
                self.active()?;
                Ok(vec![E::PasswordResetForced {}])
            }
            C::ChangeRole { role } => {
                let from = self.registered()?;
                if from == role {
                    return Err(UserError::SameRole);
                }
                Ok(vec![E::RoleChanged { from, to: role }])
            }
            C::Deactivate => {
                self.registered()?;
                if self.status == Status::Deactivated {
                    return Ok(vec![]);
                }
                let mut events = vec![E::UserDeactivated {}];
                events.extend(self.revoke_where(|_| false, RevokeReason::UserDeactivated));
                Ok(events)
            }
            C::RegisterDevice {
                device_id,
                name,
                platform,
            } => {
                self.active()?;
                if self.devices.iter().any(|d| d.device_id == device_id) {
                    return Err(UserError::DeviceExists);
                }
                if self.devices.len() >= MAX_DEVICES {
                    return Err(UserError::TooManyDevices);
                }
                Ok(vec![E::DeviceRegistered {
                    device_id,
                    name,
                    platform,
                }])
            }
            C::ActivateDevice { device_id } => {
                self.active()?;
                let device = self
                    .devices
                    .iter()
                    .find(|d| d.device_id == device_id)
                    .ok_or(UserError::DeviceNotFound)?;
                if device.active {
                    return Ok(vec![]);
                }
                let from = self
                    .devices
                    .iter()
                    .find(|d| d.active)
                    .map(|d| d.device_id.clone());
                Ok(vec![E::ActiveDeviceTransferred {
                    from,
                    to: device_id,
                }])
            }
            C::RevokeDevice {
                device_id,
                fingerprint_hash,
            } => {
                self.registered()?;
                if !self.devices.iter().any(|d| d.device_id == device_id) {
                    return Err(UserError::DeviceNotFound);
                }
                let mut events = vec![E::DeviceRevoked { device_id }];
                events.extend(self.revoke_where(
                    |s| s.fingerprint_hash != fingerprint_hash,
                    RevokeReason::DeviceRevoked,
                ));
                Ok(events)
            }
        }
    }

    fn attempt_login(
        &self,
        password_ok: bool,
        verified_against: &str,
        session_id: Uuid,
        refresh_hash: String,
        fingerprint_hash: String,
        now: DateTime<Utc>,
    ) -> Result<Vec<UserEvent>, UserError> {
        use UserEvent as E;
        let role = self.registered()?;
        if verified_against != self.password_hash {
            return Err(UserError::StaleCredentials);
        }
        if self.status == Status::Deactivated {
            return Ok(vec![E::LoginFailed {
                reason: "deactivated".into(),
                at: now,
            }]);
        }
        if self.locked_until.is_some_and(|until| until > now) {
            // Recorded, but not counted: a locked account's lock does not grow
            // while someone keeps knocking.
            return Ok(vec![E::LoginFailed {
                reason: "locked".into(),
                at: now,
            }]);
        }
        if !password_ok {
            let recent = self
                .failures
                .iter()
                .filter(|t| now - **t < FAILURE_WINDOW)
                .count()
                + 1;
            let mut events = vec![E::LoginFailed {
                reason: "bad_password".into(),
                at: now,
            }];
            if recent >= MAX_FAILURES {
                events.push(E::AccountLocked {
                    until: now + Self::lock_length(self.lock_count),
                    lock_count: self.lock_count + 1,
                    failures: u32::try_from(recent).unwrap_or(u32::MAX),
                });
            }
            return Ok(events);
        }
        let mut events = Vec::new();
        let live: Vec<&Session> = self
            .sessions
            .iter()
            .filter(|s| s.expires_at > now)
            .collect();
        for s in self.sessions.iter().filter(|s| s.expires_at <= now) {
            events.push(E::SessionRevoked {
                session_id: s.id,
                reason: RevokeReason::Expired,
            });
        }
        // Sessions are kept in start order: the oldest go first.
        let excess = (live.len() + 1).saturating_sub(MAX_SESSIONS);
        for s in live.iter().take(excess) {
            events.push(E::SessionRevoked {
                session_id: s.id,
                reason: RevokeReason::SessionLimit,
            });
        }
        events.push(E::LoginSucceeded { session_id });
        events.push(E::SessionStarted {
            session_id,
            refresh_token_hash: refresh_hash,
            fingerprint_hash,
            started_at: now,
            expires_at: now + SESSION_LIFETIME,
            role,
            must_change_password: self.must_change_password,
        });
        Ok(events)
    }
}
