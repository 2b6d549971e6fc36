//! Where a request came from: its id, address and user agent, for event
//! metadata and per-address rate limits; and authorization of anonymous
//! callers.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use lectern_domain::policy::{self, Access, Action, LimitKey};
use lectern_domain::EventMetadata;
use uuid::Uuid;

use super::limits::{Exceeded, Readings};
use super::refusal::{record, too_many, unauthorized};
use crate::app::AppState;
use crate::middleware::RequestId;
use crate::problem::{Code, Problem};

/// Where a request came from, for event metadata and rate limits.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The request id.
    pub request_id: String,
    /// The client address.
    pub ip: String,
    /// The client's User-Agent.
    pub user_agent: String,
    /// The HTTP method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// The request's `Idempotency-Key` attempt, if it has a key.
    pub idempotency: Option<crate::idempotency::Attempt>,
    /// Where rate-limit checks leave their readings for the response headers.
    pub readings: Readings,
}

impl FromRequestParts<AppState> for Origin {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        // Behind trusted proxies, the client `X-Forwarded-For` names.
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| {
                state
                    .http
                    .trusted_proxies
                    .client_ip(c.0.ip(), &parts.headers)
                    .to_string()
            })
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
            idempotency: parts
                .extensions
                .get::<crate::idempotency::Attempt>()
                .cloned(),
            readings: parts
                .extensions
                .get::<Readings>()
                .cloned()
                .unwrap_or_default(),
        })
    }
}

impl Origin {
    /// Metadata for a command by an anonymous caller.
    pub fn metadata(&self) -> EventMetadata {
        EventMetadata {
            actor_id: String::new(),
            actor_role: lectern_domain::metadata::ANONYMOUS.to_owned(),
            session_id: String::new(),
            request_id: self.request_id.clone(),
            correlation_id: self.request_id.clone(),
            causation_id: String::new(),
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
            command: String::new(),
            idempotency_key: self.idempotency_key(),
            redelivered: self.idempotency.as_ref().is_some_and(|a| a.redelivered),
        }
    }

    /// The idempotency attempt id for event metadata; empty without a key.
    pub fn idempotency_key(&self) -> String {
        self.idempotency
            .as_ref()
            .map(|a| a.id.to_string())
            .unwrap_or_default()
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
                Code::MISSING_TOKEN,
                "This endpoint needs a bearer access token.",
            ));
        }
        let key = match rule.limit.map(|l| l.key) {
            Some(LimitKey::Session) => {
                session.map_or_else(|| format!("ip:{}", self.ip), |s| s.to_string())
            }
            _ => format!("ip:{}", self.ip),
        };
        match state.auth.limits.check(None, action, &key) {
            Ok(Some(reading)) => self.readings.set(vec![reading]),
            Ok(None) => {}
            Err(exceeded) => return Err(self.too_many(state, action, exceeded).await),
        }
        Ok(())
    }

    /// 429 for `action`, recorded; the readings say which limit.
    async fn too_many(&self, state: &AppState, action: Action, exceeded: Exceeded) -> Problem {
        record(
            state,
            &format!("ip:{}", self.ip),
            action,
            "rate_limited",
            self,
            &self.metadata(),
        )
        .await;
        let problem = too_many(&exceeded);
        self.readings.refused(exceeded);
        problem
    }
}

impl Origin {
    /// Refuse `action` with 403 and record why, for an anonymous caller.
    pub async fn deny(
        &self,
        state: &AppState,
        action: Action,
        reason: Code,
        detail: &str,
    ) -> Problem {
        self.refuse(state, action, reason, reason.as_str(), detail)
            .await
    }

    /// Refuse `action` with `code`, recording `reason` (finer than the
    /// code, for auditors) as the denial's reason.
    pub async fn refuse(
        &self,
        state: &AppState,
        action: Action,
        code: Code,
        reason: &str,
        detail: &str,
    ) -> Problem {
        let actor = format!("ip:{}", self.ip);
        record(state, &actor, action, reason, self, &self.metadata()).await;
        Problem::new(code, detail)
    }
}
