//! Stripe webhooks: deliveries signed exactly as Stripe signs them, kept
//! once however often (and however concurrently) they arrive, and refused,
//! recorded and never stored when the signature does not verify.

use std::sync::Arc;

use lectern_api::config::TEST_WEBHOOK_SECRET;
use lectern_api::routes::billing::signature::sign;
use lectern_domain::billing::invoice::{InvoiceCommand, Line};
use lectern_domain::classroom::values::Currency;
use lectern_tests::classroom::{create_lesson, enrol, lesson_body};
use lectern_tests::stripe::{FakeStripe, SECRET_KEY};
use lectern_tests::{json_of, spawn_app, spawn_app_tuned, TestApp, Tokens};
use serde_json::{json, Value};

const PATH: &str = "/api/v1/webhooks/stripe";

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

/// A verified `payment_intent.succeeded` delivery of event `id`, as the
/// webhook route hands it to the billing service.
fn succeeded(id: &str) -> lectern_domain::billing::webhook::Delivery {
    lectern_domain::billing::webhook::Delivery {
        id: id.to_owned(),
        event_type: "payment_intent.succeeded".to_owned(),
        created: now(),
        api_version: None,
        object_id: Some(format!("pi_{id}")),
        livemode: false,
        reconciled: false,
    }
}

/// Two processes receiving the same events at once, in opposite orders
/// (Stripe redelivering while the first deliveries commit): each process
/// keeps its deliveries in batches of its own, and every event is still kept
/// once, every delivery answered.
#[tokio::test]
async fn two_processes_receiving_the_same_events_in_opposite_orders_keep_each_once() {
    use lectern_commands::billing::BillingService;
    use lectern_domain::EventMetadata;

    let app = spawn_app().await;
    let processes = [
        BillingService::new(&app.db.pool),
        BillingService::new(&app.db.pool),
    ];
    let ids: Vec<String> = (0..300).map(|i| format!("evt_1Twice{i:03}")).collect();
    let mut tasks = Vec::new();
    for (p, billing) in processes.iter().enumerate() {
        let order: Vec<&String> = if p == 0 {
            ids.iter().collect()
        } else {
            ids.iter().rev().collect()
        };
        for id in order {
            let (billing, id) = (billing.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                let delivery = succeeded(&id);
                let payload = json!({"id": id, "type": "payment_intent.succeeded"}).to_string();
                let receipt = billing
                    .receive(delivery, payload, &EventMetadata::system(""))
                    .await
                    .expect("every delivery is answered");
                (id, receipt.duplicate)
            }));
        }
    }
    let mut first = std::collections::HashMap::new();
    for t in tasks {
        let (id, duplicate) = t.await.expect("a delivery");
        *first.entry(id).or_insert(0) += usize::from(!duplicate);
    }
    assert_eq!(first.len(), 300);
    assert!(
        first.values().all(|n| *n == 1),
        "each event has exactly one first delivery"
    );
    assert_eq!(inbox_rows(&app).await, 300);
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE aggregate_type = 'StripeEvent'")
            .await,
        300
    );
}

/// A delivery the store refuses (its payload holds a NUL character, which
/// the webhook route refuses before it comes this far) fails alone: the
/// deliveries that arrive with it, and share its batch, are kept and
/// answered, and nothing of it is stored.
#[tokio::test]
async fn a_delivery_the_store_refuses_fails_alone_in_its_batch() {
    use lectern_commands::billing::BillingService;
    use lectern_domain::EventMetadata;

    let app = spawn_app().await;
    let billing = BillingService::new(&app.db.pool);
    let mut tasks = Vec::new();
    for i in 0..101 {
        let billing = billing.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("evt_1Batch{i:03}");
            let delivery = succeeded(&id);
            let note = if i == 50 {
                "lesson\u{0}fee"
            } else {
                "lesson fee"
            };
            let payload = json!({"id": id, "type": "payment_intent.succeeded", "note": note});
            let answer = billing
                .receive(delivery, payload.to_string(), &EventMetadata::system(""))
                .await;
            (i, answer)
        }));
    }
    for t in tasks {
        let (i, answer) = t.await.expect("a delivery");
        match answer {
            Ok(receipt) => {
                assert_ne!(i, 50, "the NUL delivery is not kept");
                assert!(!receipt.duplicate && receipt.position.is_some(), "{i}");
            }
            Err(e) => assert_eq!(i, 50, "only the NUL delivery fails: {e}"),
        }
    }
    assert_eq!(inbox_rows(&app).await, 100);
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE aggregate_type = 'StripeEvent'")
            .await,
        100
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM stripe_inbox i JOIN events e
                 ON e.aggregate_type = 'StripeEvent' AND e.aggregate_id = i.event_id
              WHERE i.event_id <> 'evt_1Batch050'"
        )
        .await,
        100,
        "each kept delivery has its inbox row and its receipt event"
    );
}

#[tokio::test]
async fn bad_signatures_are_refused_recorded_and_nothing_is_stored() {
    let app = spawn_app().await;
    let body = event("evt_1Bad");
    let good = sign(&body, TEST_WEBHOOK_SECRET, now());
    let mut tampered_body = body.clone();
    let at = tampered_body.len() - 3;
    tampered_body[at] = b' ';
    // Well past the 300 s tolerance either way, however long the requests
    // take (the unit tests check the exact edge with a fixed clock).
    let cases: Vec<(&str, Vec<u8>, Option<String>, &str)> = vec![
        (
            "stale",
            body.clone(),
            Some(header(&body, TEST_WEBHOOK_SECRET, now() - 400)),
            "signature_stale",
        ),
        (
            "future",
            body.clone(),
            Some(header(&body, TEST_WEBHOOK_SECRET, now() + 400)),
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
    let app = spawn_app_tuned(|h| {
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
    // Signed and an event, but holding a NUL character, which `jsonb` (and
    // so the inbox) refuses: a clear 400 rather than a failure to store it.
    let mut nul: Value = serde_json::from_slice(&event("evt_1Nul")).expect("json");
    nul["data"]["object"]["description"] = json!("lesson\u{0}fee");
    let body = serde_json::to_vec(&nul).expect("json");
    assert!(body.windows(6).any(|w| w == br"\u0000"));
    let (status, problem) = deliver(
        &app,
        body.clone(),
        Some(header(&body, TEST_WEBHOOK_SECRET, now())),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["code"], "not_a_stripe_event");
    assert!(problem["detail"].as_str().unwrap_or("").contains("NUL"));
    assert_eq!(inbox_rows(&app).await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE aggregate_type = 'StripeEvent'")
            .await,
        0
    );

    // A server with no secret answers 503 and keeps nothing.
    let bare = spawn_app_tuned(|h| h.billing.stripe_webhook_secrets = Default::default()).await;
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

// ---- Invoices ------------------------------------------------------------

/// A priced lesson, its tutor, one enrolled student and the invoice the
/// enrolment opened, once the read model shows it.
struct Invoiced {
    tutor: Tokens,
    student_id: uuid::Uuid,
    student: Tokens,
    lesson: uuid::Uuid,
    id: String,
}

async fn invoiced(app: &TestApp) -> Invoiced {
    let (_, tutor) = app.user("tutor").await;
    let (student_id, student) = app.user("student").await;
    let (lesson, _) = create_lesson(app, &tutor, 5).await;
    enrol(app, &student, lesson).await;
    let id = invoices(app, &student, 1).await[0]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    Invoiced {
        tutor,
        student_id,
        student,
        lesson,
        id,
    }
}

/// The invoices `t` sees, once there are `n` (the projection follows the
/// log).
async fn invoices(app: &TestApp, t: &Tokens, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let page = json_of(app.get("/api/v1/invoices", &t.access_token).await).await;
        let rows = page["results"].as_array().cloned().unwrap_or_default();
        if rows.len() >= n || std::time::Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Invoice `id` as `t` reads it, once `ready` holds of it.
async fn invoice_when(
    app: &TestApp,
    t: &Tokens,
    id: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = app
            .get(&format!("/api/v1/invoices/{id}"), &t.access_token)
            .await;
        let body = json_of(r).await;
        if ready(&body) {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "invoice {id} never got there: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn payment_intent(id: &str, pi: &str, invoice: &str, received: i64, created: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "object": "event", "type": "payment_intent.succeeded", "created": created,
        "api_version": "2026-06-24.dahlia", "livemode": false,
        "data": {"object": {"id": pi, "object": "payment_intent", "amount": received,
                            "amount_received": received, "currency": "eur", "status": "succeeded",
                            "metadata": {"invoice_id": invoice}}}
    }))
    .expect("json")
}

fn charge_refunded(id: &str, pi: &str, refunded: i64, created: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "object": "event", "type": "charge.refunded", "created": created,
        "api_version": "2026-06-24.dahlia", "livemode": false,
        "data": {"object": {"id": format!("ch_{pi}"), "object": "charge", "payment_intent": pi,
                            "amount": 1500, "amount_captured": 1500, "amount_refunded": refunded,
                            "refunded": refunded == 1500, "currency": "eur", "metadata": {}}}
    }))
    .expect("json")
}

async fn signed(app: &TestApp, body: Vec<u8>) -> u16 {
    let signature = header(&body, TEST_WEBHOOK_SECRET, now());
    deliver(app, body, Some(signature)).await.0
}

#[tokio::test]
async fn enrolling_in_a_priced_lesson_opens_an_invoice_that_only_its_people_see_and_leaving_voids_it(
) {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let (student_id, student) = app.user("student").await;
    let (_, stranger) = app.user("student").await;
    let (_, admin) = app.user("admin").await;
    let (lesson, _) = create_lesson(&app, &tutor, 5).await;
    enrol(&app, &student, lesson).await;
    let mine = invoices(&app, &student, 1).await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    let invoice = &mine[0];
    assert_eq!(invoice["payer_id"], student_id.to_string());
    assert_eq!(invoice["status"], "open");
    assert_eq!(invoice["currency"], "eur");
    assert_eq!(invoice["amount_due"], 1500);
    assert_eq!(invoice["amount_remaining"], 1500);
    assert_eq!(invoice["display_status"], "open");
    let id = invoice["id"].as_str().expect("an id").to_owned();
    let detail = invoice_when(&app, &student, &id, |b| b["lines"].is_array()).await;
    assert_eq!(detail["lines"][0]["lesson_id"], lesson.to_string());
    assert_eq!(detail["lines"][0]["amount_minor"], 1500);
    // The tutor sees it, read only; another student does not; an admin does.
    assert_eq!(invoices(&app, &tutor, 1).await.len(), 1);
    assert_eq!(invoices(&app, &admin, 1).await.len(), 1);
    assert!(invoices(&app, &stranger, 0).await.is_empty());
    let r = app
        .get(&format!("/api/v1/invoices/{id}"), &stranger.access_token)
        .await;
    assert_eq!(r.status(), 404);
    // Leaving voids it.
    let r = app
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/lessons/{lesson}/enrollments/{student_id}"),
            Some(&student.access_token),
            None,
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    invoice_when(&app, &student, &id, |b| b["status"] == "void").await;
    // A free lesson opens none.
    let mut free = lesson_body(5);
    free["price"]["amount_minor"] = json!(0);
    let r = app
        .post("/api/v1/lessons", Some(&tutor.access_token), free)
        .await;
    assert_eq!(r.status(), 201);
    let free_lesson: uuid::Uuid = json_of(r).await["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("an id");
    enrol(&app, &stranger, free_lesson).await;
    // Reactions run in log order: once a later enrolment's invoice is
    // there, the free one's reaction has run.
    let (_, later) = app.user("student").await;
    enrol(&app, &later, lesson).await;
    assert_eq!(invoices(&app, &later, 1).await.len(), 1);
    assert!(invoices(&app, &stranger, 0).await.is_empty());
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE aggregate_type = 'Invoice' AND event_type = 'InvoiceCreated'")
            .await,
        2
    );
}

#[tokio::test]
async fn webhooks_pay_an_invoice_in_parts_then_refund_it() {
    let app = spawn_app().await;
    let Invoiced { student, id, .. } = invoiced(&app).await;
    let t = now() - 60;
    // A partial payment, then the rest through a second PaymentIntent.
    assert_eq!(
        signed(&app, payment_intent("evt_p1", "pi_a", &id, 500, t)).await,
        200
    );
    let partial = invoice_when(&app, &student, &id, |b| b["amount_paid"] == 500).await;
    assert_eq!(partial["display_status"], "partially_paid");
    assert_eq!(partial["amount_remaining"], 1000);
    assert_eq!(
        signed(&app, payment_intent("evt_p2", "pi_b", &id, 1000, t + 1)).await,
        200
    );
    let paid = invoice_when(&app, &student, &id, |b| b["status"] == "paid").await;
    assert_eq!(paid["amount_paid"], 1500);
    assert_eq!(paid["amount_remaining"], 0);
    // A refund on the second payment's charge, which names no invoice.
    assert_eq!(
        signed(&app, charge_refunded("evt_r1", "pi_b", 300, t + 2)).await,
        200
    );
    let refunded = invoice_when(&app, &student, &id, |b| b["amount_refunded"] == 300).await;
    assert_eq!(refunded["display_status"], "partially_refunded");
    assert_eq!(refunded["status"], "paid");
    // The log holds each fact once; the inbox rows are done.
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'Invoice' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&id)
    .fetch_all(&app.db.pool)
    .await
    .expect("events");
    assert_eq!(
        types,
        [
            "InvoiceCreated",
            "LineItemAdded",
            "InvoiceFinalized",
            "PaymentApplied",
            "PaymentApplied",
            "InvoicePaid",
            "RefundApplied"
        ]
    );
    assert_eq!(
        app.count("SELECT count(*) FROM stripe_inbox WHERE status = 'processed'")
            .await,
        3
    );
    let (invoiced, paid_total, refunded_total): (i64, i64, i64) = sqlx::query_as(
        "SELECT sum(invoiced)::bigint, sum(paid)::bigint, sum(refunded)::bigint FROM analytics.revenue_daily WHERE currency = 'eur'",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("revenue");
    assert_eq!((invoiced, paid_total, refunded_total), (1500, 1500, 300));
    // Time travel: each invoice and Stripe event state of the history equals
    // a fresh replay.
    let (checked, _) = lectern_tests::assert_history_replays(&app.db.pool).await;
    assert!(
        checked.contains("Invoice") && checked.contains("StripeEvent"),
        "{checked:?}"
    );
}

/// A delivery another process kept (one without an inbox worker of its
/// own, or whose worker is down) is applied by this process's inbox worker:
/// its claim by id only takes what this process kept, and its sweep finds
/// the rest. Meanwhile this process's own deliveries still apply.
#[tokio::test]
async fn a_delivery_another_process_kept_is_applied_by_the_sweep() {
    use lectern_commands::billing::BillingService;
    use lectern_domain::billing::webhook::Delivery;
    use lectern_domain::EventMetadata;

    let app = spawn_app().await;
    let Invoiced { student, id, .. } = invoiced(&app).await;
    let t = now() - 60;
    let other = BillingService::new(&app.db.pool);
    let body = payment_intent("evt_elsewhere", "pi_elsewhere", &id, 500, t);
    let receipt = other
        .receive(
            Delivery {
                id: "evt_elsewhere".to_owned(),
                event_type: "payment_intent.succeeded".to_owned(),
                created: t,
                api_version: Some("2026-06-24.dahlia".to_owned()),
                object_id: Some("pi_elsewhere".to_owned()),
                livemode: false,
                reconciled: false,
            },
            String::from_utf8(body).expect("utf-8"),
            &EventMetadata::system(""),
        )
        .await
        .expect("kept");
    assert!(!receipt.duplicate);
    assert_eq!(
        signed(
            &app,
            payment_intent("evt_here", "pi_here", &id, 1000, t + 1)
        )
        .await,
        200
    );
    let paid = invoice_when(&app, &student, &id, |b| b["status"] == "paid").await;
    assert_eq!(paid["amount_paid"], 1500);
    let statuses: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT event_id, status, attempts FROM stripe_inbox ORDER BY event_id")
            .fetch_all(&app.db.pool)
            .await
            .expect("inbox");
    assert_eq!(
        statuses,
        [
            ("evt_elsewhere".to_owned(), "processed".to_owned(), 1),
            ("evt_here".to_owned(), "processed".to_owned(), 1)
        ]
    );
    assert_eq!(
        invoice_events(&app, &id, "PaymentApplied").await,
        2,
        "each delivery applied once"
    );
}

#[tokio::test]
async fn a_refund_delivered_before_its_payment_waits_for_it_and_both_apply() {
    let app = spawn_app().await;
    let Invoiced { student, id, .. } = invoiced(&app).await;
    let t = now() - 60;
    // charge.refunded first: its PaymentIntent is not known yet.
    assert_eq!(
        signed(&app, charge_refunded("evt_early", "pi_late", 1500, t + 5)).await,
        200
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (status, error): (String, Option<String>) = sqlx::query_as(
            "SELECT status, last_error FROM stripe_inbox WHERE event_id = 'evt_early'",
        )
        .fetch_one(&app.db.pool)
        .await
        .expect("the row");
        if error.is_some() {
            assert_eq!(status, "pending", "it waits to be retried");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never attempted");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The payment comes; the refund's retry then applies too.
    assert_eq!(
        signed(&app, payment_intent("evt_pay", "pi_late", &id, 1500, t)).await,
        200
    );
    let done = invoice_when(&app, &student, &id, |b| b["amount_refunded"] == 1500).await;
    assert_eq!(done["status"], "paid");
    assert_eq!(done["amount_paid"], 1500);
    assert_eq!(done["display_status"], "refunded");
    // Delivered again, both change nothing.
    assert_eq!(
        signed(&app, charge_refunded("evt_early", "pi_late", 1500, t + 5)).await,
        200
    );
    assert_eq!(
        signed(&app, payment_intent("evt_pay", "pi_late", &id, 1500, t)).await,
        200
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM events WHERE aggregate_type = 'Invoice' AND aggregate_id = '{id}' AND event_type IN ('PaymentApplied', 'RefundApplied')"
        ))
        .await,
        2
    );
}

#[tokio::test]
async fn only_an_admin_voids_and_a_paid_invoice_is_not_voided() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let (_, student) = app.user("student").await;
    let (_, admin) = app.user("admin").await;
    let (lesson, _) = create_lesson(&app, &tutor, 5).await;
    enrol(&app, &student, lesson).await;
    let (_, other) = app.user("student").await;
    enrol(&app, &other, lesson).await;
    let first = invoices(&app, &student, 1).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let second = invoices(&app, &other, 1).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let void = |id: &str, t: &Tokens| {
        let (path, token) = (
            format!("/api/v1/invoices/{id}/void"),
            t.access_token.clone(),
        );
        let app = &app;
        async move {
            app.post(&path, Some(&token), json!({"reason": "duplicate"}))
                .await
        }
    };
    assert_eq!(void(&first, &student).await.status(), 403);
    assert_eq!(void(&first, &tutor).await.status(), 403);
    let r = void(&first, &admin).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(r).await["id"], first);
    invoice_when(&app, &student, &first, |b| b["status"] == "void").await;
    // Voiding again changes nothing.
    assert_eq!(void(&first, &admin).await.status(), 200);
    // Money that arrives for a void invoice is recorded; it stays void.
    assert_eq!(
        signed(&app, payment_intent("evt_v", "pi_v", &first, 1500, now())).await,
        200
    );
    let after = invoice_when(&app, &student, &first, |b| b["amount_paid"] == 1500).await;
    assert_eq!(after["status"], "void");
    // A paid invoice is refunded, never voided.
    assert_eq!(
        signed(&app, payment_intent("evt_w", "pi_w", &second, 1500, now())).await,
        200
    );
    invoice_when(&app, &other, &second, |b| b["status"] == "paid").await;
    let r = void(&second, &admin).await;
    assert_eq!(r.status(), 409);
    assert_eq!(json_of(r).await["code"], "invoice_paid");
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM events WHERE aggregate_id = '{second}' AND event_type = 'InvoiceVoided'"
        ))
        .await,
        0
    );
    let r = void(&uuid::Uuid::new_v4().to_string(), &admin).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn an_overdue_invoice_is_recorded_once() {
    let app = spawn_app().await;
    let (payer, _) = app.user("student").await;
    let id = uuid::Uuid::new_v4();
    let due = chrono::Utc::now() - chrono::Duration::minutes(1);
    let create = InvoiceCommand::Create {
        payer_id: payer,
        currency: Currency::parse("eur").expect("eur"),
        lines: vec![Line {
            lesson_id: uuid::Uuid::new_v4(),
            description: "Algebra".into(),
            amount_minor: 2000,
        }],
        due_at: due,
        finalize: true,
    };
    let meta = lectern_domain::EventMetadata::system("");
    app.state
        .billing
        .execute(id, create, &meta)
        .await
        .expect("created");
    // The sweep reads the read model: wait until it has the invoice.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app
        .count(&format!(
            "SELECT count(*) FROM invoices WHERE id = '{id}' AND status = 'open'"
        ))
        .await
        == 0
    {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Two sweeps at once and one after: one event.
    let (a, b) = tokio::join!(
        app.state.billing.check_overdue(),
        app.state.billing.check_overdue()
    );
    a.expect("a sweep");
    b.expect("a sweep");
    app.state.billing.check_overdue().await.expect("a sweep");
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM events WHERE aggregate_id = '{id}' AND event_type = 'InvoiceBecameOverdue'"
        ))
        .await,
        1
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app
        .count(&format!(
            "SELECT count(*) FROM invoices WHERE id = '{id}' AND overdue"
        ))
        .await
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the read model never showed it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_lesson_price_cannot_change_while_invoiced_but_other_fields_can() {
    let app = spawn_app().await;
    let Invoiced {
        tutor,
        student,
        lesson,
        id,
        ..
    } = invoiced(&app).await;
    let (_, admin) = app.user("admin").await;
    let patch = |body: Value| {
        let app = &app;
        let token = tutor.access_token.clone();
        async move {
            app.call(
                reqwest::Method::PATCH,
                &format!("/api/v1/lessons/{lesson}"),
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    let updates = || async {
        app.count(&format!(
            "SELECT count(*) FROM events WHERE aggregate_id = '{lesson}' AND event_type = 'LessonUpdated'"
        ))
        .await
    };
    let r = patch(json!({"price": {"amount_minor": 2000, "currency": "EUR"}})).await;
    assert_eq!(r.status(), 409);
    assert_eq!(json_of(r).await["code"], "invoiced");
    assert_eq!(updates().await, 0);
    let r = patch(json!({"title": "Geometry"})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(updates().await, 1);
    // Once the invoice is void, the price may change again.
    let r = app
        .post(
            &format!("/api/v1/invoices/{id}/void"),
            Some(&admin.access_token),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 200);
    invoice_when(&app, &student, &id, |b| b["status"] == "void").await;
    let r = patch(json!({"price": {"amount_minor": 2000, "currency": "EUR"}})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(updates().await, 2);
}

// ---- Payments through the Stripe API ------------------------------------

/// A Stripe emulator, and a server that calls it with its key and
/// reconciles against it every `reconcile_secs` (0: never by itself).
async fn with_stripe(reconcile_secs: u64) -> (FakeStripe, TestApp) {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_tuned(|h| {
        h.billing.stripe_api_base = stripe.base();
        h.billing.stripe_secret_key = Some(SECRET_KEY.parse().expect("a key"));
        h.billing.stripe_reconcile_secs = reconcile_secs;
    })
    .await;
    (stripe, app)
}

#[tokio::test]
async fn a_payment_started_through_the_stripe_api_is_paid_by_its_signed_webhook() {
    let (stripe, app) = with_stripe(300).await;
    let Invoiced {
        tutor,
        student_id,
        student,
        id,
        ..
    } = invoiced(&app).await;
    let (_, stranger) = app.user("student").await;
    let start = |t: &Tokens| {
        let (app, path, token) = (
            &app,
            format!("/api/v1/invoices/{id}/payments"),
            t.access_token.clone(),
        );
        async move { app.post(&path, Some(&token), json!({})).await }
    };
    // Only the payer starts it.
    assert_eq!(start(&stranger).await.status(), 403);
    assert_eq!(start(&tutor).await.status(), 403);
    assert!(stripe.calls().is_empty());
    let r = start(&student).await;
    assert_eq!(r.status(), 201);
    let started = json_of(r).await;
    assert_eq!(started["amount"], 1500);
    assert_eq!(started["currency"], "eur");
    assert_eq!(started["invoice_id"], id);
    let pi = started["payment_intent_id"]
        .as_str()
        .expect("a PaymentIntent")
        .to_owned();
    assert!(started["client_secret"]
        .as_str()
        .is_some_and(|s| s.starts_with(&pi)));
    // What Stripe was asked: the key, an idempotency key, the metadata
    // that links the webhooks back.
    let calls = stripe.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].authorization, format!("Bearer {SECRET_KEY}"));
    assert!(!calls[0].idempotency_key.is_empty());
    assert_eq!(calls[0].form["amount"], "1500");
    assert_eq!(calls[0].form["currency"], "eur");
    assert_eq!(calls[0].form["metadata[invoice_id]"], id);
    assert_eq!(calls[0].form["metadata[payer_id]"], student_id.to_string());
    // Started again before anything changed: the same PaymentIntent.
    let again = json_of(start(&student).await).await;
    assert_eq!(again["payment_intent_id"], pi);
    assert_eq!(stripe.calls()[1].idempotency_key, calls[0].idempotency_key);
    assert_eq!(stripe.intents(), 1);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM events WHERE aggregate_id = '{id}' AND event_type = 'PaymentStarted'"
        ))
        .await,
        1
    );
    // The client secret is the client's: it is in no event.
    let secret = started["client_secret"].as_str().expect("secret");
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM events WHERE payload::text LIKE '%{secret}%'"
        ))
        .await,
        0
    );
    // The customer pays; Stripe's signed webhook pays the invoice.
    let webhook = app.url(PATH);
    assert_eq!(
        stripe.succeed(&pi, &webhook, TEST_WEBHOOK_SECRET).await,
        200
    );
    let paid = invoice_when(&app, &student, &id, |b| b["status"] == "paid").await;
    assert_eq!(paid["amount_paid"], 1500);
    // Nothing is left to pay.
    let r = start(&student).await;
    assert_eq!(r.status(), 409);
    assert_eq!(json_of(r).await["code"], "invoice_not_payable");
    assert_eq!(stripe.calls().len(), 2);
}

#[tokio::test]
async fn without_a_stripe_key_payments_answer_503_and_a_void_invoice_409() {
    let app = spawn_app().await;
    let Invoiced { student, id, .. } = invoiced(&app).await;
    let (_, admin) = app.user("admin").await;
    let path = format!("/api/v1/invoices/{id}/payments");
    let r = app
        .post(&path, Some(&student.access_token), json!({}))
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(json_of(r).await["code"], "payments_not_configured");
    let r = app
        .post(
            &format!("/api/v1/invoices/{id}/void"),
            Some(&admin.access_token),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .post(&path, Some(&student.access_token), json!({}))
        .await;
    assert_eq!(r.status(), 409);
    assert_eq!(json_of(r).await["code"], "invoice_not_payable");
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM events WHERE aggregate_id = '{id}' AND event_type = 'PaymentStarted'"
        ))
        .await,
        0
    );
}

// ---- Reconciliation --------------------------------------------------------

/// The number of events of `event_type` on invoice `id`.
async fn invoice_events(app: &TestApp, id: &str, event_type: &str) -> i64 {
    app.count(&format!(
        "SELECT count(*) FROM events WHERE aggregate_id = '{id}' AND event_type = '{event_type}'"
    ))
    .await
}

/// Start paying invoice `id` as `student`: the PaymentIntent's id.
async fn start_payment(app: &TestApp, student: &Tokens, id: &str) -> String {
    let r = app
        .post(
            &format!("/api/v1/invoices/{id}/payments"),
            Some(&student.access_token),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 201);
    json_of(r).await["payment_intent_id"]
        .as_str()
        .expect("a PaymentIntent")
        .to_owned()
}

#[tokio::test]
async fn a_payment_whose_webhook_never_came_is_reconciled_by_the_scheduled_job() {
    let (stripe, app) = with_stripe(1).await;
    let Invoiced { student, id, .. } = invoiced(&app).await;
    let pi = start_payment(&app, &student, &id).await;
    // The customer pays, and every delivery of the event fails.
    let event = stripe.succeed_undelivered(&pi);
    let evt = event["id"].as_str().expect("an event id").to_owned();
    let paid = invoice_when(&app, &student, &id, |b| b["status"] == "paid").await;
    assert_eq!(paid["amount_paid"], 1500);
    assert_eq!(paid["amount_remaining"], 0);
    // Recorded as reconciled, once, never as a delivered payment.
    assert_eq!(invoice_events(&app, &id, "PaymentReconciled").await, 1);
    assert_eq!(invoice_events(&app, &id, "PaymentApplied").await, 0);
    assert_eq!(invoice_events(&app, &id, "InvoicePaid").await, 1);
    let reconciled: bool = sqlx::query_scalar(
        "SELECT reconciled FROM payments WHERE invoice_id = $1::uuid AND kind = 'payment'",
    )
    .bind(&id)
    .fetch_one(&app.db.pool)
    .await
    .expect("the payment row");
    assert!(reconciled);
    // The undelivered event was fetched and kept, marked as such.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (source, status) = loop {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT source, status FROM stripe_inbox WHERE event_id = $1")
                .bind(&evt)
                .fetch_optional(&app.db.pool)
                .await
                .expect("the inbox");
        match row {
            Some((source, status)) if status != "pending" => break (source, status),
            _ if std::time::Instant::now() > deadline => panic!("{evt} was never kept: {row:?}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    };
    assert_eq!(
        (source.as_str(), status.as_str()),
        ("reconciliation", "processed")
    );
    let received = received_events(&app, &evt).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["StripeEventReceived"]["reconciled"], true);
    // The delivery that finally arrives is a duplicate and changes nothing.
    let body = serde_json::to_vec(&event).expect("json");
    assert_eq!(signed(&app, body).await, 200);
    assert_eq!(received_events(&app, &evt).await.len(), 1);
    assert_eq!(invoice_events(&app, &id, "PaymentReconciled").await, 1);
    assert_eq!(invoice_events(&app, &id, "PaymentApplied").await, 0);
}

#[tokio::test]
async fn an_undelivered_event_that_cannot_be_stored_is_skipped_and_the_run_goes_on() {
    let (stripe, app) = with_stripe(1).await;
    let Invoiced { student, id, .. } = invoiced(&app).await;
    let pi = start_payment(&app, &student, &id).await;
    let good = stripe.succeed_undelivered(&pi)["id"]
        .as_str()
        .expect("an event id")
        .to_owned();
    // Listed before it (newest first): an event whose text holds a NUL
    // character, which PostgreSQL's jsonb refuses.
    let bad = format!("evt_nul_{}", uuid::Uuid::new_v4().simple());
    stripe.list_undelivered(json!({
        "id": bad, "object": "event", "api_version": "2026-06-24.dahlia",
        "created": chrono::Utc::now().timestamp(), "livemode": false,
        "type": "customer.updated",
        "data": {"object": {"id": "cus_nul", "object": "customer", "name": "a\u{0}b"}},
    }));
    // The run went on past it: the event after it was kept and applied,
    // and the payment asked about and reconciled.
    let paid = invoice_when(&app, &student, &id, |b| b["status"] == "paid").await;
    assert_eq!(paid["amount_paid"], 1500);
    assert_eq!(received_events(&app, &good).await.len(), 1);
    assert_eq!(invoice_events(&app, &id, "PaymentReconciled").await, 1);
    // Of the one that cannot be stored, nothing.
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM stripe_inbox WHERE event_id = '{bad}'"
        ))
        .await,
        0
    );
    assert!(received_events(&app, &bad).await.is_empty());
}

#[tokio::test]
async fn reconciliation_records_each_disagreement_once_and_changes_no_money() {
    // Reconciliation runs only when the test says.
    let (stripe, app) = with_stripe(0).await;
    let client = app.state.stripe.clone().expect("a Stripe client");
    let Invoiced { student, id, .. } = invoiced(&app).await;
    let pi = start_payment(&app, &student, &id).await;
    // A webhook says 7.00 was received; Stripe's API says 5.00.
    assert_eq!(
        signed(&app, payment_intent("evt_partial", &pi, &id, 700, now())).await,
        200
    );
    invoice_when(&app, &student, &id, |b| b["amount_paid"] == 700).await;
    stripe.alter(&pi, |intent| intent["amount_received"] = json!(500));
    let run = || lectern_api::routes::billing::reconcile::run(&app.state, &client);
    let report = run().await.expect("a run");
    assert_eq!(
        (report.asked, report.discrepancies, report.reconciled),
        (1, 1, 0)
    );
    let found: Vec<Value> = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_id = $1 AND event_type = 'ReconciliationDiscrepancyFound'",
    )
    .bind(&id)
    .fetch_all(&app.db.pool)
    .await
    .expect("events");
    assert_eq!(found.len(), 1);
    let d = &found[0]["ReconciliationDiscrepancyFound"];
    assert_eq!(
        (&d["payment_ref"], &d["field"], &d["ours"], &d["theirs"]),
        (
            &json!(pi),
            &json!("amount_received"),
            &json!("700"),
            &json!("500")
        )
    );
    // The same disagreement next run: nothing new.
    let report = run().await.expect("a run");
    assert_eq!((report.asked, report.discrepancies), (1, 0));
    assert_eq!(
        invoice_events(&app, &id, "ReconciliationDiscrepancyFound").await,
        1
    );
    // Metadata that names another invoice is another disagreement.
    stripe.alter(&pi, |intent| {
        intent["amount_received"] = json!(700);
        intent["metadata"]["invoice_id"] = json!("someone else's");
    });
    assert_eq!(run().await.expect("a run").discrepancies, 1);
    // The analysts' table shows both; the money is as the webhook said.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT field, ours, theirs FROM billing_discrepancies WHERE invoice_id = $1::uuid ORDER BY field",
        )
        .bind(&id)
        .fetch_all(&app.db.pool)
        .await
        .expect("rows");
        if rows.len() == 2 {
            assert_eq!(
                rows[0],
                ("amount_received".into(), "700".into(), "500".into())
            );
            assert_eq!(
                rows[1],
                (
                    "metadata.invoice_id".into(),
                    id.clone(),
                    "someone else's".into()
                )
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let invoice = invoice_when(&app, &student, &id, |_| true).await;
    assert_eq!(invoice["amount_paid"], 700);
    assert_eq!(invoice["status"], "open");
    assert_eq!(invoice_events(&app, &id, "PaymentReconciled").await, 0);

    // Stripe unreachable: the run fails and writes nothing.
    let before = app.count("SELECT count(*) FROM events").await;
    let down = lectern_api::routes::billing::stripe::StripeClient::new(
        "http://127.0.0.1:9",
        SECRET_KEY.parse().expect("a key"),
    );
    assert!(
        lectern_api::routes::billing::reconcile::run(&app.state, &down)
            .await
            .is_err()
    );
    assert_eq!(app.count("SELECT count(*) FROM events").await, before);
}

#[tokio::test]
async fn an_admin_marks_an_open_invoice_uncollectible_and_a_late_payment_still_pays_it() {
    let app = spawn_app().await;
    let (_, admin) = app.user("admin").await;
    let Invoiced {
        tutor, student, id, ..
    } = invoiced(&app).await;
    let mark = |t: &Tokens| {
        let (path, token) = (
            format!("/api/v1/invoices/{id}/uncollectible"),
            t.access_token.clone(),
        );
        let app = &app;
        async move {
            app.post(&path, Some(&token), json!({"reason": "gave up"}))
                .await
        }
    };
    assert_eq!(mark(&student).await.status(), 403);
    assert_eq!(mark(&tutor).await.status(), 403);
    let r = mark(&admin).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(r).await["id"], id);
    let shown = invoice_when(&app, &student, &id, |b| b["status"] == "uncollectible").await;
    assert_eq!(shown["amount_remaining"], 1500);
    // Again: nothing changes.
    assert_eq!(mark(&admin).await.status(), 200);
    assert_eq!(
        invoice_events(&app, &id, "InvoiceMarkedUncollectible").await,
        1
    );
    // No new payment starts on it (and nothing reached Stripe: none is configured).
    let r = app
        .post(
            &format!("/api/v1/invoices/{id}/payments"),
            Some(&student.access_token),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 409);
    assert_eq!(json_of(r).await["code"], "invoice_not_payable");
    // A payment that still arrives pays it, as at Stripe.
    assert_eq!(
        signed(
            &app,
            payment_intent("evt_late", "pi_late", &id, 1500, now())
        )
        .await,
        200
    );
    invoice_when(&app, &student, &id, |b| b["status"] == "paid").await;
    assert_eq!(invoice_events(&app, &id, "InvoicePaid").await, 1);
    // A paid invoice is not open: it cannot be marked.
    let r = mark(&admin).await;
    assert_eq!(r.status(), 409);
    assert_eq!(json_of(r).await["code"], "invoice_not_open");
    assert_eq!(
        invoice_events(&app, &id, "InvoiceMarkedUncollectible").await,
        1
    );
}

/// What of the card payment below must never leave the inbox.
const CARD_DETAILS: [&str; 6] = [
    "4242",
    "exp_month",
    "Xt5EWLLDS7FJjR1c",
    "card.holder",
    "Card Holder",
    "Main St",
];

#[tokio::test]
async fn billing_events_and_the_audit_log_carry_no_card_details() {
    let app = spawn_app().await;
    let Invoiced { student, id, .. } = invoiced(&app).await;
    // A delivery as Stripe renders a card payment: the charge's card
    // details and the customer's address are in the payload.
    let body = serde_json::to_vec(&json!({
        "id": "evt_card", "object": "event", "type": "payment_intent.succeeded", "created": now(),
        "api_version": "2026-06-24.dahlia", "livemode": false,
        "data": {"object": {"id": "pi_card", "object": "payment_intent", "amount": 1500,
            "amount_received": 1500, "currency": "eur", "status": "succeeded",
            "receipt_email": "card.holder@example.com",
            "metadata": {"invoice_id": id},
            "payment_method_details": {"type": "card", "card": {
                "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2031,
                "fingerprint": "Xt5EWLLDS7FJjR1c", "country": "US"}},
            "billing_details": {"name": "Card Holder", "address": {"line1": "1 Main St"}}}}
    }))
    .expect("json");
    assert_eq!(signed(&app, body).await, 200);
    invoice_when(&app, &student, &id, |b| b["status"] == "paid").await;
    // Neither the log nor the audit log holds any of it (the log names the
    // event and its PaymentIntent; not even brand and last 4 are needed).
    for needle in CARD_DETAILS {
        let in_events = app
            .count(&format!(
                "SELECT count(*) FROM events WHERE payload::text LIKE '%{needle}%' OR metadata::text LIKE '%{needle}%'"
            ))
            .await;
        assert_eq!(in_events, 0, "{needle} in the log");
    }
    // Every billing event is in the audit log.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let audited = app
            .count(
                "SELECT count(*) FROM audit_log a JOIN events e ON e.event_id = a.event_id
                  WHERE e.aggregate_type IN ('Invoice', 'StripeEvent')",
            )
            .await;
        let billing = app
            .count("SELECT count(*) FROM events WHERE aggregate_type IN ('Invoice', 'StripeEvent')")
            .await;
        if audited == billing {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{audited} of {billing} audited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for needle in CARD_DETAILS {
        let in_audit = app
            .count(&format!(
                "SELECT count(*) FROM audit_log WHERE audit_log::text LIKE '%{needle}%'"
            ))
            .await;
        assert_eq!(in_audit, 0, "{needle} in the audit log");
    }
    // The payload stays in the inbox, outside the log, for the worker.
    assert_eq!(
        app.count("SELECT count(*) FROM stripe_inbox WHERE payload::text LIKE '%4242%'")
            .await,
        1
    );
}

#[tokio::test]
async fn an_enrolment_invoice_is_due_the_configured_time_before_the_lesson_starts() {
    let app = spawn_app_tuned(|h| h.billing.invoice_due_before_start_secs = 86_400).await;
    let Invoiced {
        tutor,
        student,
        lesson,
        id,
        ..
    } = invoiced(&app).await;
    let starts_at = json_of(
        app.get(&format!("/api/v1/lessons/{lesson}"), &tutor.access_token)
            .await,
    )
    .await["starts_at"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .expect("a start");
    let invoice = invoice_when(&app, &student, &id, |_| true).await;
    let due = invoice["due_at"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .expect("a due date");
    assert_eq!(starts_at - due, chrono::Duration::days(1));
    // As the invoice's stream recorded it.
    let created: Value = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_id = $1 AND event_type = 'InvoiceCreated'",
    )
    .bind(&id)
    .fetch_one(&app.db.pool)
    .await
    .expect("the event");
    let recorded = created["InvoiceCreated"]["due_at"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .expect("a due date");
    // (The read model keeps microseconds; the event, nanoseconds.)
    assert_eq!((recorded - due).num_microseconds(), Some(0));
}

/// Every row of the billing projection's tables, as JSON text, in key order.
async fn billing_rows(conn: &mut sqlx::PgConnection) -> Vec<String> {
    let mut rows = Vec::new();
    for sql in [
        "SELECT row_to_json(x)::text FROM (SELECT * FROM invoices ORDER BY id) x",
        "SELECT row_to_json(x)::text FROM (SELECT * FROM payments ORDER BY invoice_id, kind, reference) x",
        "SELECT row_to_json(x)::text FROM (SELECT * FROM analytics.revenue_daily ORDER BY day, currency) x",
    ] {
        let more: Vec<String> = sqlx::query_scalar(sql)
            .fetch_all(&mut *conn)
            .await
            .expect("rows");
        rows.extend(more);
    }
    rows
}

/// The billing projection writes runs of payments, refunds and status
/// changes set-wise (`apply_all`): the rows must be exactly those of
/// applying each event alone. The log holds, for one invoice, two reports of
/// one PaymentIntent (cumulative), a second PaymentIntent that pays it, two
/// reports of one refunded charge; a second invoice voided, and a third in
/// another currency paid at once.
#[tokio::test]
async fn the_billing_projection_writes_a_batch_as_it_writes_each_event() {
    use lectern_projections::billing::BillingProjection;
    use lectern_projections::log::read_after;
    use lectern_projections::{Interest, Projection, Tables};
    use sqlx::Connection;

    let db = lectern_tests::TestDb::new().await;
    let state = lectern_tests::state_for(&db, lectern_api::config::HttpConfig::for_tests());
    let meta = lectern_domain::EventMetadata::system("test");
    let (a, b, c) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    let eur = Currency::parse("eur").expect("eur");
    let usd = Currency::parse("usd").expect("usd");
    for (id, currency) in [(a, &eur), (b, &eur), (c, &usd)] {
        let create = InvoiceCommand::Create {
            payer_id: uuid::Uuid::new_v4(),
            currency: currency.clone(),
            lines: vec![Line {
                lesson_id: uuid::Uuid::new_v4(),
                description: "Lesson".to_owned(),
                amount_minor: 1500,
            }],
            due_at: chrono::Utc::now() + chrono::Duration::days(1),
            finalize: true,
        };
        state
            .billing
            .execute(id, create, &meta)
            .await
            .expect("create");
    }
    let pay = |payment_ref: &str, amount: i64, currency: &Currency, created: i64| {
        InvoiceCommand::ApplyPayment {
            payment_ref: payment_ref.to_owned(),
            amount_received: amount,
            currency: currency.clone(),
            created,
            reconciled: false,
        }
    };
    let refund = |amount: i64, created: i64| InvoiceCommand::ApplyRefund {
        charge_ref: "ch_b".to_owned(),
        payment_ref: Some("pi_b".to_owned()),
        amount_refunded: amount,
        currency: eur.clone(),
        created,
    };
    let commands = [
        (a, pay("pi_a", 300, &eur, 10)),
        (a, pay("pi_a", 500, &eur, 11)),
        (
            b,
            InvoiceCommand::Void {
                reason: "reissued".to_owned(),
            },
        ),
        (a, pay("pi_b", 1000, &eur, 12)),
        (c, pay("pi_c", 1500, &usd, 13)),
        (a, refund(200, 14)),
        (a, refund(450, 15)),
    ];
    for (id, command) in commands {
        state
            .billing
            .execute(id, command, &meta)
            .await
            .expect("command");
    }

    // Readable once every transaction older than theirs has ended (other
    // tests' transactions in the cluster included).
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    lectern_tests::wait_until(
        "the log readable",
        std::time::Duration::from_secs(10),
        || async {
            let mut conn = db.pool.acquire().await.expect("conn");
            read_after(
                &mut conn,
                lectern_domain::Position::ZERO,
                10_000,
                Interest::ALL,
            )
            .await
            .expect("read")
            .scanned as i64
                == total
        },
    )
    .await;
    let mut conn = db.pool.acquire().await.expect("conn");
    let all = read_after(
        &mut conn,
        lectern_domain::Position::ZERO,
        10_000,
        Interest::ALL,
    )
    .await
    .expect("log");
    let invoices: Vec<_> = all
        .events
        .iter()
        .filter(|e| e.aggregate_type == "Invoice")
        .collect();
    // A read for the projection's aggregate type gets exactly its events
    // (projections::a_reader_of_some_types_… covers a log of several types).
    let only = read_after(
        &mut conn,
        lectern_domain::Position::ZERO,
        10_000,
        Interest::types(&["Invoice"]),
    )
    .await
    .expect("log");
    assert_eq!(
        only.events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        invoices.iter().map(|e| e.event_id).collect::<Vec<_>>()
    );
    assert_eq!((only.last, only.scanned), (all.last, all.events.len()));
    let types: Vec<&str> = invoices.iter().map(|e| e.event_type.as_str()).collect();
    for t in [
        "PaymentApplied",
        "InvoicePaid",
        "RefundApplied",
        "InvoiceVoided",
    ] {
        assert!(types.contains(&t), "the log holds {t}: {types:?}");
    }
    let projection = BillingProjection;
    let tables = Tables::live(projection.tables());
    let mut tx = conn.begin().await.expect("begin");
    for event in &invoices {
        projection
            .apply(&mut tx, &tables, event)
            .await
            .expect("apply");
    }
    let one_by_one = billing_rows(&mut tx).await;
    tx.rollback().await.expect("rollback");
    let mut tx = conn.begin().await.expect("begin");
    projection
        .apply_all(&mut tx, &tables, &invoices)
        .await
        .expect("apply_all");
    let set_wise = billing_rows(&mut tx).await;
    tx.rollback().await.expect("rollback");
    assert_eq!(set_wise, one_by_one);

    // And the rows are right, not merely alike.
    let row = |id: uuid::Uuid| {
        let prefix = format!("{{\"id\":\"{id}\"");
        let text = set_wise
            .iter()
            .find(|r| r.starts_with(&prefix))
            .expect("invoice row");
        serde_json::from_str::<Value>(text).expect("json")
    };
    let (ra, rb, rc) = (row(a), row(b), row(c));
    assert_eq!(
        (&ra["status"], &ra["amount_paid"], &ra["amount_refunded"]),
        (&json!("paid"), &json!(1500), &json!(450))
    );
    assert_eq!(rb["status"], "void");
    assert_eq!(
        (&rc["status"], &rc["amount_paid"]),
        (&json!("paid"), &json!(1500))
    );
    let revenue: Vec<Value> = set_wise
        .iter()
        .filter(|r| r.starts_with("{\"day\""))
        .map(|r| serde_json::from_str(r).expect("json"))
        .collect();
    let of = |currency: &str| {
        revenue
            .iter()
            .find(|r| r["currency"] == currency)
            .cloned()
            .expect("revenue row")
    };
    assert_eq!(
        (
            &of("eur")["invoiced"],
            &of("eur")["paid"],
            &of("eur")["refunded"]
        ),
        (&json!(3000), &json!(1500), &json!(450))
    );
    assert_eq!(
        (&of("usd")["paid"], &of("usd")["refunded"]),
        (&json!(1500), &json!(0))
    );
}
