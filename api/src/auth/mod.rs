//! Authentication and authorization for every endpoint.
//!
//! [`Caller`] is the extractor for endpoints that need an access token: it
//! verifies the JWT in memory and checks the revocation set. Each handler
//! then calls [`Caller::authorize`] with its action, which applies the policy
//! table (deny, allow, own) and its rate limit. [`Origin`] is where any
//! request came from; anonymous endpoints authorize with it. Every refusal
//! after authentication, and every forged or revoked token, is recorded as an
//! `AccessDenied` event.
//!
//! - `caller.rs`: the authenticated caller and its grants;
//! - `origin.rs`: where a request came from, and anonymous authorization;
//! - `refusal.rs`: 401, 429 and the recording of denials;
//! - `permissions.rs`: what a role may do, as `/api/v1/me/permissions` lists it;
//! - `tokens.rs`, `revocations.rs`: access tokens and their revocation;
//! - `limits.rs`, `throttle.rs`: the rate limits, the anonymous default and
//!   the `RateLimit` headers.

mod caller;
pub mod limits;
mod origin;
mod permissions;
mod proxies;
mod refusal;
pub mod revocations;
pub mod throttle;
pub mod tokens;

use std::sync::Arc;

use lectern_commands::identity::Issued;
use uuid::Uuid;

pub use caller::{Caller, Grant};
pub use origin::Origin;
pub use permissions::{permissions, Permission, PermissionLimit};
pub use proxies::TrustedProxies;
pub use refusal::unauthorized;

use limits::RateLimits;
use revocations::{Revocations, Standing};
use tokens::{AccessClaims, Keyring, TokenError, ACCESS_TTL_SECS};

/// Token verification, revocations and rate limits, shared by all requests.
pub struct Auth {
    /// The access-token keys.
    pub keyring: Keyring,
    /// Ended sessions and outdated users.
    pub revocations: Arc<Revocations>,
    /// The per-process rate limits.
    pub limits: RateLimits,
}

impl Auth {
    /// Auth over `keyring`, with empty revocation and rate-limit state and
    /// `defaults` for endpoints without limits of their own.
    pub fn new(keyring: Keyring, defaults: limits::DefaultLimits) -> Self {
        Self {
            keyring,
            revocations: Arc::new(Revocations::default()),
            limits: RateLimits::new(defaults),
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
