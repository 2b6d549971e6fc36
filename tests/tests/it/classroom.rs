//! The classroom over HTTP against the real router and PostgreSQL: lessons,
//! enrolment at capacity, whiteboards (ordering, duplicates, conflicts,
//! undo, concurrent drawing, checksums), chat deliveries, bulk writes and
//! read-your-writes.

use std::collections::BTreeMap;
use std::time::Duration;

use lectern_api::config::WorkerConfig;
use lectern_api::workers::Workers;
use lectern_domain::classroom::board::BoardModel;
use lectern_domain::classroom::OpKind;
use lectern_domain::identity::{DisplayName, Email, Password, Role};
use lectern_domain::EventMetadata;
use lectern_tests::{spawn_app, state_for, TestApp, TestDb, Tokens, PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

fn lesson_body(capacity: u32) -> Value {
    json!({"title": "Algebra", "description": "Linear equations",
           "starts_at": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
           "duration_minutes": 60, "capacity": capacity,
           "price": {"amount_minor": 1500, "currency": "EUR"}})
}

async fn json_of(r: reqwest::Response) -> Value {
    r.json().await.expect("a JSON body")
}

async fn create_lesson(app: &TestApp, tutor: &Tokens, capacity: u32) -> (Uuid, String) {
    let r = app
        .post(
            "/api/v1/lessons",
            Some(&tutor.access_token),
            lesson_body(capacity),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body = json_of(r).await;
    (
        body["id"]
            .as_str()
            .expect("a test value")
            .parse()
            .expect("a test value"),
        body["position"].as_str().expect("a test value").to_owned(),
    )
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&app.db.pool)
        .await
        .expect("count")
}

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

async fn action(app: &TestApp, t: &Tokens, lesson: Uuid, what: &str) -> reqwest::Response {
    app.post(
        &format!("/api/v1/lessons/{lesson}/{what}"),
        Some(&t.access_token),
        json!({}),
    )
    .await
}

#[tokio::test]
async fn lessons_validate_change_state_and_list() {
    let app = spawn_app().await;
    let (tutor_id, tutor) = app.user("tutor").await;
    let (_, other_tutor) = app.user("tutor").await;
    let (_, stud) = app.user("student").await;

    // Bad input: every broken field is named.
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
    // Students may not create lessons.
    let r = app
        .post("/api/v1/lessons", Some(&stud.access_token), lesson_body(5))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM events WHERE aggregate_type = 'Lesson'"
        )
        .await,
        0
    );

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

    // Only the owner changes it; the refusal is recorded.
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
        count(&app, "SELECT count(*) FROM events WHERE event_type = 'AccessDenied' AND payload->'AccessDenied'->>'reason' = 'not_owner'").await,
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
    let position = json_of(r).await["position"]
        .as_str()
        .expect("a test value")
        .to_owned();
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

    // Transitions: end before start and start after cancel are refused.
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
    let r = action(&app, &tutor, id, "end").await;
    assert_eq!(r.status(), StatusCode::OK);
    let position = json_of(r).await["position"]
        .as_str()
        .expect("a test value")
        .to_owned();
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
    assert_eq!(
        types,
        [
            "LessonScheduled",
            "LessonUpdated",
            "LessonStarted",
            "LessonEnded"
        ]
    );

    // Filters and cursor paging.
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
    let first = json_of(app.get("/api/v1/lessons?limit=1", &stud.access_token).await).await;
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
    let stored = count(
        &app,
        &format!("SELECT count(*) FROM events WHERE aggregate_id = '{lesson}' AND event_type = 'StudentEnrolled'"),
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
        count(
            &app,
            &format!("SELECT count(*) FROM enrollments WHERE lesson_id = '{lesson}'")
        )
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
        count(&app, "SELECT count(*) FROM lessons").await,
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

/// Apply ops as `t`; the JSON answer.
async fn draw(app: &TestApp, t: &Tokens, board: Uuid, ops: Vec<Value>) -> (StatusCode, Value) {
    let r = app
        .post(
            &format!("/api/v1/boards/{board}/ops/batch"),
            Some(&t.access_token),
            json!({"ops": ops}),
        )
        .await;
    let status = r.status();
    (status, json_of(r).await)
}

fn op(client: &str, id: &str, lamport: u64, kind: &str, el: &str, data: Value) -> Value {
    json!({"client_id": client, "op_id": id, "lamport": lamport, "kind": kind, "element_id": el, "data": data})
}

/// Every op of a board, through the paged feed.
async fn all_ops(app: &TestApp, t: &Tokens, board: Uuid, position: &str) -> Vec<Value> {
    let mut ops = Vec::new();
    let mut url =
        format!("/api/v1/boards/{board}/ops?since_version=0&limit=100&consistent_with={position}");
    loop {
        let page = json_of(app.get(&url, &t.access_token).await).await;
        ops.extend(
            page["results"]
                .as_array()
                .expect("a test value")
                .iter()
                .cloned(),
        );
        match page["next_cursor"].as_str() {
            Some(c) => url = format!("/api/v1/boards/{board}/ops?cursor={c}&limit=100"),
            None => return ops,
        }
    }
}

/// Replay the op feed as a client would; the elements and checksum.
fn replay(ops: &[Value]) -> BoardModel {
    let mut model = BoardModel::default();
    for o in ops {
        let kind: OpKind = serde_json::from_value(o["kind"].clone()).expect("a test value");
        model.apply(
            o["server_version"].as_u64().expect("a test value"),
            kind,
            o["element_id"].as_str(),
            &o["data"],
            o["target_version"].as_u64(),
        );
    }
    model
}

#[tokio::test]
async fn boards_order_deduplicate_settle_conflicts_and_undo() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let (student_id, stud) = app.user("student").await;
    let (_, stranger) = app.user("student").await;
    let (board, _) = create_lesson(&app, &tutor, 5).await;
    let r = app
        .post(
            &format!("/api/v1/lessons/{board}/enrollments"),
            Some(&stud.access_token),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Not live yet: nobody draws.
    let (status, body) = draw(
        &app,
        &stud,
        board,
        vec![op("s", "0", 1, "add", "x", json!({}))],
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("lesson_not_live"))
    );
    assert_eq!(
        action(&app, &tutor, board, "start").await.status(),
        StatusCode::OK
    );

    let (status, body) = draw(
        &app,
        &tutor,
        board,
        vec![
            op("t", "1", 5, "add", "a", json!({"shape": "rect", "x": 0})),
            op("t", "2", 1, "move", "a", json!({"x": 10})),
            op("t", "3", 1, "update", "ghost", json!({})),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = body["results"].as_array().expect("a test value");
    assert_eq!(
        (
            results[0]["status"].as_str(),
            results[0]["server_version"].as_u64(),
            results[0]["lamport"].as_u64()
        ),
        (Some("applied"), Some(1), Some(6))
    );
    assert_eq!(
        (
            results[1]["server_version"].as_u64(),
            results[1]["lamport"].as_u64()
        ),
        (Some(2), Some(7))
    );
    assert_eq!(
        (results[2]["status"].as_str(), results[2]["reason"].as_str()),
        (Some("rejected"), Some("unknown_element"))
    );

    // A retry gets the original answer and changes nothing.
    let (_, again) = draw(
        &app,
        &tutor,
        board,
        vec![op(
            "t",
            "1",
            5,
            "add",
            "a",
            json!({"shape": "rect", "x": 0}),
        )],
    )
    .await;
    assert_eq!(
        (
            again["results"][0]["status"].as_str(),
            again["results"][0]["server_version"].as_u64()
        ),
        (Some("duplicate"), Some(1))
    );

    // Last write wins: the student has not seen lamport 7, ties lose to "t" > "s".
    let (_, lost) = draw(
        &app,
        &stud,
        board,
        vec![op("s", "1", 7, "move", "a", json!({"x": 99}))],
    )
    .await;
    assert_eq!(lost["results"][0]["reason"], "superseded");
    let (_, won) = draw(
        &app,
        &stud,
        board,
        vec![op("s", "2", 8, "move", "a", json!({"x": 50}))],
    )
    .await;
    assert_eq!(won["results"][0]["status"], "applied");
    // Undo is the client's own: the tutor's undo reverts the tutor's last op.
    let (_, undo) = draw(
        &app,
        &tutor,
        board,
        vec![op("t", "4", 9, "undo", "", Value::Null)],
    )
    .await;
    assert_eq!(undo["results"][0]["status"], "applied");
    let (_, nothing) = draw(
        &app,
        &stranger,
        board,
        vec![op("x", "1", 1, "undo", "", Value::Null)],
    )
    .await;
    assert_eq!(nothing["code"], "not_participant");
    let (_, own_undo) = draw(
        &app,
        &stud,
        board,
        vec![op("s", "3", 11, "undo", "", Value::Null)],
    )
    .await;
    assert_eq!(own_undo["results"][0]["status"], "applied");
    // The stranger's refusal was recorded.
    assert_eq!(
        count(&app, "SELECT count(*) FROM events WHERE event_type = 'AccessDenied' AND payload->'AccessDenied'->>'reason' = 'not_participant'").await,
        1
    );

    // Bad input: unknown kind, oversized data, stolen client id.
    let r = app
        .post(
            &format!("/api/v1/boards/{board}/ops"),
            Some(&tutor.access_token),
            op("t", "9", 1, "explode", "a", json!({})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let big = "x".repeat(70 * 1024);
    let r = app
        .post(
            &format!("/api/v1/boards/{board}/ops"),
            Some(&tutor.access_token),
            op("t", "9", 1, "add", "b", json!({"blob": big})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(r).await["errors"][0]["pointer"], "#/data");
    let (_, stolen) = draw(
        &app,
        &stud,
        board,
        vec![op("t", "x", 20, "add", "c", json!({}))],
    )
    .await;
    assert_eq!(stolen["results"][0]["reason"], "client_id_in_use");
    let r = app
        .get(
            &format!("/api/v1/boards/{board}/ops?cursor=%%%"),
            &tutor.access_token,
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Reconnect: the ops after version 2, in order; the state replays to the
    // projection's checksum.
    let position = won["position"].as_str().expect("a test value").to_owned();
    let last = own_undo["position"].as_str().expect("a test value");
    let ops = all_ops(&app, &stud, board, last).await;
    let versions: Vec<u64> = ops
        .iter()
        .map(|o| o["server_version"].as_u64().expect("a test value"))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    let since = json_of(
        app.get(
            &format!("/api/v1/boards/{board}/ops?since_version=2&consistent_with={position}"),
            &stud.access_token,
        )
        .await,
    )
    .await;
    let kinds: Vec<&str> = since["results"]
        .as_array()
        .expect("a test value")
        .iter()
        .map(|o| o["kind"].as_str().expect("a test value"))
        .collect();
    assert_eq!(kinds, ["move", "undo", "undo"]);
    let state = json_of(
        app.get(
            &format!("/api/v1/boards/{board}?consistent_with={last}"),
            &stud.access_token,
        )
        .await,
    )
    .await;
    let model = replay(&ops);
    // The tutor's undo put the element back as before the tutor's move
    // (x=0); the student's undo then put it back as before the student's
    // move (x=10).
    assert_eq!(state["elements"]["a"], json!({"shape": "rect", "x": 10}));
    assert_eq!(
        Value::Object(model.elements.clone().into_iter().collect()),
        state["elements"]
    );
    assert_eq!(
        state["checksum"].as_str().expect("a test value"),
        model.checksum()
    );
    assert_eq!(state["version"], 5);
    // Everything happened as events: 5 applied, 3 rejected, 1 duplicate.
    let stored: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event_type, count(*) FROM events WHERE aggregate_type = 'Board' AND event_type LIKE 'Op%' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("a test value");
    assert_eq!(
        stored,
        [
            ("OpApplied".into(), 5),
            ("OpDuplicated".into(), 1),
            ("OpRejected".into(), 3)
        ]
    );
    let _ = student_id;
}

#[tokio::test]
async fn many_clients_drawing_on_one_board_converge() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let (board, _) = create_lesson(&app, &tutor, 20).await;
    let mut clients = vec![tutor.clone()];
    for _ in 0..7 {
        let (_, t) = app.user("student").await;
        let r = app
            .post(
                &format!("/api/v1/lessons/{board}/enrollments"),
                Some(&t.access_token),
                json!({}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        clients.push(t);
    }
    assert_eq!(
        action(&app, &tutor, board, "start").await.status(),
        StatusCode::OK
    );
    // Shared elements everyone fights over, created first.
    let shared: Vec<Value> = (0..5)
        .map(|i| {
            op(
                "setup",
                &format!("s{i}"),
                0,
                "add",
                &format!("shared-{i}"),
                json!({"n": i}),
            )
        })
        .collect();
    let (status, _) = draw(&app, &tutor, board, shared).await;
    assert_eq!(status, StatusCode::OK);
    let tasks = clients.iter().enumerate().map(|(c, t)| {
        let app = &app;
        async move {
            let client = format!("client-{c}");
            let mut lamport = 0u64;
            let mut last = String::new();
            for round in 0..10 {
                let mut ops = Vec::new();
                for k in 0..3u64 {
                    lamport += 1 + (k + c as u64) % 3;
                    let id = format!("{round}-{k}");
                    ops.push(match k {
                        0 => op(
                            &client,
                            &id,
                            lamport,
                            "add",
                            &format!("{client}-{round}"),
                            json!({"by": c, "round": round}),
                        ),
                        1 => op(
                            &client,
                            &id,
                            lamport,
                            "update",
                            &format!("shared-{}", (round + c) % 5),
                            json!({"by": c, "round": round}),
                        ),
                        _ if round % 4 == 3 => op(&client, &id, lamport, "undo", "", Value::Null),
                        _ => op(
                            &client,
                            &id,
                            lamport,
                            "move",
                            &format!("{client}-{round}"),
                            json!({"x": round}),
                        ),
                    });
                }
                let (status, body) = draw(app, t, board, ops).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                last = body["position"].as_str().expect("a test value").to_owned();
            }
            last
        }
    });
    let mut positions = futures::future::join_all(tasks).await;
    // Then the tutor adds, clears the board and draws again in one request:
    // the projection folds the clear inside one run of events.
    let (status, end) = draw(
        &app,
        &tutor,
        board,
        vec![
            op("tutor-end", "1", 1000, "add", "late-1", json!({"k": 1})),
            op("tutor-end", "2", 1001, "clear", "", Value::Null),
            op("tutor-end", "3", 1002, "add", "late-2", json!({"k": 2})),
            op("tutor-end", "4", 1003, "move", "late-2", json!({"x": 5})),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{end}");
    positions.push(end["position"].as_str().expect("a test value").to_owned());
    let newest = positions
        .iter()
        .max_by_key(|p| p.parse::<lectern_domain::Position>().expect("a test value"))
        .expect("a test value");
    let ops = all_ops(&app, &tutor, board, newest).await;
    let versions: Vec<u64> = ops
        .iter()
        .map(|o| o["server_version"].as_u64().expect("a test value"))
        .collect();
    let n = versions.len() as u64;
    assert_eq!(
        versions,
        (1..=n).collect::<Vec<_>>(),
        "server versions are contiguous"
    );
    let applied = count(
        &app,
        "SELECT count(*) FROM events WHERE event_type = 'OpApplied'",
    )
    .await;
    assert_eq!(applied as u64, n);
    let state = json_of(
        app.get(
            &format!("/api/v1/boards/{board}?consistent_with={newest}"),
            &tutor.access_token,
        )
        .await,
    )
    .await;
    let model = replay(&ops);
    assert_eq!(
        Value::Object(model.elements.clone().into_iter().collect()),
        state["elements"]
    );
    assert_eq!(
        state["checksum"].as_str().expect("a test value"),
        model.checksum()
    );
    // The aggregate's live elements are the projection's.
    let aggregate = app
        .state
        .classroom
        .boards
        .store()
        .load(&board.to_string())
        .await
        .expect("a test value");
    let live: BTreeMap<String, ()> = aggregate
        .aggregate
        .elements
        .keys()
        .map(|k| (k.clone(), ()))
        .collect();
    let projected: BTreeMap<String, ()> = model.elements.keys().map(|k| (k.clone(), ())).collect();
    assert_eq!(live, projected);
    assert_eq!(aggregate.aggregate.server_version, n);
    assert_eq!(
        projected.keys().collect::<Vec<_>>(),
        ["late-2"],
        "only what was drawn after the clear"
    );

    // The audit log and the analytics counts, written a run at a time, hold
    // every event exactly once.
    let at: lectern_domain::Position = newest.parse().expect("a test value");
    for name in ["audit_log", "analytics_daily_event_counts"] {
        assert!(
            lectern_projections::status::wait_for(&app.db.pool, name, at, Duration::from_secs(20))
                .await
                .expect("a test value"),
            "{name} caught up"
        );
    }
    let events = count(&app, "SELECT count(*) FROM events").await;
    assert_eq!(count(&app, "SELECT count(*) FROM audit_log").await, events);
    assert_eq!(
        count(&app, "SELECT count(DISTINCT event_id) FROM audit_log").await,
        events
    );
    let mismatched = count(
        &app,
        "SELECT count(*) FROM (SELECT aggregate_type, event_type, count(*) AS n FROM events GROUP BY 1, 2) e
           FULL JOIN (SELECT aggregate_type, event_type, sum(events) AS n FROM analytics.daily_event_counts
                       GROUP BY 1, 2) a USING (aggregate_type, event_type)
          WHERE e.n IS DISTINCT FROM a.n",
    )
    .await;
    assert_eq!(mismatched, 0, "analytics counts equal the log's");
}

async fn send(app: &TestApp, lesson: Uuid, t: &Tokens, cid: &str, text: &str) -> reqwest::Response {
    app.post(
        &format!("/api/v1/lessons/{lesson}/messages"),
        Some(&t.access_token),
        json!({"client_message_id": cid, "text": text}),
    )
    .await
}

async fn ack(
    app: &TestApp,
    lesson: Uuid,
    t: &Tokens,
    up_to: u64,
    status: &str,
) -> reqwest::Response {
    app.post(
        "/api/v1/deliveries/ack",
        Some(&t.access_token),
        json!({"lesson_id": lesson, "up_to_seq": up_to, "status": status}),
    )
    .await
}

#[tokio::test]
async fn chat_delivers_acknowledges_and_expires() {
    let app = spawn_app().await;
    let (tutor_id, tutor) = app.user("tutor").await;
    let (a_id, a) = app.user("student").await;
    let (b_id, b) = app.user("student").await;
    let (lesson, _) = create_lesson(&app, &tutor, 5).await;
    for t in [&a, &b] {
        let r = app
            .post(
                &format!("/api/v1/lessons/{lesson}/enrollments"),
                Some(&t.access_token),
                json!({}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
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
    let r = send(&app, lesson, &tutor, "t1", "Welcome").await;
    let second = json_of(r).await;
    assert_eq!(second["seq"], 2);
    assert_eq!(
        send(&app, lesson, &a, "m2", &"x".repeat(4001))
            .await
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM events WHERE event_type = 'MessageSent'"
        )
        .await,
        2
    );

    // B missed both, in order; A missed only the tutor's.
    let pos = second["position"].as_str().expect("a test value");
    let pending = json_of(
        app.get(
            &format!("/api/v1/me/deliveries/pending?consistent_with={pos}"),
            &b.access_token,
        )
        .await,
    )
    .await;
    let seqs: Vec<i64> = pending["results"]
        .as_array()
        .expect("a test value")
        .iter()
        .map(|p| p["seq"].as_i64().expect("a test value"))
        .collect();
    assert_eq!(seqs, [1, 2]);
    let pending_a = json_of(
        app.get(
            &format!("/api/v1/me/deliveries/pending?consistent_with={pos}"),
            &a.access_token,
        )
        .await,
    )
    .await;
    assert_eq!(pending_a["results"][0]["text"], "Welcome");
    assert_eq!(
        pending_a["results"].as_array().expect("a test value").len(),
        1
    );

    // Acks move forward only; each that moves is one event.
    let r = ack(&app, lesson, &b, 2, "read").await;
    assert_eq!(r.status(), StatusCode::OK);
    let read = json_of(r).await;
    assert_eq!(read["changed"], true);
    let r = ack(&app, lesson, &b, 1, "delivered").await;
    assert_eq!(json_of(r).await["changed"], false);
    assert_eq!(
        ack(&app, lesson, &b, 3, "read").await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM events WHERE event_type = 'DeliveriesAcknowledged'"
        )
        .await,
        1
    );
    let pos = read["position"].as_str().expect("a test value");
    let pending = json_of(
        app.get(
            &format!("/api/v1/me/deliveries/pending?consistent_with={pos}"),
            &b.access_token,
        )
        .await,
    )
    .await;
    assert_eq!(
        pending["results"].as_array().expect("a test value").len(),
        0
    );
    let statuses = lectern_projections::classroom::delivery_statuses(&app.db.pool, lesson, b_id)
        .await
        .expect("a test value");
    assert_eq!(statuses, [(1, "read".to_owned()), (2, "read".to_owned())]);

    // Paging the channel by cursor.
    let page = json_of(
        app.get(
            &format!("/api/v1/lessons/{lesson}/messages?limit=1"),
            &a.access_token,
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
            &format!("/api/v1/lessons/{lesson}/messages?limit=1&cursor={cursor}"),
            &a.access_token,
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

    // Expiry: with a zero TTL everything unacknowledged expires, one event
    // each, and the audit log shows them.
    let expired = lectern_api::expiry::sweep(&app.db.pool, &app.state.classroom, Duration::ZERO)
        .await
        .expect("a test value");
    // A's delivery of 2 and the tutor's of 1 (B read both).
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
    let mut expected = vec![(a_id.to_string(), 2), (tutor_id.to_string(), 1)];
    expected.sort();
    assert_eq!(stored, expected);
    let position: String = sqlx::query_scalar(
        "SELECT transaction_id::text || '.' || global_position FROM events ORDER BY global_position DESC LIMIT 1",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("a test value");
    let (_, auditor) = {
        let email = format!("aud-{}@example.com", Uuid::new_v4().simple());
        app.register(&email, "auditor").await;
        ((), app.login(&email).await)
    };
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
    // A reader who may see every lesson reads this one's messages, but an
    // unknown lesson is 404, not an empty page, and reading writes nothing.
    let events_before = count(&app, "SELECT count(*) FROM events").await;
    let r = app
        .get(
            &format!("/api/v1/lessons/{lesson}/messages"),
            &auditor.access_token,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
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
        count(&app, "SELECT count(*) FROM events").await,
        events_before
    );
}

#[tokio::test]
async fn bulk_writes_are_atomic_when_asked() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let lessons = || {
        count(
            &app,
            "SELECT count(*) FROM events WHERE aggregate_type = 'Lesson'",
        )
    };
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
        count(
            &app,
            "SELECT count(*) FROM events WHERE event_type = 'LessonUpdated'"
        )
        .await,
        2
    );

    // Too many items.
    let items: Vec<Value> = (0..101).map(|_| lesson_body(5)).collect();
    let r = bulk(json!({"action": "create", "items": items, "atomic": false})).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(lessons().await, 6);
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
    assert_eq!(count(&app, scheduled).await, 1);

    // The same key with another body is refused, and writes nothing.
    let other = create_with_key(&app, &tutor, "retry-1", &lesson_body(6)).await;
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(other).await["code"], "idempotency_key_reused");
    assert_eq!(count(&app, scheduled).await, 1);

    // Keys are per caller: another tutor's "retry-1" is a new request.
    let (_, other_tutor) = app.user("tutor").await;
    let theirs = create_with_key(&app, &other_tutor, "retry-1", &body).await;
    assert_eq!(theirs.status(), StatusCode::CREATED);
    assert_ne!(json_of(theirs).await["id"], first["id"]);
    assert_eq!(count(&app, scheduled).await, 2);

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
    assert_eq!(count(&app, scheduled).await, 3);
    let stored: i64 = count(
        &app,
        "SELECT count(*) FROM idempotency_keys WHERE status IS NOT NULL",
    )
    .await;
    assert_eq!(stored, 4, "retry-1 twice (two callers), bad-1, burst-1");

    // Without a key, the same body twice is two lessons.
    for _ in 0..2 {
        let r = app
            .post("/api/v1/lessons", Some(&tutor.access_token), body.clone())
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    assert_eq!(count(&app, scheduled).await, 5);

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
    assert_eq!(count(&app, scheduled).await, 6);

    // A malformed key is a 400.
    let bad_key = create_with_key(&app, &tutor, "has space", &body).await;
    assert_eq!(bad_key.status(), StatusCode::BAD_REQUEST);
    assert_eq!(count(&app, scheduled).await, 6);
}
