//! The User aggregate, given/when/then.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::Aggregate;
use uuid::Uuid;

use super::*;
use crate::identity::values::{Platform, Role};
use crate::testing;

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
    assert!(matches!(&events[..], [UserEvent::LoginFailed { reason, .. }] if reason == "locked"));
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

// Every command, given/when/then.

const USER: Uuid = Uuid::from_u128(7);
const S1: Uuid = Uuid::from_u128(101);
const S2: Uuid = Uuid::from_u128(102);

fn t0() -> DateTime<Utc> {
    "2029-06-01T10:00:00Z".parse().expect("a time")
}

fn registered_event(role: Role) -> UserEvent {
    UserEvent::UserRegistered {
        user_id: USER,
        email: "a@b.co".into(),
        display_name: "A".into(),
        role,
        password_hash: "H".into(),
    }
}

fn started(session_id: Uuid, fingerprint: &str, at: DateTime<Utc>) -> UserEvent {
    UserEvent::SessionStarted {
        session_id,
        refresh_token_hash: format!("r-{session_id}"),
        fingerprint_hash: fingerprint.into(),
        started_at: at,
        expires_at: at + SESSION_LIFETIME,
        role: Role::Student,
        must_change_password: false,
    }
}

/// A student with two sessions (fingerprints `f1`, `f2`).
fn with_sessions() -> User {
    testing::given([
        registered_event(Role::Student),
        started(S1, "f1", t0()),
        started(S2, "f2", t0()),
    ])
}

fn revoked(session_id: Uuid, reason: RevokeReason) -> UserEvent {
    UserEvent::SessionRevoked { session_id, reason }
}

#[test]
fn register_records_the_account_once() {
    let mut user: User = testing::given([]);
    let register = || UserCommand::Register {
        user_id: USER,
        email: "a@b.co".into(),
        display_name: "A".into(),
        role: Role::Tutor,
        password_hash: "H".into(),
    };
    assert_eq!(
        testing::when(&mut user, register()),
        Ok(vec![UserEvent::UserRegistered {
            user_id: USER,
            email: "a@b.co".into(),
            display_name: "A".into(),
            role: Role::Tutor,
            password_hash: "H".into(),
        }])
    );
    assert_eq!(user.role, Some(Role::Tutor));
    assert_eq!(
        testing::when(&mut user, register()),
        Err(UserError::AlreadyRegistered)
    );
}

#[test]
fn update_profile_records_only_a_change_of_an_active_account() {
    let mut user: User = testing::given([registered_event(Role::Student)]);
    let rename = |name: &str| UserCommand::UpdateProfile {
        display_name: name.into(),
    };
    assert_eq!(testing::when(&mut user, rename("A")), Ok(vec![]));
    assert_eq!(
        testing::when(&mut user, rename("Ann")),
        Ok(vec![UserEvent::ProfileUpdated {
            display_name: "Ann".into()
        }])
    );
    let mut gone: User = testing::given([
        registered_event(Role::Student),
        UserEvent::UserDeactivated {},
    ]);
    assert_eq!(
        testing::when(&mut gone, rename("B")),
        Err(UserError::Deactivated)
    );
    let mut nobody: User = testing::given([]);
    assert_eq!(
        testing::when(&mut nobody, rename("B")),
        Err(UserError::NotRegistered)
    );
}

#[test]
fn a_login_starts_a_session_and_refuses_a_stale_hash_or_a_deactivated_account() {
    let attempt = |verified: &str| UserCommand::AttemptLogin {
        password_ok: true,
        verified_against: verified.into(),
        session_id: S1,
        refresh_hash: "r".into(),
        fingerprint_hash: "f".into(),
        now: t0(),
    };
    let mut user: User = testing::given([registered_event(Role::Student)]);
    assert_eq!(
        testing::when(&mut user, attempt("H")),
        Ok(vec![
            UserEvent::LoginSucceeded { session_id: S1 },
            UserEvent::SessionStarted {
                session_id: S1,
                refresh_token_hash: "r".into(),
                fingerprint_hash: "f".into(),
                started_at: t0(),
                expires_at: t0() + SESSION_LIFETIME,
                role: Role::Student,
                must_change_password: false,
            }
        ])
    );
    assert_eq!(user.sessions.len(), 1);
    // The password was checked against a hash that has since changed.
    assert_eq!(
        testing::when(&mut user, attempt("old")),
        Err(UserError::StaleCredentials)
    );
    let mut gone: User = testing::given([
        registered_event(Role::Student),
        UserEvent::UserDeactivated {},
    ]);
    assert_eq!(
        testing::when(&mut gone, attempt("H")),
        Ok(vec![UserEvent::LoginFailed {
            reason: "deactivated".into(),
            at: t0()
        }])
    );
}

#[test]
fn refresh_rotates_the_token_and_ends_the_session_on_reuse_or_a_new_device() {
    let refresh = |presented: &str, fingerprint: &str, now| UserCommand::Refresh {
        session_id: S1,
        presented_hash: presented.into(),
        fingerprint_hash: fingerprint.into(),
        new_hash: "next".into(),
        now,
    };
    let first = format!("r-{S1}");
    let mut user = with_sessions();
    assert_eq!(
        testing::when(&mut user, refresh(&first, "f1", t0())),
        Ok(vec![UserEvent::SessionRefreshed {
            session_id: S1,
            generation: 1,
            refresh_token_hash: "next".into(),
            role: Role::Student,
            must_change_password: false,
        }])
    );
    // The rotated-away token again: theft; the whole session ends.
    assert_eq!(
        testing::when(&mut user, refresh(&first, "f1", t0())),
        Ok(vec![
            UserEvent::RefreshTokenReused { session_id: S1 },
            revoked(S1, RevokeReason::RefreshTokenReuse)
        ])
    );
    assert!(user.session(S1).is_none());
    let mut other = with_sessions();
    assert_eq!(
        testing::when(&mut other, refresh("made-up", "f1", t0())),
        Err(UserError::InvalidRefreshToken)
    );
    assert_eq!(
        testing::when(&mut other, refresh(&first, "f9", t0())),
        Ok(vec![revoked(S1, RevokeReason::FingerprintMismatch)])
    );
    let mut old = with_sessions();
    assert_eq!(
        testing::when(&mut old, refresh(&first, "f1", t0() + SESSION_LIFETIME)),
        Ok(vec![revoked(S1, RevokeReason::Expired)])
    );
}

#[test]
fn revoke_one_session_or_all_but_one() {
    let mut user = with_sessions();
    assert_eq!(
        testing::when(
            &mut user,
            UserCommand::RevokeSession {
                session_id: Uuid::from_u128(999),
                reason: RevokeReason::Logout
            }
        ),
        Err(UserError::SessionNotFound)
    );
    assert_eq!(
        testing::when(
            &mut user,
            UserCommand::RevokeSession {
                session_id: S1,
                reason: RevokeReason::Logout
            }
        ),
        Ok(vec![revoked(S1, RevokeReason::Logout)])
    );
    let mut both = with_sessions();
    assert_eq!(
        testing::when(
            &mut both,
            UserCommand::RevokeAllSessions {
                except: Some(S2),
                reason: RevokeReason::LogoutAll
            }
        ),
        Ok(vec![revoked(S1, RevokeReason::LogoutAll)])
    );
    assert_eq!(both.sessions.len(), 1);
}

#[test]
fn change_password_keeps_the_callers_session_and_ends_the_others() {
    let change = |verified: &str| UserCommand::ChangePassword {
        verified_against: verified.into(),
        new_hash: "H2".into(),
        keep_session: Some(S2),
    };
    let mut user = with_sessions();
    assert_eq!(
        testing::when(&mut user, change("stale")),
        Err(UserError::StaleCredentials)
    );
    assert_eq!(
        testing::when(&mut user, change("H")),
        Ok(vec![
            UserEvent::PasswordChanged {
                password_hash: "H2".into(),
                via_reset: false
            },
            revoked(S1, RevokeReason::PasswordChanged)
        ])
    );
    assert_eq!(user.password_hash, "H2");
}

#[test]
fn a_reset_token_works_once_before_it_expires_and_ends_every_session() {
    let expires = t0() + Duration::hours(1);
    let mut user = with_sessions();
    assert_eq!(
        testing::when(
            &mut user,
            UserCommand::RequestPasswordReset {
                token_hash: "T".into(),
                expires_at: expires
            }
        ),
        Ok(vec![UserEvent::PasswordResetRequested {
            token_hash: "T".into(),
            expires_at: expires
        }])
    );
    let confirm = |token: &str, now| UserCommand::ConfirmPasswordReset {
        token_hash: token.into(),
        new_hash: "H2".into(),
        now,
    };
    assert_eq!(
        testing::when(&mut user, confirm("wrong", t0())),
        Err(UserError::InvalidResetToken)
    );
    assert_eq!(
        testing::when(&mut user, confirm("T", expires)),
        Err(UserError::InvalidResetToken),
        "expired"
    );
    assert_eq!(
        testing::when(&mut user, confirm("T", t0())),
        Ok(vec![
            UserEvent::PasswordChanged {
                password_hash: "H2".into(),
                via_reset: true
            },
            revoked(S1, RevokeReason::PasswordReset),
            revoked(S2, RevokeReason::PasswordReset)
        ])
    );
    assert_eq!(
        testing::when(&mut user, confirm("T", t0())),
        Err(UserError::InvalidResetToken),
        "used once"
    );
}

#[test]
fn a_forced_reset_restricts_new_sessions_until_the_password_changes() {
    let mut user: User = testing::given([registered_event(Role::Student)]);
    assert_eq!(
        testing::when(&mut user, UserCommand::ForcePasswordReset),
        Ok(vec![UserEvent::PasswordResetForced {}])
    );
    assert!(user.must_change_password);
    let mut gone: User = testing::given([
        registered_event(Role::Student),
        UserEvent::UserDeactivated {},
    ]);
    assert_eq!(
        testing::when(&mut gone, UserCommand::ForcePasswordReset),
        Err(UserError::Deactivated)
    );
}

#[test]
fn change_role_records_from_and_to_and_refuses_the_same_role() {
    let mut user: User = testing::given([registered_event(Role::Student)]);
    assert_eq!(
        testing::when(
            &mut user,
            UserCommand::ChangeRole {
                role: Role::Student
            }
        ),
        Err(UserError::SameRole)
    );
    assert_eq!(
        testing::when(&mut user, UserCommand::ChangeRole { role: Role::Tutor }),
        Ok(vec![UserEvent::RoleChanged {
            from: Role::Student,
            to: Role::Tutor
        }])
    );
    assert_eq!(user.role, Some(Role::Tutor));
}

#[test]
fn deactivate_ends_every_session_once() {
    let mut user = with_sessions();
    assert_eq!(
        testing::when(&mut user, UserCommand::Deactivate),
        Ok(vec![
            UserEvent::UserDeactivated {},
            revoked(S1, RevokeReason::UserDeactivated),
            revoked(S2, RevokeReason::UserDeactivated)
        ])
    );
    assert_eq!(user.status, Status::Deactivated);
    assert_eq!(
        testing::when(&mut user, UserCommand::Deactivate),
        Ok(vec![])
    );
}

#[test]
fn devices_register_once_up_to_the_limit_and_one_is_active() {
    let register = |id: &str| UserCommand::RegisterDevice {
        device_id: id.into(),
        name: "Phone".into(),
        platform: Platform::Android,
    };
    let mut user: User = testing::given([registered_event(Role::Student)]);
    assert_eq!(
        testing::when(&mut user, register("d1")),
        Ok(vec![UserEvent::DeviceRegistered {
            device_id: "d1".into(),
            name: "Phone".into(),
            platform: Platform::Android
        }])
    );
    assert_eq!(
        testing::when(&mut user, register("d1")),
        Err(UserError::DeviceExists)
    );
    for i in 2..=MAX_DEVICES {
        testing::when(&mut user, register(&format!("d{i}"))).expect("under the limit");
    }
    assert_eq!(
        testing::when(&mut user, register("one-too-many")),
        Err(UserError::TooManyDevices)
    );
    let activate = |id: &str| UserCommand::ActivateDevice {
        device_id: id.into(),
    };
    assert_eq!(
        testing::when(&mut user, activate("d1")),
        Ok(vec![UserEvent::ActiveDeviceTransferred {
            from: None,
            to: "d1".into()
        }])
    );
    assert_eq!(
        testing::when(&mut user, activate("d2")),
        Ok(vec![UserEvent::ActiveDeviceTransferred {
            from: Some("d1".into()),
            to: "d2".into()
        }])
    );
    assert_eq!(testing::when(&mut user, activate("d2")), Ok(vec![]));
    assert_eq!(
        testing::when(&mut user, activate("nope")),
        Err(UserError::DeviceNotFound)
    );
}

#[test]
fn revoking_a_device_ends_the_sessions_it_logged_in_with() {
    let mut user = with_sessions();
    let revoke = |id: &str| UserCommand::RevokeDevice {
        device_id: id.into(),
        fingerprint_hash: "f1".into(),
    };
    assert_eq!(
        testing::when(&mut user, revoke("d1")),
        Err(UserError::DeviceNotFound)
    );
    testing::when(
        &mut user,
        UserCommand::RegisterDevice {
            device_id: "d1".into(),
            name: "Laptop".into(),
            platform: Platform::Web,
        },
    )
    .expect("registered");
    assert_eq!(
        testing::when(&mut user, revoke("d1")),
        Ok(vec![
            UserEvent::DeviceRevoked {
                device_id: "d1".into()
            },
            revoked(S1, RevokeReason::DeviceRevoked)
        ])
    );
    assert!(
        user.session(S2).is_some(),
        "the other device's session stays"
    );
}
