//! Chat over HTTP: sending, deliveries and acknowledgements, paging,
//! expiry, and who may read.

use std::time::Duration;

use lectern_tests::classroom::{ack, create_lesson, enrol, pending_seqs, position_of, send};
use lectern_tests::{json_of, spawn_app, TestApp, Tokens};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

/// A lesson with a tutor and two enrolled students, A and B; A has sent
/// "Hello" (seq 1) and the tutor "Welcome" (seq 2).
struct Chat {
    lesson: Uuid,
    tutor_id: Uuid,
    tutor: Tokens,
    a_id: Uuid,
    a: Tokens,
    b_id: Uuid,
    b: Tokens,
    /// The position after the tutor's message.
    position: String,
}

async fn chat(app: &TestApp) -> Chat {
    let (tutor_id, tutor) = app.user("tutor").await;
    let (a_id, a) = app.user("student").await;
    let (b_id, b) = app.user("student").await;
    let (lesson, _) = create_lesson(app, &tutor, 5).await;
    enrol(app, &a, lesson).await;
    enrol(app, &b, lesson).await;
    let r = send(app, lesson, &a, "m1", "Hello").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = send(app, lesson, &tutor, "t1", "Welcome").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let position = position_of(&json_of(r).await);
    Chat {
        lesson,
        tutor_id,
        tutor,
        a_id,
        a,
        b_id,
        b,
        position,
    }
}

#[tokio::test]
async fn a_message_gets_the_next_seq_and_a_repeat_of_its_client_id_is_the_same_message() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let (_, a) = app.user("student").await;
    let (lesson, _) = create_lesson(&app, &tutor, 5).await;
    enrol(&app, &a, lesson).await;
    let r = send(&app, lesson, &a, "m1", "Hello").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let first = json_of(r).await;
    assert_eq!(first["seq"], 1);
    let r = send(&app, lesson, &a, "m1", "Hello").await;
    assert_eq!(r.status(), StatusCode::OK);
    let again = json_of(r).await;
    assert_eq!(
        (again["id"].clone(), again["duplicate"].clone()),
        (first["id"].clone(), json!(true))
    );
    let second = json_of(send(&app, lesson, &tutor, "t1", "Welcome").await).await;
    assert_eq!(second["seq"], 2);
    assert_eq!(
        send(&app, lesson, &a, "m2", &"x".repeat(4001))
            .await
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'MessageSent'")
            .await,
        2
    );
}

#[tokio::test]
async fn everyone_but_the_sender_gets_a_delivery_in_the_order_sent() {
    let app = spawn_app().await;
    let c = chat(&app).await;
    // B missed both, in order; A missed only the tutor's.
    assert_eq!(pending_seqs(&app, &c.b, &c.position).await, [1, 2]);
    let pending_a = json_of(
        app.get(
            &format!(
                "/api/v1/me/deliveries/pending?consistent_with={}",
                c.position
            ),
            &c.a.access_token,
        )
        .await,
    )
    .await;
    assert_eq!(pending_a["results"][0]["text"], "Welcome");
    assert_eq!(
        pending_a["results"].as_array().expect("a test value").len(),
        1
    );
    assert_eq!(pending_seqs(&app, &c.tutor, &c.position).await, [1]);
}

#[tokio::test]
async fn acknowledgements_only_move_forward_and_each_that_moves_is_one_event() {
    let app = spawn_app().await;
    let c = chat(&app).await;
    let r = ack(&app, c.lesson, &c.b, 2, "read").await;
    assert_eq!(r.status(), StatusCode::OK);
    let read = json_of(r).await;
    assert_eq!(read["changed"], true);
    let r = ack(&app, c.lesson, &c.b, 1, "delivered").await;
    assert_eq!(json_of(r).await["changed"], false);
    assert_eq!(
        ack(&app, c.lesson, &c.b, 3, "read").await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'DeliveriesAcknowledged'")
            .await,
        1
    );
    assert!(pending_seqs(&app, &c.b, &position_of(&read))
        .await
        .is_empty());
    let statuses =
        lectern_projections::classroom::delivery_statuses(&app.db.pool, c.lesson, c.b_id)
            .await
            .expect("a test value");
    assert_eq!(statuses, [(1, "read".to_owned()), (2, "read".to_owned())]);
}

#[tokio::test]
async fn a_channel_pages_by_cursor_in_seq_order() {
    let app = spawn_app().await;
    let c = chat(&app).await;
    let page = json_of(
        app.get(
            &format!(
                "/api/v1/lessons/{}/messages?limit=1&consistent_with={}",
                c.lesson, c.position
            ),
            &c.a.access_token,
        )
        .await,
    )
    .await;
    assert_eq!(
        (
            page["results"][0]["seq"].as_i64(),
            page["has_more"].as_bool()
        ),
        (Some(1), Some(true))
    );
    let cursor = page["next_cursor"].as_str().expect("a test value");
    let page = json_of(
        app.get(
            &format!(
                "/api/v1/lessons/{}/messages?limit=1&cursor={cursor}",
                c.lesson
            ),
            &c.a.access_token,
        )
        .await,
    )
    .await;
    assert_eq!(
        (
            page["results"][0]["seq"].as_i64(),
            page["has_more"].as_bool()
        ),
        (Some(2), Some(false))
    );
}

#[tokio::test]
async fn unacknowledged_deliveries_expire_once_each_and_the_audit_log_shows_them() {
    let app = spawn_app().await;
    let c = chat(&app).await;
    let r = ack(&app, c.lesson, &c.b, 2, "read").await;
    let read = position_of(&json_of(r).await);
    // The projection must have the ack before the sweep reads it.
    assert!(pending_seqs(&app, &c.b, &read).await.is_empty());
    // With a zero TTL everything unacknowledged expires, one event each:
    // A's delivery of 2 and the tutor's of 1 (B read both).
    let expired = lectern_api::expiry::sweep(&app.db.pool, &app.state.classroom, Duration::ZERO)
        .await
        .expect("a test value");
    assert_eq!(expired, 2);
    assert_eq!(
        lectern_api::expiry::sweep(&app.db.pool, &app.state.classroom, Duration::ZERO)
            .await
            .expect("a test value"),
        0
    );
    let stored: Vec<(String, i64)> = sqlx::query_as(
        "SELECT payload->'DeliveryExpired'->>'recipient_id', (payload->'DeliveryExpired'->>'seq')::bigint FROM events
          WHERE event_type = 'DeliveryExpired' ORDER BY 1, 2",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("a test value");
    let mut expected = vec![(c.a_id.to_string(), 2), (c.tutor_id.to_string(), 1)];
    expected.sort();
    assert_eq!(stored, expected);
    let position: String = sqlx::query_scalar(
        "SELECT transaction_id::text || '.' || global_position FROM events ORDER BY global_position DESC LIMIT 1",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("a test value");
    let (_, auditor) = app.user("auditor").await;
    let audit = json_of(
        app.get(
            &format!("/api/v1/audit/events?event_type=DeliveryExpired&consistent_with={position}"),
            &auditor.access_token,
        )
        .await,
    )
    .await;
    assert_eq!(
        audit["results"].as_array().expect("a test value").len(),
        2,
        "{audit}"
    );
}

#[tokio::test]
async fn readers_of_every_lesson_read_this_one_and_an_unknown_lesson_is_404_writing_nothing() {
    let app = spawn_app().await;
    let c = chat(&app).await;
    let (_, auditor) = app.user("auditor").await;
    let events_before = app
        .count(lectern_tests::classroom::EVENTS_BY_REQUESTS)
        .await;
    let r = app
        .get(
            &format!(
                "/api/v1/lessons/{}/messages?consistent_with={}",
                c.lesson, c.position
            ),
            &auditor.access_token,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        json_of(r).await["results"]
            .as_array()
            .expect("a page")
            .len(),
        2
    );
    let unknown = Uuid::new_v4();
    for path in [
        format!("/api/v1/lessons/{unknown}/messages"),
        format!("/api/v1/boards/{unknown}/ops"),
    ] {
        let r = app.get(&path, &auditor.access_token).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(json_of(r).await["code"], "lesson_not_found", "{path}");
    }
    assert_eq!(
        app.count(lectern_tests::classroom::EVENTS_BY_REQUESTS)
            .await,
        events_before
    );
}
