//! A minimal stateful Stripe emulator for the tests, started in-process on
//! a loopback port: `POST /v1/payment_intents` (form-encoded, bearer key,
//! `Idempotency-Key` honoured as Stripe does), `GET
//! /v1/payment_intents/{id}`, `GET /v1/events?delivery_success=false`
//! (newest first, `created[gte]`, `limit`, `starting_after`), and, when a
//! test confirms a PaymentIntent, a `payment_intent.succeeded` event
//! delivered to Lectern's webhook endpoint, signed exactly as Stripe signs
//! (`t=…,v1=…`, HMAC-SHA256 of `"{t}.{body}"` with the endpoint secret), or
//! kept as undelivered.
//!
//! Chosen over localstripe (PyPI, GPL-3.0): it runs in the test process, so
//! CI needs nothing more, and it signs with the same code path the
//! signature fixtures check against Stripe's documented scheme.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// One request the emulator received.
#[derive(Debug, Clone)]
pub struct Call {
    /// `Authorization`.
    pub authorization: String,
    /// `Idempotency-Key`.
    pub idempotency_key: String,
    /// The form fields.
    pub form: HashMap<String, String>,
}

#[derive(Default)]
struct Books {
    calls: Vec<Call>,
    intents: HashMap<String, Value>,
    by_key: HashMap<String, String>,
    /// Events whose delivery failed, oldest first.
    undelivered: Vec<Value>,
}

type Shared = State<(Arc<Mutex<Books>>, String)>;

fn bad_key() -> (StatusCode, Json<Value>) {
    (
        StatusCode::UNAUTHORIZED,
        Json(
            json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}),
        ),
    )
}

fn authorized(headers: &HeaderMap, key: &str) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {key}"))
}

async fn retrieve_intent(
    State((books, key)): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers, &key) {
        return bad_key();
    }
    match books.lock().expect("the books").intents.get(&id) {
        Some(intent) => (StatusCode::OK, Json(intent.clone())),
        None => (
            StatusCode::NOT_FOUND,
            Json(
                json!({"error": {"type": "invalid_request_error", "code": "resource_missing",
                                  "message": format!("No such payment_intent: '{id}'")}}),
            ),
        ),
    }
}

async fn list_events(
    State((books, key)): Shared,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers, &key) {
        return bad_key();
    }
    let books = books.lock().expect("the books");
    // Only the filter Lectern uses is emulated.
    let undelivered_only = query.get("delivery_success").map(String::as_str) == Some("false");
    let since: i64 = query
        .get("created[gte]")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10);
    let newest_first: Vec<&Value> = books
        .undelivered
        .iter()
        .rev()
        .filter(|e| undelivered_only && e["created"].as_i64().unwrap_or(0) >= since)
        .collect();
    let start = query
        .get("starting_after")
        .and_then(|after| newest_first.iter().position(|e| e["id"] == after.as_str()))
        .map_or(0, |i| i + 1);
    let page: Vec<Value> = newest_first
        .iter()
        .skip(start)
        .take(limit)
        .map(|e| (*e).clone())
        .collect();
    let has_more = newest_first.len() > start + page.len();
    (
        StatusCode::OK,
        Json(json!({"object": "list", "data": page, "has_more": has_more})),
    )
}

/// The emulator.
pub struct FakeStripe {
    /// Where it listens.
    pub addr: SocketAddr,
    books: Arc<Mutex<Books>>,
}

/// The secret key the emulator accepts.
pub const SECRET_KEY: &str = "sk_test_lectern_emulator";

async fn create_intent(
    State((books, key)): State<(Arc<Mutex<Books>>, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let call = Call {
        authorization: header("authorization"),
        idempotency_key: header("idempotency-key"),
        form: form.clone(),
    };
    let mut books = books.lock().expect("the books");
    books.calls.push(call.clone());
    if !authorized(&headers, &key) {
        return bad_key();
    }
    if let Some(id) = books.by_key.get(&call.idempotency_key).cloned() {
        return (StatusCode::OK, Json(books.intents[&id].clone()));
    }
    let amount: i64 = form
        .get("amount")
        .and_then(|a| a.parse().ok())
        .unwrap_or(-1);
    if amount < 1 {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"type": "invalid_request_error", "message": "Invalid amount"}})),
        );
    }
    let n = books.intents.len() + 1;
    let id = format!("pi_emulated_{n}");
    let metadata: serde_json::Map<String, Value> = form
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((name.to_owned(), Value::String(v.clone())))
        })
        .collect();
    let intent = json!({
        "id": id, "object": "payment_intent", "amount": amount, "amount_received": 0,
        "currency": form.get("currency").cloned().unwrap_or_default(),
        "client_secret": format!("{id}_secret_{}", uuid::Uuid::new_v4().simple()),
        "status": "requires_payment_method", "metadata": metadata,
    });
    books.intents.insert(id.clone(), intent.clone());
    if !call.idempotency_key.is_empty() {
        books.by_key.insert(call.idempotency_key, id);
    }
    (StatusCode::OK, Json(intent))
}

impl FakeStripe {
    /// Start it.
    pub async fn start() -> Self {
        let books = Arc::new(Mutex::new(Books::default()));
        let app = Router::new()
            .route("/v1/payment_intents", post(create_intent))
            .route("/v1/payment_intents/{id}", get(retrieve_intent))
            .route("/v1/events", get(list_events))
            .with_state((Arc::clone(&books), SECRET_KEY.to_owned()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("an address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, books }
    }

    /// Its base URL, for `LECTERN_STRIPE_API_BASE`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests it received.
    pub fn calls(&self) -> Vec<Call> {
        self.books.lock().expect("the books").calls.clone()
    }

    /// The PaymentIntents it holds.
    pub fn intents(&self) -> usize {
        self.books.lock().expect("the books").intents.len()
    }

    /// Change PaymentIntent `id` as `change` says, with no event (a test's
    /// way to make Stripe disagree).
    pub fn alter(&self, id: &str, change: impl FnOnce(&mut Value)) {
        let mut books = self.books.lock().expect("the books");
        change(books.intents.get_mut(id).expect("a known PaymentIntent"));
    }

    /// The customer pays PaymentIntent `id` in full: it succeeds, and its
    /// `payment_intent.succeeded` event.
    fn pay(&self, id: &str) -> Value {
        let intent = {
            let mut books = self.books.lock().expect("the books");
            let intent = books.intents.get_mut(id).expect("a known PaymentIntent");
            intent["status"] = json!("succeeded");
            intent["amount_received"] = intent["amount"].clone();
            intent["latest_charge"] = json!(format!("ch_{id}"));
            intent.clone()
        };
        json!({
            "id": format!("evt_{}", uuid::Uuid::new_v4().simple()), "object": "event",
            "api_version": "2026-06-24.dahlia", "created": chrono::Utc::now().timestamp(),
            "livemode": false, "type": "payment_intent.succeeded", "data": {"object": intent},
        })
    }

    /// The customer pays PaymentIntent `id`, and every delivery of the
    /// event fails: it waits in `GET /v1/events?delivery_success=false`.
    /// The event.
    pub fn succeed_undelivered(&self, id: &str) -> Value {
        let event = self.pay(id);
        self.list_undelivered(event.clone());
        event
    }

    /// List `event`, as given, among those whose delivery failed (a test's
    /// way to list any event, such as one holding a NUL character).
    pub fn list_undelivered(&self, event: Value) {
        self.books
            .lock()
            .expect("the books")
            .undelivered
            .push(event);
    }

    /// The customer pays PaymentIntent `id`: it succeeds, and the event is
    /// delivered to `webhook_url`, signed with `secret`. The webhook's
    /// answer status.
    pub async fn succeed(&self, id: &str, webhook_url: &str, secret: &str) -> u16 {
        let event = self.pay(id);
        let created = event["created"].as_i64().expect("created");
        // Stripe's own rendering: pretty-printed, as localstripe does too.
        let body = serde_json::to_vec_pretty(&event).expect("json");
        let signature = lectern_api::routes::billing::signature::sign(&body, secret, created);
        reqwest::Client::new()
            .post(webhook_url)
            .header("content-type", "application/json; charset=utf-8")
            .header("stripe-signature", format!("t={created},v1={signature}"))
            .body(body)
            .send()
            .await
            .expect("the webhook is delivered")
            .status()
            .as_u16()
    }
}
