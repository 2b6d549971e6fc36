//! The Stripe API client: creating PaymentIntents, and, for reconciliation,
//! reading one back and listing the events whose delivery failed. Every
//! POST carries an `Idempotency-Key`, so a retried start finds the
//! PaymentIntent the first one created. The base URL is configurable
//! (`LECTERN_STRIPE_API_BASE`), so tests run it against a local emulator.

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

/// A PaymentIntent as Stripe answers a retrieval: what reconciliation
/// compares.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentIntentState {
    /// `pi_…`.
    pub id: String,
    /// Stripe's status (`succeeded`, `processing`, …).
    pub status: String,
    /// Received so far, in minor units.
    #[serde(default)]
    pub amount_received: i64,
    /// Lowercase ISO 4217.
    pub currency: String,
    /// What Lectern set when it created it (`invoice_id`, `payer_id`).
    #[serde(default)]
    pub metadata: std::collections::HashMap<String, String>,
}

/// One page of `GET /v1/events`.
#[derive(Debug, Clone, Deserialize)]
pub struct EventPage {
    /// The events, newest first, each as a webhook would carry it.
    pub data: Vec<serde_json::Value>,
    /// More pages follow.
    #[serde(default)]
    pub has_more: bool,
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
            .await;
        Self::read(response).await
    }

    /// PaymentIntent `id` as Stripe holds it now.
    pub async fn payment_intent(&self, id: &str) -> Result<PaymentIntentState, StripeError> {
        let response = self
            .http
            .get(format!("{}/v1/payment_intents/{id}", self.base))
            .bearer_auth(&self.key.0)
            .send()
            .await;
        Self::read(response).await
    }

    /// Events created at or after `since` (Unix seconds) whose delivery to
    /// some endpoint has not succeeded, a page of up to 100 after event
    /// `starting_after`.
    pub async fn undelivered_events(
        &self,
        since: i64,
        starting_after: Option<&str>,
    ) -> Result<EventPage, StripeError> {
        let mut query = vec![
            ("delivery_success", "false".to_owned()),
            ("created[gte]", since.to_string()),
            ("limit", "100".to_owned()),
        ];
        if let Some(after) = starting_after {
            query.push(("starting_after", after.to_owned()));
        }
        let response = self
            .http
            .get(format!("{}/v1/events", self.base))
            .bearer_auth(&self.key.0)
            .query(&query)
            .send()
            .await;
        Self::read(response).await
    }

    /// The body of a successful answer, or why not.
    async fn read<T: serde::de::DeserializeOwned>(
        response: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<T, StripeError> {
        let response = response.map_err(|e| StripeError::Transport(e.without_url().to_string()))?;
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
