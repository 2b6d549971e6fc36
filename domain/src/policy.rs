//! The policy table: for every action, what each role (and an anonymous
//! caller) may do. It is data, in one place; every endpoint names its action
//! and the API enforces the row.
//!
//! A cell is a [`Rule`]: deny, allow, allow only on the caller's own
//! resources, optionally with a rate limit. Ownership itself (is this lesson
//! yours?) is decided by the handler that has loaded the resource; the table
//! says whether ownership is required.

use serde::Serialize;

use crate::identity::Role;

/// Who may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Refused.
    Deny,
    /// Allowed on anything.
    Allow,
    /// Only on resources the caller owns (or takes part in).
    Own,
}

/// What a rate limit is counted per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKey {
    /// Per user.
    User,
    /// Per session.
    Session,
    /// Per client address.
    Ip,
}

/// A quota of `quota` requests per `window_secs`, counted per `key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limit {
    /// Requests allowed per window.
    pub quota: u32,
    /// The window, in seconds.
    pub window_secs: u32,
    /// What the limit is counted per.
    pub key: LimitKey,
}

/// One cell of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Deny, allow, or own resources only.
    pub access: Access,
    /// The rate limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<Limit>,
}

const DENY: Rule = Rule {
    access: Access::Deny,
    limit: None,
};
const ALLOW: Rule = Rule {
    access: Access::Allow,
    limit: None,
};
const OWN: Rule = Rule {
    access: Access::Own,
    limit: None,
};

const fn limited(access: Access, quota: u32, window_secs: u32, key: LimitKey) -> Rule {
    Rule {
        access,
        limit: Some(Limit {
            quota,
            window_secs,
            key,
        }),
    }
}

const MINUTE: u32 = 60;
const HOUR: u32 = 3600;

macro_rules! actions {
    ($( $variant:ident = $name:literal : $doc:literal ; )*) => {
        /// Everything a caller can ask Lectern to do.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum Action { $( #[doc = $doc] $variant, )* }

        impl Action {
            /// Every action, in table order.
            pub const ALL: &'static [Action] = &[$(Action::$variant,)*];

            /// The dotted name, such as `lesson.create`.
            pub fn name(self) -> &'static str {
                match self { $(Action::$variant => $name,)* }
            }

            /// What the action does.
            pub fn describe(self) -> &'static str {
                match self { $(Action::$variant => $doc,)* }
            }

            /// The action with this dotted name.
            pub fn parse(name: &str) -> Option<Action> {
                match name { $($name => Some(Action::$variant),)* _ => None }
            }
        }
    };
}

actions! {
    AuthRegister = "auth.register": "Create an account";
    AuthLogin = "auth.login": "Log in and start a session";
    AuthRefresh = "auth.refresh": "Rotate a refresh token";
    AuthVerify = "auth.verify": "Describe the presented access token";
    AuthLogout = "auth.logout": "End one's sessions";
    AuthChangePassword = "auth.change_password": "Change one's password";
    AuthPasswordReset = "auth.password_reset": "Request or confirm a password reset";
    MeRead = "me.read": "Read one's profile and permissions";
    MeUpdate = "me.update": "Update one's profile";
    SessionRead = "session.read": "List sessions";
    SessionRevoke = "session.revoke": "End a session";
    DeviceRegister = "device.register": "Register a device";
    DeviceRead = "device.read": "List devices";
    DeviceActivate = "device.activate": "Make a device the active one";
    DeviceRevoke = "device.revoke": "Revoke a device";
    AdminUsersRead = "admin.users.read": "List and read any account";
    AdminUsersCreate = "admin.users.create": "Create accounts of any role";
    AdminUsersRole = "admin.users.role": "Change an account's role";
    AdminUsersDeactivate = "admin.users.deactivate": "Deactivate an account";
    AdminUsersResetPassword = "admin.users.reset_password": "Force a password change";
    AdminProjectionsRead = "admin.projections.read": "Read projection status";
    AdminProjectionsRebuild = "admin.projections.rebuild": "Rebuild a projection";
    AuditRead = "audit.read": "Read the audit log";
    LessonCreate = "lesson.create": "Create a lesson";
    LessonRead = "lesson.read": "List and read lessons";
    LessonUpdate = "lesson.update": "Edit a lesson";
    LessonStart = "lesson.start": "Start a lesson";
    LessonEnd = "lesson.end": "End a lesson";
    LessonCancel = "lesson.cancel": "Cancel a lesson";
    LessonEnroll = "lesson.enroll": "Enrol a student";
    LessonUnenroll = "lesson.unenroll": "Remove an enrolment";
    BoardRead = "board.read": "Read a whiteboard and its operations";
    BoardDraw = "board.draw": "Apply whiteboard operations";
    BoardConfigure = "board.configure": "Change a board's conflict policy";
    ChatSend = "chat.send": "Send a chat message";
    ChatRead = "chat.read": "Read chat messages";
    ChatAck = "chat.ack": "Acknowledge chat deliveries";
    PresenceRead = "presence.read": "See who is online in a lesson";
    PresenceUpdate = "presence.update": "Send heartbeats and set one's own status";
    VideoWatch = "video.watch": "Start, renew and end one's own video sessions";
    PaymentCreate = "payment.create": "Start a payment";
    PaymentRead = "payment.read": "Read payments and invoices";
    PaymentWebhook = "payment.webhook": "Deliver a signed payment-provider webhook";
    InvoiceVoid = "invoice.void": "Void an unpaid invoice";
    InvoiceUncollectible = "invoice.uncollectible": "Mark an open invoice uncollectible";
    NotificationRead = "notification.read": "Read one's notifications";
}

/// One row: the action, then the anonymous caller, then the roles in
/// [`Role::ALL`] order (admin, auditor, tutor, student, guest).
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// The policy action.
    pub action: Action,
    /// The rule for callers without a token.
    pub anonymous: Rule,
    /// The rule per role, in `Role::ALL` order.
    pub roles: [Rule; 5],
}

const fn row(action: Action, anonymous: Rule, roles: [Rule; 5]) -> Row {
    Row {
        action,
        anonymous,
        roles,
    }
}

use Access::{Allow as A, Own as O};
use Action as X;
use LimitKey::{Ip, Session, User};

const EVERYONE: [Rule; 5] = [ALLOW, ALLOW, ALLOW, ALLOW, ALLOW];
const OWN_ONLY: [Rule; 5] = [ALLOW, OWN, OWN, OWN, OWN];
const ADMIN_ONLY: [Rule; 5] = [ALLOW, DENY, DENY, DENY, DENY];
const ADMIN_AUDITOR: [Rule; 5] = [ALLOW, ALLOW, DENY, DENY, DENY];
const PARTICIPANTS: [Rule; 5] = [ALLOW, ALLOW, OWN, OWN, DENY];
const TUTOR_OWNS: [Rule; 5] = [ALLOW, DENY, OWN, DENY, DENY];

/// The table (see ARCHITECTURE "The domain"). The rate limits are the
/// security model's: tutor `lesson.create` 20/hour, `chat.send` 100/min for
/// tutors and 60/min for students, and so on; the anonymous limits are per
/// client address.
pub static POLICY: &[Row] = &[
    row(
        X::AuthRegister,
        limited(A, 20, MINUTE, Ip),
        [ALLOW, ALLOW, ALLOW, ALLOW, ALLOW],
    ),
    row(X::AuthLogin, limited(A, 30, MINUTE, Ip), EVERYONE),
    row(X::AuthRefresh, limited(A, 10, HOUR, Session), EVERYONE),
    row(X::AuthVerify, DENY, EVERYONE),
    row(X::AuthLogout, DENY, EVERYONE),
    row(X::AuthChangePassword, DENY, EVERYONE),
    row(X::AuthPasswordReset, limited(A, 10, MINUTE, Ip), EVERYONE),
    row(X::MeRead, DENY, EVERYONE),
    row(X::MeUpdate, DENY, EVERYONE),
    row(X::SessionRead, DENY, OWN_ONLY),
    row(X::SessionRevoke, DENY, OWN_ONLY),
    row(X::DeviceRegister, DENY, OWN_ONLY),
    row(X::DeviceRead, DENY, OWN_ONLY),
    row(X::DeviceActivate, DENY, OWN_ONLY),
    row(X::DeviceRevoke, DENY, OWN_ONLY),
    row(X::AdminUsersRead, DENY, ADMIN_ONLY),
    row(X::AdminUsersCreate, DENY, ADMIN_ONLY),
    row(X::AdminUsersRole, DENY, ADMIN_ONLY),
    row(X::AdminUsersDeactivate, DENY, ADMIN_ONLY),
    row(X::AdminUsersResetPassword, DENY, ADMIN_ONLY),
    row(X::AdminProjectionsRead, DENY, ADMIN_AUDITOR),
    row(X::AdminProjectionsRebuild, DENY, ADMIN_ONLY),
    row(X::AuditRead, DENY, ADMIN_AUDITOR),
    row(
        X::LessonCreate,
        DENY,
        [ALLOW, DENY, limited(A, 20, HOUR, User), DENY, DENY],
    ),
    row(X::LessonRead, DENY, EVERYONE),
    row(X::LessonUpdate, DENY, TUTOR_OWNS),
    row(X::LessonStart, DENY, TUTOR_OWNS),
    row(X::LessonEnd, DENY, TUTOR_OWNS),
    row(X::LessonCancel, DENY, TUTOR_OWNS),
    row(X::LessonEnroll, DENY, [ALLOW, DENY, OWN, OWN, DENY]),
    row(X::LessonUnenroll, DENY, [ALLOW, DENY, OWN, OWN, DENY]),
    row(X::BoardRead, DENY, PARTICIPANTS),
    row(
        X::BoardDraw,
        DENY,
        [
            ALLOW,
            DENY,
            limited(O, 1000, MINUTE, User),
            limited(O, 500, MINUTE, User),
            DENY,
        ],
    ),
    row(X::BoardConfigure, DENY, TUTOR_OWNS),
    row(
        X::ChatSend,
        DENY,
        [
            ALLOW,
            DENY,
            limited(O, 100, MINUTE, User),
            limited(O, 60, MINUTE, User),
            DENY,
        ],
    ),
    row(X::ChatRead, DENY, PARTICIPANTS),
    row(X::ChatAck, DENY, [ALLOW, DENY, OWN, OWN, DENY]),
    row(X::PresenceRead, DENY, PARTICIPANTS),
    row(
        X::PresenceUpdate,
        DENY,
        [
            limited(A, 120, MINUTE, Session),
            limited(A, 120, MINUTE, Session),
            limited(A, 120, MINUTE, Session),
            limited(A, 120, MINUTE, Session),
            limited(A, 120, MINUTE, Session),
        ],
    ),
    row(
        X::VideoWatch,
        DENY,
        [
            limited(A, 60, MINUTE, User),
            DENY,
            limited(O, 60, MINUTE, User),
            limited(O, 60, MINUTE, User),
            DENY,
        ],
    ),
    row(
        X::PaymentCreate,
        DENY,
        [
            ALLOW,
            DENY,
            limited(O, 10, MINUTE, User),
            limited(O, 10, MINUTE, User),
            DENY,
        ],
    ),
    // Reading invoices is not throttled: a client polls an invoice until a
    // webhook has paid it. Starting payments is (10 a minute).
    row(X::PaymentRead, DENY, [ALLOW, ALLOW, OWN, OWN, DENY]),
    row(X::PaymentWebhook, ALLOW, EVERYONE),
    row(X::InvoiceVoid, DENY, ADMIN_ONLY),
    row(X::InvoiceUncollectible, DENY, ADMIN_ONLY),
    row(X::NotificationRead, DENY, OWN_ONLY),
];

/// The rule for `role` (or an anonymous caller) on `action`. An action missing
/// from the table is denied.
pub fn rule(role: Option<Role>, action: Action) -> Rule {
    POLICY
        .iter()
        .find(|r| r.action == action)
        .map_or(DENY, |r| match role {
            None => r.anonymous,
            Some(role) => {
                r.roles[Role::ALL
                    .iter()
                    .position(|x| *x == role)
                    .unwrap_or_default()]
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_exactly_one_row() {
        for action in Action::ALL {
            let rows = POLICY.iter().filter(|r| r.action == *action).count();
            assert_eq!(rows, 1, "{}", action.name());
            assert_eq!(Action::parse(action.name()), Some(*action));
        }
        assert_eq!(POLICY.len(), Action::ALL.len());
    }

    #[test]
    fn the_design_rate_limits_hold() {
        let l = |role, action| {
            rule(Some(role), action)
                .limit
                .map(|l| (l.quota, l.window_secs))
        };
        assert_eq!(l(Role::Tutor, Action::LessonCreate), Some((20, 3600)));
        assert_eq!(l(Role::Tutor, Action::ChatSend), Some((100, 60)));
        assert_eq!(l(Role::Student, Action::ChatSend), Some((60, 60)));
        assert_eq!(l(Role::Student, Action::BoardDraw), Some((500, 60)));
        assert_eq!(l(Role::Student, Action::PaymentCreate), Some((10, 60)));
        assert_eq!(
            rule(None, Action::AuthRefresh).limit,
            Some(Limit {
                quota: 10,
                window_secs: 3600,
                key: LimitKey::Session
            })
        );
        assert_eq!(
            rule(Some(Role::Student), Action::AuditRead).access,
            Access::Deny
        );
        assert_eq!(
            rule(Some(Role::Auditor), Action::AuditRead).access,
            Access::Allow
        );
    }
}
