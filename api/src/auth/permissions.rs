//! What a role may do, as `GET /api/v1/me/permissions` lists it.

use lectern_domain::identity::Role;
use lectern_domain::policy::{self, Access, Action, LimitKey};
use serde::Serialize;
use utoipa::ToSchema;

/// One permission as `GET /api/v1/me/permissions` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Permission {
    /// The policy action.
    pub action: &'static str,
    /// The description.
    pub description: &'static str,
    /// `allow`, or `own` (only on one's own resources).
    pub access: &'static str,
    /// The rate limit, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<PermissionLimit>,
}

/// A rate limit as listed in permissions.
#[derive(Debug, Serialize, ToSchema)]
pub struct PermissionLimit {
    /// Requests allowed per window.
    pub quota: u32,
    /// The window, in seconds.
    pub window_secs: u32,
    /// What it is counted per: `user`, `session` or `ip`.
    pub per: &'static str,
}

/// Everything `role` may do.
pub fn permissions(role: Role) -> Vec<Permission> {
    Action::ALL
        .iter()
        .filter_map(|a| {
            let rule = policy::rule(Some(role), *a);
            let access = match rule.access {
                Access::Deny => return None,
                Access::Allow => "allow",
                Access::Own => "own",
            };
            Some(Permission {
                action: a.name(),
                description: a.describe(),
                access,
                limit: rule.limit.map(|l| PermissionLimit {
                    quota: l.quota,
                    window_secs: l.window_secs,
                    per: match l.key {
                        LimitKey::User => "user",
                        LimitKey::Session => "session",
                        LimitKey::Ip => "ip",
                    },
                }),
            })
        })
        .collect()
}
