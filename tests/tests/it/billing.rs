//! Stripe webhooks: deliveries signed exactly as Stripe signs them, kept
//! once however often (and however concurrently) they arrive, and refused,
//! recorded and never stored when the signature does not verify.

use std::sync::Arc;

use lectern_api::config::{HttpConfig, TEST_WEBHOOK_SECRET};
use lectern_api::routes::billing::signature::sign;
use lectern_tests::{spawn_app, spawn_app_on, state_for, TestApp, TestDb};
use serde_json::{json, Value};

const PATH: &str = "/api/v1/webhooks/stripe";

async fn app_with(tune: impl FnOnce(&mut HttpConfig)) -> TestApp {
    let db = TestDb::new().await;
    let mut http = HttpConfig::for_tests();
    tune(&mut http);
    let state = state_for(&db, http);
    spawn_app_on(db, state).await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A `payment_intent.succeeded` event as Stripe renders it (trimmed), with
/// a customer's email in it.
fn event(id: &str) -> Vec<u8> {
    serde_json::to_vec_pretty(&json!({
        "id": id, "object": "event", "api_version": "2026-06-24.dahlia",
        "created": now() - 5, "livemode": false, "type": "payment_intent.succeeded",
        "data": {"object": {"id": "pi_3Nx", "object": "payment_intent", "amount": 1500,
                            "amount_received": 1500, "currency": "eur",
                            "receipt_email": "alice@example.com",
                            "metadata": {"invoice_id": "00000000-0000-0000-0000-000000000001"}}}
    }))
    .expect("json")
}

fn header(body: &[u8], secret: &str, t: i64) -> String {
    format!("t={t},v1={}", sign(body, secret, t))
}

async fn deliver(app: &TestApp, body: Vec<u8>, signature: Option<String>) -> (u16, Value) {
    let mut request = app
        .client
        .post(app.url(PATH))
        .header("content-type", "application/json; charset=utf-8")
        .body(body);
    if let Some(s) = signature {
        request = request.header("stripe-signature", s);
    }
    let r = request.send().await.expect("sent");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn received_events(app: &TestApp, id: &str) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_type = 'StripeEvent' AND aggregate_id = $1",
    )
    .bind(id)
    .fetch_all(&app.db.pool)
    .await
    .expect("events")
}

async fn inbox_rows(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM stripe_inbox").await
}

#[tokio::test]
async fn a_signed_delivery_is_kept_once_and_a_redelivery_changes_nothing() {
    let app = spawn_app().await;
    let body = event("evt_1Once");
    let (status, answer) = deliver(
        &app,
        body.clone(),
        Some(header(&body, TEST_WEBHOOK_SECRET, now())),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"received": true, "event_id": "evt_1Once", "duplicate": false})
    );
    // The receipt is an event naming what Stripe sent, and nothing of the
    // customer's.
    let events = received_events(&app, "evt_1Once").await;
    assert_eq!(events.len(), 1);
    let received = &events[0]["StripeEventReceived"];
    assert_eq!(received["id"], "evt_1Once");
    assert_eq!(received["event_type"], "payment_intent.succeeded");
    assert_eq!(received["api_version"], "2026-06-24.dahlia");
    assert_eq!(received["object_id"], "pi_3Nx");
    assert_eq!(received["livemode"], false);
    assert!(received["created"].as_i64().is_some_and(|c| c > 0));
    assert!(!events[0].to_string().contains("alice@example.com"));
    // The payload waits in the inbox for the worker.
    let (status, payload): (String, Value) =
        sqlx::query_as("SELECT status, payload FROM stripe_inbox WHERE event_id = 'evt_1Once'")
            .fetch_one(&app.db.pool)
            .await
            .expect("the inbox row");
    assert_eq!(status, "pending");
    assert_eq!(payload["data"]["object"]["amount_received"], 1500);

    // Stripe delivers it again, signed anew a minute later.
    let (status, answer) = deliver(
        &app,
        body.clone(),
        Some(header(&body, TEST_WEBHOOK_SECRET, now() + 60)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["duplicate"], true);
    assert_eq!(received_events(&app, "evt_1Once").await.len(), 1);
    assert_eq!(inbox_rows(&app).await, 1);
}

#[tokio::test]
async fn fifty_concurrent_deliveries_of_one_event_have_one_effect() {
    let app = Arc::new(spawn_app().await);
    let body = event("evt_1Fifty");
    let signature = header(&body, TEST_WEBHOOK_SECRET, now());
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (app, body, signature) = (Arc::clone(&app), body.clone(), signature.clone());
            tokio::spawn(async move { deliver(&app, body, Some(signature)).await })
        })
        .collect();
    let mut first = 0;
    for t in tasks {
        let (status, answer) = t.await.expect("a delivery");
        assert_eq!(status, 200, "{answer}");
        if answer["duplicate"] == false {
            first += 1;
        }
    }
    assert_eq!(first, 1, "exactly one delivery is the first");
    assert_eq!(received_events(&app, "evt_1Fifty").await.len(), 1);
    assert_eq!(inbox_rows(&app).await, 1);
}

#[tokio::test]
async fn bad_signatures_are_refused_recorded_and_nothing_is_stored() {
    let app = spawn_app().await;
    let body = event("evt_1Bad");
    let good = sign(&body, TEST_WEBHOOK_SECRET, now());
    let mut tampered_body = body.clone();
    let at = tampered_body.len() - 3;
    tampered_body[at] = b' ';
    let cases: Vec<(&str, Vec<u8>, Option<String>, &str)> = vec![
        (
            "stale",
            body.clone(),
            Some(header(&body, TEST_WEBHOOK_SECRET, now() - 301)),
            "signature_stale",
        ),
        (
            "future",
            body.clone(),
            Some(header(&body, TEST_WEBHOOK_SECRET, now() + 301)),
            "signature_future",
        ),
        (
            "v0 only",
            body.clone(),
            Some(format!("t={},v0={good}", now())),
            "signature_no_v1",
        ),
        (
            "tampered body",
            tampered_body,
            Some(format!("t={},v1={good}", now())),
            "signature_mismatch",
        ),
        (
            "tampered header",
            body.clone(),
            Some(format!("t={},v1={good}", now() - 1)),
            "signature_mismatch",
        ),
        (
            "unknown secret",
            body.clone(),
            Some(header(&body, "whsec_someone_else", now())),
            "signature_mismatch",
        ),
        ("no header", body.clone(), None, "signature_missing"),
    ];
    for (name, body, signature, _) in &cases {
        let (status, problem) = deliver(&app, body.clone(), signature.clone()).await;
        assert_eq!(status, 400, "{name}: {problem}");
        assert_eq!(problem["code"], "bad_signature", "{name}");
        assert!(!problem.to_string().contains(TEST_WEBHOOK_SECRET));
    }
    // Each refusal is an event with its reason; nothing was kept.
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT payload->'AccessDenied'->>'reason' FROM events
          WHERE event_type = 'AccessDenied' AND payload->'AccessDenied'->>'action' = 'payment.webhook'
          ORDER BY global_position",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("refusals");
    let expected: Vec<&str> = cases.iter().map(|c| c.3).collect();
    assert_eq!(reasons, expected);
    assert_eq!(inbox_rows(&app).await, 0);
    assert!(received_events(&app, "evt_1Bad").await.is_empty());
}

#[tokio::test]
async fn during_a_secret_roll_both_secrets_verify() {
    let app = app_with(|h| {
        h.billing.stripe_webhook_secrets = "whsec_old,whsec_new".parse().expect("secrets");
    })
    .await;
    // Stripe signs with each active secret while a roll lasts.
    let body = event("evt_1Roll");
    let t = now();
    let both = format!(
        "t={t},v1={},v1={}",
        sign(&body, "whsec_old", t),
        sign(&body, "whsec_new", t)
    );
    assert_eq!(deliver(&app, body, Some(both)).await.0, 200);
    // An endpoint still signing with the old secret alone, and one already
    // on the new.
    let body = event("evt_1RollOld");
    assert_eq!(
        deliver(&app, body.clone(), Some(header(&body, "whsec_old", t)))
            .await
            .0,
        200
    );
    let body = event("evt_1RollNew");
    assert_eq!(
        deliver(&app, body.clone(), Some(header(&body, "whsec_new", t)))
            .await
            .0,
        200
    );
    assert_eq!(inbox_rows(&app).await, 3);
}

#[tokio::test]
async fn oversized_unconfigured_and_non_event_deliveries_are_refused_and_store_nothing() {
    let app = spawn_app().await;
    // Over 64 KiB, signed or not.
    let mut big = event("evt_1Big");
    big.truncate(big.len() - 1);
    big.extend(format!(", \"padding\": \"{}\"}}", "x".repeat(64 * 1024)).into_bytes());
    let signed = header(&big, TEST_WEBHOOK_SECRET, now());
    let (status, problem) = deliver(&app, big, Some(signed)).await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["code"], "payload_too_large");
    // Signed, but not a Stripe event.
    let body = br#"{"hello": "world"}"#.to_vec();
    let (status, problem) = deliver(
        &app,
        body.clone(),
        Some(header(&body, TEST_WEBHOOK_SECRET, now())),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(problem["code"], "not_a_stripe_event");
    assert_eq!(inbox_rows(&app).await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE aggregate_type = 'StripeEvent'")
            .await,
        0
    );

    // A server with no secret answers 503 and keeps nothing.
    let bare = app_with(|h| h.billing.stripe_webhook_secrets = Default::default()).await;
    let body = event("evt_1Bare");
    let (status, problem) = deliver(
        &bare,
        body.clone(),
        Some(header(&body, TEST_WEBHOOK_SECRET, now())),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(problem["code"], "webhooks_not_configured");
    assert_eq!(inbox_rows(&bare).await, 0);
}
