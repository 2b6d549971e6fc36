//! The authenticated caller: the `Caller` extractor (a verified, unrevoked
//! access token) and its authorization against the policy table.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use lectern_domain::identity::Role;
use lectern_domain::policy::{self, Access, Action, LimitKey};
use lectern_domain::EventMetadata;
use uuid::Uuid;

use super::refusal::{record, too_many, unauthorized};
use super::revocations::Standing;
use super::tokens::{AccessClaims, TokenError};
use super::Origin;
use crate::app::AppState;
use crate::problem::{Code, Problem};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user.
    pub user_id: Uuid,
    /// The session (refresh-token family).
    pub session_id: Uuid,
    /// The role.
    pub role: Role,
    /// The verified claims.
    pub claims: AccessClaims,
    /// The id of the key that signed the token.
    pub kid: String,
    /// The token allows only the password change.
    pub restricted: bool,
    /// Where the request came from.
    pub origin: Origin,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let origin = Origin::from_request_parts(parts, state).await?;
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized(
                Code::MISSING_TOKEN,
                "This endpoint needs a bearer access token.",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                unauthorized(
                    Code::INVALID_TOKEN,
                    "The Authorization header must be 'Bearer <token>'.",
                )
            })?;
        Self::authenticate(state, token, origin).await
    }
}

impl Caller {
    /// The caller a bearer `token` names, coming from `origin`: 401 when the
    /// token is not valid, has expired or its session ended (recorded, but
    /// for an expiry). The realtime socket authenticates its first frame
    /// this way too.
    pub async fn authenticate(
        state: &AppState,
        token: &str,
        origin: Origin,
    ) -> Result<Self, Problem> {
        let refused = |reason: &'static str| {
            let origin = origin.clone();
            async move {
                let actor = format!("ip:{}", origin.ip);
                record(
                    state,
                    &actor,
                    Action::AuthVerify,
                    reason,
                    &origin,
                    &origin.metadata(),
                )
                .await;
            }
        };
        match state.auth.authenticate(token) {
            Err(TokenError::Expired) => Err(unauthorized(
                Code::TOKEN_EXPIRED,
                "The access token has expired.",
            )),
            Err(TokenError::Invalid) => {
                refused("invalid_token").await;
                Err(unauthorized(
                    Code::INVALID_TOKEN,
                    "The access token is not valid.",
                ))
            }
            Ok((_, _, Standing::Revoked)) => {
                refused("revoked_token").await;
                Err(unauthorized(
                    Code::TOKEN_REVOKED,
                    "The access token's session has ended.",
                ))
            }
            Ok((claims, kid, standing)) => {
                let Some(role) = role_of(state, claims.sub).await? else {
                    refused("unknown_user").await;
                    return Err(unauthorized(
                        Code::INVALID_TOKEN,
                        "The access token is not valid.",
                    ));
                };
                Ok(Self {
                    kid,
                    user_id: claims.sub,
                    session_id: claims.sid,
                    role,
                    restricted: standing == Standing::Restricted,
                    claims,
                    origin,
                })
            }
        }
    }
}

/// The role of `user`: what this process learned from the log, or else
/// what the user's stream says (then remembered). Never the token's claim,
/// which only says what the role was when the token was issued.
async fn role_of(state: &AppState, user: uuid::Uuid) -> Result<Option<Role>, Problem> {
    if let Some(role) = state.auth.revocations.role(user) {
        return Ok(Some(role));
    }
    let role = state.identity.role_of(user).await?;
    if let Some(role) = role {
        state.auth.revocations.remember_role(user, role);
    }
    Ok(role)
}

impl axum::extract::OptionalFromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    /// No `Authorization` header: an anonymous caller. A header with a bad
    /// token is still refused.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Problem> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            <Self as FromRequestParts<AppState>>::from_request_parts(parts, state)
                .await
                .map(Some)
        } else {
            Ok(None)
        }
    }
}

/// What the caller was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The caller may act only on resources they own or take part in.
    pub own_only: bool,
}

impl Caller {
    /// Metadata for a command by this caller: the request's, with who acted.
    pub fn metadata(&self) -> EventMetadata {
        EventMetadata {
            actor_id: self.user_id.to_string(),
            actor_role: self.role.as_str().to_owned(),
            session_id: self.session_id.to_string(),
            ..self.origin.metadata()
        }
    }

    /// Apply `action`'s policy row to this caller: 403 when denied, 429 when
    /// over its rate limit. Both are recorded.
    pub async fn authorize(&self, state: &AppState, action: Action) -> Result<Grant, Problem> {
        if self.restricted && action != Action::AuthChangePassword {
            return Err(self
                .deny(
                    state,
                    action,
                    Code::PASSWORD_CHANGE_REQUIRED,
                    "Change your password first: this token allows nothing else.",
                )
                .await);
        }
        let rule = policy::rule(Some(self.role), action);
        if rule.access == Access::Deny {
            return Err(self
                .deny(
                    state,
                    action,
                    Code::FORBIDDEN,
                    &format!("The {} role may not {}.", self.role.as_str(), action.name()),
                )
                .await);
        }
        let checked = match rule.limit {
            Some(limit) => {
                let key = match limit.key {
                    LimitKey::User => self.user_id.to_string(),
                    LimitKey::Session => self.session_id.to_string(),
                    LimitKey::Ip => format!("ip:{}", self.origin.ip),
                };
                state
                    .auth
                    .limits
                    .check(Some(self.role), action, &key)
                    .map(|r| r.into_iter().collect())
            }
            None if self.origin.readings.is_http() => {
                state.auth.limits.check_default(&self.user_id.to_string())
            }
            None => Ok(Vec::new()),
        };
        match checked {
            Ok(readings) => self.origin.readings.set(readings),
            Err(exceeded) => {
                record(
                    state,
                    &format!("user:{}", self.user_id),
                    action,
                    "rate_limited",
                    &self.origin,
                    &self.metadata(),
                )
                .await;
                let problem = too_many(&exceeded);
                self.origin.readings.refused(exceeded);
                return Err(problem);
            }
        }
        Ok(Grant {
            own_only: rule.access == Access::Own,
        })
    }

    /// Refuse `action` with 403 and record why.
    pub async fn deny(
        &self,
        state: &AppState,
        action: Action,
        reason: Code,
        detail: &str,
    ) -> Problem {
        record(
            state,
            &format!("user:{}", self.user_id),
            action,
            reason.as_str(),
            &self.origin,
            &self.metadata(),
        )
        .await;
        Problem::new(reason, detail)
    }
}
