//! Bulk lesson changes over HTTP: each item alone, or all or nothing.

use lectern_tests::classroom::lesson_body;
use lectern_tests::{json_of, spawn_app};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

#[tokio::test]
async fn bulk_writes_are_atomic_when_asked() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let lessons = || app.count("SELECT count(*) FROM events WHERE aggregate_type = 'Lesson'");
    let bulk = |body: Value| app.post("/api/v1/bulk/lessons", Some(&tutor.access_token), body);

    let r = bulk(json!({"action": "create", "items": [lesson_body(5), lesson_body(6), lesson_body(7)], "atomic": true})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let done = json_of(r).await;
    assert_eq!(
        (
            done["total"].as_u64(),
            done["succeeded"].as_u64(),
            done["failed"].as_u64()
        ),
        (Some(3), Some(3), Some(0))
    );
    assert_eq!(lessons().await, 3);
    let ids: Vec<String> = done["results"]
        .as_array()
        .expect("a test value")
        .iter()
        .map(|r| r["id"].as_str().expect("a test value").to_owned())
        .collect();

    // One bad item: nothing written.
    let mut bad = lesson_body(5);
    bad["price"]["amount_minor"] = json!(-5);
    let r =
        bulk(json!({"action": "create", "items": [lesson_body(5), bad.clone()], "atomic": true}))
            .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = json_of(r).await;
    assert_eq!(body["errors"][0]["pointer"], "#/items/1");
    assert_eq!(body["results"][0]["status"], "not_written");
    assert_eq!(body["results"][1]["status"], "failed");
    assert_eq!(lessons().await, 3);
    // A domain refusal inside an atomic cancel: nothing written either.
    let r = bulk(json!({"action": "cancel", "items": [{"id": ids[0]}, {"id": Uuid::new_v4()}], "atomic": true})).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(lessons().await, 3);

    // Without atomic, each item stands alone.
    let r =
        bulk(json!({"action": "create", "items": [lesson_body(5), bad], "atomic": false})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = json_of(r).await;
    assert_eq!(
        (body["succeeded"].as_u64(), body["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        body["results"][1]["error"]["errors"][0]["pointer"],
        "#/items/1/price/amount_minor"
    );
    assert_eq!(lessons().await, 4);
    let r = bulk(json!({"action": "update", "items": [{"id": ids[1], "title": "Bulk renamed"}, {"id": ids[2], "capacity": 9}], "atomic": true})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'LessonUpdated'")
            .await,
        2
    );

    // Too many items.
    let items: Vec<Value> = (0..101).map(|_| lesson_body(5)).collect();
    let r = bulk(json!({"action": "create", "items": items, "atomic": false})).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(lessons().await, 6);
}
