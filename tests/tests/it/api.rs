//! The HTTP surface: health, metrics, OpenAPI, problem documents, request
//! ids and security headers, through the real router.

use axum::routing::post;
use axum::Json;
use lectern_api::config::HttpConfig;
use lectern_api::extract::ApiJson;
use lectern_tests::{serve, spawn_app, TestDb};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

fn assert_security_headers(r: &reqwest::Response) {
    let h = r.headers();
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["content-security-policy"], "frame-ancestors 'none'");
    assert!(
        h.get("access-control-allow-origin").is_none(),
        "CORS is off by default"
    );
}

async fn problem(r: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(r.status(), status);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let request_id = r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(body["code"], code);
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string());
    assert_eq!(body["request_id"], request_id.as_str());
    body
}

#[tokio::test]
async fn liveness_answers_with_security_headers_and_a_request_id() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    assert_security_headers(&r);
    assert!(uuid::Uuid::parse_str(r.headers()["x-request-id"].to_str().expect("ascii")).is_ok());
    assert_eq!(r.json::<Value>().await.expect("json")["status"], "ok");
}

#[tokio::test]
async fn a_clients_request_id_is_echoed_and_a_hostile_one_replaced() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("send");
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "bad id\twith spaces")
        .send()
        .await
        .expect("send");
    let id = r.headers()["x-request-id"].to_str().expect("ascii");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}

#[tokio::test]
async fn readiness_checks_database_migrations_and_projections() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["migrations"]["ok"], true);

    // A failed projection makes the service not ready, and says which.
    sqlx::query("INSERT INTO projection_checkpoints (name, status, last_error) VALUES ('broken', 'failed', 'boom')")
        .execute(&app.db.pool)
        .await
        .expect("insert");
    let r = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .expect("send");
    let body = problem(r, StatusCode::SERVICE_UNAVAILABLE, "not_ready").await;
    assert_eq!(body["projections"]["ok"], false);
    assert!(body["projections"]["detail"]
        .as_str()
        .unwrap_or("")
        .contains("broken"));
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_problems() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/no/such/thing"))
        .send()
        .await
        .expect("send");
    assert_security_headers(&r);
    problem(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = app
        .client
        .delete(app.url("/health/live"))
        .send()
        .await
        .expect("send");
    assert!(r.headers()["allow"]
        .to_str()
        .expect("ascii")
        .contains("GET"));
    problem(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[derive(Deserialize)]
struct Echo {
    name: String,
    count: u32,
}

async fn echo(ApiJson(e): ApiJson<Echo>) -> Json<Value> {
    Json(serde_json::json!({ "name": e.name, "count": e.count }))
}

/// The real layer stack around a JSON route, so body errors go through the
/// same extractor and middleware as every API route.
async fn echo_app(max_body_bytes: usize) -> (std::net::SocketAddr, TestDb) {
    let db = TestDb::new().await;
    let http = HttpConfig {
        max_body_bytes,
        ..HttpConfig::for_tests()
    };
    let app = lectern_api::app::with_layers(axum::Router::new().route("/echo", post(echo)), &http);
    (serve(app).await, db)
}

#[tokio::test]
async fn bad_bodies_get_the_right_problem() {
    let (addr, _db) = echo_app(256).await;
    let url = format!("http://{addr}/echo");
    let c = reqwest::Client::new();
    let ok = c
        .post(&url)
        .json(&serde_json::json!({"name": "a", "count": 2}))
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.json::<Value>().await.expect("json")["count"], 2);

    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .expect("send");
    problem(r, StatusCode::BAD_REQUEST, "malformed_json").await;

    let r = c
        .post(&url)
        .json(&serde_json::json!({"name": "a", "count": -1}))
        .send()
        .await
        .expect("send");
    let body = problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["pointer"], "#/count");

    let r = c
        .post(&url)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("send");
    problem(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    let big = serde_json::json!({"name": "x".repeat(1000), "count": 1});
    let r = c.post(&url).json(&big).send().await.expect("send");
    problem(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[tokio::test]
async fn metrics_count_requests_by_matched_route_with_histogram_buckets() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.client
            .get(app.url("/health/live"))
            .send()
            .await
            .expect("send");
    }
    // Metrics are not on the public API port.
    let r = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = app
        .client
        .get(format!("http://{}/metrics", app.metrics_addr))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain"));
    let text = r.text().await.expect("text");
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("lectern_http_requests_total{")
                && l.contains("route=\"/health/live\"")
                && l.contains("status=\"200\"")
        })
        .expect("a counter for /health/live");
    let count: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    assert!(count >= 3.0, "{line}");
    assert!(
        text.contains("lectern_http_request_duration_seconds_bucket{"),
        "histograms, not summaries"
    );
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document_and_the_docs_are_served() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3."));
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    for route in ["/health/live", "/health/ready", "/openapi.json", "/docs"] {
        assert!(paths.contains(&route), "{route} missing from {paths:?}");
    }
    assert!(
        !paths.contains(&"/metrics"),
        "metrics are served on their own listener, not the API"
    );
    let r = app
        .client
        .get(app.url("/docs/"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.text().await.expect("text").contains("swagger"),
        "the vendored Swagger UI"
    );
}
