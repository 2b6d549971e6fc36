//! Authentication and authorization for every endpoint.
//!
//! [`Caller`] is the extractor for endpoints that need an access token: it
//! verifies the JWT in memory and checks the revocation set. Each handler
//! then calls [`Caller::authorize`] with its action, which applies the policy
//! table (deny, allow, own) and its rate limit. [`Client`] is the same for
//! anonymous endpoints. Every refusal after authentication, and every forged
//! or revoked token, is recorded as an `AccessDenied` event.

pub mod limits;
pub mod revocations;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use lectern_commands::identity::Issued;
use lectern_domain::access::RecordDenial;
use lectern_domain::identity::Role;
use lectern_domain::policy::{self, Access, Action, LimitKey};
use lectern_domain::EventMetadata;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::middleware::RequestId;
use crate::problem::Problem;
use limits::{Exceeded, RateLimits};
use revocations::{Revocations, Standing};
use tokens::{AccessClaims, Keyring, TokenError, ACCESS_TTL_SECS};

/// Token verification, revocations and rate limits, shared by all requests.
pub struct Auth {
    pub keyring: Keyring,
    pub revocations: Arc<Revocations>,
    pub limits: RateLimits,
}

impl Auth {
    /// Auth over `keyring`, with empty revocation and rate-limit state.
    pub fn new(keyring: Keyring) -> Self {
        Self {
            keyring,
            revocations: Arc::new(Revocations::default()),
            limits: RateLimits::new(),
        }
    }

    /// Verify a bearer token and check its standing; also returns the id of
    /// the key that signed it.
    pub fn authenticate(
        &self,
        token: &str,
    ) -> Result<(AccessClaims, String, Standing), TokenError> {
        let (claims, kid) = self.keyring.verify(token)?;
        let standing = self.revocations.standing(&claims);
        Ok((claims, kid, standing))
    }

    /// A signed access token for a login or refresh.
    pub fn issue(&self, issued: &Issued) -> (String, AccessClaims) {
        let now = chrono::Utc::now().timestamp();
        let claims = AccessClaims {
            iss: self.keyring.issuer.clone(),
            aud: self.keyring.audience.clone(),
            sub: issued.user_id,
            sid: issued.session_id,
            role: issued.role,
            jti: Uuid::new_v4(),
            iat: now,
            nbf: now,
            exp: now + ACCESS_TTL_SECS,
            uv: issued.version,
            mcp: issued.must_change_password,
        };
        (self.keyring.sign(&claims), claims)
    }
}

/// Where a request came from, for event metadata and rate limits.
#[derive(Debug, Clone)]
pub struct Client {
    pub request_id: String,
    pub ip: String,
    pub user_agent: String,
    pub method: String,
    pub path: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_default();
        let user_agent: String = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .take(256)
            .collect();
        Ok(Self {
            request_id,
            ip,
            user_agent,
            method: parts.method.to_string(),
            path: parts.uri.path().chars().take(512).collect(),
        })
    }
}

impl Client {
    /// Metadata for a command by an anonymous caller.
    pub fn metadata(&self, command: &str) -> EventMetadata {
        EventMetadata {
            actor_id: String::new(),
            actor_role: "anonymous".to_owned(),
            session_id: String::new(),
            request_id: self.request_id.clone(),
            correlation_id: self.request_id.clone(),
            causation_id: String::new(),
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
            command: command.to_owned(),
        }
    }

    /// Apply the anonymous column of `action`'s row; `session` keys a
    /// per-session limit.
    pub async fn authorize(
        &self,
        state: &AppState,
        action: Action,
        session: Option<Uuid>,
    ) -> Result<(), Problem> {
        let rule = policy::rule(None, action);
        if rule.access == Access::Deny {
            return Err(unauthorized(
                "missing_token",
                "This endpoint needs a bearer access token.",
            ));
        }
        let key = match rule.limit.map(|l| l.key) {
            Some(LimitKey::Session) => {
                session.map_or_else(|| format!("ip:{}", self.ip), |s| s.to_string())
            }
            _ => format!("ip:{}", self.ip),
        };
        if let Err(exceeded) = state.auth.limits.check(None, action, &key) {
            record(
                state,
                &format!("ip:{}", self.ip),
                action,
                "rate_limited",
                self,
                &self.metadata("RecordDenial"),
            )
            .await;
            return Err(too_many(&exceeded));
        }
        Ok(())
    }
}

impl Client {
    /// Refuse `action` with 403 and record why, for an anonymous caller.
    pub async fn deny(
        &self,
        state: &AppState,
        action: Action,
        reason: &str,
        detail: &str,
    ) -> Problem {
        let actor = format!("ip:{}", self.ip);
        record(
            state,
            &actor,
            action,
            reason,
            self,
            &self.metadata("RecordDenial"),
        )
        .await;
        Problem::new(StatusCode::FORBIDDEN, reason, detail)
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub role: Role,
    pub claims: AccessClaims,
    /// The id of the key that signed the token.
    pub kid: String,
    /// The token allows only the password change.
    pub restricted: bool,
    pub client: Client,
}

/// 401 with a `WWW-Authenticate` challenge (RFC 6750).
pub fn unauthorized(code: &str, detail: &str) -> Problem {
    let mut p = Problem::new(StatusCode::UNAUTHORIZED, code, detail);
    let challenge = if code == "missing_token" {
        "Bearer realm=\"lectern\"".to_owned()
    } else {
        format!("Bearer realm=\"lectern\", error=\"invalid_token\", error_description=\"{detail}\"")
    };
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        p.headers.push((header::WWW_AUTHENTICATE, v));
    }
    p
}

fn too_many(e: &Exceeded) -> Problem {
    let mut p = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "At most {} requests per {} s are allowed for {}; retry in {} s.",
            e.limit.quota, e.limit.window_secs, e.policy, e.retry_after_secs
        ),
    );
    let headers = [
        (header::RETRY_AFTER, e.retry_after_secs.to_string()),
        (
            HeaderName::from_static("ratelimit-policy"),
            format!(
                "\"{}\";q={};w={}",
                e.policy, e.limit.quota, e.limit.window_secs
            ),
        ),
        (
            HeaderName::from_static("ratelimit"),
            format!("\"{}\";r=0;t={}", e.policy, e.retry_after_secs),
        ),
    ];
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            p.headers.push((name, v));
        }
    }
    p
}

/// Record an `AccessDenied` event. A failure to record is logged and does not
/// change the answer: the caller is refused either way.
async fn record(
    state: &AppState,
    actor: &str,
    action: Action,
    reason: &str,
    client: &Client,
    meta: &EventMetadata,
) {
    let denial = RecordDenial {
        action: action.name().to_owned(),
        reason: reason.to_owned(),
        method: client.method.clone(),
        path: client.path.clone(),
    };
    if let Err(e) = state.identity.record_denial(actor, denial, meta).await {
        tracing::error!(error = %e, "could not record an access denial");
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let client = Client::from_request_parts(parts, state).await?;
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized(
                "missing_token",
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
                    "invalid_token",
                    "The Authorization header must be 'Bearer <token>'.",
                )
            })?;
        let refused = |reason: &'static str| {
            let client = client.clone();
            async move {
                let actor = format!("ip:{}", client.ip);
                record(
                    state,
                    &actor,
                    Action::AuthVerify,
                    reason,
                    &client,
                    &client.metadata("RecordDenial"),
                )
                .await;
            }
        };
        match state.auth.authenticate(token) {
            Err(TokenError::Expired) => Err(unauthorized(
                "token_expired",
                "The access token has expired.",
            )),
            Err(TokenError::Invalid) => {
                refused("invalid_token").await;
                Err(unauthorized(
                    "invalid_token",
                    "The access token is not valid.",
                ))
            }
            Ok((_, _, Standing::Revoked)) => {
                refused("revoked_token").await;
                Err(unauthorized(
                    "token_revoked",
                    "The access token's session has ended.",
                ))
            }
            Ok((claims, kid, standing)) => Ok(Self {
                kid,
                user_id: claims.sub,
                session_id: claims.sid,
                role: claims.role,
                restricted: standing == Standing::Restricted,
                claims,
                client,
            }),
        }
    }
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
    /// Metadata for a command by this caller.
    pub fn metadata(&self, command: &str) -> EventMetadata {
        EventMetadata {
            actor_id: self.user_id.to_string(),
            actor_role: self.role.as_str().to_owned(),
            session_id: self.session_id.to_string(),
            request_id: self.client.request_id.clone(),
            correlation_id: self.client.request_id.clone(),
            causation_id: String::new(),
            ip: self.client.ip.clone(),
            user_agent: self.client.user_agent.clone(),
            command: command.to_owned(),
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
                    "password_change_required",
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
                    "forbidden",
                    &format!("The {} role may not {}.", self.role.as_str(), action.name()),
                )
                .await);
        }
        if let Some(limit) = rule.limit {
            let key = match limit.key {
                LimitKey::User => self.user_id.to_string(),
                LimitKey::Session => self.session_id.to_string(),
                LimitKey::Ip => format!("ip:{}", self.client.ip),
            };
            if let Err(exceeded) = state.auth.limits.check(Some(self.role), action, &key) {
                record(
                    state,
                    &format!("user:{}", self.user_id),
                    action,
                    "rate_limited",
                    &self.client,
                    &self.metadata("RecordDenial"),
                )
                .await;
                return Err(too_many(&exceeded));
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
        reason: &str,
        detail: &str,
    ) -> Problem {
        record(
            state,
            &format!("user:{}", self.user_id),
            action,
            reason,
            &self.client,
            &self.metadata("RecordDenial"),
        )
        .await;
        Problem::new(StatusCode::FORBIDDEN, reason, detail)
    }
}

/// One permission as `GET /api/v1/me/permissions` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Permission {
    pub action: &'static str,
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
    pub quota: u32,
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
