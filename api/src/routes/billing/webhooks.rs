//! `POST /api/v1/webhooks/stripe`: Stripe's deliveries. The body is read as
//! bytes (never parsed before the signature is checked, which is over the
//! raw bytes), at most 64 KiB. A delivery that verifies is kept and
//! answered 200 at once; applying it is the inbox worker's job. A
//! redelivery answers 200 and changes nothing.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use lectern_domain::billing::webhook::Delivery;
use lectern_domain::policy::Action;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::signature;
use crate::app::AppState;
use crate::auth::Origin;
use crate::problem::{Code, Problem};

/// The largest webhook body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The webhook route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stripe))
}

/// A delivery kept.
#[derive(Serialize, ToSchema)]
pub struct WebhookReceived {
    /// Always true: the delivery is kept.
    received: bool,
    /// Stripe's event id.
    event_id: String,
    /// It had been received before; nothing changed.
    duplicate: bool,
}

/// Receive a Stripe webhook. The `Stripe-Signature` header must verify the
/// raw body with one of the configured secrets, signed within 300 s of now.
/// Answered 200 as soon as the delivery is kept; a duplicate answers 200 and
/// changes nothing. A bad signature is 400 and is recorded as a refusal.
#[utoipa::path(post, path = "/api/v1/webhooks/stripe", tag = "billing",
    request_body(content = Object, content_type = "application/json",
                 description = "A Stripe event, exactly as Stripe sent it (at most 64 KiB)"),
    params(("Stripe-Signature" = String, Header,
            description = "`t=<unix seconds>,v1=<hex HMAC-SHA256 of \"{t}.{body}\">[,v1=…]`")),
    responses((status = 200, body = WebhookReceived),
              (status = 400, description = "A bad signature, or not a Stripe event", body = Problem),
              (status = 413, body = Problem), (status = 429, body = Problem),
              (status = 503, description = "No webhook secret is configured", body = Problem)))]
async fn stripe(
    State(state): State<AppState>,
    origin: Origin,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<WebhookReceived>, Problem> {
    origin
        .authorize(&state, Action::PaymentWebhook, None)
        .await?;
    let billing = &state.http.billing;
    if billing.stripe_webhook_secrets.is_empty() {
        return Err(Problem::new(
            Code::WEBHOOKS_NOT_CONFIGURED,
            "Stripe webhooks are not configured on this server (LECTERN_STRIPE_WEBHOOK_SECRETS).",
        ));
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE))?;
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    if let Err(refusal) = signature::verify(
        header,
        &bytes,
        &billing.stripe_webhook_secrets,
        now,
        billing.stripe_webhook_tolerance_secs,
    ) {
        metrics::counter!("lectern_stripe_webhooks_total", "outcome" => "bad_signature")
            .increment(1);
        return Err(origin
            .refuse(
                &state,
                Action::PaymentWebhook,
                Code::BAD_SIGNATURE,
                refusal.as_str(),
                "No signature verifies this body: sign the raw body, unparsed, \
                 with the endpoint's secret, and send it within 300 seconds.",
            )
            .await);
    }
    let payload: Value = serde_json::from_slice(&bytes).map_err(|_| not_an_event())?;
    if !storable(&payload) {
        return Err(Problem::new(
            Code::NOT_A_STRIPE_EVENT,
            "The body holds a NUL character (\\u0000), which no Stripe event holds and which \
             cannot be stored.",
        ));
    }
    let delivery = delivery(&payload, false).ok_or_else(not_an_event)?;
    let event_id = delivery.id.clone();
    let receipt = state
        .billing
        .receive(
            delivery,
            String::from_utf8_lossy(&bytes).into_owned(),
            &origin.metadata(),
        )
        .await?;
    let outcome = if receipt.duplicate {
        "duplicate"
    } else {
        "received"
    };
    metrics::counter!("lectern_stripe_webhooks_total", "outcome" => outcome).increment(1);
    Ok(Json(WebhookReceived {
        received: true,
        event_id,
        duplicate: receipt.duplicate,
    }))
}

fn not_an_event() -> Problem {
    Problem::new(
        Code::NOT_A_STRIPE_EVENT,
        "The body is not a Stripe event: it needs an `id`, a `type` and a `created` time.",
    )
}

/// Whether `value` can be kept as `jsonb`: PostgreSQL refuses the NUL
/// character (`\u0000`) in a string or a key, and a delivery that holds one
/// would fail every time it is kept.
pub(super) fn storable(value: &Value) -> bool {
    match value {
        Value::String(s) => !s.contains('\0'),
        Value::Array(items) => items.iter().all(storable),
        Value::Object(fields) => fields.iter().all(|(k, v)| !k.contains('\0') && storable(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => true,
    }
}

/// What a Stripe event says about itself: `id`, `type`, `created`,
/// `api_version`, `livemode` and `data.object.id`; `reconciled` when the
/// reconciliation job fetched it instead of Stripe delivering it. `None`
/// when it lacks one of the first three. Whether it can be kept at all is
/// [`storable`]'s to say, asked first.
pub(super) fn delivery(payload: &Value, reconciled: bool) -> Option<Delivery> {
    let text = |v: &Value| {
        v.as_str()
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .map(str::to_owned)
    };
    Some(Delivery {
        id: text(&payload["id"])?,
        event_type: text(&payload["type"])?,
        created: payload["created"].as_i64()?,
        api_version: text(&payload["api_version"]),
        object_id: text(&payload["data"]["object"]["id"]),
        livemode: payload["livemode"].as_bool().unwrap_or(false),
        reconciled,
    })
}
