//! The User aggregate, given/when/then.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::Aggregate;
use uuid::Uuid;

use super::*;
use crate::identity::values::Role;

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
