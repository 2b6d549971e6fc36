//! The Stripe API client: creating PaymentIntents. Every POST carries an
//! `Idempotency-Key`, so a retried start finds the PaymentIntent the first
//! one created. The base URL is configurable (`LECTERN_STRIPE_API_BASE`),
//! so tests run it against a local emulator.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use uuid::Uuid;

/// The Stripe secret key. It never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(redacted)")
    }
}

impl FromStr for SecretKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the Stripe secret key is empty".to_owned());
        }
        Ok(Self(s.to_owned()))
    }
}

/// A PaymentIntent as Stripe answers its creation.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentIntent {
    /// `pi_…`.
    pub id: String,
    /// What the client confirms the payment with.
    pub client_secret: String,
    /// Minor units.
    pub amount: i64,
    /// Lowercase ISO 4217.
    pub currency: String,
    /// Stripe's status (`requires_payment_method`, …).
    pub status: String,
}

/// Why a Stripe call failed.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe could not be reached, or answered something unreadable.
    #[error("Stripe could not be reached: {0}")]
    Transport(String),
    /// Stripe refused the call.
    #[error("Stripe answered {status}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// Stripe's `error.message`.
        message: String,
    },
}

/// A client of one Stripe account.
#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    key: SecretKey,
}

impl fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
}

impl StripeClient {
    /// A client of the API at `base`, authenticated with `key`.
    pub fn new(base: &str, key: SecretKey) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
        }
    }

    /// Create a PaymentIntent for `amount` of `currency` paying `invoice`
    /// of `payer`, whose metadata names both (the webhooks are linked back
    /// through it). `idempotency_key` makes a retry find the first one.
    pub async fn create_payment_intent(
        &self,
        amount: i64,
        currency: &str,
        invoice: Uuid,
        payer: Uuid,
        idempotency_key: &str,
    ) -> Result<PaymentIntent, StripeError> {
        let form = [
            ("amount", amount.to_string()),
            ("currency", currency.to_owned()),
            ("automatic_payment_methods[enabled]", "true".to_owned()),
            ("metadata[invoice_id]", invoice.to_string()),
            ("metadata[payer_id]", payer.to_string()),
        ];
        let response = self
            .http
            .post(format!("{}/v1/payment_intents", self.base))
            .bearer_auth(&self.key.0)
            .header("Idempotency-Key", idempotency_key)
            .form(&form)
            .send()
            .await
            .map_err(|e| StripeError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let message = response
                .json::<ErrorBody>()
                .await
                .map(|b| b.error.message)
                .unwrap_or_default();
            return Err(StripeError::Api {
                status: status.as_u16(),
                message,
            });
        }
        response
            .json()
            .await
            .map_err(|e| StripeError::Transport(e.without_url().to_string()))
    }
}
