//! Rate limits, enforced with `governor` (GCRA): the policy table's own
//! limits, and the defaults for everything else.
//!
//! A limit of `q` per `w` seconds allows a burst of `q` and then one request
//! every `w / q` seconds. Limiters are per process; they are kept per
//! (role, action) and keyed by user, session or client address as the
//! table says. An action without a limit of its own is held to the
//! defaults ([`DefaultLimits`]): a burst and a sustained rate per user, and a
//! rate per address for anonymous requests. Every check leaves its
//! [`Reading`]s in the request's [`Readings`], from which every response of a
//! limited endpoint gets its `RateLimit-Policy` and `RateLimit` headers.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use lectern_domain::identity::Role;
use lectern_domain::policy::{Action, POLICY};

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// The limits for requests without a limit of their own; 0 turns one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultLimits {
    /// Requests per minute per user (the burst).
    pub burst_per_minute: u32,
    /// Requests per hour per user (the sustained rate).
    pub per_hour: u32,
    /// Requests per hour per client address without a token.
    pub anonymous_per_hour: u32,
}

impl Default for DefaultLimits {
    fn default() -> Self {
        Self {
            burst_per_minute: 100,
            per_hour: 1000,
            anonymous_per_hour: 20,
        }
    }
}

impl DefaultLimits {
    /// No default limits (the policy table's own limits still hold).
    pub const OFF: Self = Self {
        burst_per_minute: 0,
        per_hour: 0,
        anonymous_per_hour: 0,
    };
}

/// One policy's state for one request, as the `RateLimit` headers say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// The policy's name: an action's, or `burst`, `sustained`, `anonymous`.
    pub policy: &'static str,
    /// Requests allowed per window.
    pub quota: u32,
    /// The window, in seconds.
    pub window_secs: u32,
    /// Requests left now.
    pub remaining: u32,
    /// Seconds until at least one more request is allowed (0 when none was
    /// used).
    pub reset_secs: u64,
}

/// A refused request: what to tell the client.
#[derive(Debug, Clone)]
pub struct Exceeded {
    /// The policy that refused it, with nothing remaining.
    pub reading: Reading,
    /// Seconds until a request would be allowed.
    pub retry_after_secs: u64,
    /// What the request also counted against before it was refused.
    pub others: Vec<Reading>,
}

/// The readings of one HTTP request, filled by whichever check ran. Shared
/// between the request's extensions and the middleware that writes the
/// headers. The default holds nothing: a realtime frame is not an HTTP
/// request, and is held to its action's own limit and the socket's frame
/// rate, not to the defaults.
#[derive(Debug, Clone, Default)]
pub struct Readings(Option<Arc<Mutex<Vec<Reading>>>>);

impl Readings {
    /// The readings of an HTTP request.
    pub fn http() -> Self {
        Self(Some(Arc::default()))
    }

    /// Whether these are an HTTP request's, which the defaults hold to.
    pub fn is_http(&self) -> bool {
        self.0.is_some()
    }

    /// Replace the readings with `readings`.
    pub fn set(&self, readings: Vec<Reading>) {
        if let Some(Ok(mut slot)) = self.0.as_ref().map(|s| s.lock()) {
            *slot = readings;
        }
    }

    /// Replace the readings with those of a refusal.
    pub fn refused(&self, exceeded: Exceeded) {
        let mut readings = exceeded.others;
        readings.push(exceeded.reading);
        self.set(readings);
    }

    /// Write `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers)
    /// into `headers`, when a limit applied.
    pub fn write(&self, headers: &mut HeaderMap) {
        let Some(Ok(readings)) = self.0.as_ref().map(|s| s.lock()) else {
            return;
        };
        if readings.is_empty() {
            return;
        }
        let policy = readings
            .iter()
            .map(|r| format!("\"{}\";q={};w={}", r.policy, r.quota, r.window_secs))
            .collect::<Vec<_>>()
            .join(", ");
        let state = readings
            .iter()
            .map(|r| format!("\"{}\";r={};t={}", r.policy, r.remaining, r.reset_secs))
            .collect::<Vec<_>>()
            .join(", ");
        for (name, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
    }
}

struct Limiter {
    policy: &'static str,
    quota: u32,
    window_secs: u32,
    keyed: Keyed,
}

impl Limiter {
    fn new(policy: &'static str, quota: u32, window_secs: u32) -> Option<Self> {
        let burst = NonZeroU32::new(quota)?;
        let period = Duration::from_secs(u64::from(window_secs)) / burst.get();
        let q = Quota::with_period(period)?.allow_burst(burst);
        Some(Self {
            policy,
            quota,
            window_secs,
            keyed: RateLimiter::keyed(q).with_middleware::<StateInformationMiddleware>(),
        })
    }

    /// Seconds one request takes to replenish, rounded up.
    fn replenish_secs(&self) -> u64 {
        u64::from(self.window_secs).div_ceil(u64::from(self.quota.max(1)))
    }

    fn check(&self, key: &str, clock: &DefaultClock) -> Result<Reading, Exceeded> {
        match self.keyed.check_key(&key.to_owned()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Ok(Reading {
                    policy: self.policy,
                    quota: self.quota,
                    window_secs: self.window_secs,
                    remaining,
                    reset_secs: if remaining >= self.quota {
                        0
                    } else {
                        self.replenish_secs()
                    },
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(clock.now());
                let retry = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err(Exceeded {
                    reading: Reading {
                        policy: self.policy,
                        quota: self.quota,
                        window_secs: self.window_secs,
                        remaining: 0,
                        reset_secs: retry,
                    },
                    retry_after_secs: retry,
                    others: Vec::new(),
                })
            }
        }
    }

    fn retain_recent(&self) {
        self.keyed.retain_recent();
    }
}

/// Every limiter: the policy table's and the defaults.
pub struct RateLimits {
    table: HashMap<(Option<Role>, Action), Limiter>,
    burst: Option<Limiter>,
    sustained: Option<Limiter>,
    anonymous: Option<Limiter>,
    clock: DefaultClock,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self::new(DefaultLimits::default())
    }
}

impl RateLimits {
    /// One limiter per limited cell of the policy table, and the defaults.
    pub fn new(defaults: DefaultLimits) -> Self {
        let mut table = HashMap::new();
        for row in POLICY {
            let cells = std::iter::once((None, row.anonymous))
                .chain(Role::ALL.iter().map(|r| Some(*r)).zip(row.roles));
            for (role, rule) in cells {
                if let Some(limit) = rule.limit {
                    if let Some(l) = Limiter::new(row.action.name(), limit.quota, limit.window_secs)
                    {
                        table.insert((role, row.action), l);
                    }
                }
            }
        }
        Self {
            table,
            burst: Limiter::new("burst", defaults.burst_per_minute, 60),
            sustained: Limiter::new("sustained", defaults.per_hour, 3600),
            anonymous: Limiter::new("anonymous", defaults.anonymous_per_hour, 3600),
            clock: DefaultClock::default(),
        }
    }

    /// Whether `role` (or an anonymous caller) has a limit of its own on
    /// `action`.
    pub fn has_own(&self, role: Option<Role>, action: Action) -> bool {
        self.table.contains_key(&(role, action))
    }

    /// Count one request of `role` on `action` against `key`, under the
    /// action's own limit. `Ok` when there is no such limit or quota is
    /// left.
    pub fn check(
        &self,
        role: Option<Role>,
        action: Action,
        key: &str,
    ) -> Result<Option<Reading>, Exceeded> {
        self.table
            .get(&(role, action))
            .map(|l| l.check(key, &self.clock))
            .transpose()
    }

    /// Count one request of a user under the default burst and sustained
    /// limits.
    pub fn check_default(&self, user: &str) -> Result<Vec<Reading>, Exceeded> {
        let mut readings = Vec::with_capacity(2);
        for limiter in [&self.burst, &self.sustained].into_iter().flatten() {
            match limiter.check(user, &self.clock) {
                Ok(r) => readings.push(r),
                Err(mut e) => {
                    e.others = readings;
                    return Err(e);
                }
            }
        }
        Ok(readings)
    }

    /// Count one anonymous request from `address`.
    pub fn check_anonymous(&self, address: &str) -> Result<Option<Reading>, Exceeded> {
        self.anonymous
            .as_ref()
            .map(|l| l.check(address, &self.clock))
            .transpose()
    }

    /// Forget keys whose quota has fully replenished.
    pub fn retain_recent(&self) {
        for limiter in self.table.values().chain(
            [&self.burst, &self.sustained, &self.anonymous]
                .into_iter()
                .flatten(),
        ) {
            limiter.retain_recent();
        }
    }
}
