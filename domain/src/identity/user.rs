//! The User aggregate: an account with its credentials, its refresh-token
//! sessions and its devices.
//!
//! Sessions and devices live inside the user on purpose: the rules that join
//! them (at most five sessions, one active device, "revoking a device ends its
//! sessions", "deactivation ends every session") are then checked and
//! recorded in one append, so no interleaving of commands can break them.
//!
//! Outside facts arrive in the commands: the time, new ids, password hashes
//! (computed off the runtime) and the hashes of fresh tokens. Nothing secret
//! is ever stored: passwords appear as Argon2id PHC strings, tokens and
//! fingerprints as SHA-256 hashes.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::values::{Platform, Role};

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
    #[default]
    Active,
    Deactivated,
}

/// A live refresh-token family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: Uuid,
    pub refresh_hash: String,
    pub generation: u32,
    /// Hashes of tokens already rotated away; presenting one is theft.
    pub used_hashes: Vec<String>,
    pub fingerprint_hash: String,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub device_id: String,
    pub name: String,
    pub platform: Platform,
    pub active: bool,
}

/// What the write side needs to know about an account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: Option<Uuid>,
    pub email: String,
    pub display_name: String,
    pub role: Option<Role>,
    pub status: Status,
    pub password_hash: String,
    pub must_change_password: bool,
    pub failures: Vec<DateTime<Utc>>,
    pub locked_until: Option<DateTime<Utc>>,
    pub lock_count: u32,
    pub sessions: Vec<Session>,
    pub devices: Vec<Device>,
    pub reset: Option<(String, DateTime<Utc>)>,
}

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

impl User {
    fn registered(&self) -> Result<Role, UserError> {
        self.role.ok_or(UserError::NotRegistered)
    }

    fn active(&self) -> Result<Role, UserError> {
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

    fn lock_length(lock_count: u32) -> Duration {
        let factor = 1i32.checked_shl(lock_count.min(20)).unwrap_or(i32::MAX);
        (FIRST_LOCK * factor).min(MAX_LOCK)
    }

    fn revoke_where(
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

    fn decide(&self, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
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

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: UserCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: UserEvent) {
        use UserEvent as E;
        match event {
            E::UserRegistered {
                user_id,
                email,
                display_name,
                role,
                password_hash,
            } => {
                self.id = Some(user_id);
                self.email = email;
                self.display_name = display_name;
                self.role = Some(role);
                self.password_hash = password_hash;
            }
            E::ProfileUpdated { display_name } => self.display_name = display_name,
            E::LoginSucceeded { .. } => {
                self.failures.clear();
                self.locked_until = None;
                self.lock_count = 0;
            }
            E::LoginFailed { reason, at } => {
                if reason == "bad_password" {
                    self.failures.retain(|t| at - *t < FAILURE_WINDOW);
                    self.failures.push(at);
                }
            }
            E::AccountLocked {
                until, lock_count, ..
            } => {
                self.locked_until = Some(until);
                self.lock_count = lock_count;
                self.failures.clear();
            }
            E::SessionStarted {
                session_id,
                refresh_token_hash,
                fingerprint_hash,
                started_at,
                expires_at,
                ..
            } => self.sessions.push(Session {
                id: session_id,
                refresh_hash: refresh_token_hash,
                generation: 0,
                used_hashes: Vec::new(),
                fingerprint_hash,
                started_at,
                expires_at,
            }),
            E::SessionRefreshed {
                session_id,
                generation,
                refresh_token_hash,
                ..
            } => {
                if let Some(s) = self.sessions.iter_mut().find(|s| s.id == session_id) {
                    let old = std::mem::replace(&mut s.refresh_hash, refresh_token_hash);
                    s.used_hashes.push(old);
                    s.generation = generation;
                }
            }
            E::RefreshTokenReused { .. } => {}
            E::SessionRevoked { session_id, .. } => self.sessions.retain(|s| s.id != session_id),
            E::PasswordChanged { password_hash, .. } => {
                self.password_hash = password_hash;
                self.must_change_password = false;
                self.reset = None;
                self.failures.clear();
                self.locked_until = None;
                self.lock_count = 0;
            }
            E::PasswordResetRequested {
                token_hash,
                expires_at,
            } => self.reset = Some((token_hash, expires_at)),
            E::PasswordResetForced {} => self.must_change_password = true,
            E::RoleChanged { to, .. } => self.role = Some(to),
            E::UserDeactivated {} => self.status = Status::Deactivated,
            E::DeviceRegistered {
                device_id,
                name,
                platform,
            } => self.devices.push(Device {
                device_id,
                name,
                platform,
                active: false,
            }),
            E::ActiveDeviceTransferred { to, .. } => {
                for d in &mut self.devices {
                    d.active = d.device_id == to;
                }
            }
            E::DeviceRevoked { device_id } => self.devices.retain(|d| d.device_id != device_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered() -> User {
        let mut u = User::default();
        u.apply(UserEvent::UserRegistered {
            user_id: Uuid::nil(),
            email: "a@b.co".into(),
            display_name: "A".into(),
            role: Role::Student,
            password_hash: "H".into(),
        });
        u
    }

    fn login(u: &User, ok: bool, now: DateTime<Utc>) -> Vec<UserEvent> {
        u.decide(UserCommand::AttemptLogin {
            password_ok: ok,
            verified_against: "H".into(),
            session_id: Uuid::new_v4(),
            refresh_hash: "r".into(),
            fingerprint_hash: "f".into(),
            now,
        })
        .expect("decided")
    }

    fn run(u: &mut User, events: Vec<UserEvent>) {
        for e in events {
            u.apply(e);
        }
    }

    #[test]
    fn five_failures_lock_the_account_with_a_doubling_backoff() {
        let mut u = registered();
        let t0 = Utc::now();
        for i in 0..4 {
            let events = login(&u, false, t0 + Duration::seconds(i));
            assert_eq!(events.len(), 1);
            run(&mut u, events);
        }
        let events = login(&u, false, t0 + Duration::seconds(5));
        assert!(matches!(
            events[1],
            UserEvent::AccountLocked { lock_count: 1, .. }
        ));
        run(&mut u, events);
        assert_eq!(u.locked_until, Some(t0 + Duration::seconds(5) + FIRST_LOCK));
        // While locked even the right password fails, and does not extend the lock.
        let events = login(&u, true, t0 + Duration::seconds(10));
        assert!(
            matches!(&events[..], [UserEvent::LoginFailed { reason, .. }] if reason == "locked")
        );
        // After the lock, five more failures lock for twice as long.
        let later = t0 + Duration::minutes(2);
        for i in 0..5 {
            let events = login(&u, false, later + Duration::seconds(i));
            run(&mut u, events);
        }
        assert_eq!(u.lock_count, 2);
        assert_eq!(
            u.locked_until,
            Some(later + Duration::seconds(4) + FIRST_LOCK * 2)
        );
    }

    #[test]
    fn a_sixth_session_ends_the_oldest() {
        let mut u = registered();
        let t0 = Utc::now();
        for i in 0..5 {
            let events = login(&u, true, t0 + Duration::seconds(i));
            run(&mut u, events);
        }
        let oldest = u.sessions[0].id;
        let events = login(&u, true, t0 + Duration::seconds(9));
        assert_eq!(
            events[0],
            UserEvent::SessionRevoked {
                session_id: oldest,
                reason: RevokeReason::SessionLimit
            }
        );
        run(&mut u, events);
        assert_eq!(u.sessions.len(), MAX_SESSIONS);
        assert!(u.session(oldest).is_none());
    }

    #[test]
    fn a_rotated_refresh_token_presented_again_ends_the_session() {
        let mut u = registered();
        let now = Utc::now();
        let events = login(&u, true, now);
        run(&mut u, events);
        let sid = u.sessions[0].id;
        let refresh = |u: &User, presented: &str, new: &str| {
            u.decide(UserCommand::Refresh {
                session_id: sid,
                presented_hash: presented.into(),
                fingerprint_hash: "f".into(),
                new_hash: new.into(),
                now,
            })
        };
        let events = refresh(&u, "r", "r2").expect("rotates");
        assert!(matches!(
            events[0],
            UserEvent::SessionRefreshed { generation: 1, .. }
        ));
        run(&mut u, events);
        assert_eq!(
            refresh(&u, "garbage", "x"),
            Err(UserError::InvalidRefreshToken)
        );
        let events = refresh(&u, "r", "r3").expect("decided");
        assert_eq!(events[0], UserEvent::RefreshTokenReused { session_id: sid });
        run(&mut u, events);
        assert!(u.sessions.is_empty());
        assert_eq!(refresh(&u, "r2", "r4"), Err(UserError::InvalidRefreshToken));
    }
}
