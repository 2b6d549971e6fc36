//! Rate limits from the policy table, enforced with `governor` (GCRA).
//!
//! A limit of `q` per `w` seconds allows a burst of `q` and then one request
//! every `w / q` seconds. Limiters are per process; they are kept per
//! (role, action) and keyed by user, session or client address as the
//! table says.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use lectern_domain::identity::Role;
use lectern_domain::policy::{Action, Limit, POLICY};

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// A refused request: what to tell the client.
#[derive(Debug, Clone)]
pub struct Exceeded {
    /// The conflict policy.
    pub policy: String,
    /// Seconds until a request would be allowed.
    pub retry_after_secs: u64,
    /// The rate limit.
    pub limit: Limit,
}

/// Every limiter of the policy table.
pub struct RateLimits {
    limiters: HashMap<(Option<Role>, Action), (Limit, Keyed)>,
    clock: DefaultClock,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimits {
    /// One limiter per limited cell of the policy table.
    pub fn new() -> Self {
        let mut limiters = HashMap::new();
        for row in POLICY {
            let cells = std::iter::once((None, row.anonymous))
                .chain(Role::ALL.iter().map(|r| Some(*r)).zip(row.roles));
            for (role, rule) in cells {
                if let Some(limit) = rule.limit {
                    let quota = NonZeroU32::new(limit.quota.max(1)).unwrap_or(NonZeroU32::MIN);
                    let period = Duration::from_secs(u64::from(limit.window_secs)) / quota.get();
                    let Some(q) = Quota::with_period(period) else {
                        continue;
                    };
                    let limiter = RateLimiter::keyed(q.allow_burst(quota))
                        .with_middleware::<StateInformationMiddleware>();
                    limiters.insert((role, row.action), (limit, limiter));
                }
            }
        }
        Self {
            limiters,
            clock: DefaultClock::default(),
        }
    }

    /// Count one request of `role` on `action` against `key`. `Ok` when there
    /// is no limit or quota is left.
    pub fn check(&self, role: Option<Role>, action: Action, key: &str) -> Result<(), Exceeded> {
        let Some((limit, limiter)) = self.limiters.get(&(role, action)) else {
            return Ok(());
        };
        match limiter.check_key(&key.to_owned()) {
            Ok(_) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err(Exceeded {
                    policy: action.name().to_owned(),
                    retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                    limit: *limit,
                })
            }
        }
    }

    /// Forget keys whose quota has fully replenished.
    pub fn retain_recent(&self) {
        for (_, limiter) in self.limiters.values() {
            limiter.retain_recent();
        }
    }
}
