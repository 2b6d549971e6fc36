//! Billing (`/api/v1/webhooks/stripe`): Stripe's webhooks, verified as
//! Stripe signs them, kept in an inbox keyed by Stripe's event id and
//! recorded as `StripeEventReceived` events.

pub mod signature;
pub mod webhooks;

use axum::http::StatusCode;
use lectern_commands::billing::BillingError;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
use crate::problem::{Code, Problem};

/// The billing context's codes.
impl Code {
    /// The `Stripe-Signature` header does not verify the body.
    pub const BAD_SIGNATURE: Code = Code::new("bad_signature", StatusCode::BAD_REQUEST);
    /// A verified body that is not a Stripe event.
    pub const NOT_A_STRIPE_EVENT: Code = Code::new("not_a_stripe_event", StatusCode::BAD_REQUEST);
    /// No webhook signing secret is configured.
    pub const WEBHOOKS_NOT_CONFIGURED: Code =
        Code::new("webhooks_not_configured", StatusCode::SERVICE_UNAVAILABLE);

    /// Every billing code.
    pub const BILLING: &'static [Code] = &[
        Self::BAD_SIGNATURE,
        Self::NOT_A_STRIPE_EVENT,
        Self::WEBHOOKS_NOT_CONFIGURED,
    ];
}

impl From<BillingError> for Problem {
    fn from(e: BillingError) -> Self {
        match e {
            BillingError::Store(e) => e.into(),
        }
    }
}

/// The billing routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().merge(webhooks::router())
}
