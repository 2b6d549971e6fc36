//! The default rate limits (issue 14 §4): a burst and a sustained rate per
//! user on every endpoint without a limit of its own, a rate per address for
//! requests without a token, and the `RateLimit-Policy` / `RateLimit`
//! headers on every response of a limited endpoint. The test settings turn
//! the defaults off; these tests turn the production ones back on.

use std::time::Instant;

use lectern_api::config::ThrottleConfig;
use lectern_tests::classroom::lesson_body;
use lectern_tests::{json_of, spawn_app_tuned, Tokens};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The `r` of `policy` in a `RateLimit` header.
fn remaining(header: &str, policy: &str) -> u32 {
    header
        .split(", ")
        .find_map(|item| item.strip_prefix(&format!("\"{policy}\";r=")))
        .and_then(|rest| rest.split(';').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no {policy} in {header}"))
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("ascii")
        .to_owned()
}

#[tokio::test]
async fn a_user_gets_100_a_minute_where_an_endpoint_has_no_limit_of_its_own() {
    let app = spawn_app_tuned(|h| h.throttle = ThrottleConfig::default()).await;
    let (tutor_id, tutor) = app.user("tutor").await;
    let (_, student) = app.user("student").await;

    // Reads of the profile, consistent with the logins (the read model may
    // be a moment behind them).
    let me = |t: &Tokens| {
        format!(
            "/api/v1/me?consistent_with={}",
            t.position.as_deref().expect("a login answers a position")
        )
    };

    // The burst: each answer says how much is left of both defaults. GCRA
    // gives one request back every 0.6 s, so the count may lag by those.
    let started = Instant::now();
    let mut sent = 0u32;
    let refused = loop {
        let r = app.get(&me(&tutor), &tutor.access_token).await;
        sent += 1;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            break r;
        }
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            header(&r, "ratelimit-policy"),
            "\"burst\";q=100;w=60, \"sustained\";q=1000;w=3600"
        );
        let given_back = (started.elapsed().as_millis() / 600) as u32;
        let left = remaining(&header(&r, "ratelimit"), "burst");
        assert!(
            // (With requests given back, more than 100 may pass.)
            (100u32.saturating_sub(sent)..=(100 + given_back).saturating_sub(sent)).contains(&left),
            "request {sent}: {left} left"
        );
        assert_eq!(
            remaining(&header(&r, "ratelimit"), "sustained"),
            1000 - sent
        );
        assert!(sent <= 100 + given_back, "never refused");
    };
    assert!(sent > 100, "refused after only {sent}");
    // The refusal names the policy that refused it.
    assert_eq!(header(&refused, "ratelimit-policy"), "\"burst\";q=100;w=60");
    let retry: u64 = header(&refused, "retry-after").parse().expect("secs");
    assert_eq!(retry, 1);
    assert_eq!(
        header(&refused, "ratelimit"),
        format!("\"burst\";r=0;t={retry}")
    );
    let body = json_of(refused).await;
    assert_eq!(body["code"], "rate_limited", "{body}");

    // An endpoint with its own limit keeps it, and is not counted in the
    // defaults: the tutor may still create a lesson (20 an hour).
    let r = app
        .post("/api/v1/lessons", Some(&tutor.access_token), lesson_body(5))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        header(&r, "ratelimit-policy"),
        "\"lesson.create\";q=20;w=3600"
    );
    assert_eq!(header(&r, "ratelimit"), "\"lesson.create\";r=19;t=180");
    let lesson = json_of(r).await;
    let stored = app
        .count(&format!(
            "SELECT count(*) FROM events WHERE aggregate_id = '{}' AND event_type = 'LessonScheduled'",
            lesson["id"].as_str().expect("an id")
        ))
        .await;
    assert_eq!(stored, 1);

    // Another user has a burst of their own.
    let r = app.get(&me(&student), &student.access_token).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(remaining(&header(&r, "ratelimit"), "burst"), 99);

    // The refusal is recorded, as every refusal after authentication is.
    let denials: Vec<Value> = sqlx::query_scalar(
        "SELECT payload FROM events WHERE event_type = 'AccessDenied' AND aggregate_id = $1",
    )
    .bind(format!("user:{tutor_id}"))
    .fetch_all(&app.db.pool)
    .await
    .expect("denials");
    assert_eq!(denials.len(), 1, "{denials:?}");
    assert_eq!(denials[0]["AccessDenied"]["reason"], "rate_limited");
    assert_eq!(denials[0]["AccessDenied"]["action"], "me.read");
}

#[tokio::test]
async fn a_request_without_a_token_gets_20_an_hour_per_address_but_auth_webhooks_and_probes() {
    let app = spawn_app_tuned(|h| {
        h.throttle = ThrottleConfig::default();
        h.trusted_proxies = "127.0.0.1".parse().expect("a valid list");
    })
    .await;
    let (_, student) = app.user("student").await;
    let from = |path: &str, address: &'static str| {
        app.client
            .get(app.url(path))
            .header("x-forwarded-for", address)
            .send()
    };
    for i in 0..20u32 {
        // The documents and protected endpoints alike; a made-up token on a
        // document (which reads none) counts too.
        let (path, status) = if i % 2 == 0 {
            ("/openapi.json", StatusCode::OK)
        } else {
            ("/api/v1/lessons", StatusCode::UNAUTHORIZED)
        };
        let r = if i == 4 {
            app.client
                .get(app.url(path))
                .header("x-forwarded-for", "203.0.113.7")
                .bearer_auth("made-up")
                .send()
                .await
                .expect("sent")
        } else {
            from(path, "203.0.113.7").await.expect("sent")
        };
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(header(&r, "ratelimit-policy"), "\"anonymous\";q=20;w=3600");
        assert_eq!(
            header(&r, "ratelimit"),
            format!("\"anonymous\";r={};t=180", 19 - i)
        );
    }
    let refused = from("/openapi.json", "203.0.113.7").await.expect("sent");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = header(&refused, "retry-after").parse().expect("secs");
    assert!((170..=180).contains(&retry), "{retry}");
    assert_eq!(
        header(&refused, "ratelimit"),
        format!("\"anonymous\";r=0;t={retry}")
    );
    assert_eq!(json_of(refused).await["code"], "rate_limited");

    // Another address has its own allowance.
    let r = from("/openapi.json", "203.0.113.8").await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "ratelimit"), "\"anonymous\";r=19;t=180");

    // From the refused address: the probes, the auth endpoints (with their
    // own limit), the webhook (signed) and callers with a token still pass.
    let r = from("/health/live", "203.0.113.7").await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("ratelimit").is_none());
    let r = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("x-forwarded-for", "203.0.113.7")
        .json(
            &json!({"email": "nobody@example.com", "password": "not the password",
                      "device_fingerprint": "t"}),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&r, "ratelimit-policy"), "\"auth.login\";q=30;w=60");
    let r = app
        .client
        .post(app.url("/api/v1/webhooks/stripe"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("stripe-signature", "t=1,v1=00")
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers().get("ratelimit").is_none());
    let r = app
        .client
        .get(app.url(&format!(
            "/api/v1/me?consistent_with={}",
            student.position.as_deref().expect("a login answers a position")
        )))
        .header("x-forwarded-for", "203.0.113.7")
        .bearer_auth(&student.access_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(remaining(&header(&r, "ratelimit"), "burst"), 99);

    // Anonymous refusals are counted, not written: a flood must not cost a
    // write each.
    let recorded = app
        .count(
            "SELECT count(*) FROM events WHERE event_type = 'AccessDenied' \
             AND payload->'AccessDenied'->>'reason' = 'rate_limited'",
        )
        .await;
    assert_eq!(recorded, 0);
}
