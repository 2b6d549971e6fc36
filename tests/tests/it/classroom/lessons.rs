//! Lessons over HTTP: scheduling, reading, changing, the lifecycle, the
//! list, enrolment under concurrency, read-your-writes and idempotency.

use std::time::Duration;

use lectern_api::config::WorkerConfig;
use lectern_api::workers::Workers;
use lectern_domain::identity::{DisplayName, Email, Password, Role};
use lectern_domain::EventMetadata;
use lectern_tests::classroom::{action, create_lesson, lesson_body, position_of};
use lectern_tests::{json_of, spawn_app, state_for, TestApp, TestDb, Tokens, PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

/// A student account made through the service (no HTTP rate limits).
async fn student(app: &TestApp) -> Uuid {
    let email = format!("s-{}@example.com", Uuid::new_v4().simple());
    let c = app
        .state
        .identity
        .register(
            &Email::parse(&email).expect("a test value"),
            &Password::parse(PASSWORD).expect("a test value"),
            &DisplayName::parse("Student").expect("a test value"),
            Role::Student,
            &EventMetadata::system("test"),
        )
        .await
        .expect("registered");
    c.aggregate_id.parse().expect("a test value")
}

#[tokio::test]
async fn a_new_lesson_with_bad_fields_names_each_and_writes_nothing() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let r = app
        .post(
            "/api/v1/lessons",
            Some(&tutor.access_token),
            json!({"title": "", "starts_at": "2001-01-01T00:00:00Z", "duration_minutes": 5, "capacity": 501,
                   "price": {"amount_minor": -1, "currency": "EURO"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = json_of(r).await;
    let pointers: Vec<&str> = body["errors"]
        .as_array()
        .expect("a test value")
        .iter()
        .map(|e| e["pointer"].as_str().expect("a test value"))
        .collect();
    assert_eq!(
        pointers,
        [
            "#/title",
            "#/starts_at",
            "#/duration_minutes",
            "#/capacity",
            "#/price/amount_minor",
            "#/price/currency"
        ]
    );
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE aggregate_type = 'Lesson'")
            .await,
        0
    );
}

#[tokio::test]
async fn students_may_not_schedule_lessons() {
    let app = spawn_app().await;
    let (_, stud) = app.user("student").await;
    let r = app
        .post("/api/v1/lessons", Some(&stud.access_token), lesson_body(5))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE aggregate_type = 'Lesson'")
            .await,
        0
    );
}

#[tokio::test]
async fn a_scheduled_lesson_reads_back_with_its_seats_timing_and_price() {
    let app = spawn_app().await;
    let (tutor_id, tutor) = app.user("tutor").await;
    let (_, stud) = app.user("student").await;
    let (id, position) = create_lesson(&app, &tutor, 5).await;
    let r = app
        .get(
            &format!("/api/v1/lessons/{id}?consistent_with={position}"),
            &stud.access_token,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let lesson = json_of(r).await;
    assert_eq!(lesson["tutor_id"], json!(tutor_id));
    assert_eq!(lesson["seats_left"], 5);
    assert_eq!(lesson["enrolled_count"], 0);
    assert_eq!(lesson["timing"], "upcoming");
    // Sent as "EUR"; kept in lowercase, as Stripe writes it.
    assert_eq!(
        lesson["price"],
        json!({"amount_minor": 1500, "currency": "eur"})
    );
}

#[tokio::test]
async fn only_the_lessons_tutor_changes_it_and_a_refusal_is_recorded() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let (_, other_tutor) = app.user("tutor").await;
    let (id, _) = create_lesson(&app, &tutor, 5).await;
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/lessons/{id}"),
            Some(&other_tutor.access_token),
            Some(json!({"title": "Mine now"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(json_of(r).await["code"], "not_owner");
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'AccessDenied' AND payload->'AccessDenied'->>'reason' = 'not_owner'").await,
        1
    );
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/lessons/{id}"),
            Some(&tutor.access_token),
            Some(json!({"title": "Geometry", "capacity": 3})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let position = position_of(&json_of(r).await);
    let lesson = json_of(
        app.get(
            &format!("/api/v1/lessons/{id}?consistent_with={position}"),
            &tutor.access_token,
        )
        .await,
    )
    .await;
    assert_eq!(
        (lesson["title"].as_str(), lesson["capacity"].as_i64()),
        (Some("Geometry"), Some(3))
    );
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'Lesson' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(id.to_string())
    .fetch_all(&app.db.pool)
    .await
    .expect("a test value");
    assert_eq!(types, ["LessonScheduled", "LessonUpdated"]);
}

#[tokio::test]
async fn a_lesson_moves_through_its_lifecycle_and_refuses_wrong_transitions() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let (id, _) = create_lesson(&app, &tutor, 5).await;
    let r = action(&app, &tutor, id, "end").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(r).await["code"], "invalid_transition");
    assert_eq!(
        action(&app, &tutor, id, "start").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        action(&app, &tutor, id, "cancel").await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        action(&app, &tutor, id, "end").await.status(),
        StatusCode::OK
    );
    let (cancelled, _) = create_lesson(&app, &tutor, 5).await;
    assert_eq!(
        action(&app, &tutor, cancelled, "cancel").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        action(&app, &tutor, cancelled, "start").await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'Lesson' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(id.to_string())
    .fetch_all(&app.db.pool)
    .await
    .expect("a test value");
    assert_eq!(types, ["LessonScheduled", "LessonStarted", "LessonEnded"]);
}

#[tokio::test]
async fn lessons_list_by_status_by_cursor_and_by_the_callers_own() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let (_, other_tutor) = app.user("tutor").await;
    let (_, stud) = app.user("student").await;
    let (id, _) = create_lesson(&app, &tutor, 5).await;
    assert_eq!(
        action(&app, &tutor, id, "start").await.status(),
        StatusCode::OK
    );
    let ended = action(&app, &tutor, id, "end").await;
    let position = position_of(&json_of(ended).await);
    let (_, latest) = create_lesson(&app, &tutor, 5).await;

    let page = json_of(
        app.get(
            &format!("/api/v1/lessons?status=ended&consistent_with={position}"),
            &stud.access_token,
        )
        .await,
    )
    .await;
    assert_eq!(page["results"].as_array().expect("a test value").len(), 1);
    assert_eq!(page["results"][0]["timing"], "past");
    let first = json_of(
        app.get(
            &format!("/api/v1/lessons?limit=1&consistent_with={latest}"),
            &stud.access_token,
        )
        .await,
    )
    .await;
    assert_eq!(first["has_more"], true);
    let cursor = first["next_cursor"].as_str().expect("a test value");
    let second = json_of(
        app.get(
            &format!("/api/v1/lessons?limit=1&cursor={cursor}"),
            &stud.access_token,
        )
        .await,
    )
    .await;
    assert_eq!(second["has_more"], false);
    assert_ne!(first["results"][0]["id"], second["results"][0]["id"]);
    let r = app
        .get("/api/v1/lessons?cursor=not-a-cursor!!", &stud.access_token)
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(r).await["code"], "invalid_cursor");
    let mine = json_of(
        app.get("/api/v1/lessons?mine=true", &other_tutor.access_token)
            .await,
    )
    .await;
    assert_eq!(mine["results"].as_array().expect("a test value").len(), 0);
}

#[tokio::test]
async fn a_currency_in_any_case_is_accepted_and_stored_in_lowercase() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    for (sent, code) in [("usd", "usd"), ("Gbp", "gbp")] {
        let mut body = lesson_body(5);
        body["price"]["currency"] = json!(sent);
        let r = app
            .post("/api/v1/lessons", Some(&tutor.access_token), body)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{sent}");
        let created = json_of(r).await;
        let id = created["id"].as_str().expect("an id");
        let stored: String = sqlx::query_scalar(
            "SELECT payload->'LessonScheduled'->'details'->'price'->>'currency' FROM events
              WHERE aggregate_id = $1 AND event_type = 'LessonScheduled'",
        )
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .expect("the event");
        assert_eq!(stored, code);
        let lesson = json_of(
            app.get(
                &format!(
                    "/api/v1/lessons/{id}?consistent_with={}",
                    created["position"].as_str().expect("a position")
                ),
                &tutor.access_token,
            )
            .await,
        )
        .await;
        assert_eq!(lesson["price"]["currency"], code);
    }
    let mut body = lesson_body(5);
    body["price"]["currency"] = json!("usdx");
    let r = app
        .post("/api/v1/lessons", Some(&tutor.access_token), body)
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(r).await["errors"][0]["pointer"], "#/price/currency");
}

#[tokio::test]
async fn fifty_concurrent_enrolments_fill_ten_seats_exactly() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let (lesson, _) = create_lesson(&app, &tutor, 10).await;
    let mut students = Vec::new();
    for _ in 0..50 {
        students.push(student(&app).await);
    }
    let url = format!("/api/v1/lessons/{lesson}/enrollments");
    let calls = students
        .iter()
        .map(|s| app.post(&url, Some(&tutor.access_token), json!({"student_id": s})));
    let statuses: Vec<u16> = futures::future::join_all(calls)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        40,
        "{statuses:?}"
    );
    let stored = app.count(&format!("SELECT count(*) FROM events WHERE aggregate_id = '{lesson}' AND event_type = 'StudentEnrolled'"),
    )
    .await;
    assert_eq!(stored, 10);
    let position: String = sqlx::query_scalar(
        "SELECT transaction_id::text || '.' || global_position FROM events ORDER BY global_position DESC LIMIT 1",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("a test value");
    let l = json_of(
        app.get(
            &format!("/api/v1/lessons/{lesson}?consistent_with={position}"),
            &tutor.access_token,
        )
        .await,
    )
    .await;
    assert_eq!(
        (l["enrolled_count"].as_i64(), l["seats_left"].as_i64()),
        (Some(10), Some(0))
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM enrollments WHERE lesson_id = '{lesson}'"
        ))
        .await,
        10
    );
}

#[tokio::test]
async fn create_then_list_sees_the_lesson_while_projections_are_behind() {
    let db = TestDb::new().await;
    let state = state_for(&db, lectern_api::config::HttpConfig::for_tests());
    // No projection runners yet: the read models stand still.
    let app = lectern_tests::spawn_app_with(
        db,
        state,
        &WorkerConfig {
            run_projections: false,
            ..WorkerConfig::default()
        },
    )
    .await;
    let (_, tutor) = app.user("tutor").await;
    let (id, position) = create_lesson(&app, &tutor, 5).await;
    assert_eq!(
        app.count("SELECT count(*) FROM lessons").await,
        0,
        "the projection is behind"
    );
    let state = app.state.clone();
    let cancel = app.db.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let runners = Workers::start_projections(&state, &cancel)
            .await
            .expect("runners");
        cancel.cancelled().await;
        drop(runners);
    });
    let r = app
        .get(
            &format!("/api/v1/lessons?consistent_with={position}"),
            &tutor.access_token,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = json_of(r).await;
    assert_eq!(page["results"][0]["id"], json!(id));
}

async fn create_with_key(app: &TestApp, t: &Tokens, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/lessons"))
        .bearer_auth(&t.access_token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("the request is sent")
}

#[tokio::test]
async fn a_retried_post_with_an_idempotency_key_runs_once() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let scheduled = "SELECT count(*) FROM events WHERE event_type = 'LessonScheduled'";
    let body = lesson_body(5);

    // The same key and body: one lesson, the same answer twice.
    let first = create_with_key(&app, &tutor, "retry-1", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(first.headers()["idempotent-replayed"], "false");
    let first = json_of(first).await;
    let again = create_with_key(&app, &tutor, "retry-1", &body).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(json_of(again).await, first);
    assert_eq!(app.count(scheduled).await, 1);

    // The same key with another body is refused, and writes nothing.
    let other = create_with_key(&app, &tutor, "retry-1", &lesson_body(6)).await;
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(other).await["code"], "idempotency_key_reused");
    assert_eq!(app.count(scheduled).await, 1);

    // Keys are per caller: another tutor's "retry-1" is a new request.
    let (_, other_tutor) = app.user("tutor").await;
    let theirs = create_with_key(&app, &other_tutor, "retry-1", &body).await;
    assert_eq!(theirs.status(), StatusCode::CREATED);
    assert_ne!(json_of(theirs).await["id"], first["id"]);
    assert_eq!(app.count(scheduled).await, 2);

    // A refusal is remembered too: the retry gets the same 422.
    let invalid = json!({"title": ""});
    let refused = create_with_key(&app, &tutor, "bad-1", &invalid).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let refused_again = create_with_key(&app, &tutor, "bad-1", &invalid).await;
    assert_eq!(refused_again.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused_again.headers()["idempotent-replayed"], "true");

    // Ten concurrent sends of one request: exactly one lesson; every answer is
    // that lesson or a 409 asking to retry.
    let answers =
        futures::future::join_all((0..10).map(|_| create_with_key(&app, &tutor, "burst-1", &body)))
            .await;
    let mut ids = std::collections::BTreeSet::new();
    for r in answers {
        match r.status() {
            StatusCode::CREATED => {
                ids.insert(json_of(r).await["id"].as_str().expect("an id").to_owned());
            }
            StatusCode::CONFLICT => {
                assert_eq!(r.headers()["retry-after"], "1");
                assert_eq!(json_of(r).await["code"], "idempotency_key_in_use");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ids.len(), 1, "every success is the same lesson");
    assert_eq!(app.count(scheduled).await, 3);
    let stored: i64 = app
        .count("SELECT count(*) FROM idempotency_keys WHERE status IS NOT NULL")
        .await;
    assert_eq!(stored, 4, "retry-1 twice (two callers), bad-1, burst-1");

    // Without a key, the same body twice is two lessons.
    for _ in 0..2 {
        let r = app
            .post("/api/v1/lessons", Some(&tutor.access_token), body.clone())
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    assert_eq!(app.count(scheduled).await, 5);

    // Past its 24 hours a key is pruned, and may be used afresh.
    sqlx::query(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'bad-1'",
    )
    .execute(&app.db.pool)
    .await
    .expect("age the key");
    assert_eq!(
        lectern_api::idempotency::prune(&app.db.pool)
            .await
            .expect("prune"),
        1
    );
    let fresh = create_with_key(&app, &tutor, "bad-1", &body).await;
    assert_eq!(fresh.status(), StatusCode::CREATED);
    assert_eq!(fresh.headers()["idempotent-replayed"], "false");
    assert_eq!(app.count(scheduled).await, 6);

    // A malformed key is a 400.
    let bad_key = create_with_key(&app, &tutor, "has space", &body).await;
    assert_eq!(bad_key.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.count(scheduled).await, 6);
}

/// Lose `key`'s kept answer, as if the process that ran it (`owner`) died,
/// or its client went away, after the command and before the answer was
/// kept; the attempt started `age_secs` ago.
async fn lose_answer(app: &TestApp, key: &str, owner: &str, age_secs: f64) {
    let lost = sqlx::query(
        "UPDATE idempotency_keys SET status = NULL, content_type = NULL, body = NULL, owner = $2,
                created_at = now() - make_interval(secs => $3)
          WHERE key = $1",
    )
    .bind(key)
    .bind(owner)
    .bind(age_secs)
    .execute(&app.db.pool)
    .await
    .expect("lose the answer");
    assert_eq!(lost.rows_affected(), 1);
}

#[tokio::test]
async fn a_retry_after_a_lost_answer_gets_the_first_attempts_answer_and_never_runs_twice() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let scheduled = "SELECT count(*) FROM events WHERE event_type = 'LessonScheduled'";
    let body = lesson_body(5);

    // The process died after the commit: no connection of it is left, and
    // the attempt is past the grace. The retry takes the key over and gets
    // the first attempt's lesson, version and position; nothing runs again.
    let first = create_with_key(&app, &tutor, "lost-1", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first = json_of(first).await;
    lose_answer(&app, "lost-1", "lectern/1/0badc0de", 10.0).await;
    let retry = create_with_key(&app, &tutor, "lost-1", &body).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "false");
    assert_eq!(json_of(retry).await, first);
    assert_eq!(app.count(scheduled).await, 1);
    // Its answer is kept now.
    let again = create_with_key(&app, &tutor, "lost-1", &body).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(json_of(again).await, first);

    // This process's own attempt, whose client went away: taken over at once.
    let first = json_of(create_with_key(&app, &tutor, "lost-2", &body).await).await;
    lose_answer(&app, "lost-2", lectern_commands::pool::instance(), 0.0).await;
    let retry = create_with_key(&app, &tutor, "lost-2", &body).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(json_of(retry).await, first);
    assert_eq!(app.count(scheduled).await, 2);

    // An attempt that answered a server error after its commit (the 503 of
    // a commit whose acknowledgement was lost) is released: taken over at
    // once, by any process.
    let first = json_of(create_with_key(&app, &tutor, "released-1", &body).await).await;
    sqlx::query(
        "UPDATE idempotency_keys SET status = NULL, content_type = NULL, body = NULL, owner = NULL
          WHERE key = 'released-1'",
    )
    .execute(&app.db.pool)
    .await
    .expect("release the attempt");
    let retry = create_with_key(&app, &tutor, "released-1", &body).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(json_of(retry).await, first);
    assert_eq!(app.count(scheduled).await, 3);

    // An attempt that committed nothing (its process died first): the retry
    // runs the command, once.
    let first = json_of(create_with_key(&app, &tutor, "lost-3", &body).await).await;
    lose_answer(&app, "lost-3", "lectern/1/0badc0de", 10.0).await;
    sqlx::query("UPDATE idempotency_keys SET attempt = gen_random_uuid() WHERE key = 'lost-3'")
        .execute(&app.db.pool)
        .await
        .expect("an attempt with no events");
    let retry = create_with_key(&app, &tutor, "lost-3", &body).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_ne!(json_of(retry).await["id"], first["id"]);
    assert_eq!(app.count(scheduled).await, 5);

    // A live process's attempt stays its own: 409 until it answers, or
    // until that process is gone.
    let first = json_of(create_with_key(&app, &tutor, "live-1", &body).await).await;
    let alive = "lectern/2/a11ve000";
    let options = lectern_commands::pool::connect_options(&app.db.url)
        .expect("options")
        .application_name(alive);
    let connection = <sqlx::PgConnection as sqlx::Connection>::connect_with(&options)
        .await
        .expect("a live process's connection");
    lose_answer(&app, "live-1", alive, 10.0).await;
    let held = create_with_key(&app, &tutor, "live-1", &body).await;
    assert_eq!(held.status(), StatusCode::CONFLICT);
    assert_eq!(held.headers()["retry-after"], "1");
    assert_eq!(json_of(held).await["code"], "idempotency_key_in_use");
    sqlx::Connection::close(connection).await.expect("close");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let retry = loop {
        let r = create_with_key(&app, &tutor, "live-1", &body).await;
        if r.status() != StatusCode::CONFLICT {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "never taken over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(json_of(retry).await, first);
    assert_eq!(app.count(scheduled).await, 6);

    // A chat message: the retry answers the first attempt's message.
    let live = lectern_tests::classroom::live_board(&app).await;
    let send = |key: &'static str| {
        app.client
            .post(app.url(&format!("/api/v1/lessons/{}/messages", live.board)))
            .bearer_auth(&live.student.access_token)
            .header("Idempotency-Key", key)
            .json(&json!({"client_message_id": "m-1", "text": "hello"}))
            .send()
    };
    let first = send("chat-1").await.expect("sent");
    assert_eq!(first.status(), StatusCode::CREATED);
    let first = json_of(first).await;
    lose_answer(&app, "chat-1", "lectern/1/0badc0de", 10.0).await;
    let retry = send("chat-1").await.expect("sent");
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(json_of(retry).await, first);
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'MessageSent'")
            .await,
        1
    );
}
